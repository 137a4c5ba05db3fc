"""ganeti-masterd: the master daemon's command line and process life cycle (DESIGN.md contract 3).

    ganeti-masterd [-f] [-d] [--no-voting [--yes-do-it]] [--max-running N] [--shutdown-grace S]
                   [--grpc-port PORT] [--grpc-bind ADDRESS] [--voting-retries N] [--voting-interval S]

* The node must be the master: ssconf_master_node must name this host
  (GANETI_HOSTNAME in a virtual cluster), else exit 11 (Ganeti's
  EXIT_NOTMASTER) with the reason.
* Then the voting (masterd.voting, Ganeti's rule): every node of
  ssconf_node_list, offline ones too, is asked its ssconf_master_node over
  its gRPC door (addresses from ssconf_node_primary_ips, ports from
  $DATA_DIR/node-grpc-ports); the daemon starts only when half plus one of
  the nodes name this node. A voting not final for want of answers is
  repeated (``--voting-retries``, default 6, ``--voting-interval`` seconds
  apart, default 10). A lost voting stops the start with "Failed to verify
  master status: ..." and exit status 1 (Ganeti's EXIT_FAILURE). A
  single-node cluster wins without asking. The voting runs in the daemon
  process (gRPC does not survive a fork), so a detached start waits for it.
* ``--no-voting`` skips the voting after asking for confirmation as
  Ganeti's masterd does (type uppercase YES, read from standard input; no
  answer, as with no terminal, aborts); ``--yes-do-it`` answers it for
  scripts.
* Without -f it detaches; the starting process exits 0 once the LUXI socket
  listens, or 1 with the reason (noded.daemon.detached). Pid file
  $RUN_DIR/ganeti-masterd.pid (locked while running: a second master on the
  same node refuses to start; so does one whose queue/lock is held), log
  $LOG_DIR/master-daemon.log (-d: debug level; with -f also on stderr).
* LUXI on $RUN_DIR/socket/ganeti-query, alias ganeti-master, mode 0660.
* gRPC (ganeti.master.v1, mutual TLS under the cluster certificate; see
  masterd.grpc_server) on the master's primary address (ssconf, or
  ``--grpc-bind``), TCP ``--grpc-port`` (default 1813; 0 disables it). A
  node without the cluster certificate ($DATA_DIR/server.pem, written by
  cluster init) serves LUXI only and says so in its log; with it, a door
  that cannot open (unknown address, port in use) stops the start.
* The cluster configuration: $DATA_DIR/config.data is loaded before the
  voting (masterd.confmgr; node addresses for every node RPC then come from
  its primary IPs); an unreadable or corrupt file stops the start with exit
  status 1. Without the file the master serves from ssconf only. Opcodes
  change it through the ConfigManager, which writes it and distributes it
  (config.data to the online candidates, ssconf to the online nodes).
* At start: the job queue's restart rule (jobs that were running or waiting
  end in error), then queued jobs run.
* Every job queue change is replicated to the other master candidates
  (masterd.replication: ssconf_master_candidates, in the background; a
  failing candidate is logged and never fails a job).
* SIGTERM / SIGINT: stop accepting connections (requests in flight get 2 s to
  be answered), start no new job, give running jobs `--shutdown-grace`
  seconds (default 10) to finish; those still running are left as they are
  on disk and end in error at the next start (the restart rule). The
  replication gets 5 s to send the last changes. Then the pid file is
  removed and the process exits 0. SIGHUP: nothing to do (the log file
  handler reopens a rotated file by itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.handlers
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from masterd import ssconf, voting
from masterd.config.model import ConfigError
from masterd.confmgr import ConfigManager
from masterd.engine import DEFAULT_MAX_RUNNING, JobEngine
from masterd.grpc_api import MasterApi
from masterd.grpc_server import (
    DEFAULT_GRPC_PORT,
    GrpcDoor,
    GrpcDoorError,
    MasterClientPolicy,
    bind_address,
    start_grpc_door,
)
from masterd.jqueue.store import JobQueueError, JobQueueStore
from masterd.luxi.server import LuxiServer, LuxiServerError
from masterd.luxi_handler import LuxiHandler
from masterd.replication import QueueReplicator
from masterd.rpc import NodeRpcClient
from noded.daemon import PidFile, StartupError, detached, run_event_loop
from noded.paths import Paths, RootError

log = logging.getLogger("masterd")

EXIT_FAILURE = 1
EXIT_NOTMASTER = 11
PID_FILE_NAME = "ganeti-masterd.pid"
LOG_FILE_NAME = "master-daemon.log"
LOG_FORMAT = "%(asctime)s: ganeti-masterd pid=%(process)d %(levelname)s %(message)s"
CONNECTION_GRACE = 2.0
#: Seconds the last job queue changes get to reach the master candidates at shutdown.
REPLICATION_GRACE = 5.0


class MasterStartupError(Exception):
    """The master daemon cannot start; `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Settings:
    paths: Paths
    foreground: bool
    debug: bool
    no_voting: bool
    yes_do_it: bool
    max_running: int
    shutdown_grace: float
    grpc_port: int = DEFAULT_GRPC_PORT
    grpc_bind: str | None = None
    voting_retries: int = voting.MASTER_VOTING_RETRIES
    voting_interval: float = voting.MASTER_VOTING_RETRY_INTERVAL

    @property
    def pid_file(self) -> str:
        return os.path.join(self.paths.run_dir, PID_FILE_NAME)

    @property
    def log_file(self) -> str:
        return os.path.join(self.paths.log_dir, LOG_FILE_NAME)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganeti-masterd", description="Ganeti master daemon")
    parser.add_argument("-f", "--foreground", action="store_true", help="don't detach from the terminal")
    parser.add_argument("-d", "--debug", action="store_true", help="log at debug level")
    parser.add_argument("--no-voting", action="store_true",
                        help="don't ask the other nodes whether this node is the master (dangerous;"
                             " asks for confirmation)")
    parser.add_argument("--yes-do-it", action="store_true",
                        help="answer --no-voting's confirmation question with yes (for scripts)")
    parser.add_argument("--max-running", type=int, default=DEFAULT_MAX_RUNNING,
                        help=f"jobs run at once (default {DEFAULT_MAX_RUNNING})")
    parser.add_argument("--shutdown-grace", type=float, default=10.0,
                        help="seconds running jobs get to finish at SIGTERM (default 10)")
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT,
                        help=f"TCP port of the gRPC master API (default {DEFAULT_GRPC_PORT}; 0 disables it)")
    parser.add_argument("--grpc-bind", metavar="ADDRESS", default=None,
                        help="address of the gRPC master API (default: the master's primary IP from"
                             " ssconf_node_primary_ips)")
    parser.add_argument("--voting-retries", type=int, default=voting.MASTER_VOTING_RETRIES,
                        help="times the start-up voting is repeated while nodes are missing"
                             f" (default {voting.MASTER_VOTING_RETRIES})")
    parser.add_argument("--voting-interval", type=float, default=voting.MASTER_VOTING_RETRY_INTERVAL,
                        help="seconds between two rounds of the start-up voting"
                             f" (default {voting.MASTER_VOTING_RETRY_INTERVAL:g})")
    return parser


def settings_from_args(argv: list[str]) -> Settings:
    args = build_parser().parse_args(argv)
    try:
        paths = Paths.from_environ()
    except RootError as err:
        raise MasterStartupError(str(err)) from err
    if args.max_running < 1:
        raise MasterStartupError("--max-running must be at least 1")
    if args.shutdown_grace < 0:
        raise MasterStartupError("--shutdown-grace must not be negative")
    if not 0 <= args.grpc_port <= 65535:
        raise MasterStartupError("--grpc-port must be a TCP port (1-65535), or 0 to disable the gRPC door")
    if args.voting_retries < 0:
        raise MasterStartupError("--voting-retries must not be negative")
    if args.voting_interval < 0:
        raise MasterStartupError("--voting-interval must not be negative")
    return Settings(paths=paths, foreground=args.foreground, debug=args.debug, no_voting=args.no_voting,
                    yes_do_it=args.yes_do_it, max_running=args.max_running,
                    shutdown_grace=args.shutdown_grace, grpc_port=args.grpc_port, grpc_bind=args.grpc_bind,
                    voting_retries=args.voting_retries, voting_interval=args.voting_interval)


def check_master(paths: Paths) -> str:
    """The master's name from ssconf when it is this node; MasterStartupError otherwise."""
    master = ssconf.master_node(paths)
    if master is None:
        raise MasterStartupError(
            f"{paths.ssconf_file('master_node')} is missing or empty: this node is not part of a"
            " cluster (or its ssconf files were not written)", EXIT_NOTMASTER)
    if master != paths.hostname:
        raise MasterStartupError(
            f"this node ({paths.hostname}) is not the master node: ssconf_master_node names {master};"
            f" start ganeti-masterd on {master}", EXIT_NOTMASTER)
    return master


async def check_votes(settings: Settings, rpc: NodeRpcClient) -> None:
    """The start-up voting (masterd.voting); MasterStartupError (exit 1) unless this node wins it."""
    paths = settings.paths
    nodes = ssconf.known_nodes(paths)
    if not voting.single_node(nodes, paths.hostname):
        log.info("master voting: asking %s", ", ".join(nodes))
    result = await voting.verify_master(nodes, rpc, paths.hostname, retries=settings.voting_retries,
                                        interval=settings.voting_interval)
    if result.won:
        return
    if result.outcome is voting.Outcome.LOST:
        hint = ("the majority of the nodes name another master in their ssconf_master_node: start"
                " ganeti-masterd on that node, or fix this node's ssconf")
    else:
        hint = "start the node daemons of the missing nodes, or check their addresses and ports"
    raise MasterStartupError(f"Failed to verify master status: {result.message}; {hint} (--no-voting"
                             " skips the voting, at the risk of two masters)", EXIT_FAILURE)


async def vote_unless_stopped(settings: Settings, rpc: NodeRpcClient, stop: asyncio.Event) -> None:
    """check_votes, abandoned (MasterStartupError) when SIGTERM or SIGINT comes first."""
    voting_task = asyncio.ensure_future(check_votes(settings, rpc))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({voting_task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not voting_task.done():
            voting_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await voting_task
    if voting_task.cancelled():
        raise MasterStartupError("stopped by a signal during the master voting")
    voting_task.result()


def confirm_no_voting(ask: Callable[[], str] | None = None) -> bool:
    """Ganeti's question for --no-voting; True when the answer is uppercase YES."""
    sys.stdout.write("The 'no voting' option has been selected.\n"
                     "This is dangerous, please confirm by typing uppercase 'yes': ")
    sys.stdout.flush()
    answer = ask() if ask is not None else sys.stdin.readline()
    return answer.strip() == "YES"


def setup_logging(settings: Settings) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.DEBUG if settings.debug else logging.INFO)
    fmt = logging.Formatter(LOG_FORMAT)
    os.makedirs(os.path.dirname(settings.log_file), exist_ok=True)
    handler = logging.handlers.WatchedFileHandler(settings.log_file, encoding="utf-8")
    handler.setFormatter(fmt)
    root.addHandler(handler)
    logging.getLogger("grpc").setLevel(logging.WARNING)
    if settings.foreground:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setLevel(logging.DEBUG if settings.debug else logging.CRITICAL)
        stderr.setFormatter(fmt)
        root.addHandler(stderr)


async def open_grpc_door(settings: Settings, handler: LuxiHandler, engine: JobEngine) -> GrpcDoor | None:
    """The gRPC door as the settings ask (None when disabled or the node has no cluster certificate)."""
    paths = settings.paths
    if not settings.grpc_port:
        log.info("gRPC door disabled (--grpc-port 0)")
        return None
    if not os.path.exists(paths.server_cert):
        log.warning("no cluster certificate %s: the gRPC door (mutual TLS) stays closed; LUXI only",
                    paths.server_cert)
        return None
    try:
        address = bind_address(paths, settings.grpc_bind)
        api = MasterApi(handler, engine, MasterClientPolicy(paths))
        return await start_grpc_door(api, paths, address, settings.grpc_port)
    except GrpcDoorError as err:
        raise MasterStartupError(str(err)) from err


async def serve(settings: Settings, ready: Callable[..., None], early_signal: list[int]) -> None:
    paths = settings.paths
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP received; nothing to reload"))
    rpc = NodeRpcClient(paths)
    config = ConfigManager(paths, rpc)
    try:
        await asyncio.to_thread(config.load)
    except ConfigError as err:
        await rpc.close()
        raise MasterStartupError(f"cannot load the cluster configuration: {err}") from err
    if not settings.no_voting:
        try:
            await vote_unless_stopped(settings, rpc, stop)
        except BaseException:
            await rpc.close()
            raise
    replicator = QueueReplicator(paths, rpc)
    try:
        store = await asyncio.to_thread(JobQueueStore, paths, replicator.replicate,
                                        replicator.rename_replicas, replicator.set_drain_flag)
    except (JobQueueError, OSError) as err:
        await rpc.close()
        raise MasterStartupError(f"cannot open the job queue in {paths.queue_dir}: {err}") from err
    candidates = replicator.candidates()
    log.info("job queue replicated to %s", ", ".join(candidates) if candidates
             else "no other node (ssconf_master_candidates names no other master candidate)")
    engine = JobEngine(store, paths, rpc, max_running=settings.max_running, config=config)
    server: LuxiServer | None = None
    door: GrpcDoor | None = None
    try:
        await engine.start()
        os.makedirs(paths.socket_dir, exist_ok=True)
        handler = LuxiHandler(engine, paths, config)
        server = LuxiServer.for_paths(handler, paths)
        try:
            await server.start()
        except (LuxiServerError, OSError) as err:
            raise MasterStartupError(f"cannot listen on {server.socket_path}: {err}") from err
        door = await open_grpc_door(settings, handler, engine)
        log.info("ganeti-masterd ready: LUXI on %s; gRPC %s", ", ".join(server.paths),
                 f"on {door.target}" if door is not None else "closed")
        ready()
        if early_signal:
            stop.set()
        await stop.wait()
        log.info("stopping: no new connections, no new jobs")
    finally:
        if door is not None:
            await door.stop(grace=CONNECTION_GRACE)
        if server is not None:
            await server.stop(grace=CONNECTION_GRACE)
        await engine.shutdown(settings.shutdown_grace)
        await replicator.close(REPLICATION_GRACE)
        await rpc.close()
        store.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = settings_from_args(argv)
        check_master(settings.paths)
    except MasterStartupError as err:
        sys.stderr.write(f"ganeti-masterd: {err}\n")
        return err.code
    if settings.no_voting and not settings.yes_do_it and not confirm_no_voting():
        sys.stderr.write("Aborting.\n")
        return EXIT_FAILURE
    with detached(settings.foreground, name="ganeti-masterd") as ready:
        early_signal: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, _f: early_signal.append(s))
        pidfile = PidFile(settings.pid_file, daemon="ganeti-masterd")
        try:
            setup_logging(settings)
            if settings.no_voting:
                log.warning("started with --no-voting: not asking the other nodes whether this node is"
                            " the master")
            try:
                pidfile.acquire()
            except StartupError as err:
                raise MasterStartupError(f"another ganeti-masterd is running on this node:"
                                         f" {settings.pid_file} is locked") from err
            run_event_loop(serve(settings, ready, early_signal))
        except (MasterStartupError, OSError) as err:
            log.error("cannot start: %s", err)
            ready(str(err))
            if settings.foreground:
                sys.stderr.write(f"ganeti-masterd: {err}\n")
            return err.code if isinstance(err, MasterStartupError) else EXIT_FAILURE
        except Exception as err:
            log.exception("ganeti-masterd failed")
            ready(f"internal error: {type(err).__name__}: {err} (see {settings.log_file})")
            raise
        finally:
            pidfile.release()
    log.info("ganeti-masterd stopped")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
