"""Figures of one measurement (one server, one load, one or more rounds) and how rounds add up."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear-interpolated percentile of an already sorted list (p in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(sorted_values) - 1)
    return sorted_values[f] + (sorted_values[c] - sorted_values[f]) * (k - f)


@dataclass
class Measurement:
    """Calls completed in a time window, their latencies and the CPU spent by server and client.

    `latencies_ms` is kept when the load generator reports every call (then
    rounds merge exactly); bench_noded.py reports only percentiles, and those
    are averaged over rounds, weighted by calls.
    """

    ok: int
    errors: int
    seconds: float
    mean_ms: float | None
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    other_cpu_s: float | None = None  # the rest of the machine (other processes) in the window
    first_error: str | None = None
    rounds: int = 1
    loadavg: float | None = None
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def from_latencies(cls, latencies_ms: list[float], errors: int, seconds: float,
                       **extra: Any) -> Measurement:
        lat = sorted(latencies_ms)
        return cls(ok=len(lat), errors=errors, seconds=seconds,
                   mean_ms=statistics.fmean(lat) if lat else None,
                   p50_ms=percentile(lat, 50) if lat else None,
                   p99_ms=percentile(lat, 99) if lat else None,
                   latencies_ms=lat, **extra)

    @property
    def calls_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_ms_per_call(self) -> float | None:
        if self.server_cpu_s is None or not self.ok:
            return None
        return 1000.0 * self.server_cpu_s / self.ok

    @property
    def client_cores(self) -> float | None:
        """Client CPU seconds per wall second (1.0 = one core busy)."""
        if self.client_cpu_s is None or self.seconds <= 0:
            return None
        return self.client_cpu_s / self.seconds

    @property
    def server_cores(self) -> float | None:
        if self.server_cpu_s is None or self.seconds <= 0:
            return None
        return self.server_cpu_s / self.seconds

    @property
    def other_cores(self) -> float | None:
        """CPU used by everything else on the machine, per wall second (noise)."""
        if self.other_cpu_s is None or self.seconds <= 0:
            return None
        return max(0.0, self.other_cpu_s / self.seconds)

    def summary(self) -> dict[str, Any]:
        """The figures, for the JSON file (no per-call latencies)."""
        def r(x: float | None, nd: int = 3) -> float | None:
            return None if x is None else round(x, nd)
        return {
            "ok_calls": self.ok, "errors": self.errors, "first_error": self.first_error,
            "seconds": r(self.seconds), "rounds": self.rounds, "calls_per_s": r(self.calls_per_s, 1),
            "latency_ms": {"mean": r(self.mean_ms), "p50": r(self.p50_ms), "p99": r(self.p99_ms)},
            "server_cpu_ms_per_call": r(self.server_ms_per_call),
            "server_cpu_cores": r(self.server_cores),
            "client_cpu_cores": r(self.client_cores),
            "other_cpu_cores": r(self.other_cores),
            "loadavg_1min_before": self.loadavg,
        }


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _weighted(ms: list[Measurement], attr: str) -> float | None:
    pairs = [(getattr(m, attr), m.ok) for m in ms if getattr(m, attr) is not None and m.ok]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else None


def combine(ms: list[Measurement]) -> Measurement:
    """Several rounds of the same measurement as one."""
    if not ms:
        raise ValueError("nothing to combine")
    errors = sum(m.errors for m in ms)
    seconds = sum(m.seconds for m in ms)
    server: float | None = 0.0
    client: float | None = 0.0
    other: float | None = 0.0
    for m in ms:
        server = _add(server, m.server_cpu_s)
        client = _add(client, m.client_cpu_s)
        other = _add(other, m.other_cpu_s)
    first_error = next((m.first_error for m in ms if m.first_error), None)
    loads = [m.loadavg for m in ms if m.loadavg is not None]
    extra: dict[str, Any] = {"server_cpu_s": server, "client_cpu_s": client, "other_cpu_s": other,
                             "first_error": first_error,
                             "rounds": sum(m.rounds for m in ms),
                             "loadavg": max(loads) if loads else None}
    if all(m.latencies_ms or not m.ok for m in ms):
        merged = [x for m in ms for x in m.latencies_ms]
        return Measurement.from_latencies(merged, errors, seconds, **extra)
    return Measurement(ok=sum(m.ok for m in ms), errors=errors, seconds=seconds,
                       mean_ms=_weighted(ms, "mean_ms"), p50_ms=_weighted(ms, "p50_ms"),
                       p99_ms=_weighted(ms, "p99_ms"), **extra)


def median_ms(values: list[float]) -> str:
    """The median of `values` (seconds) in whole milliseconds, "-" for none."""
    return f"{1000 * statistics.median(values):.0f}" if values else "-"


def spread_ms(values: list[float]) -> str:
    """min-max of `values` (seconds) in whole milliseconds, "-" for none."""
    return f"{1000 * min(values):.0f}-{1000 * max(values):.0f}" if values else "-"
