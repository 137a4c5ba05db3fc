"""The demo's instance life cycle: a kvm instance created, booted, migrated and removed through the nodes.

The calls are those Ganeti 3.0's master makes, in its order (see
tests/test_migration_daemons.py and tests/test_interop_instance_lifecycle.py):
LUInstanceCreate's file_storage_dir_create, blockdev_create,
instance_os_add (our tools/os/tiny writes a boot sector that greets on the
serial port), blockdev_assemble, instance_start; TLMigrateInstance's live
migration from node1 to node2; LUInstanceRemove's instance_shutdown,
blockdev_remove, file_storage_dir_remove. The disk is a `sharedfile` disk:
both roots' shared-file-storage directory is a symlink to one directory of
the demo's state, so both nodes see the same file, as on a cluster with
shared storage.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noded.hypervisor.kvm import KvmHypervisor
from noded.hypervisor.kvm_state import process_alive, wait_gone
from noded.hypervisor.qmp import connect_unix
from noded.paths import Paths
from tools.demo_common import DemoFailed, Node, free_port, say, show

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tools" / "os" / "tiny"
QEMU = "qemu-system-x86_64"
INSTANCE = "inst1.example.com"
SHARED_DIR = "/srv/ganeti/shared-file-storage"
INSTANCE_DIR = f"{SHARED_DIR}/{INSTANCE}"
DISK_MIB = 16
MEMORY_MIB = 32
GREETING = f"ganeti-ng tiny OS booted: {INSTANCE}"
#: Seconds the guest gets to greet on the serial console after a (soft) reboot.
GREETING_TIMEOUT = 20.0
#: instance_shutdown's timeout: the tiny guest has no ACPI, so qemu is stopped after it.
SHUTDOWN_TIMEOUT = 1
MIGRATION_DEADLINE = 30.0
POLL_INTERVAL = 0.1
#: Ganeti's migration statuses (constants.HV_KVM_MIGRATION_ACTIVE_STATUSES, HV_MIGRATION_FAILED_STATUSES).
ACTIVE_STATUSES = frozenset({"active", "postcopy-active"})
FAILED_STATUSES = frozenset({"failed", "cancelled"})
CLUSTER = "cluster.example.com"


@dataclass
class Cluster:
    """The two nodes as the master sees them; `qemu_pids` collects every qemu seen (for the teardown)."""

    source: Node
    target: Node
    cert: str
    qemu_pids: set[int] = field(default_factory=set)

    def call(self, node: Node, procedure: str, *args: Any) -> Any:
        return node.must(procedure, *args, cert=self.cert)

    def step(self, node: Node, procedure: str, *args: Any) -> Any:
        """A call that has to succeed, shown with its answer."""
        answer = self.call(node, procedure, *args)
        show(f"{node.name} {procedure}", answer)
        return answer


# -- setting the nodes up --------------------------------------------------------------------

def share_storage(paths: Paths, shared: Path) -> None:
    """The node's shared-file-storage directory is `shared`; file storage is allowed there."""
    local = Path(paths.shared_file_storage_dir)
    local.parent.mkdir(parents=True, exist_ok=True)
    if local.is_dir() and not local.is_symlink():
        local.rmdir()
    local.symlink_to(shared, target_is_directory=True)
    Path(paths.file_storage_paths_file).write_text(f"{paths.file_storage_dir}\n{paths.shared_file_storage_dir}\n")


def link_tiny_os(paths: Paths) -> None:
    os_dir = Path(paths.under_root("/srv/ganeti/os"))
    os_dir.mkdir(parents=True, exist_ok=True)
    (os_dir / "tiny").symlink_to(TINY, target_is_directory=True)


def prepare(nodes: list[Node], shared: Path) -> None:
    shared.mkdir(parents=True, exist_ok=True)
    for n in nodes:
        share_storage(n.paths, shared)
        link_tiny_os(n.paths)


def instance_dict(qemu: str, migration_port: int) -> dict[str, Any]:
    """The instance as the master sends it (RpcRunner._InstDict), one 16 MiB sharedfile disk, no NICs."""
    disk = {"dev_type": "sharedfile", "logical_id": ["loop", f"{INSTANCE_DIR}/disk0"], "children": [],
            "nodes": [], "iv_name": "disk/0", "size": DISK_MIB, "mode": "rw", "params": {},
            "uuid": "5ea4ed00-1111-2222-3333-444444444444"}
    hvparams = {"kvm_path": qemu, "kernel_path": "", "kvm_flag": "", "migration_port": migration_port,
                "migration_bandwidth": 1000, "migration_downtime": 30}
    return {
        "name": INSTANCE, "uuid": "932df160-7a22-4067-a566-7e0ca8386133", "primary_node": "node1-uuid",
        "secondary_nodes": [], "os": "tiny+default", "hypervisor": "kvm", "hvparams": hvparams,
        "beparams": {"maxmem": MEMORY_MIB, "minmem": MEMORY_MIB, "vcpus": 1, "auto_balance": True,
                     "always_failover": False, "spindle_use": 1},
        "osparams": {}, "osparams_private": {}, "admin_state": "up", "admin_state_source": "admin",
        "nics": [], "disks": [disk["uuid"]], "disks_info": [disk], "disks_active": True,
        "network_port": 0, "serial_no": 1, "ctime": 1700000000.0, "mtime": 1700000000.0, "tags": [],
    }


# -- looking at the node ------------------------------------------------------------------------

def qemu_pid(node: Node) -> int | None:
    return KvmHypervisor(node.paths).instance_pid(INSTANCE)


def accelerator(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    accel = args[args.index("-accel") + 1] if "-accel" in args else "?"
    return {"kvm": "KVM", "tcg": "emulation (TCG: /dev/kvm is not usable)"}.get(accel, accel)


def read_until(sock: socket.socket, wanted: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        if not chunk:
            break
        seen += chunk
    return seen


def greeting_line(output: bytes) -> str:
    text = output.decode(errors="replace")
    return next(line.strip() for line in text.splitlines() if GREETING in line)


def kill_qemus(nodes: list[Node], seen: set[int]) -> list[int]:
    """SIGKILL the qemus still alive: those seen, and those the nodes' kvm pid files name. Their pids."""
    pids = set(seen)
    for n in nodes:
        hv = KvmHypervisor(n.paths)
        with contextlib.suppress(OSError):
            for name in os.listdir(hv.dirs.pid_dir):
                pid = hv.instance_pid(name)
                if pid is not None:
                    pids.add(pid)
    killed = []
    for pid in sorted(pids):
        if process_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            wait_gone(pid, 10.0)
    return killed


# -- the life cycle -----------------------------------------------------------------------------

def create_and_start(cl: Cluster, inst: dict[str, Any]) -> int:
    """LUInstanceCreate's node calls on node1; the pid of the qemu it started."""
    node = cl.source
    disk = inst["disks_info"][0]
    say(f"instance {INSTANCE} (kvm, {MEMORY_MIB} MiB, one {DISK_MIB} MiB sharedfile disk) created on node1")
    cl.step(node, "file_storage_dir_create", INSTANCE_DIR)
    cl.step(node, "blockdev_create", disk, DISK_MIB, INSTANCE, True, f"originstname+{INSTANCE}", False)
    cl.step(node, "instance_os_add", inst, False, 0)
    disk_file = Path(node.paths.under_root(f"{INSTANCE_DIR}/disk0"))
    with disk_file.open("rb") as f:
        show("boot signature written by tiny's create script", f.read(512)[510:].hex())
    cl.step(node, "blockdev_assemble", disk, inst, True, 0)
    say("instance_start on node1: a real qemu boots the disk")
    cl.step(node, "instance_start", inst, False, [])
    pid = qemu_pid(node)
    if pid is None:
        raise DemoFailed("instance_start succeeded but no qemu runs for the instance on node1")
    cl.qemu_pids.add(pid)
    show("qemu", f"pid {pid}, {accelerator(pid)}")
    hvparams = inst["hvparams"]
    cl.step(node, "instance_info", INSTANCE, "kvm", hvparams)
    cl.step(node, "instance_list", ["kvm"], {"kvm": hvparams})
    return pid


def serial_greeting(cl: Cluster, inst: dict[str, Any]) -> None:
    """The tiny guest's greeting from the serial console socket (a soft reboot makes it greet again)."""
    say("the guest's serial console (a Unix socket of node1's qemu)")
    path = KvmHypervisor(cl.source.paths).dirs.serial(INSTANCE)
    with contextlib.closing(connect_unix(path)) as serial:
        output = read_until(serial, GREETING.encode(), timeout=0.5)
        if GREETING.encode() not in output:
            show("serial console", "connected after the boot: a soft instance_reboot (QMP system_reset)"
                                   " makes the guest greet again")
            cl.step(cl.source, "instance_reboot", inst, "soft", SHUTDOWN_TIMEOUT, [])
            output += read_until(serial, GREETING.encode(), timeout=GREETING_TIMEOUT)
    if GREETING.encode() not in output:
        raise DemoFailed(f"no greeting on the serial console within {GREETING_TIMEOUT:.0f} s:"
                         f" {output[-200:]!r}")
    show("serial console", greeting_line(output))


def migrate(cl: Cluster, inst: dict[str, Any]) -> None:
    """TLMigrateInstance._ExecMigration, live, from node1 to node2 (the abort path on failure)."""
    source, target = cl.source, cl.target
    disks, name = inst["disks_info"], inst["name"]
    say("live migration node1 -> node2 (TLMigrateInstance's call order)")
    cl.step(source, "instance_migratable", inst)
    info = cl.call(source, "migration_info", inst)
    show("node1 migration_info", info)
    cl.step(target, "blockdev_close", name, disks)
    cl.step(source, "blockdev_open", name, disks, False)
    cl.step(target, "blockdev_open", name, disks, False)
    try:
        cl.step(target, "accept_instance", inst, info, target.address)
        cl.step(source, "instance_migrate", CLUSTER, inst, target.address, True)
        deadline = time.monotonic() + MIGRATION_DEADLINE
        while True:
            status = cl.call(source, "instance_get_migration_status", inst)
            if status["status"] in FAILED_STATUSES:
                raise DemoFailed(f"Could not migrate instance {name}: hypervisor returned failure: {status}")
            if status["status"] not in ACTIVE_STATUSES:
                break
            if time.monotonic() > deadline:
                raise DemoFailed(f"migration still active after {MIGRATION_DEADLINE:.0f} s: {status}")
            time.sleep(POLL_INTERVAL)
        show("node1 instance_get_migration_status", status)
    except DemoFailed:
        with contextlib.suppress(DemoFailed):  # _AbortMigration, _RevertDiskStatus (failures only logged)
            cl.call(target, "instance_finalize_migration_dst", inst, info, False)
            cl.call(source, "instance_finalize_migration_src", inst, False, True)
            cl.call(target, "blockdev_close", name, disks)
            cl.call(source, "blockdev_open", name, disks, True)
        raise
    cl.step(source, "instance_finalize_migration_src", inst, True, True)
    cl.step(target, "instance_finalize_migration_dst", inst, info, True)
    cl.step(source, "blockdev_close", name, disks)
    cl.step(target, "blockdev_open", name, disks, True)


def check_on_target(cl: Cluster, inst: dict[str, Any], source_pid: int) -> int:
    """What node2 says after the migration; the pid of its qemu."""
    say("after the migration")
    hvparams = inst["hvparams"]
    pid = qemu_pid(cl.target)
    if pid is None:
        raise DemoFailed("the migration completed but no qemu runs the instance on node2")
    cl.qemu_pids.add(pid)
    status = KvmHypervisor(cl.target.paths).qmp_command(INSTANCE, "query-status")
    show("node2 QMP query-status", status)
    info = cl.step(cl.target, "instance_info", INSTANCE, "kvm", hvparams)
    if status.get("status") != "running" or info.get("state") != 0:
        raise DemoFailed(f"the instance does not run on node2 after the migration: {status}, {info}")
    cl.step(cl.target, "instance_list", ["kvm"], {"kvm": hvparams})
    cl.step(cl.source, "instance_list", ["kvm"], {"kvm": hvparams})
    gone = wait_gone(source_pid, 10.0)
    show("node1's qemu", f"pid {source_pid} " + ("gone" if gone else "STILL RUNNING"))
    if not gone:
        raise DemoFailed(f"the source qemu (pid {source_pid}) still runs after the migration")
    return pid


def remove(cl: Cluster, inst: dict[str, Any], pid: int) -> None:
    """LUInstanceRemove's node calls on node2 (the instance's primary node now)."""
    say(f"instance removed from node2 (instance_shutdown with a {SHUTDOWN_TIMEOUT} s timeout: no ACPI)")
    down = dict(inst, admin_state="down")
    cl.step(cl.target, "instance_shutdown", down, SHUTDOWN_TIMEOUT, [])
    if not wait_gone(pid, 10.0):
        raise DemoFailed(f"qemu {pid} still runs after instance_shutdown")
    show("node2's qemu", f"pid {pid} gone")
    cl.step(cl.target, "blockdev_remove", inst["disks_info"][0])
    cl.step(cl.target, "file_storage_dir_remove", INSTANCE_DIR)


def run(nodes: list[Node], cert: str, shared: Path, qemu_pids: set[int]) -> None:
    """The whole life cycle; every qemu it saw is added to `qemu_pids` (for the teardown)."""
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise DemoFailed(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    say("instance storage: node1 and node2 share one directory (their shared-file-storage);"
        " tools/os/tiny is linked into both roots")
    prepare(nodes, shared)
    show("shared directory", str(shared))
    cl = Cluster(source=nodes[0], target=nodes[1], cert=cert, qemu_pids=qemu_pids)
    inst = instance_dict(qemu, free_port(cl.target.address))
    source_pid = create_and_start(cl, inst)
    serial_greeting(cl, inst)
    migrate(cl, inst)
    target_pid = check_on_target(cl, inst, source_pid)
    remove(cl, inst, target_pid)


@contextlib.contextmanager
def qemus_killed(nodes: list[Node]) -> Iterator[set[int]]:
    """A set for the qemu pids seen; on leaving, those still alive are killed (and said so)."""
    seen: set[int] = set()
    try:
        yield seen
    finally:
        killed = kill_qemus(nodes, seen)
        if killed:
            show("teardown", f"killed qemu {', '.join(map(str, killed))}")
