"""A small cluster on this machine, start to finish (`make demo`).

Two nodes, node1 on 127.0.0.2 and node2 on 127.0.0.3, each in its own
GANETI_ROOTDIR below .state/demo, sharing one cluster certificate. node1 plays
the master:

1. it talks to both node daemons over the legacy door (as a real Ganeti
   master does) and over gRPC (as a typed client does): the TLS rule,
   ssconf distribution, replication, node_info, test_delay
   (this file);
2. it drives a kvm instance's life cycle through them: created with our
   tools/os/tiny OS on a shared file disk, booted by a real qemu (its
   greeting read from the serial console), live-migrated to node2, removed
   (tools/demo_instance.py);
3. it runs our ganeti-masterd and our gnt-cluster, gnt-debug and gnt-job
   against it (tools/demo_master.py).

Everything it does is printed (`==>` lines). At the end, and on any
failure, the qemu processes still alive are killed by pid, the daemons
stopped and the state removed; a failure exits 1 with the reason.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generated.ganeti.node.v1 import node_pb2  # noqa: E402
from noded import certs  # noqa: E402
from noded.paths import Paths  # noqa: E402
from tools import demo_instance, demo_master  # noqa: E402
from tools.demo_common import DemoFailed, Node, say, show  # noqa: E402


def node_daemons(state: Path, nodes: list[Node]) -> str:
    """The node daemons started and shown at work; the master's client certificate."""
    cluster_pem = certificates(state, nodes)
    say("starting ganeti-noded on 127.0.0.2 and 127.0.0.3 (each with its own GANETI_ROOTDIR)")
    for n in nodes:
        n.start()
        show(n.name, f"pid {n.pid}, legacy port {n.port}, gRPC port {n.grpc_port}")
    master_cert = tls_rule(nodes, cluster_pem)
    replication(nodes[1], master_cert)
    typed_node_info(nodes, master_cert)
    concurrent_delay(nodes, master_cert)
    return master_cert


def certificates(state: Path, nodes: list[Node]) -> str:
    """The shared cluster certificate and each node's client certificate, written; the cluster's path."""
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
    return cluster_pem


def tls_rule(nodes: list[Node], cluster_pem: str) -> str:
    """Ganeti's client-certificate rule before and after ssconf names the candidates; node1's certificate."""
    master, other = nodes
    master_cert, other_cert = master.paths.client_cert, other.paths.client_cert
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
    return master_cert


def replication(other: Node, master_cert: str) -> None:
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


def typed_node_info(nodes: list[Node], master_cert: str) -> None:
    say("node_info over gRPC (typed) on both nodes")
    for n in nodes:
        stub = n.grpc_stub(master_cert)
        req = node_pb2.NodeInfoRequest()
        unit = req.storage_units.units.add()
        unit.storage_type, unit.key = "file", n.paths.file_storage_dir
        unit.params.SetInParent()  # Ganeti sends [] for file storage
        spec = req.hv_specs.specs.add()
        spec.hv_name = "fake"
        info = stub.NodeInfo(req, timeout=30)
        hv = info.hv_info.items[0] if info.hv_info.items else None
        free = info.storage_info.items[0].storage_free.number_value
        show(n.name, f"boot id {info.boot_id}, storage free {free:.0f} MiB"
             + (f", memory {hv.memory_free}/{hv.memory_total} MiB, {hv.cpu_total} CPUs" if hv else ""))


def concurrent_delay(nodes: list[Node], master_cert: str) -> None:
    say("test_delay 1 s on both nodes at once")
    started = time.monotonic()
    with cf.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda n: n.call("test_delay", 1, cert=master_cert), nodes))
    show("answers", f"{json.dumps(results)} in {time.monotonic() - started:.2f} s")


def stop_nodes(nodes: list[Node]) -> None:
    for n in (n for n in nodes if n.pid):
        n.stop()
        show(n.name, "stopped, pid file " + ("left!" if Path(n.paths.noded_pid_file).exists() else "removed"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--state", default=str(ROOT / ".state" / "demo"), help="state directory")
    parser.add_argument("--keep", action="store_true", help="leave the node daemons running")
    args = parser.parse_args()
    state = Path(args.state)
    shutil.rmtree(state, ignore_errors=True)
    nodes = [Node("node1", "127.0.0.2", Paths(str(state / "node1"), "node1")),
             Node("node2", "127.0.0.3", Paths(str(state / "node2"), "node2"))]
    started = time.monotonic()
    failure: str | None = None
    try:
        demo_master.check_socket_paths(nodes[0].paths)
        with demo_instance.qemus_killed(nodes) as qemu_pids, demo_master.master_stopped(nodes[0]) as master:
            master_cert = node_daemons(state, nodes)
            demo_instance.run(nodes, master_cert, state / "shared-storage", qemu_pids)
            demo_master.run(master, master_cert, nodes)
    except (DemoFailed, OSError, ValueError, KeyError, TimeoutError) as err:
        failure = str(err) or type(err).__name__
    except Exception as err:  # anything else is a bug of the demo: still tear down, say what it was
        failure = f"{type(err).__name__}: {err}"
    finally:
        if failure is not None or not args.keep:
            if any(n.pid for n in nodes):
                say("stopping both node daemons (SIGTERM: calls in flight finish, pid files removed)")
                stop_nodes(nodes)
            if state.exists():
                shutil.rmtree(state, ignore_errors=True)
                show("state", f"{state} removed")
    if failure is not None:
        print(f"demo failed: {failure}", file=sys.stderr, flush=True)
        return 1
    if args.keep:
        say(f"node daemons left running: {', '.join(f'{n.name} pid {n.pid}' for n in nodes)}")
        return 0
    say(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
