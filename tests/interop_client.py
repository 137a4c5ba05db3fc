#!/usr/bin/python3
"""Call a node daemon with the REAL Ganeti 3.0 RPC client code; print the results as JSON.

Run with the system Python and Ganeti's tree on the path:

    GANETI_ROOTDIR=/x/node1 GANETI_HOSTNAME=node1 PYTHONPATH=/usr/share/ganeti/3.0 \
        /usr/bin/python3 tests/interop_client.py HOST PORT < calls.json

GANETI_ROOTDIR/GANETI_HOSTNAME name the master's virtual-cluster root: its
var/lib/ganeti holds the cluster's server.pem (trusted as CA) and the
master's client.pem (presented), and virtual paths are made relative to it,
as on a master of a Ganeti virtual cluster. INTEROP_NODE_ROOT (optional) is
the called node's root, for the "$path" marker.

The calls go through ganeti.rpc.node._RpcClientBase and the generated
wrappers of ganeti._generated_rpc (call_<procedure>) with the master's
encoders (ED_COMPRESS, ED_FILE_DETAILS, ...), so every body is exactly what a
real master sends: pycurl with _ConfigRpcCurl. Only the daemon port
(netutils.GetDaemonPort) and the name resolution (every node name -> HOST)
are replaced.

stdin: {"node": "node1", "calls": [{"proc": "version", "args": [], "cert": "client"}, ...]}
  cert: "client" (client.pem, the normal case), "server" (client.pem looks
  absent, so Ganeti falls back to server.pem: bootstrap mode), or the path
  of another PEM with key and certificate.
  Arguments are JSON values, where an object with one of these keys is
  replaced (inner markers first):
    {"$path": "/var/lib/ganeti/x"}        that path on the called node (below INTEROP_NODE_ROOT)
    {"$master_path": "/var/lib/..."}      that path on the master (below GANETI_ROOTDIR)
    {"$pathutils": "RAPI_USERS_FILE"}     ganeti.pathutils.<NAME> (a master path)
    {"$vpath": <local path>}            vcluster.MakeVirtualPath(<local path>)
    {"$bytes": "text"}                  the text as bytes (ED_COMPRESS input)
    {"$time": null}                     time.time() now
stdout: a JSON list, one object per call:
  {"proc", "fail_msg", "payload", "data" (the decoded [ok, payload] or null), "offline"}
"""

import json
import logging
import os
import sys
import time
from typing import Any

from ganeti import _generated_rpc, netutils, pathutils, rpc_defs, vcluster
from ganeti.rpc import node as rpcnode

_CLASSES = (
    _generated_rpc.RpcClientDnsOnly,
    _generated_rpc.RpcClientBootstrap,
    _generated_rpc.RpcClientConfig,
    _generated_rpc.RpcClientJobQueue,
    _generated_rpc.RpcClientDefault,
)
_CLIENT_CERT = pathutils.NODED_CLIENT_CERT_FILE


class InteropRunner(rpcnode._RpcClientBase, *_CLASSES):
    """The master's RPC client with a static resolver (every node name -> one address)."""

    def __init__(self, address: str) -> None:
        encoders = rpcnode._ENCODERS.copy()
        # what RpcRunner/ConfigRunner install (getents=None -> runtime.GetEnts)
        encoders[rpc_defs.ED_FILE_DETAILS] = \
            lambda node, filename: rpcnode._PrepareFileUpload(None, node, filename)

        def resolver(hosts: list[str], _opts: Any) -> list[tuple[str, str, str]]:
            return [(h, address, h) for h in hosts]

        rpcnode._RpcClientBase.__init__(self, resolver, encoders.get)


def _is_single(proc: str) -> bool:
    for cls in _CLASSES:
        cdef = rpc_defs.CALLS[cls.__name__].get(proc)
        if cdef is not None:
            return bool(cdef[1] == rpc_defs.SINGLE)
    raise SystemExit(f"interop_client: unknown procedure {proc!r}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key == "$path":
            return os.path.normpath(os.environ["INTEROP_NODE_ROOT"] + _decode(inner))
        if key == "$master_path":
            return os.path.normpath(os.environ["GANETI_ROOTDIR"] + _decode(inner))
        if key == "$pathutils":
            return getattr(pathutils, inner)
        if key == "$vpath":
            return vcluster.MakeVirtualPath(_decode(inner))
        if key == "$bytes":
            return _decode(inner).encode()
        if key == "$time":
            return time.time()
    return {k: _decode(v) for (k, v) in value.items()}


def _use_cert(cert: str) -> None:
    if cert == "client":
        pathutils.NODED_CLIENT_CERT_FILE = _CLIENT_CERT
    elif cert == "server":
        # _ConfigRpcCurl falls back to server.pem when client.pem is missing
        pathutils.NODED_CLIENT_CERT_FILE = "/nonexistent/ganeti-interop/client.pem"
    else:
        pathutils.NODED_CLIENT_CERT_FILE = cert


def _call(runner: InteropRunner, node: str, spec: dict[str, Any]) -> dict[str, Any]:
    proc = spec["proc"]
    _use_cert(spec.get("cert", "client"))
    args = _decode(spec.get("args", []))
    method = getattr(runner, "call_" + proc)
    if _is_single(proc):
        res = method(node, *args)
    else:
        res = method([node], *args)[node]
    return {"proc": proc, "fail_msg": res.fail_msg, "payload": res.payload,
            "data": res.data, "offline": res.offline}


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: interop_client.py HOST PORT < calls.json")
    host, port = sys.argv[1], int(sys.argv[2])
    request = json.load(sys.stdin)
    logging.basicConfig(level=logging.CRITICAL)
    netutils.GetDaemonPort = lambda _name: port
    rpcnode.Init()
    try:
        runner = InteropRunner(host)
        results = [_call(runner, request.get("node", "node1"), spec) for spec in request["calls"]]
    finally:
        rpcnode.Shutdown()
    json.dump(results, sys.stdout, default=repr)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
