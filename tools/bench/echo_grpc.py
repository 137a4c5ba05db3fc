"""A bare grpc.aio server answering ClusterService.Version with mutual TLS: the gRPC baseline.

    python tools/bench/echo_grpc.py --host 127.0.0.x --port P --root NODE_ROOT [--uvloop]

Same messages (generated.ganeti.node.v1.cluster_pb2 VersionRequest/VersionResponse),
same key, certificate and client CA as our daemon (the node's server.pem), client
certificate required; no fingerprint rule, no servicer, no codec.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for a direct run

from generated.ganeti.node.v1 import cluster_pb2, cluster_pb2_grpc
from noded.paths import Paths
from noded.tls import split_pem

PROTOCOL_VERSION = 3000000


class EchoCluster(cluster_pb2_grpc.ClusterServiceServicer):
    async def Version(self, request: cluster_pb2.VersionRequest,
                      context: grpc.aio.ServicerContext) -> cluster_pb2.VersionResponse:
        return cluster_pb2.VersionResponse(protocol_version=PROTOCOL_VERSION)


async def serve(host: str, port: int, root: Path) -> None:
    paths = Paths(root=str(root), hostname=root.name)
    pem = Path(paths.server_cert).read_bytes()
    key, cert = split_pem(pem)
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=cert,
                                        require_client_auth=True)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    # the stubs mark every rpc abstract; the base class answers the others UNIMPLEMENTED
    cluster_pb2_grpc.add_ClusterServiceServicer_to_server(EchoCluster(), server)  # type: ignore[abstract]
    if not server.add_secure_port(f"{host}:{port}", creds):
        raise SystemExit(f"echo_grpc: cannot bind {host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", required=True, help="a node's GANETI_ROOTDIR (its server.pem is used)")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop, as our daemon does")
    args = p.parse_args(argv)
    coro = serve(args.host, args.port, Path(args.root).resolve())
    if args.uvloop:
        import uvloop
        uvloop.run(coro)
    else:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
