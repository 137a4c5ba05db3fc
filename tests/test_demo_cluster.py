"""`make demo` (tools/demo_cluster.py): the three-node cluster story runs start to finish and cleans up.

The first test runs it as `make demo` does and checks its key lines: the
nodes listed by Debian's gnt-node list, the kvm instance's greeting on its
serial console (after the add and after the failover), the qemu process
under node1, then node2 (live migration), then node3 (failover), no disk
left after the removal. The second makes the migration fail inside the demo:
exit code 1 with the reason, and every process started from its state
directory gone, the cluster IP off lo, the state directory removed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster_support import ip_on_lo, needs_cluster  # isort: skip

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "tools" / "demo_cluster.py"
DEMO_TIMEOUT = 600
CLUSTER_IP = "127.0.0.10"

pytestmark = [needs_cluster, pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                                reason="qemu-system-x86 is not installed")]


@pytest.fixture
def state() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="dc", dir="/tmp"))
    try:
        yield base / "s"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def processes_below(path: Path) -> list[int]:
    """Pids whose command line names `path` (daemons, qemu)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_the_cluster_demo_runs_start_to_finish(state: Path) -> None:
    done = subprocess.run([sys.executable, str(DEMO), "--state", str(state)], capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT, cwd=REPO)
    out = done.stdout
    assert done.returncode == 0, f"{done.stderr}\n{out[-3000:]}"
    for node, address in (("node1", "127.0.0.2"), ("node2", "127.0.0.3"), ("node3", "127.0.0.4")):
        assert f"      {node} {address} " in out
    assert out.count("    serial console: ganeti-ng tiny OS booted: inst1\n") == 2
    order = [line.split("running under ")[1] for line in out.splitlines() if "running under" in line]
    assert order == ["node1's root", "node2's root", "node3's root"]
    assert "    disk files left: none\n" in out
    assert out.rstrip().splitlines()[-1].startswith("==> done in ")
    assert not state.exists()
    assert processes_below(state) == []
    assert not ip_on_lo(CLUSTER_IP)


def test_a_failing_cluster_demo_exits_1_and_leaves_nothing(state: Path) -> None:
    inject = ("import sys\n"
              f"sys.path.insert(0, {str(REPO)!r})\n"
              "from tools import demo_cluster\n"
              "def fail(demo):\n"
              "    raise demo_cluster.DemoFailed('migration refused (injected by the test)')\n"
              "demo_cluster.move = fail\n"
              f"raise SystemExit(demo_cluster.main(['--state', {str(state)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", inject], capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT, cwd=REPO)
    assert done.returncode == 1, done.stdout
    assert done.stderr.strip().splitlines()[-1] == "DEMO FAILED: migration refused (injected by the test)"
    assert "running under node1's root" in done.stdout
    assert not state.exists()
    assert processes_below(state) == []
    assert not ip_on_lo(CLUSTER_IP)
