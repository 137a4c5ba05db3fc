"""The servers under test: our ganeti-noded, the real Ganeti 3.0 noded, and the two bare echo servers.

All of them use the same certificates: one cluster certificate (server.pem,
RSA-2048, also the client CA) and one client certificate (client.pem, signed
by it, listed in ssconf_master_candidates_certs), made by our daemon's own
certificate code (tests/support.py make_root) and copied into the real
noded's root, so that TLS costs the same everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tools.bench.procs import BenchError, Processes, cmdline, descendants, free_port, wait_listening

REPO = Path(__file__).resolve().parents[2]
HOSTNAME = "node1"
CANDIDATE_UUID = "0b7fa5ab-0000-4000-8000-000000000001"
GANETI_PYTHONPATH = "/usr/share/ganeti/3.0"
REAL_NODED = f"{GANETI_PYTHONPATH}/ganeti-noded"

# One loopback address per server, so that nothing collides with the machine's own daemons.
ADDRESS = {"real": "127.0.0.21", "ours": "127.0.0.22", "echo-http": "127.0.0.23", "echo-grpc": "127.0.0.24"}


@dataclass
class Certs:
    """The certificate files every server and client of the run uses."""

    root: Path        # our node's GANETI_ROOTDIR (the echo servers read its server.pem)
    server_pem: Path  # cluster key + certificate; clients trust it
    client_pem: Path  # client key + certificate presented by every client
    client_fp: str    # its SHA1 fingerprint, as Ganeti writes it

    def candidate_line(self) -> str:
        return f"{CANDIDATE_UUID}={self.client_fp}\n"


@dataclass
class Server:
    name: str
    pid: int
    address: str
    port: int  # the port the benchmark talks to
    processes: int = 1  # processes serving this port (our legacy workers, echo workers)
    root: Path | None = None  # the node daemon's GANETI_ROOTDIR (None for the echo servers)


def _support() -> ModuleType:
    """tests/support.py, loaded by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_test_support", REPO / "tests" / "support.py")
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {REPO / 'tests' / 'support.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def make_certs(base: Path) -> Certs:
    """Our node root below `base` with fresh certificates and the candidate map listing client.pem."""
    node = _support().make_root(base / "ours", HOSTNAME)
    node.write_candidate_map(node.client_fp)
    return Certs(root=node.root, server_pem=Path(node.server_pem), client_pem=Path(node.client_pem),
                 client_fp=node.client_fp)


def _node_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["GANETI_ROOTDIR"] = str(root)
    env["GANETI_HOSTNAME"] = root.name
    return env


def start_ours(procs: Processes, certs: Certs, grpc: bool,
               extra: list[str] | None = None) -> tuple[Server, Server]:
    """Our ganeti-noded at its defaults (memory locked, logging each request), foreground.

    `extra` options are added to its command line (e.g. --no-mlock, to see what a default costs).

    Returns the legacy door and the gRPC door (same PID).
    """
    noded = Path(sys.executable).parent / "ganeti-noded"
    if not noded.exists():
        raise BenchError(f"{noded} not found: run the benchmark with the project's venv python "
                         f"(make bench, or .venv/bin/python tools/bench/run_bench.py)")
    address = ADDRESS["ours"]
    port, grpc_port = free_port(address), free_port(address)
    argv = [str(noded), "-f", "-b", address, "-p", str(port), "--grpc-port", str(grpc_port), *(extra or [])]
    proc = procs.start("ours", argv, env=_node_env(certs.root))
    wait_listening("ours", proc, address, [port, grpc_port] if grpc else [port], procs)
    workers = _settled_workers(proc.pid)
    return (Server("ours", proc.pid, address, port, processes=workers or 1, root=certs.root),
            Server("ours", proc.pid, address, grpc_port, root=certs.root))


def _settled_workers(pid: int, timeout: float = 10.0) -> int:
    """How many ganeti-noded processes run below `pid` once their number stops changing."""
    last, since = -1, time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        count = sum(1 for p in descendants(pid) if "noded" in cmdline(p))
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= 0.5:
            break
        time.sleep(0.1)
    return max(last, 0)


def start_real(procs: Processes, certs: Certs, base: Path, anchors: Path) -> Server:
    """The real Ganeti 3.0 noded at its defaults (with mlock) in a root of its own below `base`."""
    if not Path(REAL_NODED).exists():
        raise BenchError(f"{REAL_NODED} not found: install the Debian package ganeti-3.0 "
                         f"(make setup does)")
    setup_root = anchors / "setup_root.py"
    if not setup_root.exists():
        raise BenchError(f"{setup_root} not found: pass --anchors DIR (the real-noded anchor folder)")
    root = base / "real" / HOSTNAME
    data = root / "var" / "lib" / "ganeti"
    data.mkdir(parents=True)
    # setup_root.py keeps an existing server.pem/client.pem: give it ours.
    for src, dst in ((certs.server_pem, data / "server.pem"), (certs.client_pem, data / "client.pem")):
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o440)
    env = _node_env(root)
    env["PYTHONPATH"] = GANETI_PYTHONPATH
    setup = procs.start("real-setup", ["/usr/bin/python3", str(setup_root)], env=env)
    if setup.wait(60) != 0:
        raise BenchError(f"{setup_root} failed (status {setup.returncode}):\n{procs.tail('real-setup')}")
    procs.forget(setup)
    (data / "ssconf_master_candidates_certs").write_text(certs.candidate_line())
    address = ADDRESS["real"]
    port = free_port(address)
    proc = procs.start("real", ["/usr/bin/python3", REAL_NODED, "-f", "-b", address, "-p", str(port)],
                       env=env)
    wait_listening("real", proc, address, [port], procs)
    return Server("real", proc.pid, address, port, root=root)


def start_echo(procs: Processes, certs: Certs, kind: str, extra: list[str] | None = None,
               processes: int = 1) -> Server:
    """tools/bench/echo_http.py or echo_grpc.py (kind "http" or "grpc") on its own address."""
    name = f"echo-{kind}"
    address = ADDRESS[name]
    port = free_port(address)
    script = REPO / "tools" / "bench" / f"echo_{kind}.py"
    argv = [sys.executable, str(script), "--host", address, "--port", str(port), "--root", str(certs.root),
            *(extra or [])]
    proc = procs.start(name, argv)
    wait_listening(name, proc, address, [port], procs)
    return Server(name, proc.pid, address, port, processes=processes)
