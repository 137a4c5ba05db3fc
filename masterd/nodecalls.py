"""Direct calls to a node daemon by address, as Ganeti's bootstrap / DnsOnlyRunner make them.

The master's node RPC client (masterd.rpc) reaches the nodes of the
configuration by name, over the gRPC door. A node that is not (yet) in the
configuration, as during OP_NODE_ADD, is reached by its address through the
legacy JSON door instead; our gnt-* tools (tools.gnt.node_daemon,
tools.gnt.cluster_init) make the same calls during `gnt-cluster init` and
`gnt-node add`, and import them from here so that masterd never depends on
tools/.

Interface::

    noded_port(paths, override=None) -> int    --noded-port, else the services database
                                               (below the root when set), else 1811
    call_node(paths, address, port, procedure, *args, timeout=60.0) -> payload
        one legacy call (JSON over HTTPS, a new TLS connection, $DATA_DIR/client.pem as
        the client certificate, server.pem as trust anchor); NodeCallError when it fails
    resolve(paths, name) -> IPv4 address      the root's etc/hosts when a root is set, else
                                               the resolver; ResolveError when it does not resolve
    tcp_ping(address, port, timeout=5.0) -> bool    Ganeti's TcpPing

Errors carry Ganeti's message as their only argument (``str(err)``).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
from typing import Any

from noded.context import DEFAULT_NODED_PORT
from noded.daemon import services_port
from noded.paths import Paths

#: Seconds one legacy call may take (node_activate_master_ip runs fping: about 1 s).
CALL_TIMEOUT = 60.0


class NodeCallError(Exception):
    """A legacy call failed (transport, TLS, or the node's own failure); the message says which."""


class ResolveError(Exception):
    """A name does not resolve (Ganeti's "Can't resolve hostname ..." message)."""


def noded_port(paths: Paths, override: int | None = None) -> int:
    """The node daemons' legacy port (every node of a cluster uses the same one)."""
    if override is not None:
        return override
    port = services_port(paths.services_file) if paths.root else None
    if port is None and not paths.root:
        try:
            port = socket.getservbyname("ganeti-noded", "tcp")
        except OSError:
            port = None
    return port if port is not None else DEFAULT_NODED_PORT


def call_node(paths: Paths, address: str, port: int, procedure: str, *args: Any,
              timeout: float = CALL_TIMEOUT) -> Any:
    """The payload of one successful legacy call; NodeCallError otherwise."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    try:
        ctx.load_verify_locations(paths.server_cert)
        ctx.load_cert_chain(paths.client_cert)
    except (OSError, ssl.SSLError) as err:
        raise NodeCallError(f"Cannot use the cluster certificates in {paths.data_dir}: {err}") from None
    conn = http.client.HTTPSConnection(address, port, context=ctx, timeout=timeout)
    where = f"node daemon at {address}:{port}"
    try:
        conn.request("POST", "/" + procedure, body=json.dumps(list(args)),
                     headers={"Content-type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, ssl.SSLError, http.client.HTTPException) as err:
        raise NodeCallError(f"{procedure} on the {where} failed: {err}") from None
    finally:
        conn.close()
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if resp.status != 200 or not (isinstance(answer, list) and len(answer) == 2):
        raise NodeCallError(f"{procedure} on the {where}: HTTP {resp.status}:"
                            f" {body.decode(errors='replace').strip()}")
    if answer[0] is not True:
        raise NodeCallError(f"{procedure} on the {where} failed: {answer[1]}")
    return answer[1]


def is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def resolve(paths: Paths, name: str) -> str:
    """`name`'s IPv4 address: the root's etc/hosts when a root is set, else the resolver."""
    if paths.root:
        try:
            with open(paths.etc_hosts, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as err:
            raise ResolveError(f"Can't resolve hostname '{name}': cannot read {paths.etc_hosts}:"
                               f" {err.strerror}") from None
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and name in fields[1:] and is_ipv4(fields[0]):
                return fields[0]
        raise ResolveError(f"Can't resolve hostname '{name}': not in {paths.etc_hosts}")
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as err:
        raise ResolveError(f"Can't resolve hostname '{name}': {err}") from None
    return str(infos[0][4][0])


def tcp_ping(address: str, port: int, timeout: float = 5.0) -> bool:
    """Whether something answers TCP on address:port (Ganeti's TcpPing)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
