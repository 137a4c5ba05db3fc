"""Instance procedures on the fake hypervisor: start, shutdown, reboot, balloon, console, migration,
hotplug, metadata (direct calls on a node root; file disks are files the tests write)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from real_ganeti import requires_real_ganeti
from real_noded_calls import our_call, real_snippet

from noded.backends import instance as bi
from noded.backends import node
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.hypervisor import HYPERVISORS, FakeHypervisor, HypervisorError
from noded.paths import Paths

FAKE = {"migration_mode": "live"}
NAME = "inst1.example.com"


def _ctx(base: Path, hostname: str) -> NodeContext:
    paths = Paths(root=str(base / hostname), hostname=hostname)
    paths.ensure_dirs()
    Path(paths.file_storage_paths_file).write_text(f"{paths.file_storage_dir}\n"
                                                   f"{paths.shared_file_storage_dir}\n")
    return NodeContext(paths=paths)


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    return _ctx(tmp_path, "node1")


def _disk_file(ctx: NodeContext, name: str = NAME, idx: int = 0) -> str:
    """A 1 MiB disk file below the node's file storage directory; its local path."""
    directory = Path(ctx.paths.file_storage_dir) / name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"disk{idx}"
    with open(path, "wb") as f:
        f.truncate(1024 * 1024)
    return str(path)


def _instance(disk_paths: list[str], name: str = NAME, hypervisor: str = "fake",
              dev_type: str = "file") -> dict[str, Any]:
    """An instance dict as the master sends it (ED_INST_DICT), with file disks at `disk_paths`."""
    disks = [{"dev_type": dev_type, "logical_id": ["loop", p], "children": [], "iv_name": f"disk/{i}",
              "size": 1, "mode": "rw", "params": {}, "uuid": f"disk-uuid-{i}"}
             for i, p in enumerate(disk_paths)]
    return {"name": name, "primary_node": "node-uuid-1", "secondary_nodes": [], "os": "noop",
            "hypervisor": hypervisor, "hvparams": dict(FAKE),
            "beparams": {"maxmem": 128, "minmem": 64, "vcpus": 2, "auto_balance": True,
                         "always_failover": False, "spindle_use": 1},
            "osparams": {}, "admin_state": "up", "nics": [], "disks": [d["uuid"] for d in disks],
            "disks_info": disks, "disks_active": True, "uuid": "inst-uuid-1", "serial_no": 1,
            "ctime": 1.0, "mtime": 1.0, "tags": []}


@pytest.fixture
def inst(ctx: NodeContext) -> dict[str, Any]:
    return _instance([_disk_file(ctx)])


def _state_file(ctx: NodeContext, name: str = NAME) -> Path:
    return Path(ctx.paths.run_dir) / "fake-hypervisor" / name


def _link(ctx: NodeContext, idx: int = 0, name: str = NAME) -> Path:
    return Path(ctx.paths.run_dir) / "instance-disks" / f"{name}:{idx}"


def _reason(ctx: NodeContext, name: str = NAME) -> list[Any]:
    return list(json.loads((Path(ctx.paths.run_dir) / "instance-reason" / name).read_text()))


def _info(ctx: NodeContext, name: str = NAME) -> dict[str, Any]:
    return node.instance_info(ctx, name, "fake", FAKE)


# -- instance_start ------------------------------------------------------------------

def test_start_runs_the_instance_with_maxmem_and_its_vcpus(ctx: NodeContext, inst: dict[str, Any]) -> None:
    assert bi.instance_start(ctx, inst, False, []) is None
    assert _info(ctx) == {"memory": 128, "vcpus": 2, "state": 0, "time": 0}
    assert _state_file(ctx).read_text() == "0\n128\n2\n"


def test_started_instance_is_listed(ctx: NodeContext, inst: dict[str, Any]) -> None:
    bi.instance_start(ctx, inst, False, [])
    assert node.instance_list(ctx, ["fake"], {"fake": FAKE}) == [NAME]
    assert set(node.all_instances_info(ctx, ["fake"], {"fake": FAKE})) == {NAME}


def test_start_links_each_disk_in_the_run_directory(ctx: NodeContext) -> None:
    paths = [_disk_file(ctx, idx=0), _disk_file(ctx, idx=1)]
    bi.instance_start(ctx, _instance(paths), False, [])
    assert [os.readlink(_link(ctx, i)) for i in (0, 1)] == paths


def test_start_stores_the_reason_trail_with_the_node_daemon_entry(ctx: NodeContext,
                                                                  inst: dict[str, Any]) -> None:
    before = time.time_ns()
    bi.instance_start(ctx, inst, False, [["gnt:client:gnt-instance", "startup", 1]])
    first, (source, reason, stamp) = _reason(ctx)
    assert first == ["gnt:client:gnt-instance", "startup", 1]
    assert (source, reason) == ("gnt:daemon:noded:start", "")
    assert before <= stamp <= time.time_ns()


def test_starting_a_running_instance_is_a_clear_failure_and_changes_nothing(
        ctx: NodeContext, inst: dict[str, Any]) -> None:
    # Ganeti 3.0.2 answers success (masters check first and never ask); issue 3 wants a
    # clear failure for this operator mistake.
    bi.instance_start(ctx, inst, False, [])
    bi.instance_balloon_memory(ctx, inst, 100)
    with pytest.raises(RpcFail, match=f"^Instance '{NAME}' is already running on this node$"):
        bi.instance_start(ctx, inst, False, [])
    assert _info(ctx)["memory"] == 100


def test_start_of_an_instance_whose_disk_is_missing_fails_and_links_nothing(ctx: NodeContext) -> None:
    present = _disk_file(ctx, idx=0)
    missing = str(Path(ctx.paths.file_storage_dir) / NAME / "disk1")
    with pytest.raises(RpcFail, match=r"^Block device error: Block device '.*' is not set up\.$"):
        bi.instance_start(ctx, _instance([present, missing]), False, [])
    assert not _state_file(ctx).exists()
    assert not os.path.lexists(_link(ctx, 0))


def test_start_with_an_unknown_hypervisor_fails(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail) as err:
        bi.instance_start(ctx, _instance([_disk_file(ctx)], hypervisor="xen-pvm"), False, [])
    assert err.value.message == "Hypervisor error: Unknown hypervisor type 'xen-pvm'"
    assert not os.path.lexists(_link(ctx, 0))


def test_start_refuses_an_instance_name_with_a_slash(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=r"^Invalid instance name '\.\./x'"):
        bi.instance_start(ctx, _instance([], name="../x"), False, [])


# -- instance_shutdown ---------------------------------------------------------------

def test_shutdown_stops_the_instance_and_removes_its_disk_links(ctx: NodeContext,
                                                                 inst: dict[str, Any]) -> None:
    bi.instance_start(ctx, inst, False, [])
    assert bi.instance_shutdown(ctx, inst, 5, []) is None
    assert _info(ctx) == {}
    assert node.instance_list(ctx, ["fake"], {"fake": FAKE}) == []
    assert not os.path.lexists(_link(ctx, 0))


def test_shutdown_stores_the_reason_trail(ctx: NodeContext, inst: dict[str, Any]) -> None:
    bi.instance_start(ctx, inst, False, [])
    bi.instance_shutdown(ctx, inst, 5, [["gnt:client:gnt-instance", "shutdown", 7]])
    assert [entry[0] for entry in _reason(ctx)] == ["gnt:client:gnt-instance", "gnt:daemon:noded:shutdown"]


def test_shutdown_of_a_stopped_instance_succeeds(ctx: NodeContext, inst: dict[str, Any]) -> None:
    bi.instance_start(ctx, inst, False, [])
    bi.instance_shutdown(ctx, inst, 5, [])
    assert bi.instance_shutdown(ctx, inst, 5, []) is None
    assert bi.instance_shutdown(ctx, _instance([], name="never-started"), 0, []) is None


def test_shutdown_removes_links_left_by_a_stopped_instance(ctx: NodeContext, inst: dict[str, Any]) -> None:
    disk = inst["disks_info"][0]["logical_id"][1]
    _link(ctx).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(disk, _link(ctx))
    bi.instance_shutdown(ctx, inst, 0, [])
    assert not os.path.lexists(_link(ctx))


def test_shutdown_with_an_unknown_hypervisor_is_an_unexpected_error(ctx: NodeContext) -> None:
    # Ganeti answers "Error while executing backend function: Unknown hypervisor type 'lxd'"
    with pytest.raises(HypervisorError, match=r"^Unknown hypervisor type 'lxd'$"):
        bi.instance_shutdown(ctx, _instance([], hypervisor="lxd"), 5, [])


class _GuestWithoutAcpi(FakeHypervisor):
    """A fake instance that ignores soft stops (like a guest without ACPI); counts the attempts."""

    NAME = "no-acpi"
    soft_stops = 0

    def stop_instance(self, instance: Any, force: bool = False, retry: bool = False,
                      name: str | None = None, timeout: int | None = None) -> None:
        if force:
            super().stop_instance(instance, force, retry, name, timeout)
        else:
            type(self).soft_stops += 1


class _Indestructible(_GuestWithoutAcpi):
    NAME = "indestructible"

    def stop_instance(self, instance: Any, force: bool = False, retry: bool = False,
                      name: str | None = None, timeout: int | None = None) -> None:
        return None


def test_shutdown_forces_an_instance_that_ignores_the_soft_stop(ctx: NodeContext,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(HYPERVISORS, "no-acpi", _GuestWithoutAcpi)
    monkeypatch.setattr(_GuestWithoutAcpi, "soft_stops", 0)
    inst = _instance([_disk_file(ctx)], hypervisor="no-acpi")
    bi.instance_start(ctx, inst, False, [])
    started = time.monotonic()
    bi.instance_shutdown(ctx, inst, 0, [])
    assert time.monotonic() - started < 1
    assert _GuestWithoutAcpi.soft_stops == 1
    assert not _state_file(ctx).exists()
    assert not os.path.lexists(_link(ctx))


def test_shutdown_fails_when_even_the_forced_stop_leaves_the_instance(
        ctx: NodeContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(HYPERVISORS, "indestructible", _Indestructible)
    inst = _instance([], hypervisor="indestructible")
    bi.instance_start(ctx, inst, False, [])
    with pytest.raises(RpcFail) as err:
        bi.instance_shutdown(ctx, inst, 0, [])
    assert err.value.message == f"Could not shutdown instance '{NAME}' even by destroy"


# -- instance_reboot -----------------------------------------------------------------

def test_soft_reboot_keeps_the_instance_running_as_it_was(ctx: NodeContext, inst: dict[str, Any]) -> None:
    bi.instance_start(ctx, inst, False, [])
    bi.instance_balloon_memory(ctx, inst, 100)
    assert bi.instance_reboot(ctx, inst, "soft", 5, []) is None
    assert _info(ctx)["memory"] == 100


def test_hard_reboot_restarts_the_instance(ctx: NodeContext, inst: dict[str, Any]) -> None:
    bi.instance_start(ctx, inst, False, [])
    bi.instance_balloon_memory(ctx, inst, 100)
    bi.instance_reboot(ctx, inst, "hard", 5, [["gnt:client:gnt-instance", "reboot", 3]])
    assert _info(ctx)["memory"] == 128  # started afresh with its startup memory
    assert os.path.islink(_link(ctx))
    assert [e[0] for e in _reason(ctx)] == ["gnt:client:gnt-instance", "gnt:daemon:noded:reboot"]


def test_reboot_of_a_stopped_instance_fails(ctx: NodeContext, inst: dict[str, Any]) -> None:
    with pytest.raises(RpcFail) as err:
        bi.instance_reboot(ctx, inst, "soft", 5, [])
    assert err.value.message == f"Cannot reboot instance '{NAME}' that is not running"


def test_full_reboot_is_refused_on_the_node(ctx: NodeContext, inst: dict[str, Any]) -> None:
    bi.instance_start(ctx, inst, False, [])
    with pytest.raises(RpcFail) as err:
        bi.instance_reboot(ctx, inst, "full", 5, [])
    assert err.value.message == "Invalid reboot_type received: 'full'"
    assert _info(ctx) != {}


# -- balloon, console ----------------------------------------------------------------

def test_balloon_sets_the_running_memory(ctx: NodeContext, inst: dict[str, Any]) -> None:
    bi.instance_start(ctx, inst, False, [])
    assert bi.instance_balloon_memory(ctx, inst, 96) is None
    assert _info(ctx) == {"memory": 96, "vcpus": 2, "state": 0, "time": 0}


def test_balloon_of_a_stopped_instance_does_nothing(ctx: NodeContext, inst: dict[str, Any]) -> None:
    assert bi.instance_balloon_memory(ctx, inst, 96) is None
    assert not _state_file(ctx).exists()


def test_console_info_of_the_fake_hypervisor_is_a_message(ctx: NodeContext, inst: dict[str, Any]) -> None:
    body = {NAME: {"instance": inst, "node": {"name": "node1", "uuid": "node-uuid-1"},
                   "group": {"name": "default"}, "hvParams": FAKE, "beParams": inst["beparams"]}}
    assert bi.instance_console_info(ctx, body) == {
        NAME: {"instance": NAME, "kind": "msg", "message": "Console not available for fake hypervisor"}}


# -- migration -----------------------------------------------------------------------

def test_a_running_instance_is_migratable(ctx: NodeContext, inst: dict[str, Any]) -> None:
    bi.instance_start(ctx, inst, False, [])
    assert bi.instance_migratable(ctx, inst) is None


def test_a_stopped_instance_is_not_migratable(ctx: NodeContext, inst: dict[str, Any]) -> None:
    with pytest.raises(RpcFail) as err:
        bi.instance_migratable(ctx, inst)
    assert err.value.message == f"Instance {NAME} is not running"


def test_accept_refuses_an_instance_running_on_the_target(ctx: NodeContext, inst: dict[str, Any]) -> None:
    bi.instance_start(ctx, inst, False, [])
    with pytest.raises(RpcFail) as err:
        bi.accept_instance(ctx, inst, "", "127.0.0.3")
    assert err.value.message == "Failed to accept instance: Can't accept instance, already running"


def _shared_roots(tmp_path: Path) -> tuple[NodeContext, NodeContext, str]:
    """Two nodes whose shared file storage directory is one directory; the disk's logical path."""
    shared = tmp_path / "shared-file-storage"
    (shared / NAME).mkdir(parents=True)
    with open(shared / NAME / "disk0", "wb") as f:
        f.truncate(1024 * 1024)
    nodes = []
    for hostname in ("node1", "node2"):
        c = _ctx(tmp_path, hostname)
        os.makedirs(os.path.dirname(c.paths.shared_file_storage_dir), exist_ok=True)
        os.symlink(shared, c.paths.shared_file_storage_dir)
        nodes.append(c)
    return nodes[0], nodes[1], f"/srv/ganeti/shared-file-storage/{NAME}/disk0"


def test_migration_moves_the_instance_between_two_node_roots(tmp_path: Path) -> None:
    src, dst, disk = _shared_roots(tmp_path)
    inst = _instance([disk], dev_type="sharedfile")
    bi.instance_start(src, inst, False, [])
    bi.instance_balloon_memory(src, inst, 100)
    # the master's sequence (TLMigrateInstance._ExecMigration)
    bi.instance_migratable(src, inst)
    info = bi.migration_info(src, inst)
    bi.accept_instance(dst, inst, info, "127.0.0.3")
    bi.instance_migrate(src, "cluster.example.com", inst, "127.0.0.3", True)
    assert bi.instance_get_migration_status(src, inst) == {"status": "completed"}
    bi.instance_finalize_migration_src(src, inst, True, True)
    bi.instance_finalize_migration_dst(dst, inst, info, True)
    assert node.instance_list(src, ["fake"], {"fake": FAKE}) == []
    assert node.instance_list(dst, ["fake"], {"fake": FAKE}) == [NAME]
    assert _info(dst) == {"memory": 100, "vcpus": 2, "state": 0, "time": 0}
    # the instance can be stopped where it now runs
    bi.instance_shutdown(dst, inst, 5, [])
    assert node.instance_list(dst, ["fake"], {"fake": FAKE}) == []


def test_failed_migration_leaves_the_instance_on_the_source(tmp_path: Path) -> None:
    src, dst, disk = _shared_roots(tmp_path)
    inst = _instance([disk], dev_type="sharedfile")
    bi.instance_start(src, inst, False, [])
    info = bi.migration_info(src, inst)
    bi.accept_instance(dst, inst, info, "127.0.0.3")
    bi.instance_finalize_migration_src(src, inst, False, True)
    bi.instance_finalize_migration_dst(dst, inst, info, False)
    assert node.instance_list(src, ["fake"], {"fake": FAKE}) == [NAME]
    assert node.instance_list(dst, ["fake"], {"fake": FAKE}) == []
    assert not os.listdir(Path(dst.paths.run_dir) / "fake-hypervisor-incoming")


# -- hotplug, metadata ---------------------------------------------------------------

def test_hotplug_is_not_supported_by_the_fake_hypervisor(ctx: NodeContext, inst: dict[str, Any]) -> None:
    with pytest.raises(RpcFail) as err:
        bi.hotplug_supported(ctx, inst)
    assert err.value.message == "Hotplug is not supported: Hotplug is not supported by this hypervisor"


def test_hotplug_device_is_refused_by_the_fake_hypervisor(ctx: NodeContext, inst: dict[str, Any]) -> None:
    bi.instance_start(ctx, inst, False, [])
    with pytest.raises(RpcFail) as err:
        bi.hotplug_device(ctx, inst, "hotadd", "disk", inst["disks_info"][0], None, 1)
    assert err.value.message == "Hotplug is not supported: Hotplug is not supported."


def test_hotplug_device_refuses_an_unknown_action(ctx: NodeContext, inst: dict[str, Any]) -> None:
    with pytest.raises(RpcFail, match=r"^Hotplug is not supported: unknown hotplug action 'hotswap'"):
        bi.hotplug_device(ctx, inst, "hotswap", "disk", {}, None, 0)


def test_metadata_is_kept_in_the_run_directory_for_root_only(ctx: NodeContext, inst: dict[str, Any]) -> None:
    data = {**inst, "osparams_public": {"a": "1"}, "osparams_private": {}, "osparams_secret": {"pw": "x"}}
    assert bi.instance_metadata_modify(ctx, data) is None
    path = Path(ctx.paths.run_dir) / "instance-metadata" / f"{NAME}.json"
    assert json.loads(path.read_text()) == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_metadata_modify_replaces_the_previous_data(ctx: NodeContext, inst: dict[str, Any]) -> None:
    bi.instance_metadata_modify(ctx, {**inst, "osparams_public": {"a": "1"}})
    bi.instance_metadata_modify(ctx, {**inst, "osparams_public": {"a": "2"}})
    path = Path(ctx.paths.run_dir) / "instance-metadata" / f"{NAME}.json"
    assert json.loads(path.read_text())["osparams_public"] == {"a": "2"}


# -- the same calls on the real Ganeti noded -------------------------------------------

#: Calls whose answers are deterministic on both sides, in order (INST = the instance dict).
SEQUENCE: list[list[Any]] = [
    ["instance_start", "INST", False, [["gnt:client:test", "start", 1]]],
    ["instance_info", NAME, "fake", FAKE],
    ["instance_start", "INST", False, []],
    ["instance_balloon_memory", "INST", 100],
    ["instance_info", NAME, "fake", FAKE],
    ["instance_reboot", "INST", "soft", 5, []],
    ["instance_reboot", "INST", "hard", 5, []],
    ["instance_info", NAME, "fake", FAKE],
    ["instance_reboot", "INST", "full", 5, []],
    ["instance_migratable", "INST"],
    ["instance_get_migration_status", "INST"],
    ["accept_instance", "INST", "", "127.0.0.3"],
    ["hotplug_supported", "INST"],
    ["hotplug_device", "INST", "hotadd", "disk", {"dev_type": "file"}, None, 1],
    ["instance_console_info", "CONSOLE"],
    ["instance_shutdown", "INST", 5, []],
    ["instance_shutdown", "INST", 5, []],
    ["instance_info", NAME, "fake", FAKE],
    ["instance_reboot", "INST", "soft", 5, []],
    ["instance_migratable", "INST"],
    ["instance_balloon_memory", "INST", 100],
    ["instance_finalize_migration_dst", "INST", "", True],
    ["instance_info", NAME, "fake", FAKE],
    ["instance_finalize_migration_src", "INST", True, True],
    ["instance_info", NAME, "fake", FAKE],
    ["instance_start", "BADHV", False, []],
]

#: Index in SEQUENCE of the start of an instance that already runs.
SECOND_START = 2

_REAL_SEQUENCE = """
from ganeti import backend, errors
from ganeti.server import noded
calls = json.loads({calls!r})
result = []
for name, *args in calls:
    try:
        handler = getattr(noded.NodeRequestHandler, "perspective_" + name)
        result.append([True, handler(args[0] if name == "instance_console_info" else args)])
    except backend.RPCFail as err:
        result.append([False, str(err)])
    except Exception as err:
        result.append([False, "Error while executing backend function: %s" % err])
"""


def _calls(inst: dict[str, Any]) -> list[list[Any]]:
    console = {NAME: {"instance": inst, "node": {"name": "node1", "uuid": "node-uuid-1"},
                      "group": {"name": "default", "uuid": "group-uuid"}, "hvParams": FAKE,
                      "beParams": inst["beparams"]}}
    subst = {"INST": inst, "BADHV": {**inst, "hypervisor": "nonexistent"}, "CONSOLE": console}
    return [[a if not isinstance(a, str) else subst.get(a, a) for a in call] for call in SEQUENCE]


@requires_real_ganeti
def test_the_instance_life_cycle_answers_like_ganeti(tmp_path: Path) -> None:
    answers = []
    for hostname in ("ours", "real"):
        c = _ctx(tmp_path, hostname)
        # the real Ganeti needs the directories its ensure-dirs creates; a disk path below the
        # root is the same file for both daemons
        for sub in ("fake-hypervisor", "instance-disks", "instance-reason"):
            os.makedirs(os.path.join(c.paths.run_dir, sub), exist_ok=True)
        calls = _calls(_instance([_disk_file(c)]))
        if hostname == "real":
            answers.append(real_snippet(Path(c.paths.root),
                                        _REAL_SEQUENCE.format(calls=json.dumps(calls))))
        else:
            answers.append([our_call(getattr(bi, name, None) or getattr(node, name), c, *args)
                            for name, *args in calls])
        reason = json.loads((Path(c.paths.run_dir) / "instance-reason" / NAME).read_text())
        answers[-1].append([entry[:2] for entry in reason])
    ours, theirs = answers
    for i, (call, mine, real) in enumerate(zip(SEQUENCE, ours, theirs, strict=False)):
        if i == SECOND_START:  # the one documented difference: a second start is refused
            assert real == [True, None]
            assert mine == [False, f"Instance '{NAME}' is already running on this node"]
            continue
        assert mine == real, call[0]
    assert ours[-1] == theirs[-1] == [["gnt:daemon:noded:shutdown", ""]]
