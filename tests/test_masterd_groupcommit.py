"""Group commit of job state changes (masterd.groupcommit) on a real queue directory."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from masterd.engine import JobEngine
from masterd.groupcommit import GroupCommitter
from masterd.jqueue import durable
from masterd.jqueue.store import JobQueueStore
from masterd.query.jobs import job_status
from noded.paths import Paths


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobQueueStore]:
    with JobQueueStore(Paths(root=str(tmp_path / "node1"), hostname="node1")) as s:
        yield s


class Gate:
    """Wraps store.write_jobs_data: records each batch; the first one waits until `open()`."""

    def __init__(self, store: JobQueueStore) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self._open = threading.Event()
        self._real = store.write_jobs_data

    def __call__(self, items: Sequence[tuple[int, bytes]], replicate: bool = True) -> list[OSError | None]:
        self.batches.append([job_id for job_id, _ in items])
        self.entered.set()
        self._open.wait(10)
        return self._real(items, replicate)

    def open(self) -> None:
        self._open.set()


def test_writes_asked_during_a_batch_go_to_disk_together_in_the_next(
        store: JobQueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate(store)
    monkeypatch.setattr(store, "write_jobs_data", gate)

    async def body() -> None:
        committer = GroupCommitter(store, ThreadPoolExecutor(2))
        first = asyncio.ensure_future(committer.write(1, b"{}"))
        while not gate.entered.is_set():
            await asyncio.sleep(0.001)
        later = [asyncio.ensure_future(committer.write(i, b"{}")) for i in (2, 3, 4)]
        await asyncio.sleep(0.05)
        assert not first.done()  # not answered before its batch is durable
        gate.open()
        await asyncio.gather(first, *later)
        assert (committer.batches, committer.writes) == (2, 4)

    asyncio.run(body())
    assert gate.batches == [[1], [2, 3, 4]]


def test_a_write_returns_once_its_file_holds_the_data(store: JobQueueStore) -> None:
    async def body() -> None:
        committer = GroupCommitter(store)
        await asyncio.gather(committer.write(7, b'{"id": 7}'), committer.write(8, b'{"id": 8}'))

    asyncio.run(body())
    assert Path(store.job_path(7)).read_bytes() == b'{"id": 7}'
    assert Path(store.job_path(8)).read_bytes() == b'{"id": 8}'


def test_a_failed_file_fails_only_its_own_write(store: JobQueueStore,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = durable._write_temp

    def full_disk_for_job_2(directory: str, base: str, data: bytes, mode: int) -> str:
        if base == "job-2":
            raise OSError(28, "No space left on device")
        return real_write(directory, base, data, mode)

    monkeypatch.setattr(durable, "_write_temp", full_disk_for_job_2)

    async def body() -> list[BaseException | None]:
        committer = GroupCommitter(store)
        return await asyncio.gather(committer.write(1, b"{}"), committer.write(2, b"{}"),
                                    return_exceptions=True)

    ok, failed = asyncio.run(body())
    assert ok is None
    assert isinstance(failed, OSError) and failed.errno == 28
    assert store.live_job_ids() == [1]


def test_the_latest_content_of_a_job_asked_twice_in_one_batch_is_written(
        store: JobQueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate(store)
    monkeypatch.setattr(store, "write_jobs_data", gate)

    async def body() -> None:
        committer = GroupCommitter(store, ThreadPoolExecutor(2))
        first = asyncio.ensure_future(committer.write(1, b"{}"))
        while not gate.entered.is_set():
            await asyncio.sleep(0.001)
        older = asyncio.ensure_future(committer.write(5, b'"old"'))
        newer = asyncio.ensure_future(committer.write(5, b'"new"'))
        await asyncio.sleep(0.01)
        gate.open()
        await asyncio.gather(first, older, newer)

    asyncio.run(body())
    assert gate.batches == [[1], [5]]
    assert Path(store.job_path(5)).read_bytes() == b'"new"'


def test_one_jobs_end_and_the_next_ones_start_share_a_group_commit(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    Path(paths.data_dir).mkdir(parents=True)
    Path(paths.ssconf_file("master_node")).write_text("node1\n")
    batches: list[list[int]] = []

    async def body(store: JobQueueStore) -> None:
        real = store.write_jobs_data

        def recording(items: Sequence[tuple[int, bytes]], replicate: bool = True) -> list[OSError | None]:
            batches.append([job_id for job_id, _ in items])
            return real(items, replicate)

        monkeypatch.setattr(store, "write_jobs_data", recording)
        engine = JobEngine(store, paths, max_running=1)
        await engine.start()
        delay = {"OP_ID": "OP_TEST_DELAY", "duration": 0.01, "on_master": True}
        await engine.submit_many([[delay], [delay]])
        await engine.wait_idle()
        await engine.shutdown(1)
        assert [job_status(engine.published(i) or {}) for i in (1, 2)] == ["success", "success"]

    with JobQueueStore(paths) as store:
        asyncio.run(body(store))
    # job 1 starts; job 1 ends + job 2 starts (one max_running slot, one directory fsync); job 2 ends
    assert batches == [[1], [1, 2], [2]]
