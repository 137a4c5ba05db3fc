"""Job-queue files the master replicates to its candidates ($DATA_DIR/queue).

Every file name must lie below the queue directory (after mapping virtual
paths and normalising, so `..` cannot leave it). Each procedure runs under
an exclusive flock on queue/lock, waiting at most 10 s, as Ganeti's
_RequireJobQueueLock does. Writes are durable: temporary file, fsync,
rename, fsync of the directory.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from noded.backends.fileio import (
    decode_payload,
    exclusive_lock,
    fsync_dir,
    remove_file,
    try_exclusive_lock,
    write_file_atomic,
)
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths
from noded.registry import procedure

log = logging.getLogger(__name__)

#: Seconds to wait for queue/lock (QUEUE_LOCK_TIMEOUT in Ganeti's noded).
QUEUE_LOCK_TIMEOUT = 10.0
#: Mode of job files, version, serial and drain (constants.JOB_QUEUE_FILES_PERMS).
QUEUE_FILE_MODE = 0o640
#: Mode of directories jobqueue_rename creates (archive/<n>/).
QUEUE_DIR_MODE = 0o750
#: The queue format version (constants.JOB_QUEUE_VERSION).
QUEUE_VERSION = 1
#: Owner and group of queue files when they exist on this node (Ganeti's defaults).
QUEUE_USER = "gnt-masterd"
QUEUE_GROUP = "gnt-daemons"


def _lock_file(paths: Paths) -> str:
    return os.path.join(paths.queue_dir, "lock")


def _queue_owner() -> tuple[int, int]:
    """(uid, gid) for queue files: gnt-masterd:gnt-daemons when running as root and they exist."""
    if os.geteuid() != 0:
        return -1, -1
    try:
        uid = pwd.getpwnam(QUEUE_USER).pw_uid
    except KeyError:
        uid = -1
    try:
        gid = grp.getgrnam(QUEUE_GROUP).gr_gid
    except KeyError:
        gid = -1
    return uid, gid


def _queue_file(paths: Paths, file_name: object) -> str:
    """The local path of a queue file name sent by the master, refused if outside the queue."""
    if not isinstance(file_name, str):
        raise RpcFail(f"Invalid job queue file name {file_name!r}: expected a string")
    path = os.path.normpath(paths.localize(file_name))
    queue = os.path.normpath(paths.queue_dir)
    if not path.startswith(queue + os.sep):
        raise RpcFail(f"Passed job queue file '{path}' does not belong to the queue directory '{queue}'")
    if path == _lock_file(paths):
        raise RpcFail(f"Passed job queue file '{path}' is the queue lock and cannot be replaced")
    real_parent = os.path.realpath(os.path.dirname(path))
    real_queue = os.path.realpath(queue)
    if real_parent != real_queue and not real_parent.startswith(real_queue + os.sep):
        raise RpcFail(f"Passed job queue file '{path}' leaves the queue directory '{queue}'"
                      " through a symbolic link")
    return path


@contextmanager
def _queue_locked(paths: Paths) -> Iterator[None]:
    with exclusive_lock(_lock_file(paths), QUEUE_LOCK_TIMEOUT, "job queue"):
        yield


@procedure("jobqueue_update")
def jobqueue_update(ctx: NodeContext, file_name: object, content: object) -> None:
    """Replace one queue file (a job file, serial ...) with `content` ([enc, data]), mode 0640."""
    path = _queue_file(ctx.paths, file_name)
    data = decode_payload(content)
    uid, gid = _queue_owner()
    with _queue_locked(ctx.paths):
        if not os.path.isdir(os.path.dirname(path)):
            raise RpcFail(f"Cannot write job queue file {path}: its directory does not exist")
        write_file_atomic(path, data, mode=QUEUE_FILE_MODE, uid=uid, gid=gid)


def _clean_directory(path: str, keep: frozenset[str] = frozenset()) -> None:
    """Remove the visible regular files directly in `path` (Ganeti's _CleanDirectory)."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    removed = False
    for name in names:
        full = os.path.join(path, name)
        if name.startswith(".") or full in keep:
            continue
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            os.unlink(full)
            removed = True
    if removed:
        fsync_dir(path)


@procedure("jobqueue_purge")
def jobqueue_purge(ctx: NodeContext) -> None:
    """Delete the queue's files (except the lock) and the files directly in archive/.

    As in Ganeti, only regular files directly in queue/ and queue/archive/
    are removed; the archive's numbered subdirectories stay.
    """
    with _queue_locked(ctx.paths):
        _clean_directory(ctx.paths.queue_dir, keep=frozenset([_lock_file(ctx.paths)]))
        _clean_directory(ctx.paths.queue_archive_dir)


def _make_parent(path: str, uid: int, gid: int) -> None:
    parent = os.path.dirname(path)
    os.makedirs(parent, QUEUE_DIR_MODE, exist_ok=True)
    os.chmod(parent, QUEUE_DIR_MODE)
    if uid != -1 or gid != -1:
        os.chown(parent, uid, gid)
    fsync_dir(os.path.dirname(parent))


@procedure("jobqueue_rename")
def jobqueue_rename(ctx: NodeContext, renames: object) -> list[None]:
    """Rename queue files ([[old, new], ...]); returns one None per pair.

    The target's directory is created (mode 0750) when missing, as for
    archive/<n>/. Every pair is checked before the first rename.
    """
    if not isinstance(renames, list):
        raise RpcFail(f"jobqueue_rename expects a list of [old, new] pairs, got {type(renames).__name__}")
    pairs: list[tuple[str, str]] = []
    for pair in renames:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RpcFail(f"Invalid rename {pair!r}: expected [old, new]")
        pairs.append((_queue_file(ctx.paths, pair[0]), _queue_file(ctx.paths, pair[1])))
    uid, gid = _queue_owner()
    with _queue_locked(ctx.paths):
        for old, new in pairs:
            try:
                try:
                    os.rename(old, new)
                except FileNotFoundError:
                    if not os.path.lexists(old) or os.path.isdir(os.path.dirname(new)):
                        raise
                    _make_parent(new, uid, gid)
                    os.rename(old, new)
            except OSError as err:
                raise RpcFail(f"Cannot rename job queue file {old} to {new}: {err.strerror}") from err
            fsync_dir(os.path.dirname(new))
            if os.path.dirname(old) != os.path.dirname(new):
                fsync_dir(os.path.dirname(old))
    return [None for _ in pairs]


@procedure("jobqueue_set_drain_flag")
def jobqueue_set_drain_flag(ctx: NodeContext, flag: object) -> None:
    """Create (True) or remove (False) queue/drain, which stops new job submissions."""
    path = os.path.join(ctx.paths.queue_dir, "drain")
    uid, gid = _queue_owner()
    with _queue_locked(ctx.paths):
        if flag:
            write_file_atomic(path, b"", mode=QUEUE_FILE_MODE, uid=uid, gid=gid)
        else:
            remove_file(path)


def _read_number(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        log.warning("job queue file %s is not numeric: %r", path, text[:40])
        return None


def init_queue(paths: Paths) -> None:
    """Daemon start-up: create queue/version ("1\\n") and queue/serial ("0\\n") when missing.

    Like Ganeti's InitAndVerifyQueue(must_lock=False): done only when the
    queue lock is free (whoever holds it keeps the queue consistent).
    Raises OSError when the queue directory cannot be used.
    """
    os.makedirs(paths.queue_dir, mode=QUEUE_DIR_MODE, exist_ok=True)
    uid, gid = _queue_owner()
    with try_exclusive_lock(_lock_file(paths)) as held:
        if not held:
            log.info("job queue lock is held by another process; not checking the queue files")
            return
        version_file = os.path.join(paths.queue_dir, "version")
        serial_file = os.path.join(paths.queue_dir, "serial")
        if not os.path.exists(version_file):
            write_file_atomic(version_file, b"%d\n" % QUEUE_VERSION, mode=QUEUE_FILE_MODE, uid=uid, gid=gid)
        version = _read_number(version_file)
        if version != QUEUE_VERSION:
            log.warning("found job queue version %s in %s, expected %d", version, version_file,
                        QUEUE_VERSION)
        if not os.path.exists(serial_file):
            write_file_atomic(serial_file, b"0\n", mode=QUEUE_FILE_MODE, uid=uid, gid=gid)
