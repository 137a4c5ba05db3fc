"""The LUXI door: an asyncio Unix-socket server in front of a `LuxiHandler`.

Interface::

    server = LuxiServer(handler, socket_path, alias_paths=[...], max_message_bytes=...)
    await server.start()          # binds every path (mode 0660), serves in the running loop
    ...
    await server.stop(grace=5.0)  # stops listening, finishes or answers in-flight requests,
                                  # removes the socket files it created

    LuxiServer.for_paths(handler, Paths.from_environ())  # $RUN_DIR/socket/ganeti-query + ganeti-master

Choices, and how they follow luxi-protocol.md:

* The 2.x path `ganeti-master` is a second *listening socket* served by the
  same handler, not a symlink: each path is an independent socket file with
  its own mode 0660, nothing depends on symlink resolution, and removing
  one never breaks the other.
* Each socket is bound, chmod'ed to `socket_mode` and only then put in
  listen state, so no client can connect while the mode is still the
  umask's. A leftover socket file whose server is gone is replaced; a live
  one (someone answers on it) or a non-socket file makes `start()` fail.
* Many connections are served concurrently (one asyncio task each); on one
  connection requests are answered one at a time, in order.
* Every framed request gets an answer and the connection stays open: parse
  errors, unknown methods and wrong argument shapes get the plain-string
  "Failed to parse request: ..." answer; handler errors their encoded
  Ganeti exception; a handler bug (any other exception, or a result that is
  not JSON) a GenericError naming the method. (luxid closes after a parse
  error; we keep serving, which the client handles the same way.)
* A message larger than `max_message_bytes` is answered with a parse error
  as soon as it passes the limit, even before its terminator arrives; its
  remaining bytes, up to the next 0x03, are read and dropped, so the
  real client (which sends the whole message before reading) gets the
  answer and can carry on with the connection.
* When the peer ends its side of the connection in the middle of a message
  (bytes without 0x03, then EOF), that incomplete message is answered with a
  parse error in case the peer still reads (shutdown(SHUT_WR)), then the
  connection is closed. That is the only place a connection closes after
  data without a regular answer: the peer has gone and nothing more can be
  framed for it.
* `stop(grace)`: idle connections (waiting for a request) are closed at once;
  a request being handled has `grace` seconds to finish and be answered;
  after that its handler is cancelled and the request is answered with
  GenericError("... shutting down ..."), never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from masterd.luxi.methods import LuxiHandler, dispatch
from masterd.luxi.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    GenericError,
    LuxiError,
    MessageSplitter,
    Oversized,
    RequestParseError,
    encode_failure,
    encode_success,
    parse_request,
)
from noded.paths import Paths

log = logging.getLogger("masterd.luxi")

#: Socket file names under $RUN_DIR/socket (pathutils.QUERY_SOCKET and MASTER_SOCKET).
QUERY_SOCKET_NAME = "ganeti-query"
MASTER_SOCKET_NAME = "ganeti-master"

#: Mode of the socket files (luxid: 0660, owner gnt-masterd, group gnt-daemons).
SOCKET_MODE = 0o660
#: Mode given to the socket directory when the server has to create it (ensure_dirs: 0770).
SOCKET_DIR_MODE = 0o770

#: Bytes read from a connection at a time.
READ_CHUNK = 64 * 1024

#: The longest path AF_UNIX accepts on Linux (sun_path is 108 bytes with the final NUL).
MAX_SOCKET_PATH_BYTES = 107


class LuxiServerError(Exception):
    """The server cannot start (socket path in use, too long, not a socket...)."""


def query_socket_path(paths: Paths) -> str:
    """$RUN_DIR/socket/ganeti-query, the socket every Ganeti 3.0 client uses."""
    return os.path.join(paths.socket_dir, QUERY_SOCKET_NAME)


def master_socket_path(paths: Paths) -> str:
    """$RUN_DIR/socket/ganeti-master, the Ganeti 2.x path, served as an alias."""
    return os.path.join(paths.socket_dir, MASTER_SOCKET_NAME)


@dataclass
class _Connection:
    task: asyncio.Task[Any]
    busy: bool = False


class LuxiServer:
    """Serves LUXI on `socket_path` and every alias path, dispatching to `handler`."""

    def __init__(self, handler: LuxiHandler, socket_path: str, alias_paths: Iterable[str] = (),
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, socket_mode: int = SOCKET_MODE) -> None:
        self.handler = handler
        self.socket_path = socket_path
        self.alias_paths = list(alias_paths)
        self.max_message_bytes = max_message_bytes
        self.socket_mode = socket_mode
        self._servers: list[asyncio.AbstractServer] = []
        self._bound: list[tuple[str, int, int]] = []  # (path, st_dev, st_ino) of the files we created
        self._connections: dict[int, _Connection] = {}
        self._stopping = False

    @classmethod
    def for_paths(cls, handler: LuxiHandler, paths: Paths, **kwargs: Any) -> LuxiServer:
        """The server on Ganeti's socket paths for this node (GANETI_ROOTDIR aware)."""
        return cls(handler, query_socket_path(paths), [master_socket_path(paths)], **kwargs)

    @property
    def paths(self) -> list[str]:
        return [self.socket_path, *self.alias_paths]

    # -- lifecycle ------------------------------------------------------

    async def start(self) -> None:
        if self._servers:
            raise LuxiServerError("the LUXI server is already started")
        self._stopping = False
        try:
            for path in self.paths:
                sock = self._bind(path)
                server = await asyncio.start_unix_server(self._serve_connection, sock=sock)
                self._servers.append(server)
                log.info("LUXI server listening on %s", path)
        except BaseException:
            await self.stop(grace=0)
            raise

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, end connections (see the module docstring) and remove our socket files."""
        self._stopping = True
        for server in self._servers:
            server.close()
        for conn in list(self._connections.values()):
            if not conn.busy:
                conn.task.cancel()
        tasks = [conn.task for conn in self._connections.values()]
        if tasks:
            if grace > 0:
                await asyncio.wait(tasks, timeout=grace)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._remove_socket_files()

    async def __aenter__(self) -> LuxiServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- sockets --------------------------------------------------------

    def _bind(self, path: str) -> socket.socket:
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            raise LuxiServerError(
                f"socket path {path} is {len(os.fsencode(path))} bytes long; AF_UNIX allows at most "
                f"{MAX_SOCKET_PATH_BYTES}: use a shorter GANETI_ROOTDIR")
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=SOCKET_DIR_MODE, exist_ok=True)
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            try:
                os.chmod(path, self.socket_mode)
                st = os.stat(path)
                self._bound.append((path, st.st_dev, st.st_ino))
                sock.listen(128)  # only now can clients connect, with the final mode
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _remove_socket_files(self) -> None:
        for path, dev, ino in self._bound:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) == (dev, ino):  # never remove a newer server's socket
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self._bound.clear()

    # -- connections ----------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Connection(task)
        self._connections[id(task)] = conn
        splitter = MessageSplitter(self.max_message_bytes)
        try:
            while not self._stopping:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    if splitter.pending:
                        await self._send(writer, encode_failure(RequestParseError(
                            f"connection closed in the middle of a message: {splitter.pending} bytes "
                            "without the 0x03 terminator")))
                    break
                for item in splitter.feed(chunk):
                    conn.busy = True
                    try:
                        reply = await self._answer_cancellable(item, writer)
                        await self._send(writer, reply)
                    finally:
                        conn.busy = False
        except (ConnectionError, BrokenPipeError):
            log.debug("LUXI client went away")
        finally:
            del self._connections[id(task)]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer_cancellable(self, item: bytes | Oversized, writer: asyncio.StreamWriter) -> bytes:
        """The answer to one message; if stop() cancels the handler, the request is still answered."""
        try:
            return await self._answer(item)
        except Exception:  # _answer already turns every error into an answer; this is the last net
            log.exception("LUXI server failed to answer a request")
            return encode_failure(GenericError("Internal error in the LUXI server"))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                writer.write(encode_failure(GenericError(
                    "The LUXI server is shutting down; the request was interrupted, resend it")))
            raise

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, reply: bytes) -> None:
        writer.write(reply)
        await writer.drain()

    async def _answer(self, item: bytes | Oversized) -> bytes:
        if isinstance(item, Oversized):
            log.warning("LUXI request refused: %s", item.describe())
            return encode_failure(RequestParseError(item.describe()))
        method = "(unparsed)"
        try:
            request = parse_request(item)
            method = request.method
            log.debug("LUXI request %s %.200r", method, request.args)
            result = await dispatch(self.handler, request)
        except LuxiError as err:
            log.debug("LUXI request %s failed: %s", method, err)
            return _encode_error(err)
        except Exception as err:
            log.exception("LUXI handler for %s failed", method)
            return encode_failure(GenericError(
                f"Internal error in LUXI method {method}: {type(err).__name__}: {err}"))
        try:
            return encode_success(result)
        except (TypeError, ValueError) as err:
            log.error("LUXI method %s returned a result that is not JSON: %s", method, err)
            return encode_failure(GenericError(
                f"Internal error in LUXI method {method}: the result cannot be sent as JSON: {err}"))


def _encode_error(err: LuxiError) -> bytes:
    try:
        return encode_failure(err)
    except (TypeError, ValueError):
        return encode_failure(GenericError(str(err)))


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on; refuse a live one or a file that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise LuxiServerError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise LuxiServerError(f"another server is already listening on {path}")
