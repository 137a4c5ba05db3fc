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
import dataclasses
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
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from noded.context import DEFAULT_GRPC_PORT, DEFAULT_NODED_PORT, NodeContext
from noded.paths import Paths, RootError
from noded.registry import Procedure, collect

log = logging.getLogger("noded")

DEFAULT_MAX_CLIENTS = 1024
SYSLOG_SOCKET = "/dev/log"
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
    p.add_argument("--legacy-workers", type=int, default=None,
                   help="processes serving the legacy door (default: one per CPU, at most 4)")
    # Internal: how the main process starts its legacy door workers.
    p.add_argument("--legacy-worker-fd", dest="worker_fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", dest="ready_fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-max-clients", type=int, default=None, help=argparse.SUPPRESS)
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
    legacy_workers: int = 1
    worker_fd: int | None = None
    ready_fd: int | None = None
    worker_max_clients: int | None = None


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
    workers = args.legacy_workers
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    if workers < 1:
        raise StartupError("--legacy-workers must be at least 1")
    workers = min(workers, args.max_clients)
    return Settings(
        paths=paths, foreground=args.foreground, debug=args.debug, port=port,
        grpc_port=args.grpc_port, address=address, mlock=args.mlock, syslog=args.syslog,
        ssl=args.ssl, ssl_key=args.ssl_key or paths.server_cert,
        ssl_cert=args.ssl_cert or paths.server_cert, max_clients=args.max_clients,
        body_limit=args.body_limit, allow_powercycle=args.allow_powercycle,
        legacy_workers=workers, worker_fd=args.worker_fd, ready_fd=args.ready_fd,
        worker_max_clients=args.worker_max_clients)


# -- process plumbing --------------------------------------------------------------

class LogFiles:
    """The daemon's log handlers; `reopen` is what SIGHUP does."""

    def __init__(self, settings: Settings) -> None:
        self.file_handler: logging.FileHandler | None = None
        self.fast_access = False
        self._pid = os.getpid()
        self._stamp_sec = -1
        self._stamp = ""
        root = logging.getLogger()
        root.handlers.clear()
        root.setLevel(logging.DEBUG if settings.debug else logging.INFO)
        fmt = logging.Formatter(LOG_FORMAT)
        # Log records need neither the caller's source line nor thread names:
        # skipping those lookups makes the per-request log line cheap.
        logging._srcfile = None  # type: ignore[attr-defined]
        logging.logThreads = False
        logging.logMultiprocessing = False
        # gRPC's own debug chatter ("Loaded running loop", one line per call) is not ours.
        logging.getLogger("grpc").setLevel(logging.WARNING)
        syslog = settings.syslog
        syslog_problem = None
        if syslog != "no" and not os.path.exists(SYSLOG_SOCKET):
            # No syslog daemon: keep the log file rather than losing every message.
            syslog_problem = f"--syslog={syslog} asked for, but {SYSLOG_SOCKET} does not exist"
            syslog = "no"
        if syslog != "only":
            os.makedirs(os.path.dirname(settings.paths.noded_log_file), exist_ok=True)
            self.file_handler = logging.FileHandler(settings.paths.noded_log_file, encoding="utf-8")
            self.file_handler.setFormatter(fmt)
            root.addHandler(self.file_handler)
        if syslog in ("yes", "only"):
            try:
                sh = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET,
                                                    facility=logging.handlers.SysLogHandler.LOG_DAEMON)
                sh.setFormatter(logging.Formatter("ganeti-noded[%(process)d]: %(levelname)s %(message)s"))
                root.addHandler(sh)
            except OSError as err:
                syslog_problem = f"cannot log to syslog: {err}"
        self.fast_access = syslog == "no" and not (settings.foreground and settings.debug)
        if settings.foreground:
            # As Ganeti: on the terminal only critical messages, everything with -d.
            eh = logging.StreamHandler(sys.stderr)
            eh.setLevel(logging.DEBUG if settings.debug else logging.CRITICAL)
            eh.setFormatter(fmt)
            root.addHandler(eh)
        if syslog_problem:
            log.warning("%s; logging to %s instead", syslog_problem, settings.paths.noded_log_file)

    def access(self, line: str) -> None:
        """One access-log line at INFO, written straight to the log file when that is the only
        destination (a LogRecord per call costs more than the rest of a keep-alive call)."""
        h = self.file_handler
        if h is None or not self.fast_access:
            log.info("%s", line)
            return
        now = time.time()
        sec = int(now)
        if sec != self._stamp_sec:
            self._stamp_sec = sec
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec))
        text = f"{self._stamp},{int((now - sec) * 1000):03d}: ganeti-noded pid={self._pid} INFO {line}\n"
        h.acquire()
        try:
            stream = h.stream
            if stream is not None:
                stream.write(text)
                stream.flush()
        finally:
            h.release()

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
    """A daemon's pid file ($RUN_DIR/<daemon>.pid), locked while the daemon runs."""

    def __init__(self, path: str, daemon: str = "ganeti-noded") -> None:
        self.path = path
        self.daemon = daemon
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
                raise StartupError(f"another {self.daemon} (pid {other or '?'}) is running for "
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
def detached(foreground: bool, name: str = "ganeti-noded") -> Iterator[Any]:
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
        sys.stderr.write(f"{name}: {msg or 'the daemon exited during start-up'}\n")
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

class NodeProcess:
    """What one daemon process serves with: the servicer, the TLS rule, the legacy app."""

    def __init__(self, settings: Settings, logs: LogFiles, request_shutdown: Callable[[], None]) -> None:
        from noded.servicer import NodeServicer
        from noded.tls import ClientCertPolicy, ServerCredentials

        self.settings = settings
        self.logs = logs
        ctx = NodeContext(
            paths=settings.paths, port=settings.port, grpc_port=settings.grpc_port,
            bind_address=settings.address, ssl=settings.ssl,
            allow_powercycle=settings.allow_powercycle, debug=settings.debug,
            request_shutdown=request_shutdown)
        self.executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="noded-call")
        self.node = NodeServicer(ctx, load_procedures(), self.executor)
        self.policy: ClientCertPolicy | None = None
        self.creds: ServerCredentials | None = None
        if settings.ssl:
            self.creds = ServerCredentials(settings.paths, settings.ssl_key, settings.ssl_cert)
            self.creds.check_readable()
            self.policy = ClientCertPolicy(settings.paths)

    def legacy_server(self, sock: socket.socket, max_clients: int) -> Any:
        from compat_jsonrpc.app import create_app
        from compat_jsonrpc.server import ConnectionLimiter, LegacyServer, protocol_class
        ssl_ctx = self.creds.ssl_context() if self.creds is not None else None
        app = create_app(self.node, self.settings.body_limit, access_log=self.logs.access)
        return LegacyServer(app, sock, ssl_ctx,
                            protocol_class(self.policy, self.creds, ConnectionLimiter(max_clients)))

    async def start_grpc(self) -> Any:
        """Start the gRPC door (with health and reflection); returns the server."""
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        from noded.servicer import add_to_grpc_server
        settings = self.settings
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", settings.body_limit)])
        names = add_to_grpc_server(self.node, server, self.policy,
                                   asyncio.Semaphore(settings.max_clients))
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        host = f"[{settings.address}]" if ":" in settings.address else settings.address
        target = f"{host}:{settings.grpc_port}"
        creds = self.creds
        if creds is not None:
            key, cert, ca = creds.grpc_config()
            state = {"key": creds.files_key()}

            def fetch() -> Any:
                current = creds.files_key()
                if current == state["key"]:
                    return None
                state["key"] = current
                k, c, a = creds.grpc_config()
                return grpc.ssl_server_certificate_configuration([(k, c)], root_certificates=a)
            server_creds = grpc.dynamic_ssl_server_credentials(
                grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca),
                fetch, require_client_authentication=True)
            bound = server.add_secure_port(target, server_creds)
        else:
            bound = server.add_insecure_port(target)
        if not bound:
            raise StartupError(f"cannot bind the gRPC door to {target}")
        await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        return server


def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, logs: LogFiles,
                     early_signal: list[int]) -> None:
    def on_stop_signal(signum: int) -> None:
        log.info("Received signal %d asking for shutdown", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, logs.reopen)
    if early_signal:
        on_stop_signal(early_signal[0])


class LegacyWorkers:
    """Processes serving the legacy door on the daemon's listening socket.

    A TLS handshake per call makes the legacy door CPU-bound; several
    processes accepting on one socket use every core, as Ganeti's
    fork-per-connection daemon does. Each worker runs the same servicer code
    in-process (`python -m noded.daemon --legacy-worker-fd N`, exec'ed, so no
    state is shared by fork). A worker that dies unexpectedly is restarted.
    """

    def __init__(self, settings: Settings, argv: list[str], sock: socket.socket) -> None:
        self.settings = settings
        self.argv = argv
        self.sock = sock
        self.procs: list[Any] = []
        self.stopping = False

    def _launch(self) -> tuple[Any, int]:
        import subprocess
        rfd, wfd = os.pipe()
        limit = max(1, self.settings.max_clients // self.settings.legacy_workers)
        cmd = [sys.executable, "-m", "noded.daemon", *self.argv, "--legacy-worker-fd",
               str(self.sock.fileno()), "--ready-fd", str(wfd), "--worker-max-clients", str(limit)]
        proc = subprocess.Popen(cmd, pass_fds=(self.sock.fileno(), wfd), stdin=subprocess.DEVNULL)
        os.close(wfd)
        return proc, rfd

    @staticmethod
    def _await_ready(index: int, proc: Any, rfd: int) -> Any:
        with os.fdopen(rfd, "rb") as r:
            msg = r.read().decode(errors="replace")
        if msg != "ok":
            proc.wait()
            raise StartupError(f"legacy door worker {index} did not start: {msg or 'it exited'}")
        return proc

    def _spawn(self, index: int) -> Any:
        return self._await_ready(index, *self._launch())

    def start(self) -> None:
        launched = [self._launch() for _ in range(self.settings.legacy_workers)]
        try:
            for i, (proc, rfd) in enumerate(launched):
                self.procs.append(self._await_ready(i, proc, rfd))
        except StartupError:
            for proc, _ in launched:
                if proc.poll() is None:
                    proc.kill()
            raise

    async def supervise(self) -> None:
        """Restart workers that die while the daemon runs."""
        while not self.stopping:
            await asyncio.sleep(0.5)
            for i, proc in enumerate(self.procs):
                if not self.stopping and proc.poll() is not None:
                    log.error("legacy door worker %d (pid %d) exited with status %s; restarting it",
                              i, proc.pid, proc.returncode)
                    try:
                        self.procs[i] = await asyncio.to_thread(self._spawn, i)
                    except StartupError as err:
                        log.error("%s", err)

    async def stop(self) -> None:
        """SIGTERM every worker and wait: each lets its calls in flight finish."""
        self.stopping = True
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(lambda: [p.wait() for p in self.procs])

    def forward(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(sig)


async def serve(settings: Settings, ready: Callable[[str | None], None], logs: LogFiles,
                early_signal: list[int], argv: list[str]) -> None:
    """The main process: the gRPC door, and the legacy door (itself or through workers)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _stop_on_signals(loop, stop, logs, early_signal)
    def request_shutdown() -> None:
        loop.call_soon_threadsafe(stop.set)

    proc = NodeProcess(settings, logs, request_shutdown)
    sock = bind_socket(settings.address, settings.port)

    workers: LegacyWorkers | None = None
    legacy = None
    if settings.legacy_workers > 1:
        workers = LegacyWorkers(settings, argv, sock)
        await asyncio.to_thread(workers.start)
        def reopen_all() -> None:
            logs.reopen()
            if workers is not None:
                workers.forward(signal.SIGHUP)
        loop.add_signal_handler(signal.SIGHUP, reopen_all)
    else:
        legacy = proc.legacy_server(sock, settings.max_clients)
        await legacy.start()
    grpc_server = await proc.start_grpc() if settings.grpc_port else None
    log.info("ganeti-noded listening on %s:%d (legacy%s, %d process%s) and gRPC port %s",
             settings.address, settings.port, "" if settings.ssl else ", no TLS",
             max(1, settings.legacy_workers), "es" if settings.legacy_workers > 1 else "",
             settings.grpc_port or "disabled")
    ready(None)

    tasks = []
    if legacy is not None:
        tasks.append(asyncio.create_task(legacy.serve_until_stopped()))
    if workers is not None:
        tasks.append(asyncio.create_task(workers.supervise()))
    await stop.wait()
    # Stop accepting everywhere; calls in flight finish (uvicorn, workers and gRPC wait for them).
    if legacy is not None:
        legacy.request_stop()
    drains = []
    if workers is not None:
        drains.append(workers.stop())
    if legacy is not None:
        await tasks[0]
        drains.append(legacy.shutdown())
    if grpc_server is not None:
        drains.append(grpc_server.stop(grace=3600))
    await asyncio.gather(*drains)
    for t in tasks:
        t.cancel()
    proc.executor.shutdown(wait=True)


#: Seconds between a legacy door worker's checks that the node daemon that started it still runs.
ORPHAN_CHECK_INTERVAL = 0.5


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    """Stop the worker when its node daemon is gone (killed with SIGKILL, say): it must not keep the port."""
    while os.getppid() == parent:
        await asyncio.sleep(ORPHAN_CHECK_INTERVAL)
    log.warning("the node daemon (pid %d) is gone: this legacy door worker stops and frees the port", parent)
    stop.set()


async def serve_worker(settings: Settings, logs: LogFiles, ready_fd: int) -> None:
    """A legacy door worker: serves the inherited socket until SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _stop_on_signals(loop, stop, logs, [])
    parent = os.getppid()
    proc = NodeProcess(settings, logs, lambda: os.kill(parent, signal.SIGTERM))
    assert settings.worker_fd is not None
    sock = socket.socket(fileno=settings.worker_fd)
    sock.setblocking(False)
    legacy = proc.legacy_server(sock, settings.worker_max_clients or settings.max_clients)
    await legacy.start()
    os.write(ready_fd, b"ok")
    os.close(ready_fd)
    main_loop = asyncio.create_task(legacy.serve_until_stopped())
    orphan_watch = asyncio.create_task(_stop_when_orphaned(parent, stop))
    await stop.wait()
    orphan_watch.cancel()
    legacy.request_stop()
    await main_loop
    await legacy.shutdown()
    proc.executor.shutdown(wait=True)


def worker_main(settings: Settings, ready_fd: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C goes to the main process
    logs = LogFiles(dataclasses.replace(settings, foreground=False))
    if settings.mlock:
        lock_memory()
    try:
        run_event_loop(serve_worker(settings, logs, ready_fd))
    except Exception as err:
        log.exception("legacy door worker failed")
        with contextlib.suppress(OSError):
            os.write(ready_fd, f"{type(err).__name__}: {err}".encode())
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = settings_from_args(argv)
    except StartupError as err:
        sys.stderr.write(f"ganeti-noded: {err}\n")
        return 1
    if settings.worker_fd is not None and settings.ready_fd is not None:
        return worker_main(settings, settings.ready_fd)
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
            worker_argv = [a for a in argv if a not in ("-f", "--foreground")]
            run_event_loop(serve(settings, ready, logs, early_signal, worker_argv))
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
