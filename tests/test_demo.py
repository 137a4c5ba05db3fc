"""`make demo` (tools/demo_nodes.py) runs start to finish on this machine, and tears down on failure.

The demo starts two node daemons, drives a kvm instance through them (tiny
OS, serial console, live migration to node2, removal), then our
ganeti-masterd with our gnt-* tools. The first test runs it as `make demo`
does and checks its key lines; the second makes the migration fail inside
the demo and checks that every process the demo started is gone, its state
removed and the exit code 1 with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "tools" / "demo_nodes.py"
INSTANCE = "inst1.example.com"
#: The demo should take ~10 s; well under a minute even on a loaded machine.
DEMO_TIMEOUT = 120

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                reason="qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")


@pytest.fixture
def state() -> Iterator[Path]:
    """A state directory with a short path: the master's LUXI socket below it must fit AF_UNIX's 107 bytes."""
    base = Path(tempfile.mkdtemp(prefix="demo-", dir="/tmp"))
    try:
        yield base / "s"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def pids(pattern: str, output: str) -> list[int]:
    return [int(p) for p in re.findall(pattern, output, re.MULTILINE)]


def started_pids(output: str) -> list[int]:
    """Every pid the demo said it started: node daemons, qemus (node1's, then node2's), master."""
    return (pids(r"node\d: pid (\d+), legacy port", output)
            + pids(r"^    qemu: pid (\d+)", output)
            + pids(r"^    node2's qemu: pid (\d+)", output)
            + pids(r"ganeti-masterd: pid (\d+), LUXI", output))


def test_the_demo_runs_start_to_finish(state: Path) -> None:
    done = subprocess.run([sys.executable, str(DEMO), "--state", str(state)], capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT, cwd=REPO)
    out = done.stdout
    assert done.returncode == 0, f"{done.stderr}\n{out[-3000:]}"
    assert f"    serial console: ganeti-ng tiny OS booted: {INSTANCE}\n" in out
    assert re.search(r'node1 instance_get_migration_status: \{"status": "completed"', out)
    assert '    node2 QMP query-status: {"status": "running"' in out
    assert f'    node2 instance_list: ["{INSTANCE}"]\n    node1 instance_list: []\n' in out
    assert re.search(r"node1's qemu: pid \d+ gone", out)
    assert "      Software version: 3.0.2\n" in out
    assert re.search(r"\n +1 success TEST_DELAY\(0\.2\)\n +2 success TEST_DELAY\(0\.5\)\n", out), out
    assert out.rstrip().splitlines()[-1].startswith("==> done in ")
    assert not state.exists()
    assert [pid for pid in started_pids(out) if pid_alive(pid)] == []
    assert len(set(started_pids(out))) == 5


def test_a_failing_demo_exits_1_with_the_reason_and_leaves_nothing_running(state: Path) -> None:
    inject = ("import sys\n"
              f"sys.path.insert(0, {str(REPO)!r})\n"
              f"sys.argv = ['demo_nodes.py', '--state', {str(state)!r}]\n"
              "from tools import demo_instance, demo_nodes\n"
              "def fail(*args):\n"
              "    raise demo_instance.DemoFailed('migration refused (injected by the test)')\n"
              "demo_instance.migrate = fail\n"
              "raise SystemExit(demo_nodes.main())\n")
    done = subprocess.run([sys.executable, "-c", inject], capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT, cwd=REPO)
    out = done.stdout
    assert done.returncode == 1, out
    assert done.stderr.strip().splitlines()[-1] == "demo failed: migration refused (injected by the test)"
    (qemu,) = pids(r"^    qemu: pid (\d+)", out)
    assert f"teardown: killed qemu {qemu}" in out
    started = started_pids(out)
    assert len(started) == 3  # two node daemons and the qemu; the master never started
    assert [pid for pid in started if pid_alive(pid)] == []
    assert not state.exists()
    assert not os.path.exists(state / "shared-storage")
