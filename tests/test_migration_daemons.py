"""Migration between two running node daemons, driven as Ganeti 3.0's master drives it.

node1 (127.0.0.2) and node2 (127.0.0.3) are two of our ganeti-noded
processes, each with its own GANETI_ROOTDIR, sharing the cluster
certificate. The "master" is this test: it holds node1's client
certificate, which both nodes list as a master candidate's. The instance's
only disk is a `sharedfile` disk: the master names it
/srv/ganeti/shared-file-storage/<instance>/disk0, each node maps that path
below its root, and in both roots that directory is a symlink to one
directory outside them, so both nodes see the same file.

The order of the calls is TLMigrateInstance._ExecMigration's (and
_AbortMigration/_RevertDiskStatus's when something fails): migratable,
migration_info on the source; blockdev_close on the target,
blockdev_open (shared) on both; accept_instance on the target;
instance_migrate on the source; instance_get_migration_status until done;
finalize on the source, then on the target; blockdev_close on the source,
blockdev_open (exclusive) on the target. Calls go through the legacy door
(JSON over HTTPS with the client certificate); the status polls of some
tests go through the gRPC door (generated stubs, mutual TLS) to the same
servicer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import RunningNoded, make_root, start_noded

from compat_jsonrpc import codec
from generated.ganeti.node.v1 import instance_pb2, instance_pb2_grpc, objects_pb2
from noded import certs
from noded.hypervisor.base import InstanceState
from noded.hypervisor.kvm import KvmHypervisor
from noded.hypervisor.kvm_state import process_alive, read_pid_file, wait_gone
from noded.paths import Paths
from noded.tls import split_pem

QEMU = shutil.which("qemu-system-x86_64")
#: Tests that asked for an instance name (each gets its own: inst<n>.example.com).
NAMES_USED: list[str] = []
CLUSTER = "cluster.example.com"
SHARED_DIR = "/srv/ganeti/shared-file-storage"
DISK_MIB = 2
#: Ganeti's statuses (constants.HV_KVM_MIGRATION_ACTIVE_STATUSES, HV_MIGRATION_FAILED_STATUSES).
ACTIVE_STATUSES = frozenset({"active", "postcopy-active"})
FAILED_STATUSES = frozenset({"failed", "cancelled"})
#: Seconds between status polls (Ganeti waits 1 s; qemu moves 32 MiB much faster here).
POLL_INTERVAL = 0.1
MIGRATION_DEADLINE = 30.0
BOOT_SIGNATURE = b"\x55\xaa"

requires_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed"
                                   " (Debian package qemu-system-x86)")


# -- the cluster: two daemons, one shared directory ----------------------------------------
@dataclass
class Cluster:
    node1: RunningNoded
    node2: RunningNoded
    shared: Path
    #: The master's client certificate (node1's: a master candidate's).
    master_cert: str


def share_storage(paths: Paths, shared: Path) -> None:
    """Make the node's shared-file-storage directory the common one and allow file storage there."""
    local = Path(paths.shared_file_storage_dir)
    local.parent.mkdir(parents=True, exist_ok=True)
    local.symlink_to(shared, target_is_directory=True)
    Path(paths.file_storage_paths_file).write_text(f"{paths.shared_file_storage_dir}\n")


def kill_qemus(paths: Paths) -> None:
    """SIGKILL every qemu the node's kvm pid files name (a test's leftovers)."""
    hv = KvmHypervisor(paths)
    with contextlib.suppress(OSError):
        for name in os.listdir(hv.dirs.pid_dir):
            pid = hv.instance_pid(name)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 10.0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The two daemons, shared by the module's tests (each test uses an instance of its own)."""
    base = tmp_path_factory.mktemp("migration")
    shared = base / "shared-storage"
    shared.mkdir()
    root1 = make_root(base / "vcluster", "node1")
    root2 = make_root(base / "vcluster", "node2", cluster_pem=root1.server_pem)
    for root in (root1, root2):
        root.write_candidate_map(root1.client_fp)
        share_storage(root.paths, shared)
    started: list[RunningNoded] = []
    try:
        started.append(start_noded(root1, "127.0.0.2"))
        started.append(start_noded(root2, "127.0.0.3"))
        yield Cluster(node1=started[0], node2=started[1], shared=shared, master_cert=root1.client_pem)
    finally:
        for daemon in started:
            daemon.stop()
        for root in (root1, root2):
            kill_qemus(root.paths)


@pytest.fixture
def name(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh instance name for the test; its qemu processes are killed afterwards."""
    NAMES_USED.append(request.node.name)
    yield f"inst{len(NAMES_USED)}.example.com"
    for node in (cluster.node1, cluster.node2):
        kill_qemus(node.paths)


# -- the master ----------------------------------------------------------------------------
class NodeCallFailed(Exception):
    """A node answered [false, message]."""

    def __init__(self, node: RunningNoded, procedure: str, message: Any) -> None:
        super().__init__(f"{procedure} on {node.paths.hostname}: {message}")
        self.message = message


class MigrationFailed(Exception):
    """What the master's OpExecError would say."""


def grpc_migration_status(node: RunningNoded, cert: str, instance: dict[str, Any]) -> dict[str, Any]:
    """InstanceGetMigrationStatus through node's gRPC door with mutual TLS (Ganeti's dict shape)."""
    _, ca = split_pem(Path(node.server_pem).read_bytes())
    key, chain = split_pem(Path(cert).read_bytes())
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
    message = codec.from_native(objects_pb2.Instance, instance, where="instance")
    assert isinstance(message, objects_pb2.Instance)
    request = instance_pb2.InstanceGetMigrationStatusRequest(instance=message)
    with grpc.secure_channel(f"{node.address}:{node.grpc_port}", creds,
                             options=[("grpc.ssl_target_name_override", certs.CLUSTER_CERT_CN)]) as channel:
        stub = instance_pb2_grpc.InstanceServiceStub(channel)
        try:
            answer = stub.InstanceGetMigrationStatus(request, timeout=30)
        except grpc.RpcError as err:
            raise NodeCallFailed(node, "InstanceGetMigrationStatus", err.details()) from err
    status: dict[str, Any] = {"status": answer.status}
    for name in ("transferred_ram", "total_ram", "postcopy_status"):
        if answer.HasField(name):
            status[name] = getattr(answer, name)
    return status


@dataclass
class Master:
    """The calls Ganeti's master makes, in its order, through the nodes' doors."""

    cert: str
    #: "legacy" or "grpc": the door of the status polls.
    status_door: str = "legacy"
    #: (node hostname, procedure) of every call made, in order.
    calls: list[tuple[str, str]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)

    def call(self, node: RunningNoded, procedure: str, *args: Any) -> Any:
        self.calls.append((node.paths.hostname, procedure))
        ok, payload = node.call(procedure, *args, cert=self.cert)
        if not ok:
            raise NodeCallFailed(node, procedure, payload)
        return payload

    def migration_status(self, node: RunningNoded, instance: dict[str, Any]) -> dict[str, Any]:
        if self.status_door == "grpc":
            self.calls.append((node.paths.hostname, "InstanceGetMigrationStatus"))
            return grpc_migration_status(node, self.cert, instance)
        status: dict[str, Any] = self.call(node, "instance_get_migration_status", instance)
        return status

    # TLMigrateInstance._ExecFailover (disks consistent, instance running)
    def failover(self, source: RunningNoded, target: RunningNoded, instance: dict[str, Any],
                 shutdown_timeout: int) -> None:
        self.call(source, "instance_shutdown", instance, shutdown_timeout, [])
        for disk in instance["disks_info"]:  # ShutdownInstanceDisks on the (old) primary
            self.call(source, "blockdev_shutdown", disk)
        for idx, disk in enumerate(instance["disks_info"]):  # AssembleInstanceDisks on the new primary
            self.call(target, "blockdev_assemble", disk, instance, True, idx)
        self.call(target, "instance_start", instance, False, [])

    # instance creation (LUInstanceCreate's node calls for a sharedfile disk)
    def create_and_start(self, node: RunningNoded, instance: dict[str, Any],
                         fill_disk: Callable[[], None] | None = None) -> None:
        disk = instance["disks_info"][0]
        self.call(node, "file_storage_dir_create", os.path.dirname(disk["logical_id"][1]))
        self.call(node, "blockdev_create", disk, disk["size"], instance["name"], True,
                  f"originstname+{instance['name']}", False)
        if fill_disk is not None:
            fill_disk()  # what the OS create script would do
        self.call(node, "blockdev_assemble", disk, instance, True, 0)
        self.call(node, "instance_start", instance, False, [])

    # TLMigrateInstance._ExecMigration
    def migrate(self, source: RunningNoded, target: RunningNoded, instance: dict[str, Any], live: bool,
                target_accepts: bool = True) -> None:
        disks = instance["disks_info"]
        name = instance["name"]
        self.call(source, "instance_migratable", instance)
        info = self.call(source, "migration_info", instance)
        self.call(target, "blockdev_close", name, disks)
        self.call(source, "blockdev_open", name, disks, False)
        self.call(target, "blockdev_open", name, disks, False)
        try:
            if target_accepts:
                self.call(target, "accept_instance", instance, info, target.address)
            self.call(source, "instance_migrate", CLUSTER, instance, target.address, live)
            deadline = time.monotonic() + MIGRATION_DEADLINE
            while True:
                status = self.migration_status(source, instance)
                self.statuses.append(status)
                if status["status"] in FAILED_STATUSES:
                    raise MigrationFailed(f"Could not migrate instance {name}: hypervisor returned failure")
                if status["status"] not in ACTIVE_STATUSES:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"migration still active after {MIGRATION_DEADLINE} s: {status}")
                time.sleep(POLL_INTERVAL)
        except (NodeCallFailed, MigrationFailed) as err:
            self.abort(source, target, instance, info, live)
            if isinstance(err, MigrationFailed):
                raise
            raise MigrationFailed(f"Could not migrate instance {name}: {err.message}") from err
        failures = []
        for node, procedure, args in ((source, "instance_finalize_migration_src", (instance, True, live)),
                                      (target, "instance_finalize_migration_dst", (instance, info, True))):
            try:
                self.call(node, procedure, *args)
            except NodeCallFailed as err:
                failures.append(str(err))
        if failures:
            raise MigrationFailed(f"Could not finalize instance migration: {' '.join(failures)}")
        self.call(source, "blockdev_close", name, disks)
        self.call(target, "blockdev_open", name, disks, True)

    # _AbortMigration + _RevertDiskStatus (their failures are only logged by Ganeti: here they fail the test)
    def abort(self, source: RunningNoded, target: RunningNoded, instance: dict[str, Any], info: str,
              live: bool) -> None:
        self.call(target, "instance_finalize_migration_dst", instance, info, False)
        self.call(source, "instance_finalize_migration_src", instance, False, live)
        self.call(target, "blockdev_close", instance["name"], instance["disks_info"])
        self.call(source, "blockdev_open", instance["name"], instance["disks_info"], True)

    def instances(self, node: RunningNoded, instance: dict[str, Any]) -> list[str]:
        hv = instance["hypervisor"]
        names: list[str] = self.call(node, "instance_list", [hv], {hv: instance["hvparams"]})
        return names


# -- instances -------------------------------------------------------------------------------
def disk_file(cl: Cluster, name: str) -> Path:
    """The instance's disk, as this test (outside both roots) sees it."""
    return cl.shared / name / "disk0"


def instance_dict(name: str, hypervisor: str, hvparams: dict[str, Any]) -> dict[str, Any]:
    """The instance as the master sends it (ED_INST_DICT), with one sharedfile disk."""
    disk = {"dev_type": "sharedfile", "logical_id": ["loop", f"{SHARED_DIR}/{name}/disk0"], "children": [],
            "nodes": [], "iv_name": "disk/0", "size": DISK_MIB, "mode": "rw", "params": {},
            "uuid": "5ea4ed00-1111-2222-3333-444444444444"}
    return {
        "name": name, "uuid": "932df160-7a22-4067-a566-7e0ca8386133", "primary_node": "node1-uuid",
        "secondary_nodes": [], "os": "noop", "hypervisor": hypervisor, "hvparams": hvparams,
        "beparams": {"maxmem": 32, "minmem": 32, "vcpus": 1, "auto_balance": True,
                     "always_failover": False, "spindle_use": 1},
        "osparams": {}, "osparams_private": {}, "admin_state": "up", "admin_state_source": "admin",
        "nics": [], "disks": [disk["uuid"]], "disks_info": [disk], "disks_active": True,
        "network_port": 0, "serial_no": 1, "ctime": 1700000000.0, "mtime": 1700000000.0, "tags": [],
    }


def fake_instance(name: str) -> dict[str, Any]:
    return instance_dict(name, "fake", {"migration_mode": "live"})


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def kvm_instance(name: str) -> dict[str, Any]:
    """32 MiB, no NICs; KVM when /dev/kvm works, emulation otherwise."""
    assert QEMU is not None
    port = free_port("127.0.0.3")  # where the target's qemu will listen for the migration
    return instance_dict(name, "kvm", {"kvm_path": QEMU, "kernel_path": "", "kvm_flag": "",
                                       "migration_port": port, "migration_bandwidth": 1000,
                                       "migration_downtime": 30})


def boot_sector() -> bytes:
    """16-bit code that halts forever (cli; hlt; jmp back to hlt), with the boot signature."""
    code = bytes([0xFA, 0xF4, 0xEB, 0xFD])
    return code + b"\x00" * (510 - len(code)) + BOOT_SIGNATURE


def write_boot_sector(cl: Cluster, name: str) -> Callable[[], None]:
    def fill() -> None:
        with open(disk_file(cl, name), "r+b") as f:
            f.write(boot_sector())
    return fill


def disk_link(node: RunningNoded, name: str) -> Path:
    return Path(node.paths.run_dir) / "instance-disks" / f"{name}:0"


def qemu_pid(node: RunningNoded, name: str) -> int:
    return read_pid_file(KvmHypervisor(node.paths).dirs.pid_file(name))


def qmp_status(node: RunningNoded, name: str) -> str:
    status: str = KvmHypervisor(node.paths).qmp_command(name, "query-status")["status"]
    return status


# -- fake ------------------------------------------------------------------------------------
def test_fake_instance_migrates_from_node1_to_node2(cluster: Cluster, name: str) -> None:
    master = Master(cluster.master_cert)
    inst = fake_instance(name)
    master.create_and_start(cluster.node1, inst)
    assert master.instances(cluster.node1, inst) == [name]

    master.migrate(cluster.node1, cluster.node2, inst, live=True)

    assert name in master.instances(cluster.node2, inst)
    assert name not in master.instances(cluster.node1, inst)
    assert master.statuses == [{"status": "completed"}]
    # the disk links moved with the instance: the target's points at the shared file
    assert not os.path.lexists(disk_link(cluster.node1, name))
    assert os.path.samefile(disk_link(cluster.node2, name), disk_file(cluster, name))


def test_fake_migration_status_over_grpc_reaches_the_same_servicer(cluster: Cluster, name: str) -> None:
    master = Master(cluster.master_cert, status_door="grpc")
    inst = fake_instance(name)
    master.create_and_start(cluster.node1, inst)

    master.migrate(cluster.node1, cluster.node2, inst, live=True)

    assert ("node1", "InstanceGetMigrationStatus") in master.calls
    assert master.statuses == [{"status": "completed"}]
    assert name in master.instances(cluster.node2, inst)
    assert name not in master.instances(cluster.node1, inst)


def test_fake_target_already_running_refuses_and_the_source_keeps_it(cluster: Cluster, name: str) -> None:
    master = Master(cluster.master_cert)
    inst = fake_instance(name)
    master.create_and_start(cluster.node1, inst)
    master.call(cluster.node2, "blockdev_assemble", inst["disks_info"][0], inst, True, 0)
    master.call(cluster.node2, "instance_start", inst, False, [])  # a stray copy on node2

    with pytest.raises(MigrationFailed, match="Failed to accept instance: Can't accept instance,"
                                              " already running"):
        master.migrate(cluster.node1, cluster.node2, inst, live=True)

    assert ("node1", "instance_migrate") not in master.calls
    assert name in master.instances(cluster.node1, inst)
    assert os.path.samefile(disk_link(cluster.node1, name), disk_file(cluster, name))


# -- kvm -------------------------------------------------------------------------------------
@requires_qemu
@pytest.mark.migration
@pytest.mark.parametrize("live", [True, False], ids=["live", "non-live"])
def test_kvm_instance_migrates_and_the_source_qemu_exits(cluster: Cluster, name: str, live: bool) -> None:
    master = Master(cluster.master_cert, status_door="grpc" if live else "legacy")
    inst = kvm_instance(name)
    master.create_and_start(cluster.node1, inst, fill_disk=write_boot_sector(cluster, name))
    source_pid = qemu_pid(cluster.node1, name)
    assert process_alive(source_pid)
    assert qmp_status(cluster.node1, name) == "running"

    master.migrate(cluster.node1, cluster.node2, inst, live=live)

    assert master.statuses[-1]["status"] == "completed"
    assert master.statuses[-1]["total_ram"] > 0
    assert qmp_status(cluster.node2, name) == "running"
    info = master.call(cluster.node2, "instance_info", name, "kvm", inst["hvparams"])
    assert (info["state"], info["memory"], info["vcpus"]) == (InstanceState.RUNNING, 32, 1)
    assert master.instances(cluster.node2, inst) == [name]
    assert master.instances(cluster.node1, inst) == []
    assert not process_alive(source_pid)
    # the target's qemu opened the shared file through the target's own link
    target_cmdline = Path(f"/proc/{qemu_pid(cluster.node2, name)}/cmdline").read_bytes()
    assert str(disk_link(cluster.node2, name)).encode() in target_cmdline
    assert os.path.samefile(disk_link(cluster.node2, name), disk_file(cluster, name))
    assert not os.path.lexists(disk_link(cluster.node1, name))


@requires_qemu
@pytest.mark.migration
def test_kvm_failover_stops_the_source_and_starts_the_instance_on_the_target(cluster: Cluster,
                                                                              name: str) -> None:
    master = Master(cluster.master_cert)
    inst = kvm_instance(name)
    master.create_and_start(cluster.node1, inst, fill_disk=write_boot_sector(cluster, name))
    source_pid = qemu_pid(cluster.node1, name)

    master.failover(cluster.node1, cluster.node2, inst, shutdown_timeout=0)  # no ACPI: forced at once

    assert not process_alive(source_pid)
    assert master.instances(cluster.node1, inst) == []
    assert master.instances(cluster.node2, inst) == [name]
    assert qmp_status(cluster.node2, name) == "running"
    assert not os.path.lexists(disk_link(cluster.node1, name))
    assert os.path.samefile(disk_link(cluster.node2, name), disk_file(cluster, name))


@requires_qemu
@pytest.mark.migration
def test_kvm_migration_to_a_node_that_did_not_accept_fails_and_the_source_keeps_running(
        cluster: Cluster, name: str) -> None:
    master = Master(cluster.master_cert)
    inst = kvm_instance(name)
    master.create_and_start(cluster.node1, inst, fill_disk=write_boot_sector(cluster, name))
    source_pid = qemu_pid(cluster.node1, name)

    with pytest.raises(MigrationFailed, match=f"Could not migrate instance {name}: hypervisor returned"):
        master.migrate(cluster.node1, cluster.node2, inst, live=True, target_accepts=False)

    assert [s["status"] for s in master.statuses] == ["failed"]  # qemu could not connect
    assert qemu_pid(cluster.node1, name) == source_pid
    assert process_alive(source_pid)
    assert qmp_status(cluster.node1, name) == "running"
    assert master.instances(cluster.node1, inst) == [name]
    assert master.instances(cluster.node2, inst) == []
    assert os.path.samefile(disk_link(cluster.node1, name), disk_file(cluster, name))
    assert not os.path.lexists(disk_link(cluster.node2, name))
