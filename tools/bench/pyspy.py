"""Sampling our daemon with py-spy while it is measured, and the functions that took the time.

    python tools/bench/pyspy.py FILE...     # summarise py-spy raw (collapsed) stack files

run_bench.py --profile DIR records every measured run of our daemon (all its
processes, non-blocking sampling, so the figures of those runs include a small
sampling cost) into DIR/<comparison>-<n>-<round>.txt and prints this summary.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

_LINE_NO = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    """The py-spy next to this python (pip install py-spy into the venv), or on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def record_argv(pid: int, seconds: float, out: Path) -> list[str]:
    exe = py_spy()
    if exe is None:
        raise FileNotFoundError("py-spy not found: .venv/bin/pip install py-spy")
    return [exe, "record", "-p", str(pid), "--subprocesses", "--nonblocking", "-r", "200",
            "-d", str(max(1, round(seconds))), "-f", "raw", "-o", str(out)]


def _frame_name(frame: str) -> str:
    """'handle (compat_jsonrpc/app.py:42)' -> 'handle (compat_jsonrpc/app.py)'."""
    return _LINE_NO.sub(")", frame.strip())


def summarise(files: list[Path], top: int = 20) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
            frames = [f for f in frames if not f.startswith("process ")]
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            for name in set(frames):
                inclusive[name] += count
    if not total:
        return "no samples"
    out = [f"{total} samples of busy threads", "", "self time:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    out += ["", "inclusive time:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    print(summarise(args.files, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
