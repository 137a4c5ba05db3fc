"""The master owns config.data: node, group and cluster queries from it, and gnt-cluster redist-conf.

A real cluster: three of our node daemons (node1 on 127.0.0.2, node2 on
127.0.0.3, node3 on 127.0.0.4) sharing the cluster certificate, and a
config.data built by masterd.config.model.new_config for node1 plus node2
(a master candidate) and node3 (a regular node), with the master's and
node2's client certificates as candidate certificates. Our ganeti-masterd
runs on node1 (gRPC ports of the node daemons from node-grpc-ports), and
Debian's real gnt-node, gnt-group and gnt-cluster talk to it. The nodes
start with only the ssconf files the voting and the CLI need; the rest is
written by redist-conf.

The last tests mark node3 offline in the configuration and replace its
daemon by a silent listener (accepts connections, never answers): a master
that contacted it would hang on it, and the listener counts every
connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from config_support import SAMPLES
from support import NodeRoot, RunningNoded, make_root, start_noded

from masterd.config.model import ConfigData, load, new_config
from masterd.config.ssconf import file_contents, ssconf_values
from masterd.confmgr import ConfigManager, ConfigUnavailableError
from masterd.distribution import DistributionReport, NodeRef
from masterd.query.config_query import classic_from_config, query_from_config
from masterd.query.errors import OpPrereqError
from masterd.query.fields import RS_NODATA, RS_NORMAL, RS_OFFLINE, RS_UNAVAIL
from masterd.rpc import NodeRpcClient
from noded.paths import Paths

SBIN = "/usr/sbin"
MASTERD = str(Path(sys.executable).parent / "ganeti-masterd")
NODES = {"node1": "127.0.0.2", "node2": "127.0.0.3", "node3": "127.0.0.4"}
#: Seconds a command may take when no node makes it wait (the real CLI starts in about one).
QUICK = 10.0

pytestmark = pytest.mark.skipif(not os.path.exists(f"{SBIN}/gnt-node") or not os.path.exists(MASTERD),
                                reason="needs Debian's ganeti package and our ganeti-masterd console script")


class SilentListener:
    """A TCP port that accepts connections and never answers; counts them."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        for conn in self._held:
            conn.close()
        self.sock.close()


@dataclass
class Cluster:
    roots: dict[str, NodeRoot]
    nodeds: dict[str, RunningNoded] = field(default_factory=dict)

    @property
    def master(self) -> NodeRoot:
        return self.roots["node1"]

    @property
    def pid_file(self) -> Path:
        return Path(self.master.paths.run_dir) / "ganeti-masterd.pid"

    @property
    def config_file(self) -> Path:
        return Path(self.master.paths.config_file)

    @property
    def env(self) -> dict[str, str]:
        env = self.master.env
        env.pop("PYTHONPATH", None)
        return env

    def write_ports(self, **override: int) -> None:
        ports = {name: noded.grpc_port for name, noded in self.nodeds.items()} | override
        Path(self.master.paths.data_dir, "node-grpc-ports").write_text(
            "".join(f"{name} {port}\n" for name, port in ports.items()))

    def start_masterd(self, *args: str) -> None:
        done = subprocess.run([MASTERD, "--grpc-port", "0", *args], env=self.env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr

    def stop_masterd(self) -> None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while self.pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def gnt(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([f"{SBIN}/gnt-{tool}", *args], env=self.env, capture_output=True, text=True,
                              timeout=120)

    def timed(self, tool: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        done = self.gnt(tool, *args)
        return done, time.monotonic() - started


def build_config(master: NodeRoot, candidate: NodeRoot) -> ConfigData:
    cfg = new_config(cluster_name="cluster.example.com", master_name="node1", master_ip=NODES["node1"],
                     cluster_ip="127.0.0.100", master_netdev="lo", enabled_hypervisors=["fake"])
    cfg.add_node("node2", NODES["node2"], master_candidate=True)
    cfg.add_node("node3", NODES["node3"])
    cfg.set_candidate_cert(cfg.master_node_uuid, master.client_fp)
    cfg.set_candidate_cert(cfg.node_by_name("node2").uuid, candidate.client_fp)
    return cfg


# -- in process: the manager and the queries over a configuration ----------------------------------

class RecordingDistributor:
    """Stands in for ConfigDistributor: records what it is asked to send, contacts nobody."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, list[str], list[str], bool]] = []

    async def distribute(self, config_data: bytes, ssconf: object, candidates: list[NodeRef],
                         online_nodes: list[NodeRef], full: bool = False) -> DistributionReport:
        self.calls.append((config_data, [n.name for n in candidates], [n.name for n in online_nodes], full))
        return DistributionReport()


def manager_for(tmp_path: Path, cfg: ConfigData | None) -> tuple[ConfigManager, RecordingDistributor]:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    paths.ensure_dirs()
    if cfg is not None:
        Path(paths.config_file).write_text(cfg.dumps())
    distributor = RecordingDistributor()
    manager = ConfigManager(paths, NodeRpcClient(paths), distributor)  # type: ignore[arg-type]
    manager.load()
    return manager, distributor


def plain_config() -> ConfigData:
    cfg = new_config(cluster_name="cluster.example.com", master_name="node1", master_ip=NODES["node1"],
                     cluster_ip="127.0.0.100", master_netdev="lo", enabled_hypervisors=["fake"])
    cfg.add_node("node2", NODES["node2"], master_candidate=True)
    node3 = cfg.add_node("node3", NODES["node3"])
    cfg.set_node_flags(node3.uuid, offline=True)
    return cfg


def test_a_change_is_written_with_a_higher_serial_then_sent_to_online_nodes_only(tmp_path: Path) -> None:
    manager, distributor = manager_for(tmp_path, plain_config())
    before = manager.current.serial_no

    async def change() -> None:
        async with manager.change() as cfg:
            cfg.tree["cluster"]["tags"] = ["changed"]
    asyncio.run(change())
    on_disk = Path(manager.paths.config_file).read_bytes()
    assert ConfigData.from_json(on_disk).serial_no == manager.current.serial_no == before + 1
    assert manager.current.cluster["tags"] == ["changed"]
    assert distributor.calls == [(on_disk, ["node1", "node2"], ["node1", "node2"], False)]  # never node3


def test_a_change_that_raises_is_neither_written_nor_sent(tmp_path: Path) -> None:
    manager, distributor = manager_for(tmp_path, plain_config())
    on_disk = Path(manager.paths.config_file).read_bytes()

    async def change() -> None:
        async with manager.change() as cfg:
            cfg.tree["cluster"]["tags"] = ["lost"]
            raise ValueError("the opcode failed")
    with pytest.raises(ValueError):
        asyncio.run(change())
    assert Path(manager.paths.config_file).read_bytes() == on_disk
    assert manager.current.cluster["tags"] == [] and distributor.calls == []


class SlowDistributor(RecordingDistributor):
    """A distribution that takes a while, as sending config.data to candidates does."""

    async def distribute(self, config_data: bytes, ssconf: object, candidates: list[NodeRef],
                         online_nodes: list[NodeRef], full: bool = False) -> DistributionReport:
        await asyncio.sleep(0.2)
        return await super().distribute(config_data, ssconf, candidates, online_nodes, full)


def test_changes_made_during_a_distribution_go_out_together_each_waiting_for_its_own(tmp_path: Path) -> None:
    manager, _ = manager_for(tmp_path, plain_config())
    distributor = SlowDistributor()
    manager.distributor = distributor  # type: ignore[assignment]
    start = manager.current.serial_no
    sent_when_done: list[int] = []

    async def change(i: int, full: bool) -> None:
        async with manager.change(full=full) as cfg:
            cfg.tree["cluster"]["tags"] = [*cfg.tree["cluster"]["tags"], f"t{i}"]
            mine = cfg.serial_no + 1
        # returning means the nodes have this change: the last distribution holds its serial or a newer one
        sent = ConfigData.from_json(distributor.calls[-1][0]).serial_no
        assert sent >= mine
        sent_when_done.append(sent)

    async def many() -> None:
        await asyncio.gather(*(change(i, full=(i == 3)) for i in range(6)))
    asyncio.run(many())
    assert manager.current.serial_no == start + 6
    assert sorted(manager.current.cluster["tags"]) == [f"t{i}" for i in range(6)]
    # the first change goes alone; the five made meanwhile share the second distribution
    assert len(distributor.calls) == 2
    assert ConfigData.from_json(distributor.calls[-1][0]).serial_no == start + 6
    assert distributor.calls[-1][3] is True  # a full distribution asked for by one of them is kept


def test_without_config_data_the_manager_refuses_changes(tmp_path: Path) -> None:
    manager, _ = manager_for(tmp_path, None)
    assert not manager.present

    async def change() -> None:
        async with manager.change():
            pass
    with pytest.raises(ConfigUnavailableError, match="gnt-cluster init"):
        asyncio.run(change())


def test_named_nodes_come_in_the_order_asked_and_unknown_names_are_refused() -> None:
    cfg = plain_config()
    rows = asyncio.run(classic_from_config("node", cfg, None, ["node3", "node1"], ["name", "role"]))
    assert rows == [["node3", "O"], ["node1", "M"]]
    with pytest.raises(OpPrereqError, match="Node name nosuch not found"):
        asyncio.run(classic_from_config("node", cfg, None, ["nosuch"], ["name"]))


def test_live_fields_are_offline_for_offline_nodes_and_nodata_without_an_answer() -> None:
    answer = asyncio.run(query_from_config("node", plain_config(), None, ["name", "mfree", "spfree"], None))
    statuses = {row[0][1]: [entry[0] for entry in row[1:]] for row in answer["data"]}
    assert statuses == {"node1": [RS_NODATA, RS_NODATA], "node2": [RS_NODATA, RS_NODATA],
                        "node3": [RS_OFFLINE, RS_OFFLINE]}


def test_powered_is_unavailable_without_an_out_of_band_program() -> None:
    answer = asyncio.run(query_from_config("node", plain_config(), None, ["powered"], None))
    assert {entry[0] for row in answer["data"] for entry in row} == {RS_UNAVAIL}


def test_group_parameters_are_the_cluster_defaults_filled_with_the_groups_own() -> None:
    cfg = plain_config()
    group = cfg.tree["nodegroups"][cfg.default_group_uuid()]
    group["ipolicy"] = {"vcpu-ratio": 2.0}
    answer = asyncio.run(query_from_config("group", cfg, None, ["ipolicy", "custom_ipolicy", "node_cnt"],
                                           ["=", "name", "default"]))
    [[ipolicy, custom, count]] = answer["data"]
    assert ipolicy[0] == RS_NORMAL and ipolicy[1]["vcpu-ratio"] == 2.0
    assert ipolicy[1]["spindle-ratio"] == cfg.cluster["ipolicy"]["spindle-ratio"]
    assert custom == [RS_NORMAL, {"vcpu-ratio": 2.0}] and count == [RS_NORMAL, 3]


# -- a real cluster ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("config")
    master = make_root(base, "node1")
    roots = {"node1": master}
    roots.update({name: make_root(base, name, cluster_pem=master.server_pem) for name in NODES
                  if name != "node1"})
    cfg = build_config(master, roots["node2"])
    Path(master.paths.config_file).write_text(cfg.dumps())
    for root in roots.values():
        root.write_candidate_map(master.client_fp)
        for key, value in {"master_node": "node1", "cluster_name": "cluster.example.com",
                           "node_list": "\n".join(NODES),
                           "node_primary_ips": "\n".join(f"{n} {a}" for n, a in NODES.items())}.items():
            Path(root.paths.ssconf_file(key)).write_text(value + "\n")
    c = Cluster(roots)
    try:
        for name, address in NODES.items():
            c.nodeds[name] = start_noded(roots[name], address)
        c.write_ports()
        c.start_masterd()
        yield c
    finally:
        c.stop_masterd()
        for noded in c.nodeds.values():
            noded.stop()


# -- queries --------------------------------------------------------------------------------------

def test_gnt_node_list_shows_the_three_nodes_with_live_memory(cluster: Cluster) -> None:
    done = cluster.gnt("node", "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["Node", "DTotal", "DFree", "MTotal", "MNode", "MFree", "Pinst", "Sinst"]
    rows = [line.split() for line in lines[1:]]
    assert [row[0] for row in rows] == ["node1", "node2", "node3"]
    for row in rows:
        assert re.fullmatch(r"\d+(\.\d+)?[MGT]", row[3]), row   # MTotal: a live figure
        assert re.fullmatch(r"\d+(\.\d+)?[MGT]", row[5]), row   # MFree
        assert row[6:] == ["0", "0"]


def test_gnt_node_list_reports_roles_from_the_configuration(cluster: Cluster) -> None:
    done = cluster.gnt("node", "list", "--no-headers", "-o", "name,role,master_candidate,offline,pip")
    assert done.returncode == 0, done.stderr
    assert [line.split() for line in done.stdout.splitlines()] == [
        ["node1", "M", "Y", "N", "127.0.0.2"], ["node2", "C", "Y", "N", "127.0.0.3"],
        ["node3", "R", "N", "N", "127.0.0.4"]]


def test_gnt_node_list_of_named_nodes_shows_only_them(cluster: Cluster) -> None:
    done = cluster.gnt("node", "list", "--no-headers", "-o", "name", "node3", "node2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["node3", "node2"]


def test_gnt_node_list_of_an_unknown_node_fails_as_ganeti_does(cluster: Cluster) -> None:
    done = cluster.gnt("node", "list", "nosuchnode")
    assert done.returncode == 1
    assert "Node name nosuchnode not found" in done.stderr


def test_gnt_node_tags_reads_the_node_from_the_configuration(cluster: Cluster) -> None:
    done = cluster.gnt("node", "list-tags", "node2")
    assert (done.returncode, done.stdout) == (0, ""), done.stderr


def test_gnt_node_info_shows_one_nodes_configuration(cluster: Cluster) -> None:
    done = cluster.gnt("node", "info", "node2")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("- Node name: node2\n")
    for line in ("  primary ip: 127.0.0.3", "  secondary ip: 127.0.0.3", "  master candidate: True",
                 "  drained: False", "  offline: False", "  master_capable: True", "  vm_capable: True",
                 "  primary for instances:", "  node parameters:", "    ssh_port: default (22)"):
        assert line in [shown.rstrip() for shown in out.splitlines()], out
    assert "powered" not in out  # no out-of-band program: RS_UNAVAIL, the line is left out


def test_gnt_node_info_of_an_unknown_node_fails_as_ganeti_does(cluster: Cluster) -> None:
    done = cluster.gnt("node", "info", "nosuchnode")
    assert done.returncode != 0
    assert "Node name nosuchnode not found" in done.stderr


def test_gnt_group_list_shows_the_default_group_with_its_nodes(cluster: Cluster) -> None:
    done = cluster.gnt("group", "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["Group", "Nodes", "Instances", "AllocPolicy", "NDParams"]
    assert lines[1].split()[:4] == ["default", "3", "0", "preferred"]
    done = cluster.gnt("group", "list", "--no-headers", "-o", "name,node_list")
    assert done.stdout.split() == ["default", "node1,node2,node3"]


def test_gnt_cluster_info_shows_the_configurations_cluster(cluster: Cluster) -> None:
    done = cluster.gnt("cluster", "info")
    assert done.returncode == 0, done.stderr
    cfg = load(str(cluster.config_file))
    out = done.stdout.splitlines()
    assert "Cluster name: cluster.example.com" in out
    assert f"Cluster UUID: {cfg.cluster_uuid}" in out
    assert "Master node: node1" in out
    assert "  master netdev: lo" in out and "  master netmask: 32" in out
    assert "Default hypervisor: fake" in out


# -- redist-conf ------------------------------------------------------------------------------------

def test_redist_conf_sends_config_to_the_candidate_and_ssconf_to_every_node(cluster: Cluster) -> None:
    before = load(str(cluster.config_file)).serial_no
    done = cluster.gnt("cluster", "redist-conf")
    assert done.returncode == 0, done.stderr
    master_data = cluster.config_file.read_bytes()
    cfg = ConfigData.from_json(master_data)
    assert cfg.serial_no == before + 1
    assert Path(cluster.roots["node2"].paths.config_file).read_bytes() == master_data
    assert not Path(cluster.roots["node3"].paths.config_file).exists()
    expected = file_contents(ssconf_values(cfg))
    for name, root in cluster.roots.items():
        found = {key: Path(root.paths.ssconf_file(key)).read_text() for key in expected}
        assert found == expected, name


# -- an offline node ------------------------------------------------------------------------------

@pytest.fixture
def node3_offline(cluster: Cluster) -> Iterator[tuple[Cluster, SilentListener]]:
    """node3 offline in the configuration, its daemon stopped, a silent listener on its gRPC port."""
    cluster.stop_masterd()
    cfg = load(str(cluster.config_file))
    cfg.set_node_flags(cfg.node_by_name("node3").uuid, offline=True)
    cluster.config_file.write_text(cfg.dumps())
    cluster.nodeds["node3"].stop()
    listener = SilentListener(NODES["node3"])
    cluster.write_ports(node3=listener.port)
    try:
        cluster.start_masterd("--no-voting", "--yes-do-it")  # the voting asks offline nodes too
        yield cluster, listener
    finally:
        listener.close()


def test_an_offline_node_is_listed_offline_and_never_contacted(
        node3_offline: tuple[Cluster, SilentListener]) -> None:
    cluster, listener = node3_offline
    done, seconds = cluster.timed("node", "list", "--no-headers", "-o", "name,role,mfree")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [row[:2] for row in rows] == [["node1", "M"], ["node2", "C"], ["node3", "O"]]
    assert rows[2][2] == "*"  # RS_OFFLINE
    assert seconds < QUICK
    done, seconds = cluster.timed("cluster", "redist-conf")
    assert done.returncode == 0, done.stderr
    assert seconds < QUICK
    assert listener.accepted == 0
    cfg = load(str(cluster.config_file))
    assert Path(cluster.roots["node2"].paths.config_file).read_bytes() == cluster.config_file.read_bytes()
    assert Path(cluster.roots["node2"].paths.ssconf_file("offline_nodes")).read_text() == "node3\n"
    assert ssconf_values(cfg)["offline_nodes"] == ["node3"]



def test_every_node_and_group_field_of_the_real_luxid_is_answered() -> None:
    real = json.loads((SAMPLES / "real_query_fields.json").read_text())
    cfg = plain_config()
    for what in ("node", "group"):
        names = [f["name"] for f in real[what]]
        answer = asyncio.run(query_from_config(what, cfg, None, names, None))
        assert answer["fields"] == real[what]
        unknown = {names[i] for row in answer["data"] for i, entry in enumerate(row) if entry[0] == 1}
        assert unknown == set(), what
