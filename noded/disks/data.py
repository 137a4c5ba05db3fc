"""Writing data onto devices: zeroing a range, copying an image or another device (what Ganeti does
with dd, in 1 MiB blocks, without truncating the target)."""

from __future__ import annotations

import os

from noded.disks.base import MIB

_ZEROS = bytes(MIB)


def zero_range(path: str, offset_mib: int, size_mib: int) -> None:
    """Overwrite `size_mib` MiB of `path` with zeros, starting `offset_mib` MiB in. OSError on failure."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for block in range(size_mib):
            _write_all(fd, _ZEROS, (offset_mib + block) * MIB)
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_prefix(source: str, target: str, size_mib: int) -> int:
    """Copy at most `size_mib` MiB from the start of `source` onto the start of `target`.

    The target is not truncated. Returns the number of bytes copied. OSError on failure.
    """
    copied = 0
    with open(source, "rb") as src:
        fd = os.open(target, os.O_WRONLY)
        try:
            while copied < size_mib * MIB:
                chunk = src.read(min(MIB, size_mib * MIB - copied))
                if not chunk:
                    break
                _write_all(fd, chunk, copied)
                copied += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
    return copied


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
