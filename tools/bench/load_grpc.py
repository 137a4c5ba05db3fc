"""gRPC load: N callers on one grpc.aio channel, `ClusterService.Version` back-to-back.

    python tools/bench/load_grpc.py --host H --port P --ca server.pem --cert client.pem \
        --callers N --warmup W --duration D

Each caller keeps one call in flight: it sends the next Version call as soon
as the previous answer arrives. Mutual TLS with the node's certificates; the
server certificate's name is ganeti.example.com (Ganeti's), hence the
target-name override. Protocol with run_bench.py: see loadgen.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for a direct run

from generated.ganeti.node.v1 import cluster_pb2, cluster_pb2_grpc
from noded.tls import split_pem
from tools.bench.loadgen import Result, Window, finish, handshake

PROTOCOL_VERSION = 3000000
SERVER_NAME = "ganeti.example.com"


async def call(stub: Any, timeout: float) -> tuple[bool, str]:
    try:
        resp = await stub.Version(cluster_pb2.VersionRequest(), timeout=timeout)
    except grpc.aio.AioRpcError as err:
        return False, f"{err.code().name}: {err.details()}"
    if resp.protocol_version != PROTOCOL_VERSION:
        return False, f"unexpected protocol_version {resp.protocol_version}"
    return True, ""


async def caller(stub: Any, window: Window) -> None:
    while window.running():
        started = time.perf_counter()
        ok, detail = await call(stub, 30.0)
        window.record(started, ok, detail)


async def run(args: Any) -> Result:
    loop = asyncio.get_running_loop()
    key, chain = split_pem(Path(args.cert).read_bytes())
    ca = Path(args.ca).read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
    options = [("grpc.ssl_target_name_override", SERVER_NAME), ("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.secure_channel(f"{args.host}:{args.port}", creds, options=options) as channel:
        stub = cluster_pb2_grpc.ClusterServiceStub(channel)
        ok, detail = await call(stub, 10.0)
        if not ok:
            raise SystemExit(f"load_grpc: the first call failed: {detail}")
        start = await handshake(loop)
        window = Window(start, args.warmup, args.duration)
        await window.wait_start()
        await asyncio.gather(*(caller(stub, window) for _ in range(args.callers)))
    return window.result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True, help="certificate the server must present (server.pem)")
    p.add_argument("--cert", required=True, help="key + certificate presented (client.pem)")
    p.add_argument("--callers", type=int, default=8)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--result", required=True, help="file to write the result to (JSON)")
    args = p.parse_args(argv)
    finish(asyncio.run(run(args)), args.result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
