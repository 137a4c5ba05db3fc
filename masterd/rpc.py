"""The master's client for the node daemons' gRPC door (port 1812, mutual TLS).

Credentials, as Ganeti's master uses them: the cluster certificate
($DATA_DIR/server.pem) is the trust anchor (the node daemons serve it), and
the master presents $DATA_DIR/client.pem, whose fingerprint the nodes accept
(ssconf_master_candidates_certs, or equal to server.pem while that is empty).
The certificate's name is Ganeti's fixed cluster CN, so the TLS name check
uses it whatever address a node has.

Node addresses come from ssconf_node_primary_ips, else name resolution of
the node name. One channel per address, reused.

Interface::

    client = NodeRpcClient(paths, port=1812, addresses=None)   # addresses: {name: ip} override
    await client.test_delay(["node1", "node2"], 0.5) -> {name: None | "error text"}  (in parallel)
    await client.close()
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence

import grpc
import grpc.aio

from generated.ganeti.node.v1 import cluster_pb2, cluster_pb2_grpc
from masterd import ssconf
from noded import certs
from noded.context import DEFAULT_GRPC_PORT
from noded.paths import Paths
from noded.tls import split_pem

log = logging.getLogger("masterd.rpc")

#: Seconds added to an RPC's own duration before the client gives up on it.
RPC_MARGIN = 30.0


class NodeRpcError(Exception):
    """A node cannot be reached at all (no address, no credentials)."""


class NodeRpcClient:
    def __init__(self, paths: Paths, port: int = DEFAULT_GRPC_PORT,
                 addresses: Mapping[str, str] | None = None) -> None:
        self.paths = paths
        self.port = port
        self._addresses = dict(addresses) if addresses is not None else None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._credentials: grpc.ChannelCredentials | None = None

    def _creds(self) -> grpc.ChannelCredentials:
        if self._credentials is None:
            try:
                with open(self.paths.server_cert, "rb") as handle:
                    _, ca = split_pem(handle.read())
                with open(self.paths.client_cert, "rb") as handle:
                    key, chain = split_pem(handle.read())
            except (OSError, ValueError) as err:
                raise NodeRpcError(f"cannot load the cluster certificates ({self.paths.server_cert},"
                                   f" {self.paths.client_cert}): {err}") from err
            self._credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                                             certificate_chain=chain)
        return self._credentials

    async def _address(self, node: str) -> str:
        addresses = self._addresses if self._addresses is not None else ssconf.node_addresses(self.paths)
        if node in addresses:
            return addresses[node]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(node, None, family=socket.AF_INET)
        except OSError as err:
            raise NodeRpcError(f"no address for node {node}: not in ssconf_node_primary_ips"
                               f" and not resolvable ({err})") from err
        return str(infos[0][4][0])

    async def _channel(self, node: str) -> grpc.aio.Channel:
        address = await self._address(node)
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.secure_channel(
                f"{address}:{self.port}", self._creds(),
                options=[("grpc.ssl_target_name_override", certs.CLUSTER_CERT_CN)])
            self._channels[address] = channel
        return channel

    async def _test_delay_one(self, node: str, duration: float) -> str | None:
        try:
            stub = cluster_pb2_grpc.ClusterServiceStub(await self._channel(node))
            await stub.TestDelay(cluster_pb2.TestDelayRequest(duration=duration),
                                 timeout=duration + RPC_MARGIN)
        except NodeRpcError as err:
            return str(err)
        except grpc.aio.AioRpcError as err:
            return f"{err.code().name}: {err.details()}"
        return None

    async def test_delay(self, nodes: Sequence[str], duration: float) -> dict[str, str | None]:
        """Sleep `duration` seconds on every node at once; per node None or the failure."""
        results = await asyncio.gather(*(self._test_delay_one(n, duration) for n in nodes))
        return dict(zip(nodes, results, strict=True))

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()
