"""The real Ganeti 3.0 RPC client against our node daemon and against the real ganeti-noded.

Every call is made by tests/interop_client.py, which drives Ganeti's own
ganeti.rpc.node client code (generated call_* wrappers, the master's
encoders, pycurl with _ConfigRpcCurl), so the request bodies are exactly what
a real master sends. The same inputs go to our daemon (127.0.0.21) and to
the real ganeti-noded (127.0.0.22), each in its own virtual-cluster root of
a node called "node1", and the answers are compared after normalising what
legitimately differs (root paths, times, free memory/space, random names,
certificate digests).

TLS modes: "bootstrap" (no ssconf_master_candidates_certs; the client
presents server.pem, as Ganeti does when client.pem is missing) and
"candidate" (after a write_ssconf_files that lists client.pem's digest, the
client presents client.pem): Ganeti's phase A -> B.

Failure texts: where Ganeti answers "Error while executing backend function:
<exception text>" (an unexpected exception) and ours answers the same text as
a plain RPC failure, they count as equal (see `same_failure`).

Never called on the real daemon (they act on the machine): node_powercycle,
node_leave_cluster, node_(de)activate_master_ip, node_ssh_key*, etc_hosts_modify.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from interop_support import (
    BOOTSTRAP,
    CANDIDATE,
    CANDIDATE_UUID,
    HOSTNAME,
    Pair,
    Result,
    Target,
    as_bytes,
    assert_both_fail,
    assert_both_succeed,
    assert_same,
    assert_same_all,
    both,
    call,
    describe,
    failure_text,
    file_facts,
    file_times,
    ganeti_path,
    master_path,
    node_path,
    normalize,
    outcome,
    remove_in_both,
    run_client,
    same_failure,
    shape,
    start_our_noded,
    start_real_noded,
    virtual_path,
    with_cert,
    write_in_both,
)
from real_ganeti import requires_real_ganeti, run_real_ganeti

from noded import certs

pytestmark = requires_real_ganeti

OURS_ADDRESS = "127.0.0.21"
REAL_ADDRESS = "127.0.0.22"
LEAVE_ADDRESS = "127.0.0.23"
FAKE_HV = [["fake", {}]]
FILE_STORAGE = "/srv/ganeti/file-storage"
GANETI_USER, GANETI_GROUP = "gnt-masterd", "gnt-daemons"


# -- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Our daemon and the real one, each started once for the module."""
    base = tmp_path_factory.mktemp("interop")
    for d in ("ours", "real", "ours-master", "real-master"):
        (base / d).mkdir()
    real = start_real_noded(base / "real", base / "real-master", REAL_ADDRESS)
    try:
        ours = start_our_noded(base / "ours", base / "ours-master", OURS_ADDRESS)
    except Exception:
        real.stop()
        raise
    p = Pair(ours=ours, real=real)
    try:
        yield p
    finally:
        ours.stop()
        real.stop()


@pytest.fixture(scope="module", params=[BOOTSTRAP, CANDIDATE])
def tls_mode_param(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
def tls_mode(pair: Pair, tls_mode_param: str) -> str:
    """Each TLS mode in turn (module-scoped parameter, so pytest groups the tests by mode)."""
    pair.ensure_mode(tls_mode_param)
    return tls_mode_param


@pytest.fixture
def candidate(pair: Pair) -> str:
    """Normal operation: the candidate map lists client.pem, the client presents it."""
    pair.ensure_mode(CANDIDATE)
    return CANDIDATE


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files outside both roots, named the same for both daemons (helpers, scripts)."""
    return tmp_path_factory.mktemp("shared")


# -- helpers -----------------------------------------------------------------------

def set_master_node(pair: Pair, name: str) -> None:
    """ssconf_master_node on both nodes, the way the master writes it."""
    for (o, r) in both(pair, [call("write_ssconf_files", {"master_node": name}, cert="mode")], pair.mode):
        assert not o["fail_msg"] and not r["fail_msg"], (o, r)


def sha1_file(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


# -- version and node information ----------------------------------------------------

def test_version_answers_the_protocol_version_like_ganeti(pair: Pair, tls_mode: str) -> None:
    ours, _real = assert_same(pair, call("version"), tls_mode)
    assert ours == (True, 3000000)


def _node_info_figures(value: tuple[bool, Any]) -> tuple[bool, Any]:
    """Keep what is deterministic on one machine: boot id, sizes, CPU counts; free figures as types."""
    ok, payload = value
    if not ok:
        return value
    boot_id, storage, hvs = payload
    storage = [{**s, "storage_free": shape(s["storage_free"])} for s in storage]
    hvs = [{k: (v if k in ("memory_total", "cpu_total", "cpu_nodes", "cpu_sockets", "cpu_dom0", "hv_version")
                else shape(v)) for k, v in hv.items()} for hv in hvs]
    return (ok, [boot_id, storage, hvs])


def test_node_info_reports_file_storage_and_the_fake_hypervisor_like_ganeti(
        pair: Pair, tls_mode: str) -> None:
    c = call("node_info", [["file", node_path(FILE_STORAGE), []]], FAKE_HV)
    _ours, real = assert_same(pair, c, tls_mode, transform=_node_info_figures)
    assert real[1][1][0]["name"] == "<ROOT>" + FILE_STORAGE


def test_node_info_free_space_and_memory_agree_with_ganeti(pair: Pair, candidate: str) -> None:
    c = call("node_info", [["file", node_path(FILE_STORAGE), []]], FAKE_HV)
    ours, real = assert_both_succeed(pair, c, candidate)
    assert abs(ours[1][0]["storage_free"] - real[1][0]["storage_free"]) <= 256, (ours, real)
    for key in ("memory_free", "memory_dom0"):
        assert abs(ours[2][0][key] - real[2][0][key]) <= 512, (key, ours, real)


def test_node_info_without_units_or_hypervisors_reports_only_the_boot_id(pair: Pair, candidate: str) -> None:
    ours, _ = assert_same(pair, call("node_info", [], []), candidate)
    assert ours[1][1:] == [[], []]


def test_node_info_reports_an_lvm_volume_group_without_lvm_as_unknown_sizes(
        pair: Pair, candidate: str) -> None:
    assert_same(pair, call("node_info", [["lvm-vg", "xenvg", [False]]], []), candidate)


def test_node_info_fails_like_ganeti_for_a_missing_file_storage_dir(pair: Pair, candidate: str) -> None:
    same_failure(pair, call("node_info", [["file", node_path("/srv/ganeti/nothere"), []]], []), candidate)


def test_node_info_fails_like_ganeti_for_an_unknown_hypervisor(pair: Pair, candidate: str) -> None:
    same_failure(pair, call("node_info", [], [["nosuchhv", {}]]), candidate)


# -- node_verify ---------------------------------------------------------------------

def _verify_setup(pair: Pair, shared_dir: Path) -> dict[str, Any]:
    """Identical inputs on both nodes; returns the checkdict (master-relative markers inside)."""
    for t in pair.targets:
        t.path("/etc/ganeti/file-storage-paths").write_text(
            f"# allowed file storage paths\n{t.root}{FILE_STORAGE}\n/etc/forbidden-x\nrelative/dir\n"
            "/usr/lib/x\n")
        t.master_file("/etc/ganeti/interop-same").write_text("same on both nodes\n")
    write_in_both(pair, "/etc/ganeti/interop-same", "same on both nodes\n")
    not_exec = shared_dir / "not-executable"
    not_exec.write_text("#!/bin/sh\n")
    os.chmod(not_exec, 0o644)
    return {
        "version": None,
        "time": None,
        "hypervisor": ["fake"],
        "filelist": [virtual_path("/etc/ganeti/interop-same"), virtual_path("/var/lib/ganeti/server.pem"),
                     virtual_path("/var/lib/ganeti/no-such-file")],
        "node-net-test": [[[HOSTNAME, "127.0.0.1", "127.0.0.1"]], [HOSTNAME]],
        "master-ip": [HOSTNAME, "127.0.0.1", [HOSTNAME]],
        "file-storage-path": node_path(FILE_STORAGE),
        "allowed-file-storage-paths": HOSTNAME,
        "client-cert": None,
        "oslist": None,
        "user-scripts": ["/bin/sh", "/nonexistent/script", str(not_exec)],
        "instancelist": ["fake"],
        "bridges": ["nosuchbr0", "lo"],
        "hvinfo": "fake",
    }


def _verify_comparable(value: tuple[bool, Any], target: Target) -> tuple[bool, Any]:
    ok, res = value
    if not ok:
        return value
    res = dict(res)
    sec, usec = res.pop("time")
    assert isinstance(sec, int) and isinstance(usec, int) and abs(sec - time.time()) < 120, (sec, usec)
    server = "/###-VIRTUAL-PATH-###,/var/lib/ganeti/server.pem"
    assert res["filelist"].pop(server, None) == sha1_file(Path(target.server_pem)), (target.name, res)
    assert res.pop("client-cert") == [None, target.client_fp]
    res["oslist"] = sorted(res["oslist"])  # Ganeti lists OS directories in readdir order
    res["hvinfo"] = _node_info_figures((True, ["", [], [res["hvinfo"]]]))[1][2][0]
    return (ok, res)


def test_node_verify_runs_the_checks_possible_here_like_ganeti(
        pair: Pair, tls_mode: str, shared_dir: Path) -> None:
    checks = _verify_setup(pair, shared_dir)
    c = call("node_verify", checks, "cluster.example.com", {"fake": {}})
    ((o, r),) = both(pair, [with_cert(c)], tls_mode)
    ours = _verify_comparable(outcome(o, pair.ours), pair.ours)
    real = _verify_comparable(outcome(r, pair.real), pair.real)
    assert ours == real, describe(c, ours, real)
    assert real[1]["filelist"] == {"/###-VIRTUAL-PATH-###,/etc/ganeti/interop-same":
                                   hashlib.sha1(b"same on both nodes\n").hexdigest()}
    assert real[1]["allowed-file-storage-paths"] == ["/etc/forbidden-x", "/usr/lib/x", "relative/dir"]
    assert "file-storage-path" not in real[1]


def test_node_verify_reports_file_storage_path_problems_like_ganeti(pair: Pair, candidate: str) -> None:
    for t in pair.targets:
        t.path("/etc/ganeti/file-storage-paths").write_text(f"{t.root}{FILE_STORAGE}\n")
    not_listed = call("node_verify", {"file-storage-path": node_path("/srv/ganeti/elsewhere")},
                      "cluster.example.com", {})
    ours, _ = assert_same(pair, not_listed, candidate)
    assert "is not acceptable for file storage" in ours[1]["file-storage-path"]
    remove_in_both(pair, "/etc/ganeti/file-storage-paths")
    no_file = call("node_verify", {"file-storage-path": node_path(FILE_STORAGE),
                                   "shared-file-storage-path": node_path("/srv/ganeti/shared-file-storage")},
                   "cluster.example.com", {})
    ours, _ = assert_same(pair, no_file, candidate)
    assert "file-storage-paths' was not accessible" in ours[1]["file-storage-path"]


def test_node_verify_light_runs_the_same_checks_like_ganeti(pair: Pair, candidate: str) -> None:
    for t in pair.targets:
        t.path("/etc/ganeti/file-storage-paths").write_text(f"{t.root}{FILE_STORAGE}\n")
    checks = {
        "version": None,
        "file-storage-path": node_path("/srv/ganeti/not-listed"),
        "node-net-test": [[["node2", "127.0.0.1", "127.0.0.1"]], [HOSTNAME]],
        "master-ip": ["node2", "127.0.0.1", ["node2"]],
        "bridges": [],
        "user-scripts": [],
    }
    ours, _ = assert_same(pair, call("node_verify_light", checks, "cluster.example.com", {}), candidate)
    assert ours[1]["node-net-test"] == {HOSTNAME: "Can't find my own primary/secondary IP in the node list"}
    assert ours[1]["master-ip"] is None


# -- files the master distributes ------------------------------------------------------

UPLOAD_ATIME, UPLOAD_MTIME = 1700000000.25, 1700000100.5


def _prepare_upload_source(t: Target, node_file: str, text: str, mode: int, owner: str, group: str) -> None:
    src = t.master_file(node_file)
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(text)
    os.chown(src, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid)
    os.chmod(src, mode)
    os.utime(src, (UPLOAD_ATIME, UPLOAD_MTIME))


def test_upload_file_writes_the_masters_file_with_its_mode_owner_and_times_like_ganeti(
        pair: Pair, tls_mode: str) -> None:
    rapi_users = "/var/lib/ganeti/rapi/users"
    text = f"# rapi users ({tls_mode})\njack secret write\n"
    for t in pair.targets:
        t.path(rapi_users).unlink(missing_ok=True)
        _prepare_upload_source(t, rapi_users, text, 0o640, "gnt-rapi", "gnt-masterd")
    ours, _ = assert_same(pair, call("upload_file", ganeti_path("RAPI_USERS_FILE")), tls_mode)
    assert ours == (True, None)
    times = [file_times(t.path(rapi_users)) for t in pair.targets]
    facts = [file_facts(t.path(rapi_users)) for t in pair.targets]
    assert facts[0] == facts[1], facts
    assert facts[1] == {"content": text.encode(), "mode": "0o640", "owner": "gnt-rapi",
                        "group": "gnt-masterd"}
    assert times[0] == times[1] == (UPLOAD_ATIME, UPLOAD_MTIME), times


def test_upload_file_sends_a_large_config_compressed_and_it_arrives_whole(pair: Pair, candidate: str) -> None:
    config = "/var/lib/ganeti/config.data"
    text = json.dumps({"cluster": {"name": "c", "padding": "x" * 3000}}) + "\n"  # > 512 bytes: zlib+base64
    for t in pair.targets:
        t.path(config).unlink(missing_ok=True)
        _prepare_upload_source(t, config, text, 0o640, "root", GANETI_USER)
    ours, _ = assert_same(pair, call("upload_file", ganeti_path("CLUSTER_CONF_FILE")), candidate)
    assert ours == (True, None)
    facts = [file_facts(t.path(config)) for t in pair.targets]
    assert facts[0] == facts[1] and facts[1]["content"] == text.encode(), facts


def test_upload_file_refuses_a_target_outside_the_allowed_list_like_ganeti(
        pair: Pair, candidate: str) -> None:
    for t in pair.targets:
        _prepare_upload_source(t, "/var/lib/ganeti/not-allowed", "x\n", 0o644, "root", "root")
    text = same_failure(pair, call("upload_file", master_path("/var/lib/ganeti/not-allowed")), candidate)
    assert text == ("Filename passed to UploadFile not in allowed upload targets: "
                    "'<ROOT>/var/lib/ganeti/not-allowed'")
    assert not pair.ours.path("/var/lib/ganeti/not-allowed").exists()


def test_upload_file_single_writes_known_hosts_with_mode_owner_and_times_like_ganeti(
        pair: Pair, tls_mode: str) -> None:
    known_hosts = "/var/lib/ganeti/known_hosts"
    remove_in_both(pair, known_hosts)
    content = f"node1,192.0.2.1 ssh-rsa AAAA{tls_mode}\n" * 40  # > 512 bytes: zlib+base64
    c = call("upload_file_single", virtual_path(known_hosts), as_bytes(content), 0o644, "root",
             GANETI_USER, UPLOAD_ATIME, UPLOAD_MTIME)
    ours, _ = assert_same(pair, c, tls_mode)
    assert ours == (True, None)
    times = [file_times(t.path(known_hosts)) for t in pair.targets]
    facts = [file_facts(t.path(known_hosts)) for t in pair.targets]
    assert facts[0] == facts[1], facts
    assert facts[1] == {"content": content.encode(), "mode": "0o644", "owner": "root", "group": GANETI_USER}
    assert times[0] == times[1] == (UPLOAD_ATIME, UPLOAD_MTIME), times


def test_upload_file_single_without_mode_and_times_writes_like_ganeti(pair: Pair, candidate: str) -> None:
    known_hosts = "/var/lib/ganeti/known_hosts"
    remove_in_both(pair, known_hosts)
    c = call("upload_file_single", virtual_path(known_hosts), "short text\n", None, "root", "root",
             None, None)
    assert_same(pair, c, candidate)
    facts = [file_facts(t.path(known_hosts)) for t in pair.targets]
    assert facts[0] == facts[1], facts
    for t in pair.targets:
        assert abs(t.path(known_hosts).stat().st_mtime - time.time()) < 120


def test_upload_file_single_refuses_what_ganeti_refuses(pair: Pair, candidate: str) -> None:
    not_allowed = call("upload_file_single", virtual_path("/var/lib/ganeti/not-allowed"), "x", None,
                       "root", "root", None, None)
    same_failure(pair, not_allowed, candidate)
    # a virtual-cluster node wants virtual paths; this one is the master's local path
    not_virtual = call("upload_file_single", ganeti_path("SSH_KNOWN_HOSTS_FILE"), "x", None,
                       "root", "root", None, None)
    ((o, r),) = both(pair, [with_cert(not_virtual)], candidate)
    ours = failure_text(normalize(o["fail_msg"], pair.ours))
    real = failure_text(normalize(r["fail_msg"], pair.real))
    assert ours == real == "Path '<MASTER>/var/lib/ganeti/known_hosts' is not a virtual path", (ours, real)


def test_upload_file_single_refuses_an_unknown_owner_like_ganeti(pair: Pair, candidate: str) -> None:
    c = call("upload_file_single", virtual_path("/var/lib/ganeti/known_hosts"), "x", 0o644,
             "nosuchuser", "root", None, None)
    ours, real = assert_both_fail(pair, c, candidate)
    assert "nosuchuser" in ours and "nosuchuser" in real


def test_write_ssconf_files_writes_ganetis_files(pair: Pair, tls_mode: str) -> None:
    values = {"cluster_name": f"cluster-{tls_mode}.example.com", "node_list": ["node1", "node2"],
              "master_netdev": "lo"}
    ours, _ = assert_same(pair, call("write_ssconf_files", values), tls_mode)
    assert ours == (True, None)
    for key, text in (("cluster_name", f"cluster-{tls_mode}.example.com\n"), ("node_list", "node1\nnode2\n"),
                      ("master_netdev", "lo\n")):
        facts = [file_facts(t.data_dir / f"ssconf_{key}") for t in pair.targets]
        assert facts[0] == facts[1], (key, facts)
        assert facts[1]["content"] == text.encode() and facts[1]["mode"] == "0o444", facts


def test_write_ssconf_files_refuses_an_unknown_key_like_ganeti(pair: Pair, candidate: str) -> None:
    same_failure(pair, call("write_ssconf_files", {"no_such_key": "x"}), candidate)
    for t in pair.targets:
        assert not (t.data_dir / "ssconf_no_such_key").exists()


def test_get_file_info_reports_existence_and_size_like_ganeti(pair: Pair, tls_mode: str) -> None:
    write_in_both(pair, "/var/lib/ganeti/interop-info", "12345\n")
    outcomes = assert_same_all(pair, [call("get_file_info", node_path("/var/lib/ganeti/interop-info")),
                                      call("get_file_info", node_path("/var/lib/ganeti/no-such-file"))],
                               tls_mode)
    assert outcomes == [(True, [True, {"size": 6}]), (True, [False, {}])]


def test_master_node_name_reads_ssconf_like_ganeti(pair: Pair, tls_mode: str) -> None:
    set_master_node(pair, "node7")
    ours, _ = assert_same(pair, call("master_node_name"), tls_mode)
    assert ours == (True, "node7")


def test_master_node_name_without_ssconf_fails_like_ganeti(pair: Pair, candidate: str) -> None:
    remove_in_both(pair, "/var/lib/ganeti/ssconf_master_node")
    same_failure(pair, call("master_node_name"), candidate)


# -- job queue -------------------------------------------------------------------------

QUEUE = "/var/lib/ganeti/queue"


def test_jobqueue_update_writes_job_files_like_ganeti(pair: Pair, tls_mode: str) -> None:
    small, large = '{"id": 1}', json.dumps({"id": 2, "ops": ["x" * 1000]})  # large: zlib+base64
    c1 = call("jobqueue_update", virtual_path(f"{QUEUE}/job-1"), small)
    c2 = call("jobqueue_update", virtual_path(f"{QUEUE}/job-2"), as_bytes(large))
    assert assert_same(pair, c1, tls_mode)[0] == (True, None)
    assert assert_same(pair, c2, tls_mode)[0] == (True, None)
    for name, text in (("job-1", small), ("job-2", large)):
        facts = [file_facts(t.path(f"{QUEUE}/{name}")) for t in pair.targets]
        assert facts[0] == facts[1], facts
        assert facts[1] == {"content": text.encode(), "mode": "0o640", "owner": GANETI_USER,
                            "group": GANETI_GROUP}


def test_jobqueue_update_refuses_files_outside_the_queue_like_ganeti(pair: Pair, candidate: str) -> None:
    same_failure(pair, call("jobqueue_update", virtual_path("/var/lib/ganeti/evil"), "x"), candidate)
    for t in pair.targets:
        assert not t.path("/var/lib/ganeti/evil").exists()


def test_jobqueue_rename_moves_job_files_into_the_archive_like_ganeti(pair: Pair, tls_mode: str) -> None:
    for n in (11, 12):
        write_in_both(pair, f"{QUEUE}/job-{n}", f"job {n}\n", 0o640)
        remove_in_both(pair, f"{QUEUE}/archive/0/job-{n}")
    renames = [[virtual_path(f"{QUEUE}/job-{n}"), virtual_path(f"{QUEUE}/archive/0/job-{n}")]
               for n in (11, 12)]
    ours, _ = assert_same(pair, call("jobqueue_rename", renames), tls_mode)
    assert ours == (True, [None, None])
    for t in pair.targets:
        assert not t.path(f"{QUEUE}/job-11").exists()
        assert t.path(f"{QUEUE}/archive/0/job-12").read_text() == "job 12\n"


def test_jobqueue_rename_fails_for_a_missing_job_file_like_ganeti(pair: Pair, candidate: str) -> None:
    remove_in_both(pair, f"{QUEUE}/job-99")
    c = call("jobqueue_rename",
             [[virtual_path(f"{QUEUE}/job-99"), virtual_path(f"{QUEUE}/archive/0/job-99")]])
    ours, real = assert_both_fail(pair, c, candidate)
    assert "<ROOT>/var/lib/ganeti/queue/job-99" in ours and "No such file or directory" in ours, (ours, real)


def test_jobqueue_rename_refuses_targets_outside_the_queue_like_ganeti(pair: Pair, candidate: str) -> None:
    write_in_both(pair, f"{QUEUE}/job-13", "job 13\n", 0o640)
    c = call("jobqueue_rename",
             [[virtual_path(f"{QUEUE}/job-13"), virtual_path("/var/lib/ganeti/elsewhere")]])
    same_failure(pair, c, candidate)
    for t in pair.targets:
        assert t.path(f"{QUEUE}/job-13").exists() and not t.path("/var/lib/ganeti/elsewhere").exists()


def test_jobqueue_purge_empties_the_queue_but_keeps_the_lock_like_ganeti(pair: Pair, candidate: str) -> None:
    for f in ("job-21", "archive/stray", "archive/0/job-20"):
        write_in_both(pair, f"{QUEUE}/{f}", "x\n", 0o640)
    ours, _ = assert_same(pair, call("jobqueue_purge"), candidate)
    assert ours == (True, None)
    left = [sorted(str(p.relative_to(t.path(QUEUE))) for p in t.path(QUEUE).rglob("*")) for t in pair.targets]
    assert left[0] == left[1], left
    assert "lock" in left[1] and "job-21" not in left[1]


def test_jobqueue_set_drain_flag_creates_and_removes_the_drain_file_like_ganeti(
        pair: Pair, candidate: str) -> None:
    assert assert_same(pair, call("jobqueue_set_drain_flag", True), candidate)[0] == (True, None)
    assert [t.path(f"{QUEUE}/drain").exists() for t in pair.targets] == [True, True]
    assert assert_same(pair, call("jobqueue_set_drain_flag", False), candidate)[0] == (True, None)
    assert [t.path(f"{QUEUE}/drain").exists() for t in pair.targets] == [False, False]


# -- watcher, delays, addresses ----------------------------------------------------------

def test_set_and_get_watcher_pause_round_trip_like_ganeti(pair: Pair, candidate: str) -> None:
    until = time.time() + 86400.7
    assert assert_same(pair, call("set_watcher_pause", until), candidate)[0] == (True, None)
    contents = [t.path("/var/lib/ganeti/watcher.pause").read_text() for t in pair.targets]
    assert contents[0] == contents[1] == f"{int(until)}\n"
    assert assert_same(pair, call("get_watcher_pause"), candidate)[0] == (True, int(until))
    assert assert_same(pair, call("set_watcher_pause", None), candidate)[0] == (True, None)
    assert [t.path("/var/lib/ganeti/watcher.pause").exists() for t in pair.targets] == [False, False]
    assert assert_same(pair, call("get_watcher_pause"), candidate)[0] == (True, None)


def test_get_watcher_pause_ignores_a_pause_in_the_past_like_ganeti(pair: Pair, candidate: str) -> None:
    write_in_both(pair, "/var/lib/ganeti/watcher.pause", f"{int(time.time()) - 60}\n")
    assert assert_same(pair, call("get_watcher_pause"), candidate)[0] == (True, None)


def test_test_delay_sleeps_and_refuses_negative_durations_like_ganeti(pair: Pair, tls_mode: str) -> None:
    start = time.monotonic()
    outcomes = assert_same_all(pair, [call("test_delay", 0.5), call("test_delay", -1)], tls_mode)
    assert time.monotonic() - start >= 0.5
    assert outcomes == [(True, None), (False, "Invalid sleep duration")]


def test_node_has_ip_address_answers_like_ganeti(pair: Pair, candidate: str) -> None:
    addresses = {"127.0.0.1": True, "::1": True, "192.0.2.1": False}
    outcomes = assert_same_all(pair, [call("node_has_ip_address", a) for a in addresses], candidate)
    assert outcomes == [(True, owned) for owned in addresses.values()]


def test_bridges_exist_answers_like_ganeti(pair: Pair, candidate: str) -> None:
    outcomes = assert_same_all(pair, [call("bridges_exist", []), call("bridges_exist", ["nosuchbr0", "lo"])],
                               candidate)
    assert outcomes == [(True, None), (False, "Missing bridges nosuchbr0, lo")]


# -- /etc/hosts (ours only: the real one edits the machine's /etc/hosts) -----------------------

_GANETI_HOSTS_EDIT = """
import sys
from ganeti.utils import nodesetup
mode, path, name = sys.argv[1:4]
if mode == "add":
    nodesetup.SetEtcHostsEntry(path, sys.argv[4], name, [name.split(".")[0]])
else:
    nodesetup.RemoveEtcHostsEntry(path, name)
    nodesetup.RemoveEtcHostsEntry(path, name.split(".")[0])
"""


def _ganeti_hosts_edit(tmp: Path, before: str, mode: str, name: str, ip: str = "") -> str:
    """What Ganeti's own /etc/hosts code makes of `before` (run on a copy, never on /etc/hosts)."""
    copy = tmp / f"hosts-{mode}"
    copy.write_text(before)
    script = f"import sys\nsys.argv = ['x', {mode!r}, {str(copy)!r}, {name!r}, {ip!r}]\n" + _GANETI_HOSTS_EDIT
    run_real_ganeti(script)
    return copy.read_text()


def test_etc_hosts_modify_edits_the_roots_hosts_file_like_ganeti_and_never_etc_hosts(
        pair: Pair, candidate: str, tmp_path: Path) -> None:
    machine_hosts = Path("/etc/hosts")
    before_machine = (machine_hosts.read_bytes(), machine_hosts.stat().st_mtime_ns)
    hosts = pair.ours.path("/etc/hosts")
    seed = "127.0.0.1\tlocalhost\n# a comment\n192.0.2.9\told-name\n192.0.2.10\tnode10.example.com node10\n"
    hosts.write_text(seed)
    add = call("etc_hosts_modify", "add", "node9.example.com", "192.0.2.9", cert="client")
    (res,) = run_client(pair.ours, [add])
    assert outcome(res, pair.ours) == (True, True)
    expected = _ganeti_hosts_edit(tmp_path, seed, "add", "node9.example.com", "192.0.2.9")
    assert hosts.read_text() == expected
    after_add = hosts.read_text()
    remove = call("etc_hosts_modify", "remove", "node10.example.com", None, cert="client")
    (res,) = run_client(pair.ours, [remove])
    assert outcome(res, pair.ours) == (True, True)
    assert hosts.read_text() == _ganeti_hosts_edit(tmp_path, after_add, "remove", "node10.example.com")
    assert (machine_hosts.read_bytes(), machine_hosts.stat().st_mtime_ns) == before_machine


# -- certificates ------------------------------------------------------------------------

X509_NAME = re.compile(r"^x509-\d{4}-\d{2}-\d{2}_\d{2}_\d{2}_\d{2}-[a-z0-9_]{8}$")


def test_x509_cert_create_and_remove_like_ganeti(pair: Pair, candidate: str) -> None:
    ours, real = assert_both_succeed(pair, call("x509_cert_create", 600), candidate)
    for t, (name, pem) in ((pair.ours, ours), (pair.real, real)):
        assert X509_NAME.match(name), (t.name, name)
        cert = x509.load_pem_x509_certificate(pem.encode())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == HOSTNAME, t.name
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == 600, t.name
        assert abs(cert.not_valid_before_utc.timestamp() - time.time()) < 120, t.name
        d = t.path(f"/var/run/ganeti/crypto/{name}")
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, t.name
        assert (d / "cert").read_text() == pem, t.name
        assert [oct(stat.S_IMODE((d / f).stat().st_mode)) for f in ("cert", "key")] == ["0o400", "0o400"]
        assert "PRIVATE KEY" in (d / "key").read_text(), t.name
    removed = both(pair, lambda t: [call("x509_cert_remove", ours[0] if t is pair.ours else real[0],
                                         cert="mode")], candidate)
    assert [outcome(o, pair.ours) for o, _ in removed] == [(True, None)]
    assert [outcome(r, pair.real) for _, r in removed] == [(True, None)]
    assert not pair.ours.path(f"/var/run/ganeti/crypto/{ours[0]}").exists()
    assert not pair.real.path(f"/var/run/ganeti/crypto/{real[0]}").exists()


def test_x509_cert_remove_of_an_unknown_name_fails_like_ganeti(pair: Pair, candidate: str) -> None:
    same_failure(pair, call("x509_cert_remove", "x509-no-such-cert"), candidate)


def test_node_crypto_tokens_returns_the_client_certificate_digest_like_ganeti(
        pair: Pair, tls_mode: str) -> None:
    ours, real = assert_both_succeed(pair, call("node_crypto_tokens", [["ssl", "get", {}]]), tls_mode)
    assert ours == [["ssl", pair.ours.client_fp]]
    assert real == [["ssl", pair.real.client_fp]]


def test_node_crypto_tokens_refuses_unknown_token_types_like_ganeti(pair: Pair, candidate: str) -> None:
    outcomes = assert_same_all(pair, [call("node_crypto_tokens", [["ssh", "get", {}]]),
                                      call("node_crypto_tokens", [["foo", "get", {}]])], candidate)
    assert outcomes == [(False, f"Token type '{t}' not supported.") for t in ("ssh", "foo")]


# -- hooks, out-of-band helpers, restricted commands -------------------------------------

HOOKS_DIR = "/etc/ganeti/hooks/cluster-verify-post.d"
MASTER_HOOK_ENV = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "GANETI_HOOKS_VERSION": "2",
                   "GANETI_HOOKS_PHASE": "post", "GANETI_HOOKS_PATH": "cluster-verify",
                   "GANETI_OP_CODE": "OP_CLUSTER_VERIFY", "GANETI_CLUSTER": "cluster.example.com"}


def _install_hooks(pair: Pair) -> None:
    scripts = {
        "00-ok": ("#!/bin/sh\necho \"ok $GANETI_HOOKS_PHASE\"\n/usr/bin/env | /usr/bin/sort\npwd\n"
                  "echo on-stderr >&2\n", 0o755),
        "10-fail": ("#!/bin/sh\necho failing\nexit 3\n", 0o755),
        "20-not-executable": ("#!/bin/sh\necho never\n", 0o644),
        "30-bad.name": ("#!/bin/sh\necho never\n", 0o755),
        ".hidden": ("#!/bin/sh\necho never\n", 0o755),
        "50-not-a-script": ("just text\n", 0o755),
    }
    for t in pair.targets:
        d = t.path(HOOKS_DIR)
        d.mkdir(parents=True, exist_ok=True)
        (d / "40-subdir").mkdir(exist_ok=True)
        for name, (text, mode) in scripts.items():
            (d / name).write_text(text)
            os.chmod(d / name, mode)


def test_hooks_runner_runs_the_hook_scripts_like_ganeti(pair: Pair, tls_mode: str) -> None:
    _install_hooks(pair)
    ours, _ = assert_same(pair, call("hooks_runner", "cluster-verify", "post", MASTER_HOOK_ENV), tls_mode)
    results = {name: (status, output) for name, status, output in ours[1]}
    assert list(results) == [f"cluster-verify-post.d/{n}" for n in
                             ("00-ok", "10-fail", "20-not-executable", "30-bad.name", "40-subdir",
                              "50-not-a-script")]
    assert results["cluster-verify-post.d/00-ok"][0] == 2
    assert results["cluster-verify-post.d/10-fail"] == (1, "failing")


def test_hooks_runner_gives_scripts_exactly_the_environment_sent_like_ganeti(
        pair: Pair, candidate: str) -> None:
    _install_hooks(pair)
    env = {k: v for k, v in MASTER_HOOK_ENV.items() if k != "PATH"}
    assert_same(pair, call("hooks_runner", "cluster-verify", "post", env), candidate)


def test_hooks_runner_without_a_hooks_dir_and_with_a_bad_phase_answers_like_ganeti(
        pair: Pair, candidate: str) -> None:
    outcomes = assert_same_all(pair, [call("hooks_runner", "no-such-hpath", "pre", {}),
                                      call("hooks_runner", "cluster-verify", "middle", {})], candidate)
    assert outcomes == [(True, []), (False, "Unknown hooks phase 'middle'")]


@pytest.fixture(scope="module")
def oob_helper(shared_dir: Path) -> str:
    helper = shared_dir / "oob-helper"
    helper.write_text(
        "#!/bin/sh\ncase \"$1\" in\n"
        "  power-status) echo \"{\\\"powered\\\": true, \\\"node\\\": \\\"$2\\\"}\";;\n"
        "  quiet) ;;\n"
        "  fail) echo \"broken $2\"; echo on-stderr >&2; exit 3;;\n"
        "  slow) exec sleep 5;;\n"
        "  not-json) echo \"not json\";;\n"
        "esac\n")
    os.chmod(helper, 0o755)
    return str(helper)


def test_run_oob_runs_the_helper_and_parses_its_json_like_ganeti(
        pair: Pair, candidate: str, oob_helper: str) -> None:
    commands = ("power-status", "quiet", "fail", "slow")
    outcomes = assert_same_all(pair, [call("run_oob", oob_helper, c, "node7", 1) for c in commands],
                               candidate)
    assert outcomes[:2] == [(True, {"powered": True, "node": "node7"}), (True, None)]
    assert outcomes[2] == (False, f"'{oob_helper} fail node7' failed with reason 'exited with exit code 3'; "
                                  "output: broken node7\non-stderr\n")
    assert outcomes[3][0] is False and "timeout of 1.00 seconds" in outcomes[3][1]


def test_run_oob_fails_like_ganeti_when_the_helper_prints_no_json(
        pair: Pair, candidate: str, oob_helper: str) -> None:
    assert_both_fail(pair, call("run_oob", oob_helper, "not-json", "node7", 10), candidate)


def test_run_oob_fails_like_ganeti_when_the_helper_is_missing(pair: Pair, candidate: str) -> None:
    same_failure(pair, call("run_oob", "/nonexistent/oob-helper", "power-status", "node7", 10), candidate)


def test_restricted_command_without_the_commands_dir_is_refused_like_ganeti(
        pair: Pair, candidate: str) -> None:
    for t in pair.targets:
        assert not t.path("/etc/ganeti/restricted-commands").exists()
    # both wait 10 s before answering a refused command (Ganeti's anti-probing delay)
    ours, _ = assert_same(pair, call("restricted_command", "interop-cmd"), candidate)
    assert ours == (False, "Executing command 'interop-cmd' failed")


# -- master candidate role ---------------------------------------------------------------

def test_node_demote_from_mc_refuses_on_the_master_like_ganeti(pair: Pair, candidate: str) -> None:
    set_master_node(pair, HOSTNAME)
    ours, _ = assert_same(pair, call("node_demote_from_mc"), candidate)
    assert ours == (False, "ssconf status shows I'm the master node, will not demote")


def test_node_demote_from_mc_backs_up_and_removes_the_config_like_ganeti(pair: Pair, candidate: str) -> None:
    set_master_node(pair, "node2")
    config = '{"cluster": {"cluster_name": "c"}}\n'
    for t in pair.targets:
        for old in t.data_dir.glob("config.data.backup-*"):
            old.unlink()
    write_in_both(pair, "/var/lib/ganeti/config.data", config, 0o640)
    assert assert_same(pair, call("node_demote_from_mc"), candidate)[0] == (True, None)
    for t in pair.targets:
        assert not (t.data_dir / "config.data").exists(), t.name
        backups = list(t.data_dir.glob("config.data.backup-*"))
        assert len(backups) == 1 and backups[0].read_text() == config, (t.name, backups)
        assert re.match(r"^config\.data\.backup-\d{4}-\d{2}-\d{2}_\d{2}_\d{2}_\d{2}\.", backups[0].name)
    assert assert_same(pair, call("node_demote_from_mc"), candidate)[0] == (True, None)


# -- what the node has: OSes, volume groups, DRBD, exports, hypervisor parameters -----------

def test_os_diagnose_lists_the_installed_oses_like_ganeti(pair: Pair, tls_mode: str) -> None:
    def sort_oses(value: tuple[bool, Any]) -> tuple[bool, Any]:
        return (value[0], sorted(value[1])) if value[0] else value  # readdir order in Ganeti

    assert_same(pair, call("os_diagnose"), tls_mode, transform=sort_oses)


def test_vg_list_without_lvm_is_empty_like_ganeti(pair: Pair, candidate: str) -> None:
    assert assert_same(pair, call("vg_list"), candidate)[0] == (True, {})


def test_drbd_helper_without_drbd_fails_like_ganeti(pair: Pair, candidate: str) -> None:
    same_failure(pair, call("drbd_helper"), candidate)


def test_export_list_fails_without_the_exports_dir_like_ganeti(pair: Pair, candidate: str) -> None:
    for t in pair.targets:
        d = t.path("/var/lib/ganeti/export")
        if d.exists():
            for p in d.iterdir():
                p.rmdir() if p.is_dir() else p.unlink()
            d.rmdir()
    ours, _ = assert_same(pair, call("export_list"), candidate)
    assert ours == (False, "No exports directory")


def test_export_list_lists_the_exports_sorted_like_ganeti(pair: Pair, candidate: str) -> None:
    for t in pair.targets:
        for name in ("inst-b.example.com", "inst-a.example.com", ".hidden"):
            t.path(f"/var/lib/ganeti/export/{name}").mkdir(parents=True, exist_ok=True)
    ours, _ = assert_same(pair, call("export_list"), candidate)
    assert ours == (True, ["inst-a.example.com", "inst-b.example.com"])


def test_hypervisor_validate_params_for_the_fake_hypervisor_answers_like_ganeti(
        pair: Pair, candidate: str) -> None:
    complete = {"migration_mode": "live", "migration_port": 8102}
    outcomes = assert_same_all(pair, [call("hypervisor_validate_params", "fake", complete),
                                      call("hypervisor_validate_params", "fake", {}),
                                      call("hypervisor_validate_params", "nosuchhv", {})], candidate)
    assert outcomes == [(True, None), (False, "'migration_mode'"),
                        (False, "Unknown hypervisor type 'nosuchhv'")]


# -- file storage ------------------------------------------------------------------------

STORAGE_FIELDS = ["name", "size", "used", "free", "allocatable"]


def _allow_file_storage(pair: Pair) -> None:
    for t in pair.targets:
        t.path("/etc/ganeti/file-storage-paths").write_text(f"{t.root}{FILE_STORAGE}\n")


def test_storage_list_reports_a_file_storage_dir_like_ganeti(pair: Pair, candidate: str) -> None:
    def free_as_type(value: tuple[bool, Any]) -> tuple[bool, Any]:
        ok, rows = value
        return (ok, [[*row[:3], shape(row[3]), row[4]] for row in rows]) if ok else value

    c = call("storage_list", "file", [[node_path(FILE_STORAGE)]], None, STORAGE_FIELDS)
    ours, _ = assert_same(pair, c, candidate, transform=free_as_type)
    assert ours[1][0][0] == "<ROOT>" + FILE_STORAGE and ours[1][0][4] is True


def test_storage_list_fails_for_a_missing_file_storage_dir_like_ganeti(pair: Pair, candidate: str) -> None:
    c = call("storage_list", "file", [[node_path("/srv/ganeti/nothere")]], None, ["name", "size"])
    ours, real = assert_both_fail(pair, c, candidate)
    assert "<ROOT>/srv/ganeti/nothere" in ours, (ours, real)


def test_file_storage_dir_create_and_remove_like_ganeti(pair: Pair, candidate: str) -> None:
    _allow_file_storage(pair)
    d = f"{FILE_STORAGE}/inst1.example.com"
    for t in pair.targets:
        if t.path(d).exists():
            t.path(d).rmdir()
    create = call("file_storage_dir_create", node_path(d))
    remove = call("file_storage_dir_remove", node_path(d))
    assert assert_same_all(pair, [create, create], candidate) == [(True, None), (True, None)]
    modes = [oct(stat.S_IMODE(t.path(d).stat().st_mode)) for t in pair.targets]
    assert modes[0] == modes[1], modes
    assert assert_same_all(pair, [remove, remove], candidate) == [(True, None), (True, None)]
    assert [t.path(d).exists() for t in pair.targets] == [False, False]


def test_file_storage_dir_create_and_remove_refuse_a_plain_file_like_ganeti(
        pair: Pair, candidate: str) -> None:
    _allow_file_storage(pair)
    plain = node_path(f"{FILE_STORAGE}/plain-file")
    write_in_both(pair, f"{FILE_STORAGE}/plain-file", "x\n")
    outcomes = assert_same_all(pair, [call("file_storage_dir_create", plain),
                                      call("file_storage_dir_remove", plain)], candidate)
    assert [ok for ok, _ in outcomes] == [False, False], outcomes


def test_file_storage_dir_create_refuses_a_dir_outside_the_allowed_paths(pair: Pair, candidate: str) -> None:
    # ours only: Ganeti 3.0.2 ignores the result of its own check and creates any directory
    _allow_file_storage(pair)
    (res,) = run_client(pair.ours, [call("file_storage_dir_create", node_path("/srv/ganeti/other/x"))])
    ok, text = outcome(res, pair.ours)
    assert not ok and "<ROOT>/srv/ganeti/other/x" in text, text
    assert not pair.ours.path("/srv/ganeti/other/x").exists()


# -- TLS: who may call -------------------------------------------------------------------

def _refused(res: Result) -> bool:
    """The real client reports a refused call as a failure without any decoded answer."""
    return bool(res["fail_msg"]) and res["data"] is None


def test_bootstrap_mode_accepts_only_server_pem_like_ganeti(pair: Pair) -> None:
    results = both(pair, [call("version", cert="client"), call("version", cert="server")], BOOTSTRAP)
    (o_client, r_client), (o_server, r_server) = results
    assert _refused(r_client), r_client
    assert _refused(o_client), o_client
    assert (o_server["payload"], r_server["payload"]) == (3000000, 3000000), (o_server, r_server)


def test_write_ssconf_files_moves_a_node_from_bootstrap_to_candidate_mode_like_ganeti(pair: Pair) -> None:
    pair.ensure_mode(BOOTSTRAP)
    pair.ensure_mode(CANDIDATE)  # Ganeti's phase A: write_ssconf_files with the candidate map, via server.pem
    for t in pair.targets:
        assert t.candidate_map.read_text().strip().endswith(t.client_fp), t.name
    results = both(pair, [call("version", cert="server"), call("version", cert="client")], CANDIDATE)
    (o_server, r_server), (o_client, r_client) = results
    assert _refused(r_server), r_server
    assert _refused(o_server), o_server
    assert (o_client["payload"], r_client["payload"]) == (3000000, 3000000), (o_client, r_client)


def test_a_certificate_signed_by_the_cluster_but_not_listed_is_refused_like_ganeti(
        pair: Pair, candidate: str, tmp_path: Path) -> None:
    others = {}
    for t in pair.targets:
        other = tmp_path / f"other-{t.name}.pem"
        certs.write_client_pem(str(other), t.server_pem, "node9")
        others[t.name] = str(other)
    results = both(pair, lambda t: [call("version", cert=others[t.name]), call("version", cert="client")],
                   candidate)
    (o, r), (o_ok, r_ok) = results
    assert _refused(r), r
    assert _refused(o), o
    assert (o_ok["payload"], r_ok["payload"]) == (3000000, 3000000)


# -- node_leave_cluster (ours only, on a daemon of its own: it stops the daemon) ----------------

def test_node_leave_cluster_cleans_the_node_and_stops_our_daemon(tmp_path: Path) -> None:
    for d in ("node", "master"):
        (tmp_path / d).mkdir()
    t = start_our_noded(tmp_path / "node", tmp_path / "master", LEAVE_ADDRESS)
    try:
        t.candidate_map.write_text(f"{CANDIDATE_UUID}={t.client_fp}\n")
        (t.data_dir / "config.data").write_text("{}\n")
        (t.data_dir / "rapi.pem").write_text("x\n")
        t.path(f"{QUEUE}/job-1").write_text("job\n")
        t.path(f"{QUEUE}/archive/stray").write_text("x\n")
        t.path("/var/run/ganeti/crypto/stray-key").write_text("x\n")
        (res,) = run_client(t, [call("node_leave_cluster", False)])
        assert outcome(res, t) == (True, "Shutdown scheduled")
        deadline = time.monotonic() + 20
        while t.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not t.alive(), "our noded did not stop after node_leave_cluster"
        # Ganeti's LeaveCluster: every regular file of the data dir, the crypto dir and the queue
        # (but queue/lock) is removed
        assert sorted(p.name for p in t.data_dir.iterdir() if p.is_file()) == []
        assert [p.name for p in t.path("/var/run/ganeti/crypto").iterdir() if p.is_file()] == []
        assert sorted(p.name for p in t.path(QUEUE).iterdir() if p.is_file()) in ([], ["lock"])
        assert [p.name for p in t.path(f"{QUEUE}/archive").iterdir() if p.is_file()] == []
    finally:
        t.stop()
