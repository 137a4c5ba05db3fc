"""Keep-alive load on the legacy door: N persistent TLS connections, `POST /version` back-to-back.

    python tools/bench/load_http.py --host H --port P --ca server.pem --cert client.pem \
        --connections N --warmup W --duration D

One request in flight per connection (no pipelining), as an HTTP/1.1 client
with a connection pool does. Runs on uvloop with httptools' response parser
and asyncio.Protocol objects (no streams), to spend as little client CPU per
call as Python allows. Protocol with run_bench.py: see loadgen.py.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any, cast

import httptools
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for a direct run

from tools.bench.loadgen import Result, Window, finish, handshake


def request_bytes(host: str, port: int, procedure: str, body: bytes) -> bytes:
    head = (f"POST /{procedure} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: Ganeti 3.0.2\r\n"
            f"Accept: */*\r\nContent-type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class KeepAliveConnection(asyncio.Protocol):
    """One persistent connection that sends the next request as soon as the answer is complete."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.started = 0.0
        self.window: Window | None = None
        self.waiter: asyncio.Future[tuple[bool, str]] | None = None
        self.closed: asyncio.Future[None] = self.loop.create_future()

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's SSL transport is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._complete(False, f"unparsable response: {err}")
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None or (self.window is not None and self.window.running()):
            self._complete(False, f"connection closed by the server ({exc or 'EOF'})")
        if not self.closed.done():
            self.closed.set_result(None)

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        body = b"".join(self.body)
        ok = status == 200 and body.startswith(b"[true")
        self._complete(ok, f"HTTP {status}: {body[:200]!r}")
        if self.window is not None and not self.window.running():
            self._close()
        elif self.window is not None:
            self.send()

    # -- driving
    def send(self) -> None:
        assert self.transport is not None
        self.started = time.perf_counter()
        self.transport.write(self.request)

    async def probe(self) -> tuple[bool, str]:
        """One call outside any window (checks the connection works)."""
        self.waiter = self.loop.create_future()
        self.send()
        return await self.waiter

    def run(self, window: Window) -> None:
        self.window = window
        self.send()

    def _complete(self, ok: bool, detail: str) -> None:
        if self.waiter is not None:
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result((ok, detail))
        elif self.window is not None:
            self.window.record(self.started, ok, detail)

    def _close(self) -> None:
        self.window = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def run(args: Any) -> Result:
    loop = asyncio.get_running_loop()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(args.ca)
    ctx.load_cert_chain(args.cert)
    request = request_bytes(args.host, args.port, args.procedure, args.body.encode())
    conns: list[KeepAliveConnection] = []
    for _ in range(args.connections):
        _, proto = await loop.create_connection(lambda: KeepAliveConnection(request), args.host,
                                                args.port, ssl=ctx)
        conns.append(proto)
    for conn in conns:
        ok, detail = await conn.probe()
        if not ok:
            raise SystemExit(f"load_http: the first call failed: {detail}")
    start = await handshake(loop)
    window = Window(start, args.warmup, args.duration)
    await window.wait_start()
    for conn in conns:
        conn.run(window)
    await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)),
                           timeout=window.end - time.perf_counter() + 30)
    return window.result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True, help="certificate the server must present (server.pem)")
    p.add_argument("--cert", required=True, help="key + certificate presented (client.pem)")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--procedure", default="version")
    p.add_argument("--body", default="[]\n")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--result", required=True, help="file to write the result to (JSON)")
    args = p.parse_args(argv)
    finish(uvloop.run(run(args)), args.result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
