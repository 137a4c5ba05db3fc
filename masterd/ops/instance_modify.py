"""OP_INSTANCE_SET_PARAMS, OP_INSTANCE_GROW_DISK, OP_INSTANCE_RENAME and OP_INSTANCE_REINSTALL.

Set parameters (gnt-instance modify), in Ganeti's order: the argument
checks that need no node ("No changes submitted", global hypervisor
parameters, one add/remove per kind, NIC and disk parameter syntax), then
hotplug_supported when ``--hotplug`` / ``--hotplug-if-possible`` is given,
the disk changes (a disk is removed only from a stopped instance unless
hot-plugged), hypervisor parameters checked with hypervisor_validate_params
on the instance's nodes, backend parameters (``memory`` sets maxmem and
minmem) with the primary's free memory when maxmem grows (node_info and
instance_info), OS parameters checked with os_validate, the runtime memory
(running instance, between minmem and maxmem unless forced), NIC changes
(MAC generated or checked unique, routed NICs need an IP, bridges checked)
and the group's instance policy, then the pre hooks. The changes: runtime
memory (instance_balloon_memory), disks added (blockdev_create, then with
hotplug blockdev_assemble + hotplug_device) or removed (hotplug_device,
blockdev_shutdown, blockdev_remove) or their mode/name changed, then the
NICs (hotplug_device hotadd / hotmod / hotremove when hot-plugging), the
hypervisor, backend and OS parameters, the OS name and the offline/online
state in one configuration change; post hooks. The result is Ganeti's list
of ``[name, new value]`` pairs that gnt-instance modify prints
("be/maxmem -> 256").

Grow disk: the disk's nodes online, a growable template, the target (absolute
or relative) not smaller than the disk, the instance policy; a dry run of
blockdev_grow on every node of the disk (before anything is changed, so a
grow beyond the storage changes nothing), the disks assembled when they were
not, blockdev_grow for real on the backing storage of every node and on the
primary's logical device, the size recorded, the sync status, the disks shut
down again when they had been inactive.

Rename: the new name resolved (name check) and pinged (IP check), unused,
the instance down; the configuration renamed (file disks move into the
directory of the new name), file_storage_dir_rename on the primary, the
disks assembled, blockdev_setinfo, instance_run_rename (the OS rename
script; a failure is a warning, as in Ganeti), the disks shut down. Result:
the new name.

Reinstall: the primary online, the instance has disks and is down, the OS
(the new one with ``os_type``) validated with its parameters on the
instance's nodes; the new OS and OS parameters recorded, the disks
assembled, instance_os_add with reinstall=True, the disks shut down.

Every failed check raises OpPrereqError before the configuration changes.
"""

from __future__ import annotations

import copy
import os
import re
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from masterd import nodecalls
from masterd.config.model import ConfigData
from masterd.instances import common, model
from masterd.instances.common import (
    ECODE_ENVIRON,
    ECODE_EXISTS,
    ECODE_INVAL,
    ECODE_NOENT,
    ECODE_NORES,
    ECODE_STATE,
    node_name,
)
from masterd.locking import Level
from masterd.luxi.protocol import OpExecError, OpPrereqError
from masterd.ops.base import LockRequest, OpContext, Operation
from masterd.ops.instance_create import format_unit, group_ipolicy, ipolicy_violations

ECODE_NOTUNIQUE = "resource_not_unique"
ECODE_RESOLVER = "resolver_error"
IP_CHECK_PORT = 1811
VALUE_DEFAULT = "default"
VALUE_AUTO = "auto"
VALUE_GENERATE = "generate"
VALUE_NONE = "none"
DDM_ADD = "add"
DDM_ATTACH = "attach"
DDM_MODIFY = "modify"
DDM_REMOVE = "remove"
DDM_DETACH = "detach"
DDM_ALL = (DDM_ADD, DDM_ATTACH, DDM_MODIFY, DDM_REMOVE, DDM_DETACH)
MAX_DISKS = 16
MAX_NICS = 8
#: Hypervisor parameters only the cluster may set (constants.HVC_GLOBALS).
HVC_GLOBALS = ("migration_bandwidth", "migration_mode", "migration_port", "xen_cmd")
#: Backend parameter types (constants.BES_PARAMETER_TYPES, plus the legacy memory).
BE_TYPES = {"always_failover": "bool", "auto_balance": "bool", "maxmem": "size", "minmem": "size",
            "memory": "size", "spindle_use": "int", "vcpus": "int"}
NIC_PARAMS = ("mode", "link", "vlan")
INIC_KEYS = ("bridge", "ip", "link", "mac", "mode", "name", "network", "vlan")
IDISK_ADD_KEYS = ("access", "adopt", "dev_type", "metavg", "mode", "name", "provider", "size", "spindles",
                  "vg")
IDISK_MODIFY_KEYS = ("mode", "name")
DISK_MODES = ("rw", "ro")
NIC_MODES = ("bridged", "routed", "openvswitch")
#: Templates whose disks can grow (constants.DTS_GROWABLE).
GROWABLE = ("sharedfile", "drbd", "plain", "file", "rbd", "gluster", "ext")
HOTPLUG_ADD = "hotadd"
HOTPLUG_REMOVE = "hotremove"
HOTPLUG_MODIFY = "hotmod"
_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_UNIT_RE = re.compile(r"^([.\d]+)\s*([a-zA-Z]+)?$")


# --- small helpers ------------------------------------------------------------------------------

def parse_size(value: Any, what: str) -> int:
    """A size in MiB from an int or a string with an optional unit (Ganeti's ParseUnit, rounded up)."""
    if isinstance(value, bool):
        raise OpPrereqError(f"Invalid size for {what}: {value!r}", ECODE_INVAL)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value + 0.999999)
    match = _UNIT_RE.match(str(value).strip())
    if not match:
        raise OpPrereqError(f"Invalid format for size of {what}: {value!r}", ECODE_INVAL)
    number = float(match.group(1))
    unit = (match.group(2) or "M").lower()
    factors = {"m": 1, "mb": 1, "mib": 1, "g": 1024, "gb": 1024, "gib": 1024, "t": 1024 * 1024,
               "tb": 1024 * 1024, "tib": 1024 * 1024}
    if unit not in factors:
        raise OpPrereqError(f"Unknown unit '{match.group(2)}' for {what}", ECODE_INVAL)
    result = number * factors[unit]
    return int(result) + (1 if result != int(result) else 0)


def _to_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise OpPrereqError(f"'{key}' ({value}) is not a valid boolean value", ECODE_INVAL)


def _to_int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise OpPrereqError(f"'{key}' ({value}) is not a valid integer", ECODE_INVAL)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise OpPrereqError(f"'{key}' ({value}) is not a valid integer", ECODE_INVAL) from None


def updated_params(old: Mapping[str, Any], update: Mapping[str, Any],
                   use_none: bool = False) -> dict[str, Any]:
    """Ganeti's GetUpdatedParams: "default" (or None with `use_none`) removes a key, others set it."""
    result = copy.deepcopy(dict(old))
    for key, value in update.items():
        if (isinstance(value, str) and value == VALUE_DEFAULT) or (use_none and value is None):
            result.pop(key, None)
        else:
            result[key] = copy.deepcopy(value)
    return result


def upgrade_be(params: dict[str, Any]) -> dict[str, Any]:
    """Ganeti's UpgradeBeParams: a `memory` value replaces maxmem and minmem."""
    if "memory" in params:
        memory = params.pop("memory")
        params["maxmem"] = memory
        params["minmem"] = memory
    return params


def typed_be(params: dict[str, Any]) -> dict[str, Any]:
    """Backend parameters with their types enforced (ForceDictType over BES_PARAMETER_TYPES)."""
    result: dict[str, Any] = {}
    for key, value in params.items():
        kind = BE_TYPES.get(key)
        if kind is None:
            raise OpPrereqError(f"Unknown parameter '{key}'", ECODE_INVAL)
        if kind == "size":
            result[key] = parse_size(value, key)
        elif kind == "int":
            result[key] = _to_int(value, key)
        else:
            result[key] = _to_bool(value, key)
    return result


def normalize_mac(mac: str) -> str:
    text = str(mac).lower()
    if not _MAC_RE.match(text):
        raise OpPrereqError(f"Invalid MAC address '{mac}'", ECODE_INVAL)
    return text


def _valid_ip(ip: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return False
    return True


def _config(ctx: OpContext) -> ConfigData:
    if ctx.config is None:
        raise OpPrereqError("This master has no cluster configuration", ECODE_STATE)
    return ctx.config.current


def _lookup(ctx: OpContext, op: Mapping[str, Any]) -> model.Instance:
    cfg = _config(ctx)
    name = op.get("instance_name") or op.get("instance_uuid") or ""
    return model.lookup_instance(cfg, str(name))


def _instance_locks(ctx: OpContext, inst: model.Instance, extra: tuple[str, ...] = ()) -> list[LockRequest]:
    cfg = _config(ctx)
    nodes = [node_name(cfg, u) for u in model.instance_nodes(cfg, inst)]
    return [(Level.INSTANCE, [inst.name, *extra], False), (Level.NODE, nodes, False),
            (Level.NODE_RES, nodes, False)]


async def check_instance_state(ctx: OpContext, cfg: ConfigData, inst: model.Instance,
                               req_states: tuple[str, ...], msg: str) -> None:
    """Ganeti's CheckInstanceState (admin state, then really not running when "up" is not allowed)."""
    if inst.admin_state not in req_states:
        raise OpPrereqError(f"Instance '{inst.name}' is marked to be {inst.admin_state}, {msg}", ECODE_STATE)
    if model.ADMIN_UP in req_states:
        return
    if cfg.node(inst.primary_node).offline:
        await ctx.log(" - WARNING: Primary node offline, ignoring check that instance is down")
        return
    if await common.instance_running(ctx, cfg, inst):
        raise OpPrereqError(f"Instance {inst.name} is running, {msg}", ECODE_STATE)


def _renumber_disks(cfg: ConfigData, inst_uuid: str) -> None:
    """Keep the disks' iv_name equal to their position (disk/0, disk/1...)."""
    for idx, disk_uuid in enumerate(cfg.tree["instances"][inst_uuid].get("disks") or []):
        if disk_uuid in cfg.tree["disks"]:
            model.set_disk(cfg, disk_uuid, iv_name=f"disk/{idx}")


def _nic_for_node(cfg: ConfigData, nic: Mapping[str, Any]) -> dict[str, Any]:
    """A NIC as a hotplug call sends it (its parameters filled)."""
    result = copy.deepcopy(dict(nic))
    result["nicparams"] = model.fill_nic(cfg, nic.get("nicparams"))
    return result


async def _os_validate(ctx: OpContext, cfg: ConfigData, inst: model.Instance, os_name: str,
                       params: dict[str, Any], force_variant: bool) -> None:
    """Ganeti's CheckOSParams with required=True on the instance's nodes."""
    for uuid in model.instance_nodes(cfg, inst):
        name = node_name(cfg, uuid)
        result = await common.node_call(ctx, name, "os_validate",
                                        [True, os_name, ["parameters"], params, force_variant])
        if result.fail_msg is not None:
            raise OpPrereqError(f"OS Parameters validation failed on node {name}: {result.fail_msg}",
                                ECODE_INVAL)
        if not result.payload:
            await ctx.log_info("OS %s not found on node %s, validation skipped", os_name, name)


def _policy_message(cfg: ConfigData, node_uuid: str, violations: list[str]) -> str:
    group_uuid = cfg.node(node_uuid).group
    group = cfg.tree["nodegroups"].get(group_uuid) or {}
    return (f"Instance allocation to group {group_uuid} ({group.get('name', '')}) violates policy:"
            f" {', '.join(violations)}")


# --- OP_INSTANCE_SET_PARAMS ------------------------------------------------------------------------

class InstanceSetParams(Operation):
    op_id = "OP_INSTANCE_SET_PARAMS"
    req_bgl = False

    def locks(self) -> list[LockRequest]:
        self._check_arguments()
        return _instance_locks(self.ctx, _lookup(self.ctx, self.op))

    # --- arguments (no node needed) ---------------------------------------------------------------

    def _check_arguments(self) -> None:
        op = self.op
        if not (op.get("nics") or op.get("disks") or op.get("disk_template") or op.get("hvparams")
                or op.get("beparams") or op.get("os_name") or op.get("osparams")
                or op.get("offline") is not None or op.get("runtime_mem") or op.get("pnode")
                or op.get("osparams_private") or op.get("instance_communication") is not None):
            raise OpPrereqError("No changes submitted", ECODE_INVAL)
        used = sorted(set(op.get("hvparams") or {}) & set(HVC_GLOBALS))
        if used:
            raise OpPrereqError("The following hypervisor parameters are global and cannot be customized at"
                                f" instance level, please modify them at cluster level: {', '.join(used)}",
                                ECODE_INVAL)
        self.disk_mods = self._upgrade_mods("disk", op.get("disks") or [])
        self.nic_mods = self._upgrade_mods("NIC", op.get("nics") or [])
        if op.get("disk_template"):
            if self.disk_mods:
                raise OpPrereqError("Disk template conversion and other disk changes not supported at the"
                                    " same time", ECODE_INVAL)
            raise OpPrereqError("Disk template conversion is not supported by this master", ECODE_INVAL)
        if op.get("instance_communication") is not None:
            raise OpPrereqError("Instance communication NICs are not supported by this master", ECODE_INVAL)
        for action, _, params in self.nic_mods:
            self._check_mod_common("NIC", action, params, INIC_KEYS)
            if action in (DDM_ATTACH, DDM_DETACH):
                raise OpPrereqError(f"{action.capitalize()} operation is not supported for NICs", ECODE_INVAL)
            if action in (DDM_ADD, DDM_MODIFY):
                self._verify_nic(action, params)
        for action, _, params in self.disk_mods:
            if action == DDM_MODIFY and "size" in params:
                raise OpPrereqError("Disk size change not possible, use grow-disk", ECODE_INVAL)
            self._check_mod_common("disk", action, params,
                                   IDISK_MODIFY_KEYS if action == DDM_MODIFY else IDISK_ADD_KEYS)
            if action in (DDM_ATTACH, DDM_DETACH):
                raise OpPrereqError(f"Disk {action} is not supported by this master", ECODE_INVAL)

    @staticmethod
    def _upgrade_mods(kind: str, mods: list[Any]) -> list[tuple[str, Any, dict[str, Any]]]:
        """Ganeti's _UpgradeDiskNicMods: legacy [op-or-index, params] pairs become [op, index, params]."""
        result: list[tuple[str, Any, dict[str, Any]]] = []
        if mods and len(mods[0]) == 2:
            addremove = 0
            for what, params in mods:
                if what in (DDM_ADD, DDM_ATTACH, DDM_REMOVE, DDM_DETACH):
                    result.append((what, -1, dict(params or {})))
                    addremove += 1
                    if addremove > 1:
                        raise OpPrereqError(f"Only one {kind} add/attach/remove/detach operation is supported"
                                            " at a time", ECODE_INVAL)
                else:
                    result.append((DDM_MODIFY, what, dict(params or {})))
            return result
        for entry in mods:
            if len(entry) != 3:
                raise OpPrereqError(f"Invalid {kind} modification {entry!r}", ECODE_INVAL)
            result.append((str(entry[0]), entry[1], dict(entry[2] or {})))
        return result

    @staticmethod
    def _check_mod_common(kind: str, action: str, params: dict[str, Any], keys: tuple[str, ...]) -> None:
        if action not in DDM_ALL:
            raise OpPrereqError(f"Unhandled operation '{action}'", ECODE_INVAL)
        if action in (DDM_REMOVE, DDM_DETACH):
            if params:
                raise OpPrereqError(f"No settings should be passed when removing or detaching a {kind}",
                                    ECODE_INVAL)
            return
        for key in params:
            if key not in keys:
                raise OpPrereqError(f"Unknown parameter '{key}'", ECODE_INVAL)

    @staticmethod
    def _verify_nic(action: str, params: dict[str, Any]) -> None:
        """Ganeti's _VerifyNicModification."""
        name = params.get("name")
        if isinstance(name, str) and name.lower() == VALUE_NONE:
            params["name"] = None
        net = params.get("network")
        if net is not None:
            if str(net).lower() == VALUE_NONE:
                params["network"] = None
                net = None
            elif params.get("link") is not None or params.get("mode") is not None:
                raise OpPrereqError("If network is given mode or link should not", ECODE_INVAL)
            else:
                raise OpPrereqError("Networks are not supported by this master", ECODE_INVAL)
        if "bridge" in params:
            bridge = params.pop("bridge")
            if bridge is not None and "link" not in params:
                params["link"] = bridge
        if action == DDM_ADD and params.get("mac") is None:
            params["mac"] = VALUE_AUTO
        ip = params.get("ip")
        if ip is not None:
            if str(ip).lower() == VALUE_NONE:
                params["ip"] = None
            elif str(ip).lower() == "pool":
                raise OpPrereqError("If ip=pool, parameter network cannot be none", ECODE_INVAL)
            elif not _valid_ip(str(ip)):
                raise OpPrereqError(f"Invalid IP address '{ip}'", ECODE_INVAL)
        if "mac" in params:
            mac = params["mac"]
            if mac not in (VALUE_AUTO, VALUE_GENERATE):
                params["mac"] = normalize_mac(mac)
            if action == DDM_MODIFY and mac == VALUE_AUTO:
                raise OpPrereqError("'auto' is not a valid MAC address when modifying an existing NIC",
                                    ECODE_INVAL)
        mode = params.get("mode")
        if mode is not None and mode not in NIC_MODES:
            raise OpPrereqError(f"Invalid NIC mode '{mode}'", ECODE_INVAL)

    # --- checks with the configuration and the nodes ----------------------------------------------

    async def _prereq(self, cfg: ConfigData, inst: model.Instance) -> None:
        op = self.op
        self.warnings: list[str] = []
        self.hotplug = bool(op.get("hotplug"))
        primary = node_name(cfg, inst.primary_node)
        if op.get("pnode") and common.node_uuid(cfg, str(op["pnode"])) != inst.primary_node:
            raise OpPrereqError("Changing the primary node is not supported by this master", ECODE_INVAL)
        if self.hotplug or op.get("hotplug_if_possible"):
            result = await common.node_call(self.ctx, primary, "hotplug_supported",
                                            [common.inst_dict(self.ctx, cfg, inst)])
            if result.fail_msg is not None:
                if self.hotplug:
                    raise OpPrereqError(f"Hotplug is not possible: {result.fail_msg}", ECODE_STATE)
                await self.ctx.log(f" - WARNING: {result.fail_msg}")
                await self.ctx.log_info("Modification will take place without hotplugging.")
                self.hotplug = False
            else:
                self.hotplug = True

        # disks
        template = model.disk_template(cfg, inst)
        disks = model.instance_disks(cfg, inst)
        self.disk_plan: list[tuple[str, int, dict[str, Any]]] = []
        sizes = [int(d.get("size", 0)) for d in disks]
        names = [d.get("name") for d in disks]
        types = [str(d.get("dev_type")) for d in disks]
        count = len(disks)
        for action, ident, params in self.disk_mods:
            if action == DDM_ADD:
                disk_type = str(params.get("dev_type") or template)
                if disk_type == model.DT_DISKLESS:
                    raise OpPrereqError("Must specify disk type on diskless instance", ECODE_INVAL)
                if disk_type not in model.FILE_TEMPLATES:
                    raise OpPrereqError(f"Disk template {disk_type} is not supported by this cluster's nodes"
                                        " (file and sharedfile are)", ECODE_INVAL)
                if disk_type not in (cfg.cluster.get("enabled_disk_templates") or []):
                    raise OpPrereqError(f"Disk template '{disk_type}' is not enabled in cluster",
                                        ECODE_STATE)
                params["dev_type"] = disk_type
                mode = params.setdefault("mode", "rw")
                if mode not in DISK_MODES:
                    raise OpPrereqError(f"Invalid disk access mode '{mode}'", ECODE_INVAL)
                if params.get("size") is None:
                    raise OpPrereqError("Required disk parameter 'size' missing", ECODE_INVAL)
                params["size"] = parse_size(params["size"], "disk size")
                if isinstance(params.get("name"), str) and params["name"].lower() == VALUE_NONE:
                    params["name"] = None
                if not op.get("wait_for_sync", True) and not inst.disks_active:
                    raise OpPrereqError("Can't add a disk to an instance with deactivated disks and"
                                        " --no-wait-for-sync given", ECODE_INVAL)
                idx = self._add_index(ident, "disk", count)
                sizes.insert(idx, params["size"])
                names.insert(idx, params.get("name"))
                types.insert(idx, disk_type)
                count += 1
                self.disk_plan.append((action, idx, params))
                continue
            idx = self._item_index(ident, "disk", count, names, disks)
            if action == DDM_MODIFY:
                if "size" in params:
                    raise OpPrereqError("Disk size change not possible, use grow-disk", ECODE_INVAL)
                if "mode" in params and params["mode"] not in DISK_MODES:
                    raise OpPrereqError(f"Invalid disk access mode '{params['mode']}'", ECODE_INVAL)
                if isinstance(params.get("name"), str) and params["name"].lower() == VALUE_NONE:
                    params["name"] = None
                if "name" in params:
                    names[idx] = params["name"]
            else:  # remove
                if not self.hotplug:
                    await check_instance_state(self.ctx, cfg, inst, (model.ADMIN_DOWN, model.ADMIN_OFFLINE),
                                               "can't remove volume from a running instance without using"
                                               " hotplug")
                del sizes[idx]
                del names[idx]
                del types[idx]
                count -= 1
            self.disk_plan.append((action, idx, params))
        self._unique_names("disk", names)
        if count > MAX_DISKS:
            raise OpPrereqError(f"Instance has too many disks ({MAX_DISKS}), cannot add more", ECODE_STATE)
        if op.get("offline") is not None:
            msg = ("can't change to offline without being down first" if op["offline"]
                   else "can't change to online (down) without being offline first")
            await check_instance_state(self.ctx, cfg, inst, (model.ADMIN_DOWN, model.ADMIN_OFFLINE), msg)

        # hypervisor parameters
        node_names = [node_name(cfg, u) for u in model.instance_nodes(cfg, inst)]
        self.hv_inst: dict[str, Any] | None = None
        if op.get("hvparams"):
            self.hv_inst = updated_params(inst.hvparams, op["hvparams"])
            hv_new = model.fill_hv(cfg, inst.hypervisor, inst.os, self.hv_inst)
            for name in node_names:
                result = await common.node_call(self.ctx, name, "hypervisor_validate_params",
                                                [inst.hypervisor, hv_new])
                if result.fail_msg is not None:
                    raise OpPrereqError(f"Hypervisor parameter validation failed on node {name}:"
                                        f" {result.fail_msg}", ECODE_INVAL)

        # backend parameters
        be_old = model.fill_be(cfg, inst.beparams)
        self.be_inst: dict[str, Any] | None = None
        self.be_new: dict[str, Any] = {}
        if op.get("beparams"):
            self.be_inst = typed_be(upgrade_be(updated_params(inst.beparams, op["beparams"], use_none=True)))
            self.be_new = model.fill_be(cfg, self.be_inst)
            if int(self.be_new.get("minmem", 0)) > int(self.be_new.get("maxmem", 0)):
                raise OpPrereqError(f"Minimum memory ({self.be_new['minmem']}) must not be higher than"
                                    f" maximum memory ({self.be_new['maxmem']})", ECODE_INVAL)
        be_proposed = self.be_new or be_old

        # OS parameters and name
        self.os_inst: dict[str, Any] | None = None
        self.os_private: dict[str, Any] | None = None
        new_os = str(op.get("os_name") or "")
        if new_os and not op.get("force"):
            await _os_validate(self.ctx, cfg, inst, new_os, model.fill_os(cfg, new_os, inst.osparams),
                               bool(op.get("force_variant")))
        if op.get("osparams") or op.get("osparams_private"):
            public = dict(op.get("osparams") or {})
            private = dict(op.get("osparams_private") or {})
            dupes = sorted(set(public) & set(private))
            if dupes:
                raise OpPrereqError(f"OS parameters repeated multiple times: {', '.join(dupes)}", ECODE_INVAL)
            self.os_inst = updated_params(inst.osparams, public)
            self.os_private = updated_params(inst.raw.get("osparams_private") or {}, private)
            check_os = new_os if new_os and not op.get("force") else inst.os
            await _os_validate(self.ctx, cfg, inst, check_os,
                               {**model.fill_os(cfg, check_os, self.os_inst), **self.os_private},
                               bool(op.get("force_variant")))

        await self._check_memory(cfg, inst, be_old, be_proposed)

        # NICs
        self.new_nics: list[dict[str, Any]] | None = None
        self.nic_changes: list[list[Any]] = []
        self.nic_plan: list[tuple[str, int, dict[str, Any]]] = []
        if self.nic_mods:
            await self._plan_nics(cfg, inst)

        # instance policy
        if not op.get("ignore_ipolicy"):
            policy = group_ipolicy(cfg, inst.primary_node)
            nic_count = len(self.new_nics) if self.new_nics is not None else len(inst.nics)
            found: list[str] = []
            for memory in (self.be_new.get("maxmem"), self.be_new.get("minmem")):
                for violation in ipolicy_violations(
                        policy, memory=memory, vcpus=self.be_new.get("vcpus"), disk_sizes=sizes,
                        nic_count=nic_count, spindle_use=self.be_new.get("spindle_use"), templates=types):
                    if violation not in found:
                        found.append(violation)
            if found:
                raise OpPrereqError(_policy_message(cfg, inst.primary_node, found), ECODE_INVAL)

    @staticmethod
    def _add_index(ident: Any, kind: str, count: int) -> int:
        """Ganeti's GetIndexFromIdentifier."""
        try:
            idx = int(ident)
        except (TypeError, ValueError):
            raise OpPrereqError("Only positive integer or -1 is accepted", ECODE_INVAL) from None
        if idx == -1:
            return count
        if idx < 0:
            raise OpPrereqError("Not accepting negative indices other than -1", ECODE_INVAL)
        if idx > count:
            raise OpPrereqError(f"Got {kind} index {idx}, but there are only {count}", ECODE_INVAL)
        return idx

    @staticmethod
    def _item_index(ident: Any, kind: str, count: int, names: list[Any], items: list[dict[str, Any]]) -> int:
        """Ganeti's GetItemFromContainer: an index (-1 the last), a name or a uuid."""
        try:
            idx = int(ident)
        except (TypeError, ValueError):
            idx = None
        if idx is not None:
            if idx == -1:
                idx = count - 1
            if idx < 0 and count == 0:
                raise OpPrereqError(f"Got {kind} index {ident}, but there are only 0", ECODE_INVAL)
            if idx < 0:
                raise OpPrereqError("Not accepting negative indices other than -1", ECODE_INVAL)
            if idx >= count:
                raise OpPrereqError(f"Got {kind} index {idx}, but there are only {count}", ECODE_INVAL)
            return idx
        for pos, item in enumerate(items):
            if item.get("uuid") == ident or item.get("name") == ident:
                return pos
        for pos, name in enumerate(names):
            if name == ident:
                return pos
        raise OpPrereqError(f"Cannot find {kind} with identifier {ident}", ECODE_NOENT)

    @staticmethod
    def _unique_names(kind: str, names: list[Any]) -> None:
        seen: set[str] = set()
        for name in names:
            if name is None:
                continue
            if name in seen:
                raise OpPrereqError(f"{kind.capitalize()} name '{name}' already used", ECODE_NOTUNIQUE)
            seen.add(name)

    async def _check_memory(self, cfg: ConfigData, inst: model.Instance, be_old: dict[str, Any],
                            be_proposed: dict[str, Any]) -> None:
        """Ganeti's _ProcessMem: free memory on the primary for a bigger maxmem; the runtime memory."""
        op = self.op
        primary = node_name(cfg, inst.primary_node)
        hv_cluster = (cfg.cluster.get("hvparams") or {}).get(inst.hypervisor) or {}
        if "maxmem" in upgrade_be(dict(op.get("beparams") or {})) and not op.get("force") and \
                int(self.be_new["maxmem"]) > int(be_old.get("maxmem", 0)):
            info = await common.node_call(self.ctx, primary, "instance_info",
                                          [inst.name, inst.hypervisor, hv_cluster])
            node = await common.node_call(self.ctx, primary, "node_info",
                                          [None, [[inst.hypervisor, hv_cluster]]])
            if node.fail_msg is not None:
                self.warnings.append(f"Can't get info from primary node {primary}: {node.fail_msg}")
            else:
                hv_info = (list(node.payload)[2] or [{}])[0] or {}
                free = hv_info.get("memory_free")
                if not isinstance(free, int):
                    self.warnings.append(f"Node data from primary node {primary} doesn't contain free memory"
                                         " information")
                elif info.fail_msg is not None:
                    self.warnings.append(f"Can't get instance runtime information: {info.fail_msg}")
                else:
                    current = int(info.payload["memory"]) if info.payload else 0
                    missing = int(self.be_new["maxmem"]) - current - free
                    if missing > 0:
                        raise OpPrereqError("This change will prevent the instance from starting, due to"
                                            f" {missing} MB of memory missing on its primary node",
                                            ECODE_NORES)
        runtime = op.get("runtime_mem")
        if runtime:
            info = await common.node_call(self.ctx, primary, "instance_info",
                                          [inst.name, inst.hypervisor, hv_cluster])
            if info.fail_msg is not None:
                raise OpPrereqError(f"Error checking node {primary}: {info.fail_msg}", ECODE_ENVIRON)
            if not info.payload:
                raise OpPrereqError(f"Instance {inst.name} is not running", ECODE_STATE)
            current = int(info.payload["memory"])
            low, high = int(be_proposed.get("minmem", 0)), int(be_proposed.get("maxmem", 0))
            if not op.get("force") and not low <= int(runtime) <= high:
                raise OpPrereqError(f"Instance {inst.name} must have memory between {low} and {high} MB of"
                                    " memory unless --force is given", ECODE_INVAL)
            delta = int(runtime) - current
            if delta > 0:
                node = await common.node_call(self.ctx, primary, "node_info",
                                              [None, [[inst.hypervisor, hv_cluster]]])
                if node.fail_msg is not None:
                    raise OpPrereqError(f"Can't get data from node {primary}: {node.fail_msg}", ECODE_ENVIRON)
                free = ((list(node.payload)[2] or [{}])[0] or {}).get("memory_free")
                if not isinstance(free, int):
                    raise OpPrereqError(f"Can't compute free memory on node {primary}, result was '{free}'",
                                        ECODE_ENVIRON)
                if delta > free:
                    raise OpPrereqError(f"Not enough memory on node {primary} for ballooning memory for"
                                        f" instance {inst.name}: needed {delta} MiB, available {free} MiB",
                                        ECODE_NORES)

    async def _plan_nics(self, cfg: ConfigData, inst: model.Instance) -> None:
        """The NICs after the change (Ganeti's _PrepareNicModification and the change descriptions)."""
        primary = node_name(cfg, inst.primary_node)
        nics = copy.deepcopy(inst.nics)
        reserved: set[str] = set()
        in_use = {m for m in model.used_macs(cfg)}
        for action, ident, params in self.nic_mods:
            if action == DDM_ADD:
                idx = self._add_index(ident, "NIC", len(nics))
                old_params: dict[str, Any] = {}
                old_ip = None
            else:
                idx = self._item_index(ident, "NIC", len(nics), [n.get("name") for n in nics], nics)
                old_params = dict(nics[idx].get("nicparams") or {})
                old_ip = nics[idx].get("ip")
            if action == DDM_REMOVE:
                self.nic_changes.append([f"nic/{idx}", "remove"])
                self.nic_plan.append((action, idx, copy.deepcopy(nics[idx])))
                del nics[idx]
                continue
            update = {k: params[k] for k in NIC_PARAMS if k in params}
            new_params = updated_params(old_params, update)
            filled = model.fill_nic(cfg, new_params)
            mode = filled.get("mode")
            if mode == "bridged":
                result = await common.node_call(self.ctx, primary, "bridges_exist",
                                                [[filled.get("link", "")]])
                if result.fail_msg is not None:
                    message = f"Error checking bridges on node '{primary}': {result.fail_msg}"
                    if not self.op.get("force"):
                        raise OpPrereqError(message, ECODE_ENVIRON)
                    self.warnings.append(message)
            elif mode == "routed":
                if params.get("ip", old_ip) is None:
                    raise OpPrereqError("Cannot set the NIC IP address to None on a routed NIC if not"
                                        " attached to a network", ECODE_INVAL)
            if "mac" in params:
                mac = params["mac"]
                if mac is None:
                    raise OpPrereqError("Cannot unset the NIC MAC address", ECODE_INVAL)
                if mac in (VALUE_AUTO, VALUE_GENERATE):
                    params["mac"] = model.generate_mac(cfg, reserved)
                elif mac in in_use or mac in reserved:
                    raise OpPrereqError(f"MAC address '{mac}' already in use in cluster", ECODE_NOTUNIQUE)
                reserved.add(params["mac"])
            if action == DDM_ADD:
                nic = model.new_nic(mac=params["mac"], ip=params.get("ip"), name=params.get("name"),
                                    nicparams=filled, uuid=str(uuidlib.uuid4()))
                nics.insert(idx, nic)
                self.nic_changes.append([f"nic.{idx}", f"add:mac={params['mac']},ip={params.get('ip')},"
                                         f"mode={filled.get('mode')},link={filled.get('link')},network=None"])
                self.nic_plan.append((action, idx, nic))
                continue
            nic = nics[idx]
            for key in ("mac", "ip", "name"):
                if key in params:
                    self.nic_changes.append([f"nic.{key}/{idx}", params[key]])
                    if params[key] is None:
                        nic.pop(key, None)
                    else:
                        nic[key] = params[key]
            nic["nicparams"] = filled
            for key, value in filled.items():
                self.nic_changes.append([f"nic.{key}/{idx}", value])
            nics[idx] = model.new_nic(mac=nic["mac"], ip=nic.get("ip"), network=nic.get("network"),
                                      name=nic.get("name"), nicparams=filled, uuid=nic.get("uuid"))
            self.nic_plan.append((action, idx, nics[idx]))
        if len(nics) > MAX_NICS:
            raise OpPrereqError(f"Instance has too many network interfaces ({MAX_NICS}), cannot add more",
                                ECODE_STATE)
        self._unique_names("NIC", [n.get("name") for n in nics])
        self.new_nics = nics

    # --- the changes ------------------------------------------------------------------------------

    async def exec(self) -> Any:
        assert self.ctx.config is not None
        cfg = _config(self.ctx)
        inst = _lookup(self.ctx, self.op)
        await self._prereq(cfg, inst)

        preview = cfg.copy()
        values: dict[str, Any] = {}
        if self.new_nics is not None:
            values["nics"] = self.new_nics
        if self.be_inst is not None:
            values["beparams"] = self.be_inst
        if values:
            model.set_instance(preview, inst.uuid, **values)
        env = common.instance_hook_env(preview, model.instance(preview, inst.uuid))
        if self.op.get("runtime_mem"):
            env["RUNTIME_MEMORY"] = self.op["runtime_mem"]
        hooks = common.instance_hooks(self.ctx, cfg, inst, "instance-modify", self.op_id)
        await hooks.pre(env)
        for warning in self.warnings:
            await self.ctx.log(f"WARNING: {warning}")

        result: list[list[Any]] = []
        primary = node_name(cfg, inst.primary_node)
        if self.op.get("runtime_mem"):
            answer = await common.node_call(self.ctx, primary, "instance_balloon_memory",
                                            [common.inst_dict(self.ctx, cfg, inst),
                                             int(self.op["runtime_mem"])])
            if answer.fail_msg is not None:
                raise OpExecError(f"Cannot modify instance runtime memory: {answer.fail_msg}")
            result.append(["runtime_memory", self.op["runtime_mem"]])

        for action, idx, params in self.disk_plan:
            if action == DDM_ADD:
                result += await self._add_disk(inst.uuid, idx, params)
            elif action == DDM_REMOVE:
                result += await self._remove_disk(inst.uuid, idx)
            else:
                result += await self._modify_disk(inst.uuid, idx, params)

        if self.new_nics is not None:
            if self.hotplug:
                await self._hotplug_nics(inst.uuid)
            result += self.nic_changes
        values = {}
        if self.new_nics is not None:
            values["nics"] = self.new_nics
        if self.hv_inst is not None:
            values["hvparams"] = self.hv_inst
            result += [[f"hv/{k}", v] for k, v in self.op["hvparams"].items()]
        if self.be_inst is not None:
            values["beparams"] = self.be_inst
            result += [[f"be/{k}", v] for k, v in self.op["beparams"].items()]
        if self.op.get("os_name"):
            values["os"] = str(self.op["os_name"])
        if self.os_inst is not None and self.op.get("osparams"):
            values["osparams"] = self.os_inst
            result += [[f"os/{k}", v] for k, v in self.op["osparams"].items()]
        if self.os_private is not None and self.op.get("osparams_private"):
            values["osparams_private"] = self.os_private
            result += [[f"os_private/{k}", "<redacted>"] for k in self.op["osparams_private"]]
        offline = self.op.get("offline")
        if offline is not None:
            if offline:
                values.update(admin_state=model.ADMIN_OFFLINE, disks_active=False, admin_state_source="admin")
            else:
                values.update(admin_state=model.ADMIN_DOWN, admin_state_source="admin")
        if values:
            async with self.ctx.config.change() as new:
                model.set_instance(new, inst.uuid, **values)
        if offline is not None:
            result.append(["admin_state", model.ADMIN_OFFLINE if offline else model.ADMIN_DOWN])
        after = self.ctx.config.current
        await hooks.post(common.instance_hook_env(after, model.instance(after, inst.uuid)))
        return result

    async def _hotplug(self, inst: model.Instance, action: str, dev_type: str, device: dict[str, Any],
                       extra: Any, seq: int) -> str:
        """Ganeti's _HotplugDevice: a failure is a warning; the change text says which."""
        cfg = _config(self.ctx)
        await self.ctx.log_info("Trying to hotplug device...")
        answer = await common.node_call(self.ctx, node_name(cfg, inst.primary_node), "hotplug_device",
                                        [common.inst_dict(self.ctx, cfg, inst), action, dev_type, device,
                                         extra, seq])
        if answer.fail_msg is not None:
            await self.ctx.log(f" - WARNING: Could not hotplug device: {answer.fail_msg}")
            await self.ctx.log_info("Continuing execution..")
            return "hotplug:failed"
        await self.ctx.log_info("Hotplug done.")
        return "hotplug:done"

    async def _add_disk(self, inst_uuid: str, idx: int, params: dict[str, Any]) -> list[list[Any]]:
        assert self.ctx.config is not None
        cfg = _config(self.ctx)
        inst = model.instance(cfg, inst_uuid)
        primary = node_name(cfg, inst.primary_node)
        dev_type = str(params["dev_type"])
        same = [d for d in model.instance_disks(cfg, inst) if d.get("dev_type") == dev_type]
        if same and len(same[0].get("logical_id") or []) == 2:
            driver = str(same[0]["logical_id"][0])
            directory = os.path.dirname(str(same[0]["logical_id"][1]))
        else:
            driver = str(self.op.get("file_driver") or "loop")
            parts = [model.storage_dir(cfg, dev_type)]
            if self.op.get("file_storage_dir"):
                parts.append(str(self.op["file_storage_dir"]).strip("/"))
            parts.append(inst.name)
            directory = "/".join(p.rstrip("/") for p in parts)
        disk_uuid = str(uuidlib.uuid4())
        disk = model.new_disk(cfg, dev_type=dev_type, nodes=[inst.primary_node], index=idx,
                              logical_id=[driver, model.file_disk_path(directory, disk_uuid, idx, dev_type)],
                              size=int(params["size"]), mode=str(params.get("mode") or "rw"),
                              name=params.get("name"), uuid=disk_uuid)
        answer = await common.node_call(self.ctx, primary, "file_storage_dir_create",
                                        [model.virtual_path(self.ctx.paths.root, directory)])
        if answer.fail_msg is not None:
            raise OpExecError(f"Failed to create directory '{directory}' on node {primary}:"
                              f" {answer.fail_msg}")
        answer = await common.node_call(self.ctx, primary, "blockdev_create",
                                        [common.disk_dict(self.ctx, cfg, disk, inst), disk["size"], inst.name,
                                         True, f"originstname+{inst.name}", False])
        if answer.fail_msg is not None:
            raise OpExecError(f"Can't create block device disk/{idx} on node {primary} for instance"
                              f" {inst.name}: {answer.fail_msg}")
        async with self.ctx.config.change() as new:
            model.add_disk(new, inst_uuid, disk, idx)
            _renumber_disks(new, inst_uuid)
        cfg = _config(self.ctx)
        inst = model.instance(cfg, inst_uuid)
        disk = cfg.tree["disks"][disk_uuid]
        changes: list[list[Any]] = [[f"disk/{idx}", f"add:size={disk['size']},mode={disk['mode']}"]]
        if self.hotplug:
            answer = await common.node_call(self.ctx, primary, "blockdev_assemble",
                                            [common.disk_dict(self.ctx, cfg, disk, inst),
                                             common.inst_dict(self.ctx, cfg, inst), True, idx])
            if answer.fail_msg is not None:
                changes.append([f"disk/{idx}", "assemble:failed"])
                await self.ctx.log(f" - WARNING: Can't assemble newly created disk {idx}: {answer.fail_msg}")
            else:
                _, link_name, uri = list(answer.payload)[:3]
                changes.append([f"disk/{idx}", await self._hotplug(
                    inst, HOTPLUG_ADD, "disk", common.disk_dict(self.ctx, cfg, disk, inst), [link_name, uri],
                    idx)])
        if self.op.get("wait_for_sync", True):
            answer = await common.node_call(self.ctx, primary, "blockdev_getmirrorstatus",
                                            [[common.disk_dict(self.ctx, cfg, disk, inst)]])
            if answer.fail_msg is not None:
                raise OpExecError(f"Failed to sync disks of {inst.name}")
        if not inst.disks_active:
            answer = await common.node_call(self.ctx, primary, "blockdev_shutdown",
                                            [common.disk_dict(self.ctx, cfg, disk, inst)])
            if answer.fail_msg is not None:
                await self.ctx.log(f"Could not shutdown block device disk/{idx} on node {primary}:"
                                   f" {answer.fail_msg}")
        return changes

    async def _remove_disk(self, inst_uuid: str, idx: int) -> list[list[Any]]:
        assert self.ctx.config is not None
        cfg = _config(self.ctx)
        inst = model.instance(cfg, inst_uuid)
        disk = model.instance_disks(cfg, inst)[idx]
        changes: list[list[Any]] = [[f"disk/{idx}", "remove"]]
        if self.hotplug:
            changes.append([f"disk/{idx}", await self._hotplug(
                inst, HOTPLUG_REMOVE, "disk", common.disk_dict(self.ctx, cfg, disk, inst), None, idx)])
            for uuid in disk.get("nodes") or [inst.primary_node]:
                answer = await common.node_call(self.ctx, node_name(cfg, uuid), "blockdev_shutdown",
                                                [common.disk_dict(self.ctx, cfg, disk, inst)])
                if answer.fail_msg is not None:
                    await self.ctx.log(f"Could not shutdown block device disk/{idx} on node"
                                       f" {node_name(cfg, uuid)}: {answer.fail_msg}")
        for uuid in disk.get("nodes") or [inst.primary_node]:
            if cfg.node(uuid).offline:
                continue
            answer = await common.node_call(self.ctx, node_name(cfg, uuid), "blockdev_remove",
                                            [common.disk_dict(self.ctx, cfg, disk, inst)])
            if answer.fail_msg is not None:
                await self.ctx.log(f" - WARNING: Could not remove disk/{idx} on node {node_name(cfg, uuid)}:"
                                   f" {answer.fail_msg}, continuing anyway")
        async with self.ctx.config.change() as new:
            model.remove_disk(new, inst_uuid, str(disk["uuid"]))
            _renumber_disks(new, inst_uuid)
        return changes

    async def _modify_disk(self, inst_uuid: str, idx: int, params: dict[str, Any]) -> list[list[Any]]:
        assert self.ctx.config is not None
        cfg = _config(self.ctx)
        disk_uuid = model.instance(cfg, inst_uuid).disks[idx]
        changes: list[list[Any]] = []
        values: dict[str, Any] = {}
        if "mode" in params:
            values["mode"] = params["mode"]
            changes.append([f"disk.mode/{idx}", params["mode"]])
        if "name" in params:
            values["name"] = params["name"]
            changes.append([f"disk.name/{idx}", params["name"]])
        if values:
            async with self.ctx.config.change() as new:
                if values.get("name", "") is None:
                    new.tree["disks"][disk_uuid].pop("name", None)
                    values.pop("name")
                model.set_disk(new, disk_uuid, **values)
        return changes

    async def _hotplug_nics(self, inst_uuid: str) -> None:
        """The NIC changes on the running instance, in order (the change texts get the outcome)."""
        cfg = _config(self.ctx)
        inst = model.instance(cfg, inst_uuid)
        current = copy.deepcopy(inst.nics)
        for action, idx, nic in self.nic_plan:
            view = model.instance(cfg, inst_uuid)
            raw = copy.deepcopy(view.raw)
            if action == DDM_ADD:
                current.insert(idx, nic)
                raw["nics"] = current
                hot = HOTPLUG_ADD
                key = f"nic.{idx}"
            elif action == DDM_REMOVE:
                raw["nics"] = current
                hot = HOTPLUG_REMOVE
                key = f"nic/{idx}"
            else:
                current[idx] = nic
                raw["nics"] = current
                hot = HOTPLUG_MODIFY
                key = f"nic/{idx}"
            temp = cfg.copy()
            temp.tree["instances"][inst_uuid] = copy.deepcopy(raw)
            outcome = await self._hotplug(model.instance(temp, inst_uuid), hot, "nic",
                                          _nic_for_node(cfg, nic), None, idx)
            if action == DDM_REMOVE:
                del current[idx]
            self.nic_changes.append([key, outcome])


# --- OP_INSTANCE_GROW_DISK ------------------------------------------------------------------------

class InstanceGrowDisk(Operation):
    op_id = "OP_INSTANCE_GROW_DISK"
    req_bgl = False

    def locks(self) -> list[LockRequest]:
        return _instance_locks(self.ctx, _lookup(self.ctx, self.op))

    async def exec(self) -> Any:
        assert self.ctx.config is not None
        cfg = _config(self.ctx)
        inst = _lookup(self.ctx, self.op)
        for uuid in model.instance_nodes(cfg, inst):
            common.check_node_online(cfg, uuid)
        index = self.op.get("disk")
        try:
            idx = int(index)  # type: ignore[arg-type]
        except (TypeError, ValueError) as err:
            raise OpPrereqError(f"Invalid disk index: '{err}'", ECODE_INVAL) from None
        if not 0 <= idx < len(inst.disks):
            raise OpPrereqError(f"Invalid disk index: {idx} (instace has disks 0..{len(inst.disks) - 1})",
                                ECODE_INVAL)
        disk = model.instance_disks(cfg, inst)[idx]
        if disk.get("dev_type") not in GROWABLE:
            raise OpPrereqError(f"Instance's disk layout {disk.get('dev_type')} does not support growing",
                                ECODE_INVAL)
        amount = parse_size(self.op.get("amount"), "amount")
        size = int(disk.get("size", 0))
        if self.op.get("absolute"):
            target, delta = amount, amount - size
            if delta < 0:
                raise OpPrereqError(f"Requested size ({format_unit(target)}) is smaller than current disk"
                                    f" size ({format_unit(size)})", ECODE_STATE)
        else:
            delta, target = amount, size + amount
            if delta < 0:
                raise OpPrereqError(f"Requested increment ({format_unit(delta)}) is negative", ECODE_INVAL)
        await self._check_policy(cfg, inst, idx, target)

        hooks = common.instance_hooks(self.ctx, cfg, inst, "disk-grow", self.op_id)
        await hooks.pre({"DISK": idx, "AMOUNT": amount, "ABSOLUTE": bool(self.op.get("absolute")),
                         **common.instance_hook_env(cfg, inst)})
        nodes = [node_name(cfg, u) for u in (disk.get("nodes") or [inst.primary_node])]
        # The dry run first, before anything changes (Ganeti runs it right after assembling).
        for name in nodes:
            answer = await common.node_call(self.ctx, name, "blockdev_grow",
                                            [common.disk_dict(self.ctx, cfg, disk, inst), delta, True, True,
                                             False])
            if answer.fail_msg is not None:
                raise OpExecError(f"Dry-run grow request failed to node {name}: {answer.fail_msg}")
        was_active = inst.disks_active
        if not was_active:
            inst = await common.assemble_disks(self.ctx, inst)
        await self.ctx.log(f"Growing disk {idx} of instance '{inst.name}' by {format_unit(delta)} to"
                           f" {format_unit(target)}")
        cfg = _config(self.ctx)
        for name in nodes:
            answer = await common.node_call(self.ctx, name, "blockdev_grow",
                                            [common.disk_dict(self.ctx, cfg, disk, inst), delta, False, True,
                                             False])
            if answer.fail_msg is not None:
                raise OpExecError(f"Grow request failed to node {name}: {answer.fail_msg}")
        primary = node_name(cfg, inst.primary_node)
        answer = await common.node_call(self.ctx, primary, "blockdev_grow",
                                        [common.disk_dict(self.ctx, cfg, disk, inst), delta, False, False,
                                         False])
        if answer.fail_msg is not None:
            raise OpExecError(f"Grow request failed to node {primary}: {answer.fail_msg}")
        async with self.ctx.config.change() as new:
            model.set_disk(new, str(disk["uuid"]), size=target)
        inst = model.instance(self.ctx.config.current, inst.uuid)
        if self.op.get("wait_for_sync", True):
            await common.wait_for_sync(self.ctx, inst)
            if not was_active:
                await common.shutdown_disks(self.ctx, inst)
        elif not was_active:
            await self.ctx.log(" - WARNING: Not shutting down the disk even if the instance is not supposed"
                               " to be running because no wait for sync mode was requested")
        after = self.ctx.config.current
        await hooks.post(common.instance_hook_env(after, model.instance(after, inst.uuid)))
        return None

    async def _check_policy(self, cfg: ConfigData, inst: model.Instance, idx: int, target: int) -> None:
        """Ganeti's ComputeIPolicyDiskSizesViolation: the disk sizes against the group's min/max specs."""
        policy = group_ipolicy(cfg, inst.primary_node)
        sizes = [int(d.get("size", 0)) for d in model.instance_disks(cfg, inst)]
        sizes[idx] = target
        best: list[str] | None = None
        for minmax in policy.get("minmax") or [{}]:
            errors = []
            low = (minmax.get("min") or {}).get("disk-size")
            high = (minmax.get("max") or {}).get("disk-size")
            for pos, size in enumerate(sizes):
                lo = size if low is None else low
                hi = size if high is None else high
                if size > hi or lo > size:
                    errors.append(f"disk-size/{pos} value {size} is not in range [{lo}, {hi}]")
            if best is None or len(errors) < len(best):
                best = errors
        if best:
            message = f"Growing disk {idx} violates policy: {', '.join(best)}"
            if self.op.get("ignore_ipolicy"):
                await self.ctx.log(f" - WARNING: {message}")
            else:
                raise OpPrereqError(message, ECODE_INVAL)


# --- OP_INSTANCE_RENAME ------------------------------------------------------------------------------

class InstanceRename(Operation):
    op_id = "OP_INSTANCE_RENAME"
    req_bgl = False

    def locks(self) -> list[LockRequest]:
        if self.op.get("ip_check") and not self.op.get("name_check", True):
            raise OpPrereqError("IP address check requires a name check", ECODE_INVAL)
        inst = _lookup(self.ctx, self.op)
        self.new_name = str(self.op.get("new_name") or "")
        if not self.new_name:
            raise OpPrereqError("A new instance name is required", ECODE_INVAL)
        self._check_name()
        extra = (self.new_name,) if self.new_name != inst.name else ()
        return _instance_locks(self.ctx, inst, extra)

    def _check_name(self) -> None:
        cfg = _config(self.ctx)
        inst = _lookup(self.ctx, self.op)
        if self.op.get("name_check", True):
            try:
                address = nodecalls.resolve(self.ctx.paths, self.new_name)
            except nodecalls.ResolveError as err:
                raise OpPrereqError(str(err), ECODE_RESOLVER) from None
            if self.op.get("ip_check") and nodecalls.tcp_ping(address, IP_CHECK_PORT, timeout=1.0):
                raise OpPrereqError(f"IP {address} of instance {self.new_name} already in use",
                                    ECODE_NOTUNIQUE)
        if self.new_name != inst.name and self.new_name in cfg.instance_names():
            raise OpPrereqError(f"Instance '{self.new_name}' is already in the cluster", ECODE_EXISTS)

    async def exec(self) -> Any:
        assert self.ctx.config is not None
        cfg = _config(self.ctx)
        inst = _lookup(self.ctx, self.op)
        self._check_name()
        disks = model.instance_disks(cfg, inst)
        for disk in disks:
            if disk.get("dev_type") in model.FILE_TEMPLATES and self.new_name != inst.name and \
                    disk.get("dev_type") not in (cfg.cluster.get("enabled_disk_templates") or []):
                raise OpPrereqError(f"Disk template '{disk.get('dev_type')}' is not enabled in cluster",
                                    ECODE_STATE)
        common.check_node_online(cfg, inst.primary_node)
        await check_instance_state(self.ctx, cfg, inst, (model.ADMIN_DOWN, model.ADMIN_OFFLINE),
                                   "cannot rename")
        hooks = common.instance_hooks(self.ctx, cfg, inst, "instance-rename", self.op_id)
        await hooks.pre({**common.instance_hook_env(cfg, inst), "INSTANCE_NEW_NAME": self.new_name})

        old_name = inst.name
        file_disks = [d for d in disks if d.get("dev_type") in model.FILE_TEMPLATES
                      and len(d.get("logical_id") or []) == 2]
        old_dir = os.path.dirname(str(file_disks[0]["logical_id"][1])) if file_disks else ""
        async with self.ctx.config.change() as new:
            if self.new_name != old_name and self.new_name in new.instance_names():
                raise OpPrereqError(f"Instance '{self.new_name}' is already in the cluster", ECODE_EXISTS)
            model.set_instance(new, inst.uuid, name=self.new_name)
            for disk in file_disks:
                driver, path = disk["logical_id"]
                base = os.path.dirname(os.path.dirname(str(path)))
                model.set_disk(new, str(disk["uuid"]),
                               logical_id=[driver, f"{base}/{self.new_name}/{os.path.basename(str(path))}"])
        cfg = _config(self.ctx)
        renamed = model.instance(cfg, inst.uuid)
        primary = node_name(cfg, renamed.primary_node)
        if file_disks and self.new_name != old_name:
            new_disk = model.instance_disks(cfg, renamed)[disks.index(file_disks[0])]
            new_dir = os.path.dirname(str(new_disk["logical_id"][1]))
            root = self.ctx.paths.root
            answer = await common.node_call(self.ctx, primary, "file_storage_dir_rename",
                                            [model.virtual_path(root, old_dir),
                                             model.virtual_path(root, new_dir)])
            if answer.fail_msg is not None:
                raise OpExecError(f"Could not rename on node {primary} directory '{old_dir}' to '{new_dir}'"
                                  f" (but the instance has been renamed in Ganeti): {answer.fail_msg}")
        if disks:
            renamed = await common.assemble_disks(self.ctx, renamed)
        try:
            cfg = _config(self.ctx)
            for idx, disk in enumerate(model.instance_disks(cfg, renamed)):
                for uuid in model.instance_nodes(cfg, renamed):
                    answer = await common.node_call(self.ctx, node_name(cfg, uuid), "blockdev_setinfo",
                                                    [common.disk_dict(self.ctx, cfg, disk, renamed),
                                                     f"originstname+{renamed.name}"])
                    if answer.fail_msg is not None:
                        await self.ctx.log(f" - WARNING: Error setting info on node {node_name(cfg, uuid)}"
                                           f" for disk {idx}: {answer.fail_msg}")
            answer = await common.node_call(self.ctx, primary, "instance_run_rename",
                                            [common.inst_dict(self.ctx, cfg, renamed), old_name,
                                             int(self.op.get("debug_level") or 0)])
            if answer.fail_msg is not None:
                await self.ctx.log(f" - WARNING: Could not run OS rename script for instance {renamed.name}"
                                   f" on node {primary} (but the instance has been renamed in Ganeti):"
                                   f" {answer.fail_msg}")
        finally:
            if disks:
                await common.shutdown_disks(self.ctx, renamed)
        after = self.ctx.config.current
        await hooks.post(common.instance_hook_env(after, model.instance(after, inst.uuid)))
        return renamed.name


# --- OP_INSTANCE_REINSTALL ---------------------------------------------------------------------------

class InstanceReinstall(Operation):
    op_id = "OP_INSTANCE_REINSTALL"
    req_bgl = False

    def locks(self) -> list[LockRequest]:
        return _instance_locks(self.ctx, _lookup(self.ctx, self.op))

    async def exec(self) -> Any:
        assert self.ctx.config is not None
        cfg = _config(self.ctx)
        inst = _lookup(self.ctx, self.op)
        common.check_node_online(cfg, inst.primary_node, "Instance primary node offline, cannot reinstall")
        if not inst.disks:
            raise OpPrereqError(f"Instance '{inst.name}' has no disks", ECODE_INVAL)
        await check_instance_state(self.ctx, cfg, inst, (model.ADMIN_DOWN,), "cannot reinstall")
        public = updated_params(inst.osparams, self.op.get("osparams") or {})
        private = updated_params(inst.raw.get("osparams_private") or {},
                                 self.op.get("osparams_private") or {})
        secret = dict(self.op.get("osparams_secret") or {})
        os_name = str(self.op.get("os_type") or inst.os)
        full = {**model.fill_os(cfg, os_name, public), **private, **secret}
        if os_name:
            await _os_validate(self.ctx, cfg, inst, os_name, full, bool(self.op.get("force_variant")))
        hooks = common.instance_hooks(self.ctx, cfg, inst, "instance-reinstall", self.op_id)
        await hooks.pre(common.instance_hook_env(cfg, inst))

        values: dict[str, Any] = {}
        if self.op.get("os_type"):
            await self.ctx.log(f"Changing OS scripts to '{os_name}'...")
            values["os"] = os_name
        if not os_name:
            await self.ctx.log_info("No OS scripts or OS image specified or found in the instance's"
                                    " configuration, nothing to install")
        else:
            if self.op.get("osparams") is not None:
                values["osparams"] = public
            if self.op.get("osparams_private") is not None:
                values["osparams_private"] = private
        if values:
            async with self.ctx.config.change() as new:
                model.set_instance(new, inst.uuid, **values)
        inst = model.instance(self.ctx.config.current, inst.uuid)
        if os_name:
            inst = await common.assemble_disks(self.ctx, inst)
            try:
                await self.ctx.log_info("Running instance OS create scripts...")
                cur = self.ctx.config.current
                primary = node_name(cur, inst.primary_node)
                answer = await common.node_call(
                    self.ctx, primary, "instance_os_add",
                    [common.inst_dict(self.ctx, cur, inst, osp={**private, **secret} or None), True,
                     int(self.op.get("debug_level") or 0)])
                if answer.fail_msg is not None:
                    raise OpExecError(f"Could not install OS for instance '{inst.name}' on node '{primary}':"
                                      f" {answer.fail_msg}")
            finally:
                await common.shutdown_disks(self.ctx, inst)
        after = self.ctx.config.current
        await hooks.post(common.instance_hook_env(after, model.instance(after, inst.uuid)))
        return None


OPERATIONS: tuple[type[Operation], ...] = (InstanceSetParams, InstanceGrowDisk, InstanceRename,
                                          InstanceReinstall)
