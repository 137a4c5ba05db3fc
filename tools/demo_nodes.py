"""A small cluster of node daemons on this machine, start to finish (`make demo`).

Two nodes, node1 on 127.0.0.2 and node2 on 127.0.0.3, each in its own
GANETI_ROOTDIR below .state/demo, sharing one cluster certificate. node1 plays
the master: it talks to both daemons over the legacy door (as a real Ganeti
master does) and over gRPC (as a typed client does). Everything it does is
printed; at the end both daemons are stopped and the state removed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from generated.ganeti.node.v1 import node_pb2, node_pb2_grpc  # noqa: E402
from noded import certs  # noqa: E402
from noded.paths import Paths  # noqa: E402
from noded.tls import split_pem  # noqa: E402

NODED = str(Path(sys.executable).parent / "ganeti-noded")


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def show(label: str, value: Any) -> None:
    text = json.dumps(value) if not isinstance(value, str) else value
    if len(text) > 160:
        text = text[:157] + "..."
    print(f"    {label}: {text}", flush=True)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    address: str
    paths: Paths
    port: int = 0
    grpc_port: int = 0
    pid: int = 0

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, GANETI_ROOTDIR=self.paths.root, GANETI_HOSTNAME=self.name)

    def start(self) -> None:
        self.port, self.grpc_port = free_port(self.address), free_port(self.address)
        res = subprocess.run([NODED, "-b", self.address, "-p", str(self.port), "--grpc-port",
                              str(self.grpc_port)], env=self.env, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"ganeti-noded for {self.name} did not start: {res.stderr.strip()}")
        self.pid = int(Path(self.paths.noded_pid_file).read_text())

    def stop(self) -> None:
        if not self.pid:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(200):
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def call(self, procedure: str, *args: Any, cert: str) -> Any:
        """A legacy call, exactly as a Ganeti master makes it (new TLS connection)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.paths.server_cert)
        ctx.load_cert_chain(cert)
        conn = http.client.HTTPSConnection(self.address, self.port, context=ctx, timeout=30)
        try:
            conn.request("POST", "/" + procedure, body=json.dumps(list(args)),
                         headers={"Content-type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
        except (ssl.SSLError, ConnectionError) as err:
            return f"connection refused by TLS: {err}"
        finally:
            conn.close()
        return json.loads(body) if resp.status == 200 else f"HTTP {resp.status}: {body.decode().strip()}"

    def grpc_stub(self, cert: str) -> node_pb2_grpc.NodeServiceStub:
        key, chain = split_pem(Path(cert).read_bytes())
        _, ca = split_pem(Path(self.paths.server_cert).read_bytes())
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
        channel = grpc.secure_channel(f"{self.address}:{self.grpc_port}", creds,
                                      options=[("grpc.ssl_target_name_override", certs.CLUSTER_CERT_CN)])
        return node_pb2_grpc.NodeServiceStub(channel)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--state", default=str(ROOT / ".state" / "demo"), help="state directory")
    parser.add_argument("--keep", action="store_true", help="leave the daemons running")
    args = parser.parse_args()
    state = Path(args.state)
    shutil.rmtree(state, ignore_errors=True)
    nodes = [Node("node1", "127.0.0.2", Paths(str(state / "node1"), "node1")),
             Node("node2", "127.0.0.3", Paths(str(state / "node2"), "node2"))]
    try:
        say("cluster certificate (server.pem, shared) and one client certificate per node")
        cluster_pem = str(state / "server.pem")
        state.mkdir(parents=True)
        show("cluster certificate SHA1", certs.write_server_pem(cluster_pem))
        for n in nodes:
            n.paths.ensure_dirs()
            os.makedirs(n.paths.file_storage_dir, exist_ok=True)
            shutil.copy(cluster_pem, n.paths.server_cert)
            show(f"{n.name} client.pem SHA1",
                 certs.write_client_pem(n.paths.client_cert, n.paths.server_cert, n.name))
        master, other = nodes
        master_cert, other_cert = master.paths.client_cert, other.paths.client_cert

        say("starting ganeti-noded on 127.0.0.2 and 127.0.0.3 (each with its own GANETI_ROOTDIR)")
        for n in nodes:
            n.start()
            show(n.name, f"pid {n.pid}, legacy port {n.port}, gRPC port {n.grpc_port}")

        say("bootstrap: no candidate list yet, so only the cluster certificate is accepted")
        for n in nodes:
            show(f"{n.name} version (server.pem)", n.call("version", cert=cluster_pem))
            show(f"{n.name} version (node1's client.pem)", n.call("version", cert=master_cert))

        say("the master distributes ssconf (write_ssconf_files): node1 is the only master candidate")
        fp = certs.fingerprint_file(master_cert)
        ssconf = {"cluster_name": "cluster.example.com", "master_node": "node1",
                  "master_candidates": "node1", "master_candidates_certs": [f"uuid-node1={fp}"],
                  "node_list": ["node1", "node2"], "node_primary_ips": ["node1 127.0.0.2", "node2 127.0.0.3"]}
        for n in nodes:
            show(f"{n.name} write_ssconf_files", n.call("write_ssconf_files", ssconf, cert=cluster_pem))

        say("from now on only node1's client certificate is accepted, on both doors")
        for n in nodes:
            show(f"{n.name} master_node_name (node1's client.pem)",
                 n.call("master_node_name", cert=master_cert))
            show(f"{n.name} version (server.pem)", n.call("version", cert=cluster_pem))
            show(f"{n.name} version (node2's client.pem: not a candidate)",
                 n.call("version", cert=other_cert))

        say("configuration and job replication, as a master does it")
        config = json.dumps({"cluster": {"cluster_name": "cluster.example.com"}, "serial_no": 1})
        vpath = "/###-VIRTUAL-PATH-###,/var/lib/ganeti/config.data"
        show("node2 upload_file_single config.data",
             other.call("upload_file_single", vpath, [0, config], 0o640, "root", "root", None, None,
                        cert=master_cert))
        show("node2 config.data on disk", Path(other.paths.config_file).read_text())
        job = json.dumps({"id": 1, "ops": [], "received_timestamp": [int(time.time()), 0]})
        show("node2 jobqueue_update job-1",
             other.call("jobqueue_update", "/###-VIRTUAL-PATH-###,/var/lib/ganeti/queue/job-1", [0, job],
                        cert=master_cert))
        show("node2 upload to a path outside the allowed list",
             other.call("upload_file_single", "/###-VIRTUAL-PATH-###,/etc/passwd", [0, "x"], 0o644,
                        "root", "root", None, None, cert=master_cert))

        say("node_info over gRPC (typed) on both nodes")
        for n in nodes:
            stub = n.grpc_stub(master_cert)
            req = node_pb2.NodeInfoRequest()
            unit = req.storage_units.add()
            unit.storage_type, unit.key = "file", n.paths.file_storage_dir
            unit.params.SetInParent()  # Ganeti sends [] for file storage
            spec = req.hv_specs.add()
            spec.hv_name = "fake"
            info = stub.NodeInfo(req, timeout=30)
            hv = info.hv_info[0] if info.hv_info else None
            free = info.storage_info[0].storage_free.number_value
            show(n.name, f"boot id {info.boot_id}, storage free {free:.0f} MiB"
                 + (f", memory {hv.memory_free}/{hv.memory_total} MiB, {hv.cpu_total} CPUs" if hv else ""))

        say("test_delay 1 s on both nodes at once")
        started = time.monotonic()
        import concurrent.futures as cf
        with cf.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda n: n.call("test_delay", 1, cert=master_cert), nodes))
        show("answers", f"{json.dumps(results)} in {time.monotonic() - started:.2f} s")
    except Exception as err:  # report, then tear down
        print(f"demo failed: {err}", file=sys.stderr)
        for n in nodes:
            n.stop()
        return 1
    if args.keep:
        say(f"daemons left running: {', '.join(f'{n.name} pid {n.pid}' for n in nodes)}")
        return 0
    say("stopping both daemons (SIGTERM: calls in flight finish, pid files removed)")
    for n in nodes:
        n.stop()
        show(n.name, "stopped, pid file " + ("left!" if Path(n.paths.noded_pid_file).exists() else "removed"))
    shutil.rmtree(state, ignore_errors=True)
    say("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
