"""Durable file writes, advisory locks and RPC payload decoding for the backends.

Every file a procedure writes is replaced atomically: the new content goes
to a temporary file in the same directory, which is fsync'ed, given its
mode, owner and times, renamed over the target, and the directory is
fsync'ed so the rename survives a crash (what Ganeti's utils.WriteFile does,
plus the directory sync).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import os
import tempfile
import time
import zlib
from collections.abc import Iterator
from typing import Any

from noded.errors import RpcFail

#: ED_COMPRESS encodings (Ganeti's RPC_ENCODING_NONE / RPC_ENCODING_ZLIB_BASE64).
ENCODING_NONE = 0
ENCODING_ZLIB_BASE64 = 1


def decode_payload(data: Any) -> bytes:
    """The bytes of an ED_COMPRESS payload `[encoding, content]`.

    Encoding 0 carries the text as it is, 1 carries base64(zlib(bytes)).
    """
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        raise RpcFail(f"Invalid file content: expected [encoding, data], got {type(data).__name__}")
    encoding, content = data
    if not isinstance(content, str):
        raise RpcFail(f"Invalid file content: data must be a string, got {type(content).__name__}")
    if encoding == ENCODING_NONE and not isinstance(encoding, bool):
        return content.encode("utf-8")
    if encoding == ENCODING_ZLIB_BASE64 and not isinstance(encoding, bool):
        try:
            return zlib.decompress(base64.b64decode(content, validate=True))
        except (binascii.Error, zlib.error) as err:
            raise RpcFail(f"Invalid file content: cannot decode base64/zlib data: {err}") from err
    raise RpcFail(f"Unknown data encoding {encoding!r} (expected 0 for text or 1 for zlib+base64)")


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: str, data: bytes, *, mode: int = 0o600, uid: int = -1, gid: int = -1,
                      times: tuple[float, float] | None = None) -> None:
    """Replace `path` with `data` atomically and durably.

    `mode` is applied exactly (no umask); `uid`/`gid` of -1 keep the
    writer's; `times` is (atime, mtime) or None for "now".
    """
    directory, base = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".new", dir=directory)
    try:
        try:
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if times is not None:
            os.utime(tmp, times)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def remove_file(path: str) -> bool:
    """Remove a file durably; a missing file is fine. Returns whether it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(os.path.dirname(path))
    return True


@contextlib.contextmanager
def exclusive_lock(path: str, timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive flock(2) on `path` (created if missing, mode 0640).

    flock is what Ganeti's utils.FileLock uses, so the lock also excludes
    the real Ganeti tools working on the same files. Gives up after
    `timeout` seconds with an RpcFail naming `what`.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as err:
        raise RpcFail(f"Cannot open the {what} lock file {path}: {err.strerror}") from err
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RpcFail(f"Cannot lock {path}: {err.strerror}") from err
            if time.monotonic() >= deadline:
                raise RpcFail(
                    f"Could not get the {what} lock ({path}) within {timeout:g} s:"
                    " another process is holding it")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_exclusive_lock(path: str) -> Iterator[bool]:
    """Try once to lock `path` exclusively; yields whether the lock is held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
