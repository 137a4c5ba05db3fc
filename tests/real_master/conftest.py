"""Fixtures for the real-master tests: a real Ganeti 3.0 master on loopback, always torn down."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_master_harness import RealMaster, missing_prerequisites


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "real_master: runs a real Ganeti 3.0 master (gnt-*, luxid, wconfd) in virtual-cluster mode in "
        "private namespaces; needs root and Debian's ganeti packages (select with -m real_master)")


@pytest.fixture
def real_master_factory(tmp_path: Path) -> Iterator[Callable[[str], RealMaster]]:
    """factory(noded) -> a prepared RealMaster whose namespaces run; "ours" or "real" node daemon.

    At the end every process of the cluster is stopped by PID, even when the
    test failed; the root's logs and the commands run are kept in
    tmp_path/<noded>/ and the root itself is removed.
    """
    missing = missing_prerequisites()
    if missing:
        pytest.skip("cannot run a real Ganeti master here: missing " + ", ".join(missing))
    started: list[RealMaster] = []

    def factory(noded: str) -> RealMaster:
        master = RealMaster(noded=noded)
        started.append(master)
        master.prepare()
        master.start_namespaces()
        return master

    try:
        yield factory
    finally:
        for master in started:
            try:
                master.stop_everything()
            finally:
                keep = tmp_path / master.noded
                keep.mkdir(exist_ok=True)
                master.keep_logs(keep)
                master.remove()
