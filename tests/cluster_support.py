"""Helpers shared by the tests that build a cluster with our gnt-cluster init and gnt-node add.

Each such test module picks its own 127.0.x.y addresses and cluster IP; the
cluster IP goes on `lo` and is removed again with `remove_ip` in a finally.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import free_port  # noqa: F401 - re-exported for the cluster tests

BIN = Path(sys.executable).parent
OUR_GNT_CLUSTER = str(BIN / "gnt-cluster")
OUR_GNT_NODE = str(BIN / "gnt-node")
SBIN = "/usr/sbin"
CLUSTER = "cluster1"
#: The init options the cluster tests share (the master's gRPC door is not needed there).
INIT_ARGS = ("--enabled-hypervisors=fake", "--enabled-disk-templates=file,diskless", "--master-netdev=lo",
             "--master-grpc-port", "0")

needs_cluster = pytest.mark.skipif(
    not os.path.exists(f"{SBIN}/gnt-node") or not os.path.exists(OUR_GNT_NODE)
    or shutil.which("ip") is None or os.geteuid() != 0,
    reason="needs Debian's ganeti package, our console scripts, `ip` and root (the cluster IP goes on lo)")


def ip_on_lo(address: str) -> bool:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "lo"], capture_output=True, text=True).stdout
    return any(line.split()[3].split("/")[0] == address for line in out.splitlines())


def remove_ip(address: str) -> None:
    if ip_on_lo(address):
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class ClusterRoots:
    """The nodes' GANETI_ROOTDIRs below `base`, and the ports their daemons use."""

    base: Path
    port: int
    grpc_port: int

    def root(self, name: str) -> Path:
        return self.base / name

    def data(self, name: str) -> Path:
        return self.root(name) / "var/lib/ganeti"

    def pid_of(self, name: str, daemon: str = "ganeti-noded") -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.root(name) / f"var/run/ganeti/{daemon}.pid").read_text().strip())
        return None
