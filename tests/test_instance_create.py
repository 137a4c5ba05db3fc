"""OP_INSTANCE_CREATE / OP_INSTANCE_REMOVE through Debian's real gnt-instance against our master.

One three-node cluster for the module (127.0.11.x, cluster IP 127.0.11.100):
instances are added with and without installation, on file, sharedfile and
diskless disks, with the fake and the kvm hypervisor, placed by hail when
no node is given; after each step the disk files, the fake hypervisor's
state files and the real qemu processes are checked on the nodes
themselves. Bad input and failures in the middle leave the configuration
and the nodes as they were.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from masterd.instances import model
from noded.paths import Paths
from tools.gnt import node_daemon
from tools.gnt.errors import GanetiError

from cluster_support import alive, needs_cluster  # isort: skip
from instance_cluster import InstanceCluster, build_cluster  # isort: skip

pytestmark = needs_cluster

ADDRESSES = {"node1": "127.0.11.1", "node2": "127.0.11.2", "node3": "127.0.11.3"}
INSTANCES = {f"inst{i}": f"127.0.11.{50 + i}" for i in range(1, 10)}
CLUSTER_IP = "127.0.11.100"
SLOW_OS_SECONDS = 6


def routed(name: str) -> list[str]:
    return ["--net", f"0:mode=routed,ip={INSTANCES[name]}"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[InstanceCluster]:
    with build_cluster("gc", ADDRESSES, CLUSTER_IP, instances=INSTANCES) as made:
        yield made


def add(c: InstanceCluster, name: str, *options: str) -> subprocess.CompletedProcess[str]:
    return c.gnt("gnt-instance", "add", "--no-ip-check", *options, name)


def disk_files(c: InstanceCluster, name: str) -> list[Path]:
    """Every disk file of instance `name` anywhere below the cluster's base directory."""
    return sorted(p for p in c.base.rglob("*.disk*") if p.parent.name == name and p.is_file())


def fake_running(c: InstanceCluster, node: str, name: str) -> bool:
    return (c.root(node) / "var/run/ganeti/fake-hypervisor" / name).exists()


def kvm_pid(c: InstanceCluster, node: str, name: str) -> int | None:
    pid_file = c.root(node) / "var/run/ganeti/kvm-hypervisor/pid" / name
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


def remove(c: InstanceCluster, name: str, *options: str) -> None:
    done = c.gnt("gnt-instance", "remove", "-f", *options, name)
    assert done.returncode == 0, done.stderr


def test_file_instance_with_install_and_start(cluster: InstanceCluster) -> None:
    done = add(cluster, "inst1", "-n", "node2", "-t", "file", "-o", "noop", "-H", "fake", "-B", "memory=128M",
               "--disk", "0:size=1G", *routed("inst1"))
    assert done.returncode == 0, done.stderr
    for line in ("* disk 0, size 1.0G", "* creating instance disks...",
                 "adding instance inst1 to cluster config", "* running the instance OS create scripts...",
                 "* starting instance..."):
        assert line in done.stdout
    cfg = cluster.config()
    inst = model.lookup_instance(cfg, "inst1")
    assert inst.admin_state == "up" and inst.disks_active
    assert cfg.node(inst.primary_node).name == "node2"
    files = disk_files(cluster, "inst1")
    assert [f.relative_to(cluster.base).parts[0] for f in files] == ["node2"]
    assert files[0].stat().st_size == 1024 * 1024 * 1024
    assert fake_running(cluster, "node2", "inst1")
    assert not fake_running(cluster, "node1", "inst1") and not fake_running(cluster, "node3", "inst1")
    for node in ADDRESSES:
        assert "inst1" in (cluster.data(node) / "ssconf_instance_list").read_text().split()


def test_adding_the_same_name_again_is_refused(cluster: InstanceCluster) -> None:
    before = cluster.serial()
    done = add(cluster, "inst1", "-n", "node3", "-t", "diskless", "-o", "noop", "-H", "fake", "--no-start",
               *routed("inst1"))
    assert done.returncode == 1
    assert "Instance 'inst1' is already in the cluster" in done.stderr
    assert cluster.serial() == before


def test_remove_deletes_disk_and_stops_the_instance(cluster: InstanceCluster) -> None:
    remove(cluster, "inst1")
    assert disk_files(cluster, "inst1") == []
    assert not (cluster.file_dir("node2") / "inst1").exists()
    assert not fake_running(cluster, "node2", "inst1")
    assert model.find_instance(cluster.config(), "inst1") is None
    assert "inst1" not in (cluster.data("node3") / "ssconf_instance_list").read_text().split()


def test_diskless_without_install_or_start(cluster: InstanceCluster) -> None:
    done = add(cluster, "inst2", "-n", "node3", "-t", "diskless", "-o", "noop", "-H", "fake", "--no-start",
               "--no-install", *routed("inst2"))
    assert done.returncode == 0, done.stderr
    assert "* running the instance OS create scripts..." not in done.stdout
    inst = model.lookup_instance(cluster.config(), "inst2")
    assert inst.admin_state == "down" and inst.disks == []
    assert not fake_running(cluster, "node3", "inst2")
    remove(cluster, "inst2")


def test_kvm_sharedfile_instance_boots_the_tiny_os(cluster: InstanceCluster) -> None:
    done = add(cluster, "inst3", "-n", "node3", "-t", "sharedfile", "-o", "tiny+default", "-H", "kvm",
               "-B", "memory=128M", "--disk", "0:size=1G", *routed("inst3"))
    assert done.returncode == 0, done.stderr
    pid = kvm_pid(cluster, "node3", "inst3")
    assert pid is not None and pid in cluster.qemu_pids()
    assert kvm_pid(cluster, "node1", "inst3") is None and kvm_pid(cluster, "node2", "inst3") is None
    files = disk_files(cluster, "inst3")
    assert len(files) == 1 and files[0].parent.parent == cluster.shared_dir()
    with open(files[0], "rb") as disk:
        assert disk.read(512)[510:] == b"\x55\xaa"  # the tiny OS's create script wrote its boot sector
    remove(cluster, "inst3", "--shutdown-timeout=1")  # the tiny guest has no ACPI: qemu is stopped after 1 s
    assert node_daemon.pid_gone(pid, 20.0)
    assert disk_files(cluster, "inst3") == []


def test_without_a_node_hail_places_the_instance(cluster: InstanceCluster) -> None:
    done = add(cluster, "inst4", "-t", "file", "-o", "noop", "-H", "fake", "-B", "memory=128M",
               "--disk", "0:size=1G", "--no-start", *routed("inst4"))
    assert done.returncode == 0, done.stderr
    assert "Selected nodes for instance inst4 via iallocator hail:" in done.stdout
    cfg = cluster.config()
    chosen = cfg.node(model.lookup_instance(cfg, "inst4").primary_node).name
    assert f"via iallocator hail: {chosen}" in done.stdout
    assert [f.relative_to(cluster.base).parts[0] for f in disk_files(cluster, "inst4")] == [chosen]
    remove(cluster, "inst4")


def test_drained_and_offline_nodes_never_receive_new_instances(cluster: InstanceCluster) -> None:
    for node, flag in (("node2", "--drained"), ("node3", "--drained")):
        done = cluster.gnt("gnt-node", "modify", flag, "yes", node)
        assert done.returncode == 0, done.stderr
    try:
        before = cluster.serial()
        done = add(cluster, "inst5", "-n", "node2", "-t", "diskless", "-o", "noop", "-H", "fake",
                   "--no-start", *routed("inst5"))
        assert done.returncode == 1
        assert "Can't use drained node node2" in done.stderr
        assert cluster.serial() == before
        done = add(cluster, "inst5", "-t", "diskless", "-o", "noop", "-H", "fake", "--no-start",
                   "--ignore-ipolicy", *routed("inst5"))
        assert done.returncode == 0, done.stderr
        cfg = cluster.config()
        assert cfg.node(model.lookup_instance(cfg, "inst5").primary_node).name == "node1"
        remove(cluster, "inst5")
    finally:
        for node in ("node2", "node3"):
            cluster.gnt("gnt-node", "modify", "--drained", "no", node)


@pytest.mark.parametrize(("options", "message"), [
    (("-n", "node2", "-t", "file", "-o", "nosuchos", "-H", "fake", "--disk", "0:size=1G"),
     "OS 'nosuchos' not in supported OS list for node node2"),
    (("-n", "node2", "-t", "file", "-o", "noop", "-H", "fake", "--disk", "0:size=100M"),
     "violates policy: disk-size/0 value 100 is not in range [1024, 1048576]"),
    (("-n", "node2", "-t", "file", "-o", "noop", "-H", "fake", "--ignore-ipolicy", "--disk", "0:size=1000T"),
     "Not enough disk space on target node node2 for file storage"),
    (("-n", "node2", "-t", "file", "-o", "noop", "-H", "fake", "--ignore-ipolicy", "-B", "memory=4096G",
      "--disk", "0:size=1G"),
     "Not enough memory on node node2 for starting instance inst6"),
    (("-n", "node2", "-t", "plain", "-o", "noop", "-H", "fake", "--disk", "0:size=1G"),
     "Cannot create an instance with disk template 'plain', because it is not enabled in the cluster"),
    (("-n", "nosuchnode", "-t", "diskless", "-o", "noop", "-H", "fake"), "Node 'nosuchnode' not known"),
])
def test_bad_input_changes_nothing(cluster: InstanceCluster, options: tuple[str, ...], message: str) -> None:
    before = cluster.serial()
    done = add(cluster, "inst6", *options, *routed("inst6"))
    assert done.returncode == 1, done.stdout
    assert message in done.stderr
    assert cluster.serial() == before
    assert disk_files(cluster, "inst6") == []
    assert not any((cluster.file_dir(node) / "inst6").exists() for node in ADDRESSES)


def test_offline_target_is_refused_without_contacting_it(cluster: InstanceCluster) -> None:
    done = cluster.gnt("gnt-node", "modify", "--offline", "yes", "node3")
    assert done.returncode == 0, done.stderr
    try:
        before = cluster.serial()
        done = add(cluster, "inst6", "-n", "node3", "-t", "diskless", "-o", "noop", "-H", "fake",
                   *routed("inst6"))
        assert done.returncode == 1
        assert "Can't use offline node node3" in done.stderr
        assert cluster.serial() == before
    finally:
        assert cluster.gnt("gnt-node", "modify", "--force", "--offline", "no", "node3").returncode == 0


def _install_slow_os(c: InstanceCluster, node: str) -> None:
    """An OS whose create script takes a while, below the node's root."""
    target = c.root(node) / "srv/ganeti/os/slow"
    shutil.copytree(c.root(node) / "srv/ganeti/os/tiny", target, symlinks=True)
    (target / "create").write_text(f"#!/bin/sh\nsleep {SLOW_OS_SECONDS}\nexit 0\n")
    os.chmod(target / "create", 0o755)


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_node_daemon_killed_during_add_leaves_nothing_behind(cluster: InstanceCluster) -> None:
    """The node daemon dies while the OS installs; the job fails clearly and, once the daemon is back
    (as a supervisor restarts it), the disk and directory it made are gone and the config is unchanged."""
    _install_slow_os(cluster, "node2")
    before = cluster.serial()
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    worker = threading.Thread(target=lambda: result.setdefault("add", add(
        cluster, "inst7", "-n", "node2", "-t", "file", "-o", "slow+default", "-H", "fake", "--no-start",
        "--disk", "0:size=1G", *routed("inst7"))))
    worker.start()
    assert _wait_for(lambda: disk_files(cluster, "inst7") != [], 30), "the disk was never created"
    pid = cluster.pid_of("node2")
    assert pid is not None
    time.sleep(0.5)  # the install has started
    os.kill(pid, signal.SIGKILL)
    assert node_daemon.pid_gone(pid, 10.0)
    time.sleep(2)  # the node is down for a while
    paths = Paths(root=str(cluster.root("node2")), hostname="node2")
    restarted: list[int] = []

    def restart() -> bool:  # its legacy door workers leave the port within a second
        try:
            restarted.append(node_daemon.start_noded(paths, ADDRESSES["node2"], cluster.port,
                                                     cluster.grpc_port))
        except GanetiError:
            return False
        return True
    assert _wait_for(restart, 15), "the node daemon could not be started again"
    worker.join(120)
    done = result["add"]
    assert done.returncode == 1
    assert "Could not add os for instance inst7 on node node2" in done.stderr
    assert "removing what was created" in done.stdout
    assert disk_files(cluster, "inst7") == []
    assert not (cluster.file_dir("node2") / "inst7").exists()
    cfg = cluster.config()
    assert model.find_instance(cfg, "inst7") is None
    assert cluster.serial() > before  # added, then taken out again: both are changes
