"""Our gnt-cluster masterfailover on a three-node virtual cluster whose master is down.

One cluster for the module: our gnt-cluster init on node1 (a short /tmp
root, 127.0.7.x addresses, cluster IP 127.0.7.100 on `lo`, removed in a
finally), our `gnt-node add --node-root` of node2 and node3 (both master
candidates), a few `gnt-debug delay` jobs; then node1's ganeti-masterd is
SIGKILLed and its node daemon stopped (the old master is down), and our
`gnt-cluster masterfailover` runs with node2's root and name (voting among
the reachable nodes). Debian's gnt-node list and gnt-job list then ask the
new master on node2. Every daemon is stopped by the pid of its root's pid
file at the end. The unit tests of the voting verdict need no cluster.
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
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from masterd.config.model import load
from tools.gnt import node_daemon
from tools.gnt.errors import GanetiError
from tools.gnt.failover import check_votes

from cluster_support import (  # isort: skip
    CLUSTER, INIT_ARGS, OUR_GNT_CLUSTER, OUR_GNT_NODE, SBIN, ClusterRoots, alive, free_port, needs_cluster,
    remove_ip,
)

ADDRESSES = {"node1": "127.0.7.1", "node2": "127.0.7.2", "node3": "127.0.7.3"}
CLUSTER_IP = "127.0.7.100"


@dataclass
class Cluster(ClusterRoots):
    jobs_before: list[str] = field(default_factory=list)
    failover: subprocess.CompletedProcess[str] | None = None
    old_masterd: int | None = None

    def env(self, name: str) -> dict[str, str]:
        env = dict(os.environ, GANETI_ROOTDIR=str(self.root(name)), GANETI_HOSTNAME=name)
        env.pop("PYTHONPATH", None)
        return env

    def run(self, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.env(name), capture_output=True, text=True, timeout=180)

    def job_ids(self, name: str) -> list[str]:
        done = self.run(name, f"{SBIN}/gnt-job", "list", "--no-headers", "-o", "id")
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

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


def build(made: Cluster) -> None:
    etc = made.root("node1") / "etc"
    etc.mkdir(parents=True)
    hosts = "".join(f"{ip} {name}\n" for name, ip in ADDRESSES.items())
    (etc / "hosts").write_text(f"{hosts}{CLUSTER_IP} {CLUSTER}\n")
    (etc / "services").write_text(f"ganeti-noded {made.port}/tcp\n")
    done = made.run("node1", OUR_GNT_CLUSTER, "init", *INIT_ARGS, "--noded-grpc-port", str(made.grpc_port),
                    CLUSTER)
    assert done.returncode == 0, done.stderr
    for name in ("node2", "node3"):
        done = made.run("node1", OUR_GNT_NODE, "add", "--node-root", str(made.root(name)), name)
        assert done.returncode == 0, done.stderr
    for _ in range(2):
        done = made.run("node1", f"{SBIN}/gnt-debug", "delay", "0.1")
        assert done.returncode == 0, done.stderr
    made.jobs_before = made.job_ids("node1")
    wanted = {f"job-{job}" for job in made.jobs_before}
    deadline = time.monotonic() + 15
    while not wanted <= {p.name for p in (made.data("node2") / "queue").glob("job-*")}:
        assert time.monotonic() < deadline, "the job files did not reach node2"
        time.sleep(0.1)
    made.old_masterd = made.pid_of("node1", "ganeti-masterd")
    assert made.old_masterd is not None
    os.kill(made.old_masterd, signal.SIGKILL)
    assert node_daemon.pid_gone(made.old_masterd, 10.0)
    noded = made.pid_of("node1")
    assert noded is not None
    node_daemon.stop_pid(noded)
    made.failover = made.run("node2", OUR_GNT_CLUSTER, "masterfailover", "--noded-grpc-port",
                             str(made.grpc_port), "--master-grpc-port", "0")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="gf", dir="/tmp"))
    made = Cluster(base, free_port(ADDRESSES["node1"]), free_port(ADDRESSES["node1"]))
    try:
        build(made)
        yield made
    finally:
        try:
            made.stop_all()
        finally:
            remove_ip(CLUSTER_IP)
            shutil.rmtree(base, ignore_errors=True)


@needs_cluster
def test_failover_with_the_old_master_down_succeeds(cluster: Cluster) -> None:
    assert cluster.failover is not None
    assert cluster.failover.returncode == 0, cluster.failover.stderr
    pid = cluster.pid_of("node2", "ganeti-masterd")
    assert pid is not None and alive(pid)


@needs_cluster
def test_failover_warns_that_the_old_master_could_not_be_disabled(cluster: Cluster) -> None:
    assert cluster.failover is not None
    assert "Could not disable the master role on the old master node1" in cluster.failover.stderr


@needs_cluster
def test_cluster_ip_is_up_after_the_failover(cluster: Cluster) -> None:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "lo"], capture_output=True, text=True).stdout
    assert CLUSTER_IP in {line.split()[3].split("/")[0] for line in out.splitlines()}


@needs_cluster
def test_config_names_node2_the_master_on_the_candidates(cluster: Cluster) -> None:
    for name in ("node2", "node3"):
        cfg = load(str(cluster.data(name) / "config.data"))
        assert cfg.master_node.name == "node2"


@needs_cluster
def test_ssconf_master_node_is_node2_on_the_reachable_nodes(cluster: Cluster) -> None:
    for name in ("node2", "node3"):
        assert (cluster.data(name) / "ssconf_master_node").read_text() == "node2\n"


@needs_cluster
def test_real_gnt_node_list_on_the_new_master_shows_every_node(cluster: Cluster) -> None:
    done = cluster.run("node2", f"{SBIN}/gnt-node", "list", "--no-headers", "-o", "name,master")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows == [["node1", "N"], ["node2", "Y"], ["node3", "N"]]


@needs_cluster
def test_real_gnt_job_list_on_the_new_master_shows_every_earlier_job(cluster: Cluster) -> None:
    assert len(cluster.jobs_before) >= 4
    assert set(cluster.jobs_before) <= set(cluster.job_ids("node2"))


@needs_cluster
def test_failover_on_the_master_itself_is_refused(cluster: Cluster) -> None:
    done = cluster.run("node2", OUR_GNT_CLUSTER, "masterfailover")
    assert done.returncode != 0
    assert "node2 is already the master" in done.stderr


@needs_cluster
def test_no_voting_without_yes_do_it_and_no_terminal_does_nothing(cluster: Cluster) -> None:
    before = load(str(cluster.data("node3") / "config.data")).serial_no
    done = subprocess.run([OUR_GNT_CLUSTER, "masterfailover", "--no-voting"], env=cluster.env("node3"),
                          capture_output=True, text=True, timeout=60, start_new_session=True)
    assert done.returncode == 1
    assert load(str(cluster.data("node3") / "config.data")).serial_no == before


@needs_cluster
def test_no_voting_failover_to_node3_stops_the_reachable_old_master(cluster: Cluster) -> None:
    old = cluster.pid_of("node2", "ganeti-masterd")
    assert old is not None and alive(old)
    done = cluster.run("node3", OUR_GNT_CLUSTER, "masterfailover", "--no-voting", "--yes-do-it",
                       "--noded-grpc-port", str(cluster.grpc_port), "--master-grpc-port", "0")
    assert done.returncode == 0, done.stderr
    assert node_daemon.pid_gone(old, 15.0)
    new = cluster.pid_of("node3", "ganeti-masterd")
    assert new is not None and alive(new)
    for name in ("node2", "node3"):
        assert (cluster.data(name) / "ssconf_master_node").read_text() == "node3\n"
    # Only the jobs that ran once node3 existed were replicated to it (job 1 added node2 before).
    replicated = {p.name.removeprefix("job-") for p in (cluster.data("node3") / "queue").glob("job-*")}
    assert set(cluster.jobs_before[-2:]) <= replicated <= set(cluster.job_ids("node3"))


def test_votes_naming_the_configured_master_pass() -> None:
    check_votes({"node1": None, "node2": "node1", "node3": "node1"}, "node1")


def test_votes_mostly_missing_are_refused() -> None:
    with pytest.raises(GanetiError, match="most nodes did not respond"):
        check_votes({"node1": None, "node2": None, "node3": "node1"}, "node1")


def test_votes_naming_another_master_are_refused() -> None:
    with pytest.raises(GanetiError, match="I believe the master is node1 but the other nodes voted node3"):
        check_votes({"node1": "node3", "node2": "node3", "node3": "node3"}, "node1")
