"""Job queue replication: our ganeti-masterd keeps the queues of its master candidates equal to its own.

The cluster: master node1 (our ganeti-masterd, LUXI driven by our client)
and candidates node2 (127.0.0.2) and node3 (127.0.0.3), each our
ganeti-noded on its own root with the shared cluster certificate, on free
ports that the master learns from $DATA_DIR/node-grpc-ports. The
candidates accept the master's client certificate (their
ssconf_master_candidates_certs). A few tests check the ordering rules of
masterd.replication with an in-process replicator whose sending is held.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import NodeRoot, RunningNoded, free_port, make_root, start_noded

from masterd.replication import QueueReplicator, encode_content
from masterd.rpc import NodeRpcClient
from noded.backends.fileio import decode_payload
from noded.paths import Paths
from tools.gnt.luxi_client import LuxiClient

MASTERD = str(Path(sys.executable).parent / "ganeti-masterd")
FINAL = ("success", "error", "canceled")


@dataclass
class Cluster:
    master: NodeRoot
    candidates: dict[str, RunningNoded]

    @property
    def paths(self) -> Paths:
        return self.master.paths

    @property
    def log_file(self) -> Path:
        return Path(self.paths.log_dir) / "master-daemon.log"

    def client(self) -> LuxiClient:
        return LuxiClient(paths=self.paths, connect_timeout=5)

    def run_job(self, duration: float = 0.01) -> int:
        with self.client() as client:
            job_id = int(client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": duration}]))
        until(lambda: self.status(job_id) in FINAL, f"job {job_id} to finish")
        return job_id

    def status(self, job_id: int) -> str | None:
        with self.client() as client:
            answer = client.query_jobs([job_id], ["status"])
        return answer[0][0] if answer and answer[0] else None


def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def read(path: str | Path) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


def queue_file(paths: Paths, *parts: str) -> str:
    return os.path.join(paths.queue_dir, *parts)


def write_ssconf(paths: Paths, values: dict[str, str]) -> None:
    for key, value in values.items():
        Path(paths.ssconf_file(key)).write_text(value + "\n")


def start_cluster(base: Path, live: dict[str, str], dead: dict[str, str] | None = None) -> tuple[
        Cluster, Callable[[], None]]:
    """Master node1 with the candidates `live` ({name: address}, started) and `dead` (never started)."""
    dead = dead or {}
    master = make_root(base, "node1")
    started: dict[str, RunningNoded] = {}
    ports: dict[str, int] = {}

    def stop() -> None:
        pid_file = Path(master.paths.run_dir) / "ganeti-masterd.pid"
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            until(lambda: not pid_file.exists(), "ganeti-masterd to stop", 20)
        except (OSError, ValueError):
            pass
        for noded in started.values():
            noded.stop()

    try:
        for name, address in live.items():
            node = make_root(base, name, cluster_pem=master.server_pem)
            node.write_candidate_map(master.client_fp)
            started[name] = start_noded(node, address)
            ports[name] = started[name].grpc_port
        for name, address in dead.items():
            ports[name] = free_port(address)  # nothing listens there
        addresses = {"node1": "127.0.0.1", **live, **dead}
        write_ssconf(master.paths, {
            "master_node": "node1", "cluster_name": "cluster.example.com",
            "node_list": "\n".join(addresses), "master_candidates": "\n".join(addresses),
            "node_primary_ips": "\n".join(f"{n} {a}" for n, a in addresses.items())})
        Path(master.paths.data_dir, "node-grpc-ports").write_text(
            "# our node daemons' gRPC ports\n" + "".join(f"{n} {p}\n" for n, p in ports.items()))
        # the master's own gRPC door on a free port: several masters run on 127.0.0.1 in these tests;
        # no start-up voting: node1 runs no node daemon here and the candidates' ssconf names no master
        done = subprocess.run([MASTERD, "--grpc-port", str(free_port("127.0.0.1")), "--no-voting",
                               "--yes-do-it"], env=master.env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    except BaseException:
        stop()
        raise
    return Cluster(master, started), stop


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c, stop = start_cluster(tmp_path_factory.mktemp("replication"),
                            {"node2": "127.0.0.2", "node3": "127.0.0.3"})
    try:
        yield c
    finally:
        stop()


def same_on_candidates(c: Cluster, *parts: str) -> Callable[[], bool]:
    def check() -> bool:
        mine = read(queue_file(c.paths, *parts))
        return mine is not None and all(read(queue_file(n.paths, *parts)) == mine
                                        for n in c.candidates.values())
    return check


# -- with real node daemons -------------------------------------------------------------------------

def test_finished_job_files_on_the_candidates_equal_the_masters(cluster: Cluster) -> None:
    job_ids = [cluster.run_job() for _ in range(3)]
    for job_id in job_ids:
        until(same_on_candidates(cluster, f"job-{job_id}"), f"job-{job_id} on both candidates")
        assert json.loads(read(queue_file(cluster.paths, f"job-{job_id}")) or b"")["ops"][0]["status"] \
            == "success"


def test_serial_is_replicated(cluster: Cluster) -> None:
    cluster.run_job()
    until(same_on_candidates(cluster, "serial"), "queue/serial on both candidates")


def test_archiving_moves_the_candidates_job_files_to_the_archive(cluster: Cluster) -> None:
    job_id = cluster.run_job()
    until(same_on_candidates(cluster, f"job-{job_id}"), f"job-{job_id} on both candidates")
    with cluster.client() as client:
        assert client.archive_job(job_id) is True
    archived = ("archive", str(job_id // 10000), f"job-{job_id}")
    until(same_on_candidates(cluster, *archived), "the archived job on both candidates")
    for node in cluster.candidates.values():
        assert not os.path.exists(queue_file(node.paths, f"job-{job_id}"))


def test_drain_flag_is_set_and_cleared_on_the_candidates(cluster: Cluster) -> None:
    drains = [queue_file(n.paths, "drain") for n in cluster.candidates.values()]
    with cluster.client() as client:
        client.set_queue_drain_flag(True)
        until(lambda: all(os.path.exists(d) for d in drains), "the drain flag on both candidates")
        client.set_queue_drain_flag(False)
        until(lambda: not any(os.path.exists(d) for d in drains), "the drain flag cleared on both")


def test_master_does_not_replicate_to_itself(cluster: Cluster) -> None:
    cluster.run_job()
    log = cluster.log_file.read_text()
    assert "job queue replicated to node2, node3" in log
    assert "replication to node node1" not in log


def test_a_dead_candidate_does_not_fail_jobs_and_is_named_in_the_log(tmp_path: Path) -> None:
    c, stop = start_cluster(tmp_path, {"node2": "127.0.0.2"}, dead={"node3": "127.0.0.3"})
    try:
        start = time.monotonic()
        job_ids = [c.run_job() for _ in range(3)]
        assert time.monotonic() - start < 5
        assert [c.status(j) for j in job_ids] == ["success"] * 3
        for job_id in job_ids:
            until(same_on_candidates(c, f"job-{job_id}"), f"job-{job_id} on the live candidate")
        until(lambda: "job queue replication to node node3 (127.0.0.3:" in c.log_file.read_text(),
              "the failure naming node3 in the master's log")
        errors = [line for line in c.log_file.read_text().splitlines() if " ERROR " in line]
        assert any("node3" in line for line in errors) and not any("node2" in line for line in errors)
    finally:
        stop()


# -- ordering rules (in process, sending held) ----------------------------------------------------------

class HeldReplicator(QueueReplicator):
    """Records what would be sent; each send waits until the test releases it."""

    def __init__(self, paths: Paths) -> None:
        super().__init__(paths, NodeRpcClient(paths))
        self.sent: list[tuple[str, Any]] = []
        self.gate = asyncio.Event()

    async def send(self, node: str, op: Any) -> str | None:
        await self.gate.wait()
        self.sent.append((node, op))
        return None


def held_paths(tmp_path: Path) -> Paths:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    os.makedirs(paths.data_dir)
    write_ssconf(paths, {"master_candidates": "node1\nnode2"})
    return paths


def sent_updates(rep: HeldReplicator) -> list[tuple[str, bytes]]:
    return [(op.name, decode_payload(list(op.content))) for _, op in rep.sent if hasattr(op, "content")]


def test_pending_update_of_a_file_is_replaced_by_the_newer_one(tmp_path: Path) -> None:
    async def body() -> list[tuple[str, bytes]]:
        rep = HeldReplicator(held_paths(tmp_path))
        for version in (b"1", b"2", b"3"):
            rep.replicate("/q/job-1", version)
            await asyncio.sleep(0)
        rep.gate.set()
        assert await rep.flush(5)
        assert rep.stats("node2").coalesced == 1
        return sent_updates(rep)
    # version 1 was already being sent; 2 was replaced by 3 before its turn
    assert asyncio.run(body()) == [("/q/job-1", b"1"), ("/q/job-1", b"3")]


def test_update_after_a_rename_is_not_moved_before_it(tmp_path: Path) -> None:
    async def body() -> list[str]:
        rep = HeldReplicator(held_paths(tmp_path))
        rep.replicate("/q/serial", b"0")
        await asyncio.sleep(0)
        rep.replicate("/q/job-1", b"a")
        rep.rename_replicas([("/q/job-1", "/q/archive/0/job-1")])
        rep.replicate("/q/job-1", b"b")
        rep.gate.set()
        assert await rep.flush(5)
        return [type(op).__name__ + ":" + getattr(op, "name", "") for _, op in rep.sent]
    assert asyncio.run(body()) == ["_Update:/q/serial", "_Update:/q/job-1", "_Rename:", "_Update:/q/job-1"]


def test_only_other_candidates_receive_changes(tmp_path: Path) -> None:
    async def body() -> set[str]:
        rep = HeldReplicator(held_paths(tmp_path))
        rep.set_drain_flag(True)
        rep.gate.set()
        assert await rep.flush(5)
        return {node for node, _ in rep.sent}
    assert asyncio.run(body()) == {"node2"}


def test_small_content_is_sent_as_text_and_large_content_compressed() -> None:
    small, large = b'{"id": 1}', json.dumps({"log": ["x" * 40] * 40}).encode()
    assert encode_content(small) == (0, small.decode())
    encoding, data = encode_content(large)
    assert encoding == 1 and len(data) < len(large)
    assert decode_payload([encoding, data]) == large


class FlakyReplicator(QueueReplicator):
    """Sending fails while `down` is true (as a dead node would), succeeds otherwise."""

    def __init__(self, paths: Paths) -> None:
        super().__init__(paths, NodeRpcClient(paths, addresses={"node2": "127.0.0.2"}))
        self.down = True

    async def send(self, node: str, op: Any) -> str | None:
        return "UNAVAILABLE: connection refused" if self.down else None


def test_failing_candidate_is_logged_once_then_its_recovery(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        rep = FlakyReplicator(held_paths(tmp_path))
        for n in range(3):
            rep.replicate(f"/q/job-{n}", b"x")
        assert await rep.flush(5)
        rep.down = False
        rep.replicate("/q/job-9", b"y")
        assert await rep.flush(5)
        assert (rep.stats("node2").failed, rep.stats("node2").sent) == (3, 1)
    with caplog.at_level("INFO", logger="masterd.replication"):
        asyncio.run(body())
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "node node2" in errors[0] and "job-0" in errors[0]
    assert any("node2 works again" in r.getMessage() and "missed 3" in r.getMessage() for r in caplog.records)
