"""The job engine: submission, scheduling, execution under locks, cancel, archive, notification.

Jobs run in this process as asyncio tasks, several at once (``max_running``,
25 by default); the opcodes of a job run one after the other, each under its
locks (masterd.locking; the Big Ganeti Lock shared unless the opcode wants it
exclusive, then the opcode's own). Opcode implementations: masterd.ops.

Durability: every state change of a job is written through the store
(temporary file, fsync, rename, fsync of the directory) before anyone can see
it: submissions are answered after their files are on disk, queries and
WaitForJobChange read the *published* copy of each job (the dict of its last
durable write), and a change wakes the waiters only after its write. The
writes go through a group commit (masterd.groupcommit: the state changes of
many jobs asked for while the previous batch was being written share one
directory fsync and one hop to a worker thread), so the loop keeps serving
meanwhile; the writes of one job are ordered by a per-job lock and always
write its latest state.

States (masterd.jqueue.model): queued -> (waiting) -> running -> success /
error / canceled. A job is `waiting` while it waits for a dependency or a lock;
a job whose locks are free at once goes from queued to running in one write.
The first failing opcode fails the job (later opcodes are not run).

Scheduling: the queued jobs are started by priority (lower number first),
then id; a job is not started while a job it depends on is still unfinished
in the queue (luxid's rule). Dependencies are then checked per opcode with
`model.check_dependency` (a job found neither live nor archived is an error).
An opcode's locks are released as soon as it has run, before its result is
written (as in Ganeti); a job that has run its last opcode gives its
``max_running`` slot to the next queued job while its end is being written,
so one job's end and the next one's start share a group commit (`wait_idle`
still waits for those writes).

Filter rules (gnt-filter; masterd.filters, stored in $DATA_DIR/job-filters.json until
config.data exists): whenever the scheduler runs (a submission, a job's end, a rule
added, replaced or deleted), every queued job whose applying rule is REJECT is
canceled as CancelJob cancels a queued job; a job whose applying rule is PAUSE stays
queued (it starts once the rule is deleted or changed); ["RATE_LIMIT", n] lets it
start only while fewer than n running jobs have that rule applying; ACCEPT or no
rule: it runs as usual. Jobs already started are not affected (as in luxid). The
watermark of a rule is the last job id handed out when it was added or replaced.

Cancel (job-queue.md §8, adapted to in-process jobs):
  * queued, not started: canceled at once -> ``[true, "Dequeued job N"]``;
  * waiting (for a dependency or locks): the wait is withdrawn, the job goes
    canceling then canceled -> ``[true, "Job successfully cancelled"]``;
  * running: a running opcode is not interrupted, as in Ganeti ->
    ``[false, "Job no longer waiting, can't cancel (informed it anyway)"]``;
  * running with kill=true: Ganeti SIGKILLs the job's process; here the
    opcode's coroutine is cancelled (a delay stops at once; an RPC in flight
    is abandoned, the node may still finish it), the opcode and the rest of
    the job end in error ``OpExecError("Job N killed by request")`` ->
    ``[true, "Job N killed: its running opcode was interrupted"]``;
  * finished -> ``[false, "Job N has already finished, status S"]``;
    unknown or archived -> ``[false, "Job N not found in queue"]``.

Shutdown (`shutdown(grace)`): nothing new is started; running jobs have
`grace` seconds to finish; the ones still running (or waiting) after that
are stopped without any further write, so their files still say
running/waiting and the restart rule (`store.recover_after_restart`: error,
"the master daemon has been stopped during the job execution") applies at
the next start. Queued jobs stay queued and run after the restart.

Interface::

    engine = JobEngine(store, paths, node_rpc=None, max_running=25, filters=None, config=None)
                                                  # filters: a FilterStore (default: $DATA_DIR's)
                                                  # config: the ConfigManager given to every opcode
    await engine.start()                          # restart rule, then queued jobs run
    await engine.submit(ops, ignore_drain=False) -> job id   (GenericError "Queue drained",
                                                              RequestParseError for bad opcodes)
    await engine.submit_many(jobs) -> [[true, id] | [false, message], ...]
    await engine.wait_for_change(id, fields, prev_info, prev_serial, timeout) -> [info, log entries]
    await engine.cancel(id, kill=False) -> (ok, message)
    await engine.change_priority(id, priority) -> (ok, message)
    await engine.archive(id) -> bool
    await engine.autoarchive(age, timeout) -> (archived, left unchecked)
    await engine.set_drained(flag); engine.is_drained()
    await engine.replace_filter(uuid | None, priority, predicates, action, reason) -> uuid
        (GenericError "Unable to parse UUID", RequestParseError for a malformed rule)
    await engine.delete_filter(uuid)   (GenericError "Filter rule with UUID x does not exist")
    engine.filter_rules() -> the rules in evaluation order
    engine.job_source  (masterd.query.jobs.JobSource over the published jobs)
    engine.published(id) -> dict | None
    await engine.wait_idle()                      # tests: until no job is queued or running
    await engine.shutdown(grace)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid as uuid_module
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NoReturn

from masterd.confmgr import ConfigManager
from masterd.filters.rules import PAUSE, REJECT, FilterRule, RuleError, applying_rule, is_uuid
from masterd.filters.store import FilterStore
from masterd.groupcommit import GroupCommitter
from masterd.jqueue.model import (
    FINALIZED_STATUSES,
    STATUS_CANCELED,
    STATUS_CANCELING,
    STATUS_QUEUED,
    STATUS_RUNNING,
    STATUS_WAITING,
    DependencyResult,
    InvalidJobError,
    Job,
    JobStateError,
    check_dependency,
    op_exec_error,
)
from masterd.jqueue.store import JobNotFinalizedError, JobNotFoundError, JobQueueStore
from masterd.locking import BGL, Level, LockManager
from masterd.luxi.protocol import GanetiError, GenericError, JobLost, RequestParseError
from masterd.opcodes import OpcodeError, validate_job
from masterd.ops import REGISTRY, OpContext
from masterd.ops.base import LockRequest
from masterd.query.jobs import QueueDirJobSource, job_field_values, job_status
from masterd.rpc import NodeRpcClient
from noded.paths import Paths

log = logging.getLogger("masterd.engine")

DEFAULT_MAX_RUNNING = 25
#: luxid waits this long for a canceled job to reach a final status (LUXI_CANCEL_JOB_TIMEOUT).
CANCEL_WAIT = 44.0
WFJC_TIMEOUT_MAX = 89.0
#: Seconds between checks of a dependency that is not in memory (an unreadable job file).
DEPENDENCY_POLL = 1.0


@dataclass
class _Entry:
    """A live job in memory."""

    job: Job
    published: dict[str, Any]
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    wait_task: asyncio.Future[Any] | None = None  # a withdrawable wait (dependency or locks)
    op_task: asyncio.Future[Any] | None = None  # the running opcode
    cancel_requested: bool = False
    kill_requested: bool = False

    @property
    def published_status(self) -> str:
        return job_status(self.published)

    def notify(self) -> None:
        old, self.changed = self.changed, asyncio.Event()
        old.set()


class _Stop(Exception):
    """The job ended (canceled or failed) before its opcode could run."""


class _PublishedJobs:
    """masterd.query.jobs.JobSource over the engine's published jobs (archive from disk)."""

    def __init__(self, engine: JobEngine) -> None:
        self._engine = engine
        self._disk = QueueDirJobSource(engine.store.queue_dir)

    def live_job_ids(self) -> list[int]:
        return sorted(self._engine._entries)

    def archived_job_ids(self) -> list[int]:
        return self._disk.archived_job_ids()

    def load_job(self, job_id: int) -> tuple[dict[str, Any], bool] | None:
        entry = self._engine._entries.get(job_id)
        if entry is not None:
            return entry.published, False
        found = self._disk.load_job(job_id)
        if found is None or not found[1]:
            return None  # only archived jobs are read from disk; live ones are all in memory
        return found


class JobEngine:
    def __init__(self, store: JobQueueStore, paths: Paths, node_rpc: NodeRpcClient | None = None,
                 max_running: int = DEFAULT_MAX_RUNNING, write_threads: int = 8,
                 filters: FilterStore | None = None, config: ConfigManager | None = None) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self.store = store
        self.paths = paths
        self.node_rpc = node_rpc
        self.config = config
        self.max_running = max_running
        self.locks = LockManager()
        self.filters = filters if filters is not None else FilterStore.for_paths(paths)
        self._pool = ThreadPoolExecutor(max_workers=write_threads, thread_name_prefix="jobwrite")
        self._committer = GroupCommitter(store, self._pool)
        self._entries: dict[int, _Entry] = {}
        self._queued: set[int] = set()
        self._running: set[int] = set()
        self._finishing: set[int] = set()  # done running, their last state change on its way to disk
        self._rejecting: set[int] = set()  # canceled by a REJECT rule, the cancel on its way to disk
        self._stopping = False
        self._hard_stop = False
        self._idle = asyncio.Event()
        self.job_source = _PublishedJobs(self)

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Apply the restart rule, load the live jobs, start the queued ones."""
        report = await self._in_thread(self.store.recover_after_restart)
        for job in report.failed:
            log.warning("job %d ended in error: the master stopped while it ran", job.id)
        await self._in_thread(self.filters.load)
        jobs, _corrupt = await self._in_thread(self.store.load_all)
        for job in jobs:
            self._entries[job.id] = _Entry(job, json.loads(job.to_json()))
            if job.status == STATUS_QUEUED:
                self._queued.add(job.id)
        log.info("job queue loaded: %d live jobs, %d queued", len(jobs), len(self._queued))
        self._schedule()

    async def shutdown(self, grace: float = 10.0) -> None:
        """Start nothing more; let running jobs finish within `grace`; leave the rest for the restart rule."""
        self._stopping = True
        tasks = [e.task for e in self._entries.values() if e.task is not None and not e.task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                log.warning("%d job(s) still running after %.1f s; they will end in error at the next"
                            " start", len(pending), grace)
                self._hard_stop = True
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)

    async def wait_idle(self) -> None:
        while self._queued or self._running or self._finishing or self._rejecting:
            self._idle.clear()
            await self._idle.wait()

    async def _in_thread(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    # -- persistence -----------------------------------------------------------------------
    async def _persist(self, entry: _Entry) -> None:
        """Write the job's current state durably, publish it, wake its watchers."""
        async with entry.write_lock:
            data = entry.job.to_json()
            await self._committer.write(entry.job.id, data)
            entry.published = json.loads(data)
        entry.notify()

    def published(self, job_id: int) -> dict[str, Any] | None:
        entry = self._entries.get(job_id)
        return entry.published if entry is not None else None

    # -- submission ----------------------------------------------------------------------------
    def is_drained(self) -> bool:
        return self.store.is_drained()

    async def set_drained(self, drained: bool) -> None:
        await self._in_thread(self.store.set_drained, drained)

    async def submit(self, ops: list[dict[str, Any]], ignore_drain: bool = False) -> int:
        if not ignore_drain and self.is_drained():
            raise GenericError("Queue drained")
        try:
            validated = validate_job(ops)
        except OpcodeError as err:
            raise RequestParseError(err.message) from None
        result = (await self._create([validated]))[0]
        if isinstance(result, Exception):
            raise GenericError(str(result))
        return result

    async def submit_many(self, jobs: list[list[dict[str, Any]]]) -> list[list[Any]]:
        if self.is_drained():
            raise GenericError("Queue drained")
        answers: list[list[Any] | None] = []
        valid: list[list[dict[str, Any]]] = []
        for ops in jobs:
            try:
                valid.append(validate_job(ops))
                answers.append(None)
            except OpcodeError as err:
                answers.append([False, err.message])
        created = iter(await self._create(valid)) if valid else iter([])
        out: list[list[Any]] = []
        for answer in answers:
            if answer is not None:
                out.append(answer)
                continue
            result = next(created)
            out.append([False, str(result)] if isinstance(result, Exception) else [True, result])
        return out

    async def _create(self, batch: list[list[dict[str, Any]]]) -> list[int | Exception]:
        """Write the jobs (one received timestamp), then queue them; ids or errors in order."""
        results = await self._in_thread(self.store.create_jobs, batch)
        out: list[int | Exception] = []
        for result in results:
            if isinstance(result, Job):
                self._entries[result.id] = _Entry(result, json.loads(result.to_json()))
                self._queued.add(result.id)
                out.append(result.id)
            else:
                out.append(result if isinstance(result, Exception) else InvalidJobError(str(result)))
        self._schedule()
        return out

    # -- scheduling --------------------------------------------------------------------------
    def _blocked_by_dependency(self, job: Job) -> bool:
        for index in range(len(job.ops)):
            if job.ops[index].is_finalized:
                continue
            try:
                deps = job.dependencies(index)
            except InvalidJobError:
                return False  # the opcode will fail on it
            for dep_id, _ in deps:
                other = self._entries.get(dep_id)
                if other is not None and other.published_status not in FINALIZED_STATUSES:
                    return True
        return False

    def _applying_rule(self, rules: Sequence[FilterRule], job_id: int) -> FilterRule | None:
        job = self._entries[job_id].job
        return applying_rule(rules, job_id, [op.input for op in job.ops])

    def _schedule(self) -> None:
        if self._stopping:
            return
        rules = self.filters.ordered()
        applying: dict[int, FilterRule | None] = {}
        usage: dict[str, int] = {}  # RATE_LIMIT rule -> running jobs it applies to
        if rules:
            applying = {i: self._applying_rule(rules, i) for i in self._queued}
            for job_id, rule in applying.items():
                if rule is not None and rule.action == REJECT:
                    self._reject(self._entries[job_id], rule)
            for job_id in self._running:
                rule = self._applying_rule(rules, job_id)
                if rule is not None and rule.rate_limit is not None:
                    usage[rule.uuid] = usage.get(rule.uuid, 0) + 1
        while len(self._running) < self.max_running and self._queued:
            candidates = sorted(self._queued, key=lambda i: (self._entries[i].job.priority, i))
            chosen = next((i for i in candidates if self._may_start(i, applying.get(i), usage)), None)
            if chosen is None:
                break
            self._queued.discard(chosen)
            self._running.add(chosen)
            entry = self._entries[chosen]
            entry.task = asyncio.create_task(self._run_job(entry), name=f"job-{chosen}")
        if not self._queued and not self._running and not self._finishing and not self._rejecting:
            self._idle.set()

    def _may_start(self, job_id: int, rule: FilterRule | None, usage: dict[str, int]) -> bool:
        """Dependencies and the applying filter rule allow it; takes a RATE_LIMIT slot when so."""
        if self._blocked_by_dependency(self._entries[job_id].job):
            return False
        if rule is None:
            return True
        if rule.action == PAUSE:
            return False
        limit = rule.rate_limit
        if limit is not None:
            if usage.get(rule.uuid, 0) >= limit:
                return False
            usage[rule.uuid] = usage.get(rule.uuid, 0) + 1
        return True

    def _reject(self, entry: _Entry, rule: FilterRule) -> None:
        """Cancel a queued job a REJECT rule applies to, as CancelJob does (luxid's cancelRejectedJobs)."""
        job_id = entry.job.id
        ok, message = entry.job.cancel()
        if not ok:
            log.warning("job %d not rejected by filter rule %s: %s", job_id, rule.uuid, message)
            return
        log.info("job %d canceled: rejected by filter rule %s", job_id, rule.uuid)
        self._queued.discard(job_id)
        self._rejecting.add(job_id)
        entry.task = asyncio.create_task(self._write_rejected(entry), name=f"reject-{job_id}")

    async def _write_rejected(self, entry: _Entry) -> None:
        try:
            await self._persist(entry)
        except Exception:
            log.exception("job %d: writing its cancel by a filter rule failed", entry.job.id)
        finally:
            self._rejecting.discard(entry.job.id)
            entry.task = None
            self._schedule()

    # -- filter rules ---------------------------------------------------------------------------
    def filter_rules(self) -> list[FilterRule]:
        return list(self.filters.ordered())

    async def replace_filter(self, uuid: str | None, priority: int, predicates: Any, action: Any,
                             reason: Any) -> str:
        """ReplaceFilter: add (uuid None) or replace a rule, durably; the queue is re-examined."""
        if uuid is None:
            uuid = str(uuid_module.uuid4())
        elif not is_uuid(uuid):
            raise GenericError("Unable to parse UUID")
        trail = [*reason, ["luxid", "", time.time_ns()]] if isinstance(reason, list) else reason
        try:
            rule = FilterRule.new(uuid, self.store.last_job_id, priority, predicates, action, trail)
        except RuleError as err:
            raise RequestParseError(f"invalid filter rule: {err}") from None
        await self._in_thread(self.filters.replace, rule)
        log.info("filter rule %s set: priority %d, action %s", uuid, priority, rule.action)
        self._schedule()
        return uuid

    async def delete_filter(self, uuid: str) -> None:
        if not await self._in_thread(self.filters.delete, uuid):
            raise GenericError(f"Filter rule with UUID {uuid} does not exist")
        log.info("filter rule %s deleted", uuid)
        self._schedule()

    async def _run_job(self, entry: _Entry) -> None:
        job_id = entry.job.id
        try:
            await self._execute(entry)
        except asyncio.CancelledError:
            if not self._hard_stop:
                log.error("job %d was cancelled unexpectedly", job_id)
            raise
        except Exception:
            log.exception("job %d: internal error of the engine", job_id)
        finally:
            self.locks.release(job_id)
            entry.task = None
            self._running.discard(job_id)
            self._finishing.discard(job_id)
            self._schedule()

    def _free_slot(self, job_id: int) -> None:
        """The job has run: the next queued job may start while its end is being written.

        So the end of one job and the start of the next go to disk in the same group commit.
        """
        if job_id in self._running:
            self._running.discard(job_id)
            self._finishing.add(job_id)
            self._schedule()

    # -- execution -----------------------------------------------------------------------------
    async def _execute(self, entry: _Entry) -> None:
        job = entry.job
        while (index := job.next_opcode_index()) is not None:
            try:
                await self._run_opcode(entry, index)
            except _Stop:
                return

    async def _finish(self, entry: _Entry, index: int, how: str, result: Any = None) -> NoReturn:
        """End the job at opcode `index`: canceled or error; raises _Stop."""
        self.locks.release(entry.job.id)  # the job ends: its locks go before the end is written
        self._free_slot(entry.job.id)
        if how == STATUS_CANCELED:
            entry.job.mark_canceled(index)
        else:
            entry.job.mark_error(index, result)
        await self._persist(entry)
        raise _Stop

    async def _mark_waiting(self, entry: _Entry, index: int) -> None:
        if entry.job.ops[index].status == STATUS_QUEUED:
            entry.job.mark_waiting(index)
            await self._persist(entry)

    async def _withdrawable(self, entry: _Entry, awaitable: Any) -> bool:
        """Await a wait that cancel() may withdraw; False when it was withdrawn."""
        entry.wait_task = asyncio.ensure_future(awaitable)
        try:
            await entry.wait_task
            return True
        except asyncio.CancelledError:
            if entry.cancel_requested and not self._hard_stop:
                return False
            raise
        finally:
            entry.wait_task = None

    async def _check_dependencies(self, entry: _Entry, index: int) -> None:
        job = entry.job
        try:
            deps = job.dependencies(index)
        except InvalidJobError as err:
            await self._finish(entry, index, "error", op_exec_error(str(err)))
        for dep_id, wanted in deps:
            while True:
                if entry.cancel_requested:
                    await self._finish(entry, index, STATUS_CANCELED)
                other = self._entries.get(dep_id)
                if other is not None:
                    status: str | None = other.published_status
                else:
                    status = await self._in_thread(self.store.job_status, dep_id)
                outcome, message = check_dependency(job.id, dep_id, wanted, status)
                if outcome is DependencyResult.CONTINUE:
                    break
                if outcome is DependencyResult.CANCEL:
                    await self._finish(entry, index, STATUS_CANCELED)
                if outcome is not DependencyResult.WAIT:
                    await self._finish(entry, index, "error", op_exec_error(message))
                await self._mark_waiting(entry, index)
                # A job not in memory is unreadable on disk: poll it rather than spin.
                change = other.changed.wait() if other is not None else asyncio.sleep(DEPENDENCY_POLL)
                if not await self._withdrawable(entry, change):
                    await self._finish(entry, index, STATUS_CANCELED)

    async def _acquire(self, entry: _Entry, index: int, requests: list[LockRequest]) -> None:
        job = entry.job
        owner = job.id
        pending = sorted(requests, key=lambda r: r[0])
        while pending and self.locks.try_acquire(owner, *pending[0]):
            pending.pop(0)
        if not pending:
            return
        await self._mark_waiting(entry, index)
        if entry.cancel_requested:
            self.locks.release(owner)
            await self._finish(entry, index, STATUS_CANCELED)

        async def rest() -> None:
            for level, names, shared in pending:
                await self.locks.acquire(owner, level, names, shared, job.ops[index].priority)

        if not await self._withdrawable(entry, rest()):
            self.locks.release(owner)
            await self._finish(entry, index, STATUS_CANCELED)

    async def _feedback(self, entry: _Entry, index: int, log_type: str, message: Any) -> None:
        entry.job.add_log(index, message, log_type)
        await self._persist(entry)

    async def _run_opcode(self, entry: _Entry, index: int) -> None:
        job = entry.job
        op = job.ops[index]
        if entry.cancel_requested or op.status == STATUS_CANCELING:
            await self._finish(entry, index, STATUS_CANCELED)
        await self._check_dependencies(entry, index)
        op_id = op.op_id or ""
        impl_class = REGISTRY.get(op_id)
        if impl_class is None:
            await self._finish(entry, index, "error",
                               op_exec_error(f"Opcode {op_id} is not implemented by this master yet"))
            return

        async def feedback(log_type: str, message: Any) -> None:
            await self._feedback(entry, index, log_type, message)

        ctx = OpContext(job.id, index, self.paths, self.node_rpc, feedback, self.config,
                        submit_jobs=self.submit_many)
        impl = impl_class(dict(op.input), ctx)
        try:
            requests = [(Level.CLUSTER, [BGL], not impl_class.req_bgl), *impl.locks()]
        except GanetiError as err:
            await self._finish(entry, index, "error", err.encode())
            return
        try:
            await self._acquire(entry, index, requests)
            if entry.cancel_requested:
                await self._finish(entry, index, STATUS_CANCELED)
            job.mark_running(index)
            await self._persist(entry)
            entry.op_task = asyncio.ensure_future(impl.exec())
            try:
                result = await entry.op_task
            except asyncio.CancelledError:
                if entry.kill_requested and not self._hard_stop:
                    killed = op_exec_error(f"Job {job.id} killed by request")
                    await self._finish(entry, index, "error", killed)
                raise
            except GanetiError as err:
                await self._finish(entry, index, "error", err.encode())
            except JobStateError:
                raise
            except Exception as err:
                log.exception("job %d opcode %d (%s) failed", job.id, index, op_id)
                await self._finish(entry, index, "error", op_exec_error(str(err) or type(err).__name__))
            finally:
                entry.op_task = None
            # As in Ganeti, the opcode's locks go as soon as it has run, before its result is written:
            # the next job's start is written in the same group commit as this job's end.
            self.locks.release(job.id)
            job.mark_success(index, result)
            if job.next_opcode_index() is None:
                self._free_slot(job.id)
            await self._persist(entry)
        finally:
            self.locks.release(job.id)

    # -- control ------------------------------------------------------------------------------
    async def _wait_final(self, entry: _Entry, timeout: float) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while entry.published_status not in FINALIZED_STATUSES:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.changed.wait(), remaining)
        return entry.published_status

    async def cancel(self, job_id: int, kill: bool = False) -> tuple[bool, str]:
        entry = self._entries.get(job_id)
        if entry is None:
            return False, f"Job {job_id} not found in queue"
        job = entry.job
        status = job.status
        if status in FINALIZED_STATUSES:
            return False, f"Job {job_id} has already finished, status {status}"
        if job_id in self._queued:
            ok, message = job.cancel()
            if not ok:
                return False, message
            self._queued.discard(job_id)
            await self._persist(entry)
            self._schedule()
            return True, f"Dequeued job {job_id}"
        if status == STATUS_RUNNING:
            if not kill or entry.op_task is None:
                return False, "Job no longer waiting, can't cancel (informed it anyway)"
            entry.kill_requested = True
            entry.op_task.cancel()
            await self._wait_final(entry, CANCEL_WAIT)
            return True, f"Job {job_id} killed: its running opcode was interrupted"
        # started, but queued or waiting for a dependency or locks
        entry.cancel_requested = True
        if status == STATUS_WAITING:
            job.cancel()  # -> canceling
            await self._persist(entry)
        if entry.wait_task is not None:
            entry.wait_task.cancel()
        final = await self._wait_final(entry, CANCEL_WAIT)
        if final == STATUS_CANCELED:
            return True, "Job successfully cancelled"
        if final in FINALIZED_STATUSES:
            return False, f"Job exited before it could have been canceled, status {final}"
        return False, f"Job could not be canceled, status {final}"

    async def change_priority(self, job_id: int, priority: int) -> tuple[bool, str]:
        entry = self._entries.get(job_id)
        if entry is None:
            return False, f"Job {job_id} not found"
        ok, message = entry.job.change_priority(priority)
        if ok:
            await self._persist(entry)
            self.locks.set_priority(job_id, entry.job.priority)
            self._schedule()
        return ok, message

    async def archive(self, job_id: int) -> bool:
        entry = self._entries.get(job_id)
        if entry is None or entry.published_status not in FINALIZED_STATUSES:
            return False
        async with entry.write_lock:
            try:
                await self._in_thread(self.store.archive_job, job_id)
            except (JobNotFoundError, JobNotFinalizedError) as err:
                log.info("job %d not archived: %s", job_id, err)
                return False
        self._forget(job_id)
        return True

    def _forget(self, job_id: int) -> None:
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            entry.notify()

    async def autoarchive(self, age: float, timeout: float) -> tuple[int, int]:
        archived, left = await self._in_thread(self.store.autoarchive, age, timeout)
        if archived:
            gone = await self._in_thread(self._archived_ids_among,
                                         [i for i, e in self._entries.items() if e.job.is_finalized])
            for job_id in gone:
                self._forget(job_id)
        return int(archived), int(left)

    def _archived_ids_among(self, ids: Sequence[int]) -> list[int]:
        return [i for i in ids if not os.path.exists(self.store.job_path(i))]

    # -- watching --------------------------------------------------------------------------------
    async def wait_for_change(self, job_id: int, fields: list[str], prev_info: list[Any] | None,
                              prev_serial: int | None, timeout: float) -> list[Any]:
        """WaitForJobChange: a long poll on the job's published state (luxi-protocol.md §7)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout, 0.0), WFJC_TIMEOUT_MAX)
        limit = -1 if prev_serial is None else prev_serial
        while True:
            entry = self._entries.get(job_id)
            if entry is None:
                raise JobLost("Can't load job file")
            changed = entry.changed
            data = entry.published
            info = job_field_values(job_id, data, fields)
            logs = [e for op in data["ops"] for e in (op.get("log") or []) if e[0] > limit]
            if logs or info != prev_info or job_status(data) in FINALIZED_STATUSES:
                return [info, logs]
            remaining = deadline - loop.time()
            if remaining <= 0:
                return [info, logs]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    # -- introspection -----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {"live": len(self._entries), "queued": len(self._queued),
                "running": len(self._running) + len(self._finishing),
                "canceling": sum(1 for e in self._entries.values() if e.job.status == STATUS_CANCELING)}
