"""The `group` query resource over config.data.

Every field of the real luxid's group table (fields.json) has a getter:
the group's own (custom_*) parameters, the merged ones (cluster defaults
filled with the group's, as Ganeti's SimpleFillND / SimpleFillDP /
SimpleFillIPolicy do), its nodes (node_cnt, node_list, nice-sorted names)
and its primary instances (pinst_cnt, pinst_list: instances whose primary
node is in the group).

Interface::

    group_resource() -> Resource[GroupItem]
    group_items(cfg, group_uuids) -> [GroupItem]
    fill_ipolicy(default, custom), fill_diskparams(default, custom)
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from masterd.config.model import ConfigData
from masterd.query.engine import Resource
from masterd.query.fields import UNAVAILABLE, Entry, FieldRegistry, nice_sort_key, normal

#: The ipolicy key whose dict is merged key by key (Ganeti's ISPECS_STD); the others are replaced whole.
_IPOLICY_STD = "std"


def fill_ipolicy(default: Mapping[str, Any], custom: Mapping[str, Any]) -> dict[str, Any]:
    """Ganeti's FillIPolicy: the custom policy, completed by the default's keys ("std" merged)."""
    filled = copy.deepcopy(dict(custom))
    for key, value in default.items():
        if key not in filled:
            filled[key] = copy.deepcopy(value)
        elif key == _IPOLICY_STD and isinstance(value, dict) and isinstance(filled[key], dict):
            filled[key] = {**copy.deepcopy(value), **filled[key]}
    return filled


def fill_diskparams(default: Mapping[str, Any], custom: Mapping[str, Any]) -> dict[str, Any]:
    """Ganeti's FillDiskParams: per disk template, the defaults updated with the custom values."""
    filled: dict[str, Any] = {}
    for template in dict.fromkeys([*default, *custom]):
        filled[template] = {**copy.deepcopy(default.get(template) or {}),
                            **copy.deepcopy(custom.get(template) or {})}
    return filled


@dataclass
class GroupItem:
    cfg: ConfigData
    uuid: str
    raw: Mapping[str, Any]
    node_names: list[str]
    instances: list[str]

    @functools.cached_property
    def ndparams(self) -> dict[str, Any]:
        return {**(self.cfg.cluster.get("ndparams") or {}), **(self.raw.get("ndparams") or {})}


def _ndp(key: str) -> Callable[[GroupItem], Entry]:
    def get(item: GroupItem) -> Entry:
        return normal(item.ndparams[key]) if key in item.ndparams else UNAVAILABLE
    return get


def _raw(key: str) -> Callable[[GroupItem], Entry]:
    def get(item: GroupItem) -> Entry:
        value = item.raw.get(key)
        return UNAVAILABLE if value is None else normal(value)
    return get


def _getters(names: Iterable[str]) -> dict[str, Callable[[GroupItem], Entry]]:
    getters: dict[str, Callable[[GroupItem], Entry]] = {
        "name": _raw("name"),
        "uuid": lambda i: normal(i.uuid),
        "alloc_policy": _raw("alloc_policy"),
        "ctime": _raw("ctime"),
        "mtime": _raw("mtime"),
        "serial_no": lambda i: normal(int(i.raw.get("serial_no", 0))),
        "tags": lambda i: normal(list(i.raw.get("tags") or [])),
        "custom_ndparams": lambda i: normal(dict(i.raw.get("ndparams") or {})),
        "custom_ipolicy": lambda i: normal(dict(i.raw.get("ipolicy") or {})),
        "custom_diskparams": lambda i: normal(dict(i.raw.get("diskparams") or {})),
        "ndparams": lambda i: normal(i.ndparams),
        "ipolicy": lambda i: normal(fill_ipolicy(i.cfg.cluster.get("ipolicy") or {},
                                                 i.raw.get("ipolicy") or {})),
        "diskparams": lambda i: normal(fill_diskparams(i.cfg.cluster.get("diskparams") or {},
                                                       i.raw.get("diskparams") or {})),
        "node_cnt": lambda i: normal(len(i.node_names)),
        "node_list": lambda i: normal(list(i.node_names)),
        "pinst_cnt": lambda i: normal(len(i.instances)),
        "pinst_list": lambda i: normal(list(i.instances)),
    }
    for name in names:
        if name.startswith("ndp/"):
            getters[name] = _ndp(name[4:])
    return getters


@functools.cache
def group_resource() -> Resource[GroupItem]:
    registry = FieldRegistry.load()
    names = registry.fields("group")
    getters = {name: getter for name, getter in _getters(names).items() if name in names}
    return Resource.from_registry("group", registry, getters)


def group_items(cfg: ConfigData, group_uuids: Sequence[str]) -> list[GroupItem]:
    nodes = cfg.nodes()
    node_group = {node.uuid: node.group for node in nodes}
    items = []
    for uuid in group_uuids:
        raw = cfg.tree["nodegroups"][uuid]
        members = sorted((n.name for n in nodes if n.group == uuid), key=nice_sort_key)
        instances = sorted((str(inst.get("name", "")) for inst in cfg.tree["instances"].values()
                            if node_group.get(inst.get("primary_node", "")) == uuid), key=nice_sort_key)
        items.append(GroupItem(cfg, uuid, raw, members, instances))
    return items
