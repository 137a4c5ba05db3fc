"""The master's client for the node daemons' gRPC door (port 1812, mutual TLS).

Credentials, as Ganeti's master uses them: the cluster certificate
($DATA_DIR/server.pem) is the trust anchor (the node daemons serve it), and
the master presents $DATA_DIR/client.pem, whose fingerprint the nodes accept
(ssconf_master_candidates_certs, or equal to server.pem while that is empty).
The certificate's name is Ganeti's fixed cluster CN, so the TLS name check
uses it whatever address a node has.

Node addresses come from ssconf_node_primary_ips, else name resolution of
the node name. Ports: `port` (1812 by default) for every node, except the
nodes listed in $DATA_DIR/node-grpc-ports (masterd.ssconf.node_grpc_ports,
our extension for several node daemons on one machine), read on every call.
One channel per address and port, reused.

Interface (every multi-node call runs on the nodes in parallel and answers
{name: None | "error text"}; it never raises for a node's failure)::

    client = NodeRpcClient(paths, port=1812, addresses=None, ports=None)
        # addresses: {name: ip} override of ssconf; ports: {name: port} override of node-grpc-ports
    await client.test_delay(["node1", "node2"], 0.5)
    await client.jobqueue_update(nodes, file_name, (encoding, data))   # CompressedData [enc, data]
    await client.jobqueue_rename(nodes, [(old, new), ...])
    await client.jobqueue_set_drain_flag(nodes, flag)
    await client.upload_file_single(nodes, file_name, (encoding, data), mode, user, group, atime, mtime)
    await client.write_ssconf_files(nodes, {key: [line, ...] or "text"})
    await client.master_node_name(nodes)   # {name: (answer, None) or (None, "error text")}
    await client.node_info(nodes, storage_units, hv_specs)
        # {name: ([boot_id, storage, hv_info], None) or (None, "error text")} (Ganeti's legacy result)
    await client.version(nodes)    # {name: (protocol version, None) or (None, "error text")}
    await client.node_demote_from_mc(nodes)   # {name: None | "error text"}: drop config.data
    await client.node_crypto_tokens(nodes)    # {name: (client cert digest "AA:..", None) or (None, "error")}
    client.set_addresses({name: ip} | None)  # node addresses from the configuration (None: ssconf)
    await client.close()

Any procedure, by its legacy name, with the JSON arguments a real master sends (the same
codec as the legacy door turns them into the request message)::

    await call(client, nodes, "instance_start", [instance, False, reason], timeout=None, offline=())
        # {name: RpcResult(node, payload, fail_msg, offline)}; result.raise_on_fail("what")
        # result.unreachable: the node could not be reached (not the node's own failure)
    await call_one(client, node, procedure, args) -> RpcResult
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from compat_jsonrpc.codec import request_from_args, result_from_response
from generated.ganeti.node.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    files_pb2,
    files_pb2_grpc,
    jobqueue_pb2,
    jobqueue_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    objects_pb2,
)
from masterd import ssconf
from masterd.luxi.protocol import OpExecError
from noded import certs
from noded.api import rpcs_by_procedure
from noded.context import DEFAULT_GRPC_PORT
from noded.paths import Paths
from noded.tls import split_pem

log = logging.getLogger("masterd.rpc")

#: Seconds added to an RPC's own duration before the client gives up on it.
RPC_MARGIN = 30.0
#: Seconds a master_node_name call (the master's start-up voting) may take (Ganeti's RPC_TMO_URGENT).
MASTER_NODE_NAME_TIMEOUT = 60.0
#: Seconds a job queue replication call may take (Ganeti's RPC_TMO_URGENT).
JOBQUEUE_TIMEOUT = 60.0
#: Seconds a node_info call may take (Ganeti's RPC_TMO_URGENT).
NODE_INFO_TIMEOUT = 60.0
#: node_verify runs many checks on the node (Ganeti: RPC_TMO_NORMAL).
NODE_VERIFY_TIMEOUT = 120.0
#: Seconds a node_demote_from_mc call may take (Ganeti's RPC_TMO_FAST).
DEMOTE_TIMEOUT = 60.0
#: Seconds a node_crypto_tokens call may take (Ganeti's RPC_TMO_SLOW).
CRYPTO_TOKENS_TIMEOUT = 900.0
#: Seconds a file distribution call (upload_file_single, write_ssconf_files) may take.
FILES_TIMEOUT = 60.0


class NodeRpcError(Exception):
    """A node cannot be reached at all (no address, no credentials)."""


class NodeRpcClient:
    def __init__(self, paths: Paths, port: int = DEFAULT_GRPC_PORT,
                 addresses: Mapping[str, str] | None = None, ports: Mapping[str, int] | None = None) -> None:
        self.paths = paths
        self.port = port
        self._addresses = dict(addresses) if addresses is not None else None
        self._ports = dict(ports) if ports is not None else None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._credentials: grpc.ChannelCredentials | None = None

    def set_addresses(self, addresses: Mapping[str, str] | None) -> None:
        """Use these node addresses from now on (the configuration's primary IPs); None: ssconf."""
        self._addresses = dict(addresses) if addresses is not None else None

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

    def _port(self, node: str) -> int:
        ports = self._ports if self._ports is not None else ssconf.node_grpc_ports(self.paths)
        return ports.get(node, self.port)

    async def target(self, node: str) -> str:
        """The ``address:port`` of a node's gRPC door (NodeRpcError when it has no address)."""
        return f"{await self._address(node)}:{self._port(node)}"

    async def _channel(self, node: str) -> grpc.aio.Channel:
        target = await self.target(node)
        channel = self._channels.get(target)
        if channel is None:
            channel = grpc.aio.secure_channel(
                target, self._creds(),
                options=[("grpc.ssl_target_name_override", certs.CLUSTER_CERT_CN)])
            self._channels[target] = channel
        return channel

    async def _call_one(self, node: str, call: Callable[[grpc.aio.Channel], Awaitable[object]]) -> str | None:
        """Run `call` on the node's channel: None on success, else the failure as text."""
        try:
            await call(await self._channel(node))
        except NodeRpcError as err:
            return str(err)
        except grpc.aio.AioRpcError as err:
            return f"{err.code().name}: {err.details()}"
        return None

    async def _on_nodes(self, nodes: Sequence[str],
                        call: Callable[[grpc.aio.Channel], Awaitable[object]]) -> dict[str, str | None]:
        results = await asyncio.gather(*(self._call_one(n, call) for n in nodes))
        return dict(zip(nodes, results, strict=True))

    async def jobqueue_update(self, nodes: Sequence[str], file_name: str,
                              content: tuple[int, str]) -> dict[str, str | None]:
        """Write one job queue file on the nodes; `content` is Ganeti's ``(encoding, data)``."""
        request = jobqueue_pb2.JobqueueUpdateRequest(
            file_name=file_name, content=objects_pb2.CompressedData(encoding=content[0], data=content[1]))

        async def call(channel: grpc.aio.Channel) -> object:
            stub = jobqueue_pb2_grpc.JobQueueServiceStub(channel)
            return await stub.JobqueueUpdate(request, timeout=JOBQUEUE_TIMEOUT)
        return await self._on_nodes(nodes, call)

    async def jobqueue_rename(self, nodes: Sequence[str],
                              renames: Sequence[tuple[str, str]]) -> dict[str, str | None]:
        """Rename job queue files on the nodes, in order (archiving)."""
        request = jobqueue_pb2.JobqueueRenameRequest(
            rename=[jobqueue_pb2.JobqueueRenamePair(old_path=old, new_path=new) for old, new in renames])

        async def call(channel: grpc.aio.Channel) -> object:
            stub = jobqueue_pb2_grpc.JobQueueServiceStub(channel)
            return await stub.JobqueueRename(request, timeout=JOBQUEUE_TIMEOUT)
        return await self._on_nodes(nodes, call)

    async def jobqueue_set_drain_flag(self, nodes: Sequence[str], flag: bool) -> dict[str, str | None]:
        """Set or clear the queue drain flag on the nodes."""
        request = jobqueue_pb2.JobqueueSetDrainFlagRequest(flag=flag)

        async def call(channel: grpc.aio.Channel) -> object:
            stub = jobqueue_pb2_grpc.JobQueueServiceStub(channel)
            return await stub.JobqueueSetDrainFlag(request, timeout=JOBQUEUE_TIMEOUT)
        return await self._on_nodes(nodes, call)

    async def upload_file_single(self, nodes: Sequence[str], file_name: str, content: tuple[int, str],
                                 mode: int | None, user: str, group: str, atime: float | None,
                                 mtime: float | None,
                                 timeout: float = FILES_TIMEOUT) -> dict[str, str | None]:
        """Write one whitelisted file (config.data ...) on the nodes; `content` is ``(encoding, data)``."""
        request = files_pb2.UploadFileSingleRequest(
            file_name=file_name, content=objects_pb2.CompressedData(encoding=content[0], data=content[1]),
            mode=mode, uid=user, gid=group, atime=atime, mtime=mtime)

        async def call(channel: grpc.aio.Channel) -> object:
            stub = files_pb2_grpc.FileServiceStub(channel)
            return await stub.UploadFileSingle(request, timeout=timeout)
        return await self._on_nodes(nodes, call)

    async def write_ssconf_files(self, nodes: Sequence[str], values: Mapping[str, str | Sequence[str]],
                                 timeout: float = FILES_TIMEOUT) -> dict[str, str | None]:
        """Write ssconf_<key> on the nodes for every key given (a text, or a list of lines)."""
        request = files_pb2.WriteSsconfFilesRequest()
        for key, value in values.items():
            if isinstance(value, str):
                request.values[key].string_value = value
            else:  # an empty list must still be a list (an unset Value is null)
                request.values[key].list_value.SetInParent()
                request.values[key].list_value.extend(list(value))

        async def call(channel: grpc.aio.Channel) -> object:
            stub = files_pb2_grpc.FileServiceStub(channel)
            return await stub.WriteSsconfFiles(request, timeout=timeout)
        return await self._on_nodes(nodes, call)

    async def test_delay(self, nodes: Sequence[str], duration: float) -> dict[str, str | None]:
        """Sleep `duration` seconds on every node at once; per node None or the failure."""
        request = cluster_pb2.TestDelayRequest(duration=duration)

        async def call(channel: grpc.aio.Channel) -> object:
            stub = cluster_pb2_grpc.ClusterServiceStub(channel)
            return await stub.TestDelay(request, timeout=duration + RPC_MARGIN)
        return await self._on_nodes(nodes, call)

    async def master_node_name(self, nodes: Sequence[str], timeout: float = MASTER_NODE_NAME_TIMEOUT
                               ) -> dict[str, tuple[str | None, str | None]]:
        """Each node's ssconf_master_node, for the master's start-up voting.

        Per node ``(answer, None)``, or ``(None, failure text)`` when the node
        cannot be reached or fails the call (e.g. it has no ssconf).
        """
        request = cluster_pb2.MasterNodeNameRequest()
        unique = list(dict.fromkeys(nodes))
        answers: dict[str, str] = {}

        def asking(node: str) -> Callable[[grpc.aio.Channel], Awaitable[object]]:
            async def call(channel: grpc.aio.Channel) -> object:
                stub = cluster_pb2_grpc.ClusterServiceStub(channel)
                reply = await stub.MasterNodeName(request, timeout=timeout)
                answers[node] = reply.master_node
                return reply
            return call
        failures = await asyncio.gather(*(self._call_one(n, asking(n)) for n in unique))
        return {node: (answers[node], None) if failure is None else (None, failure)
                for node, failure in zip(unique, failures, strict=True)}

    async def node_info(self, nodes: Sequence[str], storage_units: Sequence[Sequence[Any]] | None,
                        hv_specs: Sequence[Sequence[Any]] | None, timeout: float = NODE_INFO_TIMEOUT
                        ) -> dict[str, tuple[Any, str | None]]:
        """Each node's node_info: ``(legacy result, None)`` or ``(None, failure text)``.

        The legacy result is ``[boot_id, [storage space...], [hypervisor info...]]``.
        """
        args = [None if storage_units is None else [list(u) for u in storage_units],
                None if hv_specs is None else [list(h) for h in hv_specs]]
        request = request_from_args(node_pb2.NodeInfoRequest, args, "node_info")
        unique = list(dict.fromkeys(nodes))
        answers: dict[str, Any] = {}

        def asking(node: str) -> Callable[[grpc.aio.Channel], Awaitable[object]]:
            async def call(channel: grpc.aio.Channel) -> object:
                stub = node_pb2_grpc.NodeServiceStub(channel)
                reply = await stub.NodeInfo(request, timeout=timeout)
                answers[node] = result_from_response(reply)
                return reply
            return call
        failures = await asyncio.gather(*(self._call_one(n, asking(n)) for n in unique))
        return {node: (answers[node], None) if failure is None else (None, failure)
                for node, failure in zip(unique, failures, strict=True)}

    async def node_verify(self, nodes: Sequence[str], checks: Mapping[str, Any], cluster_name: str,
                          all_hvparams: Mapping[str, Any] | None, timeout: float = NODE_VERIFY_TIMEOUT
                          ) -> dict[str, tuple[Any, str | None]]:
        """Each node's node_verify: ``(legacy result {check: answer}, None)`` or ``(None, failure text)``."""
        args = [dict(checks), cluster_name, None if all_hvparams is None else dict(all_hvparams)]
        request = request_from_args(node_pb2.NodeVerifyRequest, args, "node_verify")
        unique = list(dict.fromkeys(nodes))
        answers: dict[str, Any] = {}

        def asking(node: str) -> Callable[[grpc.aio.Channel], Awaitable[object]]:
            async def call(channel: grpc.aio.Channel) -> object:
                stub = node_pb2_grpc.NodeServiceStub(channel)
                reply = await stub.NodeVerify(request, timeout=timeout)
                answers[node] = result_from_response(reply)
                return reply
            return call
        failures = await asyncio.gather(*(self._call_one(n, asking(n)) for n in unique))
        return {node: (answers[node], None) if failure is None else (None, failure)
                for node, failure in zip(unique, failures, strict=True)}

    async def version(self, nodes: Sequence[str], timeout: float = MASTER_NODE_NAME_TIMEOUT
                      ) -> dict[str, tuple[int | None, str | None]]:
        """Each node's protocol version (PROTOCOL_VERSION): ``(version, None)`` or ``(None, error)``."""
        request = cluster_pb2.VersionRequest()
        unique = list(dict.fromkeys(nodes))
        answers: dict[str, int] = {}

        def asking(node: str) -> Callable[[grpc.aio.Channel], Awaitable[object]]:
            async def call(channel: grpc.aio.Channel) -> object:
                stub = cluster_pb2_grpc.ClusterServiceStub(channel)
                reply = await stub.Version(request, timeout=timeout)
                answers[node] = reply.protocol_version
                return reply
            return call
        failures = await asyncio.gather(*(self._call_one(n, asking(n)) for n in unique))
        return {node: (answers[node], None) if failure is None else (None, failure)
                for node, failure in zip(unique, failures, strict=True)}

    async def node_demote_from_mc(self, nodes: Sequence[str],
                                  timeout: float = DEMOTE_TIMEOUT) -> dict[str, str | None]:
        """Demote the nodes from master candidate: each backs up and removes its config.data."""
        request = node_pb2.NodeDemoteFromMcRequest()

        async def call(channel: grpc.aio.Channel) -> object:
            stub = node_pb2_grpc.NodeServiceStub(channel)
            return await stub.NodeDemoteFromMc(request, timeout=timeout)
        return await self._on_nodes(nodes, call)

    async def node_crypto_tokens(self, nodes: Sequence[str], timeout: float = CRYPTO_TOKENS_TIMEOUT
                                 ) -> dict[str, tuple[str | None, str | None]]:
        """Each node's client certificate digest (the "ssl" token, action "get").

        Per node ``(digest, None)``, or ``(None, failure text)``.
        """
        request = node_pb2.NodeCryptoTokensRequest(
            token_request=[node_pb2.CryptoTokenRequest(token_type="ssl", action="get")])
        unique = list(dict.fromkeys(nodes))
        answers: dict[str, str] = {}

        def asking(node: str) -> Callable[[grpc.aio.Channel], Awaitable[object]]:
            async def call(channel: grpc.aio.Channel) -> object:
                stub = node_pb2_grpc.NodeServiceStub(channel)
                reply = await stub.NodeCryptoTokens(request, timeout=timeout)
                tokens = [token.token for token in reply.tokens if token.token_type == "ssl"]
                if not tokens:
                    raise NodeRpcError(f"node {node} returned no ssl token")
                answers[node] = tokens[0]
                return reply
            return call
        failures = await asyncio.gather(*(self._call_one(n, asking(n)) for n in unique))
        return {node: (answers[node], None) if failure is None else (None, failure)
                for node, failure in zip(unique, failures, strict=True)}

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()


# --- any procedure, by its legacy name -----------------------------------------------------------

#: Seconds of each legacy timeout class (Ganeti's rpc_defs: RPC_TMO_*).
TIMEOUT_SECONDS = {1: 60.0, 2: 300.0, 3: 900.0, 4: 3600.0, 5: 4 * 3600.0, 6: 86400.0}


@dataclass
class RpcResult:
    """One node's answer to a call (Ganeti's RpcResult): the payload, or why there is none.

    `fail_msg` is None on success; otherwise the node's own failure message
    (what the legacy door would answer as ``[false, message]``), or why the
    node could not be asked. `offline`: the node was not contacted because it
    is offline.
    """

    node: str
    payload: Any = None
    fail_msg: str | None = None
    offline: bool = False

    @property
    def unreachable(self) -> bool:
        """The node could not be reached (as opposed to answering with a failure)."""
        return self.fail_msg is not None and self.fail_msg.startswith(UNREACHABLE_PREFIX)

    def raise_on_fail(self, what: str) -> Any:
        """The payload, or OpExecError("<what> on node <node>: <failure>")."""
        if self.fail_msg is not None:
            raise OpExecError(f"{what} on node {self.node}: {self.fail_msg}")
        return self.payload


#: How a failure to reach a node (not the node's own answer) starts.
UNREACHABLE_PREFIX = "Error while contacting the node"


def _failure_text(err: grpc.aio.AioRpcError) -> str:
    code = err.code()
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INTERNAL,
                grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT):
        return str(err.details())  # the node's own message, as the legacy door words it
    return f"{UNREACHABLE_PREFIX}: {code.name}: {err.details()}"


async def _call_procedure(client: NodeRpcClient, node: str, procedure: str, request: Any,
                          timeout: float) -> RpcResult:
    rpc = rpcs_by_procedure()[procedure]
    try:
        channel = await client._channel(node)
        method = channel.unary_unary(rpc.path, request_serializer=rpc.request_cls.SerializeToString,
                                     response_deserializer=rpc.response_cls.FromString)
        reply = await method(request, timeout=timeout)
    except NodeRpcError as err:
        return RpcResult(node, fail_msg=str(err))
    except grpc.aio.AioRpcError as err:
        return RpcResult(node, fail_msg=_failure_text(err))
    return RpcResult(node, payload=result_from_response(reply))


async def call(client: NodeRpcClient, nodes: Sequence[str], procedure: str,
               args: Sequence[Any] | Mapping[str, Any], timeout: float | None = None,
               offline: Sequence[str] = ()) -> dict[str, RpcResult]:
    """Run one node procedure on `nodes` in parallel, with its arguments as the legacy protocol has them.

    `args` is the JSON argument list a real master sends (rpc-trace.md): it is
    turned into the request message by the same codec the legacy door uses,
    and the answer is the legacy payload. Nodes listed in `offline` are not
    contacted (their result says so, as Ganeti's runner does). The timeout
    defaults to the procedure's class (rpc_defs).
    """
    rpc = rpcs_by_procedure().get(procedure)
    if rpc is None:
        raise KeyError(f"no node procedure {procedure!r}")
    # a dict is the one-object body of instance_console_info (codec.request_from_args)
    request = request_from_args(rpc.request_cls, args if isinstance(args, Mapping) else list(args), procedure)
    seconds = timeout if timeout is not None else TIMEOUT_SECONDS.get(rpc.timeout, 900.0)
    unique = list(dict.fromkeys(nodes))
    skipped = set(offline)
    results = await asyncio.gather(*(
        _call_procedure(client, node, procedure, request, seconds) for node in unique if node not in skipped))
    answers = {result.node: result for result in results}
    return {node: answers.get(node) or RpcResult(node, fail_msg="Node is marked offline", offline=True)
            for node in unique}


async def call_one(client: NodeRpcClient, node: str, procedure: str, args: Sequence[Any] | Mapping[str, Any],
                   timeout: float | None = None) -> RpcResult:
    """`call` on a single node."""
    return (await call(client, [node], procedure, args, timeout))[node]
