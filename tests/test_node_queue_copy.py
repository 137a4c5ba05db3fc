"""New master candidates get the whole job queue; gnt-node modify -s / --node-parameters; node storage paths.

One cluster for the module: our gnt-cluster init on node1 (a short /tmp
root, 127.0.9.x addresses, cluster IP 127.0.9.100 on `lo`, removed in a
finally); jobs are run (Debian's gnt-debug delay) before our
`gnt-node add --node-root` adds node2 (a candidate at once) and node3
(--master-capable=no, so a regular node), which Debian's gnt-node modify
later makes a candidate. The tests run in file order. Every daemon is stopped
by the pid of its root's pid file at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from masterd.config.model import load
from masterd.instances.model import virtual_path
from noded.backends.storagepaths import node_path
from noded.paths import Paths

from cluster_support import (  # isort: skip
    CLUSTER, INIT_ARGS, OUR_GNT_CLUSTER, OUR_GNT_NODE, SBIN, ClusterRoots, alive, free_port, needs_cluster,
    remove_ip,
)

ADDRESSES = {"node1": "127.0.9.1", "node2": "127.0.9.2", "node3": "127.0.9.3"}
CLUSTER_IP = "127.0.9.100"

pytestmark = needs_cluster


class Cluster(ClusterRoots):
    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, GANETI_ROOTDIR=str(self.root("node1")), GANETI_HOSTNAME="node1")
        env.pop("PYTHONPATH", None)
        return env

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=120)

    def gnt(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Debian's real gnt-<command> against our master."""
        return self.run(f"{SBIN}/gnt-{command}", *args)

    def config(self) -> dict[str, object]:
        return dict(load(str(self.data("node1") / "config.data")).tree)

    def serial(self) -> int:
        return load(str(self.data("node1") / "config.data")).serial_no

    def queue(self, name: str) -> dict[str, bytes]:
        """The live job files and the serial file of a node's queue directory."""
        queue = self.data(name) / "queue"
        return {p.name: p.read_bytes() for p in queue.iterdir()
                if p.is_file() and (p.name.startswith("job-") or p.name == "serial")}

    def jobs(self, name: str) -> list[str]:
        return sorted(name for name in self.queue(name) if name.startswith("job-"))

    def wait_queue_copy(self, name: str, timeout: float = 20.0) -> dict[str, bytes]:
        """The node's queue once it equals the master's (the last writes are replicated in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            master, copy = self.queue("node1"), self.queue(name)
            if copy == master or time.monotonic() > deadline:
                assert sorted(copy) == sorted(master)
                assert copy == master
                return copy
            time.sleep(0.1)

    def stop_all(self) -> None:
        pids = [pid for name in ADDRESSES for daemon in ("ganeti-noded", "ganeti-masterd")
                if (pid := self.pid_of(name, daemon)) is not None and alive(pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="gq", dir="/tmp"))
    made = Cluster(base, free_port(ADDRESSES["node1"]), free_port(ADDRESSES["node1"]))
    etc = made.root("node1") / "etc"
    etc.mkdir(parents=True)
    hosts = "".join(f"{ip} {name}\n" for name, ip in ADDRESSES.items())
    (etc / "hosts").write_text(f"{hosts}{CLUSTER_IP} {CLUSTER}\n")
    (etc / "services").write_text(f"ganeti-noded {made.port}/tcp\n")
    try:
        done = made.run(OUR_GNT_CLUSTER, "init", *INIT_ARGS, "--noded-grpc-port", str(made.grpc_port),
                        CLUSTER)
        assert done.returncode == 0, done.stderr
        yield made
    finally:
        try:
            made.stop_all()
        finally:
            remove_ip(CLUSTER_IP)
            shutil.rmtree(base, ignore_errors=True)


def test_jobs_before_node_add_reach_the_new_candidate(cluster: Cluster) -> None:
    for _ in range(3):
        done = cluster.gnt("debug", "delay", "0.01")
        assert done.returncode == 0, done.stderr
    before = cluster.queue("node1")
    assert len([name for name in before if name.startswith("job-")]) == 3 and "serial" in before
    done = cluster.run(OUR_GNT_NODE, "add", "--node-root", str(cluster.root("node2")), "node2")
    assert done.returncode == 0, done.stderr
    assert cluster.config()["nodes"]  # written
    copy = cluster.wait_queue_copy("node2")
    for name, data in before.items():
        if name != "serial":  # the serial moved on with the add job
            assert copy[name] == data, name
    assert len([name for name in copy if name.startswith("job-")]) == 4  # the add job too


def test_a_regular_node_gets_no_queue(cluster: Cluster) -> None:
    done = cluster.run(OUR_GNT_NODE, "add", "--master-capable=no", "--node-root", str(cluster.root("node3")),
                       "node3")
    assert done.returncode == 0, done.stderr
    time.sleep(0.5)
    assert cluster.jobs("node3") == []


def test_a_node_promoted_to_candidate_gets_the_whole_queue(cluster: Cluster) -> None:
    """Becoming master capable auto-promotes node3 (Ganeti's _DecideSelfPromotion): it gets the queue."""
    done = cluster.gnt("node", "modify", "--master-capable=yes", "node3")
    assert done.returncode == 0, done.stderr
    assert "master_candidate -> True" in done.stdout, done.stdout
    copy = cluster.wait_queue_copy("node3")
    assert len([name for name in copy if name.startswith("job-")]) == 6


def test_a_candidate_promoted_again_loses_its_stale_queue_files(cluster: Cluster) -> None:
    done = cluster.gnt("node", "modify", "--auto-promote", "--master-candidate=no", "node3")
    assert done.returncode == 0, done.stderr
    stale = cluster.data("node3") / "queue" / "job-424242"
    stale.write_text("{}")
    done = cluster.gnt("debug", "delay", "0.01")  # a job node3 does not see as a regular node
    assert done.returncode == 0, done.stderr
    missed = set(cluster.jobs("node1")) - set(cluster.jobs("node3"))
    assert len(missed) == 1
    done = cluster.gnt("node", "modify", "--master-candidate=yes", "node3")
    assert done.returncode == 0, done.stderr
    cluster.wait_queue_copy("node3")
    assert not stale.exists()


def test_added_nodes_have_the_file_storage_dirs_they_need(cluster: Cluster) -> None:
    """The cluster's file storage directory, as each added node sees it, exists and is allowed there.

    The master sends the directory as a virtual path (it lies below the master's root), which every
    node maps below its own root: the same place in each root.
    """
    storage_dir = str(cluster.config()["cluster"]["file_storage_dir"])  # type: ignore[index]
    sent = virtual_path(str(cluster.root("node1")), storage_dir)
    for name in ("node2", "node3"):
        node = Paths(root=str(cluster.root(name)), hostname=name)
        mine = node_path(node, sent)
        assert mine == str(cluster.root(name) / "srv/ganeti/file-storage") and os.path.isdir(mine)
        assert mine in Path(node.file_storage_paths_file).read_text().splitlines()
    done = cluster.gnt("cluster", "verify", "--error-codes", "-I", "ENODESETUP")
    assert done.returncode == 0, done.stdout + done.stderr


# -- gnt-node modify --node-parameters / -s (OP_NODE_SET_PARAMS ndparams, secondary_ip) ---------------

def node_raw(cluster: Cluster, name: str) -> dict[str, object]:
    nodes = cluster.config()["nodes"]
    assert isinstance(nodes, dict)
    return next(raw for raw in nodes.values() if raw["name"] == name)


def test_node_parameters_are_set_converted_and_reset(cluster: Cluster) -> None:
    done = cluster.gnt("node", "modify", "--node-parameters", "spindle_count=2,ssh_port=2222,ovs=true",
                       "node2")
    assert done.returncode == 0, done.stderr
    assert node_raw(cluster, "node2")["ndparams"] == {"spindle_count": 2, "ssh_port": 2222, "ovs": True}
    done = cluster.gnt("node", "modify", "--node-parameters", "spindle_count=default", "node2")
    assert done.returncode == 0, done.stderr
    assert node_raw(cluster, "node2")["ndparams"] == {"ssh_port": 2222, "ovs": True}
    done = cluster.gnt("node", "list", "--no-headers", "-o", "name,ndp/ssh_port,ndp/spindle_count", "node2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["node2", "2222", "1"]


@pytest.mark.parametrize(("value", "message"), [
    ("spindle_count=many", "'spindle_count' (value many) is not a valid integer"),
    ("ovs=perhaps", "'ovs' (value perhaps) is not a valid boolean"),
    ("no_such_param=1", "Unknown parameter 'no_such_param'"),
    ("exclusive_storage=true", "The following node parameters are global and cannot be customized at node"
                               " level, please modify them at cluster or group level: exclusive_storage"),
])
def test_bad_node_parameters_are_refused(cluster: Cluster, value: str, message: str) -> None:
    before = cluster.serial()
    done = cluster.gnt("node", "modify", "--node-parameters", value, "node2")
    assert done.returncode == 1, done.stdout
    assert message in done.stderr
    assert cluster.serial() == before


def test_a_secondary_ip_on_a_single_homed_cluster_needs_the_master_and_force(cluster: Cluster) -> None:
    before = cluster.serial()
    for argv in (("-s", "127.0.9.12", "node2"), ("--force", "-s", "127.0.9.12", "node2"),
                 ("-s", "127.0.9.11", "node1")):
        done = cluster.gnt("node", "modify", *argv)
        assert done.returncode == 1, done.stdout
        assert "Changing the secondary ip on a single-homed cluster requires the --force option to be" \
            " passed, and the target node to be the master" in done.stderr
    done = cluster.gnt("node", "modify", "-s", "127.0.9.300", "node2")
    assert done.returncode == 1, done.stdout
    assert "Secondary IP (127.0.9.300) needs to be a valid IPv4 address" in done.stderr
    assert cluster.serial() == before


def test_the_master_gets_a_secondary_ip_with_force(cluster: Cluster) -> None:
    done = cluster.gnt("node", "modify", "--force", "-s", "127.0.9.11", "node1")
    assert done.returncode == 0, done.stderr
    assert "Transitioning from single-homed to multi-homed cluster" in done.stderr + done.stdout
    assert " - secondary_ip -> 127.0.9.11" in done.stdout
    assert node_raw(cluster, "node1")["secondary_ip"] == "127.0.9.11"
    expected = "node1 127.0.9.11\nnode2 127.0.9.2\nnode3 127.0.9.3\n"
    for name in ("node1", "node2", "node3"):
        assert (cluster.data(name) / "ssconf_node_secondary_ips").read_text() == expected


def test_a_secondary_ip_must_answer_on_the_node_daemon_port(cluster: Cluster) -> None:
    before = cluster.serial()
    done = cluster.gnt("node", "modify", "-s", "127.0.9.12", "node2")
    assert done.returncode == 1, done.stdout
    assert "Node secondary ip not reachable by TCP based ping to node daemon port" in done.stderr
    assert cluster.serial() == before


@pytest.mark.parametrize(("address", "message"), [
    ("127.0.9.3", "New node ip address(es) conflict with existing node node3"),
    ("127.0.9.2", "Cannot set the secondary IP to be the same as the primary IP on a multi-homed cluster"),
])
def test_conflicting_secondary_ips_are_refused(cluster: Cluster, address: str, message: str) -> None:
    before = cluster.serial()
    done = cluster.gnt("node", "modify", "-s", address, "node2")
    assert done.returncode == 1, done.stdout
    assert message in done.stderr
    assert cluster.serial() == before


def test_a_reachable_secondary_ip_is_set(cluster: Cluster) -> None:
    """A listener on 127.0.9.12 at the node daemon port stands for node2's second interface."""
    with socket.create_server(("127.0.9.12", cluster.port)):
        done = cluster.gnt("node", "modify", "-s", "127.0.9.12", "node2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Modified node node2", " - secondary_ip -> 127.0.9.12"]
    done = cluster.gnt("node", "list", "--no-headers", "-o", "name,sip")
    assert done.returncode == 0, done.stderr
    assert [line.split() for line in done.stdout.splitlines()] == \
        [["node1", "127.0.9.11"], ["node2", "127.0.9.12"], ["node3", "127.0.9.3"]]
