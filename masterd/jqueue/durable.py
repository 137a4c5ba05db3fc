"""Durable file replacement for the job queue: temp file, fsync, rename, fsync of the directory.

`write_durably` returns only once the new content and the rename are on
disk, so a file is either its old or its new content after any crash, never
a mix or empty. The temporary file lives in the same directory and is named
``.<name>.<unique>.tmp``; `is_temp_name` recognises leftovers of a crash.

`write_many_durably` is the group commit of several files of one directory:
every file is written to its temporary file and fsynced, then all are
renamed, then the directory is fsynced once. It returns only when all of
them are durable, so the same guarantee holds per file, for one directory
fsync instead of one per file (the file fsyncs also share the file system's
journal commits). A file that cannot be written gets its error in its
place and leaves the others alone.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Sequence
from concurrent.futures import Executor

TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
#: Temporary names are unique in this process (pid + counter); O_EXCL refuses a leftover of another.
_counter = itertools.count()


def fsync_dir(path: str) -> None:
    """Make the renames and unlinks done in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_path(directory: str, base: str) -> str:
    return os.path.join(directory, f"{TEMP_PREFIX}{base}.{os.getpid()}-{next(_counter)}{TEMP_SUFFIX}")


def _write_temp(directory: str, base: str, data: bytes, mode: int) -> str:
    """Write `data` into a new temporary file beside `base` and fsync it; its path."""
    while True:
        tmp = _temp_path(directory, base)
        try:
            fd = os.open(tmp, _OPEN_FLAGS, mode)
            break
        except FileExistsError:
            continue
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have masked bits of `mode` at creation
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_durably(path: str, data: bytes, mode: int = 0o640) -> None:
    """Replace `path` by `data` atomically and durably, with permissions `mode`."""
    directory, base = os.path.split(path)
    tmp = _write_temp(directory or ".", base, data, mode)
    try:
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory or ".")


def write_many_durably(directory: str, files: Sequence[tuple[str, bytes]], mode: int = 0o640,
                       executor: Executor | None = None) -> list[OSError | None]:
    """Replace the files ``(name, data)`` of `directory` atomically and durably, with one directory fsync.

    Returns, in order, None for each file now durable or the OSError that
    stopped it (that file keeps its old content). A failing directory fsync
    is every renamed file's error. Names must be distinct. With an
    `executor`, the files are written and fsynced by several of its threads
    at once (the disk and the file system's journal take the fsyncs
    together); the renames and the directory fsync follow once all are done.
    """
    def write_one(index: int) -> str | OSError:
        name, data = files[index]
        try:
            return _write_temp(directory, name, data, mode)
        except OSError as err:
            return err

    if executor is not None and len(files) > 1:
        written = list(executor.map(write_one, range(len(files))))
    else:
        written = [write_one(index) for index in range(len(files))]
    errors: list[OSError | None] = [None] * len(files)
    renamed: list[int] = []
    for index, outcome in enumerate(written):
        if isinstance(outcome, OSError):
            errors[index] = outcome
            continue
        try:
            os.rename(outcome, os.path.join(directory, files[index][0]))
            renamed.append(index)
        except OSError as err:
            errors[index] = err
            with contextlib.suppress(OSError):
                os.unlink(outcome)
    if renamed:
        try:
            fsync_dir(directory)
        except OSError as err:
            for index in renamed:
                errors[index] = err
    return errors


def is_temp_name(name: str) -> bool:
    """Whether `name` is a temporary file `write_durably` may have left behind."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)
