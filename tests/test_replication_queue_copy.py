"""A new master candidate gets the whole job queue (masterd.replication add_node / upload_queue), in process.

The replicator's sending is held and recorded (as in
tests/test_masterd_replication.py), so the order of what a new candidate
receives can be checked, also with writes arriving during the copy. The
end-to-end behaviour (Debian's gnt-node add / modify against our master)
is in tests/test_node_queue_copy.py.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from masterd.replication import QueueReplicator, queue_files, upload_queue
from masterd.rpc import NodeRpcClient
from noded.backends.fileio import decode_payload
from noded.paths import Paths


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


def master_paths(tmp_path: Path, candidates: str = "node1\nnode2") -> Paths:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    os.makedirs(os.path.join(paths.queue_dir, "archive", "0"))
    Path(paths.ssconf_file("master_candidates")).write_text(candidates + "\n")
    queue = Path(paths.queue_dir)
    for name, text in (("serial", "10\n"), ("version", "1\n"), ("lock", ""), ("job-10", '{"id": 10}'),
                       ("job-2", '{"id": 2}'), ("job-1", '{"id": 1}'), ("archive/0/job-0", "{}")):
        (queue / name).write_text(text)
    return paths


def described(rep: HeldReplicator, paths: Paths) -> list[str]:
    out = []
    for _, op in rep.sent:
        kind = type(op).__name__
        if kind == "_Update":
            name = paths.localize(op.name).removeprefix(paths.queue_dir + "/")
            out.append(f"update {name} {decode_payload(list(op.content)).decode()}")
        else:
            out.append(kind)
    return out


def test_the_queue_files_are_the_serial_then_the_live_jobs_by_id(tmp_path: Path) -> None:
    paths = master_paths(tmp_path)
    assert [os.path.basename(f) for f in queue_files(paths)] == ["serial", "job-1", "job-2", "job-10"]


def test_add_node_purges_then_uploads_every_live_job_and_the_serial(tmp_path: Path) -> None:
    paths = master_paths(tmp_path)
    Path(paths.queue_dir, "drain").write_text("")

    async def body() -> tuple[list[str], Any]:
        rep = HeldReplicator(paths)
        rep.gate.set()
        report = await rep.add_node("node2", timeout=5)
        return described(rep, paths), report
    sent, report = asyncio.run(body())
    assert sent == ["_Purge", "update serial 10\n", 'update job-1 {"id": 1}', 'update job-2 {"id": 2}',
                    'update job-10 {"id": 10}', "_Drain"]
    assert (report.node, report.files, report.failed, report.complete) == ("node2", 4, 0, True)


def test_a_write_during_the_copy_is_never_overtaken_by_an_older_content(tmp_path: Path) -> None:
    paths = master_paths(tmp_path)

    async def body() -> list[str]:
        rep = HeldReplicator(paths)
        copy = asyncio.create_task(rep.add_node("node2", timeout=5))
        await asyncio.sleep(0.05)  # everything is queued, nothing sent (the gate is closed)
        Path(paths.queue_dir, "job-2").write_text('{"id": 2, "v": 2}')  # the store writes, then replicates
        await asyncio.to_thread(rep.replicate, paths.virtualize(os.path.join(paths.queue_dir, "job-2")),
                                b'{"id": 2, "v": 2}')
        await asyncio.sleep(0.05)
        rep.gate.set()
        await copy
        assert await rep.flush(5)
        return described(rep, paths)
    sent = asyncio.run(body())
    job2 = [line for line in sent if line.startswith("update job-2 ")]
    assert job2 == ['update job-2 {"id": 2, "v": 2}']  # the queued older content was replaced
    assert sent[0] == "_Purge"


def test_upload_queue_goes_through_the_running_replicator(tmp_path: Path) -> None:
    paths = master_paths(tmp_path)

    async def body() -> tuple[list[str], int]:
        rep = HeldReplicator(paths)
        rep.gate.set()
        report = await upload_queue(paths, rep.rpc, "node2", timeout=5)
        return described(rep, paths), report.files
    sent, files = asyncio.run(body())
    assert files == 4 and sent[0] == "_Purge" and len(sent) == 5


def test_a_copy_that_cannot_finish_in_time_says_so(tmp_path: Path) -> None:
    paths = master_paths(tmp_path)

    async def body() -> bool:
        rep = HeldReplicator(paths)  # the gate stays closed: nothing is ever sent
        report = await rep.add_node("node2", timeout=0.2)
        rep.gate.set()
        await rep.close(5)
        return report.complete
    assert asyncio.run(body()) is False
