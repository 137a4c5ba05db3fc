"""Regenerate docs/api/ (Markdown and HTML API reference) from proto/.

Runs grpc_tools.protoc with our plugin tools/protoc_gen_apidocs.py, through a
small wrapper executable written to a temporary directory (protoc wants an
executable file; the wrapper execs this Python on the plugin), and replaces
docs/api/ with the result. The output is deterministic, so
`python tools/gen_docs.py --check` can tell CI whether docs/api/ is fresh.

Usage: gen_docs.py [--proto-dir DIR] [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import filecmp
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "tools" / "protoc_gen_apidocs.py"


def _write_wrapper(directory: Path) -> Path:
    wrapper = directory / "protoc-gen-apidocs"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(PLUGIN))} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def generate(proto_dir: Path, out_dir: Path) -> None:
    """Run protoc with the docs plugin over every .proto under proto_dir, writing into out_dir."""
    import grpc_tools
    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
    if not protos:
        raise SystemExit(f"gen_docs: no .proto files under {proto_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gen-docs-") as tmp:
        wrapper = _write_wrapper(Path(tmp))
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}",
               f"--plugin=protoc-gen-apidocs={wrapper}", f"--apidocs_out={out_dir}", *protos]
        result = subprocess.run(cmd, cwd=proto_dir, check=False)
        if result.returncode != 0:
            raise SystemExit(f"gen_docs: protoc failed (exit {result.returncode}): {shlex.join(cmd)}")


def _differences(fresh: Path, current: Path) -> list[str]:
    names = {p.name for p in fresh.iterdir()}
    if current.is_dir():
        names |= {p.name for p in current.iterdir()}
    diffs = []
    for name in sorted(names):
        a, b = fresh / name, current / name
        if not b.exists():
            diffs.append(f"missing: {b}")
        elif not a.exists():
            diffs.append(f"stale (no longer generated): {b}")
        elif not filecmp.cmp(a, b, shallow=False):
            diffs.append(f"differs: {b}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--proto-dir", type=Path, default=ROOT / "proto", help="proto root (default: proto/)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "api",
                        help="output dir (default: docs/api/)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when the output dir differs from a fresh generation")
    args = parser.parse_args(argv)
    proto_dir, out = args.proto_dir.resolve(), args.out.resolve()
    with tempfile.TemporaryDirectory(prefix="gen-docs-out-") as tmp:
        fresh = Path(tmp)
        generate(proto_dir, fresh)
        if args.check:
            diffs = _differences(fresh, out)
            for d in diffs:
                print(d, file=sys.stderr)
            if diffs:
                print(f"{out} is out of date: run `python tools/gen_docs.py`", file=sys.stderr)
                return 1
            return 0
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(fresh, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
