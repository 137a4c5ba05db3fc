"""Where a new instance goes when no node is given (Ganeti's iallocator step of LUInstanceCreate).

Only online, undrained, vm_capable nodes are candidates: a drained or
offline node never receives a new instance. The built-in policy asks the
candidates' node_info and takes the node with the most free memory that
fits the instance (ties: fewer primary instances, then name order).

Interface::

    await choose_node(ctx, cfg, op, name=, template=, hypervisor=, be=, disks=, nics=) -> node uuid
        OpPrereqError("Can't compute nodes using iallocator ...", "insufficient_resources") when none fits
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from masterd.config.model import ConfigData
from masterd.instances import common, model
from masterd.luxi.protocol import OpPrereqError

if TYPE_CHECKING:
    from masterd.ops.base import OpContext

BUILTIN = "built-in"


def candidates(cfg: ConfigData) -> list[str]:
    """Uuids of the nodes that may receive a new instance."""
    return [n.uuid for n in cfg.nodes() if not n.offline and not n.drained and n.vm_capable]


async def choose_node(ctx: OpContext, cfg: ConfigData, op: dict[str, Any], *, name: str, template: str,
                      hypervisor: str, be: dict[str, Any], disks: list[dict[str, Any]],
                      nics: list[dict[str, Any]]) -> str:
    uuids = candidates(cfg)
    if not uuids:
        raise OpPrereqError(f"Can't compute nodes using iallocator '{BUILTIN}': no online, undrained,"
                            " vm_capable node", common.ECODE_NORES)
    names = {u: cfg.node(u).name for u in uuids}
    hvparams = model.fill_hv(cfg, hypervisor, str(op.get("os_type") or ""), None)
    units = [[template, model.storage_dir(cfg, template), []]] if template in model.FILE_TEMPLATES else None
    results = await common.nodes_call(ctx, list(names.values()), "node_info",
                                      [units, [[hypervisor, hvparams]]])
    needed_mem = int(be.get("maxmem") or 0)
    needed_disk = sum(int(d["size"]) for d in disks)
    fits: list[tuple[int, int, str, str]] = []
    reasons: list[str] = []
    for uuid, node in names.items():
        result = results[node]
        if result.fail_msg is not None:
            reasons.append(f"{node}: {result.fail_msg}")
            continue
        _, storage, hv_info = [*list(result.payload), None, None, None][:3]
        free_mem = int((hv_info or [{}])[0].get("memory_free") or 0)
        if needed_mem > free_mem:
            reasons.append(f"{node}: not enough memory ({free_mem} MiB free)")
            continue
        if units and storage:
            free_disk = (storage[0] or {}).get("storage_free")
            if isinstance(free_disk, int) and needed_disk > free_disk:
                reasons.append(f"{node}: not enough disk space ({free_disk} MiB free)")
                continue
        primaries = len(cfg.node_instances(uuid)[0])
        fits.append((-free_mem, primaries, node, uuid))
    if not fits:
        raise OpPrereqError(f"Can't compute nodes using iallocator '{BUILTIN}': no node fits instance {name}"
                            f" ({'; '.join(reasons)})", common.ECODE_NORES)
    best = sorted(fits)[0]
    await ctx.log_info("Selected nodes for instance %s via iallocator %s: %s", name, BUILTIN, best[2])
    return best[3]
