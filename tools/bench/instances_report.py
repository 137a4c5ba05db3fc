"""The `instances` scenario's Markdown table: per call, ours beside the real ganeti-noded."""

from __future__ import annotations

from tools.bench.instances import Result, Series


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def _range(s: Series) -> str:
    return "-" if not s.seconds else f"{_ms(s.min_ms)}–{_ms(s.max_ms)}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(result: Result, started: str) -> str:
    out = [f"## Instance and disk calls, ours vs the real ganeti-noded 3.0 ({started})", ""]
    out += [" ".join(result.notes), ""]
    out += [_row(["call", "on", "time until", "ours median ms", "ours min–max", "real median ms",
                  "real min–max", "real/ours", "errors ours/real"]),
            _row(["---", "---", "---", "---:", "---:", "---:", "---:", "---:", "---:"])]
    for r in result.rows:
        if r.real is None:
            real_median, real_range, ratio, real_errors = f"n/a ({r.real_note})", "-", "-", "-"
        else:
            real_median, real_range = _ms(r.real.median_ms), _range(r.real)
            a, b = r.ours.median_ms, r.real.median_ms
            ratio = f"{b / a:.1f}x" if a and b is not None else "-"
            real_errors = str(r.real.errors)
        out.append(_row([f"`{r.call}`", r.subject, r.until, _ms(r.ours.median_ms), _range(r.ours),
                         real_median, real_range, ratio, f"{r.ours.errors}/{real_errors}"]))
    for r in result.rows:
        for label, s in (("ours", r.ours), ("real", r.real)):
            if s is not None and s.errors:
                out.append(f"\n{r.call} ({r.subject}, {r.until}) {label}: {s.errors} failed; "
                           f"first: {s.first_error}")
    out += ["", "real/ours: the real noded's median over ours (above 1: ours is faster). Both daemons at "
                "their defaults (memory locked); the real one forks a child per call."]
    return "\n".join(out)
