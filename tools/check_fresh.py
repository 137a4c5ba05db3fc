"""Fail when a generated directory differs from a fresh generation.

    python tools/check_fresh.py DIR -- COMMAND...

Snapshots DIR, runs COMMAND (which regenerates DIR in place), and compares.
On a difference it prints the changed files and exits 1: the committed copy is
stale; run the generator and commit the result.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    before = snapshot(root) if root.exists() else {}
    subprocess.run(argv[2:], check=True)
    after = snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print(f"{root}/ is out of date with its sources; regenerate and commit it:", file=sys.stderr)
        for name in changed:
            print(f"  {name}", file=sys.stderr)
        return 1
    print(f"{root}/ is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
