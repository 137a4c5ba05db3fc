"""The TLS connection between an import daemon (server) and an export daemon (client).

Both ends present their certificate and key and accept the peer only if
its certificate verifies against the `ca` file (the peer's certificate, or
the cluster certificate): what Ganeti's socat does with `verify=1`. No host
name is checked; the certificate is the identity. Like socat's `forever`
mode, an import keeps listening after a failed handshake (a wrong peer must
not end the transfer) until its connection timeout.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable

from noded.impexp.common import OPENSSL_CIPHERS

#: Seconds a TLS handshake may take once a peer connected.
HANDSHAKE_TIMEOUT = 20.0


class ChannelError(Exception):
    """No usable connection; the message says why."""


def tls_context(server: bool, key: str, cert: str, ca: str) -> ssl.SSLContext:
    """A context presenting `cert`/`key` and requiring a peer certificate signed by (or equal to) `ca`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_ciphers(OPENSSL_CIPHERS)
    try:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as err:
        raise ChannelError(f"Cannot load the certificate {cert} with the key {key}: {err}") from err
    try:
        ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as err:
        raise ChannelError(f"Cannot load the peer's CA certificate {ca}: {err}") from err
    return ctx


def _keepalive(sock: socket.socket) -> None:
    """TCP keepalive as Ganeti's socat sets it (idle 60 s, every 10 s, 5 probes)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 5)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def listen(bind: str, port: int, ipv6: bool) -> socket.socket:
    """A listening socket on `bind` (all addresses when empty) and `port` (0: any free port)."""
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
    except OSError as err:
        sock.close()
        raise ChannelError(f"Cannot listen on {bind or 'all addresses'} port {port}: {err.strerror}") from err
    sock.listen(4)
    return sock


def accept(listener: socket.socket, ctx: ssl.SSLContext, timeout: float,
           note: Callable[[str], None]) -> ssl.SSLSocket:
    """The first peer that completes the TLS handshake within `timeout` seconds.

    Failed handshakes are reported through `note` and waiting goes on.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChannelError(f"No connection was established within {timeout:.0f}s: the exporting"
                               " node did not connect, or its certificate was refused (see recent output)")
        listener.settimeout(remaining)
        try:
            conn, peer = listener.accept()
        except TimeoutError:
            continue
        where = f"{peer[0]}:{peer[1]}"
        conn.settimeout(min(HANDSHAKE_TIMEOUT, max(remaining, 1.0)))
        try:
            tls = ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False)
        except (OSError, ssl.SSLError) as err:
            conn.close()
            note(f"TLS handshake with {where} failed: {err}")
            continue
        tls.settimeout(None)
        _keepalive(tls)
        return tls


def connect(host: str, port: int, ctx: ssl.SSLContext, ipv6: bool, retries: int, attempt_timeout: float,
            note: Callable[[str], None], bind: str = "") -> ssl.SSLSocket:
    """A TLS connection to `host`:`port` (from the address `bind` when given), trying again once a
    second up to `retries` times."""
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    attempt = 0
    while True:
        attempt += 1
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(attempt_timeout)
        try:
            if bind:
                sock.bind((bind, 0))
            sock.connect((host, port))
        except OSError as err:
            sock.close()
            reason = err.strerror or str(err)
            if attempt > retries:
                raise ChannelError(f"Cannot connect to {host} port {port} after {attempt} attempts:"
                                   f" {reason}") from err
            note(f"Connecting to {host} port {port} failed ({reason}), trying again")
            time.sleep(1.0)
            continue
        try:
            tls = ctx.wrap_socket(sock, server_side=False, suppress_ragged_eofs=False)
        except (OSError, ssl.SSLError) as err:
            sock.close()
            raise ChannelError(f"TLS handshake with {host} port {port} failed: {err}") from err
        tls.settimeout(None)
        _keepalive(tls)
        return tls
