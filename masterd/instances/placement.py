"""Where a new instance goes when no node is given (Ganeti's iallocator step of LUInstanceCreate).

The allocator is the opcode's ``iallocator``, else the cluster's
default_iallocator, else Debian's ``hail`` (ganeti-htools); they speak
Ganeti's iallocator protocol (masterd.instances.iallocator) and run on the
master node. When none was asked for and hail is not installed, the
built-in policy decides: only online, undrained, vm_capable nodes are
candidates (a drained or offline node never receives a new instance; hail
follows the same rule), and the node with the most free memory that fits
the instance wins (ties: fewer primary instances, then name order).

Interface::

    await choose_node(ctx, cfg, op, name=, template=, hypervisor=, be=, disks=, nics=) -> node uuid
        OpPrereqError("Can't compute nodes using iallocator ...", "insufficient_resources") when none fits
    await most_free_memory(ctx, cfg, uuids, hypervisor=, hvparams=, memory=, units=None, disk=0)
        -> (node uuid | None, reasons)    the built-in choice (also for relocations)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from masterd.config.model import ConfigData
from masterd.instances import common, iallocator, model
from masterd.luxi.protocol import OpPrereqError

if TYPE_CHECKING:
    from masterd.ops.base import OpContext

BUILTIN = "built-in"
DEFAULT_ALLOCATOR = "hail"


def candidates(cfg: ConfigData) -> list[str]:
    """Uuids of the nodes that may receive a new instance."""
    return [n.uuid for n in cfg.nodes() if not n.offline and not n.drained and n.vm_capable]


async def choose_node(ctx: OpContext, cfg: ConfigData, op: dict[str, Any], *, name: str, template: str,
                      hypervisor: str, be: dict[str, Any], disks: list[dict[str, Any]],
                      nics: list[dict[str, Any]]) -> str:
    asked = str(op.get("iallocator") or cfg.cluster.get("default_iallocator") or "")
    be_full = model.fill_be(cfg, be)
    nic_params = [model.fill_nic(cfg, n.get("nicparams")) for n in nics]
    request = {
        "name": name, "disk_template": template, "group_name": op.get("group_name"),
        "tags": op.get("tags") or [], "os": op.get("os_type"), "vcpus": be_full.get("vcpus"),
        "memory": be_full.get("maxmem"), "spindle_use": be_full.get("spindle_use"),
        "disks": [{"size": d["size"], "mode": d["mode"], "spindles": None, "dev_type": template}
                  for d in disks],
        "disk_space_total": sum(int(d["size"]) for d in disks),
        "nics": [{"mac": n.get("mac"), "ip": n.get("ip"), "mode": p.get("mode"), "link": p.get("link")}
                 for n, p in zip(nics, nic_params, strict=True)],
        "required_nodes": 1, "hypervisor": hypervisor}
    allocator = asked or DEFAULT_ALLOCATOR
    try:
        chosen = await iallocator.allocate(ctx, cfg, allocator, request)
    except iallocator.IAllocatorNotFound as err:
        if asked:
            raise OpPrereqError(f"Can't compute nodes using iallocator '{asked}': {err}",
                                common.ECODE_NORES) from None
        return await builtin_choice(ctx, cfg, op, name=name, template=template, hypervisor=hypervisor,
                                    be=be_full, disks=disks)
    await ctx.log_info("Selected nodes for instance %s via iallocator %s: %s", name, allocator,
                       ", ".join(chosen))
    return common.node_uuid(cfg, chosen[0])


async def builtin_choice(ctx: OpContext, cfg: ConfigData, op: dict[str, Any], *, name: str, template: str,
                         hypervisor: str, be: dict[str, Any], disks: list[dict[str, Any]]) -> str:
    """The built-in policy (module docstring)."""
    uuids = candidates(cfg)
    if not uuids:
        raise OpPrereqError(f"Can't compute nodes using iallocator '{BUILTIN}': no online, undrained,"
                            " vm_capable node", common.ECODE_NORES)
    hvparams = model.fill_hv(cfg, hypervisor, str(op.get("os_type") or ""), None)
    units = ([model.storage_unit(cfg, template, ctx.paths.root)] if template in model.FILE_TEMPLATES
             else None)
    best, reasons = await most_free_memory(ctx, cfg, uuids, hypervisor=hypervisor, hvparams=hvparams,
                                           memory=int(be.get("maxmem") or 0), units=units,
                                           disk=sum(int(d["size"]) for d in disks))
    if best is None:
        raise OpPrereqError(f"Can't compute nodes using iallocator '{BUILTIN}': no node fits instance {name}"
                            f" ({'; '.join(reasons)})", common.ECODE_NORES)
    await ctx.log_info("Selected nodes for instance %s via iallocator %s: %s", name, BUILTIN,
                       cfg.node(best).name)
    return best


async def most_free_memory(ctx: OpContext, cfg: ConfigData, uuids: list[str], *, hypervisor: str,
                           hvparams: dict[str, Any], memory: int, units: list[Any] | None = None,
                           disk: int = 0) -> tuple[str | None, list[str]]:
    """The built-in choice among `uuids`: (node uuid or None, why each other node did not fit).

    Asks the nodes' node_info; a node fits when `memory` MiB are free (and
    `disk` MiB in the storage unit, when one is given); the most free memory
    wins, ties go to fewer primary instances, then name order.
    """
    names = {u: cfg.node(u).name for u in uuids}
    results = await common.nodes_call(ctx, list(names.values()), "node_info",
                                      [units, [[hypervisor, hvparams]]]) if names else {}
    fits: list[tuple[int, int, str, str]] = []
    reasons: list[str] = []
    for uuid, node in names.items():
        result = results[node]
        if result.fail_msg is not None:
            reasons.append(f"{node}: {result.fail_msg}")
            continue
        _, storage, hv_info = [*list(result.payload or []), None, None, None][:3]
        free_mem = int((hv_info or [{}])[0].get("memory_free") or 0)
        if memory > free_mem:
            reasons.append(f"{node}: not enough memory ({free_mem} MiB free)")
            continue
        if units and storage:
            free_disk = (storage[0] or {}).get("storage_free")
            if isinstance(free_disk, int) and disk > free_disk:
                reasons.append(f"{node}: not enough disk space ({free_disk} MiB free)")
                continue
        fits.append((-free_mem, len(cfg.node_instances(uuid)[0]), node, uuid))
    return (sorted(fits)[0][3] if fits else None), reasons
