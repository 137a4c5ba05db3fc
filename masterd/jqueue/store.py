"""The job queue directory of the master: job files, serial, version, lock, drain, archive.

Layout (../shared/reference/job-queue.md §1, below ``Paths.queue_dir``)::

    queue/version                       "1\\n"; any other value is refused
    queue/serial                        the last allocated job id, "N\\n"
    queue/lock                          fcntl (POSIX) lock held while the store is open
    queue/drain                         exists while the queue is drained
    queue/job-<id>                      a live job (masterd.jqueue.model.Job JSON)
    queue/archive/<id // 10000>/job-<id> an archived job

Every write is durable before the method returns (masterd.jqueue.durable:
temporary file, fsync, rename, fsync of the directory; the files of one
`create_jobs` or `write_jobs_data` call share one directory fsync). A job id
is answered only once the serial naming it is on disk; `create_jobs` writes
the serial and the new job files in one group commit, and at open the serial
is raised to the highest job id found on disk, so ids are never reused, even
across a crash in the middle of a write.

The lock is the one luxid takes (an fcntl write lock on ``queue/lock``), so
our master and a real luxid exclude each other; Ganeti's noded uses flock
on the same file for its jobqueue_* procedures, which does not conflict
with it, as in Ganeti. POSIX locks belong to the process: a second store
on the same queue in the same process is refused by a registry here, and
nothing else in the process may open and close ``queue/lock`` (closing any
descriptor of it drops the lock).

Interface::

    store = JobQueueStore(paths, replicate=None, rename_replicas=None, replicate_drain=None)
        # creates the layout, takes the lock (QueueLockedError), checks the
        # version (QueueVersionError), removes temporary files of a crash.
        # replicate(name, content) is called after each durable write of a
        # job or the serial; rename_replicas([(old, new), ...]) after
        # archiving; replicate_drain(flag) after each set_drained. Names
        # are virtual-cluster friendly (Paths.virtualize): what
        # jobqueue_update / jobqueue_rename take. Their exceptions are
        # logged, never raised (Ganeti only logs replication failures).
        # Replicate to the *other* master candidates: the master's own copy
        # is this store's (masterd.replication does so).
    store.allocate_ids(count) -> [ids]          durable serial first
    store.create_job(inputs, received=None) -> Job      allocate + Job.new + write
    store.create_jobs([inputs, ...]) -> [Job | InvalidJobError | JobWriteError]
    store.write_job(job, replicate=True)        rewrite after a state change
    store.write_job_data(id, bytes, replicate=True)   the same, already serialized
    store.write_jobs_data([(id, bytes), ...], replicate=True) -> [None | OSError]
        # group commit: several jobs, one directory fsync; each None is durable
    store.load_job(id) -> Job | None            live job; CorruptJobError
    store.load_archived_job(id) -> Job | None
    store.job_status(id) -> str | None          live, else archived (dependencies)
    store.live_job_ids() -> sorted [ids]
    store.load_all() -> ([Job], [CorruptJobError])
    store.archive_job(id)                       JobNotFoundError, JobNotFinalizedError
    store.autoarchive(age_seconds, timeout) -> (archived, left_unchecked)
    store.set_drained(bool) / store.is_drained()
    store.recover_after_restart() -> RecoveryReport
    store.close()                               (also a context manager)

Concurrency: allocation and archiving are serialized inside the store; the
caller must not write one job from two threads at once (different jobs may
be written concurrently), and must not rewrite a job once it is finalized
and may have been archived.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from masterd.jqueue.durable import fsync_dir, is_temp_name, write_durably, write_many_durably
from masterd.jqueue.model import (
    STATUS_QUEUED,
    InvalidJobError,
    Job,
    JobFormatError,
    Timestamp,
    now_timestamp,
)
from noded.paths import Paths

log = logging.getLogger(__name__)

#: constants.JOB_QUEUE_VERSION.
QUEUE_VERSION = 1
#: constants.JSTORE_JOBS_PER_ARCHIVE_DIRECTORY.
JOBS_PER_ARCHIVE_DIRECTORY = 10000
#: constants.JOB_FILE_RE.
JOB_FILE_RE = re.compile(r"^job-(\d+)$")
#: Modes Ganeti uses (JOB_QUEUE_FILES_PERMS, the drain file, ensure-dirs).
FILE_MODE = 0o640
DRAIN_MODE = 0o644
DIR_MODE = 0o750
#: Files of one group commit written and fsynced at the same time (write_jobs_data, create_jobs).
FSYNC_THREADS = 32

Replicator = Callable[[str, bytes], None]
RenameReplicator = Callable[[list[tuple[str, str]]], None]
DrainReplicator = Callable[[bool], None]


class JobQueueError(Exception):
    """A job queue operation failed; the message says why and what to do."""


class QueueLockedError(JobQueueError):
    """Another process (or another store in this process) holds queue/lock."""


class QueueVersionError(JobQueueError):
    """queue/version holds a format this master does not understand."""


class JobNotFoundError(JobQueueError):
    """No live job file with that id."""


class JobNotFinalizedError(JobQueueError):
    """The job has not finished; it cannot be archived."""


class JobWriteError(JobQueueError):
    """A job file could not be written (disk full, permissions...)."""


class CorruptJobError(JobQueueError):
    """A job file cannot be read as a job."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"job file {path} is unusable: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class RecoveryReport:
    """What `JobQueueStore.recover_after_restart` found and did."""

    #: Jobs still queued (including partly run ones): to be scheduled again, by id.
    queued: list[Job] = field(default_factory=list)
    #: Jobs the stop caught waiting/canceling/running: now in error and rewritten.
    failed: list[Job] = field(default_factory=list)
    #: Live job files that could not be read; left in place.
    corrupt: list[CorruptJobError] = field(default_factory=list)


# Queues locked by stores of this process (POSIX locks do not exclude the own process).
_locked_queues: set[tuple[int, int]] = set()
_locked_queues_guard = threading.Lock()


def job_file_name(job_id: int) -> str:
    return f"job-{job_id}"


def archive_subdir(job_id: int) -> str:
    """The archive subdirectory name of a job: ``str(id // 10000)``."""
    return str(job_id // JOBS_PER_ARCHIVE_DIRECTORY)


def _job_ids_in(directory: str) -> list[int]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    ids = []
    for name in names:
        match = JOB_FILE_RE.match(name)
        if match:
            ids.append(int(match.group(1)))
    return ids


class JobQueueStore:
    """The on-disk job queue of the master (see the module docstring)."""

    def __init__(self, paths: Paths, replicate: Replicator | None = None,
                 rename_replicas: RenameReplicator | None = None,
                 replicate_drain: DrainReplicator | None = None) -> None:
        self.paths = paths
        self._replicate = replicate
        self._rename_replicas = rename_replicas
        self._replicate_drain = replicate_drain
        self._id_lock = threading.Lock()
        self._archive_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._lock_key: tuple[int, int] | None = None
        self._serial = 0
        #: Threads that write and fsync the files of one group commit at the same time.
        self._fsync_pool = ThreadPoolExecutor(max_workers=FSYNC_THREADS, thread_name_prefix="jobfsync")
        for directory in (self.queue_dir, self.archive_dir):
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        self._acquire_lock()
        try:
            self._check_version()
            self._remove_temp_files()
            self._serial = self._reconcile_serial()
        except BaseException:
            self.close()
            raise

    # -- paths ----------------------------------------------------------------
    @property
    def queue_dir(self) -> str:
        return self.paths.queue_dir

    @property
    def archive_dir(self) -> str:
        return self.paths.queue_archive_dir

    @property
    def serial_path(self) -> str:
        return os.path.join(self.queue_dir, "serial")

    @property
    def version_path(self) -> str:
        return os.path.join(self.queue_dir, "version")

    @property
    def lock_path(self) -> str:
        return os.path.join(self.queue_dir, "lock")

    @property
    def drain_path(self) -> str:
        return os.path.join(self.queue_dir, "drain")

    def job_path(self, job_id: int) -> str:
        return os.path.join(self.queue_dir, job_file_name(job_id))

    def archived_job_path(self, job_id: int) -> str:
        return os.path.join(self.archive_dir, archive_subdir(job_id), job_file_name(job_id))

    # -- opening and closing ----------------------------------------------------
    def _acquire_lock(self) -> None:
        st = os.stat(self.queue_dir)
        key = (st.st_dev, st.st_ino)
        with _locked_queues_guard:
            if key in _locked_queues:
                raise QueueLockedError(
                    f"Failed to obtain the job-queue lock {self.lock_path}: this process already has"
                    " the queue open (close the other JobQueueStore first)")
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EACCES, errno.EAGAIN):
                    raise QueueLockedError(
                        f"Failed to obtain the job-queue lock {self.lock_path}: another master daemon"
                        " (or Ganeti's luxid) is using this queue; stop it first") from err
                raise
            _locked_queues.add(key)
            self._lock_fd, self._lock_key = fd, key

    def close(self) -> None:
        """Release the queue lock. The store must not be used afterwards."""
        with _locked_queues_guard:
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None
            if self._lock_key is not None:
                _locked_queues.discard(self._lock_key)
                self._lock_key = None
        self._fsync_pool.shutdown(wait=True)

    @property
    def is_open(self) -> bool:
        return self._lock_fd is not None

    def __enter__(self) -> JobQueueStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _check_version(self) -> None:
        try:
            with open(self.version_path, "rb") as handle:
                content = handle.read()
        except FileNotFoundError:
            write_durably(self.version_path, f"{QUEUE_VERSION}\n".encode(), FILE_MODE)
            return
        text = content.decode("ascii", "replace").strip()
        if text != str(QUEUE_VERSION):
            raise QueueVersionError(
                f"{self.version_path} says the queue format is {text!r}; this master understands"
                f" only version {QUEUE_VERSION}. Move the queue directory away or fix the file.")

    def _remove_temp_files(self) -> None:
        removed = False
        for name in os.listdir(self.queue_dir):
            if is_temp_name(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.queue_dir, name))
                    removed = True
                log.info("removed %s, a temporary file left by an interrupted write", name)
        if removed:
            fsync_dir(self.queue_dir)

    def _highest_job_id_on_disk(self) -> int:
        highest = max(_job_ids_in(self.queue_dir), default=0)
        subdirs = [int(name) for name in os.listdir(self.archive_dir) if name.isdigit()]
        for subdir in sorted(subdirs, reverse=True):
            ids = _job_ids_in(os.path.join(self.archive_dir, str(subdir)))
            if ids:
                highest = max(highest, max(ids))
                break
        return highest

    def _reconcile_serial(self) -> int:
        serial: int | None = None
        try:
            with open(self.serial_path, "rb") as handle:
                text = handle.read().decode("ascii", "replace").strip()
            if text.isdigit():
                serial = int(text)
            else:
                log.warning("%s holds %r, not a job id; recomputing it from the job files",
                            self.serial_path, text)
        except FileNotFoundError:
            pass
        highest = self._highest_job_id_on_disk()
        if serial is None or serial < highest:
            if serial is not None:
                log.warning("%s says %d but job %d exists; continuing after %d",
                            self.serial_path, serial, highest, highest)
            serial = max(serial or 0, highest)
            self._write_serial(serial)
        return serial

    # -- ids and job files ----------------------------------------------------------
    def _write_serial(self, serial: int) -> bytes:
        data = f"{serial}\n".encode()
        write_durably(self.serial_path, data, FILE_MODE)
        return data

    @property
    def last_job_id(self) -> int:
        """The last id handed out (the serial)."""
        return self._serial

    def allocate_ids(self, count: int = 1) -> list[int]:
        """Reserve `count` new job ids; the serial is on disk before they are returned."""
        if count < 1:
            raise ValueError(f"cannot allocate {count} job ids")
        with self._id_lock:
            first = self._serial + 1
            last = self._serial + count
            data = self._write_serial(last)
            self._serial = last
            self._call_replicate(self.serial_path, data)
        return list(range(first, last + 1))

    def create_job(self, inputs: Sequence[Mapping[str, Any]], received: Timestamp | None = None) -> Job:
        """Allocate an id, build the job and write it durably (InvalidJobError, JobWriteError)."""
        result = self.create_jobs([inputs], received)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def create_jobs(self, batch: Sequence[Sequence[Mapping[str, Any]]],
                    received: Timestamp | None = None) -> list[Job | InvalidJobError | JobWriteError]:
        """SubmitManyJobs: the serial and every job of the batch written in one group commit.

        The serial naming the new ids and the job files are fsynced, renamed
        and made durable by one directory fsync together: after a crash any of
        them may be there, and the serial is raised to the highest job id on
        disk at open, so an id is never reused. A job that is invalid or
        cannot be written gives its InvalidJobError or JobWriteError in its
        place (its id stays used, as in Ganeti); relative dependencies resolve
        against each job's own id. If the serial cannot be written, its
        OSError is raised and no job of the batch is kept.
        """
        if not batch:
            return []
        received = received if received is not None else now_timestamp()
        results: list[Job | InvalidJobError | JobWriteError] = []
        built: list[tuple[int, Job]] = []
        with self._id_lock:
            first = self._serial + 1
            self._serial = last = self._serial + len(batch)  # used even if the writes fail
            for job_id, inputs in zip(range(first, last + 1), batch, strict=True):
                try:
                    job = Job.new(job_id, inputs, received)
                except InvalidJobError as err:
                    results.append(err)
                    continue
                built.append((len(results), job))
                results.append(job)
            serial = f"{last}\n".encode()
            files = [("serial", serial), *((job_file_name(job.id), job.to_json()) for _, job in built)]
            serial_error, *errors = write_many_durably(self.queue_dir, files, FILE_MODE, self._fsync_pool)
            if serial_error is not None:
                self._discard_files([job.id for (_, job), error in zip(built, errors, strict=True)
                                     if error is None])
                raise serial_error
            self._call_replicate(self.serial_path, serial)
        for (index, job), (name, data), error in zip(built, files[1:], errors, strict=True):
            if error is None:
                self._call_replicate(os.path.join(self.queue_dir, name), data)
            else:
                log.error("could not write job %d: %s", job.id, error)
                results[index] = JobWriteError(f"Could not write job {job.id} to {self.job_path(job.id)}:"
                                               f" {error.strerror or error}")
        return results

    def _discard_files(self, job_ids: Sequence[int]) -> None:
        """Remove job files written for a batch that failed as a whole (best effort)."""
        for job_id in job_ids:
            with contextlib.suppress(OSError):
                os.unlink(self.job_path(job_id))
        with contextlib.suppress(OSError):
            fsync_dir(self.queue_dir)

    def write_job(self, job: Job, replicate: bool = True) -> None:
        """Write the job file durably, then (unless `replicate` is false) replicate it."""
        path = self.job_path(job.id)
        data = job.to_json()
        write_durably(path, data, FILE_MODE)
        if replicate:
            self._call_replicate(path, data)

    def write_job_data(self, job_id: int, data: bytes, replicate: bool = True) -> None:
        """Like `write_job` with the job already serialized (``Job.to_json()``).

        Lets an asyncio caller serialize on its loop thread (a consistent
        snapshot) and do only the durable write in a worker thread.
        """
        path = self.job_path(job_id)
        write_durably(path, data, FILE_MODE)
        if replicate:
            self._call_replicate(path, data)

    def write_jobs_data(self, items: Sequence[tuple[int, bytes]],
                        replicate: bool = True) -> list[OSError | None]:
        """Group commit of serialized jobs (distinct ids): one directory fsync for all of them.

        Returns, in order, None for each job now durable (then replicated)
        or the OSError that kept its file as it was.
        """
        errors = write_many_durably(self.queue_dir, [(job_file_name(job_id), data) for job_id, data in items],
                                    FILE_MODE, self._fsync_pool)
        if replicate and self._replicate is not None:
            for (job_id, data), error in zip(items, errors, strict=True):
                if error is None:
                    self._call_replicate(self.job_path(job_id), data)
        return errors

    def _call_replicate(self, path: str, data: bytes) -> None:
        if self._replicate is None:
            return
        name = self.paths.virtualize(path)
        try:
            self._replicate(name, data)
        except Exception:  # replication failures are only logged, as in Ganeti
            log.exception("could not replicate %s to the master candidates", name)

    def _read_job(self, path: str, job_id: int) -> Job | None:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise CorruptJobError(path, f"cannot read it: {err.strerror}") from err
        try:
            job = Job.from_json(data)
        except JobFormatError as err:
            raise CorruptJobError(path, str(err)) from err
        if job.id != job_id:
            raise CorruptJobError(path, f"it holds job {job.id}, not job {job_id}")
        return job

    def load_job(self, job_id: int) -> Job | None:
        """The live job `job_id`, None if there is no such file; CorruptJobError if unreadable."""
        return self._read_job(self.job_path(job_id), job_id)

    def load_archived_job(self, job_id: int) -> Job | None:
        return self._read_job(self.archived_job_path(job_id), job_id)

    def job_status(self, job_id: int) -> str | None:
        """Status of a live or archived job, None when neither exists or is readable."""
        for loader in (self.load_job, self.load_archived_job):
            try:
                job = loader(job_id)
            except CorruptJobError as err:
                log.warning("%s", err)
                return None
            if job is not None:
                return job.status
        return None

    def live_job_ids(self) -> list[int]:
        return sorted(_job_ids_in(self.queue_dir))

    def load_all(self) -> tuple[list[Job], list[CorruptJobError]]:
        """Every live job by id, and the files that could not be read (each logged)."""
        jobs: list[Job] = []
        problems: list[CorruptJobError] = []
        for job_id in self.live_job_ids():
            try:
                job = self.load_job(job_id)
            except CorruptJobError as err:
                log.error("%s; leaving it in place", err)
                problems.append(err)
                continue
            if job is not None:
                jobs.append(job)
        return jobs, problems

    # -- archive -------------------------------------------------------------------
    def archive_job(self, job_id: int) -> None:
        """Move a finalized live job to archive/<id // 10000>/ and replicate the rename."""
        with self._archive_lock:
            job = self.load_job(job_id)
            if job is None:
                raise JobNotFoundError(f"Job {job_id} not found in the queue (already archived?)")
            if not job.is_finalized:
                raise JobNotFinalizedError(
                    f"Job {job_id} is {job.status}; only finished jobs can be archived")
            self._archive_files([job_id])

    def _archive_files(self, job_ids: Sequence[int]) -> list[int]:
        renames: list[tuple[str, str]] = []
        moved: list[int] = []
        touched_dirs: set[str] = set()
        new_subdir = False
        for job_id in job_ids:
            target_dir = os.path.join(self.archive_dir, archive_subdir(job_id))
            if not os.path.isdir(target_dir):
                os.makedirs(target_dir, mode=DIR_MODE, exist_ok=True)
                new_subdir = True
            source, target = self.job_path(job_id), self.archived_job_path(job_id)
            try:
                os.rename(source, target)
            except FileNotFoundError:
                log.warning("job %d disappeared before it could be archived", job_id)
                continue
            touched_dirs.add(target_dir)
            renames.append((source, target))
            moved.append(job_id)
        if not renames:
            return []
        if new_subdir:
            fsync_dir(self.archive_dir)
        for directory in [*sorted(touched_dirs), self.queue_dir]:
            fsync_dir(directory)
        if self._rename_replicas is not None:
            pairs = [(self.paths.virtualize(a), self.paths.virtualize(b)) for a, b in renames]
            try:
                self._rename_replicas(pairs)
            except Exception:
                log.exception("could not replicate the archiving of %d job(s)", len(pairs))
        return moved

    def autoarchive(self, age_seconds: float, timeout: float,
                    now: float | None = None) -> tuple[int, int]:
        """Archive finished jobs older than `age_seconds` (all finished jobs when it is < 0).

        A job's age counts from its end timestamp, else its start, else its
        reception. Jobs are checked in id order until `timeout` seconds
        have passed. Returns ``(archived, left_unchecked)``, the answer of
        LUXI AutoArchiveJobs.
        """
        now = time.time() if now is None else now
        deadline = time.monotonic() + timeout
        job_ids = self.live_job_ids()
        selected: list[int] = []
        checked = 0
        for job_id in job_ids:
            if time.monotonic() > deadline:
                break
            checked += 1
            try:
                job = self.load_job(job_id)
            except CorruptJobError as err:
                log.warning("%s; not archiving it", err)
                continue
            if job is None or not job.is_finalized:
                continue
            stamp = job.end_timestamp or job.start_timestamp or job.received_timestamp
            if age_seconds < 0 or (stamp is not None and now - stamp[0] > age_seconds):
                selected.append(job_id)
        with self._archive_lock:
            archived = self._archive_files(selected)
        return len(archived), len(job_ids) - checked

    # -- drain flag ---------------------------------------------------------------------
    def is_drained(self) -> bool:
        return os.path.exists(self.drain_path)

    def set_drained(self, drained: bool) -> None:
        """Create (True) or remove (False) queue/drain, durably, then replicate the flag. Idempotent.

        The flag is replicated even when it did not change here, so a
        candidate that missed an earlier change catches up (luxid does so).
        """
        if drained:
            if not self.is_drained():
                write_durably(self.drain_path, b"", DRAIN_MODE)
        else:
            try:
                os.unlink(self.drain_path)
            except FileNotFoundError:
                pass
            else:
                fsync_dir(self.queue_dir)
        if self._replicate_drain is not None:
            try:
                self._replicate_drain(drained)
            except Exception:  # replication failures are only logged, as in Ganeti
                log.exception("could not replicate the drain flag to the master candidates")

    # -- restart ---------------------------------------------------------------------------
    def recover_after_restart(self, now: Timestamp | None = None) -> RecoveryReport:
        """Apply the restart rule to every live unfinished job (model.Job.finalize_after_restart).

        Queued jobs are returned to be scheduled again; jobs caught waiting,
        canceling or running end in error and are rewritten and replicated.
        """
        now = now if now is not None else now_timestamp()
        report = RecoveryReport()
        jobs, report.corrupt = self.load_all()
        for job in jobs:
            if job.is_finalized:
                continue
            status = job.status
            if status == STATUS_QUEUED:
                report.queued.append(job)
            elif job.finalize_after_restart(now):
                self.write_job(job)
                report.failed.append(job)
                log.warning("job %d was %s when the master stopped; it is now in error",
                            job.id, status)
        return report
