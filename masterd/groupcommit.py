"""Group commit of job state changes: the writes asked for meanwhile go to disk together.

The engine hands every durable write of a job's state here and awaits it.
One batch is written at a time, in a worker thread: the writes asked for
while a batch is on its way to disk wait and form the next batch, written
with one call of `JobQueueStore.write_jobs_data` (each file fsynced, all
renamed, one fsync of the queue directory). So under load many jobs' state
changes share a directory fsync and a thread hop, and a lone write still
starts at once. Nothing is acknowledged before it is durable: a write's
future completes only after the fsync of its batch's directory. When the
same job is asked for twice in one batch (the engine does not do that, it
orders one job's writes itself), only its latest content is written and
both callers are answered after it.

Interface::

    committer = GroupCommitter(store, executor)
    await committer.write(job_id, data)    # durable when it returns; OSError if it could not be
    committer.batches, committer.writes    # how many batches and writes so far (introspection)
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from masterd.jqueue.store import JobQueueStore


class GroupCommitter:
    def __init__(self, store: JobQueueStore, executor: Executor | None = None) -> None:
        self._store = store
        self._executor = executor
        self._pending: dict[int, tuple[bytes, list[asyncio.Future[None]]]] = {}
        self._flushing = False
        self._task: asyncio.Task[None] | None = None  # the running flush (a reference keeps it alive)
        self.batches = 0
        self.writes = 0

    async def write(self, job_id: int, data: bytes) -> None:
        """Write the job's serialized state durably (with whatever else is waiting)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._pending.get(job_id)
        self._pending[job_id] = (data, (waiting[1] if waiting else []) + [future])
        if not self._flushing:
            self._flushing = True
            self._task = asyncio.get_running_loop().create_task(self._flush(), name="group-commit")
        await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                items = [(job_id, data) for job_id, (data, _) in batch.items()]
                try:
                    errors = await loop.run_in_executor(self._executor, self._store.write_jobs_data, items)
                except Exception as err:  # an unexpected failure fails the whole batch
                    errors = [OSError(f"could not write the job files: {err}")] * len(items)
                except BaseException:  # cancelled (the loop is closing): nobody is answered
                    self._cancel_all(batch)
                    self._cancel_all(self._pending)
                    self._pending = {}
                    raise
                self.batches += 1
                self.writes += len(items)
                for (_, futures), error in zip(batch.values(), errors, strict=True):
                    for future in futures:
                        if future.done():
                            continue
                        if error is None:
                            future.set_result(None)
                        else:
                            future.set_exception(error)
        finally:
            self._flushing = False

    @staticmethod
    def _cancel_all(batch: dict[int, tuple[bytes, list[asyncio.Future[None]]]]) -> None:
        for _, futures in batch.values():
            for future in futures:
                future.cancel()
