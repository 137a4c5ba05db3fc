"""ganeti-watcher: restart instances that should run, archive old jobs (Ganeti 3.0's watcher).

Run from cron (once, the default) or as a loop (`--interval SECONDS`, our
extension: one run every that many seconds until SIGTERM/SIGINT). One run:

1. If the watcher is paused (``$DATA_DIR/watcher.pause`` holds an end in the
   future; `gnt-cluster watcher pause <time>`), exit 0 at once, unless
   ``--ignore-pause``.
2. Take ``$LOCK_DIR/ganeti-watcher.lock`` shared (non-blocking: an exclusive
   holder makes the run end with exit 0 and an error in the log).
3. Run the executable hooks in ``$CONF_DIR/hooks/watcher/`` (names of
   ``[a-zA-Z0-9_-]`` only, in name order; results logged).
4. Connect to the master's LUXI socket. Not the master (or no cluster):
   exit 0 quietly, as Ganeti. On the master: check ``master_node``
   (QueryConfigValues) is this node, archive jobs older than ``--job-age``
   (AutoArchiveJobs, default 6 hours), then start one child process per node
   group (fork, one second apart) and wait for them (``--wait-children``, the
   default; ``--no-wait-children`` returns at once).
5. A group's child (also runnable alone with ``--node-group UUID``): lock the
   state file ``$DATA_DIR/watcher.<uuid>.data``; query locks, the group's
   instances (name, status, admin_state, admin_state_source, disks_active,
   snodes, pnode.group.uuid, snodes.group.uuid, disk_template) and nodes
   (name, bootid, offline); write ``$DATA_DIR/watcher.<uuid>.instance-status``
   and merge all groups' files into ``$RUN_DIR/instance-status``; then for
   each instance:

   * status ``ERROR_down`` (admin up, not running): submit OP_INSTANCE_STARTUP
     (force false, reason ``gnt:watcher`` "Restarting instance X") and wait
     for it, at most MAXTRIES (5) times; the sixth time log "Could not restart
     instance 'X' after 5 attempts, giving up" and stop trying. The counts
     live in the state file and expire 8 hours after the last attempt.
   * status ``USER_down`` with admin state not down (the user shut it down
     inside the guest): OP_INSTANCE_SHUTDOWN with admin_state_source "user",
     unless the instance is locked, at most MAXTRIES times.
   * any other status: forget its record ("Restart of instance 'X' succeeded"
     when it had one and its node is not down or offline).

   Nodes whose boot ID changed since the last run get OP_INSTANCE_ACTIVATE_DISKS
   for the instances that have them as secondary (DRBD), and unless
   ``--no-verify-disks`` (or only ext instances) OP_GROUP_VERIFY_DISKS runs and
   the instances it names get their disks activated. The state file is saved
   at the end of a successful run.

Job feedback of the restart, cleanup and disk activation jobs is printed on
stdout like Ganeti's (cron mails it); the log goes to
``$LOG_DIR/watcher.log`` and, with ``-d``, also to stderr.

Exit codes: 0 success, paused, not the master, or another watcher holds the
lock; 1 a failure (logged); 11 the master changed during the run; 12 a name
cannot be resolved.

Deliberate differences from Ganeti 3.0: the node side does not restart daemons
(our daemons are started with arguments the watcher does not know) nor run
node maintenance (``maintain_node_health``), and RAPI/WConfD are not probed;
``--rapi-ip`` is accepted and unused. A failing verify-disks step is logged
and does not keep the state file from being saved, so restart attempts are
still counted.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from noded.context import RELEASE_VERSION
from noded.paths import Paths
from tools.gnt.errors import GanetiError
from tools.gnt.jobs import StdioReporter, make_opcode, poll_job
from tools.gnt.luxi_client import LuxiClient
from tools.gnt.output import parse_timespec
from tools.watcher import state as wstate

log = logging.getLogger("ganeti-watcher")

MAXTRIES = 5
#: Instance statuses the watcher repairs by starting the instance.
BAD_STATES = frozenset({"ERROR_down"})
#: Statuses the watcher cannot help (the primary node is down or offline).
HELPLESS_STATES = frozenset({"ERROR_nodedown", "ERROR_nodeoffline"})
USERDOWN = "USER_down"
ADMINST_DOWN = "down"
USER_SOURCE = "user"
DT_EXT = "ext"
#: The reason source of the watcher's opcodes (constants.OPCODE_REASON_SRC_WATCHER).
REASON_SOURCE = "gnt:watcher"
OP_PRIO_LOW = 10
#: Seconds between starting the children of two node groups.
CHILD_PROCESS_DELAY = 1.0
DEFAULT_JOB_AGE = 6 * 3600

EXIT_SUCCESS = 0
EXIT_FAILURE = 1
EXIT_NOTMASTER = 11
EXIT_NODESETUP_ERROR = 12

UUID_RE = re.compile(r"^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$")
HOOK_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
HOOKS_NAME = "watcher"
LOCK_FILE_NAME = "ganeti-watcher.lock"
LOG_FILE_NAME = "watcher.log"


class NotMasterError(Exception):
    """This node is not the master (the watcher then has nothing to do here)."""


# -- paths ---------------------------------------------------------------------------------------
def state_file(paths: Paths, group_uuid: str) -> str:
    return os.path.join(paths.data_dir, f"watcher.{group_uuid}.data")


def group_status_file(paths: Paths, group_uuid: str) -> str:
    return os.path.join(paths.data_dir, f"watcher.{group_uuid}.instance-status")


def instance_status_file(paths: Paths) -> str:
    return os.path.join(paths.run_dir, "instance-status")


def lock_file(paths: Paths) -> str:
    return os.path.join(paths.lock_dir, LOCK_FILE_NAME)


# -- options and logging -----------------------------------------------------------------------
def _timespec(value: str) -> int:
    try:
        return parse_timespec(value)
    except GanetiError as err:
        raise argparse.ArgumentTypeError(str(err.args[0] if err.args else err)) from None


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid interval {value!r}: not a number of seconds") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"invalid interval {value!r}: must be more than 0 seconds")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganeti-watcher", description="Ganeti cluster watcher",
                                     usage="%(prog)s [-d]")
    parser.add_argument("--version", action="version", version=f"%(prog)s (ganeti) {RELEASE_VERSION}")
    parser.add_argument("-d", "--debug", action="count", default=0, help="Increase debugging level")
    parser.add_argument("-g", "--node-group", dest="nodegroup", default=None, metavar="<nodegroup>",
                        help="Node group (uuid): run only this group's watcher")
    parser.add_argument("-A", "--job-age", dest="job_age", type=_timespec, default=DEFAULT_JOB_AGE,
                        help="Autoarchive jobs older than this age (default 6 hours)")
    parser.add_argument("--ignore-pause", dest="ignore_pause", action="store_true", default=False,
                        help="Ignore cluster pause setting")
    parser.add_argument("--wait-children", dest="wait_children", action="store_true", default=True,
                        help="Wait for child processes")
    parser.add_argument("--no-wait-children", dest="wait_children", action="store_false",
                        help="Don't wait for child processes")
    parser.add_argument("--no-verify-disks", dest="no_verify_disks", action="store_true", default=False,
                        help="Do not verify disk status")
    parser.add_argument("--rapi-ip", dest="rapi_ip", default="127.0.0.1",
                        help="Use this IP to talk to RAPI (accepted for compatibility; not used)")
    parser.add_argument("--interval", dest="interval", type=_interval, default=None, metavar="SECONDS",
                        help="Run again every SECONDS seconds until terminated (default: run once, "
                             "as from cron)")
    return parser


def parse_options(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    opts, rest = parser.parse_known_args(list(argv))
    if rest:
        parser.error("No arguments expected")
    return opts


def setup_logging(paths: Paths, debug: int) -> None:
    """$LOG_DIR/watcher.log (INFO, or DEBUG with -d), and stderr with -d (Ganeti's SetupLogging)."""
    program = "ganeti-watcher"
    detail = " %(module)s:%(lineno)s" if debug else ""
    formatter = logging.Formatter(f"%(asctime)s: {program} pid=%(process)d{detail} %(levelname)s %(message)s")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if debug:
        to_stderr = logging.StreamHandler(sys.stderr)
        to_stderr.setFormatter(formatter)
        root.addHandler(to_stderr)
    try:
        os.makedirs(paths.log_dir, exist_ok=True)
        to_file = logging.FileHandler(os.path.join(paths.log_dir, LOG_FILE_NAME))
    except OSError as err:
        if not debug:
            errors_only = logging.StreamHandler(sys.stderr)
            errors_only.setLevel(logging.ERROR)
            errors_only.setFormatter(formatter)
            root.addHandler(errors_only)
        log.error("Cannot open the log file: %s", err)
        return
    to_file.setFormatter(formatter)
    root.addHandler(to_file)


# -- the cluster's view --------------------------------------------------------------------------
@dataclass
class Instance:
    name: str
    status: str
    admin_state: str
    admin_state_source: str | None = None
    disks_active: bool = False
    snodes: list[str] = field(default_factory=list)
    disk_template: str | None = None

    def needs_cleanup(self) -> bool:
        """Shut down by the user inside the guest while the configuration wants it up."""
        return self.status == USERDOWN and self.admin_state != ADMINST_DOWN


@dataclass
class Node:
    name: str
    bootid: str | None
    offline: bool
    secondaries: set[str] = field(default_factory=set)


def _reason(text: str) -> list[list[Any]]:
    return [[REASON_SOURCE, text, time.time_ns()]]


class LogReporter:
    """Job feedback into the log at DEBUG (Ganeti's feedback_fn=logging.debug)."""

    def log_message(self, job_id: Any, serial: int, timestamp: Any, log_type: str, message: Any) -> None:
        log.debug("%s", message)

    def not_changed(self, job_id: Any, status: str | None) -> None:
        pass


def submit_and_wait(client: LuxiClient, ops: list[dict[str, Any]],
                    quiet: bool = False) -> tuple[Any, list[Any]]:
    """Submit one job and follow it to its end; (job id, per-opcode results) or the job's error."""
    job_id = client.submit_job(ops)
    reporter = LogReporter() if quiet else StdioReporter()
    return job_id, poll_job(client, job_id, reporter)


def get_client(paths: Paths) -> LuxiClient:
    """The master's LUXI client; NotMasterError where Ganeti's GetClient says this is not the master."""
    try:
        return LuxiClient(paths=paths)
    except GanetiError as err:
        if err.is_a("OpPrereqError"):
            raise NotMasterError(f"Not on master node ({err})") from None
        raise


def check_master(client: LuxiClient, paths: Paths) -> None:
    (master,) = client.query_config_values(["master_node"])
    if master != paths.hostname:
        raise NotMasterError("This is not the master node")


def archive_jobs(client: LuxiClient, age: int) -> None:
    archived, left = client.auto_archive_jobs(age)
    log.debug("Archived %s jobs, left %s", archived, left)


def known_groups(paths: Paths) -> list[str]:
    """The group UUIDs of ssconf_nodegroups ("<uuid> <name>" lines)."""
    try:
        with open(paths.ssconf_file("nodegroups"), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as err:
        raise GanetiError("ConfigurationError", f"Can't read ssconf file: {err}") from None
    result = [line.split(None, 1)[0] for line in lines if line.strip()]
    if not all(UUID_RE.match(uuid) for uuid in result):
        raise GanetiError("GenericError", "Ssconf contains invalid group UUID")
    return result


def _values(rows: Any) -> list[list[Any]]:
    """Query rows without their result status: [[value, ...], ...]."""
    out = []
    for row in rows:
        if not isinstance(row, list) or not all(isinstance(v, list) and len(v) == 2 for v in row):
            raise GanetiError("ProtocolError", f"Invalid query row from the master: {row!r}")
        out.append([v[1] for v in row])
    return out


INSTANCE_FIELDS = ["name", "status", "admin_state", "admin_state_source", "disks_active", "snodes",
                   "pnode.group.uuid", "snodes.group.uuid", "disk_template"]
NODE_FIELDS = ["name", "bootid", "offline"]


def group_data(client: LuxiClient, group_uuid: str) -> tuple[dict[str, Node], dict[str, Instance], set[str]]:
    """(nodes, instances, locked instance names) of one group, as the master reports them."""
    locks = client.query("lock", ["name", "mode"], None)
    locked = {name.removeprefix("instance/") for name, mode in _values(locks.get("data", []))
              if isinstance(name, str) and name.startswith("instance/") and mode}
    raw_instances = _values(client.query("instance", INSTANCE_FIELDS,
                                         ["=", "pnode.group.uuid", group_uuid]).get("data", []))
    raw_nodes = _values(client.query("node", NODE_FIELDS, ["=", "group.uuid", group_uuid]).get("data", []))
    instances: dict[str, Instance] = {}
    secondaries: dict[str, set[str]] = {}
    for (name, status, admin_state, source, disks_active, snodes, pgroup, sgroups,
         template) in raw_instances:
        snodes = list(snodes or [])
        if snodes and {pgroup} != set(sgroups or []):
            log.error("Ignoring split instance '%s', primary group %s, secondary groups %s",
                      name, pgroup, ", ".join(str(g) for g in sgroups or []))
            continue
        instances[name] = Instance(name, status, admin_state, source, bool(disks_active), snodes, template)
        for node in snodes:
            secondaries.setdefault(node, set()).add(name)
    nodes = {name: Node(name, bootid, bool(offline), secondaries.get(name, set()))
             for name, bootid, offline in raw_nodes}
    return nodes, instances, locked


# -- the decisions --------------------------------------------------------------------------------
def cleanup_instance(notepad: wstate.WatcherState, inst: Instance, locks: set[str],
                     shutdown: Callable[[Instance], None]) -> None:
    attempts = notepad.cleanup_attempts(inst.name)
    if inst.name in locks:
        log.info("Not cleaning up instance '%s', instance is locked", inst.name)
        return
    if attempts > MAXTRIES:
        log.warning("Not cleaning up instance '%s', retries exhausted", inst.name)
        return
    log.info("Instance '%s' was shutdown by the user, cleaning up instance", inst.name)
    try:
        shutdown(inst)
    except Exception:
        log.exception("Error while cleaning up instance '%s'", inst.name)
        notepad.record_cleanup(inst.name)
    else:
        if notepad.cleanup_attempts(inst.name):
            notepad.forget(inst.name)


def check_instances(notepad: wstate.WatcherState, instances: dict[str, Instance], locks: set[str],
                    restart: Callable[[Instance], None],
                    shutdown: Callable[[Instance], None]) -> set[str]:
    """One pass over the group's instances (restart, clean up, forget); the names restarted."""
    notepad.maintain(list(instances))
    started: set[str] = set()
    for inst in instances.values():
        if inst.needs_cleanup():
            cleanup_instance(notepad, inst, locks, shutdown)
        elif inst.status in BAD_STATES:
            attempts = notepad.restart_attempts(inst.name)
            if attempts > MAXTRIES:
                log.warning("Not restarting instance '%s', retries exhausted", inst.name)
                continue
            if attempts == MAXTRIES:
                notepad.record_restart(inst.name)
                log.error("Could not restart instance '%s' after %s attempts, giving up", inst.name, MAXTRIES)
                continue
            try:
                log.info("Restarting instance '%s' (attempt #%s)", inst.name, attempts + 1)
                restart(inst)
            except Exception:
                log.exception("Error while restarting instance '%s'", inst.name)
            else:
                started.add(inst.name)
            notepad.record_restart(inst.name)
        elif notepad.restart_attempts(inst.name):
            notepad.forget(inst.name)
            if inst.status not in HELPLESS_STATES:
                log.info("Restart of instance '%s' succeeded", inst.name)
    return started


def check_disks(notepad: wstate.WatcherState, nodes: dict[str, Node], instances: dict[str, Instance],
                started: set[str], activate: Callable[[Instance], None]) -> None:
    """Activate the disks of instances whose secondary node rebooted (its boot ID changed)."""
    rebooted = []
    for node in nodes.values():
        if not node.bootid:
            if not node.offline:
                log.debug("Node '%s' missing boot ID, skipping secondary checks", node.name)
            continue
        if notepad.boot_id(node.name) != node.bootid:
            rebooted.append(node)
    for node in rebooted:
        for name in sorted(node.secondaries):
            inst = instances.get(name)
            if inst is None:
                log.info("Can't find instance '%s', maybe it was ignored", name)
                continue
            if not inst.disks_active:
                log.info("Skipping disk activation for instance with not activated disks '%s'", name)
                continue
            if name in started:
                log.debug("Skipping disk activation for instance '%s' as it was already started", name)
                continue
            try:
                log.info("Activating disks for instance '%s'", name)
                activate(inst)
            except Exception:
                log.exception("Error while activating disks for instance '%s'", name)
    for node in rebooted:
        assert node.bootid
        notepad.set_boot_id(node.name, node.bootid)


# -- the jobs ------------------------------------------------------------------------------------
def restart_op(name: str) -> dict[str, Any]:
    op = make_opcode("OP_INSTANCE_STARTUP", instance_name=name, force=False)
    op["reason"] = _reason(f"Restarting instance {name}")
    return op


def cleanup_op(name: str) -> dict[str, Any]:
    op = make_opcode("OP_INSTANCE_SHUTDOWN", instance_name=name, admin_state_source=USER_SOURCE)
    op["reason"] = _reason(f"Cleaning up instance {name}")
    return op


def activate_disks_op(name: str) -> dict[str, Any]:
    op = make_opcode("OP_INSTANCE_ACTIVATE_DISKS", instance_name=name)
    op["reason"] = _reason(f"Activating disks for instance {name}")
    return op


def verify_disks(client: LuxiClient, group_uuid: str, nodes: dict[str, Node],
                 instances: dict[str, Instance]) -> None:
    """Per-group verify-disks, then one job activating the disks of the instances it names."""
    op = make_opcode("OP_GROUP_VERIFY_DISKS", group_name=group_uuid, priority=OP_PRIO_LOW)
    op["reason"] = _reason(f"Verifying disks of group {group_uuid}")
    job_id = client.submit_job([op])
    try:
        results = poll_job(client, job_id, LogReporter())
    finally:
        try:
            client.archive_job(job_id)
        except Exception:
            log.exception("Error while archiving job %s", job_id)
    try:
        ((_, offline_disk_instances, _),) = results
    except (TypeError, ValueError):
        raise GanetiError("ProtocolError", f"Unexpected verify-disks result {results!r}") from None
    if not offline_disk_instances:
        log.debug("Verify-disks reported no offline disks, nothing to do")
        return
    log.debug("Will activate disks for instance(s) %s", ", ".join(offline_disk_instances))
    ops = []
    for name in offline_disk_instances:
        inst = instances.get(name)
        if inst is None:
            log.info("Can't find instance '%s', maybe it was ignored", name)
            continue
        if inst.status in HELPLESS_STATES or any(nodes[n].offline for n in inst.snodes if n in nodes):
            log.info("Skipping instance '%s' because it is in a helpless state or has offline secondaries",
                     name)
            continue
        ops.append(activate_disks_op(name))
    if ops:
        try:
            submit_and_wait(client, ops, quiet=True)
        except Exception:
            log.exception("Error while activating disks")


# -- hooks ---------------------------------------------------------------------------------------
def run_watcher_hooks(paths: Paths) -> None:
    """Run $CONF_DIR/hooks/watcher/* (Ganeti's RunParts rules); results go to the log."""
    directory = os.path.join(paths.hooks_dir, HOOKS_NAME)
    if not os.path.isdir(directory):
        return
    try:
        names = sorted(os.listdir(directory))
    except OSError as err:
        log.error("RunParts %s failed: %s", directory, err)
        return
    for name in names:
        path = os.path.join(directory, name)
        if not (HOOK_NAME_RE.match(name) and os.path.isfile(path) and os.access(path, os.X_OK)):
            log.debug("Watcher hook %s: skipped", name)
            continue
        try:
            done = subprocess.run([path], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  cwd="/", check=False)
        except OSError as err:
            log.warning("Watcher hook %s: error (%s)", name, err)
            continue
        output = (done.stdout + done.stderr).strip()
        if done.returncode:
            log.warning("Watcher hook %s: failed (exit: %d) (output: %s)", name, done.returncode, output)
        else:
            log.debug("Watcher hook %s: success (output: %s)", name, output)


# -- the watchers ----------------------------------------------------------------------------------
def group_watcher(opts: argparse.Namespace, paths: Paths) -> int:
    """The watcher of one node group (Ganeti's per-group child)."""
    group_uuid = str(opts.nodegroup).lower()
    if not UUID_RE.match(group_uuid):
        raise GanetiError("GenericError",
                          f"Node group parameter (--node-group) must be given a UUID, got '{group_uuid}'")
    log.info("Watcher for node group '%s'", group_uuid)
    groups = known_groups(paths)
    if group_uuid not in groups:
        raise GanetiError("GenericError", f"Node group '{group_uuid}' is not known by ssconf")
    state_path = state_file(paths, group_uuid)
    log.debug("Using state file %s", state_path)
    notepad = wstate.WatcherState.open(state_path)
    if notepad is None:
        return EXIT_FAILURE
    try:
        client = get_client(paths)
        try:
            check_master(client, paths)
            nodes, instances, locks = group_data(client, group_uuid)
            wstate.write_instance_status(group_status_file(paths, group_uuid),
                                         [(i.name, i.status) for i in instances.values()])
            wstate.merge_instance_status(instance_status_file(paths),
                                         [group_status_file(paths, g) for g in groups])

            def restart(inst: Instance) -> None:
                submit_and_wait(client, [restart_op(inst.name)])

            def shutdown(inst: Instance) -> None:
                submit_and_wait(client, [cleanup_op(inst.name)])

            def activate(inst: Instance) -> None:
                submit_and_wait(client, [activate_disks_op(inst.name)])

            started = check_instances(notepad, instances, locks, restart, shutdown)
            check_disks(notepad, nodes, instances, started, activate)
            only_ext = all(i.disk_template == DT_EXT for i in instances.values())
            if not opts.no_verify_disks and not only_ext:
                try:
                    verify_disks(client, group_uuid, nodes, instances)
                except GanetiError as err:
                    log.warning("Verifying the disks of group %s failed: %s", group_uuid, err)
        finally:
            client.close()
    except Exception as err:
        log.info("Not updating status file due to failure: %s", err)
        raise
    else:
        notepad.save()
    finally:
        notepad.close()
    return EXIT_SUCCESS


def _query_groups(client: LuxiClient) -> list[tuple[str, str]]:
    result = client.query("group", ["name", "uuid"], None)
    return [(str(name), str(uuid)) for name, uuid in _values(result.get("data", []))]


def start_group_children(client: LuxiClient, opts: argparse.Namespace, paths: Paths) -> None:
    """One forked child per node group, one second apart; waited for with --wait-children."""
    children: list[int] = []
    for index, (name, uuid) in enumerate(_query_groups(client)):
        if index:
            time.sleep(CHILD_PROCESS_DELAY)
        log.debug("Spawning child for group %r (%s).", name, uuid)
        flush_output()
        try:
            pid = os.fork()
        except OSError:
            log.exception("Failed to fork for group %r (%s)", name, uuid)
            continue
        if pid == 0:
            code = EXIT_FAILURE
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                client.close()
                child_opts = copy.copy(opts)
                child_opts.nodegroup = uuid
                code = guarded(group_watcher, child_opts, paths)
            finally:
                flush_output()
                os._exit(code)
        log.debug("Started with PID %s", pid)
        children.append(pid)
    if opts.wait_children:
        for pid in children:
            log.debug("Waiting for child PID %s", pid)
            try:
                _, status = os.waitpid(pid, 0)
                result: Any = os.waitstatus_to_exitcode(status)
            except OSError as err:
                result = str(err)
            log.debug("Child PID %s exited with status %s", pid, result)


def reap_children() -> None:
    """Collect children left running by an earlier --no-wait-children run (loop mode)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def global_watcher(opts: argparse.Namespace, paths: Paths) -> int:
    """The watcher of this node; on the master also job archiving and the group children."""
    run_watcher_hooks(paths)
    try:
        client = get_client(paths)
    except NotMasterError:
        return EXIT_SUCCESS
    try:
        check_master(client, paths)
        archive_jobs(client, opts.job_age)
        start_group_children(client, opts, paths)
    finally:
        client.close()
    return EXIT_SUCCESS


def flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()


def guarded(func: Callable[[argparse.Namespace, Paths], int], opts: argparse.Namespace, paths: Paths) -> int:
    """Run a watcher with Ganeti's handling of its failures (logged; exit codes of the module doc)."""
    try:
        return func(opts, paths)
    except (SystemExit, KeyboardInterrupt):
        raise
    except NotMasterError:
        log.debug("Not master, exiting")
        return EXIT_NOTMASTER
    except GanetiError as err:
        if err.is_a("ResolverError"):
            log.error("Cannot resolve hostname '%s', exiting", err.args[0] if err.args else "")
            return EXIT_NODESETUP_ERROR
        if err.is_a("JobQueueFull"):
            log.error("Job queue is full, can't query cluster state")
            return EXIT_SUCCESS
        if err.is_a("JobQueueDrainError"):
            log.error("Job queue is drained, can't maintain cluster state")
            return EXIT_SUCCESS
        log.exception(str(err))
        return EXIT_FAILURE
    except Exception as err:
        log.exception(str(err))
        return EXIT_FAILURE


def run_once(opts: argparse.Namespace, paths: Paths) -> int:
    """One watcher run (what cron starts)."""
    log.debug("Watcher run starting")
    if wstate.read_pause(paths.watcher_pause_file) is not None and not opts.ignore_pause:
        log.debug("Pause has been set, exiting")
        return EXIT_SUCCESS
    path = lock_file(paths)
    try:
        os.makedirs(paths.lock_dir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        log.error("Can't acquire lock on %s: %s", path, err)
        return EXIT_SUCCESS
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            log.error("Can't acquire lock on %s: %s", path, err)
            return EXIT_SUCCESS
        return guarded(group_watcher if opts.nodegroup is not None else global_watcher, opts, paths)
    finally:
        os.close(fd)


def run_loop(opts: argparse.Namespace, paths: Paths, interval: float) -> int:
    """Run every `interval` seconds until SIGTERM or SIGINT; the last run's exit code.

    A signal during a run lets the run finish (its jobs and the state file)
    and ends the loop; a second one ends the process at once.
    """
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        if stopping:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        stopping.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = EXIT_SUCCESS
    try:
        while not stopping:
            started = time.monotonic()
            reap_children()
            code = run_once(opts, paths)
            flush_output()
            while not stopping and time.monotonic() - started < interval:
                time.sleep(min(0.2, max(0.0, interval - (time.monotonic() - started))))
        log.info("Terminating on signal %s", stopping[0])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    paths = Paths.from_environ()
    setup_logging(paths, opts.debug)
    if opts.interval is not None:
        return run_loop(opts, paths, opts.interval)
    return run_once(opts, paths)


if __name__ == "__main__":
    raise SystemExit(main())
