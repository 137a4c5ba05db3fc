"""This node's daemons as `gnt-cluster init` and `destroy` handle them (Ganeti's bootstrap helpers).

Interface::

    noded_port(paths, override) -> int         --noded-port, else the services database
                                               (below the root when set), else 1811
    start_noded(paths, address, port, grpc_port) -> int (pid)   our ganeti-noded, detached
    start_masterd(paths, grpc_port, extra=()) -> int (pid)      our ganeti-masterd, detached (votes;
                                               extra: more arguments, as --no-voting --yes-do-it)
    call_node(paths, address, port, procedure, *args) -> payload
        one legacy call (JSON over HTTPS, a new TLS connection, $DATA_DIR/client.pem
        as the client certificate, server.pem as trust anchor), as Ganeti's
        BootstrapRunner makes it; GanetiError(OpExecError) when it fails
    wait_node_version(paths, address, port, timeout) -> int     Ganeti's _WaitForNodeDaemon
    read_pid(path) -> int | None; stop_pid(pid, timeout) -> bool; pid_gone(pid, timeout) -> bool
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from masterd import nodecalls
from noded.paths import Paths
from tools.gnt.errors import GanetiError

BIN = Path(sys.executable).parent
NODED = str(BIN / "ganeti-noded")
MASTERD = str(BIN / "ganeti-masterd")
MASTERD_PID_FILE = "ganeti-masterd.pid"
#: Seconds a daemon start may take (the starting process exits once the daemon serves).
START_TIMEOUT = 60.0
#: Seconds Ganeti's bootstrap waits for a fresh node daemon to answer `version`.
NODED_WAIT = 10.0
#: Seconds one legacy call may take (node_activate_master_ip runs fping: about 1 s).
CALL_TIMEOUT = nodecalls.CALL_TIMEOUT


def noded_port(paths: Paths, override: int | None = None) -> int:
    return nodecalls.noded_port(paths, override)


def daemon_env(paths: Paths) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if paths.root:
        env.update(GANETI_ROOTDIR=paths.root, GANETI_HOSTNAME=paths.hostname)
    return env


def masterd_pid_file(paths: Paths) -> str:
    return os.path.join(paths.run_dir, MASTERD_PID_FILE)


def read_pid(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _start(argv: list[str], paths: Paths, what: str, pid_file: str) -> int:
    try:
        done = subprocess.run(argv, env=daemon_env(paths), capture_output=True, text=True,
                              timeout=START_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise GanetiError("OpExecError",
                          f"Could not start the {what}, command {' '.join(argv)}: {err}") from None
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip() or "no output")
        raise GanetiError("OpExecError", f"Could not start the {what}, command {' '.join(argv)} had exitcode"
                                         f" {done.returncode} and error {reason}")
    pid = read_pid(pid_file)
    if pid is None:
        raise GanetiError("OpExecError", f"The {what} started but left no pid in {pid_file}")
    return pid


def start_noded(paths: Paths, address: str, port: int, grpc_port: int | None) -> int:
    argv = [NODED, "-b", address, "-p", str(port)]
    if grpc_port is not None:
        argv += ["--grpc-port", str(grpc_port)]
    return _start(argv, paths, "node daemon", paths.noded_pid_file)


def start_masterd(paths: Paths, grpc_port: int | None, extra: Sequence[str] = ()) -> int:
    argv = [MASTERD, *extra] + (["--grpc-port", str(grpc_port)] if grpc_port is not None else [])
    return _start(argv, paths, "master daemon", masterd_pid_file(paths))


def call_node(paths: Paths, address: str, port: int, procedure: str, *args: Any,
              timeout: float = CALL_TIMEOUT) -> Any:
    """The payload of one successful legacy call; GanetiError(OpExecError) otherwise (masterd.nodecalls)."""
    try:
        return nodecalls.call_node(paths, address, port, procedure, *args, timeout=timeout)
    except nodecalls.NodeCallError as err:
        raise GanetiError("OpExecError", str(err)) from None


def wait_node_version(paths: Paths, address: str, port: int, timeout: float = NODED_WAIT) -> Any:
    """The node daemon's `version` answer, retried until `timeout` (Ganeti's _WaitForNodeDaemon)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call_node(paths, address, port, "version", timeout=5.0)
        except GanetiError:
            if time.monotonic() > deadline:
                raise GanetiError("OpExecError", f"Node daemon on {paths.hostname} didn't answer queries"
                                                 f" within {timeout:g} seconds") from None
            time.sleep(0.2)


def pid_gone(pid: int, timeout: float) -> bool:
    """Whether process `pid` is gone (or a zombie) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (OSError, IndexError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def stop_pid(pid: int, timeout: float = 20.0) -> bool:
    """SIGTERM `pid`, SIGKILL after `timeout` s; whether it stopped by itself."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if pid_gone(pid, timeout):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    pid_gone(pid, 5.0)
    return False
