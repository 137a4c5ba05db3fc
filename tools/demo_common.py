"""What the parts of the demo (tools/demo_nodes.py) share: output, the node daemons, a failure.

A `Node` is one of our ganeti-noded processes in its own GANETI_ROOTDIR;
the demo calls it over the legacy door exactly as a Ganeti master does (a
new TLS connection per call, the client certificate of a master candidate)
and over gRPC with the generated stubs.
"""

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from generated.ganeti.node.v1 import node_pb2_grpc
from noded import certs
from noded.paths import Paths
from noded.tls import split_pem

NODED = str(Path(sys.executable).parent / "ganeti-noded")
#: Longest line `show` prints (longer values are cut with "...").
SHOW_WIDTH = 160


class DemoFailed(Exception):
    """A step of the demo did not do what it should; the message says which and why."""


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def show(label: str, value: Any) -> None:
    text = json.dumps(value) if not isinstance(value, str) else value
    if len(text) > SHOW_WIDTH:
        text = text[:SHOW_WIDTH - 3] + "..."
    print(f"    {label}: {text}", flush=True)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Whether process `pid` is gone (or a zombie of someone else's) within `timeout` seconds."""
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


@dataclass
class Node:
    name: str
    address: str
    paths: Paths
    port: int = 0
    grpc_port: int = 0
    pid: int = 0

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, GANETI_ROOTDIR=self.paths.root, GANETI_HOSTNAME=self.name)

    def start(self) -> None:
        self.port, self.grpc_port = free_port(self.address), free_port(self.address)
        res = subprocess.run([NODED, "-b", self.address, "-p", str(self.port), "--grpc-port",
                              str(self.grpc_port)], env=self.env, capture_output=True, text=True)
        if res.returncode != 0:
            raise DemoFailed(f"ganeti-noded for {self.name} did not start: {res.stderr.strip()}")
        self.pid = int(Path(self.paths.noded_pid_file).read_text())

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the daemon is still there after 10 s."""
        if not self.pid:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not wait_pid_gone(self.pid, 10.0):
            os.kill(self.pid, signal.SIGKILL)
            wait_pid_gone(self.pid, 5.0)

    def call(self, procedure: str, *args: Any, cert: str) -> Any:
        """A legacy call, exactly as a Ganeti master makes it (new TLS connection).

        The decoded answer ([ok, payload]), or a string saying why there is none.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.paths.server_cert)
        ctx.load_cert_chain(cert)
        conn = http.client.HTTPSConnection(self.address, self.port, context=ctx, timeout=60)
        try:
            conn.request("POST", "/" + procedure, body=json.dumps(list(args)),
                         headers={"Content-type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
        except (ssl.SSLError, ConnectionError) as err:
            return f"connection refused by TLS: {err}"
        finally:
            conn.close()
        return json.loads(body) if resp.status == 200 else f"HTTP {resp.status}: {body.decode().strip()}"

    def must(self, procedure: str, *args: Any, cert: str) -> Any:
        """The payload of a call that has to succeed; DemoFailed with the node's answer otherwise."""
        answer = self.call(procedure, *args, cert=cert)
        if not (isinstance(answer, list) and len(answer) == 2 and answer[0] is True):
            raise DemoFailed(f"{procedure} on {self.name} failed: {answer}")
        return answer[1]

    def grpc_stub(self, cert: str) -> node_pb2_grpc.NodeServiceStub:
        key, chain = split_pem(Path(cert).read_bytes())
        _, ca = split_pem(Path(self.paths.server_cert).read_bytes())
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
        channel = grpc.secure_channel(f"{self.address}:{self.grpc_port}", creds,
                                      options=[("grpc.ssl_target_name_override", certs.CLUSTER_CERT_CN)])
        return node_pb2_grpc.NodeServiceStub(channel)
