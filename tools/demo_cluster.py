"""`make demo`: a three-node cluster on this machine, start to finish, through the master.

Every step is a command an administrator types, run against our daemons:

1. our `gnt-cluster init` on node1 (127.0.0.2: certificates, config.data,
   ssconf, node daemon, master daemon, cluster IP on lo), our
   `gnt-node add` for node2 and node3 (127.0.0.3, 127.0.0.4; each node has its
   own GANETI_ROOTDIR below the demo's state directory); Debian's real
   `gnt-node list` shows them;
2. `gnt-instance add`: a kvm instance with our tools/os/tiny OS on a
   sharedfile disk (the nodes' shared-file-storage directories are one
   directory of the state, as shared storage would be); qemu boots it (KVM,
   or emulation without /dev/kvm) and its serial console shows the line the
   boot sector prints; `gnt-instance list` and `info`;
3. `gnt-instance migrate` (live) to node2, `gnt-instance failover` to node3,
   each shown with the qemu process now running under the new node;
4. `gnt-instance shutdown`, `gnt-instance remove`, our `gnt-node remove` and
   `gnt-cluster destroy`.

The teardown runs also on failure or ^C: every daemon and qemu started from
the state directory is stopped by pid, the cluster IP leaves lo, the state
directory is removed (unless --keep). `gnt-instance` is ours when installed
in the virtualenv, else Debian's (same command line).

    .venv/bin/python tools/demo_cluster.py [--state DIR] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tools.demo_common import DemoFailed, say, show, wait_pid_gone

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SBIN = Path("/usr/sbin")
TINY = ROOT / "tools" / "os" / "tiny"
NODES = {"node1": "127.0.0.2", "node2": "127.0.0.3", "node3": "127.0.0.4"}
CLUSTER = "cluster.demo"
CLUSTER_IP = "127.0.0.10"
INSTANCE = "inst1"
INSTANCE_IP = "127.0.0.20"
GREETING = f"ganeti-ng tiny OS booted: {INSTANCE}"
GREETING_TIMEOUT = 30.0
TOOL_TIMEOUT = 300.0
#: Seconds a shutdown waits for the guest: the tiny OS has no ACPI, so qemu is stopped after them.
SHUTDOWN_TIMEOUT = 2
DAEMONS = ("ganeti-masterd", "ganeti-noded")


class Demo:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = 0
        self.grpc_port = 0

    def root(self, node: str) -> Path:
        return self.state / node

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, GANETI_ROOTDIR=str(self.root("node1")), GANETI_HOSTNAME="node1")
        env.pop("PYTHONPATH", None)
        return env

    def run(self, argv: list[str], *, echo: bool = True) -> str:
        shown = " ".join([Path(argv[0]).name, *argv[1:]])
        if echo:
            print(f"    $ {shown}", flush=True)
        try:
            done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
        except subprocess.TimeoutExpired as err:
            raise DemoFailed(f"`{shown}` did not finish within {TOOL_TIMEOUT:.0f} s") from err
        if done.returncode != 0:
            reason = done.stderr.strip() or done.stdout
            raise DemoFailed(f"`{shown}` failed (exit {done.returncode}): {reason}")
        if echo:
            for line in done.stdout.rstrip("\n").splitlines():
                print(f"      {line}", flush=True)
        return done.stdout

    def ours(self, tool: str, *args: str, echo: bool = True) -> str:
        return self.run([str(BIN / tool), *args], echo=echo)

    def debian(self, tool: str, *args: str, echo: bool = True) -> str:
        return self.run([str(SBIN / tool), *args], echo=echo)

    def gnt_instance(self, *args: str, echo: bool = True) -> str:
        tool = BIN / "gnt-instance"
        return self.run([str(tool if tool.exists() else SBIN / "gnt-instance"), *args], echo=echo)

    # --- state -------------------------------------------------------------------------------

    def pid(self, node: str, daemon: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.root(node) / f"var/run/ganeti/{daemon}.pid").read_text().strip())
        return None

    def qemu_pid(self, node: str) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid_file = self.root(node) / "var/run/ganeti/kvm-hypervisor/pid" / INSTANCE
            pid = int(pid_file.read_text().split()[0])
            if not wait_pid_gone(pid, 0):
                return pid
        return None

    def where_running(self) -> str:
        running = [(node, pid) for node in NODES if (pid := self.qemu_pid(node)) is not None]
        if len(running) != 1:
            raise DemoFailed(f"expected one qemu process for {INSTANCE}, found {running}")
        node, pid = running[0]
        show("qemu", f"pid {pid}, running under {node}'s root")
        return node

    def prepare(self) -> None:
        """Roots, the hosts file, the tiny OS, shared storage and the ports every node daemon uses."""
        self.state.mkdir(parents=True)
        shared = self.state / "shared"
        shared.mkdir()
        for node in NODES:
            srv = self.root(node) / "srv/ganeti"
            srv.mkdir(parents=True)
            shutil.copytree(TINY, srv / "os/tiny", symlinks=True)
            (srv / "shared-file-storage").symlink_to(shared)
        etc = self.root("node1") / "etc"
        etc.mkdir()
        hosts = "".join(f"{ip} {name}\n" for name, ip in NODES.items())
        (etc / "hosts").write_text(f"{hosts}{CLUSTER_IP} {CLUSTER}\n{INSTANCE_IP} {INSTANCE}\n")
        self.port, self.grpc_port = free_port(), free_port()
        (etc / "services").write_text(f"ganeti-noded {self.port}/tcp\n")

    def teardown(self) -> None:
        """Stop everything started from the state directory, by pid; the cluster IP leaves lo."""
        pids = [pid for node in NODES for daemon in DAEMONS if (pid := self.pid(node, daemon)) is not None]
        pids += [pid for node in NODES if (pid := self.qemu_pid(node)) is not None]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            if not wait_pid_gone(pid, 10.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        addresses = subprocess.run(["ip", "-4", "-o", "addr", "show", "lo"], capture_output=True,
                                   text=True).stdout
        if f" {CLUSTER_IP}/" in addresses:
            subprocess.run(["ip", "addr", "del", f"{CLUSTER_IP}/32", "dev", "lo"], capture_output=True)


def free_port() -> int:
    """A port free on every node address (each node daemon uses the same ports on its own address)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((NODES["node1"], 0))
            port = int(probe.getsockname()[1])
        try:
            for address in NODES.values():
                with socket.socket() as s:
                    s.bind((address, port))
        except OSError:
            continue
        return port
    raise DemoFailed("no port is free on every node address")


def read_greeting(demo: Demo, node: str) -> str:
    """The line the tiny guest prints on its serial console (a Unix socket of the node's qemu)."""
    path = demo.root(node) / "var/run/ganeti/kvm-hypervisor/ctrl" / f"{INSTANCE}.serial"
    output = b""
    deadline = time.monotonic() + GREETING_TIMEOUT
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as serial:
        serial.connect(str(path))
        serial.settimeout(0.5)
        while GREETING.encode() not in output and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                chunk = serial.recv(4096)
                if not chunk:
                    break
                output += chunk
    if GREETING.encode() not in output:
        raise DemoFailed(f"no greeting on the serial console within {GREETING_TIMEOUT:.0f} s:"
                         f" {output[-200:]!r}")
    return GREETING


def build(demo: Demo) -> None:
    say(f"cluster {CLUSTER}: our gnt-cluster init on node1 ({NODES['node1']}), cluster IP {CLUSTER_IP} on lo")
    demo.ours("gnt-cluster", "init", "--enabled-hypervisors=kvm,fake",
              "--enabled-disk-templates=sharedfile,file,diskless", "--master-netdev=lo",
              "-H", "kvm:kernel_path=,initrd_path=", "--noded-grpc-port", str(demo.grpc_port),
              "--master-grpc-port", "0", CLUSTER)
    for node in ("node2", "node3"):
        say(f"our gnt-node add {node} ({NODES[node]}, its own root, no SSH)")
        demo.ours("gnt-node", "add", "--node-root", str(demo.root(node)), node)
    say("Debian's real gnt-node list, against our master")
    demo.debian("gnt-node", "list", "-o", "name,pip,role,mtotal,mfree")


def instance(demo: Demo) -> None:
    say(f"gnt-instance add: {INSTANCE}, kvm, tiny OS, 1 GiB sharedfile disk, on node1")
    demo.gnt_instance("add", "-n", "node1", "-t", "sharedfile", "-o", "tiny+default", "-H", "kvm",
                      "-B", "memory=128M", "--disk", "0:size=1G", "--net", f"0:mode=routed,ip={INSTANCE_IP}",
                      "--no-ip-check", INSTANCE)
    demo.where_running()
    say("its serial console")
    show("serial console", read_greeting(demo, "node1"))
    say("gnt-instance list and info")
    demo.gnt_instance("list", "-o", "name,hypervisor,os,pnode,status,oper_ram")
    info = demo.gnt_instance("info", INSTANCE, echo=False)
    for line in info.splitlines():
        if any(key in line for key in ("Instance name", "State:", "Nodes:", "primary:", "Operating system",
                                       "Hypervisor:", "disk/0", "on primary")):
            print(f"      {line}", flush=True)


def move(demo: Demo) -> None:
    say("gnt-instance migrate (live) to node2")
    demo.gnt_instance("migrate", "-f", "-n", "node2", INSTANCE)
    if demo.where_running() != "node2":
        raise DemoFailed("after the migration the instance should run on node2")
    demo.gnt_instance("list", "-o", "name,pnode,status")
    say("gnt-instance failover to node3")
    demo.gnt_instance("failover", "-f", "-n", "node3", f"--shutdown-timeout={SHUTDOWN_TIMEOUT}", INSTANCE)
    if demo.where_running() != "node3":
        raise DemoFailed("after the failover the instance should run on node3")
    show("serial console", read_greeting(demo, "node3"))
    demo.gnt_instance("list", "-o", "name,pnode,status")


def finish(demo: Demo) -> None:
    say("gnt-instance shutdown and remove")
    demo.gnt_instance("shutdown", f"--timeout={SHUTDOWN_TIMEOUT}", INSTANCE)
    if any(demo.qemu_pid(node) for node in NODES):
        raise DemoFailed("a qemu process is still running after the shutdown")
    demo.gnt_instance("remove", "-f", INSTANCE)
    disks = sorted((demo.state / "shared").rglob("*disk*"))
    if disks:
        raise DemoFailed(f"disk files left after the removal: {disks}")
    show("disk files left", "none")
    say("our gnt-node remove node3 and node2, then our gnt-cluster destroy")
    for node in ("node3", "node2"):
        demo.ours("gnt-node", "remove", node)
    demo.ours("gnt-cluster", "destroy", "--yes-do-it")


@contextlib.contextmanager
def state_dir(given: str | None, keep: bool) -> Iterator[Path]:
    base = Path(given) if given else Path(tempfile.mkdtemp(prefix="gd", dir="/tmp")) / "s"
    try:
        yield base
    finally:
        if not keep:
            shutil.rmtree(base if given else base.parent, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--state", help="state directory (must not exist; short: sockets live below it)")
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with state_dir(args.state, args.keep) as state:
        demo = Demo(state)
        try:
            demo.prepare()
            build(demo)
            instance(demo)
            move(demo)
            finish(demo)
        except (DemoFailed, KeyboardInterrupt) as err:
            print(f"DEMO FAILED: {err}", file=sys.stderr, flush=True)
            return 1
        finally:
            say("teardown: every daemon and qemu of the demo stopped by pid, cluster IP removed")
            demo.teardown()
    say(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
