"""ganeti-noded: the node daemon's command line, process life cycle and both doors.

    ganeti-noded [-f] [-d] [-p PORT] [-b ADDRESS] [-i INTERFACE] [--no-mlock]
                 [--syslog[=no|yes|only]] [--no-ssl] [-K SSL_KEY_FILE] [-C SSL_CERT_FILE]
                 [--max-clients N] [--grpc-port PORT] [--body-limit BYTES] [--allow-powercycle]

Without -f the daemon detaches; the starting process exits 0 once both doors
listen, or 1 with the reason. SIGTERM/SIGINT: stop accepting, let in-flight
calls finish, remove the pid file, exit 0. SIGHUP: reopen the log files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import importlib
import logging
import logging.handlers
import os
import pkgutil
import signal
import socket
import struct
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from noded.context import DEFAULT_GRPC_PORT, DEFAULT_NODED_PORT, NodeContext
from noded.paths import Paths, RootError
from noded.registry import Procedure, collect

log = logging.getLogger("noded")

DEFAULT_MAX_CLIENTS = 1024
LOG_FORMAT = "%(asctime)s: ganeti-noded pid=%(process)d %(levelname)s %(message)s"


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


# -- command line -----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganeti-noded",
        description="Ganeti node daemon (legacy JSON-over-HTTPS door and gRPC door).")
    p.add_argument("-f", "--foreground", action="store_true", help="don't detach from the terminal")
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    p.add_argument("-p", "--port", type=int, default=None,
                   help="legacy port (default: ganeti-noded in the services database, else 1811)")
    p.add_argument("-b", "--bind", dest="bind_address", default=None,
                   help="address to bind both doors to (default: all)")
    p.add_argument("-i", "--interface", default=None, help="bind to this interface's address")
    p.add_argument("--no-mlock", dest="mlock", action="store_false",
                   help="do not lock the daemon's memory (mlockall)")
    p.add_argument("--syslog", nargs="?", const="yes", default="no", choices=["no", "yes", "only"],
                   help="log to syslog as well (yes) or only (only)")
    p.add_argument("--no-ssl", dest="ssl", action="store_false", help="serve without TLS")
    p.add_argument("-K", "--ssl-key", dest="ssl_key", default=None, help="SSL key file")
    p.add_argument("-C", "--ssl-cert", dest="ssl_cert", default=None, help="SSL certificate file")
    p.add_argument("--max-clients", type=int, default=DEFAULT_MAX_CLIENTS,
                   help="most connections served at once; more wait (default %(default)s)")
    p.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT,
                   help="gRPC port (default %(default)s; 0 disables the gRPC door)")
    p.add_argument("--body-limit", type=int, default=128 * 1024 * 1024,
                   help="largest legacy request body in bytes (default %(default)s)")
    p.add_argument("--allow-powercycle", action="store_true",
                   help="let node_powercycle reboot this machine (refused otherwise)")
    return p


def services_port(path: str, name: str = "ganeti-noded") -> int | None:
    """The tcp port of `name` in a services database file, if listed."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and (fields[0] == name or name in fields[2:]):
                    port, _, proto = fields[1].partition("/")
                    if proto == "tcp" and port.isdigit():
                        return int(port)
    except OSError:
        return None
    return None


def interface_address(name: str) -> str:
    """The IPv4 address of a network interface."""
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15]))
        except OSError as err:
            raise StartupError(f"interface {name} has no IPv4 address: {err.strerror}") from err
    return socket.inet_ntoa(packed[20:24])


@dataclass
class Settings:
    paths: Paths
    foreground: bool
    debug: bool
    port: int
    grpc_port: int
    address: str
    mlock: bool
    syslog: str
    ssl: bool
    ssl_key: str
    ssl_cert: str
    max_clients: int
    body_limit: int
    allow_powercycle: bool


def settings_from_args(argv: list[str] | None) -> Settings:
    args = build_parser().parse_args(argv)
    try:
        paths = Paths.from_environ()
    except RootError as err:
        raise StartupError(str(err)) from err
    port = args.port
    if port is None:
        port = services_port(paths.services_file) if paths.root else None
        if port is None and not paths.root:
            try:
                port = socket.getservbyname("ganeti-noded", "tcp")
            except OSError:
                port = None
        port = port or DEFAULT_NODED_PORT
    if args.bind_address and args.interface:
        raise StartupError("use either -b or -i, not both")
    address = args.bind_address or (interface_address(args.interface) if args.interface else "0.0.0.0")
    if args.max_clients < 1:
        raise StartupError("--max-clients must be at least 1")
    return Settings(
        paths=paths, foreground=args.foreground, debug=args.debug, port=port,
        grpc_port=args.grpc_port, address=address, mlock=args.mlock, syslog=args.syslog,
        ssl=args.ssl, ssl_key=args.ssl_key or paths.server_cert,
        ssl_cert=args.ssl_cert or paths.server_cert, max_clients=args.max_clients,
        body_limit=args.body_limit, allow_powercycle=args.allow_powercycle)


# -- process plumbing --------------------------------------------------------------

class LogFiles:
    """The daemon's log handlers; `reopen` is what SIGHUP does."""

    def __init__(self, settings: Settings) -> None:
        self.file_handler: logging.FileHandler | None = None
        root = logging.getLogger()
        root.handlers.clear()
        root.setLevel(logging.DEBUG if settings.debug else logging.INFO)
        fmt = logging.Formatter(LOG_FORMAT)
        if settings.syslog != "only":
            os.makedirs(os.path.dirname(settings.paths.noded_log_file), exist_ok=True)
            self.file_handler = logging.FileHandler(settings.paths.noded_log_file, encoding="utf-8")
            self.file_handler.setFormatter(fmt)
            root.addHandler(self.file_handler)
        if settings.syslog in ("yes", "only"):
            try:
                sh = logging.handlers.SysLogHandler(address="/dev/log",
                                                    facility=logging.handlers.SysLogHandler.LOG_DAEMON)
                sh.setFormatter(logging.Formatter("ganeti-noded[%(process)d]: %(levelname)s %(message)s"))
                root.addHandler(sh)
            except OSError as err:
                log.warning("cannot log to syslog: %s", err)
        if settings.foreground:
            # As Ganeti: on the terminal only critical messages, everything with -d.
            eh = logging.StreamHandler(sys.stderr)
            eh.setLevel(logging.DEBUG if settings.debug else logging.CRITICAL)
            eh.setFormatter(fmt)
            root.addHandler(eh)

    def reopen(self) -> None:
        if self.file_handler is not None:
            self.file_handler.acquire()
            try:
                self.file_handler.close()
                self.file_handler.stream = self.file_handler._open()
            finally:
                self.file_handler.release()
        log.info("Reopening log files after receiving SIGHUP")


class PidFile:
    """$RUN_DIR/ganeti-noded.pid, locked while the daemon runs."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise StartupError(f"another ganeti-noded (pid {other or '?'}) is running for "
                                   f"this node: {self.path} is locked") from err
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


def lock_memory() -> None:
    """mlockall(MCL_CURRENT | MCL_FUTURE), with a clear warning when it fails."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    mcl_current, mcl_future = 1, 2
    if libc.mlockall(mcl_current | mcl_future) != 0:
        err = ctypes.get_errno()
        log.warning("Cannot lock memory (mlockall failed: %s); the node daemon may be swapped "
                    "out under memory pressure. Start it with --no-mlock to silence this.",
                    os.strerror(err))


@contextlib.contextmanager
def detached(foreground: bool) -> Iterator[Any]:
    """Run the body in a detached grandchild; the caller exits with its start-up status.

    Yields a `ready(error)` callable that the body calls once it listens (error
    None) or has failed (error message).
    """
    if foreground:
        yield lambda error=None: None
        return
    rfd, wfd = os.pipe()
    if os.fork() > 0:
        os.close(wfd)
        with os.fdopen(rfd, "rb") as r:
            msg = r.read().decode(errors="replace")
        if msg == "ok":
            os._exit(0)
        sys.stderr.write(f"ganeti-noded: {msg or 'the daemon exited during start-up'}\n")
        os._exit(1)
    os.close(rfd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o077)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    sent = False

    def ready(error: str | None = None) -> None:
        nonlocal sent
        if not sent:
            sent = True
            os.write(wfd, b"ok" if error is None else error.encode())
            os.close(wfd)
    try:
        yield ready
    finally:
        ready("the daemon exited during start-up")


def load_procedures() -> dict[str, Procedure]:
    """Every procedure implemented by the modules of noded.backends."""
    import noded.backends as pkg
    modules = [importlib.import_module(f"{pkg.__name__}.{m.name}")
               for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name)]
    return collect(modules)


def bind_socket(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: small TLS records must not wait for ACKs.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((address, port))
    except OSError as err:
        sock.close()
        raise StartupError(f"cannot bind the legacy door to {address}:{port}: {err.strerror}") from err
    sock.listen(1024)
    sock.setblocking(False)
    return sock


# -- the running daemon ---------------------------------------------------------------

async def serve(settings: Settings, ready: Any, logs: LogFiles, early_signal: list[int]) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from compat_jsonrpc.app import create_app
    from compat_jsonrpc.server import ConnectionLimiter, LegacyServer, protocol_class
    from noded.servicer import NodeServicer, add_to_grpc_server
    from noded.tls import ClientCertPolicy, ServerCredentials

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    def on_stop_signal(signum: int) -> None:
        log.info("Received signal %d asking for shutdown", signum)
        stop.set()

    def request_shutdown() -> None:
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, logs.reopen)
    if early_signal:
        log.info("Received signal %d asking for shutdown", early_signal[0])
        stop.set()
    ctx = NodeContext(
        paths=settings.paths, port=settings.port, grpc_port=settings.grpc_port,
        bind_address=settings.address, ssl=settings.ssl, allow_powercycle=settings.allow_powercycle,
        debug=settings.debug, request_shutdown=request_shutdown)
    executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="noded-call")
    node = NodeServicer(ctx, load_procedures(), executor)

    policy: ClientCertPolicy | None = None
    creds: ServerCredentials | None = None
    ssl_ctx = None
    if settings.ssl:
        creds = ServerCredentials(settings.paths, settings.ssl_key, settings.ssl_cert)
        creds.check_readable()
        ssl_ctx = creds.ssl_context()
        policy = ClientCertPolicy(settings.paths)

    sock = bind_socket(settings.address, settings.port)
    limiter = ConnectionLimiter(settings.max_clients)
    legacy = LegacyServer(create_app(node, settings.body_limit), sock, ssl_ctx,
                          protocol_class(policy, creds, limiter))

    grpc_server = None
    if settings.grpc_port:
        grpc_server = grpc.aio.server(
            maximum_concurrent_rpcs=settings.max_clients,
            options=[("grpc.so_reuseport", 0),
                     ("grpc.max_receive_message_length", settings.body_limit)])
        names = add_to_grpc_server(node, grpc_server, policy)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], grpc_server)
        target = f"[{settings.address}]:{settings.grpc_port}" if ":" in settings.address \
            else f"{settings.address}:{settings.grpc_port}"
        if creds is not None:
            key, cert, ca = creds.grpc_config()
            state = {"key": creds._files_key()}

            def fetch() -> Any:
                current = creds._files_key()
                if current == state["key"]:
                    return None
                state["key"] = current
                k, c, a = creds.grpc_config()
                return grpc.ssl_server_certificate_configuration([(k, c)], root_certificates=a)
            server_creds = grpc.dynamic_ssl_server_credentials(
                grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca),
                fetch, require_client_authentication=True)
            bound = grpc_server.add_secure_port(target, server_creds)
        else:
            bound = grpc_server.add_insecure_port(target)
        if not bound:
            raise StartupError(f"cannot bind the gRPC door to {target}")
        await grpc_server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    await legacy.start()
    log.info("ganeti-noded listening on %s:%d (legacy%s) and gRPC port %s", settings.address,
             settings.port, "" if settings.ssl else ", no TLS", settings.grpc_port or "disabled")
    ready(None)

    main_loop = asyncio.create_task(legacy.serve_until_stopped())
    await stop.wait()
    legacy.request_stop()
    await main_loop
    # Legacy calls in flight finish first (uvicorn waits for them); gRPC calls likewise.
    if grpc_server is not None:
        await asyncio.gather(legacy.shutdown(), _grpc_drain(grpc_server))
    else:
        await legacy.shutdown()
    executor.shutdown(wait=True)


async def _grpc_drain(server: Any) -> None:
    await server.stop(grace=3600)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from_args(argv)
    except StartupError as err:
        sys.stderr.write(f"ganeti-noded: {err}\n")
        return 1
    with detached(settings.foreground) as ready:
        # A stop asked for while starting is honoured once the doors are up.
        early_signal: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, _f: early_signal.append(s))
        pidfile = PidFile(settings.paths.noded_pid_file)
        try:
            settings.paths.ensure_dirs()
            logs = LogFiles(settings)
            if settings.debug:
                log.warning("ALERT: ganeti-noded started in debug mode. Private and secret "
                            "parameters WILL be logged!")
            pidfile.acquire()
            if settings.mlock:
                lock_memory()
            _init_node_state(settings.paths)
            run_event_loop(serve(settings, ready, logs, early_signal))
        except (StartupError, FileNotFoundError, OSError) as err:
            log.error("cannot start: %s", err)
            ready(str(err))
            if settings.foreground:
                sys.stderr.write(f"ganeti-noded: {err}\n")
            return 1
        except Exception as err:
            log.exception("ganeti-noded failed")
            ready(f"internal error: {type(err).__name__}: {err} (see {settings.paths.noded_log_file})")
            raise
        finally:
            pidfile.release()
    log.info("ganeti-noded stopped")
    return 0


def run_event_loop(main_coro: Any) -> None:
    """Run the coroutine on uvloop when it is installed (faster TLS and HTTP), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coro)
        return
    uvloop.run(main_coro)


def _init_node_state(paths: Paths) -> None:
    """Start-up chores of the real daemon: the job queue's version and serial files."""
    try:
        from noded.backends import jobqueue
    except ImportError:
        return
    init = getattr(jobqueue, "init_queue", None)
    if init is not None:
        try:
            init(paths)
        except OSError as err:
            log.warning("cannot initialise the job queue directory: %s", err)


if __name__ == "__main__":
    raise SystemExit(main())
