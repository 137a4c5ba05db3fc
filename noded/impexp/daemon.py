"""The transfer daemon: `python -m noded.impexp.daemon <status file> {import|export} [options]`.

Options follow Ganeti's import-export daemon (--key, --cert, --ca, --bind,
--host, --port, --ipv4/--ipv6, --compress, --magic, --expected-size,
--connect-timeout, --connect-retries); where Ganeti passes shell snippets
(--cmd-prefix/--cmd-suffix) this one names the local side: --device PATH
--device-size MIB, --file PATH, or --script PATH --script-dir DIR
--script-env JSON-FILE. With --daemonize it detaches once its PID file
(--pid-file, locked while it runs) is written, logging to --log-file.

The outcome is in the status file: exit_status 0, or non-zero with an
error_message (-<signal> when stopped by a signal, as Ganeti reports it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import ssl
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from types import FrameType

from noded.impexp import channel, compress
from noded.impexp.common import (
    CONNECT_ATTEMPT_TIMEOUT,
    CONNECT_RETRIES,
    CUSTOM_SIZE,
    DEFAULT_CONNECT_TIMEOUT,
    MAGIC_PREFIX,
    MAGIC_RE,
    MODE_EXPORT,
    MODE_IMPORT,
    MODES,
    write_locked_pid,
)
from noded.impexp.endpoints import (
    DeviceSink,
    EndpointError,
    FileSink,
    FileSource,
    ScriptSink,
    ScriptSource,
    Sink,
    Source,
)
from noded.impexp.status import StatusFile

log = logging.getLogger("impexp")

#: Seconds between progress samples written to the status file (Ganeti's dd statistics come every 5 s).
PROGRESS_INTERVAL = 1.0


class Aborted(BaseException):
    """SIGTERM or SIGINT arrived: stop the transfer."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class TransferError(Exception):
    """The transfer failed; the message says why."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m noded.impexp.daemon",
                                     description="Stream one disk between two nodes over TLS.")
    parser.add_argument("status_file")
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--key", required=True, help="private key file")
    parser.add_argument("--cert", required=True, help="certificate file")
    parser.add_argument("--ca", required=True, help="the peer's CA certificate file")
    parser.add_argument("--bind", default="",
                        help="address an import listens on, or an export connects from (default: any)")
    parser.add_argument("--host", help="address of the import daemon (export)")
    parser.add_argument("--port", type=int, help="port to listen on (import, default any) or connect to")
    family = parser.add_mutually_exclusive_group()
    family.add_argument("--ipv4", action="store_true")
    family.add_argument("--ipv6", action="store_true")
    parser.add_argument("--compress", default="gzip")
    parser.add_argument("--magic")
    parser.add_argument("--expected-size", help="MiB, or 'fd' when an export script tells it")
    parser.add_argument("--connect-timeout", type=float, default=None)
    parser.add_argument("--connect-retries", type=int, default=0)
    parser.add_argument("--device", help="raw device to read (export) or write (import)")
    parser.add_argument("--device-size", type=int, help="size of --device in MiB")
    parser.add_argument("--file", help="file to read (export) or write (import)")
    parser.add_argument("--script", help="OS export/import script")
    parser.add_argument("--script-dir", help="the OS definition's directory")
    parser.add_argument("--script-env", help="JSON file with the script's environment")
    parser.add_argument("--daemonize", action="store_true")
    parser.add_argument("--pid-file")
    parser.add_argument("--log-file")
    args = parser.parse_args(argv)
    if args.magic is not None and not MAGIC_RE.match(args.magic):
        parser.error(f"--magic must match the regular expression {MAGIC_RE.pattern}")
    if args.mode == MODE_EXPORT and (not args.host or not args.port):
        parser.error("an export needs --host and --port")
    if sum(x is not None for x in (args.device, args.file, args.script)) != 1:
        parser.error("exactly one of --device, --file and --script is needed")
    if args.device is not None and args.device_size is None:
        parser.error("--device needs --device-size")
    if args.script is not None and not (args.script_dir and args.script_env):
        parser.error("--script needs --script-dir and --script-env")
    return args


# -- detaching ---------------------------------------------------------------------------

def daemonize(pid_file: str | None, log_file: str | None) -> int | None:
    """Fork; the parent exits once the child holds its PID file. Returns the PID file's fd (child)."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            answer = ready.read().decode("utf-8", errors="replace")
        if answer != "ok":
            sys.stderr.write(answer or "the transfer daemon exited while starting\n")
            os._exit(1)
        os._exit(0)
    os.close(ready_r)
    try:
        os.setsid()
        pid_fd = write_locked_pid(pid_file) if pid_file else None
        null = os.open(os.devnull, os.O_RDWR)
        out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_file else null
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
    except OSError as err:
        os.write(ready_w, f"cannot start the transfer daemon: {err}\n".encode())
        os._exit(1)
    os.write(ready_w, b"ok")
    os.close(ready_w)
    return pid_fd


# -- the transfer --------------------------------------------------------------------------

class Transfer:
    """One import or export, reporting to its status file."""

    def __init__(self, args: argparse.Namespace, status: StatusFile) -> None:
        self.args = args
        self.status = status
        self.magic = (MAGIC_PREFIX + args.magic).encode("ascii") if args.magic else b""
        self.done = 0
        self.expected: int | None = None
        if args.expected_size not in (None, CUSTOM_SIZE):
            self.expected = int(args.expected_size)
        self._last_progress = 0.0

    def note(self, line: str) -> None:
        log.info("%s", line)
        self.status.add_output(line)
        self.status.update()

    def _progress(self, amount: int, force: bool = False) -> None:
        self.done += amount
        now = time.monotonic()
        if force or now >= self._last_progress + PROGRESS_INTERVAL:
            self._last_progress = now
            self.status.set_progress(self.done, self.expected)
            self.status.update(force=True)

    def _script_env(self) -> dict[str, str]:
        with open(self.args.script_env, encoding="utf-8") as f:
            env = json.load(f)
        return {str(k): str(v) for k, v in env.items()}

    def run(self) -> None:
        try:
            compress.check_method(self.args.compress)
            if self.args.mode == MODE_IMPORT:
                self._import()
            else:
                self._export()
        except (channel.ChannelError, compress.CompressionError, EndpointError) as err:
            raise TransferError(str(err)) from err
        except ssl.SSLError as err:
            raise TransferError(f"TLS error: {err}") from err
        except OSError as err:
            raise TransferError(f"Connection error: {err.strerror or err}") from err

    # -- import ---------------------------------------------------------------------------

    def _sink(self) -> Sink:
        a = self.args
        if a.device is not None:
            return DeviceSink(a.device, a.device_size)
        if a.file is not None:
            return FileSink(a.file)
        return ScriptSink(a.script, a.script_dir, self._script_env(), self.note)

    def _import(self) -> None:
        a = self.args
        ctx = channel.tls_context(True, a.key, a.cert, a.ca)
        listener = channel.listen(a.bind, a.port or 0, a.ipv6)
        try:
            self.status.set_listen_port(listener.getsockname()[1])
            self.status.update(force=True)
            timeout = a.connect_timeout if a.connect_timeout is not None else DEFAULT_CONNECT_TIMEOUT
            conn = channel.accept(listener, ctx, timeout, self.note)
        finally:
            listener.close()
        ok = False
        try:
            self.status.set_connected()
            self._progress(0, force=True)
            sink = self._sink()
            try:
                data = compress.decompress(a.compress, _received(conn))
                for chunk in _checked_magic(data, self.magic):
                    sink.write(chunk)
                    self._progress(len(chunk))
                sink.finish()
            finally:
                sink.close()
            ok = True
            self._progress(0, force=True)
            try:
                conn.unwrap()
            except (OSError, ssl.SSLError, ValueError) as err:
                log.info("Closing the connection after the stream: %s", err)
        finally:
            if not ok:
                # Reset, so the sender learns the stream was not taken.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    # -- export ---------------------------------------------------------------------------

    def _source(self) -> Source:
        a = self.args
        if a.device is not None:
            return FileSource(a.device, a.device_size)
        if a.file is not None:
            return FileSource(a.file, None)
        return ScriptSource(a.script, a.script_dir, self._script_env(), self.note)

    def _payload(self, source: Source) -> Iterator[bytes]:
        if self.magic:
            yield self.magic
        for chunk in source.chunks():
            if self.expected is None and source.expected_mib is not None:
                self.expected = source.expected_mib
            self._progress(len(chunk))
            yield chunk

    def _export(self) -> None:
        a = self.args
        ctx = channel.tls_context(False, a.key, a.cert, a.ca)
        source = self._source()
        try:
            if self.expected is None and source.expected_mib is not None and a.expected_size != CUSTOM_SIZE:
                self.expected = source.expected_mib
            retries = a.connect_retries if a.connect_retries is not None else CONNECT_RETRIES
            attempt = a.connect_timeout if a.connect_timeout is not None else CONNECT_ATTEMPT_TIMEOUT
            conn = channel.connect(a.host, a.port, ctx, a.ipv6, retries, attempt, self.note, a.bind)
            try:
                self.status.set_connected()
                self._progress(0, force=True)
                try:
                    for piece in compress.compress(a.compress, self._payload(source)):
                        conn.sendall(piece)
                    if self.expected is None:
                        self.expected = source.expected_mib
                    self._progress(0, force=True)
                    conn.unwrap()
                except (ssl.SSLError, ConnectionError) as err:
                    raise TransferError(_refused(err)) from err
            finally:
                conn.close()
        finally:
            source.close()


def _refused(err: OSError) -> str:
    """Why the importing side ended the connection, as far as the exporting side can tell."""
    text = getattr(err, "reason", None) or err.strerror or str(err)
    if "ALERT" in str(text).upper():
        return (f"The importing node refused this node's certificate ({text}): it must be given this"
                " node's certificate as its CA")
    return (f"The importing node closed the connection before the end of the stream ({text}); its"
            " status tells why (this node's certificate refused, a wrong magic value, data not fitting"
            " the target, a failing script)")


def _received(conn: ssl.SSLSocket) -> Iterator[bytes]:
    """What the peer sends, until its TLS close_notify; an error when the connection just drops."""
    while True:
        try:
            data = conn.recv(1024 * 1024)
        except ssl.SSLEOFError as err:
            raise TransferError("The connection was closed before the end of the stream") from err
        if not data:
            return
        yield data


def _checked_magic(chunks: Iterable[bytes], magic: bytes) -> Iterator[bytes]:
    """The data after the magic string; TransferError when the stream does not start with it."""
    head = b""
    it = iter(chunks)
    if magic:
        for chunk in it:
            head += chunk
            if len(head) >= len(magic):
                break
        if head[:len(magic)] != magic:
            raise TransferError("Magic value mismatch: the stream received belongs to another transfer")
        head = head[len(magic):]
    if head:
        yield head
    yield from it


# -- main ----------------------------------------------------------------------------------

def _on_signal(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Aborted(signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.daemonize:
        daemonize(args.pid_file, args.log_file)
    elif args.pid_file:
        write_locked_pid(args.pid_file)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s: %(message)s")
    status = StatusFile(args.status_file)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log.info("Starting %s (status file %s)", args.mode, args.status_file)
    try:
        try:
            Transfer(args, status).run()
            status.set_exit_status(0, None)
        except Aborted as err:
            status.add_output(f"Stopped by signal {err.signum}")
            status.set_exit_status(-err.signum, f"Exited due to signal {err.signum}")
        except TransferError as err:
            log.error("%s", err)
            status.add_output(str(err))
            status.set_exit_status(1, str(err))
        except Exception as err:
            log.exception("Unhandled error")
            status.set_exit_status(1, f"Unhandled error occurred: {err}")
    except Aborted as err:
        status.set_exit_status(-err.signum, f"Exited due to signal {err.signum}")
    finally:
        status.update(force=True)
    log.info("Finished")
    return 0 if status.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
