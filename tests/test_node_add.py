"""Our gnt-node add / remove (no SSH) on a three-node virtual cluster, checked with Debian's gnt-node list.

One cluster for the module: our gnt-cluster init on node1 (a short /tmp
root, 127.0.6.x addresses, cluster IP 127.0.6.100 on `lo`, removed in a
finally), then our `gnt-node add --node-root` for node2 and node3, each in
its own root under the same base directory. Every node daemon uses the same
legacy port (the roots' etc/services) on its own address. The tests run in
file order; the removal comes last. Every daemon is stopped by the pid of
its root's pid file at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from masterd.config.model import load
from noded import certs
from noded.paths import Paths
from tools.gnt import node_daemon

from cluster_support import (  # isort: skip
    CLUSTER, INIT_ARGS, OUR_GNT_CLUSTER, OUR_GNT_NODE, SBIN, ClusterRoots, alive, free_port, needs_cluster,
    remove_ip,
)

ADDRESSES = {"node1": "127.0.6.1", "node2": "127.0.6.2", "node3": "127.0.6.3", "node4": "127.0.6.4"}
CLUSTER_IP = "127.0.6.100"

pytestmark = needs_cluster


class Cluster(ClusterRoots):
    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, GANETI_ROOTDIR=str(self.root("node1")), GANETI_HOSTNAME="node1")
        env.pop("PYTHONPATH", None)
        return env

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=120)

    def serial(self) -> int:
        return load(str(self.data("node1") / "config.data")).serial_no

    def add(self, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run(OUR_GNT_NODE, "add", *extra, name)

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
    base = Path(tempfile.mkdtemp(prefix="gn", dir="/tmp"))
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
        for name in ("node2", "node3"):
            done = made.add(name, "--node-root", str(made.root(name)))
            assert done.returncode == 0, done.stderr
        yield made
    finally:
        try:
            made.stop_all()
        finally:
            remove_ip(CLUSTER_IP)
            shutil.rmtree(base, ignore_errors=True)


def test_real_gnt_node_list_shows_three_nodes(cluster: Cluster) -> None:
    done = cluster.run(f"{SBIN}/gnt-node", "list", "--no-headers", "-o", "name,pip,master_candidate")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows == [["node1", "127.0.6.1", "Y"], ["node2", "127.0.6.2", "Y"], ["node3", "127.0.6.3", "Y"]]


def test_new_candidates_certificates_are_in_the_config(cluster: Cluster) -> None:
    cfg = load(str(cluster.data("node1") / "config.data"))
    expected = {cfg.node_by_name(name).uuid: certs.fingerprint_file(str(cluster.data(name) / "client.pem"))
                for name in ("node1", "node2", "node3")}
    assert cfg.candidate_certs == expected


def test_config_data_reaches_the_new_candidate(cluster: Cluster) -> None:
    assert (cluster.data("node2") / "config.data").read_bytes() == \
        (cluster.data("node1") / "config.data").read_bytes()


def test_job_files_reach_the_new_candidate(cluster: Cluster) -> None:
    """The job that added node3 ran after node2 became a candidate: its file is replicated there."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        jobs = sorted(p.name for p in (cluster.data("node2") / "queue").glob("job-*"))
        if jobs:
            break
        time.sleep(0.1)
    assert jobs, "no job file on node2"
    master_job = cluster.data("node1") / "queue" / jobs[-1]
    assert (cluster.data("node2") / "queue" / jobs[-1]).read_bytes() == master_job.read_bytes()


def test_ssconf_files_match_on_all_nodes(cluster: Cluster) -> None:
    def ssconf(name: str) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in cluster.data(name).glob("ssconf_*")}

    master = ssconf("node1")
    assert master["ssconf_node_list"] == b"node1\nnode2\nnode3\n"
    assert ssconf("node2") == master and ssconf("node3") == master


def test_adding_a_member_again_is_refused_by_the_opcode(cluster: Cluster) -> None:
    before = cluster.serial()
    done = cluster.add("node2")
    assert done.returncode == 1
    assert "Node node2 is already in the configuration" in done.stderr
    assert cluster.serial() == before


def test_adding_a_member_again_with_node_root_prepares_nothing(cluster: Cluster) -> None:
    before, pid = cluster.serial(), cluster.pid_of("node2")
    done = cluster.add("node2", "--node-root", str(cluster.root("node2")))
    assert done.returncode == 1
    assert "Node node2 already in the cluster" in done.stderr
    assert cluster.serial() == before and cluster.pid_of("node2") == pid


def test_a_node_with_another_cluster_certificate_is_refused(cluster: Cluster) -> None:
    node = Paths(root=str(cluster.root("node4")), hostname="node4")
    os.makedirs(node.data_dir)
    shutil.copytree(cluster.root("node1") / "etc", cluster.root("node4") / "etc")
    for ssconf in cluster.data("node1").glob("ssconf_*"):
        shutil.copyfile(ssconf, Path(node.data_dir) / ssconf.name)
    certs.write_server_pem(node.server_cert)
    certs.write_client_pem(node.client_cert, node.server_cert, "node4")
    pid = node_daemon.start_noded(node, ADDRESSES["node4"], cluster.port, cluster.grpc_port)
    try:
        before = cluster.serial()
        done = cluster.add("node4")
        assert done.returncode == 1
        assert "Can't get version information from node node4" in done.stderr
        assert cluster.serial() == before
    finally:
        node_daemon.stop_pid(pid)


def test_a_name_that_does_not_resolve_is_refused(cluster: Cluster) -> None:
    before = cluster.serial()
    done = cluster.add("nosuchnode")
    assert done.returncode == 1
    assert "Can't resolve hostname 'nosuchnode'" in done.stderr
    assert cluster.serial() == before


def test_removing_the_master_is_refused(cluster: Cluster) -> None:
    done = cluster.run(OUR_GNT_NODE, "remove", "node1")
    assert done.returncode == 1
    assert "failover to another node is required" in done.stderr


def test_remove_node3_drops_it_and_stops_its_daemon(cluster: Cluster) -> None:
    pid = cluster.pid_of("node3")
    assert pid is not None and alive(pid)
    done = cluster.run(OUR_GNT_NODE, "remove", "node3")
    assert done.returncode == 0, done.stderr
    assert [node.name for node in load(str(cluster.data("node1") / "config.data")).nodes()] == \
        ["node1", "node2"]
    assert node_daemon.pid_gone(pid, 15.0)
    assert not (cluster.data("node3") / "config.data").exists()
    assert (cluster.data("node2") / "ssconf_node_list").read_text() == "node1\nnode2\n"
    assert "node3" not in (cluster.data("node1") / "node-grpc-ports").read_text().split()


def test_real_gnt_node_remove_drops_node2(cluster: Cluster) -> None:
    """Debian's gnt-node remove only submits OP_NODE_REMOVE: it works against our master as it is."""
    pid = cluster.pid_of("node2")
    assert pid is not None and alive(pid)
    done = cluster.run(f"{SBIN}/gnt-node", "remove", "node2")
    assert done.returncode == 0, done.stderr
    cfg = load(str(cluster.data("node1") / "config.data"))
    assert [node.name for node in cfg.nodes()] == ["node1"]
    assert list(cfg.candidate_certs) == [cfg.master_node_uuid]
    assert node_daemon.pid_gone(pid, 15.0)
