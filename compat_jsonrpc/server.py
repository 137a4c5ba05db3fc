"""Serving the legacy app with uvicorn: TLS client-certificate rule and connection limit.

uvicorn's httptools protocol is extended in two ways: after the TLS handshake
the client certificate is checked against Ganeti's rule (a refused client gets
`403` with the reason for its request), and at most `max_clients` connections
are served at once; further connections are accepted but not read until a
slot frees (they wait, none is dropped).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from compat_jsonrpc.app import TLS_REJECT_SCOPE_KEY
from noded.tls import ClientCertPolicy, ServerCredentials

log = logging.getLogger("noded.legacy")


class ConnectionLimiter:
    """At most `limit` connections are read from at once; the others wait in order."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the connection limit must be at least 1")
        self.limit = limit
        self.active = 0
        self.waiting: deque[GanetiHttpProtocol] = deque()

    def admit(self, proto: GanetiHttpProtocol) -> None:
        if self.active < self.limit:
            self.active += 1
            proto.admitted = True
            return
        proto.admitted = False
        proto.transport.pause_reading()
        self.waiting.append(proto)

    def leave(self, proto: GanetiHttpProtocol) -> None:
        if not proto.admitted:
            try:
                self.waiting.remove(proto)
            except ValueError:
                pass
            return
        proto.admitted = False
        self.active -= 1
        while self.waiting and self.active < self.limit:
            nxt = self.waiting.popleft()
            if nxt.transport.is_closing():
                continue
            self.active += 1
            nxt.admitted = True
            nxt.transport.resume_reading()


class GanetiHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the node's TLS rule and connection limit."""

    policy: ClientCertPolicy | None = None
    credentials: ServerCredentials | None = None
    limiter: ConnectionLimiter | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls_reject: str | None = None
        if self.credentials is not None:
            self.credentials.refresh()
        if self.policy is not None:
            sslobj: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
            self._tls_reject = self.policy.check_der(der)
            if self._tls_reject is not None:
                peer = transport.get_extra_info("peername")
                log.warning("refusing %s: %s", peer, self._tls_reject)
        self.admitted = True
        if self.limiter is not None:
            self.limiter.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.limiter is not None:
            self.limiter.leave(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls_reject is not None:
            self.scope[TLS_REJECT_SCOPE_KEY] = self._tls_reject  # type: ignore[literal-required]


def protocol_class(policy: ClientCertPolicy | None, credentials: ServerCredentials | None,
                   limiter: ConnectionLimiter) -> type[GanetiHttpProtocol]:
    """A protocol class bound to this daemon's policy and limiter (uvicorn instantiates it)."""
    attrs: dict[str, Any] = {"policy": policy, "credentials": credentials, "limiter": limiter}
    return type("BoundGanetiHttpProtocol", (GanetiHttpProtocol,), attrs)


class LegacyServer:
    """uvicorn driving the legacy app on an already bound socket, without its signal handling."""

    def __init__(self, app: Any, sock: socket.socket, ssl_context: ssl.SSLContext | None,
                 protocol: type[GanetiHttpProtocol]) -> None:
        config = uvicorn.Config(
            app, http=protocol, lifespan="off", access_log=False, log_config=None,
            server_header=False, date_header=True, backlog=1024, timeout_keep_alive=30,
            proxy_headers=False,
            headers=[("Server", "Ganeti 3.0.2 (ganeti-noded, Python reimplementation)")],
        )
        config.load()
        config.ssl = ssl_context
        self.config = config
        self.sock = sock
        self.server = uvicorn.Server(config)

    async def start(self) -> None:
        self.server.lifespan = self.config.lifespan_class(self.config)
        await self.server.startup(sockets=[self.sock])

    async def serve_until_stopped(self) -> None:
        await self.server.main_loop()

    def request_stop(self) -> None:
        self.server.should_exit = True

    async def shutdown(self) -> None:
        await self.server.shutdown(sockets=[self.sock])
