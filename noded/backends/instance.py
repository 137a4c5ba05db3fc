"""Instance procedures: start, shutdown, reboot, balloon, console, migration, hotplug, metadata.

Each procedure takes Ganeti's instance dict (hvparams/beparams already
filled by the master) and asks the instance's hypervisor
(instance["hypervisor"], looked up with noded.hypervisor.get_hypervisor).
Messages and result shapes are those of Ganeti 3.0's backend.py: expected
failures are RpcFail with Ganeti's prefix for that place ("Hypervisor error:
...", "Failed to stop instance '<name>': ..."); where Ganeti lets an error
escape (an unknown hypervisor in instance_shutdown, say), ours escapes too
and the daemon answers "Error while executing backend function: ...".

State kept on the node (all below the run directory):

- `$RUN_DIR/instance-reason/<name>`: the reason trail of the last start,
  shutdown or reboot (JSON list of [source, reason, epoch ns]), as Ganeti;
- `$RUN_DIR/instance-disks/<name>:<index>`: the disk links (noded.disks.links);
- `$RUN_DIR/instance-metadata/<name>.json`: what instance_metadata_modify
  received (Ganeti hands it to its metadata daemon; we run none, see there).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from noded.context import NodeContext
from noded.disks import links
from noded.disks.base import DeviceError, DiskConfigError
from noded.errors import RpcFail
from noded.hypervisor import Hypervisor, HypervisorError, InstanceState, get_hypervisor
from noded.hypervisor.base import HotplugError
from noded.paths import Paths
from noded.registry import procedure

log = logging.getLogger(__name__)

#: Source of the entries the node daemon adds to reason trails (constants.OPCODE_REASON_SRC_NODED).
REASON_SOURCE = "gnt:daemon:noded"
#: Seconds between soft shutdown attempts (Ganeti's InstanceShutdown polls every 5 s).
SHUTDOWN_RETRY_INTERVAL = 5.0
#: How long to wait for an instance to disappear after a forced stop (Ganeti sleeps 1 s).
FORCED_STOP_GRACE = 1.0
#: Ganeti's reboot types; "full" is done by the master as stop + start.
REBOOT_SOFT = "soft"
REBOOT_HARD = "hard"
#: Hotplug actions and device kinds (constants.HOTPLUG_ALL_ACTIONS / HOTPLUG_ALL_TARGETS).
HOTPLUG_ACTIONS = ("hotadd", "hotremove", "hotmod")
HOTPLUG_TARGETS = ("disk", "nic")


# -- helpers ----------------------------------------------------------------------

def instance_name(instance: Mapping[str, Any]) -> str:
    """The instance's name, refused when it cannot name a file in the run directory."""
    name = instance.get("name") if isinstance(instance, Mapping) else None
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise RpcFail(f"Invalid instance name {name!r}: expected a host name without '/'")
    return name


def _hypervisor(ctx: NodeContext, instance: Mapping[str, Any]) -> Hypervisor:
    return get_hypervisor(str(instance.get("hypervisor")), ctx.paths)


def extend_reason_trail(trail: list[Any] | None, operation: str) -> list[Any]:
    """The trail with the node daemon's own entry appended (as Ganeti's noded does on arrival)."""
    return [*(trail or []), [f"{REASON_SOURCE}:{operation}", "", time.time_ns()]]


def reason_file(paths: Paths, name: str) -> str:
    return os.path.join(paths.run_dir, "instance-reason", name)


def _write_atomically(path: str, data: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def store_reason_trail(paths: Paths, name: str, trail: list[Any]) -> None:
    """Write the trail to $RUN_DIR/instance-reason/<name> (JSON and a newline, like Ganeti)."""
    _write_atomically(reason_file(paths, name), json.dumps(trail) + "\n")


def _exists(hyper: Hypervisor, instance: Mapping[str, Any], name: str) -> bool:
    """Whether the hypervisor knows the instance (running or shut down but defined)."""
    return hyper.instance_info(name, instance.get("hvparams")) is not None


def _start(ctx: NodeContext, instance: Mapping[str, Any], startup_paused: bool,
           trail: list[Any] | None) -> None:
    """Ganeti's StartInstance; stores `trail` unless it is None."""
    name = instance_name(instance)
    try:
        hyper = _hypervisor(ctx, instance)
        info = hyper.instance_info(name, instance.get("hvparams"))
        if info is not None and info.state != InstanceState.SHUTDOWN:
            # Ganeti 3.0.2 answers success here; masters never ask (they check
            # first), so a second start is an operator's mistake: say so.
            raise RpcFail(f"Instance '{name}' is already running on this node")
        try:
            disks = links.gather_and_link(ctx.paths, instance)
            hyper.start_instance(instance, disks, bool(startup_paused))
        except BaseException:
            links.unlink(ctx.paths, name)
            raise
        if trail is not None:
            store_reason_trail(ctx.paths, name, trail)
    except (DeviceError, DiskConfigError) as err:
        raise RpcFail(f"Block device error: {err}") from err
    except HypervisorError as err:
        raise RpcFail(f"Hypervisor error: {err}") from err


def _shutdown(ctx: NodeContext, instance: Mapping[str, Any], timeout: float,
              trail: list[Any] | None) -> None:
    """Ganeti's InstanceShutdown: soft stops until `timeout`, then a forced one; then cleanup."""
    name = instance_name(instance)
    hyper = _hypervisor(ctx, instance)
    if not _exists(hyper, instance, name):
        log.info("Instance '%s' not running, doing nothing", name)
    else:
        deadline = time.monotonic() + max(0.0, timeout)
        tried_once = False
        stopped = False
        while True:
            try:
                hyper.stop_instance(instance, retry=tried_once, timeout=int(timeout))
                if trail is not None:
                    store_reason_trail(ctx.paths, name, trail)
            except HypervisorError as err:
                # gone anyway: that is success; otherwise fail without retrying
                if _exists(hyper, instance, name):
                    raise RpcFail(f"Failed to stop instance '{name}': {err}") from err
                stopped = True
                break
            tried_once = True
            if not _exists(hyper, instance, name):
                stopped = True
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(SHUTDOWN_RETRY_INTERVAL, remaining))
        if not stopped:
            log.error("Shutdown of '%s' unsuccessful, forcing", name)
            try:
                hyper.stop_instance(instance, force=True)
            except HypervisorError as err:
                if _exists(hyper, instance, name):
                    raise RpcFail(f"Failed to force stop instance '{name}': {err}") from err
            grace = time.monotonic() + FORCED_STOP_GRACE
            while _exists(hyper, instance, name) and time.monotonic() < grace:
                time.sleep(0.1)
            if _exists(hyper, instance, name):
                raise RpcFail(f"Could not shutdown instance '{name}' even by destroy")
    try:
        hyper.cleanup_instance(name)
    except HypervisorError as err:
        log.warning("Failed to execute post-shutdown cleanup step: %s", err)
    links.unlink(ctx.paths, name)


# -- start, stop, reboot ----------------------------------------------------------

@procedure("instance_start", blocking=True)
def instance_start(ctx: NodeContext, instance: dict[str, Any], startup_paused: bool,
                   reason: list[Any] | None) -> None:
    """Link the instance's (assembled) disks and start it; an instance that runs is left alone."""
    _start(ctx, instance, startup_paused, extend_reason_trail(reason, "start"))


@procedure("instance_shutdown", blocking=True)
def instance_shutdown(ctx: NodeContext, instance: dict[str, Any], timeout: int | None,
                      reason: list[Any] | None) -> None:
    """Stop the instance (soft until `timeout` seconds, then forced) and remove its disk links.

    An instance that does not run is only cleaned up: the call succeeds.
    """
    _shutdown(ctx, instance, float(timeout or 0), extend_reason_trail(reason, "shutdown"))


@procedure("instance_reboot", blocking=True)
def instance_reboot(ctx: NodeContext, instance: dict[str, Any], reboot_type: str,
                    shutdown_timeout: int | None, reason: list[Any] | None) -> None:
    """Reboot a running instance: "soft" (the guest reboots) or "hard" (shutdown, then start).

    "full" reboots are the master's stop + start and are refused here, as in Ganeti.
    """
    trail = extend_reason_trail(reason, "reboot")
    name = instance_name(instance)
    hyper = _hypervisor(ctx, instance)
    if not _exists(hyper, instance, name):
        raise RpcFail(f"Cannot reboot instance '{name}' that is not running")
    if reboot_type == REBOOT_SOFT:
        try:
            hyper.reboot_instance(instance)
        except HypervisorError as err:
            raise RpcFail(f"Failed to soft reboot instance '{name}': {err}") from err
    elif reboot_type == REBOOT_HARD:
        try:
            _shutdown(ctx, instance, float(shutdown_timeout or 0), None)
            _start(ctx, instance, False, None)
            store_reason_trail(ctx.paths, name, trail)
        except HypervisorError as err:
            raise RpcFail(f"Failed to hard reboot instance '{name}': {err}") from err
    else:
        raise RpcFail(f"Invalid reboot_type received: '{reboot_type}'")


@procedure("instance_balloon_memory", blocking=True)
def instance_balloon_memory(ctx: NodeContext, instance: dict[str, Any], memory: int) -> None:
    """Set the running instance's memory to `memory` MiB; a stopped instance is left alone."""
    name = instance_name(instance)
    hyper = _hypervisor(ctx, instance)
    if name not in hyper.list_instances(instance.get("hvparams")):
        log.info("Instance %s is not running, cannot balloon", name)
        return
    try:
        hyper.balloon_instance_memory(instance, int(memory))
    except HypervisorError as err:
        raise RpcFail(f"Failed to balloon instance memory: {err}") from err


# -- console ----------------------------------------------------------------------

@procedure("instance_console_info", blocking=True)
def instance_console_info(ctx: NodeContext, instances: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{name: console dict} for the body {name: {"instance", "node", "group", "hvParams", "beParams"}}.

    Keys whose value is None are left out of each console dict, as Ganeti's ToDict does.
    """
    output: dict[str, dict[str, Any]] = {}
    for name, params in (instances or {}).items():
        instance = params["instance"]
        console = _hypervisor(ctx, instance).instance_console(
            instance, params["node"], params["group"], params["hvParams"], params["beParams"])
        output[name] = {k: v for k, v in console.items() if v is not None}
    return output


# -- migration --------------------------------------------------------------------

@procedure("instance_migratable", blocking=True)
def instance_migratable(ctx: NodeContext, instance: dict[str, Any]) -> None:
    """Succeed when the instance runs here; missing disk links are only logged."""
    name = instance_name(instance)
    hyper = _hypervisor(ctx, instance)
    if name not in hyper.list_instances(instance.get("hvparams")):
        raise RpcFail(f"Instance {name} is not running")
    for idx in range(len(instance.get("disks_info") or [])):
        link = links.link_path(ctx.paths, name, idx)
        if not os.path.islink(link):
            log.warning("Instance %s is missing symlink %s for disk %d", name, link, idx)


@procedure("migration_info", blocking=True)
def migration_info(ctx: NodeContext, instance: dict[str, Any]) -> str:
    """What the target node needs to accept the instance (opaque text)."""
    hyper = _hypervisor(ctx, instance)
    try:
        return hyper.migration_info(instance)
    except HypervisorError as err:
        raise RpcFail(f"Failed to fetch migration information: {err}") from err


@procedure("accept_instance", blocking=True)
def accept_instance(ctx: NodeContext, instance: dict[str, Any], info: str, target: str) -> None:
    """Target node: get ready to receive the instance on address `target`."""
    hyper = _hypervisor(ctx, instance)
    try:
        hyper.accept_instance(instance, info, target)
    except HypervisorError as err:
        raise RpcFail(f"Failed to accept instance: {err}") from err


@procedure("instance_finalize_migration_dst", blocking=True)
def instance_finalize_migration_dst(ctx: NodeContext, instance: dict[str, Any], info: str,
                                    success: bool) -> None:
    """Target node: take the instance over (success) or drop the incoming one."""
    hyper = _hypervisor(ctx, instance)
    try:
        hyper.finalize_migration_dst(instance, info, bool(success))
    except HypervisorError as err:
        raise RpcFail(f"Failed to finalize migration on the target node: {err}") from err


@procedure("instance_migrate", blocking=True)
def instance_migrate(ctx: NodeContext, cluster_name: str, instance: dict[str, Any], target: str,
                     live: bool) -> None:
    """Source node: send the running instance to `target`."""
    hyper = _hypervisor(ctx, instance)
    try:
        hyper.migrate_instance(cluster_name, instance, target, bool(live))
    except HypervisorError as err:
        raise RpcFail(f"Failed to migrate instance: {err}") from err


@procedure("instance_finalize_migration_src", blocking=True)
def instance_finalize_migration_src(ctx: NodeContext, instance: dict[str, Any], success: bool,
                                    live: bool) -> None:
    """Source node: clean up after the migration (the source copy goes when it succeeded)."""
    hyper = _hypervisor(ctx, instance)
    try:
        hyper.finalize_migration_source(instance, bool(success), bool(live))
    except Exception as err:
        raise RpcFail(f"Failed to finalize the migration on the source node: {err}") from err


@procedure("instance_get_migration_status", blocking=True)
def instance_get_migration_status(ctx: NodeContext, instance: dict[str, Any]) -> dict[str, Any]:
    """{"status", ["transferred_ram", "total_ram", "postcopy_status"]} of the running migration."""
    hyper = _hypervisor(ctx, instance)
    try:
        status = hyper.migration_status(instance)
    except Exception as err:
        raise RpcFail(f"Failed to get migration status: {err}") from err
    return {k: v for k, v in status.items() if v is not None}


# -- hotplug ----------------------------------------------------------------------

@procedure("hotplug_supported", blocking=True)
def hotplug_supported(ctx: NodeContext, instance: dict[str, Any]) -> None:
    """Succeed when devices can be hot-plugged into the instance."""
    hyper = _hypervisor(ctx, instance)
    try:
        hyper.hotplug_supported(instance)
    except HypervisorError as err:  # any reason given here is why hotplug is not supported
        raise RpcFail(f"Hotplug is not supported: {err}") from err


@procedure("hotplug_device", blocking=True)
def hotplug_device(ctx: NodeContext, instance: dict[str, Any], action: str, dev_type: str,
                   device: dict[str, Any], extra: Any, seq: int) -> Any:
    """Add, remove or modify a disk or NIC of the running instance; the hypervisor's answer."""
    hyper = _hypervisor(ctx, instance)
    if action not in HOTPLUG_ACTIONS:
        raise RpcFail(f"Hotplug is not supported: unknown hotplug action '{action}'"
                      f" (expected one of {', '.join(HOTPLUG_ACTIONS)})")
    if dev_type not in HOTPLUG_TARGETS:
        raise RpcFail(f"Hotplug is not supported: unknown device type '{dev_type}'"
                      f" (expected one of {', '.join(HOTPLUG_TARGETS)})")
    try:
        return hyper.hotplug_device(instance, action, dev_type, device, extra, int(seq))
    except HotplugError as err:
        raise RpcFail(f"Hotplug is not supported: {err}") from err
    # other HypervisorErrors (the hot-plug itself failed) escape, as in Ganeti:
    # "Error while executing backend function: <message>"


# -- metadata ---------------------------------------------------------------------

def metadata_file(paths: Paths, name: str) -> str:
    return os.path.join(paths.run_dir, "instance-metadata", f"{name}.json")


@procedure("instance_metadata_modify", blocking=True)
def instance_metadata_modify(ctx: NodeContext, metadata: dict[str, Any]) -> None:
    """Keep the instance's metadata in $RUN_DIR/instance-metadata/<name>.json (mode 0600).

    Ganeti hands it to its metadata daemon (ganeti-metad, serving guests on
    169.254.169.254:80); this node runs no such daemon and keeps the latest
    data on disk instead, where one could serve it. The dict holds the OS
    parameters, secret ones included, so only root may read the file.
    Repeating the call replaces the data.
    """
    name = instance_name(metadata)
    _write_atomically(metadata_file(ctx.paths, name), json.dumps(metadata, sort_keys=True) + "\n",
                      mode=0o600)
