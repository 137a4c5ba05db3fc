"""A bare Starlette/uvicorn JSON app with the legacy door's TLS settings: the keep-alive baseline.

    python tools/bench/echo_http.py --host 127.0.0.x --port P --root NODE_ROOT [--workers N]

`POST /<anything>` parses the JSON body and answers `[true, 3000000]` with the
same framing as our daemon (HTTP 200, JSON text and a newline). TLS is the
context our daemon builds (noded.tls.ServerCredentials: same certificate,
client certificate required, Ganeti's ciphers, the same session-ticket and
ALPN settings) on uvloop and httptools, as our daemon runs; what it leaves out is
everything that makes a node daemon: Ganeti's fingerprint rule, the
connection limit, the proto codec, the servicer, the request log.
With --workers N, N forked processes accept on one listening socket (as our
daemon's legacy workers do); SIGTERM to the parent stops them all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for a direct run

from noded.paths import Paths
from noded.tls import ServerCredentials

PROTOCOL_VERSION = 3000000


async def answer(request: Request) -> Response:
    json.loads(await request.body())
    return Response(json.dumps([True, PROTOCOL_VERSION]) + "\n")


def create_app() -> Starlette:
    return Starlette(routes=[Route("/{procedure}", answer, methods=["POST", "PUT"])])


def serve(sock: socket.socket, root: Path) -> None:
    """One uvicorn server on the already listening `sock` (stops on SIGTERM/SIGINT)."""
    paths = Paths(root=str(root), hostname=root.name)
    creds = ServerCredentials(paths, paths.server_cert, paths.server_cert)
    creds.check_readable()
    config = uvicorn.Config(
        create_app(), loop="uvloop", http="httptools", lifespan="off", access_log=False,
        log_level="warning", backlog=1024, timeout_keep_alive=30)
    config.load()
    config.ssl = creds.ssl_context()
    uvicorn.Server(config).run(sockets=[sock])


def run_workers(sock: socket.socket, root: Path, workers: int) -> None:
    pids: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                serve(sock, root)
                status = 0
            finally:
                os._exit(status)
        pids.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for pid in pids:
        os.waitpid(pid, 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", required=True,
                   help="a node's GANETI_ROOTDIR: its server.pem is the key, certificate and client CA")
    p.add_argument("--workers", type=int, default=1, help="processes accepting on the socket")
    args = p.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
    sock.bind((args.host, args.port))
    sock.listen(1024)
    sock.set_inheritable(True)
    root = Path(args.root).resolve()
    if args.workers <= 1:
        serve(sock, root)
    else:
        run_workers(sock, root, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
