"""What the instance opcodes share: node checks, the hooks environment, and the disk and start calls.

Every node call goes through `masterd.rpc.call` with the arguments a real
master sends (rpc-trace.md; Ganeti's rpc_defs.py), the instance and disks
encoded by masterd.instances.model. Node names in calls; uuids in the
configuration.

Interface::

    node_name(cfg, uuid) / node_uuid(cfg, name)          OpPrereqError for an unknown node
    check_node_online(cfg, uuid), check_node_not_drained(cfg, uuid), check_node_vm_capable(cfg, uuid)
    offline_names(cfg) -> [node names]
    instance_hook_env(cfg, inst, **override) -> {key: value}  (Ganeti's BuildInstanceHookEnvByObject)
    instance_hooks(ctx, cfg, inst, hpath, op_id, extra_nodes=()) -> Hooks  (master + instance's nodes)
    reason(op) -> the opcode's reason trail
    await node_call(ctx, node, procedure, args) / nodes_call(ctx, nodes, procedure, args) -> RpcResult(s)
    await check_bridges(ctx, cfg, nics, node)            OpPrereqError when a bridged NIC's link is missing
    await check_free_memory(ctx, cfg, node_uuid, reason, requested_mib, hypervisor) -> free MiB
    inst_dict(ctx, cfg, inst, hvp=, bep=, osp=) / disk_dict(ctx, cfg, disk, inst)   what the nodes are sent
    await assemble_disks(ctx, inst) -> Instance (disks_active set; OpExecError on failure)
    await shutdown_disks(ctx, inst, ignore_primary=False) -> bool
    await wait_for_sync(ctx, inst)
    await start_instance(ctx, inst, startup_paused=False, hvp=None, bep=None, why=None)
    await instance_info(ctx, cfg, inst) -> RpcResult; await instance_running(ctx, cfg, inst) -> bool
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from masterd.config.model import ConfigData, ConfigError
from masterd.hooks import Hooks
from masterd.instances import model
from masterd.instances.model import Instance
from masterd.luxi.protocol import OpExecError, OpPrereqError
from masterd.rpc import RpcResult, call, call_one

if TYPE_CHECKING:
    from masterd.ops.base import OpContext

ECODE_STATE = "wrong_state"
ECODE_NOENT = "unknown_entity"
ECODE_INVAL = "wrong_input"
ECODE_EXISTS = "already_exists"
ECODE_NORES = "insufficient_resources"
ECODE_ENVIRON = "environment_error"
OFFLINE_MSG = "Can't use offline node"


# --- nodes ------------------------------------------------------------------------------------

def node_name(cfg: ConfigData, uuid: str) -> str:
    try:
        return cfg.node(uuid).name
    except ConfigError as err:
        raise OpPrereqError(f"Node '{uuid}' not known", ECODE_NOENT) from err


def node_uuid(cfg: ConfigData, name: str) -> str:
    """A node's uuid from its name (or uuid, or unambiguous short name)."""
    try:
        return cfg.lookup_node(name).uuid
    except ConfigError:
        matches = [n for n in cfg.nodes() if n.name.split(".", 1)[0] == name]
        if len(matches) == 1:
            return matches[0].uuid
        raise OpPrereqError(f"Node '{name}' not known", ECODE_NOENT) from None


def check_node_online(cfg: ConfigData, uuid: str, msg: str | None = None) -> None:
    """Ganeti's CheckNodeOnline."""
    node = cfg.node(uuid)
    if node.offline:
        raise OpPrereqError(f"{msg or OFFLINE_MSG} {node.name}", ECODE_STATE)


def check_node_not_drained(cfg: ConfigData, uuid: str) -> None:
    """Ganeti's CheckNodeNotDrained."""
    node = cfg.node(uuid)
    if node.drained:
        raise OpPrereqError(f"Can't use drained node {node.name}", ECODE_STATE)


def check_node_vm_capable(cfg: ConfigData, uuid: str) -> None:
    """Ganeti's CheckNodeVmCapable."""
    node = cfg.node(uuid)
    if not node.vm_capable:
        raise OpPrereqError(f"Can't use non-vm_capable node {node.name}", ECODE_STATE)


def offline_names(cfg: ConfigData) -> list[str]:
    return [node.name for node in cfg.nodes() if node.offline]


# --- hooks ------------------------------------------------------------------------------------

def instance_hook_env(cfg: ConfigData, inst: Instance, **override: Any) -> dict[str, Any]:
    """The instance part of a hooks environment (keys without GANETI_), as Ganeti builds it."""
    be = model.fill_be(cfg, inst.beparams)
    hv = model.fill_hv(cfg, inst.hypervisor, inst.os, inst.hvparams)
    status = override.pop("status", inst.admin_state)
    env: dict[str, Any] = {
        "INSTANCE_NAME": inst.name,
        "INSTANCE_PRIMARY": node_name(cfg, inst.primary_node),
        "INSTANCE_SECONDARIES": " ".join(node_name(cfg, u) for u in model.instance_secondaries(cfg, inst)),
        "INSTANCE_OS_TYPE": inst.os,
        "INSTANCE_STATUS": status,
        "INSTANCE_MINMEM": be.get(model.BE_MINMEM),
        "INSTANCE_MAXMEM": be.get(model.BE_MAXMEM),
        "INSTANCE_MEMORY": be.get(model.BE_MAXMEM),
        "INSTANCE_VCPUS": be.get("vcpus"),
        "INSTANCE_DISK_TEMPLATE": model.disk_template(cfg, inst),
        "INSTANCE_HYPERVISOR": inst.hypervisor,
    }
    for idx, nic in enumerate(inst.nics):
        params = model.fill_nic(cfg, nic.get("nicparams"))
        if nic.get("name"):
            env[f"INSTANCE_NIC{idx}_NAME"] = nic["name"]
        env[f"INSTANCE_NIC{idx}_UUID"] = nic.get("uuid", "")
        env[f"INSTANCE_NIC{idx}_IP"] = nic.get("ip") or ""
        env[f"INSTANCE_NIC{idx}_MAC"] = nic.get("mac", "")
        env[f"INSTANCE_NIC{idx}_MODE"] = params.get("mode", "")
        env[f"INSTANCE_NIC{idx}_LINK"] = params.get("link", "")
        env[f"INSTANCE_NIC{idx}_VLAN"] = params.get("vlan", "")
        if nic.get("network"):
            env[f"INSTANCE_NIC{idx}_NETWORK_NAME"] = nic["network"]
        if params.get("mode") in ("bridged", "openvswitch"):
            env[f"INSTANCE_NIC{idx}_BRIDGE"] = params.get("link", "")
    env["INSTANCE_NIC_COUNT"] = len(inst.nics)
    disks = model.instance_disks(cfg, inst)
    for idx, disk in enumerate(disks):
        if disk.get("name"):
            env[f"INSTANCE_DISK{idx}_NAME"] = disk["name"]
        env[f"INSTANCE_DISK{idx}_UUID"] = disk.get("uuid", "")
        env[f"INSTANCE_DISK{idx}_SIZE"] = disk.get("size", 0)
        env[f"INSTANCE_DISK{idx}_MODE"] = disk.get("mode", "rw")
        env[f"INSTANCE_DISK{idx}_DEV_TYPE"] = disk.get("dev_type", "")
    env["INSTANCE_DISK_COUNT"] = len(disks)
    env["INSTANCE_TAGS"] = " ".join(inst.tags)
    for key, value in be.items():
        env[f"INSTANCE_BE_{key}"] = value
    for key, value in hv.items():
        env[f"INSTANCE_HV_{key}"] = value
    env.update(override)
    return env


def instance_hooks(ctx: OpContext, cfg: ConfigData, inst: Instance, hpath: str, op_id: str,
                   extra_nodes: tuple[str, ...] = ()) -> Hooks:
    """Hooks on the master and the instance's nodes (Ganeti's usual instance BuildHooksNodes)."""
    nodes = [cfg.master_node.name] + [node_name(cfg, u) for u in model.instance_nodes(cfg, inst)]
    nodes += list(extra_nodes)
    return Hooks(ctx, hpath, "INSTANCE", op_id, nodes, nodes, offline=offline_names(cfg))


def reason(op: Mapping[str, Any]) -> list[Any]:
    return list(op.get("reason") or [])


# --- node calls -------------------------------------------------------------------------------

def _root(ctx: OpContext) -> str:
    return ctx.paths.root


def _rpc(ctx: OpContext) -> Any:
    if ctx.node_rpc is None:
        raise OpExecError("this master has no node RPC client")
    return ctx.node_rpc


async def node_call(ctx: OpContext, node: str, procedure: str, args: list[Any],
                    timeout: float | None = None) -> RpcResult:
    """One procedure on one node by name."""
    return await call_one(_rpc(ctx), node, procedure, args, timeout)


async def nodes_call(ctx: OpContext, nodes: list[str], procedure: str, args: list[Any],
                     timeout: float | None = None, offline: list[str] | None = None) -> dict[str, RpcResult]:
    return await call(_rpc(ctx), nodes, procedure, args, timeout, offline or [])


def inst_dict(ctx: OpContext, cfg: ConfigData, inst: Instance, **kwargs: Any) -> dict[str, Any]:
    return model.inst_dict(cfg, inst, _root(ctx), **kwargs)


def disk_dict(ctx: OpContext, cfg: ConfigData, disk: Mapping[str, Any], inst: Instance) -> dict[str, Any]:
    return model.disk_dict(cfg, disk, inst, _root(ctx))


async def check_free_memory(ctx: OpContext, cfg: ConfigData, node_uuid: str, reason: str, requested: int,
                            hypervisor: str) -> int:
    """Ganeti's CheckNodeFreeMemory: the node's free MiB from node_info; OpPrereqError when too little."""
    name = node_name(cfg, node_uuid)
    hvparams = dict((cfg.cluster.get("hvparams") or {}).get(hypervisor) or {})
    result = await node_call(ctx, name, "node_info", [None, [[hypervisor, hvparams]]])
    if result.fail_msg is not None:
        raise OpPrereqError(f"Can't get data from node {name}: {result.fail_msg}", ECODE_ENVIRON)
    try:
        hv_info = result.payload[2][0] or {}
    except (TypeError, IndexError, KeyError):
        hv_info = {}
    free = hv_info.get("memory_free") if isinstance(hv_info, dict) else None
    if not isinstance(free, int) or isinstance(free, bool):
        raise OpPrereqError(f"Can't compute free memory on node {name}, result was '{free}'", ECODE_ENVIRON)
    if requested > free:
        raise OpPrereqError(f"Not enough memory on node {name} for {reason}: needed {requested} MiB,"
                            f" available {free} MiB", ECODE_NORES)
    return free


async def check_bridges(ctx: OpContext, cfg: ConfigData, nics: list[dict[str, Any]], node: str) -> None:
    """Ganeti's _CheckNicsBridgesExist: the links of the bridged NICs exist on `node` (by name)."""
    bridges = [str(p.get("link", "")) for p in (model.fill_nic(cfg, n.get("nicparams")) for n in nics)
               if p.get("mode") == "bridged"]
    if not bridges:
        return
    result = await node_call(ctx, node, "bridges_exist", [bridges])
    if result.fail_msg is not None:
        raise OpPrereqError(f"Error checking bridges on destination node '{node}': {result.fail_msg}",
                            ECODE_ENVIRON)


async def assemble_disks(ctx: OpContext, inst: Instance) -> Instance:
    """Ganeti's AssembleInstanceDisks: mark the disks active, then blockdev_assemble on every disk node.

    Two passes like Ganeti (secondaries first, then the primary); on
    failure the disks are shut down again and OpExecError says which disk.
    Returns the instance as the configuration now has it.
    """
    assert ctx.config is not None
    async with ctx.config.change() as cfg:
        model.set_instance(cfg, inst.uuid, disks_active=True)
    cfg = ctx.config.current
    inst = model.instance(cfg, inst.uuid)
    idict = inst_dict(ctx, cfg, inst)
    disks = model.instance_disks(cfg, inst)
    primary = node_name(cfg, inst.primary_node)
    passes: list[tuple[bool, int, dict[str, Any], str]] = []
    for idx, disk in enumerate(disks):  # pass 1: every node of every disk, as secondary
        for node_uuid_ in disk.get("nodes") or [inst.primary_node]:
            passes.append((False, idx, disk, node_name(cfg, node_uuid_)))
    passes += [(True, idx, disk, primary) for idx, disk in enumerate(disks)]  # pass 2: the primary
    for on_primary, idx, disk, name in passes:
        result = await node_call(ctx, name, "blockdev_assemble",
                                 [disk_dict(ctx, cfg, disk, inst), idict, on_primary, idx])
        if result.fail_msg is not None:
            await ctx.log(f"Could not prepare block device disk/{idx} on node {name}"
                          f" (is_primary={on_primary}, pass={2 if on_primary else 1}): {result.fail_msg}")
            await shutdown_disks(ctx, inst)
            raise OpExecError("Cannot activate block devices")
    return model.instance(ctx.config.current, inst.uuid)


async def shutdown_disks(ctx: OpContext, inst: Instance, ignore_primary: bool = False) -> bool:
    """Ganeti's ShutdownInstanceDisks: disks marked inactive, blockdev_shutdown on each disk's nodes.

    False when a node failed: the primary counts unless `ignore_primary`, a
    secondary unless it is offline (offline nodes are not contacted).
    """
    assert ctx.config is not None
    async with ctx.config.change() as cfg:
        model.set_instance(cfg, inst.uuid, disks_active=False)
    cfg = ctx.config.current
    inst = model.instance(cfg, inst.uuid)
    all_ok = True
    for disk in model.instance_disks(cfg, inst):
        for holder in disk.get("nodes") or [inst.primary_node]:
            node = cfg.node(holder)
            if node.offline:
                result = RpcResult(node.name, fail_msg="Node is marked offline", offline=True)
            else:
                result = await node_call(ctx, node.name, "blockdev_shutdown",
                                         [disk_dict(ctx, cfg, disk, inst)])
            if result.fail_msg is None:
                continue
            await ctx.log(f" - WARNING: Could not shutdown block device {disk.get('iv_name')} on node"
                          f" {node.name}: {result.fail_msg}")
            if (holder == inst.primary_node and not ignore_primary) or \
                    (holder != inst.primary_node and not result.offline):
                all_ok = False
    return all_ok


async def wait_for_sync(ctx: OpContext, inst: Instance) -> None:
    """Ganeti's WaitForSync for disks without mirrors: one status check per pass, twice as Ganeti does."""
    assert ctx.config is not None
    cfg = ctx.config.current
    disks = model.instance_disks(cfg, inst)
    if not disks:
        return
    primary = node_name(cfg, inst.primary_node)
    await ctx.log_info("Waiting for instance %s to sync disks", inst.name)
    result = await node_call(ctx, primary, "blockdev_getmirrorstatus",
                             [[disk_dict(ctx, cfg, d, inst) for d in disks]])
    if result.fail_msg is not None:
        await ctx.log(f"Can't get any data from node {primary}: {result.fail_msg}")
    await ctx.log_info("Instance %s's disks are in sync", inst.name)


async def start_instance(ctx: OpContext, inst: Instance, startup_paused: bool = False,
                         hvp: Mapping[str, Any] | None = None, bep: Mapping[str, Any] | None = None,
                         why: list[Any] | None = None) -> None:
    """instance_start on the primary; OpExecError with the node's message on failure."""
    assert ctx.config is not None
    cfg = ctx.config.current
    primary = node_name(cfg, inst.primary_node)
    result = await node_call(ctx, primary, "instance_start",
                             [inst_dict(ctx, cfg, inst, hvp=hvp, bep=bep), startup_paused, why or []])
    if result.fail_msg is not None:
        raise OpExecError(f"Could not start instance: {result.fail_msg}")


async def instance_info(ctx: OpContext, cfg: ConfigData, inst: Instance) -> RpcResult:
    """instance_info on the primary: payload {} when not running, else its state."""
    primary = node_name(cfg, inst.primary_node)
    hvparams = model.fill_hv(cfg, inst.hypervisor, inst.os, inst.hvparams)
    return await node_call(ctx, primary, "instance_info", [inst.name, inst.hypervisor, hvparams])


async def instance_running(ctx: OpContext, cfg: ConfigData, inst: Instance) -> bool:
    result = await instance_info(ctx, cfg, inst)
    if result.fail_msg is not None:
        raise OpPrereqError(f"Error checking node {node_name(cfg, inst.primary_node)}: {result.fail_msg}",
                            ECODE_ENVIRON)
    return bool(result.payload)
