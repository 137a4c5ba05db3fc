"""The `instance-list` scenario: Debian's real `gnt-instance list` against our master with 1,000 instances.

The cluster: our `gnt-cluster init` on inode1 (127.0.13.201, its own root
below a short /tmp directory, cluster IP 127.0.13.200 on `lo`, hypervisor
fake, disk templates diskless and file), then our `gnt-node add --node-root`
for inode2 and inode3 (127.0.13.202-203). The instances are real ones:
OP_INSTANCE_CREATE jobs (diskless, fake hypervisor, no NIC, no OS install,
32 MiB so that 1,000 fit the nodes' free memory, ipolicy ignored, started)
submitted through LUXI in SubmitManyJobs batches, spread round-robin over the
three nodes; every one is RUNNING afterwards (the fake hypervisor's state
file in its primary node's run directory), so each listing asks each node's
all_instances_info for ~333 live instances. Everything this scenario starts
is stopped by the pids in the roots' pid files at the end, and the cluster
IP is removed again. Needs root (the cluster IP), `ip` and Debian's ganeti
package.

Measured, `runs` times after one unmeasured warm-up each, wall clock of the
whole command (interpreter start, LUXI Query of the default fields name,
hypervisor, os, pnode, status, oper_ram, one all_instances_info per node,
formatting 1,000 rows), with GANETI_ROOTDIR / GANETI_HOSTNAME of the master:

- floor: `gnt-instance --version` (Debian's CLI start-up: no master contacted);
- N instances: `gnt-instance list` (every row checked: running, memory shown).

Target: the N-instance median under 1 s.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.bench.procs import BenchError, free_port, ip_on_lo, stop_cluster
from tools.bench.stats import median_ms, spread_ms

BIN = Path(sys.executable).parent
OUR_GNT_CLUSTER = str(BIN / "gnt-cluster")
OUR_GNT_NODE = str(BIN / "gnt-node")
REAL_GNT_INSTANCE = "/usr/sbin/gnt-instance"
CLUSTER = "benchinst"
CLUSTER_IP = "127.0.13.200"
NODES = ("inode1", "inode2", "inode3")
TARGET_S = 1.0
MEMORY_MIB = 32
BATCH = 250
INIT_ARGS = ("--enabled-hypervisors=fake", "--enabled-disk-templates=diskless,file", "--master-netdev=lo",
             "--master-grpc-port", "0")
FINAL = ("success", "error", "canceled")


def node_address(i: int) -> str:
    return f"127.0.13.{201 + i}"


def instance_name(i: int) -> str:
    return f"binst{i + 1:04d}"


@dataclass
class Settings:
    instances: int = 1000
    runs: int = 10


@dataclass
class Result:
    settings: Settings
    create_s: float | None = None
    floor_s: list[float] = field(default_factory=list)
    list_s: list[float] = field(default_factory=list)
    rows_listed: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return len(self.failures)

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float] | None:
            if not values:
                return None
            return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values)}
        median = statistics.median(self.list_s) if self.list_s else None
        return {"instances": self.settings.instances, "nodes": len(NODES), "runs": self.settings.runs,
                "create_s": self.create_s, "floor": stats(self.floor_s), "list": stats(self.list_s),
                "rows_listed": self.rows_listed, "target_s": TARGET_S,
                "target_met": median is not None and median < TARGET_S, "failures": self.failures}


def create_op(name: str, node: str) -> dict[str, Any]:
    """OP_INSTANCE_CREATE of a started diskless fake instance without NIC or OS install."""
    return {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": name, "mode": "create",
            "disk_template": "diskless", "disks": [], "nics": [], "os_type": "noop", "hypervisor": "fake",
            "pnode": node,
            "beparams": {"maxmem": MEMORY_MIB, "minmem": MEMORY_MIB}, "start": True, "no_install": True,
            "ip_check": False, "name_check": False, "ignore_ipolicy": True, "wait_for_sync": False}


class InstanceListBench:
    """Builds the cluster, measures, tears down; subclasses change the addresses and the measurement."""

    name = "instance-list"
    nodes: tuple[str, ...] = NODES
    cluster_ip = CLUSTER_IP
    cluster_name = CLUSTER
    init_args: tuple[str, ...] = INIT_ARGS

    @staticmethod
    def address(i: int) -> str:
        return node_address(i)

    def __init__(self, settings: Settings, log: Callable[[str], None]) -> None:
        self.settings = settings
        self.log = log
        self.result = Result(settings)
        self.base: Path | None = None

    def check(self) -> None:
        if not 1 <= self.settings.instances <= 9999 or self.settings.runs < 1:
            raise BenchError("instance-list: --instance-list-count must be 1..9999 and --instance-list-runs"
                             " at least 1")
        missing = [p for p in (REAL_GNT_INSTANCE, OUR_GNT_CLUSTER, OUR_GNT_NODE) if not os.path.exists(p)]
        if missing or shutil.which("ip") is None or os.geteuid() != 0:
            raise BenchError(f"instance-list needs root, `ip`, Debian's ganeti package and our console"
                             f" scripts (missing: {', '.join(missing) or 'none'}; uid {os.geteuid()})")
        if ip_on_lo(self.cluster_ip):
            raise BenchError(f"{self.name}: {self.cluster_ip} is already on lo (another cluster runs there)")

    def root(self, i: int) -> Path:
        assert self.base is not None
        return self.base / self.nodes[i]

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, GANETI_ROOTDIR=str(self.root(0)), GANETI_HOSTNAME=self.nodes[0])
        env.pop("PYTHONPATH", None)
        return env

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=600)

    def _must(self, what: str, *argv: str) -> None:
        done = self._run(*argv)
        if done.returncode != 0:
            raise BenchError(f"instance-list: {what} failed ({done.returncode}):"
                             f" {done.stderr.strip()[-2000:]}")

    def run(self) -> Result:
        self.check()
        self.base = Path(tempfile.mkdtemp(prefix="gbi", dir="/tmp"))
        try:
            self._build_and_measure()
        finally:
            self._teardown()
        return self.result

    def _build_and_measure(self) -> None:
        self._build()
        self._measure()

    def _build(self) -> None:
        """Our gnt-cluster init on the first node and gnt-node add for the others (own roots)."""
        port, grpc_port = free_port(self.address(0)), free_port(self.address(0))
        etc = self.root(0) / "etc"
        etc.mkdir(parents=True)
        hosts = "".join(f"{self.address(i)} {name}\n" for i, name in enumerate(self.nodes))
        (etc / "hosts").write_text(f"{hosts}{self.cluster_ip} {self.cluster_name}\n")
        (etc / "services").write_text(f"ganeti-noded {port}/tcp\n")
        self.log(f"{self.name}: gnt-cluster init on {self.nodes[0]} ({self.address(0)}),"
                 f" roots in {self.base}")
        self._must("gnt-cluster init", OUR_GNT_CLUSTER, "init", *self.init_args,
                   "--noded-grpc-port", str(grpc_port), self.cluster_name)
        for i in range(1, len(self.nodes)):
            self._must(f"gnt-node add {self.nodes[i]}", OUR_GNT_NODE, "add", "--node-root", str(self.root(i)),
                       self.nodes[i])

    def _measure(self) -> None:
        count = self.settings.instances
        self.log(f"instance-list: creating {count} started fake instances (OP_INSTANCE_CREATE via"
                 f" SubmitManyJobs, batches of {BATCH})")
        started = time.monotonic()
        self._create_instances(count)
        self.result.create_s = time.monotonic() - started
        self.log(f"instance-list: {count} instances created in {self.result.create_s:.1f} s;"
                 f" {self.settings.runs} runs of gnt-instance --version and gnt-instance list")
        self._timed([REAL_GNT_INSTANCE, "--version"], self.result.floor_s, None)
        self._timed([REAL_GNT_INSTANCE, "list", "--no-headers"], self.result.list_s, count)
        self.log(f"  instance-list: floor {median_ms(self.result.floor_s)} ms, {count} instances"
                 f" {median_ms(self.result.list_s)} ms, {self.result.errors} errors")

    def _create_instances(self, count: int) -> None:
        from tools.gnt.luxi_client import LuxiClient

        socket = str(self.root(0) / "var/run/ganeti/socket/ganeti-query")
        with LuxiClient(address=socket) as client:
            job_ids: list[int] = []
            for first in range(0, count, BATCH):
                jobs = [[create_op(instance_name(i), self.nodes[i % len(self.nodes)])]
                        for i in range(first, min(count, first + BATCH))]
                for ok, value in client.call("SubmitManyJobs", [jobs]):
                    if not ok:
                        raise BenchError(f"instance-list: job submission refused: {value}")
                    job_ids.append(int(value))
            deadline = time.monotonic() + 1800
            while True:
                statuses = [row[0] for row in client.call("QueryJobs", [job_ids, ["status"]])]
                if all(s in FINAL for s in statuses):
                    break
                if time.monotonic() > deadline:
                    raise BenchError("instance-list: instance creation did not finish in 30 minutes")
                time.sleep(0.5)
            failed = [jid for jid, s in zip(job_ids, statuses, strict=True) if s != "success"]
            if failed:
                detail = client.call("QueryJobs", [failed[:1], ["opresult"]])
                raise BenchError(f"instance-list: {len(failed)} creation jobs failed, e.g. job {failed[0]}:"
                                 f" {str(detail)[:1000]}")

    def _timed(self, argv: list[str], into: list[float], expect_rows: int | None) -> None:
        for r in range(self.settings.runs + 1):  # the first run warms the caches up, unmeasured
            started = time.perf_counter()
            done = self._run(*argv)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                self.result.failures.append(f"{' '.join(argv)}: exit {done.returncode}:"
                                            f" {done.stderr.strip()}")
                continue
            if expect_rows is not None:
                rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
                self.result.rows_listed = len(rows)
                wrong = [row for row in rows if row[4:] != ["running", f"{MEMORY_MIB}M"]]
                if len(rows) != expect_rows or wrong:
                    self.result.failures.append(f"{' '.join(argv)}: expected {expect_rows} running rows,"
                                                f" got {len(rows)} ({len(wrong)} not running: {wrong[:3]})")
                    continue
            if r:
                into.append(elapsed)

    def _teardown(self) -> None:
        assert self.base is not None
        stop_cluster([self.root(i) for i in range(len(self.nodes))], self.cluster_ip)
        shutil.rmtree(self.base, ignore_errors=True)


# -- report ----------------------------------------------------------------------------------------------
def markdown(result: Result, started: str) -> str:
    s = result.settings
    summary = result.summary()
    created = f"{result.create_s:.1f} s" if result.create_s is not None else "-"
    out = [f"## Master daemon: Debian's `gnt-instance list` with {s.instances} instances on {len(NODES)}"
           f" nodes ({started})", "",
           f"Wall clock of the whole command, {s.runs} runs after one warm-up; our master on {NODES[0]}, our"
           f" node daemons on 127.0.13.201-{200 + len(NODES)}, each its own root; {s.instances} started"
           f" fake-hypervisor instances (created through OP_INSTANCE_CREATE jobs in {created}).", "",
           "| what | median ms | min-max ms |", "|---|---|---|"]
    for label, values in (("`gnt-instance --version` (CLI start-up floor)", result.floor_s),
                          (f"`gnt-instance list`, {s.instances} instances", result.list_s)):
        out.append(f"| {label} | {median_ms(values)} | {spread_ms(values)} |")
    verdict = "met" if summary["target_met"] else "MISSED"
    out += ["", f"Target: under {TARGET_S:.0f} s: {verdict}."]
    if result.failures:
        out += ["", f"Failures ({len(result.failures)}):"] + [f"- {f}" for f in result.failures[:10]]
    return "\n".join(out)
