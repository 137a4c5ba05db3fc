"""The file-disk life cycle made by the real Ganeti 3.0 RPC client, on our node daemon and on the real one.

The calls are those of the file-disk life cycle recorded in
../shared/reference/samples/more_calls_output.jsonl (file_storage_dir_create,
blockdev_create, _find, _getdimensions, _getmirrorstatus, _assemble,
_shutdown, _grow, _remove, file_storage_dir_remove), plus rename and the
repeated create and remove, made by Ganeti's own client code
(tests/interop_blockdev_client.py: interop_client.py with the master's
disk and instance encoders) against both daemons in candidate mode. Answers
are compared after replacing each node's root by <ROOT>; the files are
checked on both nodes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import interop_support
import pytest
from interop_support import (
    CANDIDATE,
    Call,
    Pair,
    Result,
    Target,
    call,
    comparable,
    describe,
    node_path,
    start_our_noded,
    start_real_noded,
)
from real_ganeti import requires_real_ganeti

pytestmark = requires_real_ganeti

OURS_ADDRESS = "127.0.0.25"
REAL_ADDRESS = "127.0.0.26"
CLIENT = str(Path(__file__).resolve().parent / "interop_blockdev_client.py")
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples" / "more_calls_output.jsonl"
FILE_STORAGE = "/srv/ganeti/file-storage"
INSTANCE = "inst1.example.com"
INSTANCE_DIR = f"{FILE_STORAGE}/{INSTANCE}"
DISK_UUID = "5e1e1e1e-0000-4000-8000-0000000000d0"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Our daemon and the real one, with file storage allowed, called through the disk-aware client."""
    base = tmp_path_factory.mktemp("interop-blockdev")
    for d in ("ours", "real", "ours-master", "real-master"):
        (base / d).mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(interop_support, "CLIENT", CLIENT)
        real = start_real_noded(base / "real", base / "real-master", REAL_ADDRESS)
        try:
            ours = start_our_noded(base / "ours", base / "ours-master", OURS_ADDRESS)
        except Exception:
            real.stop()
            raise
        p = Pair(ours=ours, real=real)
        try:
            for t in p.targets:
                t.path("/etc/ganeti/file-storage-paths").write_text(f"{t.root}{FILE_STORAGE}\n")
            p.ensure_mode(CANDIDATE)
            yield p
        finally:
            ours.stop()
            real.stop()


def disk(name: str = "disk0", size: int = 10) -> dict[str, Any]:
    """A file disk as the master's encoder gets it (parameters filled in); its path a node path marker."""
    return {"dev_type": "file", "logical_id": ["loop", node_path(f"{INSTANCE_DIR}/{name}")],
            "children": [], "iv_name": "disk/0", "size": size, "mode": "rw", "params": {},
            "uuid": DISK_UUID, "name": None, "nodes": ["node1-uuid"], "serial_no": 1}


def instance() -> dict[str, Any]:
    return {"name": INSTANCE, "uuid": "1e1e1e1e-0000-4000-8000-000000000001", "primary_node": "node1-uuid",
            "hypervisor": "fake", "os": "noop", "disks": [DISK_UUID], "nics": [], "hvparams": {},
            "beparams": {}, "osparams": {}, "disk_template": "file", "admin_state": "down",
            "disks_active": False, "serial_no": 1, "disks_info": [disk()]}


def run(pair: Pair, calls: list[Call]) -> list[tuple[Any, Any]]:
    """The calls on both daemons (one client run each); (ours, real) comparable outcomes per call.

    The raw [ok, payload] (`data`) is compared, since Ganeti's client turns
    some payloads (blockdev_find, getmirrorstatus) into objects.
    """
    ours, real = pair.run([{**c, "cert": "mode"} for c in calls])

    def outcome(result: Result, target: Target) -> Any:
        if result["fail_msg"]:
            return comparable(result, target)
        return comparable({**result, "payload": result["data"][1]}, target)

    return [(outcome(o, pair.ours), outcome(r, pair.real)) for o, r in zip(ours, real, strict=True)]


def assert_all_same(pair: Pair, calls: list[Call]) -> list[Any]:
    outcomes = []
    for c, (ours, real) in zip(calls, run(pair, calls), strict=True):
        assert ours == real, describe(c, ours, real)
        outcomes.append(ours)
    return outcomes


def disk_files(pair: Pair) -> list[dict[str, int]]:
    """Per node: the files of the instance directory and their sizes."""
    found = []
    for t in pair.targets:
        d = t.path(INSTANCE_DIR)
        found.append({p.name: p.stat().st_size for p in d.iterdir()} if d.is_dir() else {})
    return found


def _recorded(name: str) -> Any:
    for line in SAMPLES.read_text().splitlines():
        entry = json.loads(line)
        if entry["call"] == name:
            return entry["raw"]
    raise AssertionError(f"{name} is not in {SAMPLES}")


def _as_recorded(value: Any) -> Any:
    """An outcome written the way the samples write it ($ROOT for the node root, [ok, payload])."""
    return json.loads(json.dumps(list(value)).replace("<ROOT>", "$ROOT"))


@pytest.fixture
def clean(pair: Pair) -> Iterator[None]:
    """No instance directory, disk or link before and after the test."""
    def wipe() -> None:
        for t in pair.targets:
            d = t.path(INSTANCE_DIR)
            if d.is_dir():
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()
            links = t.path("/var/run/ganeti/instance-disks")
            if links.is_dir():
                for f in links.iterdir():
                    f.unlink()

    wipe()
    yield
    wipe()


def test_the_recorded_file_disk_life_cycle_answers_like_the_real_noded(pair: Pair, clean: None) -> None:
    calls = [
        call("file_storage_dir_create", node_path(INSTANCE_DIR)),
        call("blockdev_create", disk(), 10, INSTANCE, True, "", False),
        call("blockdev_find", disk()),
        call("blockdev_getdimensions", [disk()]),
        call("blockdev_getmirrorstatus", [disk()]),
        call("blockdev_assemble", disk(), instance(), True, 0),
        call("blockdev_shutdown", disk()),
        call("blockdev_grow", disk(), 10, False, True, False),
        call("blockdev_remove", disk()),
        call("file_storage_dir_remove", node_path(INSTANCE_DIR)),
    ]
    outcomes = assert_all_same(pair, calls)
    assert outcomes[1] == (True, ["loop", f"<ROOT>{INSTANCE_DIR}/disk0"])
    # the same shapes and values as the recording (whose instance directory was "inst1")
    recorded = [_recorded(n) for n in ("blockdev_find", "blockdev_getdimensions", "blockdev_getmirrorstatus",
                                       "blockdev_assemble", "blockdev_shutdown", "blockdev_grow",
                                       "blockdev_remove")]
    ours = [_as_recorded(o) for o in outcomes[2:9]]
    assert json.loads(json.dumps(ours).replace(INSTANCE_DIR, f"{FILE_STORAGE}/inst1")) == recorded
    assert disk_files(pair) == [{}, {}]


def test_create_grow_and_rename_leave_the_same_files_on_both_nodes(pair: Pair, clean: None) -> None:
    for t in pair.targets:
        t.path(INSTANCE_DIR).mkdir(mode=0o750)
    steps = [call("blockdev_create", disk(size=4), 4, INSTANCE, True, "", False)]
    assert_all_same(pair, steps)
    assert disk_files(pair) == [{"disk0": 4 * MIB}] * 2
    steps = [call("blockdev_grow", disk(size=4), 2, False, True, False),
             call("blockdev_getdimensions", [disk(size=6)]),
             call("blockdev_rename", [[disk(size=6), ["loop", node_path(f"{INSTANCE_DIR}/disk1")]]])]
    outcomes = assert_all_same(pair, steps)
    assert outcomes[1] == (True, [[6 * MIB, None]])
    assert disk_files(pair) == [{"disk1": 6 * MIB}] * 2
    assert_all_same(pair, [call("blockdev_remove", disk("disk1", size=6))])
    assert disk_files(pair) == [{}, {}]


def test_repeated_create_fails_and_repeated_remove_succeeds_like_the_real_noded(
        pair: Pair, clean: None) -> None:
    for t in pair.targets:
        t.path(INSTANCE_DIR).mkdir(mode=0o750)
    create = call("blockdev_create", disk(size=1), 1, INSTANCE, True, "", False)
    remove = call("blockdev_remove", disk(size=1))
    outcomes = assert_all_same(pair, [create, create, remove, remove, call("blockdev_find", disk(size=1))])
    assert outcomes[0][0] and not outcomes[1][0]
    assert "File exists" in outcomes[1][1]
    assert outcomes[2:] == [(True, None), (True, None), (True, None)]


def test_assemble_links_the_disk_on_both_nodes_alike(pair: Pair, clean: None) -> None:
    for t in pair.targets:
        t.path(INSTANCE_DIR).mkdir(mode=0o750)
    outcomes = assert_all_same(pair, [call("blockdev_create", disk(size=1), 1, INSTANCE, True, "", False),
                                      call("blockdev_assemble", disk(size=1), instance(), True, 0),
                                      call("blockdev_assemble", disk(size=1), instance(), False, 0)])
    assert outcomes[1] == (True, [f"<ROOT>{INSTANCE_DIR}/disk0",
                                  f"<ROOT>/var/run/ganeti/instance-disks/{INSTANCE}:0", None])
    assert outcomes[2] == (True, [True, True])
    for t in pair.targets:
        link = t.path(f"/var/run/ganeti/instance-disks/{INSTANCE}:0")
        assert os.readlink(link) == str(t.path(f"{INSTANCE_DIR}/disk0"))
