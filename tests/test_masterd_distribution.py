"""Configuration distribution: config.data to the master candidates, ssconf to every online node.

The cluster: master node1 (this process, masterd.distribution with its own
root and client certificate), candidates node2 (127.0.0.2) and node3
(127.0.0.3), regular node node4 (127.0.0.4): each our ganeti-noded on its
own root with the shared cluster certificate, accepting the master's client
certificate. The master's NodeRpcClient gets their addresses and gRPC ports
as overrides.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import NodeRoot, RunningNoded, free_port, make_root, start_noded

from masterd.distribution import ConfigDistributor, DistributionReport, config_owner
from masterd.rpc import NodeRpcClient
from noded.paths import Paths

CANDIDATES = ("node2", "node3")
REGULAR = ("node4",)
ADDRESSES = {"node2": "127.0.0.2", "node3": "127.0.0.3", "node4": "127.0.0.4"}
SSCONF = {
    "cluster_name": ["cluster.example.com"],
    "master_node": ["node1"],
    "master_candidates": ["node1", "node2", "node3"],
    "node_list": ["node1", "node2", "node3", "node4"],
    "online_nodes": ["node1", "node2", "node3", "node4"],
}


@dataclass
class Node:
    name: str
    offline: bool = False


@dataclass
class Cluster:
    master: NodeRoot
    nodes: dict[str, RunningNoded]

    @property
    def paths(self) -> Paths:
        return self.master.paths

    def client(self, extra_addresses: dict[str, str] | None = None,
               extra_ports: dict[str, int] | None = None) -> NodeRpcClient:
        addresses = {"node1": "127.0.0.1", **ADDRESSES, **(extra_addresses or {})}
        ports = {name: noded.grpc_port for name, noded in self.nodes.items()}
        ports["node1"] = free_port("127.0.0.1")  # nothing listens: the master has no node daemon here
        return NodeRpcClient(self.paths, addresses=addresses, ports={**ports, **(extra_ports or {})})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("dist")
    master = make_root(base, "node1")
    started: dict[str, RunningNoded] = {}
    try:
        for name, address in ADDRESSES.items():
            node = make_root(base, name, cluster_pem=master.server_pem)
            node.write_candidate_map(master.client_fp)
            started[name] = start_noded(node, address)
        yield Cluster(master, started)
    finally:
        for noded in started.values():
            noded.stop()


def nodes(*names: str) -> list[Node]:
    return [Node(name) for name in names]


def distribute(cluster: Cluster, data: bytes, ssconf: dict[str, list[str]], candidates: list[Node],
               online: list[Node], full: bool = False, distributor: ConfigDistributor | None = None,
               client: NodeRpcClient | None = None, timeout: float = 60.0) -> DistributionReport:
    """One distribution in its own event loop (a kept `distributor` gets a fresh client each time)."""
    async def run() -> DistributionReport:
        rpc = client or cluster.client()
        dist = distributor or ConfigDistributor(cluster.paths, rpc, timeout=timeout)
        dist.rpc = rpc
        try:
            return await dist.distribute(data, ssconf, candidates, online, full=full)
        finally:
            await rpc.close()
    return asyncio.run(run())


def all_nodes() -> tuple[list[Node], list[Node]]:
    return nodes(*CANDIDATES), nodes(*CANDIDATES, *REGULAR)


def config_of(cluster: Cluster, name: str) -> Path:
    return Path(cluster.nodes[name].paths.config_file)


def ssconf_of(cluster: Cluster, name: str, key: str) -> Path:
    return Path(cluster.nodes[name].paths.ssconf_file(key))


def unique_config(tag: str) -> bytes:
    return (f'{{"serial_no": 7, "tag": "{tag}", "instances": {{}}, "pad": "' + "x" * 5000 + '"}').encode()


def test_config_data_reaches_the_candidates_byte_identical(cluster: Cluster) -> None:
    data = unique_config("identical") + os.urandom(3000)  # incompressible tail: the bytes must survive
    candidates, online = all_nodes()
    report = distribute(cluster, data, SSCONF, candidates, online)
    assert report.ok, report.failures
    assert sorted(report.config_nodes) == sorted(CANDIDATES)
    for name in CANDIDATES:
        assert config_of(cluster, name).read_bytes() == data


def test_config_data_is_not_sent_to_regular_nodes(cluster: Cluster) -> None:
    candidates, online = all_nodes()
    report = distribute(cluster, unique_config("regular"), SSCONF, candidates, online)
    assert report.ok, report.failures
    assert not config_of(cluster, "node4").exists()


def test_config_data_has_ganeti_mode_owner_and_the_distribution_time(cluster: Cluster) -> None:
    candidates, online = all_nodes()
    before = time.time()
    report = distribute(cluster, unique_config("mode"), SSCONF, candidates, online)
    assert report.ok, report.failures
    st = config_of(cluster, "node2").stat()
    assert st.st_mode & 0o7777 == 0o640
    user, group = config_owner()
    assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name) == (user, group)
    assert before - 1 <= st.st_mtime <= time.time() + 1


def test_ssconf_files_on_every_online_node_match_what_was_sent(cluster: Cluster) -> None:
    candidates, online = all_nodes()
    ssconf = {**SSCONF, "cluster_tags": ["a", "b"], "release_version": ["3.0.2"], "offline_nodes": []}
    report = distribute(cluster, unique_config("ssconf"), ssconf, candidates, online, full=True)
    assert report.ok, report.failures
    for name in (*CANDIDATES, *REGULAR):
        for key, lines in ssconf.items():
            assert ssconf_of(cluster, name, key).read_text() == "".join(line + "\n" for line in lines)


def test_unchanged_ssconf_is_not_resent_unless_full(cluster: Cluster) -> None:
    candidates, online = all_nodes()
    distributor = ConfigDistributor(cluster.paths, cluster.client())
    first = distribute(cluster, unique_config("cache1"), SSCONF, candidates, online, distributor=distributor)
    assert first.ok and set(first.ssconf_nodes) == {"node2", "node3", "node4"}
    tampered = ssconf_of(cluster, "node4", "cluster_name")
    os.chmod(tampered, 0o644)
    tampered.write_text("tampered\n")  # if the value were resent, the node would rewrite the file
    second = distribute(cluster, unique_config("cache2"), SSCONF, candidates, online, distributor=distributor)
    assert second.ok and sorted(second.ssconf_unchanged) == ["node2", "node3", "node4"]
    assert tampered.read_text() == "tampered\n"
    assert sorted(second.config_nodes) == sorted(CANDIDATES)  # config.data itself always goes
    full = distribute(cluster, unique_config("cache3"), SSCONF, candidates, online, full=True,
                      distributor=distributor)
    assert full.ok and full.ssconf_nodes == {"node2": len(SSCONF), "node3": len(SSCONF), "node4": len(SSCONF)}
    assert tampered.read_text() == "cluster.example.com\n"


def test_only_the_changed_ssconf_key_is_sent(cluster: Cluster) -> None:
    candidates, online = all_nodes()
    distributor = ConfigDistributor(cluster.paths, cluster.client())
    dist = distributor
    distribute(cluster, unique_config("delta1"), SSCONF, candidates, online, full=True, distributor=dist)
    changed = {**SSCONF, "cluster_name": ["renamed.example.com"]}
    report = distribute(cluster, unique_config("delta2"), changed, candidates, online, distributor=dist)
    assert report.ok and report.ssconf_nodes == {"node2": 1, "node3": 1, "node4": 1}
    assert ssconf_of(cluster, "node3", "cluster_name").read_text() == "renamed.example.com\n"


class BlackHole:
    """A TCP listener that accepts connections and never answers: a call to it would hang."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_an_offline_node_is_never_contacted_nor_waited_for(cluster: Cluster) -> None:
    hole = BlackHole("127.0.0.5")  # where the offline node5's stopped daemon used to listen
    try:
        client = cluster.client({"node5": "127.0.0.5"}, {"node5": hole.port})
        candidates = [*nodes(*CANDIDATES), Node("node5", offline=True)]
        online = [*nodes(*CANDIDATES, *REGULAR), Node("node5", offline=True)]
        start = time.monotonic()
        report = distribute(cluster, unique_config("offline"), SSCONF, candidates, online, full=True,
                            client=client, timeout=10.0)
        elapsed = time.monotonic() - start
    finally:
        hole.close()
    assert report.ok, report.failures
    assert report.offline == ["node5"]
    assert hole.accepted == 0
    assert elapsed < 3.0, f"the distribution took {elapsed:.1f} s"
    assert sorted(report.config_nodes) == sorted(CANDIDATES)


def test_a_failing_node_is_reported_and_the_others_still_get_the_data(cluster: Cluster) -> None:
    dead_port = free_port("127.0.0.6")  # node6 is online in the configuration but its daemon is down
    client = cluster.client({"node6": "127.0.0.6"}, {"node6": dead_port})
    candidates = nodes(*CANDIDATES, "node6")
    online = nodes(*CANDIDATES, *REGULAR, "node6")
    data = unique_config("failing")
    ssconf = {**SSCONF, "cluster_name": ["failing.example.com"]}
    report = distribute(cluster, data, ssconf, candidates, online, full=True, client=client)
    assert set(report.failures) == {"node6"}
    assert [m.split(":")[0] for m in report.failures["node6"]] == ["config.data", "ssconf"]
    assert sorted(report.config_nodes) == sorted(CANDIDATES)
    for name in CANDIDATES:
        assert config_of(cluster, name).read_bytes() == data
    for name in (*CANDIDATES, *REGULAR):
        assert ssconf_of(cluster, name, "cluster_name").read_text() == "failing.example.com\n"


def test_the_master_gets_ssconf_but_no_config_upload(cluster: Cluster) -> None:
    # node1 is the master: it wrote its own config.data. Its node daemon is not running here,
    # so the one call it gets (ssconf) fails, and shows that no upload was tried.
    candidates = nodes("node1", *CANDIDATES)
    online = nodes("node1", *CANDIDATES, *REGULAR)
    report = distribute(cluster, unique_config("self"), SSCONF, candidates, online, full=True)
    assert [m.split(":")[0] for m in report.failures["node1"]] == ["ssconf"]
    assert sorted(report.config_nodes) == sorted(CANDIDATES)
