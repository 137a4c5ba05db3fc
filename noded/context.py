"""What a backend function knows about the node it runs on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from noded.paths import Paths

#: Ganeti's RPC protocol version (constants.PROTOCOL_VERSION for 3.0).
PROTOCOL_VERSION = 3000000
#: The Ganeti release whose protocol this daemon speaks.
RELEASE_VERSION = "3.0.2"
#: Default legacy (JSON over HTTPS) port.
DEFAULT_NODED_PORT = 1811
#: Default gRPC port.
DEFAULT_GRPC_PORT = 1812


def _no_shutdown() -> None:
    pass


@dataclass
class NodeContext:
    """Per-daemon facts handed to every backend call as its first argument."""

    paths: Paths
    #: Port of the legacy door (what other nodes reach this one on).
    port: int = DEFAULT_NODED_PORT
    #: Port of the gRPC door.
    grpc_port: int = DEFAULT_GRPC_PORT
    #: Address both doors are bound to ("" = all).
    bind_address: str = ""
    #: Whether TLS is on (False with --no-ssl).
    ssl: bool = True
    #: node_powercycle is refused unless the daemon was started with --allow-powercycle.
    allow_powercycle: bool = False
    #: Debug mode (-d).
    debug: bool = False
    #: Asks the daemon to shut down gracefully (node_leave_cluster), after the answer is sent.
    request_shutdown: Callable[[], None] = field(default=_no_shutdown)

    @property
    def hostname(self) -> str:
        return self.paths.hostname
