"""The `jobs` comparison: job throughput and latency of our ganeti-masterd, beside the real Ganeti 3.0 master.

The client is the real-cluster anchor's bench_jobs.py (a LUXI client on
Debian's Ganeti 3.0 Python, run with /usr/bin/python3), unchanged, for both
masters:

  * single: R times SubmitJob([OP_TEST_DELAY duration D on_master]), then
    QueryJobs every 10 ms until the job is final -> median submit->final
    wall time (and the server's received->end from the job's timestamps);
  * batch: one SubmitManyJobs of N such jobs, QueryJobs every 50 ms until all
    are final -> N / wall time = jobs/s (client), and N / (first received ->
    last end) from the server's timestamps.

Ours: ganeti-masterd -f in a temporary GANETI_ROOTDIR with the ssconf files
the Ganeti client needs (GANETI_HOSTNAME names the master); bench_jobs.py
finds its LUXI socket there (Ganeti's pathutils honour both variables). Its
job queue is on the same file system as the temporary directory, and every
state change of every job is fsynced before it is visible (masterd.engine).

The real master: only on request (`run_bench.py --jobs-real`, `make
bench-real`), because the anchor changes the machine (/etc/hosts entries, a
bridge, sshd, a UTS namespace): up.sh, bench_jobs.py inside the namespace
(gns), down.sh. Without it the baseline is the reference measured on the
real master (REFERENCE, from real-cluster-notes.md), labelled as such.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.bench import pyspy as profiling
from tools.bench.procs import BenchError, Processes

HOSTNAME = "node1"
DEBIAN_PYTHON = "/usr/bin/python3"
#: Targets of issue 4: ours/real jobs/s, and ours/real single submit->success median.
TARGET_THROUGHPUT = 30.0
TARGET_LATENCY = 0.1


@dataclass(frozen=True)
class Reference:
    """Figures measured on the real Ganeti 3.0.2 master, not in this run."""

    jobs_per_s: float
    single_median_s: float
    source: str


#: The fastest real run with these settings (200 jobs, duration 0.001, on_master): run B2_dur0.001_master of
#: "All job-throughput runs" (load 2.95): 8.244 jobs/s, single submit->final median 0.163 s
#: (the other real runs: 7.358 jobs/s / 0.171 s at load 2.57; 1.845 / 0.608 at load 5-8).
REFERENCE = Reference(
    jobs_per_s=8.244, single_median_s=0.163,
    source="shared/reference/real-cluster-notes.md, run B2_dur0.001_master (Ganeti 3.0.2 luxid, "
           "bench_jobs.py 200 --duration 0.001, this machine, load 2.95; the fastest of its real runs)")


@dataclass
class JobsRun:
    """One bench_jobs.py run against one master."""

    master: str
    jobs_per_s: float          # client: N / (SubmitManyJobs -> all final)
    jobs_per_s_server: float   # N / (first received -> last end), server timestamps
    batch_wall_s: float
    batch_statuses: dict[str, int]
    single_median_s: float     # client: SubmitJob -> final, median
    single_server_median_s: float  # received -> end, median
    single_statuses: list[str]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_output(cls, master: str, data: dict[str, Any]) -> JobsRun:
        single, batch = data["single"], data["batch"]
        return cls(master, float(batch["jobs_per_s_client"]), float(batch["jobs_per_s_server"]),
                   float(batch["wall_submit_to_all_final_s"]), dict(batch["final_status_counts"]),
                   float(single["client_rtt_s"]["median"]), float(single["server_received_to_end_s_median"]),
                   list(single["statuses"]), data)

    @property
    def all_succeeded(self) -> bool:
        return set(self.batch_statuses) == {"success"} and self.single_statuses == ["success"]


@dataclass
class JobsSettings:
    n: int = 200
    reps: int = 10
    duration: float = 0.001
    rounds: int = 2
    real: bool = False


@dataclass
class JobsResult:
    settings: JobsSettings
    ours: list[JobsRun]
    real: list[JobsRun]
    commands: list[str]
    notes: list[str] = field(default_factory=list)

    def median(self, runs: list[JobsRun], attr: str) -> float | None:
        values = [float(getattr(r, attr)) for r in runs]
        return statistics.median(values) if values else None

    def baseline(self) -> tuple[float, float, str]:
        """(jobs/s, single median s, label) of the real master: measured now, or the reference."""
        if self.real:
            jobs = self.median(self.real, "jobs_per_s")
            single = self.median(self.real, "single_median_s")
            assert jobs is not None and single is not None
            return jobs, single, "real Ganeti 3.0 master, this run"
        return (REFERENCE.jobs_per_s, REFERENCE.single_median_s,
                "real Ganeti 3.0 master, reference, not this run")

    @property
    def errors(self) -> int:
        return sum(1 for r in self.ours + self.real if not r.all_succeeded)

    def summary(self) -> dict[str, Any]:
        jobs, single, label = self.baseline()
        ours_jobs = self.median(self.ours, "jobs_per_s")
        ours_single = self.median(self.ours, "single_median_s")
        return {
            "settings": vars(self.settings), "commands": self.commands, "notes": self.notes,
            "baseline": {"label": label, "jobs_per_s": jobs, "single_median_s": single,
                         "source": None if self.real else REFERENCE.source},
            "ours_median_jobs_per_s": ours_jobs, "ours_median_single_s": ours_single,
            "throughput_ratio": None if ours_jobs is None else round(ours_jobs / jobs, 2),
            "latency_ratio": None if ours_single is None else round(ours_single / single, 4),
            "ours": [r.raw for r in self.ours], "real": [r.raw for r in self.real],
        }


# -- our master --------------------------------------------------------------------------------------
def make_root(base: Path) -> Path:
    """A GANETI_ROOTDIR for one master node named HOSTNAME, with the ssconf files the Ganeti CLI reads."""
    root = base / HOSTNAME
    data = root / "var" / "lib" / "ganeti"
    data.mkdir(parents=True)
    for key, value in {"master_node": HOSTNAME, "cluster_name": "cluster.example.com", "node_list": HOSTNAME,
                       "node_primary_ips": f"{HOSTNAME} 127.0.0.1", "master_netdev": "lo",
                       "primary_ip_family": "2", "release_version": "3.0.2"}.items():
        (data / f"ssconf_{key}").write_text(value + "\n")
    return root


def master_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GANETI_ROOTDIR=str(root), GANETI_HOSTNAME=root.name)
    env.pop("PYTHONPATH", None)
    return env


def start_ours(procs: Processes, base: Path, timeout: float = 30.0) -> tuple[int, Path]:
    """Our ganeti-masterd in the foreground in a new root below `base`; (pid, root) once LUXI answers."""
    masterd = Path(sys.executable).parent / "ganeti-masterd"
    if not masterd.exists():
        raise BenchError(f"{masterd} not found: run the benchmark with the project's venv python "
                         f"(make bench, or .venv/bin/python tools/bench/run_bench.py)")
    root = make_root(base / "masterd")
    proc = procs.start("masterd", [str(masterd), "-f"], env=master_env(root))
    sock = root / "var" / "run" / "ganeti" / "socket" / "ganeti-query"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BenchError(f"ganeti-masterd exited with status {proc.returncode} at start; its log "
                             f"({procs.log_path('masterd')}) ends with:\n{procs.tail('masterd')}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            return proc.pid, root
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"ganeti-masterd does not listen on {sock} after {timeout:.0f} s; see "
                                 f"{procs.log_path('masterd')}") from None
            time.sleep(0.05)


# -- bench_jobs.py -------------------------------------------------------------------------------------
def bench_argv(script: Path, settings: JobsSettings, out: Path) -> list[str]:
    return [DEBIAN_PYTHON, str(script), str(settings.n), "--duration", f"{settings.duration:g}",
            "--reps", str(settings.reps), "--json", str(out)]


def run_client(procs: Processes, name: str, argv: list[str], env: dict[str, str], out: Path,
               cwd: str | None = None, timeout: float = 900.0) -> dict[str, Any]:
    proc = procs.start(name, argv, env=env, cwd=cwd)
    try:
        status = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{name} did not finish within {timeout:.0f} s; see "
                         f"{procs.log_path(name)}") from None
    procs.forget(proc)
    if status != 0 or not out.exists():
        raise BenchError(f"{name} failed (status {status}); its log ({procs.log_path(name)}) ends with:\n"
                         f"{procs.tail(name)}")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


class _Spy:
    """py-spy recording our master (all threads) until stopped; raw stacks into `out`."""

    def __init__(self, procs: Processes, pid: int, out: Path) -> None:
        exe = profiling.py_spy()
        if exe is None:
            raise BenchError("--profile needs py-spy (.venv/bin/pip install py-spy)")
        self.procs = procs
        self.proc = procs.start(f"py-spy-{out.stem}", [exe, "record", "-p", str(pid), "--nonblocking",
                                                       "-r", "200", "-f", "raw", "-o", str(out)])
        time.sleep(0.5)  # attached before the load starts

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        self.procs.stop(self.proc)
        self.procs.forget(self.proc)


class JobsBench:
    """Runs the rounds: ours (and the real master with settings.real), alternating, ABBA."""

    def __init__(self, settings: JobsSettings, anchor: Path, tmp: Path, log: Callable[[str], None],
                 profile_dir: Path | None = None) -> None:
        self.settings = settings
        self.anchor = anchor
        self.script = anchor / "bench_jobs.py"
        self.tmp = tmp
        self.log = log
        self.profile_dir = profile_dir
        self.result = JobsResult(settings, [], [], [])

    def check(self) -> None:
        if not self.script.exists():
            raise BenchError(f"{self.script} not found: pass --jobs-anchor DIR (the real-cluster anchor "
                             f"folder)")
        if not Path(DEBIAN_PYTHON).exists() or not Path("/usr/share/ganeti/3.0/ganeti/luxi.py").exists():
            raise BenchError("bench_jobs.py needs Debian's Ganeti 3.0 Python (/usr/share/ganeti/3.0) and "
                             "/usr/bin/python3: install the ganeti package (make setup does)")
        if self.settings.real:
            for name in ("up.sh", "down.sh", "gns"):
                if not (self.anchor / name).exists():
                    raise BenchError(f"{self.anchor / name} not found: --jobs-real needs the real-cluster "
                                     f"anchor")

    def run(self, procs: Processes) -> JobsResult:
        self.check()
        pid, root = start_ours(procs, self.tmp)
        self.log(f"jobs: our ganeti-masterd pid {pid}, root {root}")
        real_up = False
        try:
            if self.settings.real:
                self._anchor(procs, "up.sh")
                real_up = True
            for r in range(self.settings.rounds):
                order = ["ours", "real"] if self.settings.real else ["ours"]
                if r % 2:
                    order.reverse()
                for master in order:
                    if master == "ours":
                        run = self._ours(procs, root, pid, r)
                    else:
                        run = self._real(procs, r)
                    (self.result.ours if master == "ours" else self.result.real).append(run)
                    self.log(f"  jobs round {r + 1} {master}: {run.jobs_per_s:.1f} jobs/s "
                             f"(server {run.jobs_per_s_server:.1f}), single median "
                             f"{1000 * run.single_median_s:.1f} ms, batch {run.batch_statuses}")
        finally:
            if real_up:
                self._anchor(procs, "down.sh")
        return self.result

    def _ours(self, procs: Processes, root: Path, pid: int, r: int) -> JobsRun:
        out = self.tmp / f"jobs-ours-{r + 1}.json"
        argv = bench_argv(self.script, self.settings, out)
        if r == 0:
            self.result.commands.append(f"GANETI_ROOTDIR={root} GANETI_HOSTNAME={root.name} {' '.join(argv)}")
        spy = None
        if self.profile_dir is not None:
            spy = _Spy(procs, pid, self.profile_dir / f"jobs-{self.settings.n}-{r + 1}.txt")
        try:
            data = run_client(procs, f"bench-jobs-ours-{r + 1}", argv, master_env(root), out)
        finally:
            if spy is not None:
                spy.stop()
        return JobsRun.from_output("ours", data)

    def _real(self, procs: Processes, r: int) -> JobsRun:
        out = self.tmp / f"jobs-real-{r + 1}.json"
        argv = [str(self.anchor / "gns"), *bench_argv(self.script, self.settings, out)]
        if r == 0:
            self.result.commands.append(" ".join(argv))
        env = {k: v for k, v in os.environ.items()
               if k not in ("GANETI_ROOTDIR", "GANETI_HOSTNAME", "PYTHONPATH")}
        data = run_client(procs, f"bench-jobs-real-{r + 1}", argv, env, out, cwd=str(self.anchor))
        return JobsRun.from_output("real", data)

    def _anchor(self, procs: Processes, script: str) -> None:
        name = f"anchor-{script}"
        self.log(f"jobs: running the real-cluster anchor's {script} (see {procs.log_path(name)})")
        proc = procs.start(name, [str(self.anchor / script)], cwd=str(self.anchor))
        status = proc.wait(1800)
        procs.forget(proc)
        if status != 0:
            raise BenchError(f"{self.anchor / script} failed (status {status}); its log "
                             f"({procs.log_path(name)}) ends with:\n{procs.tail(name)}")


# -- report -------------------------------------------------------------------------------------------
def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(result: JobsResult, started: str) -> str:
    s = result.settings
    jobs, single, label = result.baseline()
    out = [f"## Master daemon: job throughput ({started})", "",
           f"bench_jobs.py (real-cluster anchor, Debian's Ganeti 3.0 LUXI client): {s.n} OP_TEST_DELAY "
           f"jobs (duration {s.duration:g} s, on the master) in one SubmitManyJobs, QueryJobs every 50 ms "
           f"until all are final; single job: SubmitJob, QueryJobs every 10 ms, median of {s.reps}. "
           f"{s.rounds} round(s) per master. Ours fsyncs every job state change before anyone can see it.",
           "",
           _row(["master", "round", "jobs/s (client)", "jobs/s (server)", "batch wall s", "batch statuses",
                 "single submit->success median ms", "single server received->end median ms"]),
           _row(["---", "---:", "---:", "---:", "---:", "---", "---:", "---:"])]
    for run_list in (result.ours, result.real):
        for i, run in enumerate(run_list):
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(run.batch_statuses.items()))
            out.append(_row([run.master, str(i + 1), f"{run.jobs_per_s:.1f}", f"{run.jobs_per_s_server:.1f}",
                             f"{run.batch_wall_s:.3f}", statuses, f"{1000 * run.single_median_s:.1f}",
                             f"{1000 * run.single_server_median_s:.1f}"]))
    if not result.real:
        out.append(_row(["real Ganeti 3.0 (**reference, not this run**)", "-", f"{REFERENCE.jobs_per_s:.3f}",
                         "-", f"{200 / REFERENCE.jobs_per_s:.3f}", "success 200",
                         f"{1000 * REFERENCE.single_median_s:.0f}", "-"]))
    ours_jobs = result.median(result.ours, "jobs_per_s")
    ours_single = result.median(result.ours, "single_median_s")
    out += ["", _row(["measure", "ours (median of rounds)", f"baseline: {label}", "ours/baseline", "target",
                      ""]),
            _row(["---", "---:", "---:", "---:", "---:", "---"])]
    if ours_jobs is not None and ours_single is not None:
        t_ratio, l_ratio = ours_jobs / jobs, ours_single / single
        out.append(_row(["jobs/s", f"{ours_jobs:.1f}", f"{jobs:.3f}", f"{t_ratio:.1f}x",
                         f">= {TARGET_THROUGHPUT:g}x",
                         "ok" if t_ratio >= TARGET_THROUGHPUT else "**MISSED**"]))
        out.append(_row(["single submit->success median", f"{1000 * ours_single:.1f} ms",
                         f"{1000 * single:.0f} ms", f"{l_ratio:.3f}", f"<= {TARGET_LATENCY:g}",
                         "ok" if l_ratio <= TARGET_LATENCY else "**MISSED**"]))
    if not result.real:
        out += ["", f"Baseline: reference, not this run — {REFERENCE.source}. Measure the real master in the "
                    f"same run with `make bench-real` (changes the machine: /etc/hosts, a bridge, sshd)."]
    out += ["", "Commands: " + "; ".join(f"`{c}`" for c in result.commands)]
    failed = [r for r in result.ours + result.real if not r.all_succeeded]
    for run in failed:
        out.append(f"\n{run.master}: not every job succeeded: batch {run.batch_statuses}, single "
                   f"{run.single_statuses}")
    return "\n".join(out)
