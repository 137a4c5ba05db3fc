"""Replication of the master's job queue to the other master candidates.

Ganeti keeps a copy of the job queue on every master candidate, so that a
new master (after a failover) finds the jobs: each durable write of a job
file (and of queue/serial) is sent as ``jobqueue_update``, each archiving
as ``jobqueue_rename``, each drain flag change as
``jobqueue_set_drain_flag``. Failures are logged, per node, and never fail
or block a job, as in Ganeti (jqueue._CheckRpcResult, luxid).

Who: the nodes in ssconf_master_candidates except this node (the master's
own queue is the one the store writes locally), read when each change is
replicated, so a new ssconf takes effect at the next change. Addresses and
ports: masterd.rpc.NodeRpcClient (ssconf_node_primary_ips, and
$DATA_DIR/node-grpc-ports for node daemons not on port 1812). Transport:
the node daemons' gRPC door with mutual TLS.

Content: ``[0, text]`` below 512 bytes, else ``[1, base64(zlib(data, 3))]``,
what Ganeti's RPC layer sends (rpc.node._Compress).

Asynchronous and ordered: the store's callbacks only compute the payload
(in the caller's thread) and hand it to the event loop; each candidate has
its own ordered queue and one sender task, so a slow or dead candidate
delays nobody but itself. Per candidate the operations are sent in the
order they happened; a file update still waiting to be sent is replaced by
a newer update of the same file (the last write wins, the older content is
never sent), unless a rename of that file came between them.

Logging: the first failure of a candidate is logged as an error naming the
node, its address and the operation; further failures while it stays down
are counted (logged as a warning at most once a minute) and its recovery is
logged with the number of operations it missed. Like Ganeti, nothing is
resent: a candidate that was down keeps a stale queue until it is
re-added (which copies the whole queue).

A new candidate (a node added as one, promoted, or re-made one) gets the
whole queue, as Ganeti's job queue gives it to a node added as master
candidate (jqueue AddNode of Ganeti 2.x; the Python of the installed 3.0
no longer has it, its queue lives in luxid): after the
configuration naming it a candidate was written (so this node's
ssconf_master_candidates names it and every later change goes to it too),
`upload_queue` puts into its ordered queue ``jobqueue_purge`` (clean
queue and archive directories), then one ``jobqueue_update`` per live job
file and the serial file, then the drain flag when the queue is drained,
and waits until these were sent. Each file is read in the event loop
thread and queued in the same step: a write of that file replicated later
comes after it (and replaces it while unsent), so the candidate never ends
with an older content than the master's. Archived jobs are not copied
(Ganeti neither). Without a running replicator for the queue (engines
built without one), the same calls are made directly, in order.

Interface::

    replicator = QueueReplicator(paths, rpc)      # created inside the running event loop
    store = JobQueueStore(paths, replicate=replicator.replicate,
                          rename_replicas=replicator.rename_replicas,
                          replicate_drain=replicator.set_drain_flag)
    replicator.candidates() -> [names]            the other master candidates (ssconf)
    replicator.replicate(name, data)              \\  thread-safe, never block, never raise;
    replicator.rename_replicas([(old, new), ...])  > names are virtual paths
    replicator.set_drain_flag(flag)               /  (what the store passes)
    await replicator.flush(timeout=None) -> bool  everything handed over so far was sent
                                                  (or failed); False on timeout
    await replicator.close(timeout)               flush (bounded), then stop the senders
    await replicator.add_node(node, timeout) -> UploadReport    whole queue to a new candidate
    await upload_queue(paths, rpc, node, timeout) -> UploadReport
        the same through the replicator running for paths.queue_dir in this process, else
        directly (for the opcodes: masterd.ops.node_add, masterd.ops.node_set_params)
    replicator.stats(node) -> NodeStats           sent / failed / coalesced counters (tests, debugging)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
import weakref
import zlib
from collections import deque
from dataclasses import dataclass

from masterd import rpc as node_rpc
from masterd import ssconf
from masterd.rpc import NodeRpcClient
from noded.paths import Paths

log = logging.getLogger("masterd.replication")

#: Payloads from this size on are sent zlib-compressed and base64-encoded (Ganeti's rule).
COMPRESS_FROM = 512
#: RPC_ENCODING_NONE and RPC_ENCODING_ZLIB_BASE64.
ENCODING_NONE = 0
ENCODING_ZLIB_BASE64 = 1
#: zlib level Ganeti uses.
ZLIB_LEVEL = 3
#: Seconds between two warnings about a candidate that keeps failing.
REPEAT_WARNING_INTERVAL = 60.0
#: Seconds an opcode waits for the copy of the whole queue to a new candidate.
UPLOAD_TIMEOUT = 300.0


def encode_content(data: bytes) -> tuple[int, str]:
    """Ganeti's ``(encoding, data)`` for a queue file's content."""
    if len(data) < COMPRESS_FROM:
        try:
            return ENCODING_NONE, data.decode("utf-8")
        except UnicodeDecodeError:
            pass  # not text: only the compressed form can carry it
    return ENCODING_ZLIB_BASE64, base64.b64encode(zlib.compress(data, ZLIB_LEVEL)).decode("ascii")


@dataclass
class _Update:
    name: str
    content: tuple[int, str]


@dataclass
class _Rename:
    pairs: list[tuple[str, str]]


@dataclass
class _Drain:
    flag: bool


@dataclass
class _Purge:
    """jobqueue_purge: the first step of copying the whole queue to a new candidate."""


@dataclass
class _Barrier:
    """Not sent: resolved when the sender reaches it (the end of a whole-queue copy)."""

    done: asyncio.Future[int]
    failed_before: int = 0


_Operation = _Update | _Rename | _Drain | _Purge | _Barrier


def describe(op: _Operation) -> str:
    if isinstance(op, _Purge):
        return "jobqueue_purge"
    if isinstance(op, _Barrier):
        return "end of the job queue copy"
    if isinstance(op, _Update):
        return f"jobqueue_update {op.name}"
    if isinstance(op, _Rename):
        first = op.pairs[0]
        more = f" (+{len(op.pairs) - 1} more)" if len(op.pairs) > 1 else ""
        return f"jobqueue_rename {first[0]} -> {first[1]}{more}"
    return f"jobqueue_set_drain_flag {op.flag}"


@dataclass
class _Slot:
    """A place in a candidate's queue; an update slot's operation may be replaced before it is sent."""

    op: _Operation


@dataclass
class NodeStats:
    sent: int = 0
    failed: int = 0
    coalesced: int = 0


@dataclass
class UploadReport:
    """What `upload_queue` did for one node: files queued, operations that failed, whether it ended."""

    node: str
    files: int = 0
    failed: int = 0
    complete: bool = True


class _Candidate:
    """One candidate's ordered queue and its sender task."""

    def __init__(self, node: str, replicator: QueueReplicator) -> None:
        self.node = node
        self.replicator = replicator
        self.slots: deque[_Slot] = deque()
        self.pending: dict[str, _Slot] = {}  # update slots not yet sent, by file name
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.stats = NodeStats()
        self.failing_since: float | None = None
        self.missed = 0
        self.last_warning = 0.0
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"replicate-to-{node}")

    def push(self, op: _Operation) -> None:
        if isinstance(op, _Update):
            slot = self.pending.get(op.name)
            if slot is not None:
                slot.op = op
                self.stats.coalesced += 1
                return
            slot = _Slot(op)
            self.pending[op.name] = slot
        else:
            if isinstance(op, _Rename):
                for old, new in op.pairs:  # a later update must not jump before this rename
                    self.pending.pop(old, None)
                    self.pending.pop(new, None)
            slot = _Slot(op)
        self.slots.append(slot)
        self.idle.clear()
        self.wakeup.set()

    async def _run(self) -> None:
        while True:
            if not self.slots:
                self.idle.set()
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            slot = self.slots.popleft()
            op = slot.op
            if isinstance(op, _Barrier):
                if not op.done.done():
                    op.done.set_result(self.stats.failed - op.failed_before)
                continue
            if isinstance(op, _Update) and self.pending.get(op.name) is slot:
                del self.pending[op.name]
            try:
                error = await self.replicator.send(self.node, op)
            except Exception as err:  # a bug must not stop the replication to this node
                log.exception("replicating %s to node %s failed unexpectedly", describe(op), self.node)
                error = f"{type(err).__name__}: {err}"
            await self._account(op, error)

    async def _account(self, op: _Operation, error: str | None) -> None:
        if error is None:
            self.stats.sent += 1
            if self.failing_since is not None:
                log.info("job queue replication to node %s works again after %.0f s; it missed %d"
                         " operation(s) and keeps a stale copy of those files until it is re-added",
                         self.node, time.monotonic() - self.failing_since, self.missed)
                self.failing_since, self.missed = None, 0
            return
        self.stats.failed += 1
        self.missed += 1
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = self.last_warning = now
            target = await self.replicator.target(self.node)
            log.error("job queue replication to node %s (%s) failed: %s: %s; the jobs go on, the"
                      " node's copy of the queue is now stale", self.node, target, describe(op), error)
        elif now - self.last_warning >= REPEAT_WARNING_INTERVAL:
            self.last_warning = now
            log.warning("job queue replication to node %s still fails (%d operation(s) missed): %s: %s",
                        self.node, self.missed, describe(op), error)
        else:
            log.debug("job queue replication to node %s failed: %s: %s", self.node, describe(op), error)


class QueueReplicator:
    """Sends the master's job queue changes to the other master candidates (module docstring)."""

    def __init__(self, paths: Paths, rpc: NodeRpcClient) -> None:
        self.paths = paths
        self.rpc = rpc
        self._loop = asyncio.get_running_loop()
        self._candidates: dict[str, _Candidate] = {}
        self._closed = False
        _ACTIVE[os.path.realpath(paths.queue_dir)] = self

    # -- who -----------------------------------------------------------------------------------
    def candidates(self) -> list[str]:
        """The master candidates other than this node, from ssconf_master_candidates."""
        return [name for name in ssconf.master_candidates(self.paths) if name != self.paths.hostname]

    async def target(self, node: str) -> str:
        try:
            return await self.rpc.target(node)
        except Exception as err:
            return f"no address: {err}"

    # -- the store's callbacks (any thread) ------------------------------------------------------
    def replicate(self, name: str, data: bytes) -> None:
        """Send the new content of queue file `name` (a virtual path) to every other candidate."""
        nodes = self.candidates()
        if nodes:
            self._hand_over(nodes, _Update(name, encode_content(data)))

    def rename_replicas(self, pairs: list[tuple[str, str]]) -> None:
        """Rename queue files on every other candidate, in order (archiving)."""
        nodes = self.candidates()
        if nodes and pairs:
            self._hand_over(nodes, _Rename(list(pairs)))

    def set_drain_flag(self, flag: bool) -> None:
        """Set or clear the drain flag on every other candidate."""
        nodes = self.candidates()
        if nodes:
            self._hand_over(nodes, _Drain(bool(flag)))

    def _hand_over(self, nodes: list[str], op: _Operation) -> None:
        if self._closed:
            log.warning("replication has stopped; %s not sent to %s", describe(op), ", ".join(nodes))
            return
        try:
            self._loop.call_soon_threadsafe(self._enqueue, nodes, op)
        except RuntimeError:  # the loop is closed: the daemon is stopping
            log.warning("the event loop is closed; %s not sent to %s", describe(op), ", ".join(nodes))

    def _enqueue(self, nodes: list[str], op: _Operation) -> None:
        if self._closed:
            log.warning("replication has stopped; %s not sent to %s", describe(op), ", ".join(nodes))
            return
        for node in nodes:
            candidate = self._candidates.get(node)
            if candidate is None:
                candidate = self._candidates[node] = _Candidate(node, self)
            candidate.push(op)

    # -- sending -------------------------------------------------------------------------------------
    async def send(self, node: str, op: _Operation) -> str | None:
        """Send one operation to one node: None, or the failure as text."""
        if isinstance(op, _Purge):
            return (await node_rpc.call_one(self.rpc, node, "jobqueue_purge", [])).fail_msg
        if isinstance(op, _Barrier):
            return None
        if isinstance(op, _Update):
            result = await self.rpc.jobqueue_update([node], op.name, op.content)
        elif isinstance(op, _Rename):
            result = await self.rpc.jobqueue_rename([node], op.pairs)
        else:
            result = await self.rpc.jobqueue_set_drain_flag([node], op.flag)
        return result[node]

    def stats(self, node: str) -> NodeStats:
        candidate = self._candidates.get(node)
        return candidate.stats if candidate is not None else NodeStats()

    # -- flushing and stopping --------------------------------------------------------------------------
    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over so far was sent or failed; False on timeout."""
        await asyncio.sleep(0)  # let hand-overs already scheduled from other threads arrive
        waits = [c.idle.wait() for c in self._candidates.values()]
        if not waits:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is pending (at most `timeout` seconds), then stop; later changes are dropped."""
        if not await self.flush(timeout):
            late = [c.node for c in self._candidates.values() if not c.idle.is_set()]
            log.warning("stopping with job queue changes not yet sent to %s", ", ".join(late))
        self._closed = True
        if _ACTIVE.get(os.path.realpath(self.paths.queue_dir)) is self:
            del _ACTIVE[os.path.realpath(self.paths.queue_dir)]
        tasks = [c.task for c in self._candidates.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- a new candidate gets the whole queue --------------------------------------------------
    async def add_node(self, node: str, timeout: float = UPLOAD_TIMEOUT) -> UploadReport:
        """Copy the whole queue to `node` through its ordered queue (module docstring); wait for it."""
        report = UploadReport(node)
        if self._closed:
            report.complete = False
            return report
        candidate = self._candidates.get(node)
        if candidate is None:
            candidate = self._candidates[node] = _Candidate(node, self)
        candidate.push(_Purge())
        for count, path in enumerate(queue_files(self.paths)):
            if count and count % 64 == 0:
                await asyncio.sleep(0)  # let the senders and the other tasks run
            data = _read(path)  # read and queue in one step of the loop: see the module docstring
            if data is not None:
                candidate.push(_Update(self.paths.virtualize(path), encode_content(data)))
                report.files += 1
        if os.path.exists(os.path.join(self.paths.queue_dir, "drain")):
            candidate.push(_Drain(True))
        barrier = _Barrier(self._loop.create_future(), candidate.stats.failed)
        candidate.push(barrier)
        try:
            report.failed = await asyncio.wait_for(asyncio.shield(barrier.done), timeout)
        except TimeoutError:
            report.complete = False
        return report


#: The replicator running for each queue directory in this process (one master daemon).
_ACTIVE: weakref.WeakValueDictionary[str, QueueReplicator] = weakref.WeakValueDictionary()


def queue_files(paths: Paths) -> list[str]:
    """The files a new candidate gets: the serial file, then the live job files by job id."""
    try:
        names = os.listdir(paths.queue_dir)
    except OSError:
        return []
    jobs = sorted((int(name[4:]), name) for name in names if name.startswith("job-") and name[4:].isdigit())
    return [os.path.join(paths.queue_dir, name) for name in ["serial", *(name for _, name in jobs)]]


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:  # archived meanwhile: the rename, queued before, moves it on the node
        return None


async def upload_queue(paths: Paths, rpc: NodeRpcClient, node: str,
                       timeout: float = UPLOAD_TIMEOUT) -> UploadReport:
    """Copy the whole job queue to the new candidate `node` (the running replicator's add_node, or direct)."""
    replicator = _ACTIVE.get(os.path.realpath(paths.queue_dir))
    if replicator is not None and not replicator._closed and replicator._loop is asyncio.get_running_loop():
        return await replicator.add_node(node, timeout)
    report = UploadReport(node)
    failure = (await node_rpc.call_one(rpc, node, "jobqueue_purge", [])).fail_msg
    if failure is not None:
        log.error("copying the job queue to node %s: jobqueue_purge failed: %s", node, failure)
        report.failed += 1
    for path in queue_files(paths):
        data = _read(path)
        if data is None:
            continue
        report.files += 1
        name = paths.virtualize(path)
        failure = (await rpc.jobqueue_update([node], name, encode_content(data)))[node]
        if failure is not None:
            log.error("copying the job queue to node %s: jobqueue_update %s failed: %s", node, name, failure)
            report.failed += 1
    if os.path.exists(os.path.join(paths.queue_dir, "drain")):
        if (await rpc.jobqueue_set_drain_flag([node], True))[node] is not None:
            report.failed += 1
    return report
