"""The `node` query resource over config.data, with the live fields from the nodes' node_info.

Every field of the real luxid's node table (fields.json) has a getter.
Configuration fields come from the node object, its group and the cluster
(ndparams merged cluster -> group -> node, role letters M/C/D/O/R, instance
lists through the instances' primary node and their disks' nodes).

Live fields (bootid, cnodes, cnos, csockets, ctotal, dfree, dtotal, mfree,
mnode, mtotal, spfree, sptotal) come from one node_info RPC per node,
`gather_live`, run in parallel and only when a live field is asked for (in
the fields or the filter), only to online vm_capable nodes: an offline node
is never contacted and its live fields are RS_OFFLINE; a node that is not
vm_capable has them RS_UNAVAIL; a node that did not answer has them
RS_NODATA. node_info is asked for the cluster's default hypervisor (the
first enabled) and, when the default disk template stores in files (file,
sharedfile), for that directory's space. Storage that needs LVM (plain,
drbd: volume groups, spindles) is not asked for: dfree/dtotal are then
RS_UNAVAIL, and spfree/sptotal always are. `powered` is RS_UNAVAIL unless the
node has an out-of-band program (Ganeti's rule).

Interface::

    node_resource() -> Resource[NodeItem]
    needs_live(fields, qfilter) -> bool
    await gather_live(cfg, rpc, nodes) -> {node uuid: live dict | None (no answer)}
    node_items(cfg, nodes, live) -> [NodeItem]
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from masterd.config.model import ConfigData, Node
from masterd.config.roles import node_role
from masterd.instances.model import storage_unit
from masterd.query.engine import Resource
from masterd.query.fields import (
    FLAG_HOSTNAME,
    RS_NODATA,
    RS_OFFLINE,
    UNAVAILABLE,
    Entry,
    FieldRegistry,
    nice_sort_key,
    normal,
)
from masterd.query.filter import filter_field_names
from masterd.rpc import NodeRpcClient

log = logging.getLogger("masterd.query.nodes")

#: Query field -> key of the node's live data (Ganeti's _NODE_LIVE_FIELDS).
LIVE_FIELDS = {
    "bootid": "bootid", "cnodes": "cpu_nodes", "cnos": "cpu_dom0", "csockets": "cpu_sockets",
    "ctotal": "cpu_total", "dfree": "storage_free", "dtotal": "storage_size", "spfree": "spindles_free",
    "sptotal": "spindles_total", "mfree": "memory_free", "mnode": "memory_dom0", "mtotal": "memory_total",
}
#: Hypervisor facts copied from node_info's hypervisor answer.
_HV_KEYS = ("memory_total", "memory_free", "memory_dom0", "cpu_total", "cpu_nodes", "cpu_sockets", "cpu_dom0")
#: Disk templates whose space node_info reports without LVM, with their storage type and directory key.
_FILE_TEMPLATES = {"file": ("file", "file_storage_dir"),
                   "sharedfile": ("sharedfile", "shared_file_storage_dir")}


@dataclass
class NodeItem:
    """One node as the getters see it."""

    cfg: ConfigData
    node: Node
    raw: Mapping[str, Any]
    group: Mapping[str, Any]
    live: Mapping[str, Any] | None = None
    instances: tuple[list[str], list[str]] = field(default_factory=lambda: ([], []))

    @functools.cached_property
    def ndparams(self) -> dict[str, Any]:
        return self.cfg.node_ndparams(self.node)


def _live(key: str) -> Callable[[NodeItem], Entry]:
    def get(item: NodeItem) -> Entry:
        if item.node.offline:
            return (RS_OFFLINE, None)
        if not item.node.vm_capable:
            return UNAVAILABLE
        if item.live is None:
            return (RS_NODATA, None)
        value = item.live.get(key)
        return UNAVAILABLE if value is None else normal(value)
    return get


def _ndp(key: str) -> Callable[[NodeItem], Entry]:
    def get(item: NodeItem) -> Entry:
        return normal(item.ndparams[key]) if key in item.ndparams else UNAVAILABLE
    return get


def _raw(key: str, default: Any = None) -> Callable[[NodeItem], Entry]:
    def get(item: NodeItem) -> Entry:
        value = item.raw.get(key, default)
        return UNAVAILABLE if value is None else normal(value)
    return get


def _powered(item: NodeItem) -> Entry:
    if item.ndparams.get("oob_program"):
        return normal(bool(item.raw.get("powered", True)))
    return UNAVAILABLE


def _getters(names: Iterable[str]) -> dict[str, Callable[[NodeItem], Entry]]:
    getters: dict[str, Callable[[NodeItem], Entry]] = {
        "name": lambda i: normal(i.node.name),
        "uuid": lambda i: normal(i.node.uuid),
        "pip": lambda i: normal(i.node.primary_ip),
        "sip": lambda i: normal(i.node.secondary_ip),
        "master": lambda i: normal(i.node.uuid == i.cfg.master_node_uuid),
        "group": lambda i: normal(i.group.get("name", "")),
        "group.uuid": lambda i: normal(i.node.group),
        "master_candidate": lambda i: normal(i.node.master_candidate),
        "drained": lambda i: normal(i.node.drained),
        "offline": lambda i: normal(i.node.offline),
        "master_capable": lambda i: normal(i.node.master_capable),
        "vm_capable": lambda i: normal(i.node.vm_capable),
        "role": lambda i: normal(node_role(i.cfg, i.node).letter),
        "ndparams": lambda i: normal(i.ndparams),
        "custom_ndparams": lambda i: normal(dict(i.node.ndparams)),
        "serial_no": lambda i: normal(i.node.serial_no),
        "ctime": _raw("ctime"),
        "mtime": _raw("mtime"),
        "tags": lambda i: normal(list(i.raw.get("tags") or [])),
        "hv_state": lambda i: normal(dict(i.raw.get("hv_state_static") or {})),
        "disk_state": lambda i: normal(dict(i.raw.get("disk_state_static") or {})),
        "powered": _powered,
        "pinst_cnt": lambda i: normal(len(i.instances[0])),
        "pinst_list": lambda i: normal(sorted(i.instances[0], key=nice_sort_key)),
        "sinst_cnt": lambda i: normal(len(i.instances[1])),
        "sinst_list": lambda i: normal(sorted(i.instances[1], key=nice_sort_key)),
    }
    getters.update({name: _live(key) for name, key in LIVE_FIELDS.items()})
    for name in names:
        if name.startswith("ndp/"):
            getters[name] = _ndp(name[4:])
    return getters


@functools.cache
def node_resource() -> Resource[NodeItem]:
    registry = FieldRegistry.load()
    names = registry.fields("node")
    getters = {name: getter for name, getter in _getters(names).items() if name in names}
    return Resource.from_registry("node", registry, getters, flags={"name": frozenset({FLAG_HOSTNAME})})


def needs_live(fields: Sequence[str], qfilter: Any) -> bool:
    """Whether the fields or the filter ask for a live field (then node_info is called)."""
    wanted = set(fields)
    if qfilter is not None:
        try:
            wanted.update(filter_field_names(qfilter))
        except Exception:  # a malformed filter is refused later, with Ganeti's message
            pass
    return bool(wanted & set(LIVE_FIELDS))


def _storage_unit(cfg: ConfigData, root: str) -> list[Any] | None:
    templates = cfg.cluster.get("enabled_disk_templates") or []
    if not templates or templates[0] not in _FILE_TEMPLATES:
        return None
    return storage_unit(cfg, templates[0], root)


def legacy_live(result: Any) -> dict[str, Any]:
    """node_info's ``[boot_id, [storage...], [hv...]]`` as the live dict (Ganeti's MakeLegacyNodeInfo)."""
    live: dict[str, Any] = {}
    if not isinstance(result, list) or len(result) != 3:
        return live
    boot_id, storage, hv_info = result
    live["bootid"] = boot_id
    if isinstance(hv_info, list) and hv_info and isinstance(hv_info[0], dict):
        live.update({key: hv_info[0][key] for key in _HV_KEYS if key in hv_info[0]})
    if isinstance(storage, list) and storage and isinstance(storage[0], dict):
        live["storage_free"] = storage[0].get("storage_free")
        live["storage_size"] = storage[0].get("storage_size")
    return live


async def gather_live(cfg: ConfigData, rpc: NodeRpcClient | None,
                      nodes: Sequence[Node]) -> dict[str, dict[str, Any] | None]:
    """node_info of the online vm_capable nodes among `nodes`, in parallel; None for no answer."""
    asked = [node for node in nodes if not node.offline and node.vm_capable]
    if not asked or rpc is None:
        return {node.uuid: None for node in asked}
    hypervisors = cfg.cluster.get("enabled_hypervisors") or []
    hv_specs = [[hypervisors[0], dict((cfg.cluster.get("hvparams") or {}).get(hypervisors[0]) or {})]] \
        if hypervisors else []
    unit = _storage_unit(cfg, rpc.paths.root)
    answers = await rpc.node_info([node.name for node in asked], [unit] if unit else [], hv_specs)
    out: dict[str, dict[str, Any] | None] = {}
    for node in asked:
        result, error = answers.get(node.name, (None, "not asked"))
        if error is not None:
            log.warning("node_info of node %s failed: %s", node.name, error)
            out[node.uuid] = None
        else:
            out[node.uuid] = legacy_live(result)
    return out


def node_items(cfg: ConfigData, nodes: Sequence[Node],
               live: Mapping[str, Mapping[str, Any] | None] | None = None) -> list[NodeItem]:
    groups = cfg.tree["nodegroups"]
    return [NodeItem(cfg, node, cfg.tree["nodes"][node.uuid], groups.get(node.group) or {},
                     (live or {}).get(node.uuid), cfg.node_instances(node.uuid)) for node in nodes]
