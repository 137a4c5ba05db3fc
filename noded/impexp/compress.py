"""Compressing the stream on export and decompressing it on import, as Ganeti's pipelines do.

"gzip" and "gzip-fast" compress like `gzip -1`, "gzip-slow" like `gzip`
(level 6); these run in-process with zlib and make (and read) the gzip
format, so a Ganeti peer's `gzip -d` understands us and we understand its
`gzip -c`. "none" passes the bytes through. Any other name (Ganeti's
"lzop", or a tool from the cluster's compression_tools) is run as a filter
program: `<tool> -c` / `<tool> -d -c` for lzop, `<tool>` / `<tool> -d` for
the others, as Ganeti runs them.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import zlib
from collections.abc import Iterable, Iterator

from noded.impexp.common import (
    BUFSIZE,
    COMPRESS_GZIP_SLOW,
    COMPRESS_LZOP,
    COMPRESS_NONE,
    COMPRESS_TOOL_RE,
    GZIP_METHODS,
)


class CompressionError(Exception):
    """The stream cannot be (de)compressed; the message says why."""


def check_method(method: str) -> None:
    """Fail unless `method` can be used on this node (the program exists for a filter tool)."""
    if method == COMPRESS_NONE or method in GZIP_METHODS:
        return
    if not COMPRESS_TOOL_RE.match(method):
        raise CompressionError(f"Invalid compression method {method!r}: it must be 'none', 'gzip',"
                               " 'gzip-fast', 'gzip-slow', 'lzop' or the plain name of a program")
    if shutil.which(method) is None:
        raise CompressionError(f"Compression method {method!r} needs the program '{method}', which is not"
                               " installed on this node (not found in PATH)")


def compress(method: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The compressed form of the byte stream `chunks`."""
    if method == COMPRESS_NONE:
        yield from chunks
    elif method in GZIP_METHODS:
        level = 6 if method == COMPRESS_GZIP_SLOW else 1
        comp = zlib.compressobj(level, zlib.DEFLATED, 31)
        for chunk in chunks:
            out = comp.compress(chunk)
            if out:
                yield out
        yield comp.flush()
    else:
        argv = [method, "-c"] if method == COMPRESS_LZOP else [method]
        yield from _filter(argv, chunks)


def decompress(method: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The original bytes of the compressed stream `chunks`; CompressionError when it is cut short."""
    if method == COMPRESS_NONE:
        yield from chunks
    elif method in GZIP_METHODS:
        yield from _gunzip(chunks)
    else:
        argv = [method, "-d", "-c"] if method == COMPRESS_LZOP else [method, "-d"]
        yield from _filter(argv, chunks)


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    decomp = zlib.decompressobj(47)
    seen = False
    try:
        for chunk in chunks:
            while chunk:
                seen = True
                out = decomp.decompress(chunk)
                if out:
                    yield out
                if decomp.eof:
                    # Another gzip member may follow, as `gzip -d` accepts.
                    chunk = decomp.unused_data
                    decomp = zlib.decompressobj(47)
                    seen = bool(chunk)
                else:
                    chunk = b""
    except zlib.error as err:
        raise CompressionError(f"The received stream is not valid gzip data: {err}") from err
    if seen and not decomp.eof:
        raise CompressionError("The received gzip stream ends early: the sender stopped before the end")


def _filter(argv: list[str], chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Run `argv` with `chunks` on its standard input; its standard output, as it comes."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as err:
        raise CompressionError(f"Cannot run the compression program '{argv[0]}': {err.strerror}") from err
    assert proc.stdin and proc.stdout and proc.stderr
    failure: list[BaseException] = []

    def feed() -> None:
        assert proc.stdin
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
        except BaseException as err:  # handed over to the reading side
            failure.append(err)
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    feeder = threading.Thread(target=feed, name=f"{argv[0]}-feed", daemon=True)
    feeder.start()
    try:
        while True:
            data = proc.stdout.read1(BUFSIZE)  # type: ignore[attr-defined]
            if not data:
                break
            yield data
        feeder.join()
        status = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if failure:
        raise failure[0]
    if status != 0:
        err_text = proc.stderr.read().decode("utf-8", errors="replace").strip()
        raise CompressionError(f"'{' '.join(argv)}' failed with exit status {status}"
                               + (f": {err_text}" if err_text else ""))
