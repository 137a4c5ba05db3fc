"""The master's start-up voting (ganeti-masterd(8) STARTUP): half plus one of the nodes must name it.

First Ganeti's rule on its own (masterd.voting.decide, verify_master's
rounds). Then a real cluster: three of our node daemons, node1 on
127.0.0.2, node2 on 127.0.0.3 and node3 on 127.0.0.4, sharing the cluster
certificate and accepting the master's client certificate (node1's), each
answering master_node_name from its own root's ssconf_master_node; our
ganeti-masterd started on node1's root learns their gRPC ports from
$DATA_DIR/node-grpc-ports. Each test writes the nodes' ssconf_master_node it
needs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import NodeRoot, RunningNoded, free_port, make_root, start_noded

from masterd.rpc import NodeRpcClient
from masterd.voting import Outcome, decide, gather_votes, verify_master

MASTERD = str(Path(sys.executable).parent / "ganeti-masterd")
NODES = {"node1": "127.0.0.2", "node2": "127.0.0.3", "node3": "127.0.0.4"}


# -- Ganeti's rule -------------------------------------------------------------------------------

def test_a_strict_majority_wins() -> None:
    result = decide([("node1", "node1"), ("node2", "node1"), ("node3", "node2")], "node1")
    assert result.outcome is Outcome.WON and result.won
    assert (result.in_favour, result.voters) == (2, 3)


def test_every_node_naming_another_master_loses_with_ganetis_message() -> None:
    result = decide([("node1", "node1"), ("node2", "node2"), ("node3", "node2")], "node1")
    assert result.outcome is Outcome.LOST and not result.won
    assert result.message == 'Voting cannot be won by node1, valid votes of 3 are [(1,"node1"),(2,"node2")]'


def test_a_tie_is_not_a_majority() -> None:
    votes = [("node1", "node1"), ("node2", "node1"), ("node3", "node3"), ("node4", "node3")]
    assert decide(votes, "node1").outcome is Outcome.LOST


def test_a_tie_with_answers_missing_is_not_final() -> None:
    votes = [("node1", "node1"), ("node2", "node1"), ("node3", None), ("node4", None)]
    result = decide(votes, "node1")
    assert result.outcome is Outcome.UNDECIDED
    assert result.missing == ("node3", "node4")


def test_unreachable_nodes_do_not_stop_a_majority() -> None:
    votes = [("node1", "node1"), ("node2", "node1"), ("node3", "node1"), ("node4", None), ("node5", None)]
    assert decide(votes, "node1").won


def test_unreachable_nodes_that_could_not_change_the_result_make_it_lost() -> None:
    votes = [("node1", "node2"), ("node2", "node2"), ("node3", "node2"), ("node4", None), ("node5", "node1")]
    result = decide(votes, "node1")
    assert result.outcome is Outcome.LOST
    assert result.message.endswith('valid votes of 5 are [(1,"node1"),(3,"node2")]')


def test_all_nodes_offline_is_not_final() -> None:
    result = decide([("node1", None), ("node2", None), ("node3", None)], "node1")
    assert result.outcome is Outcome.UNDECIDED and result.in_favour == 0


def test_two_nodes_need_both_votes() -> None:
    assert decide([("node1", "node1"), ("node2", "node1")], "node1").won
    assert decide([("node1", "node1"), ("node2", None)], "node1").outcome is Outcome.UNDECIDED


def test_an_empty_answer_is_a_vote_for_nobody() -> None:
    result = decide([("node1", "node1"), ("node2", ""), ("node3", "")], "node1")
    assert result.outcome is Outcome.LOST


class Asker:
    """Answers master_node_name from a table per round (the voting's only need of the RPC client)."""

    def __init__(self, rounds: list[dict[str, str | None]]) -> None:
        self.rounds = rounds
        self.asked: list[list[str]] = []

    async def master_node_name(self, nodes: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        self.asked.append(list(nodes))
        table = self.rounds[min(len(self.asked), len(self.rounds)) - 1]
        return {n: (table[n], None) if table.get(n) is not None else (None, "UNAVAILABLE: down")
                for n in nodes}


def vote(asker: Asker, nodes: list[str], retries: int = 6) -> tuple[Outcome, str, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
    result = asyncio.run(verify_master(nodes, asker, "node1", retries=retries, interval=10.0, sleep=sleep))
    return result.outcome, result.message, slept


def test_a_single_node_cluster_wins_without_asking() -> None:
    asker = Asker([{}])
    outcome, message, _ = vote(asker, ["node1"])
    assert outcome is Outcome.WON and asker.asked == []
    assert "single-node cluster" in message


def test_a_voting_not_final_is_asked_again_until_the_missing_nodes_answer() -> None:
    asker = Asker([{"node1": "node1"}, {"node1": "node1"}, {"node1": "node1", "node2": "node1"}])
    outcome, _, slept = vote(asker, ["node1", "node2", "node3"])
    assert outcome is Outcome.WON and slept == [10.0, 10.0] and len(asker.asked) == 3


def test_a_voting_never_final_gives_up_after_the_retries() -> None:
    asker = Asker([{"node1": "node1"}])
    outcome, message, slept = vote(asker, ["node1", "node2", "node3"], retries=2)
    assert outcome is Outcome.UNDECIDED and len(asker.asked) == 3 and slept == [10.0, 10.0]
    assert message.startswith("Couldn't gather voting results of enough nodes")


def test_a_lost_voting_is_not_asked_again() -> None:
    asker = Asker([{"node1": "node1", "node2": "node2", "node3": "node2"}])
    outcome, _, slept = vote(asker, ["node1", "node2", "node3"])
    assert outcome is Outcome.LOST and slept == [] and len(asker.asked) == 1


# -- a real cluster: three node daemons, our ganeti-masterd on node1 ------------------------------

@dataclass
class Cluster:
    roots: dict[str, NodeRoot]
    nodeds: dict[str, RunningNoded]

    @property
    def master(self) -> NodeRoot:
        return self.roots["node1"]

    @property
    def pid_file(self) -> Path:
        return Path(self.master.paths.run_dir) / "ganeti-masterd.pid"

    @property
    def log_file(self) -> Path:
        return Path(self.master.paths.log_dir) / "master-daemon.log"

    def name_master(self, **masters: str) -> None:
        """Write each node's ssconf_master_node (node1's is the master's own and stays node1)."""
        for node, master in masters.items():
            Path(self.roots[node].paths.ssconf_file("master_node")).write_text(master + "\n")

    def write_ports(self, **override: int) -> None:
        ports = {name: noded.grpc_port for name, noded in self.nodeds.items()} | override
        Path(self.master.paths.data_dir, "node-grpc-ports").write_text(
            "".join(f"{name} {port}\n" for name, port in ports.items()))

    @property
    def env(self) -> dict[str, str]:
        env = self.master.env
        env.pop("PYTHONPATH", None)
        return env

    def run_masterd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Start our ganeti-masterd (detached, gRPC door closed) with no terminal: stdin is /dev/null."""
        return subprocess.run([MASTERD, "--grpc-port", "0", *args], env=self.env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)

    def stop_masterd(self) -> None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while self.pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("voting")
    master = make_root(base, "node1")
    roots = {"node1": master}
    roots.update({name: make_root(base, name, cluster_pem=master.server_pem) for name in NODES
                  if name != "node1"})
    for root in roots.values():
        root.write_candidate_map(master.client_fp)
        for key, value in {"master_node": "node1", "cluster_name": "cluster.example.com",
                           "node_list": "\n".join(NODES),
                           "node_primary_ips": "\n".join(f"{n} {a}" for n, a in NODES.items())}.items():
            Path(root.paths.ssconf_file(key)).write_text(value + "\n")
    nodeds: dict[str, RunningNoded] = {}
    c = Cluster(roots, nodeds)
    try:
        for name, address in NODES.items():
            nodeds[name] = start_noded(roots[name], address)
        yield c
    finally:
        c.stop_masterd()
        for noded in nodeds.values():
            noded.stop()


@pytest.fixture
def fresh(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with every node naming node1 and every node reachable; the master stopped after."""
    cluster.name_master(node2="node1", node3="node1")
    cluster.write_ports()
    if cluster.log_file.exists():
        cluster.log_file.write_text("")
    try:
        yield cluster
    finally:
        cluster.stop_masterd()


def test_gather_votes_asks_every_node_over_its_grpc_door(fresh: Cluster) -> None:
    fresh.name_master(node3="node2")
    fresh.write_ports(node2=free_port("127.0.0.3"))

    async def ask() -> list[tuple[str, str | None]]:
        rpc = NodeRpcClient(fresh.master.paths)
        try:
            return await gather_votes(list(NODES), rpc)
        finally:
            await rpc.close()
    assert asyncio.run(ask()) == [("node1", "node1"), ("node2", None), ("node3", "node2")]


def test_the_master_starts_when_all_nodes_name_it(fresh: Cluster) -> None:
    done = fresh.run_masterd()
    assert done.returncode == 0, done.stderr
    assert fresh.pid_file.exists()
    assert "node1 won the master voting: 3 of 3 nodes name it" in fresh.log_file.read_text()


def test_the_master_starts_when_a_majority_names_it(fresh: Cluster) -> None:
    fresh.name_master(node3="node2")
    done = fresh.run_masterd()
    assert done.returncode == 0, done.stderr


def test_the_master_refuses_to_start_when_the_majority_names_another_node(fresh: Cluster) -> None:
    fresh.name_master(node2="node2", node3="node2")
    done = fresh.run_masterd()
    assert done.returncode == 1
    assert ('Failed to verify master status: Voting cannot be won by node1, valid votes of 3 are'
            ' [(1,"node1"),(2,"node2")]') in done.stderr
    assert "start ganeti-masterd on that node" in done.stderr
    assert not fresh.pid_file.exists()


def test_the_master_refuses_to_start_when_too_few_nodes_answer_after_the_retries(fresh: Cluster) -> None:
    fresh.write_ports(node2=free_port("127.0.0.3"), node3=free_port("127.0.0.4"))
    started = time.monotonic()
    done = fresh.run_masterd("--voting-retries", "2", "--voting-interval", "0.2")
    assert done.returncode == 1
    assert "Failed to verify master status: Couldn't gather voting results of enough nodes" in done.stderr
    assert "no answer from node2, node3" in done.stderr and "after 3 rounds" in done.stderr
    assert time.monotonic() - started >= 0.4
    assert not fresh.pid_file.exists()


def test_no_voting_with_yes_do_it_starts_despite_the_majority(fresh: Cluster) -> None:
    fresh.name_master(node2="node2", node3="node2")
    done = fresh.run_masterd("--no-voting", "--yes-do-it")
    assert done.returncode == 0, done.stderr
    assert fresh.pid_file.exists()
    assert "started with --no-voting" in fresh.log_file.read_text()


def test_no_voting_without_yes_do_it_and_no_terminal_refuses(fresh: Cluster) -> None:
    fresh.name_master(node2="node2", node3="node2")
    done = fresh.run_masterd("--no-voting")
    assert done.returncode == 1
    assert "please confirm by typing uppercase 'yes'" in done.stdout and "Aborting." in done.stderr
    assert not fresh.pid_file.exists()


def test_sigterm_during_the_voting_stops_the_start(fresh: Cluster) -> None:
    fresh.write_ports(node2=free_port("127.0.0.3"), node3=free_port("127.0.0.4"))
    proc = subprocess.Popen([MASTERD, "--grpc-port", "0", "--voting-interval", "30"], env=fresh.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 20
        while "master voting: Voting not final" not in (fresh.log_file.read_text()
                                                         if fresh.log_file.exists() else ""):
            assert time.monotonic() < deadline, "the master never started voting"
            time.sleep(0.05)
        os.kill(int(fresh.pid_file.read_text().strip()), signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "stopped by a signal during the master voting" in stderr
    assert not fresh.pid_file.exists()
