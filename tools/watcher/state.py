"""The watcher's files: per-group state, instance status files and the pause file.

Formats are those of Ganeti 3.0's watcher, so a state file written by one can
be read by the other:

``$DATA_DIR/watcher.<group uuid>.data``
    JSON (Ganeti's serializer: ``json.dumps`` defaults, newline at the end):
    ``{"instance": {name: {"restart_count": n, "restart_when": epoch,
    "cleanup_count": n, "cleanup_when": epoch}}, "node": {name: {"bootid": id}}}``.
    Locked exclusively (flock) while a group watcher runs; a second watcher
    for the same group gives up ("Can't acquire lock on state file ...").
    Instance records older than `RETRY_EXPIRATION` (8 h) are forgotten, so a
    failed instance gets `MAXTRIES` new attempts after that.
``$DATA_DIR/watcher.<group uuid>.instance-status``
    ``"<name> <status>"`` lines sorted by name, no newline after the last.
``$RUN_DIR/instance-status``
    All groups' files merged (the newest file wins per instance), written
    under an exclusive lock taken with a 10 s timeout.
``$DATA_DIR/watcher.pause``
    ``"<epoch>\\n"``: paused until then. A file that is not an integer is
    removed; one more than an hour past its end is removed too.

Interface::

    WatcherState.open(path) -> WatcherState | None (None: locked by another watcher)
    state.restart_attempts(name) / cleanup_attempts(name) / record_restart(name) /
    record_cleanup(name) / forget(name) / maintain(existing_names) /
    boot_id(node) / set_boot_id(node, bootid) / save() / close()
    write_instance_status(path, [(name, status)]) ; read_instance_status(path)
    merge_instance_status(global_path, per_group_paths)
    read_pause(path, now=None) -> int | None   (the pause end if the watcher is paused now)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger("ganeti-watcher")

#: Seconds after the last restart attempt when an instance's record is forgotten.
RETRY_EXPIRATION = 8 * 3600
#: Seconds to wait for the lock of the merged instance status file.
INSTANCE_STATUS_LOCK_TIMEOUT = 10.0
#: Seconds past its end after which the pause file is removed.
PAUSE_REMOVE_AFTER = 3600

KEY_CLEANUP_COUNT = "cleanup_count"
KEY_CLEANUP_WHEN = "cleanup_when"
KEY_RESTART_COUNT = "restart_count"
KEY_RESTART_WHEN = "restart_when"
KEY_BOOT_ID = "bootid"


def dump_json(data: Any) -> str:
    """Ganeti's serializer.DumpJson: json.dumps defaults, no trailing spaces, a final newline."""
    text = "\n".join(line.rstrip(" \t") for line in json.dumps(data).split("\n"))
    return text if text.endswith("\n") else text + "\n"


def _write_atomically(path: str, data: str, lock: bool = False) -> int | None:
    """Write `data` to a temporary file next to `path` and rename it over `path`.

    With `lock`, the new file is locked (flock, exclusive) before the rename and
    its descriptor is returned open, so the lock is held on the new file.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        if lock:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, data.encode("utf-8"))
        os.fsync(fd)
        os.fchmod(fd, 0o644)
        os.rename(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if lock:
        return fd
    os.close(fd)
    return None


class WatcherState:
    """One group's state file, opened and locked; see the module docstring."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        raw = b""
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            raw = b"".join(chunks)
        data: Any = {}
        if raw:
            try:
                data = json.loads(raw.decode("utf-8"))
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            except ValueError as err:
                log.warning("Invalid state file. Using defaults. Error message: %s", err)
                data = {}
        for key in ("instance", "node"):
            if not isinstance(data.get(key), dict):
                data[key] = {}
        self.data: dict[str, Any] = data
        self._original = dump_json(data)

    @classmethod
    def open(cls, path: str) -> WatcherState | None:
        """Open (creating) and lock the state file; None if another process holds its lock."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            log.error("Can't acquire lock on state file %s: %s", path, err)
            return None
        return cls(path, fd)

    # -- instances --------------------------------------------------------------
    @property
    def instances(self) -> dict[str, dict[str, Any]]:
        return self.data["instance"]  # type: ignore[no-any-return]

    def restart_attempts(self, name: str) -> int:
        return int(self.instances.get(name, {}).get(KEY_RESTART_COUNT, 0))

    def cleanup_attempts(self, name: str) -> int:
        return int(self.instances.get(name, {}).get(KEY_CLEANUP_COUNT, 0))

    def _record(self, name: str, key_when: str, key_count: str) -> None:
        record = self.instances.setdefault(name, {})
        record[key_when] = time.time()
        record[key_count] = int(record.get(key_count, 0)) + 1

    def record_restart(self, name: str) -> None:
        self._record(name, KEY_RESTART_WHEN, KEY_RESTART_COUNT)

    def record_cleanup(self, name: str) -> None:
        self._record(name, KEY_CLEANUP_WHEN, KEY_CLEANUP_COUNT)

    def forget(self, name: str) -> None:
        """The instance runs (or was cleaned up): drop its record."""
        self.instances.pop(name, None)

    def maintain(self, existing: Iterable[str], now: float | None = None) -> None:
        """Forget instances that no longer exist and records older than RETRY_EXPIRATION."""
        records = self.instances
        for name in set(records) - set(existing):
            log.debug("Forgetting obsolete instance %s", name)
            del records[name]
        earliest = (time.time() if now is None else now) - RETRY_EXPIRATION
        for name in [n for n, rec in records.items() if rec.get(KEY_RESTART_WHEN, 0) < earliest]:
            log.debug("Expiring record for instance %s", name)
            del records[name]

    # -- nodes --------------------------------------------------------------------
    def boot_id(self, node: str) -> str | None:
        value = self.data["node"].get(node, {}).get(KEY_BOOT_ID)
        return None if value is None else str(value)

    def set_boot_id(self, node: str, bootid: str) -> None:
        self.data["node"].setdefault(node, {})[KEY_BOOT_ID] = bootid

    # -- file -----------------------------------------------------------------------
    def save(self) -> None:
        """Write the state if it changed (else touch the file), keeping the lock."""
        if self._fd is None:
            raise ValueError("state file already closed")
        text = dump_json(self.data)
        if text == self._original:
            log.debug("Data didn't change, just touching status file")
            os.utime(self.path, None)
            return
        fd = _write_atomically(self.path, text, lock=True)
        assert fd is not None
        os.close(self._fd)
        self._fd = fd
        self._original = text

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


# -- instance status files ----------------------------------------------------------------
def write_instance_status(path: str, entries: Iterable[tuple[str, str]]) -> None:
    """Write "<name> <status>" lines, sorted, without a final newline."""
    rows = sorted(entries)
    log.debug("Updating instance status file '%s' with %s instances", path, len(rows))
    _write_atomically(path, "\n".join(f"{name} {status}" for name, status in rows))


def read_instance_status(path: str) -> tuple[float | None, list[list[str]]]:
    """(mtime, [[name, status], ...]) of a status file; (None, []) when it cannot be read."""
    log.debug("Reading per-group instance status from '%s'", path)
    try:
        with open(path, encoding="utf-8") as handle:
            mtime = os.fstat(handle.fileno()).st_mtime
            content = handle.read()
    except OSError as err:
        if err.errno == errno.ENOENT:
            log.error("Can't read '%s', does not exist (yet)", path)
        else:
            log.error("Unable to read '%s', ignoring: %s", path, err)
        return None, []
    return mtime, [line.split(None, 1) for line in content.splitlines() if line.strip()]


def merge_instance_status(global_path: str, group_paths: Sequence[str]) -> bool:
    """Merge the groups' status files into `global_path` (newest file wins); False if not locked."""
    os.makedirs(os.path.dirname(global_path), exist_ok=True)
    fd = os.open(global_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + INSTANCE_STATUS_LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if time.monotonic() >= deadline:
                    log.error("Can't acquire lock on instance status file '%s', not updating: %s",
                              global_path, err)
                    return False
                time.sleep(0.1)
        log.debug("Acquired exclusive lock on '%s'", global_path)
        seen: dict[str, list[tuple[float, str]]] = {}
        for path in group_paths:
            mtime, rows = read_instance_status(path)
            if mtime is None:
                continue
            for row in rows:
                if len(row) == 2:
                    seen.setdefault(row[0], []).append((mtime, row[1]))
        merged = [(name, max(values)[1]) for name, values in seen.items()]
        # Written in place: the lock belongs to this file, a renamed one would not be locked.
        text = "\n".join(f"{name} {status}" for name, status in sorted(merged))
        log.debug("Updating instance status file '%s' with %s instances", global_path, len(merged))
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, text.encode("utf-8"))
        return True
    finally:
        os.close(fd)


# -- pause ------------------------------------------------------------------------------------
def read_pause(path: str, now: float | None = None, remove_after: int = PAUSE_REMOVE_AFTER) -> int | None:
    """The pause end when the watcher is paused at `now`, else None (Ganeti's ReadWatcherPauseFile).

    A file that does not hold an integer is removed (with a warning), and so
    is one whose end is more than `remove_after` seconds past.
    """
    now = time.time() if now is None else now
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    try:
        until = int(text)
    except ValueError:
        log.warning("Watcher pause file (%s) contains invalid value, removing it", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return None
    if now > until + remove_after:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return None
    if now > until:
        return None
    return until
