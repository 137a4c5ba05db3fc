"""The `instance-add` scenario: Debian's real `gnt-instance add`, to a running instance, against our master.

The cluster is built as instance-list builds it (tools/bench/instance_list.py),
on anode1-3 (127.0.18.201-203, cluster IP 127.0.18.200), with the fake and
kvm hypervisors and the file and sharedfile templates. Measured, `runs`
times after one unmeasured warm-up, wall clock of the whole command until
it returns with the instance running (each instance is removed again,
unmeasured, before the next run):

- fake: ``gnt-instance add -n anode1 -t file -o noop -H fake -B memory=128M
  --disk 0:size=1G --net 0:mode=routed,ip=... --no-ip-check`` (OS
  installation and start included): the command of the reference;
- kvm: the same with ``-t sharedfile -o tiny+default -H kvm`` (a real qemu
  boots our tiny OS: KVM or emulation);
- floor: `gnt-instance --version` (the CLI's start-up, no master contacted).

Reference: the real Ganeti 3.0.2 master took 1.96 s wall for the fake
command (shared/reference/rpc-trace.md, "with OS install + start"); the
target is at most a fifth of that. `make bench-real` measures the real
master in the same run instead.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.bench.instance_list import REAL_GNT_INSTANCE, InstanceListBench, Settings
from tools.bench.procs import BenchError
from tools.bench.stats import median_ms, spread_ms

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tools" / "os" / "tiny"
#: The real master's wall time for the fake command (rpc-trace.md).
REFERENCE_S = 1.96
TARGET_RATIO = 0.2
INSTANCE = "binst"
INSTANCE_IP = "127.0.18.220"
VARIANTS = {
    "fake": ("-t", "file", "-o", "noop", "-H", "fake"),
    "kvm": ("-t", "sharedfile", "-o", "tiny+default", "-H", "kvm"),
}


@dataclass
class AddResult:
    settings: Settings
    floor_s: list[float] = field(default_factory=list)
    add_s: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return len(self.failures)

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float] | None:
            if not values:
                return None
            return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values)}
        fake = self.add_s.get("fake") or []
        ratio = statistics.median(fake) / REFERENCE_S if fake else None
        return {"runs": self.settings.runs, "floor": stats(self.floor_s),
                "add": {k: stats(v) for k, v in self.add_s.items()}, "reference_s": REFERENCE_S,
                "fake_vs_reference": ratio, "target_ratio": TARGET_RATIO,
                "target_met": ratio is not None and ratio <= TARGET_RATIO, "failures": self.failures}


class InstanceAddBench(InstanceListBench):
    name = "instance-add"
    nodes = ("anode1", "anode2", "anode3")
    cluster_ip = "127.0.18.200"
    cluster_name = "benchadd"
    init_args = ("--enabled-hypervisors=fake,kvm", "--enabled-disk-templates=file,sharedfile,diskless",
                 "--master-netdev=lo", "--master-grpc-port", "0", "-H", "kvm:kernel_path=,initrd_path=")

    @staticmethod
    def address(i: int) -> str:
        return f"127.0.18.{201 + i}"

    def __init__(self, settings: Settings, log: Any) -> None:
        super().__init__(settings, log)
        self.add_result = AddResult(settings)

    def _build(self) -> None:
        assert self.base is not None
        shared = self.base / "shared"
        for i in range(len(self.nodes)):  # tiny OS, shared storage for sharedfile
            srv = self.root(i) / "srv/ganeti"
            srv.mkdir(parents=True, exist_ok=True)
            shutil.copytree(TINY, srv / "os/tiny", symlinks=True)
            shared.mkdir(exist_ok=True)
            (srv / "shared-file-storage").symlink_to(shared)
        super()._build()
        hosts = self.root(0) / "etc/hosts"
        hosts.write_text(hosts.read_text() + f"{INSTANCE_IP} {INSTANCE}\n")

    def _measure(self) -> None:
        runs = self.settings.runs
        self.log(f"{self.name}: {runs} runs of gnt-instance --version, and of gnt-instance add + remove"
                 f" for {', '.join(VARIANTS)}")
        self._timed([REAL_GNT_INSTANCE, "--version"], self.add_result.floor_s, None)
        for variant, options in VARIANTS.items():
            times = self.add_result.add_s.setdefault(variant, [])
            for r in range(runs + 1):
                started = time.perf_counter()
                done = self._run(REAL_GNT_INSTANCE, "add", "-n", self.nodes[0], *options, "-B", "memory=128M",
                                 "--disk", "0:size=1G", "--net", f"0:mode=routed,ip={INSTANCE_IP}",
                                 "--no-ip-check", INSTANCE)
                elapsed = time.perf_counter() - started
                removed = self._run(REAL_GNT_INSTANCE, "remove", "-f", "--shutdown-timeout=0", INSTANCE)
                if done.returncode != 0 or removed.returncode != 0:
                    self.add_result.failures.append(f"{variant}: add exit {done.returncode}, remove exit"
                                                    f" {removed.returncode}: {done.stderr.strip()[-500:]}"
                                                    f" {removed.stderr.strip()[-500:]}")
                    if len(self.add_result.failures) > 3:
                        raise BenchError(f"{self.name}: too many failures: {self.add_result.failures}")
                    continue
                if r:
                    times.append(elapsed)
            self.log(f"  {self.name}: {variant} {median_ms(times)} ms")


def markdown(result: AddResult, started: str) -> str:
    summary = result.summary()
    out = [f"## Master daemon: Debian's `gnt-instance add` to a running instance ({started})", "",
           f"Wall clock of the whole command, {result.settings.runs} runs after one warm-up; our master and"
           " node daemons on 127.0.18.201-203 (own roots); the instance on the master node, 1 GiB disk,"
           " 128 MiB, OS installed and started.", "",
           "| what | median ms | min-max ms | vs real master (1.96 s) |", "|---|---|---|---|"]
    out.append(f"| `gnt-instance --version` (CLI start-up floor) | {median_ms(result.floor_s)} |"
               f" {spread_ms(result.floor_s)} | |")
    for variant, values in result.add_s.items():
        ratio = f"{statistics.median(values) / REFERENCE_S:.2f}" if values else "-"
        out.append(f"| add, {variant} ({' '.join(VARIANTS[variant])}) | {median_ms(values)} |"
                   f" {spread_ms(values)} | {ratio} |")
    verdict = "met" if summary["target_met"] else "MISSED"
    out += ["", f"Target: fake at most {TARGET_RATIO} of the real master's time: {verdict}."]
    if result.failures:
        out += ["", f"Failures ({len(result.failures)}):"] + [f"- {f}" for f in result.failures[:10]]
    return "\n".join(out)
