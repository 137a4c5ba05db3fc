"""A three-node cluster of ours for the instance tests: our gnt-cluster init and gnt-node add, then any tool.

`build_cluster(prefix, addresses, cluster_ip)` is a context manager: node1
is initialised (hypervisors fake and kvm, disk templates file, sharedfile
and diskless, master netdev lo), node2 and node3 are added with our
`gnt-node add --node-root`, each node in its own root below one short /tmp
base. Every root's shared-file-storage directory is a symlink to one
directory of the base (shared storage, as sharedfile needs); Debian's noop
OS is seen by every node from the machine, our tools/os/tiny is installed
below each root (/srv/ganeti/os/tiny). The roots' etc/hosts name the nodes,
the cluster and the instance names given (`instances`), so the master
resolves them without the machine's /etc/hosts. At the end every daemon of
the roots is stopped by its pid file, qemu processes started from the roots
are killed by pid, and the cluster IP leaves `lo`.

Each test module passes its own 127.0.x range.

    with build_cluster("gi", {"node1": "127.0.11.1", ...}, "127.0.11.100",
                       instances={"inst1": "127.0.11.50"}) as c:
        c.gnt("gnt-instance", "add", ...)     # Debian's tool against our master
        c.ours("gnt-instance", "list")          # our console script
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from masterd.config.model import ConfigData, load

from cluster_support import BIN, SBIN, ClusterRoots, alive, free_port, remove_ip  # isort: skip

ROOT = Path(__file__).resolve().parent.parent
TINY_OS = ROOT / "tools" / "os" / "tiny"
#: kvm instances boot from their disk (Ganeti's default kernel_path is a Xen-era file this machine lacks).
INIT_ARGS = ("--enabled-hypervisors=fake,kvm", "--enabled-disk-templates=file,sharedfile,diskless",
             "--master-netdev=lo", "--master-grpc-port", "0", "-H", "kvm:kernel_path=,initrd_path=")
DAEMONS = ("ganeti-noded", "ganeti-masterd")


class InstanceCluster(ClusterRoots):
    """The cluster's roots, with helpers to run tools against the master on node1."""

    names: tuple[str, ...] = ()
    master: str = "node1"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, GANETI_ROOTDIR=str(self.root(self.master)), GANETI_HOSTNAME=self.master)
        env.pop("PYTHONPATH", None)
        return env

    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=timeout)

    def gnt(self, tool: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Debian's real gnt-* tool against our master."""
        return self.run(f"{SBIN}/{tool}", *args, timeout=timeout)

    def ours(self, tool: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Our console script of that name."""
        return self.run(str(BIN / tool), *args, timeout=timeout)

    def config(self) -> ConfigData:
        return load(str(self.data(self.master) / "config.data"))

    def serial(self) -> int:
        return self.config().serial_no

    def file_dir(self, node: str) -> Path:
        return self.root(node) / "srv/ganeti/file-storage"

    def shared_dir(self) -> Path:
        return self.base / "shared"

    def qemu_pids(self) -> list[int]:
        """qemu processes (qemu-system-*, or Debian's /usr/bin/kvm) whose command line names the base."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                program = os.path.basename(cmdline[0]) if cmdline else b""
                if (program.startswith(b"qemu-system") or program == b"kvm") \
                        and str(self.base).encode() in b" ".join(cmdline):
                    found.append(int(entry.name))
        return found

    def stop_all(self) -> None:
        pids = [pid for name in self.names for daemon in DAEMONS
                if (pid := self.pid_of(name, daemon)) is not None and alive(pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids + self.qemu_pids():
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _install_tiny(root: Path) -> None:
    target = root / "srv/ganeti/os/tiny"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(TINY_OS, target, symlinks=True)


def _share(made: InstanceCluster, name: str) -> None:
    """Make the node's shared-file-storage directory the base's shared directory."""
    link = made.root(name) / "srv/ganeti/shared-file-storage"
    made.shared_dir().mkdir(exist_ok=True)
    if link.is_symlink():
        return
    if link.exists():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(made.shared_dir())


@contextlib.contextmanager
def build_cluster(prefix: str, addresses: Mapping[str, str], cluster_ip: str,
                  instances: Mapping[str, str] | None = None,
                  init_args: tuple[str, ...] = INIT_ARGS) -> Iterator[InstanceCluster]:
    """A running cluster of our daemons on `addresses` (node1 the master), torn down at the end."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    first = next(iter(addresses))
    made = InstanceCluster(base, free_port(addresses[first]), free_port(addresses[first]))
    made.names = tuple(addresses)
    made.master = first
    etc = made.root(first) / "etc"
    etc.mkdir(parents=True)
    hosts = "".join(f"{ip} {name}\n" for name, ip in {**addresses, **(instances or {})}.items())
    (etc / "hosts").write_text(f"{hosts}{cluster_ip} cluster1\n")
    (etc / "services").write_text(f"ganeti-noded {made.port}/tcp\n")
    for name in addresses:
        _install_tiny(made.root(name))
        _share(made, name)
    try:
        done = made.run(str(BIN / "gnt-cluster"), "init", *init_args, "--noded-grpc-port",
                        str(made.grpc_port), "cluster1")
        assert done.returncode == 0, done.stderr
        for name in list(addresses)[1:]:
            done = made.run(str(BIN / "gnt-node"), "add", "--node-root", str(made.root(name)), name)
            assert done.returncode == 0, done.stderr
        yield made
    finally:
        try:
            made.stop_all()
        finally:
            remove_ip(cluster_ip)
            shutil.rmtree(base, ignore_errors=True)
