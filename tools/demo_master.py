"""The demo's master: our ganeti-masterd on node1, driven by our gnt-cluster, gnt-debug and gnt-job.

The master distributes the ssconf keys a master daemon and the command line
tools need (master_netdev, primary_ip_family, release_version, beside those
written earlier) with write_ssconf_files, writes the node daemons' gRPC
ports in node1's $DATA_DIR/node-grpc-ports (they do not listen on 1812),
then starts ganeti-masterd (detached) with node1's GANETI_ROOTDIR and
GANETI_HOSTNAME: it asks both node daemons which node is the master (the
start-up voting) before it serves. The tools find its LUXI socket through
the same two variables. SIGTERM stops it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from masterd.luxi.server import master_socket_path, query_socket_path
from noded.paths import Paths
from tools.demo_common import DemoFailed, Node, free_port, say, show, wait_pid_gone

BIN = Path(sys.executable).parent
MASTERD = str(BIN / "ganeti-masterd")
PID_FILE_NAME = "ganeti-masterd.pid"
TOOL_TIMEOUT = 60.0
#: The ssconf keys the master needs beyond those the node part distributed (a test cluster's values).
#: The longest path AF_UNIX takes (sun_path's 108 bytes, the last one for the NUL).
UNIX_PATH_MAX = 107
MASTER_SSCONF = {"master_netdev": "lo", "primary_ip_family": "2", "release_version": "3.0.2"}


def check_socket_paths(paths: Paths) -> None:
    """DemoFailed, before anything starts, when the master's LUXI sockets below `paths` cannot be bound."""
    for path in (query_socket_path(paths), master_socket_path(paths)):
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise DemoFailed(f"the master's LUXI socket {path} would be longer than the {UNIX_PATH_MAX} bytes"
                             " AF_UNIX allows: use a shorter --state directory")


@dataclass
class MasterDaemon:
    node: Node
    pid: int = 0

    @property
    def env(self) -> dict[str, str]:
        env = self.node.env
        env.pop("PYTHONPATH", None)
        return env

    @property
    def pid_file(self) -> Path:
        return Path(self.node.paths.run_dir) / PID_FILE_NAME

    def start(self) -> None:
        grpc_port = free_port(self.node.address)
        done = subprocess.run([MASTERD, "--grpc-port", str(grpc_port)], env=self.env, capture_output=True,
                              text=True, timeout=30)
        if done.returncode != 0:
            raise DemoFailed(f"ganeti-masterd did not start (exit {done.returncode}):"
                             f" {done.stderr.strip() or done.stdout.strip()}")
        self.pid = int(self.pid_file.read_text().strip())
        show("ganeti-masterd", f"pid {self.pid}, LUXI on {self.node.paths.run_dir}/socket/ganeti-query,"
                               f" gRPC on {self.node.address}:{grpc_port}")
        log = Path(self.node.paths.log_dir, "master-daemon.log").read_text()
        for line in log.splitlines():
            if "master voting: " in line:
                show("ganeti-masterd", line.split("master voting: ", 1)[1])

    def stop(self) -> bool:
        """SIGTERM (then SIGKILL after 20 s); whether it stopped by itself."""
        if not self.pid:
            return True
        pid, self.pid = self.pid, 0
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        if wait_pid_gone(pid, 20.0):
            return True
        os.kill(pid, signal.SIGKILL)
        wait_pid_gone(pid, 5.0)
        return False

    def tool(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run one of our gnt-* tools as on node1, printing its command line and output."""
        print(f"    $ {' '.join(argv)}", flush=True)
        done = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=self.env, capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT)
        for line in (done.stdout + done.stderr).splitlines():
            print(f"      {line}", flush=True)
        if done.returncode != 0:
            raise DemoFailed(f"{' '.join(argv)} exited {done.returncode}")
        return done


def write_grpc_ports(master: Node, nodes: Sequence[Node]) -> None:
    """node1's $DATA_DIR/node-grpc-ports: where the master reaches each node daemon's gRPC door."""
    path = Path(master.paths.data_dir, "node-grpc-ports")
    path.write_text("".join(f"{n.name} {n.grpc_port}\n" for n in nodes))
    show(str(path), ", ".join(f"{n.name} {n.grpc_port}" for n in nodes))


def run(master: MasterDaemon, cert: str, nodes: Sequence[Node] = ()) -> None:
    """The master part of the demo; `nodes` (every node daemon, node1's included) vote at its start."""
    node = master.node
    say("the master's ssconf on node1 (write_ssconf_files: " + ", ".join(MASTER_SSCONF) + ")")
    show("node1 write_ssconf_files", node.must("write_ssconf_files", MASTER_SSCONF, cert=cert))
    if nodes:
        say("the node daemons' gRPC ports, for the master's start-up voting (each node names node1)")
        write_grpc_ports(node, nodes)
    say("starting our ganeti-masterd on node1 (detached; GANETI_ROOTDIR and GANETI_HOSTNAME of node1)")
    master.start()
    say("our gnt-* tools talk LUXI to it")
    master.tool("gnt-cluster", "version")
    master.tool("gnt-debug", "delay", "-r", "2", "0.2")
    submitted = master.tool("gnt-debug", "delay", "--submit", "0.5")
    match = re.search(r"JobID: (\d+)", submitted.stderr)
    if match is None:
        raise DemoFailed(f"gnt-debug delay --submit printed no job id: {submitted.stderr!r}")
    master.tool("gnt-job", "watch", match.group(1))
    master.tool("gnt-job", "list")
    say("stopping ganeti-masterd (SIGTERM)")
    pid = master.pid
    stopped = master.stop()
    show("ganeti-masterd", f"pid {pid} " + ("stopped" if stopped else "did not stop: killed")
         + ", pid file " + ("left!" if master.pid_file.exists() else "removed"))
    if not stopped:
        raise DemoFailed(f"ganeti-masterd (pid {pid}) did not stop within 20 s of SIGTERM")


@contextlib.contextmanager
def master_stopped(node: Node) -> Iterator[MasterDaemon]:
    """The master daemon object; on leaving, a master still running is stopped."""
    master = MasterDaemon(node)
    try:
        yield master
    finally:
        master.stop()
