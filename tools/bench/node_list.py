"""The `node-list` scenario: Debian's real `gnt-node list` against our master with 20 of our nodes.

The cluster: our `gnt-cluster init` on node01 (127.0.10.1, its own root
below a short /tmp directory, cluster IP 127.0.10.100 on `lo`), then our
`gnt-node add --node-root` for node02 .. nodeNN (127.0.10.2 ...), each its
own root and node daemon, all on the legacy port of the roots'
etc/services. Everything this scenario starts is stopped by the pids in the
roots' pid files at the end, and the cluster IP is removed again. Needs
root (the cluster IP), `ip` and Debian's ganeti package.

Measured, `runs` times after one unmeasured warm-up each, wall clock of the
whole command (interpreter start, LUXI Query, one node_info to every node,
formatting), with GANETI_ROOTDIR / GANETI_HOSTNAME of the master:

- floor: `gnt-node --version` (Debian's CLI start-up: no master contacted);
- 1 node: `gnt-node list` right after init (the master alone);
- N nodes: `gnt-node list` once every node is added (default fields: live
  data from every node daemon).

Baselines: the 1-node run and the floor are of this run (the ratio
N nodes / 1 node is how the master's work grows with the nodes); the real
Ganeti master's 0.24 s median for its single node (real-cluster-notes.md,
20 runs, load about 2.5) is a reference, not of this run. Target: the
N-node median under that 0.24 s.
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

from tools.bench.procs import BenchError, free_port, ip_on_lo, loadavg, stop_cluster
from tools.bench.stats import median_ms, spread_ms

BIN = Path(sys.executable).parent
OUR_GNT_CLUSTER = str(BIN / "gnt-cluster")
OUR_GNT_NODE = str(BIN / "gnt-node")
REAL_GNT_NODE = "/usr/sbin/gnt-node"
CLUSTER = "benchcluster"
CLUSTER_IP = "127.0.10.100"
#: The real Ganeti 3.0 master's `gnt-node list` median for its one node (real-cluster-notes.md).
REFERENCE_S = 0.24
INIT_ARGS = ("--enabled-hypervisors=fake", "--enabled-disk-templates=file,diskless", "--master-netdev=lo",
             "--master-grpc-port", "0")


def node_name(i: int) -> str:
    return f"node{i + 1:02d}"


def node_address(i: int) -> str:
    return f"127.0.10.{i + 1}"


@dataclass
class Settings:
    nodes: int = 20
    runs: int = 20


@dataclass
class Result:
    settings: Settings
    floor_s: list[float] = field(default_factory=list)
    one_s: list[float] = field(default_factory=list)
    many_s: list[float] = field(default_factory=list)
    rows_listed: int = 0
    failures: list[str] = field(default_factory=list)
    #: Why the scenario did not run (its prerequisites are missing here), or None.
    skipped: str | None = None
    #: The machine's 1-minute load average before and after the measured runs (a shared machine).
    load: list[float | None] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return len(self.failures)

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float] | None:
            if not values:
                return None
            return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values)}
        many = statistics.median(self.many_s) if self.many_s else None
        one = statistics.median(self.one_s) if self.one_s else None
        return {"nodes": self.settings.nodes, "runs": self.settings.runs, "floor": stats(self.floor_s),
                "one_node": stats(self.one_s), "n_nodes": stats(self.many_s), "rows_listed": self.rows_listed,
                "ratio_n_to_one": many / one if many and one else None,
                "ratio_to_reference": many / REFERENCE_S if many else None,
                "reference_s": REFERENCE_S, "target_met": many is not None and many < REFERENCE_S,
                "failures": self.failures, "skipped": self.skipped, "loadavg_1min": self.load}


class NodeListBench:
    def __init__(self, settings: Settings, log: Callable[[str], None]) -> None:
        self.settings = settings
        self.log = log
        self.result = Result(settings)
        self.base: Path | None = None
        self.had_ip = False

    def check(self) -> str | None:
        """Why the scenario cannot run here (it is then skipped), or None; BenchError if misused."""
        if not 1 <= self.settings.nodes <= 99 or self.settings.runs < 1:
            raise BenchError("node-list: --node-list-nodes must be 1..99 and --node-list-runs at least 1")
        missing = [p for p in (REAL_GNT_NODE, OUR_GNT_CLUSTER, OUR_GNT_NODE) if not os.path.exists(p)]
        if missing or shutil.which("ip") is None or os.geteuid() != 0:
            return (f"needs root, `ip`, Debian's ganeti package and our console scripts (missing:"
                    f" {', '.join(missing) or 'none'}; uid {os.geteuid()})")
        if ip_on_lo(CLUSTER_IP):
            raise BenchError(f"node-list: {CLUSTER_IP} is already on lo (another cluster runs there)")
        return None

    def root(self, i: int) -> Path:
        assert self.base is not None
        return self.base / node_name(i)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, GANETI_ROOTDIR=str(self.root(0)), GANETI_HOSTNAME=node_name(0))
        env.pop("PYTHONPATH", None)
        return env

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=300)

    def _must(self, what: str, *argv: str) -> None:
        done = self._run(*argv)
        if done.returncode != 0:
            raise BenchError(f"node-list: {what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

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
                rows = [line for line in done.stdout.splitlines() if line.strip()]
                self.result.rows_listed = len(rows)
                if len(rows) != expect_rows or any("?" in line.split() for line in rows):
                    self.result.failures.append(f"{' '.join(argv)}: expected {expect_rows} complete rows,"
                                                f" got {done.stdout!r}")
                    continue
            if r:
                into.append(elapsed)

    def run(self) -> Result:
        self.result.skipped = self.check()
        if self.result.skipped is not None:
            self.log(f"node-list: skipped: {self.result.skipped}")
            return self.result
        self.base = Path(tempfile.mkdtemp(prefix="gb", dir="/tmp"))
        try:
            self._build_and_measure()
        finally:
            self._teardown()
        return self.result

    def _build_and_measure(self) -> None:
        count = self.settings.nodes
        port, grpc_port = free_port(node_address(0)), free_port(node_address(0))
        etc = self.root(0) / "etc"
        etc.mkdir(parents=True)
        hosts = "".join(f"{node_address(i)} {node_name(i)}\n" for i in range(count))
        (etc / "hosts").write_text(f"{hosts}{CLUSTER_IP} {CLUSTER}\n")
        (etc / "services").write_text(f"ganeti-noded {port}/tcp\n")
        self.log(f"node-list: gnt-cluster init on {node_name(0)} ({node_address(0)}), roots in {self.base}")
        self._must("gnt-cluster init", OUR_GNT_CLUSTER, "init", *INIT_ARGS, "--noded-grpc-port",
                   str(grpc_port), CLUSTER)
        listing = [REAL_GNT_NODE, "list", "--no-headers"]
        self.result.load.append(loadavg())
        self.log(f"node-list: {self.settings.runs} runs of gnt-node --version and gnt-node list (1 node)")
        self._timed([REAL_GNT_NODE, "--version"], self.result.floor_s, None)
        self._timed(listing, self.result.one_s, 1)
        self.log(f"node-list: adding {node_name(1)}..{node_name(count - 1)} with gnt-node add --node-root")
        started = time.monotonic()
        for i in range(1, count):
            self._must(f"gnt-node add {node_name(i)}", OUR_GNT_NODE, "add", "--node-root", str(self.root(i)),
                       node_name(i))
        self.log(f"node-list: {count - 1} nodes added in {time.monotonic() - started:.1f} s;"
                 f" {self.settings.runs} runs of gnt-node list ({count} nodes)")
        self._timed(listing, self.result.many_s, count)
        self.result.load.append(loadavg())
        self.log(f"  node-list: floor {median_ms(self.result.floor_s)} ms, 1 node"
                 f" {median_ms(self.result.one_s)} ms, {count} nodes {median_ms(self.result.many_s)} ms,"
                 f" {self.result.errors} errors")

    def _teardown(self) -> None:
        assert self.base is not None
        stop_cluster([self.root(i) for i in range(self.settings.nodes)], CLUSTER_IP)
        shutil.rmtree(self.base, ignore_errors=True)


# -- report ----------------------------------------------------------------------------------------------
def markdown(result: Result, started: str) -> str:
    s = result.settings
    summary = result.summary()
    out = [f"## Master daemon: Debian's `gnt-node list` with {s.nodes} nodes ({started})", "",
           f"Wall clock of the whole command, {s.runs} runs after one warm-up; our master on node01, our"
           f" node daemons on 127.0.10.1-{s.nodes}, each its own root. The 1-node row and the floor are of"
           " this run;"
           f" the real master's {REFERENCE_S:.2f} s (its one node, real-cluster-notes.md) is a reference, not"
           " of this run.", "",
           "| what | median ms | min-max ms | vs 1 node (this run) | vs real master 0.24 s (reference) |",
           "|---|---|---|---|---|"]
    one = statistics.median(result.one_s) if result.one_s else None
    for label, values in (("`gnt-node --version` (CLI start-up floor)", result.floor_s),
                          ("`gnt-node list`, 1 node", result.one_s),
                          (f"`gnt-node list`, {s.nodes} nodes", result.many_s)):
        median = statistics.median(values) if values else None
        vs_one = f"{median / one:.2f}x" if median and one else "-"
        vs_ref = f"{median / REFERENCE_S:.2f}x" if median else "-"
        out.append(f"| {label} | {median_ms(values)} | {spread_ms(values)} | {vs_one} | {vs_ref} |")
    verdict = "met" if summary["target_met"] else "MISSED"
    loads = ", ".join(f"{v:.2f}" if v is not None else "?" for v in result.load)
    out += ["", f"Load average (1 min) before the first and after the last measured run: {loads}; the"
                " absolute times move with it, the ratios of this run much less."]
    out += ["", f"Target: {s.nodes} nodes under the real master's {REFERENCE_S:.2f} s for one node:"
                f" {verdict}."]
    if result.failures:
        out += ["", f"Failures ({len(result.failures)}):"] + [f"- {f}" for f in result.failures[:10]]
    return "\n".join(out)
