"""The master's gRPC door: where it listens, who may call, and the server with health and reflection.

* Address: the master node's primary address, from ssconf
  (``ssconf_master_node`` and the ``<name> <ip>`` lines of
  ``ssconf_node_primary_ips``), unless ``--grpc-bind`` gives one; port
  ``--grpc-port`` (1813 by default).
* TLS, mutual: the server presents the cluster certificate
  ($DATA_DIR/server.pem, key and certificate in one file) and requires a
  client certificate signed by it (Ganeti signs every node certificate with
  it). On top, `MasterClientPolicy` accepts the cluster certificate itself
  and the client certificates of the master candidates
  (``ssconf_master_candidates_certs``, noded.tls.ClientCertPolicy); any
  other certificate is refused with PERMISSION_DENIED, a missing or
  foreign one fails the handshake (UNAVAILABLE). Rewritten certificate
  files are picked up for new connections without a restart.
* Services: ganeti.master.v1's JobService, QueryService and ClusterService
  (masterd.grpc_api), grpc.health.v1.Health (SERVING while the door is open,
  NOT_SERVING during shutdown) and server reflection.

Interface::

    address = bind_address(paths, override)        # GrpcDoorError when unknown
    door = await start_grpc_door(api, paths, address, port)   # GrpcDoorError when it cannot listen
    await door.stop(grace)
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from masterd import ssconf
from masterd.grpc_api import MasterApi
from noded.certs import fingerprint_der
from noded.paths import Paths
from noded.tls import ClientCertPolicy, ServerCredentials, pem_cert_der

log = logging.getLogger("masterd.grpc")

DEFAULT_GRPC_PORT = 1813


class GrpcDoorError(Exception):
    """The gRPC door cannot be opened; the message says why and what to do."""


def bind_address(paths: Paths, override: str | None = None) -> str:
    """The address the door listens on: `override`, else the master's primary IP from ssconf."""
    if override:
        return override
    master = ssconf.master_node(paths)
    if master is None:
        raise GrpcDoorError(f"{paths.ssconf_file('master_node')} is missing: cannot tell the master's"
                            " address; give one with --grpc-bind")
    address = ssconf.node_addresses(paths).get(master)
    if address is None:
        raise GrpcDoorError(f"{paths.ssconf_file('node_primary_ips')} has no line for the master {master}:"
                            " cannot tell where to listen; give the address with --grpc-bind (or disable"
                            " the gRPC door with --grpc-port 0)")
    return address


class MasterClientPolicy:
    """Accepts the cluster certificate and the master candidates' client certificates."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._candidates = ClientCertPolicy(paths)
        self._lock = threading.Lock()
        self._cluster: tuple[tuple[int, int, int] | None, str | None] = (None, None)

    def _cluster_fingerprint(self) -> str | None:
        try:
            st = os.stat(self.paths.server_cert)
            key: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None
        with self._lock:
            if self._cluster[0] != key:
                try:
                    with open(self.paths.server_cert, "rb") as handle:
                        fp: str | None = fingerprint_der(pem_cert_der(handle.read()))
                except (OSError, ValueError):
                    fp = None
                self._cluster = (key, fp)
            return self._cluster[1]

    def check_pem(self, pem: bytes | None) -> str | None:
        """None when the certificate may call the master, else the reason it may not."""
        if not pem:
            return "no client certificate was presented"
        try:
            der = pem_cert_der(pem)
        except ValueError:
            return "the client certificate could not be read"
        if fingerprint_der(der) == self._cluster_fingerprint():
            return None
        reason = self._candidates.check_der(der)
        if reason is None:
            return None
        return f"{reason}; the master also accepts the cluster certificate ({self.paths.server_cert})"


def _server_credentials(paths: Paths) -> grpc.ServerCredentials:
    creds = ServerCredentials(paths, paths.server_cert, paths.server_cert)
    try:
        creds.check_readable()
        key, cert, ca = creds.grpc_config()
    except (OSError, ValueError) as err:
        raise GrpcDoorError(f"cannot read the cluster certificate {paths.server_cert}: {err}") from err
    state = {"key": creds.files_key()}

    def fetch() -> Any:
        current = creds.files_key()
        if current == state["key"]:
            return None
        try:
            k, c, a = creds.grpc_config()
        except (OSError, ValueError) as err:
            log.error("cannot reload the cluster certificate %s: %s", paths.server_cert, err)
            return None
        state["key"] = current
        return grpc.ssl_server_certificate_configuration([(k, c)], root_certificates=a)

    return grpc.dynamic_ssl_server_credentials(
        grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca),
        fetch, require_client_authentication=True)


@dataclass
class GrpcDoor:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    target: str

    async def stop(self, grace: float) -> None:
        """Say NOT_SERVING, then stop; calls in flight (and WatchJob streams) get `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_grpc_door(api: MasterApi, paths: Paths, address: str, port: int) -> GrpcDoor:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    names = api.add_to_server(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    host = f"[{address}]" if ":" in address else address
    target = f"{host}:{port}"
    try:
        bound = server.add_secure_port(target, _server_credentials(paths))
    except RuntimeError as err:
        bound = 0
        log.error("cannot bind %s: %s", target, err)
    if not bound:
        raise GrpcDoorError(f"cannot listen on {target} for the gRPC door (address not on this machine,"
                            " or port in use); choose another with --grpc-bind/--grpc-port, or 0 to disable")
    await server.start()
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcDoor(server, health_servicer, target)
