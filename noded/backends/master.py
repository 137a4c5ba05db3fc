"""The master role on a node: master IP, master daemons, demotion, leaving the cluster, power cycling.

Semantics follow Ganeti 3.0.2's backend (ActivateMasterIp, StartMasterDaemons,
LeaveCluster, ...). Where a real Ganeti node would act on the whole machine
(stop the machine's Ganeti daemons, reboot it) and this node is a virtual
node (GANETI_ROOTDIR set, several nodes on one machine), the machine-wide
action is skipped or refused, as said per procedure.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from noded.backends import jobqueue, masterip, netcheck, runcmd, ssconf_store
from noded.backends.hooks import HKR_FAIL, HOOKS_PATH, run_hooks
from noded.backends.ssh_files import KEY_KINDS, SshFiles, authorized_keys_remove
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.hypervisor import HypervisorError, get_hypervisor
from noded.paths import Paths
from noded.registry import procedure

log = logging.getLogger(__name__)

#: Ganeti's daemon control script.
DAEMON_UTIL = "/usr/lib/ganeti/daemon-util"
#: Our master daemon's console script (DESIGN.md contract 3).
OUR_MASTERD = "ganeti-masterd"
#: Ganeti 3.0's master daemons (what `daemon-util start-master` starts).
GANETI_MASTER_DAEMONS = ("ganeti-wconfd", "ganeti-rapi", "ganeti-luxid")
#: Daemons Ganeti stops on a node leaving the cluster.
LEAVE_CLUSTER_DAEMONS = ("ganeti-confd", "ganeti-mond", "ganeti-kvmd")
#: The only daemon node_ensure_daemon may start or stop (Ganeti's rule).
ENSURABLE_DAEMONS = ("ganeti-kvmd",)
#: Seconds to wait for a master daemon to exit after SIGTERM.
STOP_TIMEOUT = 30.0
#: Seconds before node_powercycle reboots the machine (Ganeti's).
POWERCYCLE_DELAY = 5.0

HOOKS_VERSION = 2
OP_MASTER_TURNUP = "OP_CLUSTER_IP_TURNUP"
OP_MASTER_TURNDOWN = "OP_CLUSTER_IP_TURNDOWN"


# -- helpers ------------------------------------------------------------------

def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _pid_from_file(path: str) -> int | None:
    """The pid in a pid file if that process is alive, else None."""
    try:
        with open(path) as f:
            pid = int(f.read().strip() or "0")
    except (OSError, ValueError):
        return None
    if pid <= 0 or not _alive(pid):
        return None
    return pid


def _pid_file(paths: Paths, daemon: str) -> str:
    return os.path.join(paths.run_dir, f"{daemon}.pid")


def _daemon_env(paths: Paths, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for daemon-util / our daemons: the node's root, if any."""
    env = dict(extra or {})
    if paths.root:
        env["GANETI_ROOTDIR"] = paths.root
        env["GANETI_HOSTNAME"] = paths.hostname
    return env


def _read_ssconf(paths: Paths, key: str) -> str | None:
    try:
        return ssconf_store.read_value(paths, key)
    except RpcFail:
        return None


# -- master IP ------------------------------------------------------------------

def _ip_version(family: Any) -> int:
    if family == socket.AF_INET:
        return 4
    if family == socket.AF_INET6:
        return 6
    raise RpcFail(f"{family} is not a valid IP address family")


def master_ip_setup(master_params: Mapping[str, Any]) -> masterip.MasterIpSetup:
    """The setup parameters from a MasterNetworkParameters dict {uuid, ip, netmask, netdev, ip_family}."""
    try:
        return masterip.MasterIpSetup(ip=str(master_params["ip"]), netmask=int(master_params["netmask"]),
                                      netdev=str(master_params["netdev"]),
                                      version=_ip_version(master_params["ip_family"]))
    except KeyError as err:
        raise RpcFail(f"Master network parameters lack '{err.args[0]}'") from err


def external_mip_script(paths: Paths) -> str:
    """The administrator's master IP script ($CONF_DIR/scripts/master-ip-setup)."""
    return os.path.join(paths.conf_dir, "scripts", "master-ip-setup")


def _run_master_ip_script(paths: Paths, setup: masterip.MasterIpSetup, action: str,
                          use_external_mip_script: bool) -> None:
    """Run the external script, or our built-in one, for `action`; RpcFail when it fails."""
    if use_external_mip_script:
        script = external_mip_script(paths)
        try:
            res = runcmd.run([script, action], env=setup.env(), reset_env=True, timeout=300)
        except runcmd.CommandNotFound as err:
            raise RpcFail(f"Failed to {action} the master IP: the external master IP setup script"
                          f" {script} does not exist") from err
        code: int | None = res.exit_code
        output = res.output
        failed = res.failed
    else:
        code, output = masterip.run_action(action, setup)
        failed = code != 0
    if failed:
        raise RpcFail(f"Failed to {action} the master IP. Script return value: {code}, output: '{output}'")


def _master_ip_hooks_env(paths: Paths, setup: masterip.MasterIpSetup, hpath: str, opcode: str,
                         phase: str) -> dict[str, str]:
    phase_env = {"MASTER_NETDEV": setup.netdev, "MASTER_IP": setup.ip,
                 "MASTER_NETMASK": str(setup.netmask), "CLUSTER_IP_VERSION": str(setup.version)}
    env = {"PATH": HOOKS_PATH, "GANETI_HOOKS_VERSION": str(HOOKS_VERSION), "GANETI_OP_CODE": opcode,
           "GANETI_DATA_DIR": paths.data_dir, "GANETI_HOOKS_PHASE": phase, "GANETI_HOOKS_PATH": hpath}
    cluster = _read_ssconf(paths, "cluster_name")
    master = _read_ssconf(paths, "master_node")
    if cluster is not None:
        env["GANETI_CLUSTER"] = cluster
    if master is not None:
        env["GANETI_MASTER"] = master
    env.update({f"GANETI_{k}": v for k, v in phase_env.items()})
    if phase == "post":
        env.update({f"GANETI_POST_{k}": v for k, v in phase_env.items()})
    return env


def _with_local_hooks(paths: Paths, setup: masterip.MasterIpSetup, hpath: str, opcode: str,
                      action: str, use_external_mip_script: bool) -> None:
    """Run the local `hpath` pre hooks, the action, then the post hooks (Ganeti's RunLocalHooks)."""
    pre = run_hooks(paths, hpath, "pre", _master_ip_hooks_env(paths, setup, hpath, opcode, "pre"))
    failed = [r for r in pre if r.status == HKR_FAIL]
    if failed:
        details = "; ".join(f"{r.name}: {r.output or '(no output)'}" for r in failed)
        raise RpcFail(f"Hook(s) of {hpath}-pre.d failed, the master IP was not touched: {details}")
    _run_master_ip_script(paths, setup, action, use_external_mip_script)
    for r in run_hooks(paths, hpath, "post", _master_ip_hooks_env(paths, setup, hpath, opcode, "post")):
        if r.status == HKR_FAIL:
            log.warning("post hook %s failed, output: %s", r.name, r.output or "(no output)")


@procedure("node_activate_master_ip", blocking=True)
def node_activate_master_ip(ctx: NodeContext, master_params: dict[str, Any],
                            use_external_mip_script: bool) -> None:
    """Add the cluster IP on this node (master-ip-turnup hooks around the setup script)."""
    setup = master_ip_setup(master_params)
    _with_local_hooks(ctx.paths, setup, "master-ip-turnup", OP_MASTER_TURNUP, "start",
                      bool(use_external_mip_script))


@procedure("node_deactivate_master_ip", blocking=True)
def node_deactivate_master_ip(ctx: NodeContext, master_params: dict[str, Any],
                              use_external_mip_script: bool) -> None:
    """Remove the cluster IP from this node (master-ip-turndown hooks around the setup script)."""
    setup = master_ip_setup(master_params)
    _with_local_hooks(ctx.paths, setup, "master-ip-turndown", OP_MASTER_TURNDOWN, "stop",
                      bool(use_external_mip_script))


@procedure("node_change_master_netmask", blocking=True)
def node_change_master_netmask(ctx: NodeContext, old_netmask: int, netmask: int, master_ip: str,
                               master_netdev: str) -> None:
    """Re-add the master IP with the new prefix length, then drop the old one."""
    if old_netmask == netmask:
        return
    if not netcheck.owns_address(master_ip):
        raise RpcFail("The master IP address is not up, not attempting to change its netmask")
    ip = masterip.ip_command()
    res = runcmd.run([ip, "address", "add", f"{master_ip}/{netmask}", "dev", master_netdev,
                      "label", f"{master_netdev}:0"], timeout=masterip.COMMAND_TIMEOUT)
    if res.failed:
        raise RpcFail(f"Could not set the new netmask on the master IP address: {res.output.strip()}")
    res = runcmd.run([ip, "address", "del", f"{master_ip}/{old_netmask}", "dev", master_netdev,
                      "label", f"{master_netdev}:0"], timeout=masterip.COMMAND_TIMEOUT)
    if res.failed:
        raise RpcFail("Could not bring down the master IP address with the old netmask:"
                      f" {res.output.strip()}")


# -- master daemons --------------------------------------------------------------

def start_master_daemons(paths: Paths, no_voting: bool, *, daemon_util: str = DAEMON_UTIL,
                         search_path: str | None = None) -> None:
    """Start the master daemons on this node.

    Which ones, in this order of preference:
    1. our `ganeti-masterd` console script, when it is on PATH: run as
       `ganeti-masterd [--no-voting --yes-do-it]` (it detaches itself);
    2. else Ganeti 3.0's, when its `daemon-util` is installed:
       `daemon-util start-master` (wconfd, rapi, luxid), with
       EXTRA_LUXID_ARGS/EXTRA_WCONFD_ARGS="--no-voting --yes-do-it" for
       no_voting, exactly as Ganeti's node daemon does;
    3. else RpcFail: no master daemon is installed.
    With a root, the daemons get GANETI_ROOTDIR/GANETI_HOSTNAME.
    """
    voting_args = ["--no-voting", "--yes-do-it"] if no_voting else []
    ours = shutil.which(OUR_MASTERD, path=search_path)
    if ours is not None:
        res = runcmd.run([ours, *voting_args], env=_daemon_env(paths), timeout=120)
    elif os.path.exists(daemon_util):
        extra = " ".join(voting_args)
        res = runcmd.run([daemon_util, "start-master"],
                         env=_daemon_env(paths, {"EXTRA_LUXID_ARGS": extra, "EXTRA_WCONFD_ARGS": extra}),
                         timeout=300)
    else:
        raise RpcFail(f"Can't start Ganeti master: no master daemon is installed on this node (neither"
                      f" '{OUR_MASTERD}' on PATH nor Ganeti's {daemon_util})")
    if res.failed:
        raise RpcFail(f"Can't start Ganeti master: {res.output}")


def _stop_pid(pid: int, timeout: float) -> bool:
    """SIGTERM `pid` and wait for it to go away; True when it did."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def stop_master_daemons(paths: Paths, *, daemon_util: str = DAEMON_UTIL,
                        timeout: float = STOP_TIMEOUT) -> None:
    """Stop whichever master daemons run on this node; never fails (as in Ganeti).

    Our `ganeti-masterd` (found by $RUN_DIR/ganeti-masterd.pid) is sent
    SIGTERM and waited for. Ganeti 3.0's master daemons, when one of their
    pid files names a live process and daemon-util is installed, are
    stopped with `daemon-util stop-master`. Nothing running: nothing to do.
    """
    pid = _pid_from_file(_pid_file(paths, OUR_MASTERD))
    if pid is not None and not _stop_pid(pid, timeout):
        log.error("Could not stop the master daemon (pid %d) within %.0f s", pid, timeout)
    running = [d for d in GANETI_MASTER_DAEMONS if _pid_from_file(_pid_file(paths, d)) is not None]
    if running and os.path.exists(daemon_util):
        res = runcmd.run([daemon_util, "stop-master"], env=_daemon_env(paths), timeout=300)
        if res.failed:
            log.error("Could not stop Ganeti master, command %s had exitcode %s and error %s",
                      res.cmd, res.exit_code, res.output)


@procedure("node_start_master_daemons", blocking=True)
def node_start_master_daemons(ctx: NodeContext, no_voting: bool) -> None:
    """Start the master daemons here (see start_master_daemons for which ones)."""
    start_master_daemons(ctx.paths, bool(no_voting))


@procedure("node_stop_master", blocking=True)
def node_stop_master(ctx: NodeContext) -> None:
    """Stop the master daemons running here (see stop_master_daemons)."""
    stop_master_daemons(ctx.paths)


def ensure_daemon(paths: Paths, daemon: str, run: bool, *, daemon_util: str = DAEMON_UTIL) -> bool:
    """Start (`run`) or stop one of Ganeti's daemons; only ganeti-kvmd is allowed (else False)."""
    if daemon not in ENSURABLE_DAEMONS or not os.path.exists(daemon_util):
        return False
    action = "check-and-start" if run else "stop"
    res = runcmd.run([daemon_util, action, daemon], env=_daemon_env(paths), timeout=120)
    return not res.failed


@procedure("node_ensure_daemon", blocking=True)
def node_ensure_daemon(ctx: NodeContext, daemon: str, run: bool) -> bool:
    """Make sure ganeti-kvmd runs (or not); any other daemon name answers false, as in Ganeti."""
    return ensure_daemon(ctx.paths, str(daemon), bool(run))


# -- membership ---------------------------------------------------------------------

def _backup_file(path: str) -> str:
    """Copy `path` to `<name>.backup-<timestamp>.<random>` next to it (Ganeti's CreateBackup)."""
    prefix = f"{os.path.basename(path)}.backup-{time.strftime('%Y-%m-%d_%H_%M_%S')}."
    fd, backup = tempfile.mkstemp(prefix=prefix, dir=os.path.dirname(path))
    with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return backup


@procedure("node_demote_from_mc", blocking=True)
def node_demote_from_mc(ctx: NodeContext) -> None:
    """Stop being a master candidate: back up and remove config.data (refused on the master)."""
    paths = ctx.paths
    master = ssconf_store.read_value(paths, "master_node")
    if master == ctx.hostname:
        raise RpcFail("ssconf status shows I'm the master node, will not demote")
    if _pid_from_file(_pid_file(paths, OUR_MASTERD)) is not None:
        raise RpcFail("The master daemon is running, will not demote")
    if os.path.isfile(paths.config_file):
        try:
            _backup_file(paths.config_file)
        except OSError as err:
            raise RpcFail(f"Error while backing up cluster file: {err}") from err
    try:
        os.unlink(paths.config_file)
    except FileNotFoundError:
        pass


def _clean_directory(path: str) -> None:
    """Remove the visible regular files directly in `path`."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for name in names:
        full = os.path.join(path, name)
        if name.startswith("."):
            continue
        try:
            if stat.S_ISREG(os.lstat(full).st_mode):
                os.unlink(full)
        except FileNotFoundError:
            continue


def leave_cluster(ctx: NodeContext, modify_ssh_setup: bool, *, daemon_util: str = DAEMON_UTIL) -> None:
    """Forget the cluster: its files, its job queue, optionally root's cluster SSH key."""
    paths = ctx.paths
    _clean_directory(paths.data_dir)  # config.data, ssconf_*, server.pem, client.pem, hmac.key, ...
    _clean_directory(paths.crypto_dir)
    if os.path.isdir(paths.queue_dir):
        try:
            jobqueue.jobqueue_purge(ctx)
        except RpcFail as err:
            log.error("Could not purge the job queue: %s", err)
    if modify_ssh_setup:
        files = SshFiles(paths)
        for kind in KEY_KINDS:
            private, public = files.key_pair(kind)
            try:
                with open(public) as f:
                    key = f.read()
            except FileNotFoundError:
                continue
            except OSError as err:
                log.error("SSH key file %s is not accessible: %s", public, err)
                continue
            try:
                authorized_keys_remove(files, [key])
            except RpcFail as err:
                log.error("Could not remove the cluster key from authorized_keys: %s", err)
            for name in (private, public):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
    for name in ("hmac.key", "rapi.pem", "spice.pem", "spice-ca.pem", "server.pem"):
        try:
            os.unlink(os.path.join(paths.data_dir, name))
        except FileNotFoundError:
            pass
    stop_node_daemons(paths, LEAVE_CLUSTER_DAEMONS, daemon_util=daemon_util)


def stop_node_daemons(paths: Paths, daemons: Sequence[str], *, daemon_util: str = DAEMON_UTIL) -> list[str]:
    """Stop those of Ganeti's `daemons` whose pid file names a running process; the ones stopped.

    Uses `daemon-util stop <daemon>` with the node's root in the
    environment, so only the processes named by this node's pid files are
    touched (a virtual node never stops the machine's own daemons).
    """
    stopped: list[str] = []
    if not os.path.exists(daemon_util):
        return stopped
    for daemon in daemons:
        if _pid_from_file(_pid_file(paths, daemon)) is None:
            continue
        res = runcmd.run([daemon_util, "stop", daemon], env=_daemon_env(paths), timeout=120)
        if res.failed:
            log.error("Could not stop %s: %s", daemon, res.output)
        else:
            stopped.append(daemon)
    return stopped


@procedure("node_leave_cluster", blocking=True)
def node_leave_cluster(ctx: NodeContext, modify_ssh_setup: bool) -> str:
    """Remove this node's cluster files, then shut the node daemon down ("Shutdown scheduled").

    Removed: the regular files of $DATA_DIR (config.data, ssconf_*,
    certificates, keys...), of $RUN_DIR/crypto and of the job queue; with
    `modify_ssh_setup`, root's cluster SSH key pairs and their lines in
    authorized_keys. Ganeti's confd, mond and kvmd, when this node's pid
    files show them running, are stopped with daemon-util, as Ganeti does.
    """
    leave_cluster(ctx, bool(modify_ssh_setup))
    ctx.request_shutdown()
    return "Shutdown scheduled"


# -- power cycle -------------------------------------------------------------------

@procedure("node_powercycle", blocking=True)
def node_powercycle(ctx: NodeContext, hypervisor: str, hvparams: dict[str, Any] | None) -> str:
    """Hard-reboot this machine in 5 seconds, through the hypervisor.

    Refused unless the daemon was started with --allow-powercycle, and
    always refused on a virtual node (GANETI_ROOTDIR set), where it would
    reboot the machine under every node sharing it.
    """
    if not ctx.allow_powercycle:
        raise RpcFail("Power-cycling refused: this node daemon was not started with --allow-powercycle")
    if ctx.paths.root:
        raise RpcFail(f"Power-cycling refused: this is a virtual node (root {ctx.paths.root}); rebooting"
                      " would take down every node on this machine")
    try:
        hyper = get_hypervisor(hypervisor, ctx.paths)
    except HypervisorError as err:
        raise RpcFail(str(err)) from err

    def later() -> None:  # pragma: no cover - never run in tests
        time.sleep(POWERCYCLE_DELAY)
        hyper.powercycle_node(hvparams)

    threading.Thread(target=later, name="powercycle", daemon=True).start()
    return f"Reboot scheduled in {POWERCYCLE_DELAY:g} seconds"
