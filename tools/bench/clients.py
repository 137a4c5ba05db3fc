"""Driving the load: bench_noded.py for new-connection calls, our load generators for the rest.

The CPU of the server and of the client processes is read from /proc over
exactly the measured window, so that each figure says what a call cost, not
only how fast it came back (client and server share the machine's 2 cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.bench import pyspy as profiling
from tools.bench.loadgen import Result
from tools.bench.procs import (
    BenchError,
    Processes,
    children_cpu_seconds,
    cpu_seconds,
    loadavg,
    machine_busy_seconds,
    read_line,
)
from tools.bench.servers import REPO, Certs, Server
from tools.bench.stats import Measurement


@dataclass
class BenchNoded:
    """The anchor's bench_noded.py, run with Debian's python (it needs only the stdlib for --client ssl)."""

    script: Path
    python: str = "/usr/bin/python3"
    client: str = "ssl"

    def run(self, procs: Processes, server: Server, certs: Certs, concurrency: int, duration: float,
            out: Path, profile: Path | None = None) -> Measurement:
        argv = [self.python, str(self.script), "--client", self.client, "--host", server.address,
                "--port", str(server.port), "--server-cert", str(certs.server_pem),
                "--client-cert", str(certs.client_pem), "-c", str(concurrency),
                "--duration", str(duration), "--json", str(out)]
        load = loadavg()
        name = f"bench_noded-{server.name}-c{concurrency}"
        # Server CPU over the whole run (its own --server-pid misses live worker processes);
        # the few warm-up calls it makes before its window add a negligible share.
        cpu_before = cpu_seconds(server.pid)
        busy_before, children_before, t0 = machine_busy_seconds(), children_cpu_seconds(), time.time()
        proc = procs.start(name, argv)
        spy = _start_profiler(procs, server, duration + 1, profile)
        try:
            status = proc.wait(duration + 120)
        except subprocess.TimeoutExpired as err:
            raise BenchError(f"{name} did not finish; see {procs.log_path(name)}") from err
        time.sleep(0.3)  # the real noded reaps its last children
        cpu_after = cpu_seconds(server.pid)
        busy_after, children_after, elapsed = machine_busy_seconds(), children_cpu_seconds(), time.time() - t0
        procs.forget(proc)
        _wait_profiler(procs, spy)
        if not out.exists():
            raise BenchError(f"{name} exited with status {status} and wrote no result; its log "
                             f"({procs.log_path(name)}) ends with:\n{procs.tail(name)}")
        s = json.loads(out.read_text())
        ok = int(s["ok_calls"])
        lat = s["latency_ms"]
        client_ms = s.get("client_cpu_ms_per_call")
        errors = int(s["errors"])
        if status != 0 and not errors:  # it failed without counting a failed call: count one
            errors = 1
            s["first_error"] = s.get("first_error") or f"bench_noded.py exited with status {status}"
        window = float(s["window_s"])
        server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        other = None
        if busy_before is not None and busy_after is not None and server_cpu is not None:
            # everything but the server and the whole bench_noded run, scaled to its window
            other = (busy_after - busy_before - server_cpu - (children_after - children_before)) \
                * window / max(elapsed, window)
        return Measurement(
            ok=ok, errors=errors, seconds=window, other_cpu_s=other, mean_ms=lat["mean"], p50_ms=lat["p50"],
            p99_ms=lat["p99"], first_error=s.get("first_error"), loadavg=load,
            server_cpu_s=server_cpu,
            client_cpu_s=None if client_ms is None else client_ms * ok / 1000.0)


def _start_profiler(procs: Processes, server: Server, seconds: float,
                    out: Path | None) -> subprocess.Popen[Any] | None:
    """py-spy recording `server` for `seconds` into `out` (none when `out` is None)."""
    if out is None:
        return None
    return procs.start(f"py-spy-{out.stem}", profiling.record_argv(server.pid, seconds, out))


def _wait_profiler(procs: Processes, spy: subprocess.Popen[Any] | None) -> None:
    """Let py-spy finish writing (it stops by itself); stop it if it does not."""
    if spy is None:
        return
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        procs.stop(spy)
    procs.forget(spy)


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass
class LoadGen:
    """Several processes of load_http.py or load_grpc.py (kind "http" or "grpc") sharing one window."""

    kind: str
    processes: int
    warmup: float

    def run(self, procs: Processes, server: Server, certs: Certs, concurrency: int,
            duration: float, profile: Path | None = None) -> Measurement:
        script = REPO / "tools" / "bench" / f"load_{self.kind}.py"
        per_proc = "--connections" if self.kind == "http" else "--callers"
        started = []
        spy: subprocess.Popen[Any] | None = None
        try:
            for i, n in enumerate(_split(concurrency, self.processes)):
                name = f"load_{self.kind}-{server.name}-{concurrency}-{i}"
                argv = [sys.executable, str(script), "--host", server.address, "--port", str(server.port),
                        "--ca", str(certs.server_pem), "--cert", str(certs.client_pem), per_proc, str(n),
                        "--warmup", str(self.warmup), "--duration", str(duration),
                        "--result", str(procs.log_dir / f"{name}.json")]
                started.append((name, procs.start(name, argv, pipes=True)))
            for name, proc in started:
                line = read_line(name, proc.stdout, proc, procs, 60)  # type: ignore[arg-type]
                if line != "ready":
                    raise BenchError(f"{name}: expected 'ready', got {line[:200]!r}")
            load = loadavg()
            start = time.time() + 0.1
            for _, proc in started:
                assert proc.stdin is not None
                proc.stdin.write(f"go {start!r}\n")
                proc.stdin.flush()
            pids = [server.pid] + [p.pid for _, p in started]
            time.sleep(max(0.0, start + self.warmup - time.time()))
            spy = _start_profiler(procs, server, duration, profile)
            busy_before = machine_busy_seconds()
            before = [cpu_seconds(pid) for pid in pids]
            time.sleep(max(0.0, start + self.warmup + duration - time.time()))
            after = [cpu_seconds(pid) for pid in pids]
            busy_after = machine_busy_seconds()
            results = []
            for name, proc in started:
                line = read_line(name, proc.stdout, proc, procs, duration + 60)  # type: ignore[arg-type]
                if line != "done":
                    raise BenchError(f"{name}: expected 'done', got {line[:200]!r}")
                results.append(Result.from_json((procs.log_dir / f"{name}.json").read_text()))
                proc.wait(30)
        finally:
            for _, proc in started:
                procs.stop(proc)
                procs.forget(proc)
            _wait_profiler(procs, spy)
        deltas = [None if b is None or a is None else a - b for b, a in zip(before, after, strict=True)]
        server_cpu = deltas[0]
        client_parts = deltas[1:]
        client_cpu = None if any(d is None for d in client_parts) else sum(d for d in client_parts if d)
        other = None
        if busy_before is not None and busy_after is not None and server_cpu is not None \
                and client_cpu is not None:
            other = busy_after - busy_before - server_cpu - client_cpu
        latencies = [us / 1000.0 for r in results for us in r.latencies_us]
        return Measurement.from_latencies(
            latencies, errors=sum(r.errors for r in results), seconds=duration,
            server_cpu_s=server_cpu, client_cpu_s=client_cpu, other_cpu_s=other, loadavg=load,
            first_error=next((r.first_error for r in results if r.first_error), None))
