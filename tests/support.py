"""Running real node daemons for tests: roots, certificates, processes, clients."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noded import certs
from noded.paths import Paths

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
NODED = str(VENV_BIN / "ganeti-noded")
CANDIDATE_UUID = "0b7fa5ab-0000-4000-8000-000000000001"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass
class NodeRoot:
    """A node's GANETI_ROOTDIR with the cluster certificate and its own client certificate."""

    paths: Paths
    server_pem: str
    client_pem: str
    server_fp: str
    client_fp: str

    @property
    def root(self) -> Path:
        return Path(self.paths.root)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["GANETI_ROOTDIR"] = self.paths.root
        env["GANETI_HOSTNAME"] = self.paths.hostname
        return env

    def write_candidate_map(self, *fingerprints: str) -> None:
        fps = fingerprints or (self.client_fp,)
        lines = "".join(f"{CANDIDATE_UUID[:-1]}{i}={fp}\n" for i, fp in enumerate(fps))
        Path(self.paths.master_candidates_certs_file).write_text(lines)


def make_root(base: Path, hostname: str, cluster_pem: str | None = None) -> NodeRoot:
    """A fresh node root below `base`; shares `cluster_pem` (server.pem) when given."""
    paths = Paths(root=str(base / hostname), hostname=hostname)
    paths.ensure_dirs()
    server = paths.server_cert
    if cluster_pem is None:
        certs.write_server_pem(server)
    else:
        Path(server).write_bytes(Path(cluster_pem).read_bytes())
        os.chmod(server, 0o440)
    client_fp = certs.write_client_pem(paths.client_cert, server, hostname)
    return NodeRoot(paths=paths, server_pem=server, client_pem=paths.client_cert,
                    server_fp=certs.fingerprint_file(server), client_fp=client_fp)


@dataclass
class RunningNoded:
    """A node daemon started by a test (stopped by PID at teardown)."""

    node: NodeRoot
    address: str
    port: int
    grpc_port: int
    pid: int
    args: list[str] = field(default_factory=list)

    @property
    def paths(self) -> Paths:
        return self.node.paths

    @property
    def server_pem(self) -> str:
        return self.node.server_pem

    @property
    def client_pem(self) -> str:
        return self.node.client_pem

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        # a zombie of ours counts as gone
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().split()[2] != "Z"
        except OSError:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)

    # -- clients ------------------------------------------------------------
    def ssl_context(self, cert: str | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.server_pem)
        if cert is not None:
            ctx.load_cert_chain(cert)
        return ctx

    def post(self, procedure: str, body: bytes | str | Any = b"[]", cert: str | None = "client",
             method: str = "POST", headers: dict[str, str] | None = None,
             timeout: float = 30.0) -> tuple[int, bytes]:
        """One legacy call on a new TLS connection; returns (status, body)."""
        if cert == "client":
            cert = self.client_pem
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPSConnection(self.address, self.port, timeout=timeout,
                                           context=self.ssl_context(cert))
        try:
            conn.request(method, "/" + procedure, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def call(self, procedure: str, *args: Any, cert: str | None = "client") -> Any:
        """A legacy call that must succeed at the HTTP level; returns the decoded [ok, payload]."""
        status, body = self.post(procedure, list(args), cert=cert)
        assert status == 200, (status, body)
        return json.loads(body)


def start_noded(node: NodeRoot, address: str = "127.0.0.2", *extra: str,
                port: int | None = None, grpc_port: int | None = None,
                foreground: bool = False, wait: float = 20.0) -> RunningNoded:
    """Start our ganeti-noded on `address` for `node`; returns once both doors listen."""
    port = port or free_port(address)
    grpc_port = grpc_port if grpc_port is not None else free_port(address)
    args = [NODED, "-b", address, "-p", str(port), "--grpc-port", str(grpc_port), "--no-mlock", *extra]
    if foreground:
        proc = subprocess.Popen([*args, "-f"], env=node.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        pid = proc.pid
    else:
        res = subprocess.run(args, env=node.env, capture_output=True, text=True, timeout=wait)
        if res.returncode != 0:
            raise RuntimeError(f"ganeti-noded failed to start: {res.stderr.strip()}")
        pid = int(Path(node.paths.noded_pid_file).read_text().strip())
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                break
        except OSError:
            time.sleep(0.05)
    else:
        raise RuntimeError("ganeti-noded did not start listening")
    return RunningNoded(node=node, address=address, port=port, grpc_port=grpc_port, pid=pid, args=args)
