"""The results: one Markdown table of figures, one of ratios against the targets, and the JSON file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tools.bench.stats import Measurement

N_LABEL = {"legacy-new": "procs", "legacy-keepalive": "conns", "grpc": "in flight"}


@dataclass
class Point:
    """One comparison at one concurrency: ours against the baseline."""

    scenario: str
    n: int
    baseline: str
    target: float  # ours/baseline calls/s must be at least this
    ours: Measurement
    base: Measurement

    @property
    def ratio(self) -> float | None:
        return self.ours.calls_per_s / self.base.calls_per_s if self.base.calls_per_s else None

    @property
    def cpu_ratio(self) -> float | None:
        """Server CPU per call, ours / baseline (below 1: ours spends less)."""
        a, b = self.ours.server_ms_per_call, self.base.server_ms_per_call
        return a / b if a is not None and b else None

    @property
    def met(self) -> bool:
        return self.ratio is not None and self.ratio >= self.target


def _f(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(points: list[Point], settings: dict[str, Any], machine: dict[str, Any]) -> str:
    out = [f"## Node daemon benchmark ({machine['started']})", "",
           f"{machine['platform']}, {machine['cpus']} CPUs shared by clients and servers; "
           f"{settings['duration_s']:g} s measured per run, {settings['rounds']} rounds per server "
           f"alternating, warm-up {settings['warmup_s']:g} s; load-generator processes: "
           f"{settings['client_procs']}; legacy-new client: bench_noded.py --client "
           f"{settings['legacy_client']}; our daemon's extra options: "
           f"{' '.join(settings.get('ours_options') or []) or 'none (its defaults)'}.", ""]
    procs = settings.get("server_processes") or {}
    if procs:
        out += ["Processes serving each door: " + "; ".join(
            f"{name}: ours {v['ours']}, baseline {v['baseline']}" for name, v in procs.items())
            + " (the real noded forks one child per call).", ""]
    if not points:
        out.append("No measurement completed.")
        return "\n".join(out)
    out += [_row(["comparison", "n", "server", "calls/s", "mean ms", "p50 ms", "p99 ms",
                  "server CPU ms/call", "server cores", "client cores", "other cores", "errors"]),
            _row(["---"] * 3 + ["---:"] * 9)]
    for p in points:
        for label, m in (("ours", p.ours), (p.baseline, p.base)):
            out.append(_row([p.scenario, f"{p.n} {N_LABEL.get(p.scenario, '')}".strip(), label,
                             _f(m.calls_per_s), _f(m.mean_ms, 2), _f(m.p50_ms, 2), _f(m.p99_ms, 2),
                             _f(m.server_ms_per_call, 3), _f(m.server_cores, 2), _f(m.client_cores, 2),
                             _f(m.other_cores, 2), str(m.errors)]))
    out += ["", _row(["comparison", "n", "ours calls/s", "baseline", "baseline calls/s",
                      "ours/baseline", "target", "", "server CPU/call ours/baseline"]),
            _row(["---", "---:", "---:", "---", "---:", "---:", "---:", "---", "---:"])]
    for p in points:
        out.append(_row([p.scenario, str(p.n), _f(p.ours.calls_per_s), p.baseline, _f(p.base.calls_per_s),
                         _f(p.ratio, 2) + "x", f">= {p.target:g}x", "ok" if p.met else "**MISSED**",
                         _f(p.cpu_ratio, 2)]))
    noise = [m.other_cores for p in points for m in (p.ours, p.base) if m.other_cores is not None]
    if noise and max(noise) > 0.3:
        out.append(f"\nNOISY: other work on the machine used up to {max(noise):.2f} cores during the "
                   f"measured windows (mean {sum(noise) / len(noise):.2f}); calls/s ratios swing with it, "
                   f"server CPU per call much less.")
    errors = [p for p in points if p.ours.errors or p.base.errors]
    for p in errors:
        for label, m in (("ours", p.ours), (p.baseline, p.base)):
            if m.errors:
                out.append(f"\n{p.scenario} n={p.n} {label}: {m.errors} failed calls; first: {m.first_error}")
    out += ["", "n: legacy-new, client processes each making one call per new TLS connection; "
                "legacy-keepalive, persistent connections; grpc, calls in flight on one channel.",
            "", "cores: CPU seconds per second of the measured window (1.00 = one core busy) of the "
                "server (all its processes), of the client (load generator; for legacy-new its worker "
                "processes inside their window), and of everything else on the machine (other cores: "
                "noise from other work; well above 0 means the run shared the machine). Clients and "
                "servers share the 2 cores: when client + server approach 2, the figures understate "
                "the server."]
    return "\n".join(out)


def to_json(points: list[Point], settings: dict[str, Any], machine: dict[str, Any],
            failure: str | None) -> dict[str, Any]:
    return {
        "machine": machine, "settings": settings, "failure": failure,
        "points": [{"scenario": p.scenario, "n": p.n, "baseline": p.baseline, "target_ratio": p.target,
                    "ratio": None if p.ratio is None else round(p.ratio, 3), "met": p.met,
                    "server_cpu_ratio": None if p.cpu_ratio is None else round(p.cpu_ratio, 3),
                    "ours": p.ours.summary(), "base": p.base.summary()} for p in points],
    }
