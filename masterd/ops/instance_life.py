"""An instance's life on its primary node: start, stop, reboot, its disks, what it is, its console.

Ganeti's LUs, with their checks, feedback, hooks and node calls in the order a
real master makes them (rpc-trace.md):

* OP_INSTANCE_STARTUP (hooks instance-start): ``bridges_exist`` (bridged
  NICs), ``instance_info`` (a running instance needs no memory), ``node_info``
  (free memory for the instance's minmem, with the opcode's temporary
  ``beparams``), pre hooks, admin state up (unless ``no_remember``),
  ``blockdev_assemble`` in two passes, ``instance_start`` with the temporary
  ``hvparams``/``beparams`` (not for an instance that already runs), post
  hooks. An offline primary is refused, or
  with ``ignore_offline_nodes`` only the admin state changes.
* OP_INSTANCE_SHUTDOWN (instance-stop): pre hooks, admin state down,
  ``instance_shutdown``, ``blockdev_shutdown``, post hooks.
* OP_INSTANCE_REBOOT (instance-reboot): ``bridges_exist``, pre hooks,
  ``instance_info``; soft and hard reboots of a running instance are one
  ``instance_reboot``; a full reboot, or a stopped instance, is
  ``instance_shutdown`` + ``blockdev_shutdown`` (when running) then
  ``blockdev_assemble`` + ``instance_start``; admin state up; post hooks.
* OP_INSTANCE_ACTIVATE_DISKS / OP_INSTANCE_DEACTIVATE_DISKS (no hooks):
  the disks assembled (the result is ``[[node, iv_name, dev_path], ...]``,
  what ``gnt-instance activate-disks`` prints) or shut down (refused while
  the instance runs, unless ``force``).
* OP_INSTANCE_QUERY_DATA (``gnt-instance info``): per instance the dict of
  Ganeti's LUInstanceQueryData; live data (``instance_info`` and
  ``blockdev_find`` per disk) unless ``static``.
* OP_INSTANCE_CONSOLE: ``instance_list`` on the primary (the instance must
  run), then the console dict from the primary's ``instance_console_info``
  (the node's hypervisor knows its own socket paths).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from compat_jsonrpc.codec import CodecError
from masterd import rpc as master_rpc
from masterd.config.model import ConfigData
from masterd.instances import common, model
from masterd.instances.common import (
    ECODE_ENVIRON,
    ECODE_INVAL,
    ECODE_NOENT,
    ECODE_STATE,
    node_name,
    shutdown_disks,
)
from masterd.instances.model import Instance
from masterd.locking import ALL_SET, Level
from masterd.luxi.protocol import GanetiError, OpExecError, OpPrereqError
from masterd.ops.base import LockRequest, Operation
from masterd.rpc import RpcResult
from noded.hypervisor import get_hypervisor_class
from noded.hypervisor.base import HypervisorError

#: Ganeti's INSTANCE_ONLINE / INSTANCE_DOWN admin states.
INSTANCE_ONLINE = (model.ADMIN_DOWN, model.ADMIN_UP)
INSTANCE_DOWN = (model.ADMIN_DOWN,)
ADMIN_SOURCE = "admin"
USER_SOURCE = "user"
REBOOT_SOFT = "soft"
REBOOT_HARD = "hard"
REBOOT_FULL = "full"
#: HvInstanceState.SHUTDOWN as instance_info reports it.
HV_STATE_SHUTDOWN = 1
#: Hypervisor parameters that are cluster-wide only (constants.HVC_GLOBALS).
HVC_GLOBALS = frozenset({"migration_bandwidth", "migration_mode", "migration_port", "xen_cmd"})
#: constants.INSTST_* for a stopped instance.
INSTST_ERRORDOWN = "ERROR_down"
INSTST_ADMINDOWN = "ADMIN_down"
INSTST_ADMINOFFLINE = "ADMIN_offline"
#: Backend parameter types (constants.BES_PARAMETER_TYPES): how the CLI's strings become values.
BE_SIZES = ("maxmem", "minmem", "memory")
BE_INTS = ("vcpus", "spindle_use")
BE_BOOLS = ("auto_balance", "always_failover")
_UNIT_RE = re.compile(r"^([.\d]+)\s*([a-zA-Z]+)?$")


# --- small helpers ----------------------------------------------------------------------------

def parse_unit(text: str) -> int:
    """Ganeti's ParseUnit: a size with an optional unit (M, G, T; MiB default) in MiB, rounded up to 4."""
    match = _UNIT_RE.match(str(text).strip())
    if not match:
        raise ValueError(f"Invalid format for value '{text}'")
    value = float(match.group(1))
    unit = (match.group(2) or "m").lower()
    if unit in ("m", "mb", "mib"):
        factor = 1.0
    elif unit in ("g", "gb", "gib"):
        factor = 1024.0
    elif unit in ("t", "tb", "tib"):
        factor = 1024.0 * 1024
    else:
        raise ValueError(f"Unknown unit: {match.group(2)}")
    result = int(value * factor + 0.5) if factor == 1.0 else int(value * factor)
    if result % 4:
        result += 4 - result % 4
    return result


def force_be_types(beparams: Mapping[str, Any]) -> dict[str, Any]:
    """Ganeti's ForceDictType(beparams, BES_PARAMETER_TYPES), then UpgradeBeParams; OpPrereqError."""
    result: dict[str, Any] = {}
    for key, value in beparams.items():
        if key in BE_SIZES:
            if isinstance(value, str):
                try:
                    value = parse_unit(value)
                except ValueError as err:
                    raise OpPrereqError(f"'{key}' (value {value}) is not a valid size. error: {err}",
                                        ECODE_INVAL) from None
            elif not isinstance(value, int) or isinstance(value, bool):
                raise OpPrereqError(f"'{key}' (value {value}) is not a valid size", ECODE_INVAL)
        elif key in BE_INTS:
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise OpPrereqError(f"'{key}' (value {value}) is not a valid integer", ECODE_INVAL) from None
        elif key in BE_BOOLS:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise OpPrereqError(f"'{key}' (value {value}) is not a valid boolean", ECODE_INVAL)
                value = value.lower() in ("true", "yes", "1")
            value = bool(value)
        else:
            raise OpPrereqError(f"Unknown parameter '{key}'", ECODE_INVAL)
        result[key] = value
    return model.upgrade_be(result)


def coerce_like(reference: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Strings from the command line typed like the current values (ForceDictType for booleans, integers)."""
    result: dict[str, Any] = {}
    for key, value in values.items():
        current = reference.get(key)
        if isinstance(value, str) and isinstance(current, bool):
            lowered = value.lower()
            if lowered in ("true", "yes", "1"):
                value = True
            elif lowered in ("false", "no", "0"):
                value = False
            else:
                raise OpPrereqError(f"'{key}' (value {value}) is not a valid boolean", ECODE_INVAL)
        elif isinstance(value, str) and isinstance(current, int) and not isinstance(current, bool):
            try:
                value = int(value)
            except ValueError:
                raise OpPrereqError(f"'{key}' (value {value}) is not a valid integer", ECODE_INVAL) from None
        result[key] = value
    return result


def fail_text(what: str, result: RpcResult) -> str:
    """Ganeti's RpcResult.Raise wording: "<what>: <node's message>"."""
    return f"{what}: {result.fail_msg}"


def check_instance_state(cfg: ConfigData, inst: Instance, states: tuple[str, ...],
                         msg: str | None = None) -> None:
    """The admin-state half of Ganeti's CheckInstanceState (the running check is `check_not_running`)."""
    if msg is None:
        msg = f"can't use instance from outside {', '.join(states)} states"
    if inst.admin_state not in states:
        raise OpPrereqError(f"Instance '{inst.name}' is marked to be {inst.admin_state}, {msg}", ECODE_STATE)


def is_user_down(cfg: ConfigData, inst: Instance, info: Any) -> bool:
    """Ganeti's _IsInstanceUserDown: the hypervisor reports the instance shut down from inside."""
    if not (isinstance(info, dict) and "state" in info and info["state"] == HV_STATE_SHUTDOWN):
        return False
    if inst.hypervisor != "kvm":
        return True
    return bool(model.fill_hv(cfg, inst.hypervisor, inst.os, inst.hvparams).get("user_shutdown"))


def cluster_hvparams(cfg: ConfigData, hypervisor: str) -> dict[str, Any]:
    """The cluster's parameters of one hypervisor (what Ganeti sends to instance_info and node_info)."""
    return dict((cfg.cluster.get("hvparams") or {}).get(hypervisor) or {})


async def instance_info(ctx: Any, cfg: ConfigData, inst: Instance) -> RpcResult:
    return await common.node_call(ctx, node_name(cfg, inst.primary_node), "instance_info",
                                  [inst.name, inst.hypervisor, cluster_hvparams(cfg, inst.hypervisor)])


async def check_not_running(ctx: Any, cfg: ConfigData, inst: Instance, msg: str) -> None:
    """The running half of CheckInstanceState for states without "up" (IsInstanceRunning)."""
    if cfg.node(inst.primary_node).offline:
        await ctx.log(" - WARNING: Primary node offline, ignoring check that instance is down")
        return
    result = await instance_info(ctx, cfg, inst)
    if result.fail_msg is not None:
        raise OpPrereqError(fail_text(f"Can't retrieve instance information for instance '{inst.name}'",
                                      result), ECODE_ENVIRON)
    payload = result.payload
    if payload and "state" in payload and payload["state"] != HV_STATE_SHUTDOWN:
        raise OpPrereqError(f"Instance {inst.name} is running, {msg}", ECODE_STATE)


async def set_admin_state(ctx: Any, inst: Instance, state: str, source: str = ADMIN_SOURCE) -> Instance:
    """Ganeti's MarkInstanceUp/Down: the admin state and its source (no change, no serial bump)."""
    assert ctx.config is not None
    async with ctx.config.change() as cfg:
        model.set_instance(cfg, inst.uuid, admin_state=state, admin_state_source=source)
    return model.instance(ctx.config.current, inst.uuid)


async def assemble_disks(ctx: Any, inst: Instance, ignore_secondaries: bool = False,
                         ignore_size: bool = False) -> tuple[bool, list[list[Any]]]:
    """Ganeti's AssembleInstanceDisks: (ok, [[primary name, iv_name, dev_path], ...]).

    The disks are marked active first; pass 1 assembles every disk on each of
    its nodes as secondary, pass 2 on the primary. Failures are warnings; on
    failure the disks are marked inactive again (the caller shuts them down).
    """
    assert ctx.config is not None
    async with ctx.config.change() as cfg:
        model.set_instance(cfg, inst.uuid, disks_active=True)
    cfg = ctx.config.current
    inst = model.instance(cfg, inst.uuid)
    idict = common.inst_dict(ctx, cfg, inst)
    disks = model.instance_disks(cfg, inst)
    secondaries = set(model.instance_secondaries(cfg, inst))
    pname = node_name(cfg, inst.primary_node)
    ok = True

    def encoded(disk: dict[str, Any]) -> dict[str, Any]:
        sent = common.disk_dict(ctx, cfg, disk, inst)
        if ignore_size:
            sent["size"] = None
        return sent

    for idx, disk in enumerate(disks):
        for holder in disk.get("nodes") or [inst.primary_node]:
            name = node_name(cfg, holder)
            offline = cfg.node(holder).offline
            if offline:
                result = RpcResult(name, fail_msg="Node is marked offline", offline=True)
            else:
                result = await common.node_call(ctx, name, "blockdev_assemble",
                                                [encoded(disk), idict, False, idx])
            if result.fail_msg is not None:
                await ctx.log(f" - WARNING: Could not prepare block device {disk.get('iv_name')} on node"
                              f" {name} (is_primary=False, pass=1): {result.fail_msg}")
                if not (ignore_secondaries or (holder in secondaries and result.offline)):
                    ok = False
    info: list[list[Any]] = []
    for idx, disk in enumerate(disks):
        dev_path = None
        if inst.primary_node in (disk.get("nodes") or [inst.primary_node]):
            result = await common.node_call(ctx, pname, "blockdev_assemble",
                                            [encoded(disk), idict, True, idx])
            if result.fail_msg is not None:
                await ctx.log(f" - WARNING: Could not prepare block device {disk.get('iv_name')} on node"
                              f" {pname} (is_primary=True, pass=2): {result.fail_msg}")
                ok = False
            elif isinstance(result.payload, list) and result.payload:
                dev_path = result.payload[0]
        info.append([pname, disk.get("iv_name"), dev_path])
    if not ok:
        async with ctx.config.change() as cfg:
            model.set_instance(cfg, inst.uuid, disks_active=False)
    return ok, info


async def start_disks(ctx: Any, inst: Instance, force: bool | None) -> None:
    """Ganeti's StartInstanceDisks: assemble, or shut down again and fail with "Disk consistency error"."""
    ok, _ = await assemble_disks(ctx, inst, ignore_secondaries=bool(force))
    if not ok:
        await shutdown_disks(ctx, inst)
        if force is not None and not force:
            await ctx.log("      Hint: If the message above refers to a secondary node, you can retry the"
                          " operation using '--force'")
        raise OpExecError("Disk consistency error")


# --- the opcodes ------------------------------------------------------------------------------

class _InstanceOperation(Operation):
    """An opcode on one instance named by ``instance_name``."""

    req_bgl = False
    #: Which node locks: "none", "primary" (NODE_RES on the primary) or "all" (NODE on every node).
    node_locks = "none"
    shared = False

    def _config(self) -> ConfigData:
        if self.ctx.config is None:
            raise OpPrereqError("This master has no cluster configuration", ECODE_STATE)
        return self.ctx.config.current

    def _instance(self) -> Instance:
        """The instance as the configuration has it now (Ganeti's _ExpandAndLockInstance name check)."""
        return model.lookup_instance(self._config(), str(self.op.get("instance_name") or ""))

    def locks(self) -> list[LockRequest]:
        inst = self._instance()
        cfg = self._config()
        found: list[LockRequest] = [(Level.INSTANCE, [inst.name], self.shared)]
        if self.node_locks == "primary":
            found.append((Level.NODE_RES, [node_name(cfg, inst.primary_node)], self.shared))
        elif self.node_locks == "all":
            found.append((Level.NODE, [node_name(cfg, u) for u in model.instance_nodes(cfg, inst)],
                          self.shared))
        return found

    async def warn(self, message: str) -> None:
        await self.ctx.log(f" - WARNING: {message}")


class InstanceStartup(_InstanceOperation):
    op_id = "OP_INSTANCE_STARTUP"
    node_locks = "primary"

    async def _check_hvparams(self, cfg: ConfigData, inst: Instance,
                              hvparams: dict[str, Any]) -> dict[str, Any]:
        """The overrides typed, Ganeti's CheckParameterSyntax here, then CheckHVParams on the nodes."""
        filled = model.fill_hv(cfg, inst.hypervisor, inst.os, inst.hvparams)
        hvparams = coerce_like(filled, hvparams)
        filled.update(hvparams)
        try:
            get_hypervisor_class(inst.hypervisor).check_parameter_syntax(filled)
        except HypervisorError as err:
            raise GanetiError("HypervisorError", str(err)) from None
        nodes = [cfg.node(u) for u in model.instance_nodes(cfg, inst)]
        for node in nodes:
            if node.offline:
                continue
            result = await common.node_call(self.ctx, node.name, "hypervisor_validate_params",
                                            [inst.hypervisor, filled])
            if result.fail_msg is not None:
                raise OpPrereqError(f"Hypervisor parameter validation failed on node {node.name}:"
                                    f" {result.fail_msg}", ECODE_INVAL)
        return hvparams

    async def exec(self) -> Any:
        cfg = self._config()
        inst = self._instance()
        beparams = force_be_types(dict(self.op.get("beparams") or {}))
        hvparams = dict(self.op.get("hvparams") or {})
        if hvparams:
            hvparams = await self._check_hvparams(cfg, inst, hvparams)
        check_instance_state(cfg, inst, INSTANCE_ONLINE)
        primary = cfg.node(inst.primary_node)
        primary_offline = primary.offline
        requires_cleanup = False
        already_running = False
        if primary_offline and self.op.get("ignore_offline_nodes"):
            await self.warn("Ignoring offline primary node")
            if hvparams or beparams:
                await self.warn("Overridden parameters are ignored")
        else:
            common.check_node_online(cfg, inst.primary_node)
            bep = model.fill_be(cfg, inst.beparams)
            bep.update(beparams)
            await common.check_bridges(self.ctx, cfg, inst.nics, node_name(cfg, inst.primary_node))
            remote = await instance_info(self.ctx, cfg, inst)
            if remote.fail_msg is not None:
                raise OpPrereqError(fail_text(f"Error checking node {primary.name}", remote), ECODE_ENVIRON)
            if remote.payload:
                requires_cleanup = is_user_down(cfg, inst, remote.payload)
                already_running = not requires_cleanup
            else:
                await common.check_free_memory(self.ctx, cfg, inst.primary_node,
                                               f"starting instance {inst.name}",
                                               int(bep.get(model.BE_MINMEM) or 0), inst.hypervisor)

        hooks = common.instance_hooks(self.ctx, cfg, inst, "instance-start", self.op_id)
        await hooks.pre({"FORCE": bool(self.op.get("force")), **common.instance_hook_env(cfg, inst)})
        if not self.op.get("no_remember"):
            inst = await set_admin_state(self.ctx, inst, model.ADMIN_UP)
        if primary_offline:
            await self.ctx.log_info("Primary node offline, marked instance as started")
        else:
            why = common.reason(self.op)
            if requires_cleanup:
                result = await common.node_call(
                    self.ctx, primary.name, "instance_shutdown",
                    [common.inst_dict(self.ctx, self._config(), inst),
                     int(self.op.get("shutdown_timeout", 120)), why])
                if result.fail_msg is not None:
                    raise OpExecError(fail_text(f"Could not shutdown instance '{inst.name}'", result))
                await shutdown_disks(self.ctx, inst)
            await start_disks(self.ctx, inst, bool(self.op.get("force")))
            cur = self._config()
            inst = model.instance(cur, inst.uuid)
            # Ganeti's node answers a start of a running instance with success and does nothing;
            # ours refuses it, so the master leaves a running instance alone.
            result = RpcResult(primary.name) if already_running else await common.node_call(
                self.ctx, primary.name, "instance_start",
                [common.inst_dict(self.ctx, cur, inst, hvp=hvparams or None, bep=beparams or None),
                 bool(self.op.get("startup_paused")), why])
            if result.fail_msg is not None:
                await shutdown_disks(self.ctx, inst)
                raise OpExecError(fail_text(f"Could not start instance '{inst.name}'", result))
        cur = self._config()
        await hooks.post(common.instance_hook_env(cur, model.instance(cur, inst.uuid)))
        return None


class InstanceShutdown(_InstanceOperation):
    op_id = "OP_INSTANCE_SHUTDOWN"

    async def exec(self) -> Any:
        cfg = self._config()
        inst = self._instance()
        source = self.op.get("admin_state_source")
        if self.op.get("no_remember") and source is not None:
            await self.warn("Parameter 'admin_state_source' has no effect if used with parameter"
                            " 'no_remember'")
        source = source or ADMIN_SOURCE
        if self.op.get("force"):
            await self.warn("Ignoring offline instance check")
        else:
            check_instance_state(cfg, inst, INSTANCE_ONLINE)
        primary = cfg.node(inst.primary_node)
        primary_offline = primary.offline
        if primary_offline and self.op.get("ignore_offline_nodes"):
            await self.warn("Ignoring offline primary node")
        else:
            common.check_node_online(cfg, inst.primary_node)
        if source == USER_SOURCE:
            result = await instance_info(self.ctx, cfg, inst)
            if result.fail_msg is not None:
                raise OpPrereqError(fail_text(f"Error checking instance '{inst.name}'", result),
                                    ECODE_ENVIRON)
            if not is_user_down(cfg, inst, result.payload):
                raise OpPrereqError(f"Instance '{inst.name}' was not shutdown by the user", ECODE_STATE)

        timeout = int(self.op.get("timeout", 120))
        hooks = common.instance_hooks(self.ctx, cfg, inst, "instance-stop", self.op_id)
        await hooks.pre({**common.instance_hook_env(cfg, inst), "TIMEOUT": timeout})
        if not self.op.get("no_remember") and inst.admin_state in INSTANCE_ONLINE:
            inst = await set_admin_state(self.ctx, inst, model.ADMIN_DOWN, source)
        if primary_offline:
            await self.ctx.log_info("Primary node offline, marked instance as stopped")
        else:
            result = await common.node_call(
                self.ctx, primary.name, "instance_shutdown",
                [common.inst_dict(self.ctx, self._config(), inst), timeout, common.reason(self.op)])
            if result.fail_msg is not None:
                raise OpExecError(fail_text(f"Could not shutdown instance '{inst.name}'", result))
            await shutdown_disks(self.ctx, inst)
        cur = self._config()
        await hooks.post(common.instance_hook_env(cur, model.instance(cur, inst.uuid)))
        return None


class InstanceReboot(_InstanceOperation):
    op_id = "OP_INSTANCE_REBOOT"

    async def exec(self) -> Any:
        cfg = self._config()
        inst = self._instance()
        reboot_type = str(self.op.get("reboot_type") or "")
        if reboot_type not in (REBOOT_SOFT, REBOOT_HARD, REBOOT_FULL):
            raise OpPrereqError(f"Invalid reboot type '{reboot_type}'", ECODE_INVAL)
        timeout = int(self.op.get("shutdown_timeout", 120))
        ignore_secondaries = bool(self.op.get("ignore_secondaries"))
        check_instance_state(cfg, inst, INSTANCE_ONLINE)
        common.check_node_online(cfg, inst.primary_node)
        await common.check_bridges(self.ctx, cfg, inst.nics, node_name(cfg, inst.primary_node))

        hooks = common.instance_hooks(self.ctx, cfg, inst, "instance-reboot", self.op_id)
        await hooks.pre({"IGNORE_SECONDARIES": ignore_secondaries, "REBOOT_TYPE": reboot_type,
                         "SHUTDOWN_TIMEOUT": timeout, **common.instance_hook_env(cfg, inst)})
        pname = node_name(cfg, inst.primary_node)
        remote = await instance_info(self.ctx, cfg, inst)
        if remote.fail_msg is not None:
            raise OpExecError(fail_text(f"Error checking node {pname}", remote))
        running = bool(remote.payload)
        why = common.reason(self.op)
        if running and reboot_type in (REBOOT_SOFT, REBOOT_HARD):
            idict = common.inst_dict(self.ctx, cfg, inst)
            result = await common.node_call(self.ctx, pname, "instance_reboot",
                                            [idict, reboot_type, timeout, why])
            if result.fail_msg is not None:
                raise OpExecError(fail_text("Could not reboot instance", result))
        else:
            if running:
                result = await common.node_call(self.ctx, pname, "instance_shutdown",
                                                [common.inst_dict(self.ctx, cfg, inst), timeout, why])
                if result.fail_msg is not None:
                    raise OpExecError(fail_text("Could not shutdown instance for full reboot", result))
                await shutdown_disks(self.ctx, inst)
            else:
                await self.ctx.log_info("Instance %s was already stopped, starting now", inst.name)
            await start_disks(self.ctx, inst, ignore_secondaries)
            cur = self._config()
            inst = model.instance(cur, inst.uuid)
            result = await common.node_call(self.ctx, pname, "instance_start",
                                            [common.inst_dict(self.ctx, cur, inst), False, why])
            if result.fail_msg is not None:
                await shutdown_disks(self.ctx, inst)
                raise OpExecError(f"Could not start instance for full reboot: {result.fail_msg}")
        inst = await set_admin_state(self.ctx, inst, model.ADMIN_UP)
        await hooks.post(common.instance_hook_env(self._config(), inst))
        return None


class InstanceActivateDisks(_InstanceOperation):
    op_id = "OP_INSTANCE_ACTIVATE_DISKS"
    node_locks = "all"

    async def exec(self) -> Any:
        cfg = self._config()
        inst = self._instance()
        common.check_node_online(cfg, inst.primary_node)
        ok, info = await assemble_disks(self.ctx, inst, ignore_size=bool(self.op.get("ignore_size")))
        if not ok:
            raise OpExecError("Cannot activate block devices")
        if self.op.get("wait_for_sync"):
            await common.wait_for_sync(self.ctx, model.instance(self._config(), inst.uuid))
        return info


class InstanceDeactivateDisks(_InstanceOperation):
    op_id = "OP_INSTANCE_DEACTIVATE_DISKS"
    node_locks = "all"

    async def exec(self) -> Any:
        cfg = self._config()
        inst = self._instance()
        if not self.op.get("force"):
            msg = "cannot shutdown disks"
            check_instance_state(cfg, inst, INSTANCE_DOWN, msg=msg)
            await check_not_running(self.ctx, cfg, inst, msg)
        await shutdown_disks(self.ctx, inst)
        return None


class InstanceQueryData(Operation):
    op_id = "OP_INSTANCE_QUERY_DATA"
    req_bgl = False

    def __init__(self, op: dict[str, Any], ctx: Any) -> None:
        super().__init__(op, ctx)
        #: Ganeti warns when live data is asked without locks (and then takes them).
        self.pending_warning = False

    def _config(self) -> ConfigData:
        if self.ctx.config is None:
            raise OpPrereqError("This master has no cluster configuration", ECODE_STATE)
        return self.ctx.config.current

    def _wanted(self, cfg: ConfigData) -> list[Instance]:
        """Ganeti's GetWantedInstances: the named instances (each must exist), or all, by name."""
        names = [str(n) for n in self.op.get("instances") or []]
        if not names:
            return sorted(model.instances(cfg), key=lambda i: i.name)
        found: dict[str, Instance] = {}
        for name in names:
            inst = model.find_instance(cfg, name)
            if inst is None:
                raise OpPrereqError(f"Instance '{name}' not known", ECODE_NOENT)
            found.setdefault(inst.uuid, inst)
        return list(found.values())

    def locks(self) -> list[LockRequest]:
        self.pending_warning = not (self.op.get("static") or self.op.get("use_locking"))
        if self.pending_warning:
            self.op["use_locking"] = True
        cfg = self._config()
        if not self.op.get("use_locking"):
            self._wanted(cfg)  # unknown names fail before anything else
            return []
        names: Any = [i.name for i in self._wanted(cfg)] if self.op.get("instances") else ALL_SET
        nodes: Any = ALL_SET if names is ALL_SET else sorted(
            {node_name(cfg, u) for i in self._wanted(cfg) for u in model.instance_nodes(cfg, i)})
        return [(Level.INSTANCE, names, True), (Level.NODE, nodes, True)]

    async def _blockdev_status(self, cfg: ConfigData, node_uuid: str | None, inst: Instance,
                               disk: dict[str, Any]) -> list[Any] | None:
        if self.op.get("static") or not node_uuid:
            return None
        node = cfg.node(node_uuid)
        if node.offline:
            return None
        result = await common.node_call(self.ctx, node.name, "blockdev_find",
                                        [common.disk_dict(self.ctx, cfg, disk, inst)])
        if result.fail_msg is not None:
            raise OpExecError(fail_text(f"Can't compute disk status for {inst.name}", result))
        status = result.payload
        if not isinstance(status, dict):
            return None
        return [status.get("dev_path"), status.get("major"), status.get("minor"), status.get("sync_percent"),
                status.get("estimated_time"), status.get("is_degraded"), status.get("ldisk_status")]

    async def _disk_status(self, cfg: ConfigData, inst: Instance, snode: str | None,
                           disk: dict[str, Any]) -> dict[str, Any]:
        children = [await self._disk_status(cfg, inst, snode, child) for child in disk.get("children") or []]
        return {
            "iv_name": disk.get("iv_name"), "dev_type": disk.get("dev_type"),
            "logical_id": disk.get("logical_id"), "drbd_info": None,
            "pstatus": await self._blockdev_status(cfg, inst.primary_node, inst, disk),
            "sstatus": await self._blockdev_status(cfg, snode, inst, disk),
            "children": children, "mode": disk.get("mode"), "size": disk.get("size"),
            "spindles": disk.get("spindles"), "name": disk.get("name"), "uuid": disk.get("uuid"),
        }

    async def _run_state(self, cfg: ConfigData, inst: Instance, hvparams: dict[str, Any]) -> str | None:
        pnode = cfg.node(inst.primary_node)
        if self.op.get("static") or pnode.offline:
            if pnode.offline:
                await self.ctx.log(f" - WARNING: Primary node {pnode.name} is marked offline, returning"
                                   f" static information only for instance {inst.name}")
            return None
        result = await instance_info(self.ctx, cfg, inst)
        if result.fail_msg is not None:
            raise OpExecError(fail_text(f"Error checking node {pnode.name}", result))
        remote = result.payload
        allow_userdown = bool(cfg.cluster.get("enabled_user_shutdown")) and (
            inst.hypervisor != "kvm" or bool(hvparams.get("user_shutdown")))
        if isinstance(remote, dict) and "state" in remote:
            if remote["state"] == HV_STATE_SHUTDOWN:
                return "user down" if allow_userdown else "down"
            return "up"
        if inst.admin_state == model.ADMIN_UP:
            return "down"
        if inst.admin_state == model.ADMIN_DOWN:
            return "user down" if inst.admin_state_source == USER_SOURCE else "down"
        return "offline"

    def _nic_tuple(self, cfg: ConfigData, nic: dict[str, Any]) -> list[Any]:
        """Ganeti's NICToTuple: name, uuid, ip, mac, mode, link, vlan, network, netinfo."""
        params = model.fill_nic(cfg, nic.get("nicparams"))
        network = nic.get("network")
        netinfo = None
        if network:
            raw = (cfg.tree.get("networks") or {}).get(network)
            netinfo = dict(raw) if isinstance(raw, dict) else None
        return [nic.get("name"), nic.get("uuid"), nic.get("ip"), nic.get("mac"), params.get("mode"),
                params.get("link"), params.get("vlan"), network, netinfo]

    async def exec(self) -> Any:
        if self.pending_warning:
            await self.ctx.log(" - WARNING: Non-static data requested, locks need to be acquired")
        cfg = self._config()
        groups = cfg.tree.get("nodegroups") or {}

        def group_name(uuid: str) -> str:
            return str((groups.get(uuid) or {}).get("name", uuid))

        result: dict[str, Any] = {}
        for inst in self._wanted(cfg):
            pnode = cfg.node(inst.primary_node)
            hvparams = {k: v for k, v in model.fill_hv(cfg, inst.hypervisor, inst.os, inst.hvparams).items()
                        if k not in HVC_GLOBALS}
            run_state = await self._run_state(cfg, inst, hvparams)
            secondaries = model.instance_secondaries(cfg, inst)
            snode_groups = [cfg.node(u).group for u in secondaries]
            disks = [await self._disk_status(cfg, inst, None, disk)
                     for disk in model.instance_disks(cfg, inst)]
            raw = inst.raw
            result[inst.name] = {
                "name": inst.name,
                "config_state": inst.admin_state,
                "run_state": run_state,
                "pnode": pnode.name,
                "pnode_group_uuid": pnode.group,
                "pnode_group_name": group_name(pnode.group),
                "snodes": [node_name(cfg, u) for u in secondaries],
                "snodes_group_uuids": snode_groups,
                "snodes_group_names": [group_name(g) for g in snode_groups],
                "os": inst.os,
                "nics": [self._nic_tuple(cfg, nic) for nic in inst.nics],
                "disk_template": model.disk_template(cfg, inst),
                "disks": disks,
                "hypervisor": inst.hypervisor,
                "network_port": inst.network_port,
                "hv_instance": inst.hvparams,
                "hv_actual": hvparams,
                "be_instance": inst.beparams,
                "be_actual": model.fill_be(cfg, inst.beparams),
                "os_instance": inst.osparams,
                "os_actual": model.fill_os(cfg, inst.os, inst.osparams),
                "serial_no": inst.serial_no,
                "mtime": raw.get("mtime"),
                "ctime": raw.get("ctime"),
                "uuid": inst.uuid,
            }
        return result


async def console_info(ctx: Any, cfg: ConfigData, inst: Instance) -> dict[str, Any]:
    """The instance's console dict from its primary's instance_console_info (the hypervisor's answer)."""
    node = cfg.node(inst.primary_node)
    node_raw = dict(cfg.tree["nodes"].get(inst.primary_node) or {})
    group_raw = dict((cfg.tree.get("nodegroups") or {}).get(node.group) or {})
    body = {inst.name: {
        "instance": common.inst_dict(ctx, cfg, inst), "node": node_raw, "group": group_raw,
        "hvParams": model.fill_hv(cfg, inst.hypervisor, inst.os, inst.hvparams),
        "beParams": model.fill_be(cfg, inst.beparams)}}
    client = ctx.node_rpc
    if client is None:
        raise OpExecError("this master has no node RPC client")
    try:
        result = await master_rpc.call_one(client, node.name, "instance_console_info", body)
    except CodecError as err:
        raise OpExecError(f"Cannot encode the console request for {inst.name}: {err}") from None
    if result.fail_msg is not None:
        raise OpExecError(fail_text(f"Can't get the console of instance {inst.name} from node {node.name}",
                                    result))
    consoles = result.payload if isinstance(result.payload, dict) else {}
    console = consoles.get(inst.name)
    if not isinstance(console, dict):
        raise OpExecError(f"Node {node.name} returned no console for instance {inst.name}")
    return console


class InstanceConsole(_InstanceOperation):
    op_id = "OP_INSTANCE_CONSOLE"
    shared = True

    async def exec(self) -> Any:
        cfg = self._config()
        inst = self._instance()
        common.check_node_online(cfg, inst.primary_node)
        pname = node_name(cfg, inst.primary_node)
        all_hv = {hv: dict(params) for hv, params in (cfg.cluster.get("hvparams") or {}).items()}
        result = await common.node_call(self.ctx, pname, "instance_list", [[inst.hypervisor], all_hv])
        if result.fail_msg is not None:
            raise OpExecError(fail_text(f"Can't get node information from {pname}", result))
        if inst.name not in (result.payload or []):
            if inst.admin_state == model.ADMIN_UP:
                state = INSTST_ERRORDOWN
            elif inst.admin_state == model.ADMIN_DOWN:
                state = INSTST_ADMINDOWN
            else:
                state = INSTST_ADMINOFFLINE
            raise OpExecError(f"Instance {inst.name} is not running (state {state})")
        return await console_info(self.ctx, cfg, inst)


LIFE_OPERATIONS: tuple[type[Operation], ...] = (
    InstanceStartup, InstanceShutdown, InstanceReboot, InstanceActivateDisks, InstanceDeactivateDisks,
    InstanceQueryData, InstanceConsole)
