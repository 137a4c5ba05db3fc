"""Small network probes used by node verification and the master-IP procedures."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

#: Seconds a TCP reachability probe waits (Ganeti's TcpPing default).
TCP_PING_TIMEOUT = 10.0


def address_family(address: str) -> int | None:
    """socket.AF_INET / AF_INET6 for an IP address text, None when it is not one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def owns_address(address: str) -> bool:
    """Whether this host has `address`: it can bind a socket to it (Ganeti's IPAddress.Own)."""
    family = address_family(address)
    if family is None:
        return False
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


def tcp_ping(target: str, port: int, timeout: float = TCP_PING_TIMEOUT, source: str | None = None,
             live_port_needed: bool = False) -> bool:
    """Whether `target` answers a TCP connection attempt on `port`.

    As in Ganeti's TcpPing, a refused connection proves the host is there
    and counts as success unless `live_port_needed`; with `source` the
    probe is sent from that local address when it can be bound (Ganeti
    3.0.2 goes on without it when it cannot, and so do we).
    """
    family = address_family(target)
    if family is None:
        return False
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if source is not None:
            try:
                sock.bind((source, 0))
            except OSError:
                pass
        sock.settimeout(timeout)
        try:
            sock.connect((target, port))
        except TimeoutError:
            return False
        except OSError as err:
            return not live_port_needed and err.errno == errno.ECONNREFUSED
    return True


def tcp_ping_many(probes: Iterable[tuple[str, int, str | None]],
                  timeout: float = TCP_PING_TIMEOUT) -> list[bool]:
    """tcp_ping for each (target, port, source), all at once; results in order."""
    items = list(probes)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        futures = [pool.submit(tcp_ping, t, p, timeout, s) for (t, p, s) in items]
        return [f.result() for f in futures]
