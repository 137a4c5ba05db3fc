"""Where a transfer's data comes from (export) or goes to (import).

- a raw device (Ganeti's "raw" I/O: `dd if=<dev> count=<size MiB>` /
  `dd of=<dev> conv=notrunc`): the export reads the disk's recorded size,
  the import writes from the start without truncating, and refuses data
  beyond the device's end where dd would grow a file disk;
- a file below the export directory ("file" I/O: `< file` / `> file`);
- an OS definition's export or import script ("script" I/O), run in the
  definition's directory with exactly the given environment; an export
  script may announce the data size on the descriptor `$EXP_SIZE_FD`.
"""

from __future__ import annotations

import abc
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping

from noded.impexp.common import BUFSIZE, MIB


class EndpointError(Exception):
    """Reading or writing the local side failed; the message says why."""


Note = Callable[[str], None]


class Source(abc.ABC):
    """Data to export."""

    #: Expected size in MiB, when known.
    expected_mib: int | None = None

    @abc.abstractmethod
    def chunks(self) -> Iterator[bytes]:
        """The data, in pieces of at most BUFSIZE bytes."""

    def close(self) -> None:
        """Release what the source holds (kill a script still running)."""
        return None


class Sink(abc.ABC):
    """Where imported data goes."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Append `data`."""

    @abc.abstractmethod
    def finish(self) -> None:
        """All data was written: make it durable (and wait for a script)."""

    def close(self) -> None:
        """Give up (kill a script still running)."""
        return None


# -- devices and files ------------------------------------------------------------------

class FileSource(Source):
    """A device or file read from its start; at most `limit_mib` MiB when given."""

    def __init__(self, path: str, limit_mib: int | None) -> None:
        self.path = path
        self.limit = None if limit_mib is None else limit_mib * MIB
        try:
            self._file = open(path, "rb", buffering=0)
        except OSError as err:
            raise EndpointError(f"Cannot open {path} for reading: {err.strerror}") from err
        if limit_mib is not None:
            self.expected_mib = limit_mib
        else:
            self.expected_mib = round(os.fstat(self._file.fileno()).st_size / MIB)

    def chunks(self) -> Iterator[bytes]:
        done = 0
        while self.limit is None or done < self.limit:
            want = BUFSIZE if self.limit is None else min(BUFSIZE, self.limit - done)
            try:
                data = self._file.read(want)
            except OSError as err:
                raise EndpointError(f"Reading {self.path} failed: {err.strerror}") from err
            if not data:
                return
            done += len(data)
            yield data

    def close(self) -> None:
        self._file.close()


class DeviceSink(Sink):
    """A device written from its start, never truncated nor grown past `size_mib` MiB."""

    def __init__(self, path: str, size_mib: int) -> None:
        self.path = path
        self.limit = size_mib * MIB
        self.offset = 0
        try:
            self._fd = os.open(path, os.O_WRONLY)
        except OSError as err:
            raise EndpointError(f"Cannot open the disk {path} for writing: {err.strerror}") from err

    def write(self, data: bytes) -> None:
        if self.offset + len(data) > self.limit:
            raise EndpointError(f"The received data is larger than the disk {self.path}"
                                f" ({self.limit // MIB} MiB): refusing to write past its end")
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self._fd, view, self.offset)
                view = view[n:]
                self.offset += n
        except OSError as err:
            raise EndpointError(f"Writing to the disk {self.path} failed: {err.strerror}") from err

    def finish(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as err:
            raise EndpointError(f"Cannot flush the disk {self.path}: {err.strerror}") from err

    def close(self) -> None:
        os.close(self._fd)


class FileSink(Sink):
    """A file below the export directory, created or truncated (the shell's `> file`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        except OSError as err:
            raise EndpointError(f"Cannot create {path}: {err.strerror}") from err

    def write(self, data: bytes) -> None:
        try:
            _write_all(self._fd, data)
        except OSError as err:
            raise EndpointError(f"Writing {self.path} failed: {err.strerror}") from err

    def finish(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as err:
            raise EndpointError(f"Cannot flush {self.path}: {err.strerror}") from err

    def close(self) -> None:
        os.close(self._fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- OS scripts --------------------------------------------------------------------------

def _start_script(script: str, cwd: str, env: Mapping[str, str], note: Note, stdin: int | None,
                  stdout: int | None, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    try:
        proc = subprocess.Popen([script], cwd=cwd, env=dict(env), stdin=stdin, stdout=stdout,
                                stderr=subprocess.PIPE, pass_fds=pass_fds, start_new_session=True)
    except OSError as err:
        raise EndpointError(f"Cannot run the OS script {script}: {err.strerror}") from err
    assert proc.stderr is not None
    stderr = proc.stderr

    def forward() -> None:
        for raw in stderr:
            note(raw.decode("utf-8", errors="replace").rstrip("\n"))

    threading.Thread(target=forward, name="script-stderr", daemon=True).start()
    return proc


def _check_exit(proc: subprocess.Popen[bytes], script: str) -> None:
    status = proc.wait()
    if status < 0:
        raise EndpointError(f"The OS script {script} was killed by signal {-status}")
    if status != 0:
        raise EndpointError(f"The OS script {script} failed with exit status {status} (its output is"
                            " in the recent output and the log file)")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()


class ScriptSource(Source):
    """The standard output of an OS export script."""

    def __init__(self, script: str, cwd: str, env: Mapping[str, str], note: Note) -> None:
        self.script = script
        size_read, size_write = os.pipe()
        env = {**env, "EXP_SIZE_FD": str(size_write)}
        try:
            self._proc = _start_script(script, cwd, env, note, subprocess.DEVNULL, subprocess.PIPE,
                                       (size_write,))
        finally:
            os.close(size_write)
        self._size_fd = size_read
        self._size_reader = threading.Thread(target=self._read_size, name="exp-size", daemon=True)
        self._size_reader.start()

    def _read_size(self) -> None:
        # The first line is the size in bytes; the script may keep the descriptor open.
        with open(self._size_fd, "rb") as f:
            text = f.readline().decode("ascii", errors="replace").strip()
        if text.isdigit():
            self.expected_mib = round(int(text) / MIB)

    def chunks(self) -> Iterator[bytes]:
        assert self._proc.stdout is not None
        while True:
            data = self._proc.stdout.read1(BUFSIZE)  # type: ignore[attr-defined]
            if not data:
                break
            yield data
        _check_exit(self._proc, self.script)
        self._size_reader.join(timeout=1.0)

    def close(self) -> None:
        _kill(self._proc)


class ScriptSink(Sink):
    """The standard input of an OS import script."""

    def __init__(self, script: str, cwd: str, env: Mapping[str, str], note: Note) -> None:
        self.script = script
        self._proc = _start_script(script, cwd, env, note, subprocess.PIPE, subprocess.DEVNULL)

    def write(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
        except BrokenPipeError as err:
            _check_exit(self._proc, self.script)
            raise EndpointError(f"The OS script {self.script} stopped reading its input") from err

    def finish(self) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        _check_exit(self._proc, self.script)

    def close(self) -> None:
        _kill(self._proc)
