"""Disk transfers between two nodes over TLS on loopback, and finalize_export.

Two node roots on this machine play the source (127.0.0.2) and destination
(127.0.0.3) nodes; each makes its own X509 certificate with
x509_cert_create and gets the other's as `ca_pem`, as Ganeti's master
arranges it. Transfers are real detached daemons moving real file disks.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from real_ganeti import requires_real_ganeti
from real_noded_calls import real_call
from support import RunningNoded
from twin_nodes import make_node, make_twins

from noded import certs
from noded.backends import crypto, exports, impexp
from noded.context import NodeContext
from noded.disks.file import FileStorage
from noded.errors import RpcFail
from noded.impexp.common import read_locked_pid

MIB = 1024 * 1024
INSTANCE = "inst1.example.com"
MAGIC = "magic-0123456789"


@dataclass
class Node:
    ctx: NodeContext
    key_name: str
    cert_pem: str
    started: list[str]

    def status(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = impexp.impexp_status(self.ctx, [name])[0]
        return result


def _node(base: Path, address: str) -> Node:
    ctx = make_node(base)
    ctx.bind_address = address
    key_name, cert_pem = crypto.x509_cert_create(ctx, 3600)
    return Node(ctx, key_name, cert_pem, [])


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    src, dst = _node(tmp_path / "src", "127.0.0.2"), _node(tmp_path / "dst", "127.0.0.3")
    yield src, dst
    for node in (src, dst):
        for name in node.started:
            impexp.impexp_cleanup(node.ctx, name)


def make_disk(ctx: NodeContext, uuid: str, size_mib: int, content: bytes | None = None) -> dict[str, Any]:
    path = os.path.join(ctx.paths.file_storage_dir, INSTANCE, f"{uuid}.file")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    disk = {"dev_type": "file", "logical_id": ["loop", path], "size": size_mib, "uuid": uuid,
            "iv_name": "disk/0", "mode": "rw", "params": {}, "name": None}
    FileStorage(ctx.paths, disk).create()
    if content is not None:
        Path(path).write_bytes(content)
    return disk


def instance(disks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": INSTANCE, "os": "noop", "hypervisor": "fake", "primary_node": "node1",
            "disks_info": disks, "nics": [], "beparams": {"maxmem": 128, "minmem": 64, "vcpus": 1},
            "hvparams": {}, "osparams": {}, "osparams_private": {}, "tags": [], "uuid": "i-uuid"}


def gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def opts(own: Node, peer: Node, **extra: Any) -> dict[str, Any]:
    return {"key_name": own.key_name, "ca_pem": peer.cert_pem, "magic": MAGIC, **extra}


def start_import(node: Node, peer: Node, dest: list[Any], **extra: Any) -> str:
    extra.setdefault("connect_timeout", 30)
    name = impexp.import_start(node.ctx, opts(node, peer, **extra), instance([]), "disk0", dest)
    node.started.append(name)
    return name


def start_export(node: Node, peer: Node, port: int, source: list[Any], **extra: Any) -> str:
    name = impexp.export_start(node.ctx, opts(node, peer, **extra), "127.0.0.3", port, instance([]),
                               "disk0", source)
    node.started.append(name)
    return name


def wait_for(node: Node, name: str, key: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = node.status(name)
        if status is not None and key in status:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{name} has no {key} after {timeout}s: {node.status(name)}")


def transfer(src: Node, dst: Node, source: list[Any], dest: list[Any],
             **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one import/export pair to its end; (import status, export status)."""
    imp = start_import(dst, src, dest, **extra)
    port = wait_for(dst, imp, "listen_port")["listen_port"]
    exp = start_export(src, dst, port, source, **extra)
    return wait_for(dst, imp, "exit_status"), wait_for(src, exp, "exit_status")


# -- transfers -------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", ["gzip", "none", "gzip-slow"])
def test_a_raw_file_disk_arrives_identical_on_the_other_node(nodes: tuple[Node, Node], compress: str) -> None:
    src, dst = nodes
    source = make_disk(src.ctx, "src-disk", 3, os.urandom(3 * MIB))
    dest = make_disk(dst.ctx, "dst-disk", 3)
    imp, exp = transfer(src, dst, ["raw", [source]], ["raw", [dest]], compress=compress)
    assert (imp["exit_status"], exp["exit_status"]) == (0, 0), (imp, exp)
    assert sha256(dest["logical_id"][1]) == sha256(source["logical_id"][1])


def test_status_reports_port_connection_and_progress_with_ganeti_keys(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    source = make_disk(src.ctx, "src-disk", 2, os.urandom(2 * MIB))
    dest = make_disk(dst.ctx, "dst-disk", 2)
    imp, exp = transfer(src, dst, ["raw", [source]], ["raw", [dest]])
    ganeti_keys = {"recent_output", "listen_port", "connected", "progress_mbytes", "progress_throughput",
                   "progress_eta", "progress_percent", "exit_status", "error_message", "ctime", "mtime"}
    assert set(imp) <= ganeti_keys and set(exp) <= ganeti_keys
    assert isinstance(imp["listen_port"], int) and "listen_port" not in exp
    assert imp["connected"] is True and exp["connected"] is True
    assert imp["progress_mbytes"] == exp["progress_mbytes"] == 2
    assert exp["progress_percent"] == 100.0
    assert "error_message" not in imp and "error_message" not in exp
    assert imp["ctime"] <= imp["mtime"] and isinstance(imp["recent_output"], list)


def test_the_import_listens_only_on_the_node_address(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    dest = make_disk(dst.ctx, "dst-disk", 1)
    name = start_import(dst, src, ["raw", [dest]])
    port = wait_for(dst, name, "listen_port")["listen_port"]
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local = [line.split()[1] for line in listening if line.split()[3] == "0A"]
    assert f"0300007F:{port:04X}" in local
    assert f"00000000:{port:04X}" not in local


def test_an_export_into_a_file_then_finalize_export_makes_an_export(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    source = make_disk(src.ctx, "src-disk", 1, os.urandom(MIB))
    target = os.path.join(dst.ctx.paths.export_dir, f"{INSTANCE}.new", "src-disk")
    imp, exp = transfer(src, dst, ["raw", [source]], ["file", [target]])
    assert (imp["exit_status"], exp["exit_status"]) == (0, 0), (imp, exp)
    impexp.finalize_export(dst.ctx, instance([source]), [source])
    final = os.path.join(dst.ctx.paths.export_dir, INSTANCE)
    assert sha256(os.path.join(final, "src-disk")) == sha256(source["logical_id"][1])
    assert not os.path.exists(os.path.dirname(target))
    assert exports.export_list(dst.ctx) == [INSTANCE]
    info = configparser.ConfigParser()
    info.read_string(exports.export_info(dst.ctx, final))
    assert info.get("instance", "disk0_dump") == "src-disk"
    assert info.get("instance", "disk_count") == "1"


def test_a_file_in_the_export_dir_can_be_sent_back_to_a_disk(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    data = os.urandom(MIB)
    exported = os.path.join(src.ctx.paths.export_dir, INSTANCE, "disk0")
    os.makedirs(os.path.dirname(exported))
    Path(exported).write_bytes(data)
    dest = make_disk(dst.ctx, "dst-disk", 2)
    imp, exp = transfer(src, dst, ["file", [exported]], ["raw", [dest]])
    assert (imp["exit_status"], exp["exit_status"]) == (0, 0), (imp, exp)
    assert Path(dest["logical_id"][1]).read_bytes()[:MIB] == data


def make_os(ctx: NodeContext) -> None:
    """An OS definition "noop" whose export/import scripts copy the disk, as ganeti-os-interface(7) says."""
    directory = Path(ctx.paths.under_root("/srv/ganeti/os"), "noop")
    directory.mkdir(parents=True)
    Path(directory, "ganeti_api_version").write_text("20\n")
    Path(directory, "parameters.list").write_text("")
    scripts = {
        "create": "exit 0",
        "rename": "exit 0",
        "verify": "exit 0",
        # The size goes to $EXP_SIZE_FD; the data to stdout; a note to stderr (recent output).
        "export": 'stat -c %s "$EXPORT_DEVICE" >&$EXP_SIZE_FD\n'
                  'echo "exporting disk $EXPORT_INDEX of $INSTANCE_NAME" >&2\ncat "$EXPORT_DEVICE"',
        "import": 'echo "importing disk $IMPORT_INDEX" >&2\n'
                  'dd of="$IMPORT_DEVICE" conv=notrunc status=none',
    }
    for name, body in scripts.items():
        script = Path(directory, name)
        script.write_text(f"#!/bin/sh\nset -e\n{body}\n")
        script.chmod(0o755)


def test_os_export_and_import_scripts_carry_a_disk(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    for node in nodes:
        make_os(node.ctx)
    source = make_disk(src.ctx, "src-disk", 2, os.urandom(2 * MIB))
    dest = make_disk(dst.ctx, "dst-disk", 2)
    imp = impexp.import_start(dst.ctx, opts(dst, src, connect_timeout=30), instance([dest]), "disk0",
                              ["script", [dest, 0]])
    dst.started.append(imp)
    port = wait_for(dst, imp, "listen_port")["listen_port"]
    exp = impexp.export_start(src.ctx, opts(src, dst), "127.0.0.3", port, instance([source]), "disk0",
                              ["script", [source, 0]])
    src.started.append(exp)
    imp_status, exp_status = wait_for(dst, imp, "exit_status"), wait_for(src, exp, "exit_status")
    assert (imp_status["exit_status"], exp_status["exit_status"]) == (0, 0), (imp_status, exp_status)
    assert sha256(dest["logical_id"][1]) == sha256(source["logical_id"][1])
    assert f"exporting disk 0 of {INSTANCE}" in exp_status["recent_output"]
    assert "importing disk 0" in imp_status["recent_output"]
    assert exp_status["progress_percent"] == 100.0


def test_a_failing_import_script_fails_the_import(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    make_os(dst.ctx)
    Path(dst.ctx.paths.under_root("/srv/ganeti/os"), "noop", "import").write_text(
        "#!/bin/sh\necho 'no space left for the import' >&2\nexit 3\n")
    source = make_disk(src.ctx, "src-disk", 1, os.urandom(MIB))
    dest = make_disk(dst.ctx, "dst-disk", 1)
    imp = impexp.import_start(dst.ctx, opts(dst, src, connect_timeout=30), instance([dest]), "disk0",
                              ["script", [dest, 0]])
    dst.started.append(imp)
    port = wait_for(dst, imp, "listen_port")["listen_port"]
    exp = start_export(src, dst, port, ["raw", [source]])
    imp_status, exp_status = wait_for(dst, imp, "exit_status"), wait_for(src, exp, "exit_status")
    assert imp_status["exit_status"] == 1
    assert "failed with exit status 3" in imp_status["error_message"]
    assert "no space left for the import" in imp_status["recent_output"]
    assert exp_status["exit_status"] != 0


def test_abort_stops_a_transfer_in_the_middle_and_its_script(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    make_os(src.ctx)
    marker = os.path.join(src.ctx.paths.root, "script-pid")
    Path(src.ctx.paths.under_root("/srv/ganeti/os"), "noop", "export").write_text(
        f"#!/bin/sh\necho $$ > {marker}\nhead -c 100000 /dev/urandom\nexec sleep 60\n")
    source = make_disk(src.ctx, "src-disk", 1)
    dest = make_disk(dst.ctx, "dst-disk", 1)
    imp = start_import(dst, src, ["raw", [dest]])
    port = wait_for(dst, imp, "listen_port")["listen_port"]
    exp = impexp.export_start(src.ctx, opts(src, dst), "127.0.0.3", port, instance([source]), "disk0",
                              ["script", [source, 0]])
    src.started.append(exp)
    wait_for(src, exp, "connected")
    deadline = time.monotonic() + 10
    while (wait_for(src, exp, "connected").get("progress_mbytes") is None or not os.path.exists(marker)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    impexp.impexp_abort(src.ctx, exp)
    exp_status, imp_status = wait_for(src, exp, "exit_status"), wait_for(dst, imp, "exit_status")
    assert (exp_status["exit_status"], exp_status["error_message"]) == (-15, "Exited due to signal 15")
    assert imp_status["exit_status"] == 1
    assert "closed before the end of the stream" in imp_status["error_message"]
    script_pid = int(Path(marker).read_text())
    deadline = time.monotonic() + 5
    while not gone(script_pid):
        assert time.monotonic() < deadline, "the export script still runs"
        time.sleep(0.05)


# -- failures --------------------------------------------------------------------------------

def test_a_wrong_magic_fails_the_import_with_a_message(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    source = make_disk(src.ctx, "src-disk", 1, os.urandom(MIB))
    dest = make_disk(dst.ctx, "dst-disk", 1)
    imp = start_import(dst, src, ["raw", [dest]])
    port = wait_for(dst, imp, "listen_port")["listen_port"]
    exp = impexp.export_start(src.ctx, {**opts(src, dst), "magic": "another-magic"}, "127.0.0.3", port,
                              instance([]), "disk0", ["raw", [source]])
    src.started.append(exp)
    imp_status, exp_status = wait_for(dst, imp, "exit_status"), wait_for(src, exp, "exit_status")
    assert imp_status["exit_status"] != 0 and "Magic value mismatch" in imp_status["error_message"]
    assert exp_status["exit_status"] != 0 and exp_status["error_message"]
    assert Path(dest["logical_id"][1]).read_bytes() == bytes(MIB)


def test_data_larger_than_the_target_disk_fails_both_sides(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    source = make_disk(src.ctx, "src-disk", 3, os.urandom(3 * MIB))
    dest = make_disk(dst.ctx, "dst-disk", 1)
    imp, exp = transfer(src, dst, ["raw", [source]], ["raw", [dest]])
    assert imp["exit_status"] == 1 and "larger than the disk" in imp["error_message"]
    assert exp["exit_status"] == 1 and exp["error_message"]
    assert os.path.getsize(dest["logical_id"][1]) == MIB


def test_a_wrong_certificate_fails_cleanly_on_both_sides(nodes: tuple[Node, Node], tmp_path: Path) -> None:
    src, dst = nodes
    stranger = _node(tmp_path / "stranger", "127.0.0.4")
    source = make_disk(src.ctx, "src-disk", 1, os.urandom(MIB))
    dest = make_disk(dst.ctx, "dst-disk", 1)
    # The import expects the stranger's certificate, not the source's.
    imp = start_import(dst, stranger, ["raw", [dest]], connect_timeout=3)
    port = wait_for(dst, imp, "listen_port")["listen_port"]
    exp = start_export(src, dst, port, ["raw", [source]])
    exp_status = wait_for(src, exp, "exit_status")
    imp_status = wait_for(dst, imp, "exit_status")
    assert exp_status["exit_status"] != 0 and exp_status["error_message"]
    assert imp_status["exit_status"] != 0
    assert "No connection was established within 3s" in imp_status["error_message"]
    assert any("TLS handshake" in line for line in imp_status["recent_output"])
    assert Path(dest["logical_id"][1]).read_bytes() == bytes(MIB)


def test_an_export_that_does_not_trust_the_import_fails_with_the_reason(nodes: tuple[Node, Node],
                                                                        tmp_path: Path) -> None:
    src, dst = nodes
    stranger = _node(tmp_path / "stranger", "127.0.0.4")
    source = make_disk(src.ctx, "src-disk", 1, os.urandom(MIB))
    dest = make_disk(dst.ctx, "dst-disk", 1)
    imp = start_import(dst, src, ["raw", [dest]], connect_timeout=3)
    port = wait_for(dst, imp, "listen_port")["listen_port"]
    exp = start_export(src, stranger, port, ["raw", [source]])
    exp_status = wait_for(src, exp, "exit_status")
    assert exp_status["exit_status"] == 1
    assert "certificate verify failed" in exp_status["error_message"]


def test_abort_stops_a_running_transfer(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    dest = make_disk(dst.ctx, "dst-disk", 1)
    name = start_import(dst, src, ["raw", [dest]])
    wait_for(dst, name, "listen_port")
    pid_file = os.path.join(impexp.impexp_dir(dst.ctx.paths), name, "pid")
    assert read_locked_pid(pid_file) is not None
    impexp.impexp_abort(dst.ctx, name)
    status = wait_for(dst, name, "exit_status")
    assert (status["exit_status"], status["error_message"]) == (-15, "Exited due to signal 15")
    assert read_locked_pid(pid_file) is None
    assert os.path.isdir(os.path.dirname(pid_file))
    impexp.impexp_abort(dst.ctx, name)


def test_cleanup_stops_the_daemon_and_removes_the_status_dir(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    dest = make_disk(dst.ctx, "dst-disk", 1)
    name = start_import(dst, src, ["raw", [dest]])
    wait_for(dst, name, "listen_port")
    status_dir = os.path.join(impexp.impexp_dir(dst.ctx.paths), name)
    pid = read_locked_pid(os.path.join(status_dir, "pid"))
    assert pid is not None
    impexp.impexp_cleanup(dst.ctx, name)
    assert not os.path.exists(status_dir)
    assert gone(pid)
    assert impexp.impexp_status(dst.ctx, [name]) == [None]
    impexp.impexp_cleanup(dst.ctx, name)


def test_status_of_an_unknown_transfer_is_null(nodes: tuple[Node, Node]) -> None:
    assert impexp.impexp_status(nodes[0].ctx, ["import-disk0-nothing", "export-x"]) == [None, None]


def test_status_refuses_a_name_that_is_a_path(nodes: tuple[Node, Node]) -> None:
    with pytest.raises(RpcFail, match="Invalid import/export name"):
        impexp.impexp_status(nodes[0].ctx, ["../../../etc"])


def test_a_key_without_a_ca_is_refused(nodes: tuple[Node, Node]) -> None:
    src, _ = nodes
    with pytest.raises(RpcFail, match=r"^Cluster certificate can only be used for both key and CA$"):
        impexp.import_start(src.ctx, {"key_name": src.key_name}, instance([]), "disk0", ["raw", []])


def test_an_unknown_certificate_name_is_refused(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    with pytest.raises(RpcFail, match=r"^File '.*/crypto/x509-none/key' does not exist$"):
        impexp.import_start(src.ctx, {"key_name": "x509-none", "ca_pem": dst.cert_pem}, instance([]),
                            "disk0", ["file", [os.path.join(src.ctx.paths.export_dir, "x")]])


def test_a_file_outside_the_export_dir_is_refused(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    outside = os.path.join(src.ctx.paths.data_dir, "config.data")
    with pytest.raises(RpcFail, match="is not under exports directory"):
        start_import(src, dst, ["file", [outside]])
    with pytest.raises(RpcFail, match="is not normalized or absolute"):
        start_import(src, dst, ["file", [src.ctx.paths.export_dir + "/a/../../x"]])
    assert os.listdir(impexp.impexp_dir(src.ctx.paths)) == [] if os.path.isdir(
        impexp.impexp_dir(src.ctx.paths)) else True


def test_an_unknown_io_mode_is_refused_like_ganeti(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    with pytest.raises(RpcFail, match=r"^Invalid import I/O mode 'tape'$"):
        start_import(src, dst, ["tape", []])


def test_a_disk_that_is_not_set_up_is_refused(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    disk = make_disk(src.ctx, "gone", 1)
    os.unlink(disk["logical_id"][1])
    with pytest.raises(RpcFail, match=r"^Block device '<Disk.*' is not set up$"):
        start_export(src, dst, 1234, ["raw", [disk]])


def test_an_export_needs_host_and_port(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    with pytest.raises(RpcFail, match=r"^Host and port must be specified for an export$"):
        impexp.export_start(src.ctx, opts(src, dst), None, None, instance([]), "disk0", ["raw", []])


def test_a_bad_magic_string_is_refused_before_starting(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    with pytest.raises(RpcFail, match=r"^Magic must match regular expression"):
        start_import(src, dst, ["raw", []], magic="a b")


# -- finalize_export -------------------------------------------------------------------------------

def _full_instance(disks: list[dict[str, Any]]) -> dict[str, Any]:
    inst = instance(disks)
    inst.update({
        "nics": [{"mac": "aa:00:00:11:22:33", "ip": None, "network": None, "name": None, "uuid": "n-1",
                  "nicparams": {"mode": "bridged", "link": "br0", "vlan": ""}}],
        "hvparams": {"kernel_path": "/boot/vmlinuz", "migration_port": 8102, "acpi": True},
        "osparams": {"dhcp": "yes"}, "tags": ["a", "b"],
    })
    return inst


def test_finalize_export_replaces_an_older_export(nodes: tuple[Node, Node]) -> None:
    ctx = nodes[0].ctx
    old = os.path.join(ctx.paths.export_dir, INSTANCE)
    os.makedirs(old)
    Path(old, "stale").write_text("old")
    os.makedirs(os.path.join(ctx.paths.export_dir, INSTANCE + ".new"))
    disk = {"dev_type": "file", "uuid": "d-1", "iv_name": "disk/0", "size": 2, "name": "root"}
    impexp.finalize_export(ctx, _full_instance([disk]), [disk])
    assert sorted(os.listdir(old)) == ["config.ini"]
    assert exports.export_list(ctx) == [INSTANCE]


def test_finalize_export_skips_disks_that_were_not_exported(nodes: tuple[Node, Node]) -> None:
    ctx = nodes[0].ctx
    disk = {"dev_type": "file", "uuid": "d-2", "iv_name": "disk/1", "size": 2, "name": None}
    impexp.finalize_export(ctx, _full_instance([]), [False, disk])
    config = configparser.ConfigParser()
    config.read_string(exports.export_info(ctx, os.path.join(ctx.paths.export_dir, INSTANCE)))
    assert config.get("instance", "disk_count") == "1"
    assert config.get("instance", "disk1_dump") == "d-2"
    assert not config.has_option("instance", "disk0_dump")


@requires_real_ganeti
def test_finalize_export_writes_the_config_ini_ganeti_writes(tmp_path: Path) -> None:
    twins = make_twins(tmp_path)
    disks = [{"dev_type": "file", "uuid": "d-1", "iv_name": "disk/0", "size": 2, "name": "root",
              "logical_id": ["loop", "/x"], "mode": "rw", "params": {}}]
    twins.setup(lambda p: os.makedirs(os.path.join(p.export_dir, INSTANCE + ".new")))
    # One tag: Ganeti keeps tags in a set, so it writes several in any order.
    inst = {**_full_instance(disks), "tags": ["web"]}
    assert twins.compare(impexp.finalize_export, "finalize_export", lambda p: [inst, disks]) == [True, None]

    def text(ctx: NodeContext) -> list[str]:
        lines = Path(ctx.paths.export_dir, INSTANCE, "config.ini").read_text().splitlines()
        return [line for line in lines if not line.startswith("timestamp = ")]

    assert text(twins.ours) == text(twins.real)
    twins.same_files(lambda p: p.export_dir)


def test_transfers_leave_no_process_behind(nodes: tuple[Node, Node]) -> None:
    src, dst = nodes
    source = make_disk(src.ctx, "src-disk", 1, os.urandom(MIB))
    dest = make_disk(dst.ctx, "dst-disk", 1)
    transfer(src, dst, ["raw", [source]], ["raw", [dest]])
    for node in nodes:
        for name in node.started:
            pid_file = os.path.join(impexp.impexp_dir(node.ctx.paths), name, "pid")
            deadline = time.monotonic() + 5
            while read_locked_pid(pid_file) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert read_locked_pid(pid_file) is None
    shutil.rmtree(impexp.impexp_dir(src.ctx.paths))


@requires_real_ganeti
@pytest.mark.skipif(not os.path.exists("/usr/bin/socat"), reason="socat is not installed")
@pytest.mark.parametrize("compress", ["gzip", "none"])
def test_ganeti_s_own_export_daemon_sends_a_disk_to_our_import(tmp_path: Path, compress: str) -> None:
    """Ganeti 3.0.2's export (its import-export daemon: socat, openssl, dd) feeds our import."""
    ours, real = make_node(tmp_path / "ours"), make_node(tmp_path / "real")
    ours.bind_address = "127.0.0.3"
    # Within a cluster both ends use the cluster certificate (key_name and ca_pem unset).
    certs.write_server_pem(ours.paths.server_cert)
    shutil.copy(ours.paths.server_cert, real.paths.server_cert)
    os.makedirs(impexp.impexp_dir(real.paths))
    os.makedirs(os.path.join(real.paths.log_dir, "os"))
    source = make_disk(real, "src-disk", 2, os.urandom(2 * MIB))
    dest = make_disk(ours, "dst-disk", 2)
    options = {"magic": MAGIC, "compress": compress}
    imp = impexp.import_start(ours, {**options, "connect_timeout": 30}, instance([]), "disk0",
                              ["raw", [dest]])
    node = Node(ours, "", "", [imp])
    try:
        port = wait_for(node, imp, "listen_port")["listen_port"]
        ok, exp = real_call(Path(real.paths.root), "export_start", options, "127.0.0.3", port, instance([]),
                            "disk0", ["raw", [source]])
        assert ok, exp
        imp_status = wait_for(node, imp, "exit_status")
        deadline = time.monotonic() + 30
        while True:
            exp_status = real_call(Path(real.paths.root), "impexp_status", [exp])[1][0]
            if (exp_status and "exit_status" in exp_status) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        real_call(Path(real.paths.root), "impexp_cleanup", exp)
    finally:
        impexp.impexp_cleanup(ours, imp)
    assert (imp_status["exit_status"], exp_status["exit_status"]) == (0, 0), (imp_status, exp_status)
    assert sha256(dest["logical_id"][1]) == sha256(source["logical_id"][1])
    assert set(imp_status) <= set(exp_status) | {"listen_port", "progress_throughput"}


def test_a_running_node_daemon_starts_an_import_with_the_cluster_certificate(noded: RunningNoded,
                                                                             tmp_path: Path) -> None:
    """Through the legacy door: the import daemon runs detached from our noded and takes a file."""
    src = make_node(tmp_path / "src")
    shutil.copy(noded.node.paths.server_cert, src.paths.server_cert)
    data = os.urandom(MIB)
    exported = os.path.join(src.paths.export_dir, INSTANCE, "disk0")
    os.makedirs(os.path.dirname(exported))
    Path(exported).write_bytes(data)
    target = os.path.join(noded.node.paths.export_dir, f"{INSTANCE}.new", "disk0")
    ok, name = noded.call("import_start", {"magic": MAGIC, "connect_timeout": 30}, instance([]), "disk0",
                          ["file", [target]])
    assert ok, name
    try:
        deadline = time.monotonic() + 30
        while not (status := noded.call("impexp_status", [name])[1][0]) or "listen_port" not in status:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        exp = impexp.export_start(src, {"magic": MAGIC}, "127.0.0.2", status["listen_port"], instance([]),
                                  "disk0", ["file", [exported]])
        exp_status = wait_for(Node(src, "", "", [exp]), exp, "exit_status")
        while "exit_status" not in (status := noded.call("impexp_status", [name])[1][0]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        assert noded.call("impexp_cleanup", name) == [True, None]
    assert (status["exit_status"], exp_status["exit_status"]) == (0, 0), (status, exp_status)
    assert Path(target).read_bytes() == data
    assert noded.call("impexp_status", [name]) == [True, [None]]
