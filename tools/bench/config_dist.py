"""The `config` scenario: distributing config.data and ssconf to master candidates (masterd.distribution).

The cluster: this process is the master (node1: its own root and client
certificate) running masterd.distribution.ConfigDistributor over
masterd.rpc.NodeRpcClient; up to `max(candidates)` of our ganeti-noded,
each its own root on its own loopback address (127.0.0.101 ...), with the
shared cluster certificate and a candidate map accepting the master's
client certificate, started with ``--legacy-workers 1 --no-mlock``.

The configuration: Ganeti 3.0's config.data from the reference sample
(../shared/reference/samples/config.data.json), its one instance (and its
disk) replicated to N instances with new names, uuids and MAC addresses,
plus one node entry per candidate; serialised compactly, as Ganeti writes
it. The ssconf values: the reference sample's ssconf files, with the node,
candidate and instance lists of the synthetic cluster. Instance names are
short (``inst00001``): the full list of 10,000 FQDNs would be over the 128
KiB an ssconf file may hold (Ganeti's own limit, which our node daemon
enforces too).

Measured, for every (instances, candidates) pair, from the call to
`distribute` until it returned (compression, RPC, every node's durable
write):

- full: ``full=True`` (what ``gnt-cluster redist-conf`` forces): config.data
  to every candidate and every ssconf value to every node;
- change: one configuration change (the serial number and an instance's
  admin state change; ssconf is unchanged, so only config.data travels).

Each is repeated `repeat` times after one unmeasured warm-up; the median
is reported, with min and max. Targets: linear growth (time for 10x the
instances at most ~10x, for 20/3 of the candidates at most ~20/3x, with
25 % slack for noise) and 10,000 instances to 20 candidates in under 2 s.
"""

from __future__ import annotations

import asyncio
import copy
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from masterd.distribution import ConfigDistributor
from masterd.rpc import NodeRpcClient
from tools.bench import servers
from tools.bench.procs import BenchError, Processes, free_port, wait_listening
from tools.bench.stats import median_ms, spread_ms

SAMPLES = servers.REPO.parent / "shared" / "reference" / "samples"
#: Address of the i-th node daemon (i from 0).
ADDRESS_BASE = 101
#: Time budget for 10,000 instances to 20 candidates, one change, seconds.
TARGET_SECONDS = 2.0
#: Slack allowed over linear growth before it counts as superlinear.
LINEAR_SLACK = 1.25
MASTER = "node1"


@dataclass
class Settings:
    instances: list[int]
    candidates: list[int]
    repeat: int


@dataclass
class Row:
    instances: int
    candidates: int
    config_bytes: int
    sent_bytes_per_node: int
    full_s: list[float] = field(default_factory=list)
    change_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"instances": self.instances, "candidates": self.candidates, "config_bytes": self.config_bytes,
                "sent_bytes_per_node": self.sent_bytes_per_node, "full_s": self.full_s,
                "change_s": self.change_s, "errors": self.errors}


@dataclass
class Result:
    settings: Settings
    rows: list[Row] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(len(r.errors) for r in self.rows)

    def row(self, instances: int, candidates: int) -> Row | None:
        for r in self.rows:
            if (r.instances, r.candidates) == (instances, candidates):
                return r
        return None

    def summary(self) -> dict[str, Any]:
        return {"repeat": self.settings.repeat, "rows": [r.summary() for r in self.rows]}


@dataclass
class Node:
    name: str
    offline: bool = False


# -- the synthetic configuration ------------------------------------------------------------------------
def node_name(i: int) -> str:
    return f"node{i + 2}"


def node_address(i: int) -> str:
    return f"127.0.0.{ADDRESS_BASE + i}"


class SyntheticConfig:
    """config.data with `instances` copies of the sample instance and `nodes` extra node entries."""

    def __init__(self, instances: int, nodes: int) -> None:
        sample = json.loads((SAMPLES / "config.data.json").read_text())
        (instance,) = sample["instances"].values()
        (disk,) = sample["disks"].values()
        (master_uuid, master), = sample["nodes"].items()
        config = copy.deepcopy(sample)
        config["instances"], config["disks"] = {}, {}
        config["nodes"] = {master_uuid: {**master, "name": MASTER}}
        node_uuids = [master_uuid]
        for i in range(nodes):
            new = str(uuid.uuid4())
            config["nodes"][new] = {**master, "name": node_name(i), "uuid": new,
                                    "primary_ip": node_address(i), "secondary_ip": node_address(i)}
            node_uuids.append(new)
        self.names: list[str] = []
        for n in range(instances):
            name = f"inst{n:05d}"
            d_uuid, i_uuid, primary = str(uuid.uuid4()), str(uuid.uuid4()), node_uuids[n % len(node_uuids)]
            new_disk = copy.deepcopy(disk)
            new_disk.update(uuid=d_uuid, nodes=[primary],
                            logical_id=["loop", f"/srv/ganeti/file-storage/{name}/{uuid.uuid4()}.file.disk0"])
            new_inst = copy.deepcopy(instance)
            new_inst.update(name=name, uuid=i_uuid, primary_node=primary, disks=[d_uuid])
            new_inst["nics"] = [{**nic, "uuid": str(uuid.uuid4()), "mac": f"aa:00:{n >> 16 & 255:02x}:"
                                 f"{n >> 8 & 255:02x}:{n & 255:02x}:{k:02x}"}
                                for k, nic in enumerate(instance["nics"])]
            config["instances"][i_uuid] = new_inst
            config["disks"][d_uuid] = new_disk
            self.names.append(name)
        self.config = config
        self.first = next(iter(config["instances"].values())) if instances else None

    def change(self) -> bytes:
        """One configuration change (serial number, an instance's admin state), serialised."""
        self.config["serial_no"] += 1
        self.config["mtime"] = time.time()
        if self.first is not None:
            self.first["admin_state"] = "down" if self.first["admin_state"] == "up" else "up"
            self.first["serial_no"] += 1
        return json.dumps(self.config, separators=(",", ":")).encode()


def synthetic_ssconf(cfg: SyntheticConfig, candidates: list[str], nodes: list[str],
                     fingerprints: dict[str, str]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for path in sorted((SAMPLES / "ssconf").glob("ssconf_*")):
        values[path.name[len("ssconf_"):]] = path.read_text().splitlines()
    all_nodes = [MASTER, *nodes]
    values.update(
        master_node=[MASTER], node_list=all_nodes, online_nodes=all_nodes, offline_nodes=[],
        master_candidates=[MASTER, *candidates], instance_list=sorted(cfg.names),
        master_candidates_certs=[f"{name}={fingerprints.get(name, '')}" for name in [MASTER, *candidates]],
        node_primary_ips=[f"{n} {node_address(i)}" for i, n in enumerate(nodes)],
        node_secondary_ips=[f"{n} {node_address(i)}" for i, n in enumerate(nodes)],
    )
    return values


# -- the cluster -----------------------------------------------------------------------------------------
class ConfigBench:
    def __init__(self, settings: Settings, tmp: Path, log: Callable[[str], None]) -> None:
        self.settings = settings
        self.tmp = tmp / "config"
        self.log = log
        self.result = Result(settings)
        self.ports: dict[str, int] = {}
        self.addresses: dict[str, str] = {}
        self.roots: dict[str, Any] = {}  # node name -> tests/support.py NodeRoot
        self.started: list[tuple[str, Any, str, int]] = []

    def start_nodes(self, procs: Processes, count: int) -> Any:
        support = servers._support()
        noded = Path(sys.executable).parent / "ganeti-noded"
        master = support.make_root(self.tmp, MASTER)
        for i in range(count):
            name, address = node_name(i), node_address(i)
            node = support.make_root(self.tmp, name, cluster_pem=master.server_pem)
            node.write_candidate_map(master.client_fp)
            port, grpc_port = free_port(address), free_port(address)
            argv = [str(noded), "-f", "-b", address, "-p", str(port), "--grpc-port", str(grpc_port),
                    "--legacy-workers", "1", "--no-mlock"]
            proc = procs.start(f"config-{name}", argv, env=node.env)
            self.ports[name], self.addresses[name], self.roots[name] = grpc_port, address, node
            self.started.append((name, proc, address, grpc_port))
        for name, proc, address, grpc_port in self.started:
            wait_listening(f"config-{name}", proc, address, [grpc_port], procs, timeout=60)
        return master

    def run(self, procs: Processes) -> Result:
        count = max(self.settings.candidates)
        self.log(f"config: starting {count} node daemons on {node_address(0)}..{node_address(count - 1)}")
        master = self.start_nodes(procs, count)
        asyncio.run(self._measure(master))
        return self.result

    async def _measure(self, master: Any) -> None:
        rpc = NodeRpcClient(master.paths, addresses=self.addresses, ports=self.ports)
        try:
            for instances in self.settings.instances:
                cfg = SyntheticConfig(instances, max(self.settings.candidates))
                for count in self.settings.candidates:
                    await self._point(rpc, master, cfg, count)
        finally:
            await rpc.close()

    async def _point(self, rpc: NodeRpcClient, master: Any, cfg: SyntheticConfig, count: int) -> None:
        names = [node_name(i) for i in range(count)]
        nodes = [Node(n) for n in names]
        ssconf = synthetic_ssconf(cfg, names, names, {MASTER: master.client_fp})
        distributor = ConfigDistributor(master.paths, rpc)
        data = cfg.change()
        row = Row(len(cfg.names), count, len(data), 0)
        self.result.rows.append(row)
        for measured, full in ((row.full_s, True), (row.change_s, False)):
            for r in range(self.settings.repeat + 1):  # the first is a warm-up
                data = cfg.change()
                report = await distributor.distribute(data, ssconf, nodes, nodes, full=full)
                row.config_bytes, row.sent_bytes_per_node = len(data), report.sent_bytes // max(1, count)
                if not report.ok:
                    row.errors += [f"{n}: {'; '.join(m)}" for n, m in report.failures.items()]
                elif r:
                    measured.append(report.seconds)
                if not full and r and report.ssconf_nodes:
                    row.errors.append(f"a change resent ssconf to {sorted(report.ssconf_nodes)}")
        self.check(row, data)
        self.log(f"  config {row.instances} instances -> {count} candidates: "
                 f"full {median_ms(row.full_s)} ms, change {median_ms(row.change_s)} ms, "
                 f"{len(row.errors)} errors")

    def check(self, row: Row, data: bytes) -> None:
        """Every candidate holds the last config.data sent, byte for byte."""
        for name in [node_name(i) for i in range(row.candidates)]:
            path = Path(self.roots[name].paths.config_file)
            try:
                held = path.read_bytes()
            except OSError as err:
                raise BenchError(f"config: {name} has no config.data ({path}): {err}") from err
            if held != data:
                row.errors.append(f"{name}: config.data differs from what was sent")


# -- report ----------------------------------------------------------------------------------------------
def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def growth(result: Result) -> list[tuple[str, float, float, bool]]:
    """(what, measured ratio, linear ratio, within slack) for the change times."""
    s = result.settings
    out: list[tuple[str, float, float, bool]] = []
    lo_i, hi_i, lo_c, hi_c = min(s.instances), max(s.instances), min(s.candidates), max(s.candidates)
    for count in sorted(set(s.candidates)):
        a, b = result.row(lo_i, count), result.row(hi_i, count)
        if a and b and a.change_s and b.change_s and lo_i != hi_i:
            ratio = statistics.median(b.change_s) / statistics.median(a.change_s)
            out.append((f"{lo_i}->{hi_i} instances, {count} candidates", ratio, hi_i / lo_i,
                        ratio <= hi_i / lo_i * LINEAR_SLACK))
    for instances in sorted(set(s.instances)):
        a, b = result.row(instances, lo_c), result.row(instances, hi_c)
        if a and b and a.change_s and b.change_s and lo_c != hi_c:
            ratio = statistics.median(b.change_s) / statistics.median(a.change_s)
            out.append((f"{lo_c}->{hi_c} candidates, {instances} instances", ratio, hi_c / lo_c,
                        ratio <= hi_c / lo_c * LINEAR_SLACK))
    return out


def markdown(result: Result, started: str) -> str:
    s = result.settings
    out = [f"## Master daemon: configuration distribution ({started})", "",
           "masterd.distribution to N of our node daemons (gRPC door, mutual TLS, each its own root, "
           "`--legacy-workers 1 --no-mlock`), from the start of `distribute` until every node wrote durably. "
           f"full: `full=True` (config.data + every ssconf value); change: one configuration change "
           f"(config.data only; ssconf unchanged, not resent). Median of {s.repeat} after one warm-up.", "",
           _row(["instances", "candidates", "config.data KiB", "sent per node KiB", "full median ms",
                 "full min-max ms", "change median ms", "change min-max ms", "errors"]),
           _row(["---:"] * 8 + ["---"])]
    for r in result.rows:
        out.append(_row([str(r.instances), str(r.candidates), f"{r.config_bytes / 1024:.0f}",
                         f"{r.sent_bytes_per_node / 1024:.0f}", median_ms(r.full_s), spread_ms(r.full_s),
                         median_ms(r.change_s), spread_ms(r.change_s),
                         "; ".join(r.errors[:3]) or "0"]))
    out += ["", _row(["growth (change)", "measured", "linear", "verdict"]),
            _row(["---", "---:", "---:", "---"])]
    for what, ratio, linear, ok in growth(result):
        verdict = "ok" if ok else "**MISSED** (superlinear)"
        out.append(_row([what, f"{ratio:.2f}x", f"{linear:.2f}x", verdict]))
    big = result.row(10000, 20)
    if big is not None and big.change_s:
        t = statistics.median(big.change_s)
        out += ["", f"Target 10,000 instances to 20 candidates under {TARGET_SECONDS:g} s: change "
                    f"{t:.3f} s, full {statistics.median(big.full_s) if big.full_s else float('nan'):.3f} s: "
                    + ("ok" if t < TARGET_SECONDS else "**MISSED**")]
    return "\n".join(out)
