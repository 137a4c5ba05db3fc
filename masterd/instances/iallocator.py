"""Ganeti's iallocator protocol: the cluster described as JSON for an allocator plugin (hail), and its answer.

The input is what Ganeti's IAllocator builds (version 2): the cluster
(name, tags, enabled hypervisors, ipolicy), node groups, nodes (config
data, plus for online nodes the live memory, disk and CPU figures from
node_info and the memory of their primary instances from
all_instances_info), instances, and the request. The plugin runs on the
master node through the iallocator_runner node call (the program is looked
up in the node's iallocator search path) and answers
``{"success": bool, "info": text, "result": [node names]}``.

Interface::

    await allocate(ctx, cfg, name, request) -> [node name, ...]
        request: Ganeti's "allocate" request (name, disk_template, memory, vcpus, disks, nics ...)
        IAllocatorNotFound when the plugin is not installed; OpPrereqError when it finds no node
    build_input(cfg, node_info, instances_info, request) -> dict   (pure; for tests)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from masterd.config.model import ConfigData
from masterd.instances import common, model
from masterd.luxi.protocol import OpExecError, OpPrereqError
from masterd.rpc import RpcResult

if TYPE_CHECKING:
    from masterd.ops.base import OpContext

IALLOCATOR_VERSION = 2
MODE_ALLOCATE = "allocate"


class IAllocatorNotFound(Exception):
    """The named allocator plugin is not installed on the master node."""


def _group_data(cfg: ConfigData) -> dict[str, Any]:
    cluster_policy = cfg.cluster.get("ipolicy") or {}
    groups = {}
    for uuid, raw in cfg.tree["nodegroups"].items():
        policy = dict(cluster_policy)
        policy.update(raw.get("ipolicy") or {})
        groups[uuid] = {"name": raw.get("name", ""), "alloc_policy": raw.get("alloc_policy", "preferred"),
                        "networks": list(raw.get("networks") or {}), "ipolicy": policy,
                        "tags": list(raw.get("tags") or [])}
    return groups


def _instance_data(cfg: ConfigData) -> dict[str, Any]:
    result = {}
    for inst in model.instances(cfg):
        be = model.fill_be(cfg, inst.beparams)
        nics = []
        for nic in inst.nics:
            params = model.fill_nic(cfg, nic.get("nicparams"))
            entry = {"mac": nic.get("mac"), "ip": nic.get("ip"), "mode": params.get("mode"),
                     "link": params.get("link")}
            if params.get("mode") == "bridged":
                entry["bridge"] = params.get("link")
            nics.append(entry)
        disks = [{"dev_type": d.get("dev_type"), "size": d.get("size"), "mode": d.get("mode"),
                  "spindles": d.get("spindles")} for d in model.instance_disks(cfg, inst)]
        result[inst.name] = {
            "tags": inst.tags, "admin_state": inst.admin_state, "vcpus": be.get("vcpus"),
            "memory": be.get("maxmem"), "spindle_use": be.get("spindle_use"), "os": inst.os,
            "nodes": [cfg.node(u).name for u in model.instance_nodes(cfg, inst)], "nics": nics,
            "disks": disks, "disk_template": model.disk_template(cfg, inst),
            "disks_active": inst.disks_active,
            "hypervisor": inst.hypervisor, "disk_space_total": sum(int(d["size"] or 0) for d in disks)}
    return result


def _int(hv_info: Mapping[str, Any], node: str, key: str) -> int:
    value = hv_info.get(key)
    if not isinstance(value, int):
        raise OpExecError(f"Node '{node}' didn't return attribute '{key}'" if value is None
                          else f"Node '{node}' returned invalid value for '{key}': {value}")
    return value


def build_input(cfg: ConfigData, node_info: Mapping[str, RpcResult], instances_info: Mapping[str, RpcResult],
                request: Mapping[str, Any]) -> dict[str, Any]:
    """The allocator's input; `node_info`/`instances_info` are keyed by node name (offline nodes absent)."""
    cluster = cfg.cluster
    template = str(request.get("disk_template") or "")
    nodes: dict[str, Any] = {}
    primaries: dict[str, list[tuple[model.Instance, int]]] = {}  # node uuid -> [(instance, maxmem)]
    for inst in model.instances(cfg):
        maxmem = int(model.fill_be(cfg, inst.beparams).get("maxmem") or 0)
        primaries.setdefault(inst.primary_node, []).append((inst, maxmem))
    for node in cfg.nodes():
        basic = {"tags": list(cfg.tree["nodes"][node.uuid].get("tags") or []), "primary_ip": node.primary_ip,
                 "secondary_ip": node.secondary_ip,
                 "offline": node.offline, "drained": node.drained, "master_candidate": node.master_candidate,
                 "group": node.group, "master_capable": node.master_capable, "vm_capable": node.vm_capable,
                 "ndparams": cfg.node_ndparams(node)}
        if node.offline or not node.vm_capable:
            nodes[node.name] = basic
            continue
        info = node_info[node.name]
        payload = info.raise_on_fail(f"Can't get data for node {node.name}")
        running = instances_info[node.name].raise_on_fail(
            f"Can't get node instance info from node {node.name}")
        _, space, hv_list = payload
        hv_info = (hv_list or [{}])[0] or {}
        mem_free = _int(hv_info, node.name, "memory_free")
        pri_mem = pri_up_mem = 0
        for inst, maxmem in primaries.get(node.uuid, []):
            pri_mem += maxmem
            used = int((running or {}).get(inst.name, {}).get("memory") or 0)
            if inst.admin_state == model.ADMIN_UP:
                mem_free -= max(0, maxmem - used)
                pri_up_mem += maxmem
        total_disk = free_disk = 0
        if template in model.FILE_TEMPLATES:
            for unit in space or []:
                if unit.get("type") == template:
                    total_disk = int(unit.get("storage_size") or 0)
                    free_disk = int(unit.get("storage_free") or 0)
        nodes[node.name] = {
            "total_memory": _int(hv_info, node.name, "memory_total"),
            "reserved_memory": _int(hv_info, node.name, "memory_dom0"), "free_memory": mem_free,
            "total_disk": total_disk, "free_disk": free_disk, "total_spindles": 0, "free_spindles": 0,
            "total_cpus": _int(hv_info, node.name, "cpu_total"),
            "reserved_cpus": _int(hv_info, node.name, "cpu_dom0"), "i_pri_memory": pri_mem,
            "i_pri_up_memory": pri_up_mem, **basic}
    return {"version": IALLOCATOR_VERSION, "cluster_name": cfg.cluster_name,
            "cluster_tags": list(cluster.get("tags") or []),
            "enabled_hypervisors": list(cluster.get("enabled_hypervisors") or []),
            "ipolicy": cluster.get("ipolicy") or {}, "nodegroups": _group_data(cfg), "nodes": nodes,
            "instances": _instance_data(cfg), "request": dict(request)}


async def allocate(ctx: OpContext, cfg: ConfigData, name: str, request: dict[str, Any]) -> list[str]:
    """Run allocator `name` for an "allocate" request; the chosen node names."""
    cluster = cfg.cluster
    template = str(request.get("disk_template") or "")
    hypervisor = str(request.get("hypervisor") or "")
    online = [n.name for n in cfg.nodes() if n.vm_capable and not n.offline]
    units = ([model.storage_unit(cfg, template, ctx.paths.root)] if template in model.FILE_TEMPLATES
             else None)
    hvparams = model.fill_hv(cfg, hypervisor, "", None)
    hvs = list(cluster.get("enabled_hypervisors") or [])
    all_hvparams = {hv: model.fill_hv(cfg, hv, "", None) for hv in hvs}
    node_info = await common.nodes_call(ctx, online, "node_info", [units, [[hypervisor, hvparams]]])
    instances_info = await common.nodes_call(ctx, online, "all_instances_info", [hvs, all_hvparams])
    data = build_input(cfg, node_info, instances_info, {**request, "type": MODE_ALLOCATE})
    master = cfg.master_node.name
    params = dict(cluster.get("default_iallocator_params") or {})
    result = await common.node_call(ctx, master, "iallocator_runner", [name, json.dumps(data), params])
    if result.fail_msg is not None:
        if "not found in the search path" in result.fail_msg:
            raise IAllocatorNotFound(result.fail_msg)
        raise OpExecError(f"Failure while running the iallocator script: {result.fail_msg}")
    try:
        answer = json.loads(str(result.payload))
    except ValueError as err:
        raise OpExecError(f"Can't parse iallocator results: {err}") from None
    if not isinstance(answer, dict):
        raise OpExecError("Can't parse iallocator results: not a dict")
    if "nodes" in answer and "result" not in answer:
        answer["result"] = answer.pop("nodes")
    for key in ("success", "info", "result"):
        if key not in answer:
            raise OpExecError(f"Can't parse iallocator results: missing key '{key}'")
    if not answer["success"]:
        raise OpPrereqError(f"Can't compute nodes using iallocator '{name}': {answer['info']}",
                            common.ECODE_NORES)
    nodes = answer["result"]
    required = int(request.get("required_nodes") or 1)
    if not isinstance(nodes, list) or len(nodes) != required:
        raise OpPrereqError(f"iallocator '{name}' returned invalid number of nodes ({len(nodes)}),"
                            f" required {required}", common.ECODE_NORES)
    return [str(n) for n in nodes]
