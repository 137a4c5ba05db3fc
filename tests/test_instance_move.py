"""Failover and migration of instances through our master, driven by Debian's real gnt-instance and gnt-node.

A three-node cluster of our daemons (tests/instance_cluster.py, 127.0.14.x,
cluster IP 127.0.14.100) whose nodes share one sharedfile directory.
Debian's `gnt-instance migrate -f`, `gnt-instance failover -f` and
`gnt-node migrate -f` run against our master (OP_INSTANCE_MIGRATE,
OP_INSTANCE_FAILOVER, OP_NODE_MIGRATE). After each move the test looks at
what really happened: the configuration's primary node, the qemu process of
a kvm instance (under the new primary's root, running according to its QMP
socket there, none under the old one's), the fake hypervisor's state file
(only on the new primary), the disk link of the node running the instance,
and the disk file in the shared directory. Refused moves (a file-template
instance, a drained or offline target, the primary itself, an unknown
instance) fail with Ganeti's messages and leave the configuration serial
unchanged.

The tests of this module share one cluster and run in file order: the bad
input first (node3 has no instance yet, so it can be set offline).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import alive, needs_cluster
from instance_cluster import InstanceCluster, build_cluster

from masterd.instances import model

ADDRESSES = {"node1": "127.0.14.1", "node2": "127.0.14.2", "node3": "127.0.14.3"}
CLUSTER_IP = "127.0.14.100"
INSTANCES = {"km1": "127.0.14.51", "fm1": "127.0.14.52", "fd1": "127.0.14.53", "ff1": "127.0.14.54",
             "kn1": "127.0.14.55", "fn1": "127.0.14.56", "dn1": "127.0.14.57", "fo1": "127.0.14.58"}
QEMU = "/usr/bin/qemu-system-x86_64"

pytestmark = [needs_cluster, pytest.mark.skipif(not os.path.exists(QEMU), reason="qemu is not installed")]


@pytest.fixture(scope="module")
def cluster() -> Iterator[InstanceCluster]:
    with build_cluster("gm", ADDRESSES, CLUSTER_IP, instances=INSTANCES) as made:
        try:
            yield made
        finally:
            for pid in qemu_pids(made):  # whatever the helper's clean-up recognises
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# --- helpers ---------------------------------------------------------------------------------

def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"rc={done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done.stdout


def failed(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, f"expected a failure\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done.stdout + done.stderr


def add(c: InstanceCluster, name: str, node: str, hypervisor: str, template: str) -> None:
    args = ["add", "-n", node, "-t", template, "--no-ip-check", "-H", hypervisor, "--ignore-ipolicy",
            "--net", f"0:mode=routed,ip={INSTANCES[name]}"]
    if hypervisor == "kvm":
        args += ["-o", "tiny+default", "-B", "memory=64M"]
    else:
        args += ["-o", "noop", "-B", "memory=128M"]
    if template != model.DT_DISKLESS:
        args += ["--disk", "0:size=16M"]
    ok(c.gnt("gnt-instance", *args, name))


def qemu_pids(c: InstanceCluster) -> list[int]:
    """Every qemu (qemu-system-*, or Debian's kvm link) whose command line names the cluster's base."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            program = os.path.basename(argv[0])
            ours = str(c.base).encode() in b" ".join(argv)
            if (program.startswith(b"qemu-system") or program == b"kvm") and ours:
                found.append(int(entry.name))
    return found


def qemu_of(c: InstanceCluster, name: str) -> dict[str, int]:
    """{node: pid} of the qemu processes running instance `name` (the node from its pid file's root)."""
    found: dict[str, int] = {}
    for pid in qemu_pids(c):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            if "-name" not in argv or argv[argv.index("-name") + 1] != name:
                continue
            pidfile = argv[argv.index("-pidfile") + 1]
            nodes = [n for n in c.names if pidfile.startswith(f"{c.root(n)}/")]
            assert len(nodes) == 1, pidfile
            found[nodes[0]] = pid
    return found


def qmp_status(c: InstanceCluster, node: str, name: str) -> str:
    """The VM's status through its QMP socket under the node's root."""
    path = c.root(node) / "var/run/ganeti/kvm-hypervisor/ctrl" / f"{name}.qmp"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        stream = sock.makefile("rwb")

        def ask(command: str) -> dict[str, object]:
            stream.write(json.dumps({"execute": command}).encode() + b"\n")
            stream.flush()
            while True:
                answer = json.loads(stream.readline())
                if "return" in answer or "error" in answer:
                    return dict(answer)

        json.loads(stream.readline())  # the greeting
        ask("qmp_capabilities")
        status = ask("query-status")["return"]
        assert isinstance(status, dict)
        return str(status["status"])


def fake_running(c: InstanceCluster, name: str) -> list[str]:
    """The nodes whose fake hypervisor has the instance's state file."""
    return [n for n in c.names if (c.root(n) / "var/run/ganeti/fake-hypervisor" / name).exists()]


def disk_links(c: InstanceCluster, name: str) -> list[str]:
    """The nodes holding the instance's disk 0 link (the disk assembled there)."""
    return [n for n in c.names if os.path.lexists(c.root(n) / "var/run/ganeti/instance-disks" / f"{name}:0")]


def primary(c: InstanceCluster, name: str) -> str:
    cfg = c.config()
    inst = model.lookup_instance(cfg, name)
    return cfg.node(inst.primary_node).name


def disk_nodes(c: InstanceCluster, name: str) -> list[str]:
    cfg = c.config()
    inst = model.lookup_instance(cfg, name)
    return sorted({cfg.node(u).name for d in model.instance_disks(cfg, inst) for u in d.get("nodes") or []})


def shared_disk(c: InstanceCluster, name: str) -> Path:
    """The instance's disk file in the shared directory (the master's logical id, below any node's root)."""
    cfg = c.config()
    inst = model.lookup_instance(cfg, name)
    (disk,) = model.instance_disks(cfg, inst)
    logical = str(disk["logical_id"][1])
    prefix = f"{c.root('node1')}/srv/ganeti/shared-file-storage/"
    assert logical.startswith(prefix), logical
    return c.shared_dir() / logical[len(prefix):]


def wait_qemu(c: InstanceCluster, name: str, node: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        found = qemu_of(c, name)
        if list(found) == [node] and qmp_status(c, node, name) == "running":
            return found[node]
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: qemu processes {found}, wanted one on {node} only")
        time.sleep(0.2)


def assert_kvm_on(c: InstanceCluster, name: str, node: str) -> int:
    assert primary(c, name) == node
    assert disk_nodes(c, name) == [node]
    pid = wait_qemu(c, name, node)
    assert disk_links(c, name) == [node]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert str(c.root(node) / "var/run/ganeti/instance-disks" / f"{name}:0") in argv
    link = c.root(node) / "var/run/ganeti/instance-disks" / f"{name}:0"
    assert os.path.samefile(link, shared_disk(c, name))
    return pid


def assert_fake_on(c: InstanceCluster, name: str, node: str, with_disk: bool = True) -> None:
    assert primary(c, name) == node
    assert fake_running(c, name) == [node]
    if with_disk:
        assert disk_nodes(c, name) == [node]
        assert disk_links(c, name) == [node]
        assert shared_disk(c, name).is_file()


# --- refused moves (first: node3 is still empty) --------------------------------------------

def test_moves_of_a_file_instance_are_refused_with_ganetis_message(cluster: InstanceCluster) -> None:
    c = cluster
    add(c, "ff1", "node1", "fake", model.DT_FILE)
    serial = c.serial()
    out = failed(c.gnt("gnt-instance", "migrate", "-f", "-n", "node2", "ff1"))
    assert "Instance's disk layout 'file' does not allow migrations" in out
    out = failed(c.gnt("gnt-instance", "failover", "-f", "-n", "node2", "ff1"))
    assert "Instance's disk layout 'file' does not allow failovers" in out
    assert c.serial() == serial
    assert primary(c, "ff1") == "node1" and fake_running(c, "ff1") == ["node1"]


def test_unknown_instance_and_own_primary_are_refused(cluster: InstanceCluster) -> None:
    c = cluster
    add(c, "fm1", "node1", "fake", model.DT_SHAREDFILE)
    serial = c.serial()
    for command in ("migrate", "failover"):
        out = failed(c.gnt("gnt-instance", command, "-f", "-n", "node2", "nosuch"))
        assert "Instance 'nosuch' not known" in out
    out = failed(c.gnt("gnt-instance", "migrate", "-f", "-n", "node1", "fm1"))
    assert "Cannot migrate instance fm1 to its primary (node1)" in out
    out = failed(c.gnt("gnt-instance", "migrate", "-f", "-n", "node9", "fm1"))
    assert "Node 'node9' not known" in out
    assert c.serial() == serial
    assert_fake_on(c, "fm1", "node1")


def test_failover_and_migrate_to_a_drained_node_are_refused(cluster: InstanceCluster) -> None:
    c = cluster
    ok(c.gnt("gnt-node", "modify", "-f", "--drained", "yes", "node3"))
    try:
        serial = c.serial()
        for command in ("failover", "migrate"):
            out = failed(c.gnt("gnt-instance", command, "-f", "-n", "node3", "fm1"))
            assert "Can't use drained node node3" in out
        assert c.serial() == serial
    finally:
        ok(c.gnt("gnt-node", "modify", "-f", "--drained", "no", "node3"))
    assert_fake_on(c, "fm1", "node1")


def test_failover_to_an_offline_node_is_refused(cluster: InstanceCluster) -> None:
    c = cluster
    ok(c.gnt("gnt-node", "modify", "-f", "--offline", "yes", "node3"))
    try:
        serial = c.serial()
        for command in ("failover", "migrate"):
            out = failed(c.gnt("gnt-instance", command, "-f", "-n", "node3", "fm1"))
            assert "Can't use offline node node3" in out
        assert c.serial() == serial
    finally:
        ok(c.gnt("gnt-node", "modify", "-f", "--offline", "no", "node3"))
    assert_fake_on(c, "fm1", "node1")


# --- migration and failover -----------------------------------------------------------------

def test_kvm_live_migration_moves_the_qemu_process(cluster: InstanceCluster) -> None:
    c = cluster
    add(c, "km1", "node1", "kvm", model.DT_SHAREDFILE)
    source_pid = assert_kvm_on(c, "km1", "node1")

    out = ok(c.gnt("gnt-instance", "migrate", "-f", "-n", "node2", "km1"))

    for line in ("Migrating instance km1", "* preparing node2 to accept the instance",
                 "* migrating instance to node2", "* memory transfer complete", "* done"):
        assert line in out
    target_pid = assert_kvm_on(c, "km1", "node2")
    assert target_pid != source_pid and not alive(source_pid)


def test_kvm_failover_restarts_the_instance_on_the_target(cluster: InstanceCluster) -> None:
    c = cluster
    source_pid = assert_kvm_on(c, "km1", "node2")

    out = ok(c.gnt("gnt-instance", "failover", "-f", "--shutdown-timeout=0", "-n", "node1", "km1"))

    for line in ("Failover instance km1", "* shutting down instance on source node",
                 "* starting the instance on the target node node1"):
        assert line in out
    target_pid = assert_kvm_on(c, "km1", "node1")
    assert not alive(source_pid) and target_pid != source_pid


def test_a_failed_kvm_migration_leaves_the_source_qemu_running(cluster: InstanceCluster) -> None:
    c = cluster
    source_pid = assert_kvm_on(c, "km1", "node1")
    cfg = c.config()
    inst = model.lookup_instance(cfg, "km1")
    port = int(model.fill_hv(cfg, "kvm", inst.os, inst.hvparams)["migration_port"])
    serial = c.serial()
    with socket.socket() as busy:  # the target's qemu cannot listen for the incoming migration
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind((ADDRESSES["node3"], port))
        busy.listen()

        out = failed(c.gnt("gnt-instance", "migrate", "-f", "-n", "node3", "km1"))

    assert "Pre-migration failed, aborting" in out
    assert "Could not pre-migrate instance km1: " in out
    assert "Address already in use" in out
    assert c.serial() == serial
    assert assert_kvm_on(c, "km1", "node1") == source_pid


def test_fake_migration_and_failover(cluster: InstanceCluster) -> None:
    c = cluster
    assert_fake_on(c, "fm1", "node1")
    ok(c.gnt("gnt-instance", "migrate", "-f", "-n", "node3", "fm1"))
    assert_fake_on(c, "fm1", "node3")
    ok(c.gnt("gnt-instance", "failover", "-f", "-n", "node2", "fm1"))
    assert_fake_on(c, "fm1", "node2")
    assert c.config().tree["instances"][model.lookup_instance(c.config(), "fm1").uuid]["admin_state"] == "up"


def test_a_failed_migration_is_aborted_and_the_instance_stays(cluster: InstanceCluster) -> None:
    c = cluster
    assert_fake_on(c, "fm1", "node2")
    stray = c.root("node3") / "var/run/ganeti/fake-hypervisor" / "fm1"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("0\n128\n1\n")  # a copy already runs on node3: the target refuses to accept it
    serial = c.serial()

    out = failed(c.gnt("gnt-instance", "migrate", "-f", "-n", "node3", "fm1"))

    assert "Pre-migration failed, aborting" in out
    assert "Could not pre-migrate instance fm1: " in out and "Can't accept instance, already running" in out
    assert c.serial() == serial
    # the abort finalized the failed migration on the target (which drops its copy, as Ganeti's
    # fake hypervisor does) and gave the disks back to the source
    assert primary(c, "fm1") == "node2" and fake_running(c, "fm1") == ["node2"]
    assert disk_links(c, "fm1") == ["node2"]


def test_migrate_cleanup_records_where_the_instance_really_runs(cluster: InstanceCluster) -> None:
    c = cluster
    assert_fake_on(c, "fm1", "node2")
    out = ok(c.gnt("gnt-instance", "migrate", "-f", "--cleanup", "-n", "node3", "fm1"))
    assert "* instance running on: node2" in out
    assert "* instance confirmed to be running on its primary node (node2)" in out
    assert primary(c, "fm1") == "node2"
    # a migration that completed on the hypervisors but not in the configuration
    state = c.root("node2") / "var/run/ganeti/fake-hypervisor" / "fm1"
    moved = c.root("node3") / "var/run/ganeti/fake-hypervisor" / "fm1"
    moved.write_text(state.read_text())
    state.unlink()

    out = ok(c.gnt("gnt-instance", "migrate", "-f", "--cleanup", "-n", "node3", "fm1"))

    assert "* instance running on: node3" in out
    assert "* instance running on secondary node (node3), updating config" in out
    assert primary(c, "fm1") == "node3" and disk_nodes(c, "fm1") == ["node3"]
    assert fake_running(c, "fm1") == ["node3"]


def test_diskless_failover_and_migration(cluster: InstanceCluster) -> None:
    c = cluster
    add(c, "fd1", "node1", "fake", model.DT_DISKLESS)
    ok(c.gnt("gnt-instance", "failover", "-f", "-n", "node3", "fd1"))
    assert_fake_on(c, "fd1", "node3", with_disk=False)
    ok(c.gnt("gnt-instance", "migrate", "-f", "-n", "node1", "fd1"))
    assert_fake_on(c, "fd1", "node1", with_disk=False)


def test_failover_of_a_stopped_instance_only_moves_it(cluster: InstanceCluster) -> None:
    c = cluster
    ok(c.gnt("gnt-instance", "shutdown", "--timeout=0", "fd1"))
    assert fake_running(c, "fd1") == []
    out = ok(c.gnt("gnt-instance", "failover", "-f", "-n", "node2", "fd1"))
    assert "* not checking disk consistency as instance is not running" in out
    assert primary(c, "fd1") == "node2" and fake_running(c, "fd1") == []
    # a migration of a stopped instance is refused unless a failover is allowed
    serial = c.serial()
    out = failed(c.gnt("gnt-instance", "migrate", "-f", "-n", "node1", "fd1"))
    assert "Can't migrate, please use failover" in out
    assert c.serial() == serial
    out = ok(c.gnt("gnt-instance", "migrate", "-f", "--allow-failover", "-n", "node1", "fd1"))
    assert "Instance is marked down or offline, fallback allowed, switching to failover" in out
    assert primary(c, "fd1") == "node1" and fake_running(c, "fd1") == []


# --- all primaries off a node ---------------------------------------------------------------

def test_node_migrate_moves_every_primary_instance_off_the_node(cluster: InstanceCluster) -> None:
    c = cluster
    add(c, "kn1", "node3", "kvm", model.DT_SHAREDFILE)
    add(c, "fn1", "node3", "fake", model.DT_SHAREDFILE)
    add(c, "dn1", "node3", "fake", model.DT_DISKLESS)
    source_pid = assert_kvm_on(c, "kn1", "node3")
    on_node3 = sorted(i.name for i in model.instances(c.config()) if primary(c, i.name) == "node3")
    assert {"kn1", "fn1", "dn1"} <= set(on_node3)

    out = ok(c.gnt("gnt-node", "migrate", "-f", "node3"))

    assert "All instances migrated successfully." in out
    assert out.count("Submitted jobs") + out.count("Waiting for job") >= 1
    for name in on_node3:
        assert primary(c, name) != "node3", name
        assert f"Migrating instance {name}" in out
    assert not alive(source_pid)
    assert_kvm_on(c, "kn1", primary(c, "kn1"))
    assert_fake_on(c, "fn1", primary(c, "fn1"))
    assert_fake_on(c, "dn1", primary(c, "dn1"), with_disk=False)
    assert not any(n == "node3" for n in qemu_of(c, "kn1"))
    # nothing left to move
    assert "No primary instances on node node3, exiting." in ok(c.gnt("gnt-node", "migrate", "-f", "node3"))


def test_failover_off_an_offline_node_ignoring_consistency(cluster: InstanceCluster) -> None:
    """The failover of a dead node's instance (Debian's tool asks a question for this: the opcode is sent
    through Ganeti's own client library)."""
    c = cluster
    add(c, "fo1", "node3", "fake", model.DT_SHAREDFILE)
    ok(c.gnt("gnt-node", "modify", "-f", "--offline", "yes", "node3"))
    try:
        script = ("import sys; sys.path.insert(0, '/usr/share/ganeti/3.0');"
                  "from ganeti import cli, opcodes;"
                  "op = opcodes.OpInstanceFailover(instance_name='fo1', ignore_consistency=True,"
                  " target_node='node1', shutdown_timeout=0);"
                  "cli.SubmitOpCode(op, cl=cli.GetClient())")
        done = c.run("/usr/bin/python3", "-c", script)
        out = ok(done) + done.stderr
        assert "Could not shutdown instance fo1 on node node3, proceeding anyway" in out
        assert primary(c, "fo1") == "node1" and disk_nodes(c, "fo1") == ["node1"]
        # started on node1; node3 (offline, not contacted) still has its copy
        assert sorted(fake_running(c, "fo1")) == ["node1", "node3"]
        assert "node1" in disk_links(c, "fo1")
    finally:
        ok(c.gnt("gnt-node", "modify", "-f", "--offline", "no", "node3"))
