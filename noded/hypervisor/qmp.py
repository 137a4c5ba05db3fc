"""A small client for QEMU's machine protocol (QMP) over a Unix socket.

One `QmpClient` is one short connection: it reads the greeting, enters
command mode (`qmp_capabilities`) and then runs commands one at a time,
skipping the asynchronous events QEMU interleaves with the answers (they are
kept in `events`). QEMU serves one client per monitor socket at a time; a
second client waits until the first one closes, so connections are kept
short and every read has a timeout.

Unix socket addresses are limited to 107 bytes, which the run directory of a
virtual node (GANETI_ROOTDIR below a test's temporary directory) easily
exceeds. `unix_path()` gives a short alias of any socket path, through the
process's own descriptor of the directory (`/proc/self/fd/N/name`), so
binding and connecting work wherever the run directory is.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

#: The longest path a sockaddr_un holds (108 bytes with the terminating NUL).
UNIX_PATH_MAX = 107
#: Seconds to wait for QEMU to accept or answer.
DEFAULT_TIMEOUT = 10.0


class QmpError(Exception):
    """QMP failed: no connection, a broken stream, or a command QEMU refused."""

    def __init__(self, message: str, error_class: str | None = None) -> None:
        super().__init__(message)
        #: QEMU's error class ("GenericError", "CommandNotFound"...) when QEMU refused a command.
        self.error_class = error_class


@contextlib.contextmanager
def unix_path(path: str) -> Iterator[str]:
    """A path to use in bind()/connect() for `path`, short enough for sockaddr_un.

    Short paths are used as they are; for long ones the directory is opened
    and the socket named through /proc/self/fd while the block runs.
    """
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        yield path
        return
    directory, name = os.path.split(path)
    dir_fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        alias = f"/proc/self/fd/{dir_fd}/{name}"
        if len(os.fsencode(alias)) > UNIX_PATH_MAX:
            raise OSError(f"socket name {name!r} is too long for a Unix socket")
        yield alias
    finally:
        os.close(dir_fd)


def listen_unix(path: str) -> socket.socket:
    """A listening Unix socket at `path` (an old socket file there is replaced).

    QEMU receives the descriptor (`-chardev socket,fd=N,server=on`), so the
    socket exists before QEMU starts and its path length does not matter.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_path(path) as address:
            sock.bind(address)
        sock.listen(4)
    except OSError:
        sock.close()
        raise
    return sock


def connect_unix(path: str, timeout: float = DEFAULT_TIMEOUT) -> socket.socket:
    """A stream connected to the Unix socket at `path`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with unix_path(path) as address:
            sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


class QmpClient:
    """One QMP session: `with QmpClient(path) as qmp: qmp.execute("query-status")`."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        #: QEMU's version as (major, minor, micro), from the greeting.
        self.version: tuple[int, int, int] = (0, 0, 0)
        self._sock: socket.socket | None = None
        self._buf = b""

    # -- connection --------------------------------------------------------
    def connect(self) -> QmpClient:
        try:
            self._sock = connect_unix(self.path, self.timeout)
        except OSError as err:
            raise QmpError(f"Cannot connect to the QMP socket {self.path}: {err}") from err
        greeting = self._read_message()
        qemu = greeting.get("QMP", {}).get("version", {}).get("qemu", {})
        if "QMP" not in greeting:
            self.close()
            raise QmpError(f"{self.path} did not greet with QMP: {greeting}")
        self.version = (int(qemu.get("major", 0)), int(qemu.get("minor", 0)), int(qemu.get("micro", 0)))
        self.execute("qmp_capabilities")
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> QmpClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- wire --------------------------------------------------------------
    def _read_message(self) -> dict[str, Any]:
        if self._sock is None:
            raise QmpError("QMP connection is closed")
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except OSError as err:  # includes socket.timeout
                raise QmpError(f"No answer on the QMP socket {self.path}: {err}") from err
            if not chunk:
                raise QmpError(f"QEMU closed the QMP socket {self.path}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError as err:
            raise QmpError(f"Invalid JSON on the QMP socket {self.path}: {line[:200]!r}") from err
        if not isinstance(message, dict):
            raise QmpError(f"Unexpected QMP message: {message!r}")
        return message

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                fds: list[int] | None = None) -> Any:
        """Run `command` and return its "return" value; QmpError when QEMU refuses it.

        `fds` are passed along with the command (SCM_RIGHTS), as `getfd` and
        `add-fd` expect.
        """
        if self._sock is None:
            raise QmpError("QMP connection is closed")
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        data = json.dumps(request).encode() + b"\n"
        try:
            if fds:
                socket.send_fds(self._sock, [data], fds)
            else:
                self._sock.sendall(data)
        except OSError as err:
            raise QmpError(f"Cannot send '{command}' to {self.path}: {err}") from err
        while True:
            message = self._read_message()
            if "event" in message:
                self.events.append(message)
                continue
            if "error" in message:
                error = message["error"]
                raise QmpError(f"QMP command '{command}' failed: {error.get('desc', error)}",
                               error.get("class"))
            if "return" in message:
                return message["return"]
            raise QmpError(f"Unexpected QMP answer to '{command}': {message}")

    def human(self, command_line: str) -> str:
        """Run a human monitor (HMP) command line through QMP and return its output."""
        result = self.execute("human-monitor-command", {"command-line": command_line})
        return str(result)
