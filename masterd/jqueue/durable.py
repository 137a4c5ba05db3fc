"""Durable file replacement for the job queue: temp file, fsync, rename, fsync of the directory.

`write_durably` returns only once the new content and the rename are on
disk, so a file is either its old or its new content after any crash, never
a mix or empty. The temporary file lives in the same directory and is named
``.<name>.<random>.tmp``; `is_temp_name` recognises leftovers of a crash.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"


def fsync_dir(path: str) -> None:
    """Make the renames and unlinks done in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str, data: bytes, mode: int = 0o640) -> None:
    """Replace `path` by `data` atomically and durably, with permissions `mode`."""
    directory, base = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{base}.", suffix=TEMP_SUFFIX, dir=directory)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory or ".")


def is_temp_name(name: str) -> bool:
    """Whether `name` is a temporary file `write_durably` may have left behind."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)
