"""Run snippets of the real Ganeti 3.0.2 (Debian package) to compare results with ours.

The snippet runs in a subprocess with the system Python and Ganeti's own
tree on PYTHONPATH; with `root` set it runs in Ganeti's virtual-cluster
mode (GANETI_ROOTDIR/GANETI_HOSTNAME), so Ganeti's paths lie below it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

GANETI_TREE = "/usr/share/ganeti/3.0"
SYSTEM_PYTHON = "/usr/bin/python3"

requires_real_ganeti = pytest.mark.skipif(
    not (os.path.isdir(os.path.join(GANETI_TREE, "ganeti")) and os.path.exists(SYSTEM_PYTHON)),
    reason="the real Ganeti 3.0 tree is not installed")


def run_real_ganeti(script: str, root: Path | None = None, hostname: str | None = None) -> str:
    """Run `script` with the real Ganeti importable; returns its stdout."""
    env = {"PYTHONPATH": GANETI_TREE, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if root is not None:
        env["GANETI_ROOTDIR"] = str(root)
        env["GANETI_HOSTNAME"] = hostname or root.name
    result = subprocess.run([SYSTEM_PYTHON, "-c", script], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"real Ganeti snippet failed:\n{result.stderr}"
    return result.stdout
