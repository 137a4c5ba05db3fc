"""The `instance` query resource over config.data, with live data from the nodes' all_instances_info.

Every field of the real luxid's instance table (fields.json, 292 fields) has
a getter, with the values and result statuses luxid (Ganeti 3.0's
Query/Instance.hs) gives:

- configuration fields from the instance, its disks (config.data's `disks`
  section), its nodes and their groups; parameters merged as Ganeti does
  (hvparams cluster -> os_hvp -> instance without the cluster-global
  hypervisor parameters; beparams cluster default -> instance; osparams
  cluster OS -> OS+variant -> instance; NIC parameters cluster default ->
  NIC); a parameter the merged dict lacks is RS_UNAVAIL for `hv/*` and
  RS_NODATA for `be/*` (luxid's rules);
- indexed fields (`disk.size/3`, `nic.mac/0` ...): RS_UNAVAIL past the last
  disk or NIC, and for values the object does not have (a disk without
  name or spindles, a NIC without IP, network or name, the bridge of a
  routed NIC, the VLAN of a NIC that is not openvswitch); the list fields
  (`disk.spindles`, `nic.networks` ...) are normal with null members;
- `snodes` are the nodes of the disks other than the primary (empty for
  file, sharedfile and diskless instances); `disk_usage` sums the disk
  sizes (DRBD adds its 128 MiB of metadata, diskless and blockdev count 0).

Live fields (`status`, `oper_state`, `oper_ram`, `oper_vcpus`, `console`)
need the nodes. Only when one of them is asked for (in the fields or the
filter), the filter first runs without live data (a condition that needs
it lets the instance pass, as luxid's first pass does), then ONE
`all_instances_info` call (with the hypervisors these instances use and the
cluster's parameters for them) goes to every online primary node of the
remaining instances, in parallel; `console` adds one
`instance_console_info` per primary node. An offline node is never
contacted: its instances' `oper_ram`/`oper_vcpus`/`console` are RS_OFFLINE,
`oper_state` RS_NODATA, `status` ERROR_nodeoffline. A node that fails:
RS_NODATA and ERROR_nodedown. An instance the primary does not report but
another asked node does is ERROR_wrongnode. A stopped instance on an
answering node has `oper_state` false and `oper_ram`/`oper_vcpus`
RS_UNAVAIL. `status` follows luxid: running, ADMIN_down, ADMIN_offline,
ERROR_up, ERROR_down, USER_down (the cluster's enabled_user_shutdown, and for
kvm the instance's user_shutdown), ERROR_wrongnode, ERROR_nodedown,
ERROR_nodeoffline.

Selection (luxid): a filter that is an OR of `name ==` selects those
instances in the order asked (an unknown one fails with "Instance name X
not found", unknown_entity; a unique short name or the uuid also matches);
any other filter runs over every instance in natural name order. The
classic QueryInstances(names, fields) is luxid's Query with the filter
"name == n or uuid == n" for each name: unknown names are dropped, rows come
in name order, and unknown fields are refused.

Interface::

    instance_resource() -> Resource[InstanceItem]
    LIVE_FIELDS, needs_live(fields, qfilter) -> bool
    instance_items(cfg, uuids) -> [InstanceItem]
    await gather_live(cfg, rpc, items, console=False) -> {instance uuid: Live}
    combine_live(cfg, items, results, consoles) -> {instance uuid: Live}   (the nodes' answers, by node name)
    select_instances(cfg, names) -> [uuid]
    await query_instances(cfg, rpc, fields, qfilter) -> Query answer
    await classic_instances(cfg, rpc, names, fields) -> [[value, ...], ...]
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from masterd.config.model import ConfigData
from masterd.query.engine import Resource, classic_rows, run_query
from masterd.query.errors import OpPrereqError
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
from masterd.query.filter import compile_filter, filter_field_names, requested_names
from masterd.rpc import NodeRpcClient, RpcResult, call

log = logging.getLogger("masterd.query.instances")

#: The fields that need the nodes (luxid's runtime fields).
LIVE_FIELDS = frozenset({"status", "oper_state", "oper_ram", "oper_vcpus", "console"})
#: Hypervisor parameters that are cluster-wide and never part of an instance's (constants.HVC_GLOBALS).
HVC_GLOBALS = frozenset({"migration_bandwidth", "migration_mode", "migration_port", "xen_cmd"})
#: Aliases luxid defines, alias -> field.
ALIASES = {"vcpus": "be/vcpus", "be/memory": "be/maxmem", "sda_size": "disk.size/0",
           "sdb_size": "disk.size/1", "ip": "nic.ip/0", "mac": "nic.mac/0", "bridge": "nic.bridge/0",
           "nic_mode": "nic.mode/0", "nic_link": "nic.link/0", "nic_network": "nic.network/0"}
DRBD_META_SIZE = 128
NIC_MODE_BRIDGED = "bridged"
NIC_MODE_OVS = "openvswitch"
#: Instance statuses (constants.INSTST_*).
ST_RUNNING = "running"
ST_ADMIN_DOWN = "ADMIN_down"
ST_ADMIN_OFFLINE = "ADMIN_offline"
ST_ERROR_UP = "ERROR_up"
ST_ERROR_DOWN = "ERROR_down"
ST_WRONG_NODE = "ERROR_wrongnode"
ST_NODE_DOWN = "ERROR_nodedown"
ST_NODE_OFFLINE = "ERROR_nodeoffline"
ST_USER_DOWN = "USER_down"
#: all_instances_info's "state" of an instance shut down from inside (HvInstanceState.SHUTDOWN).
_HV_SHUTDOWN = (1, "shutdown")

ECODE_NOENT = "unknown_entity"

#: Why there is no live data for an instance (luxid's RpcError kinds, as result statuses).
ERR_OFFLINE = "offline"
ERR_NODATA = "nodata"


@dataclass(frozen=True)
class Live:
    """What the nodes said about one instance (luxid's Runtime).

    `error`: ERR_OFFLINE / ERR_NODATA when the instance is not found and its
    primary node was offline / did not answer (then nothing else is known).
    `info`: the instance's {"memory", "vcpus", "state", "time"} where it
    runs, None when no asked node runs it. `on_primary`: found on its primary
    node. `console`: the console dict, None when not asked or not given.
    """

    error: str | None = None
    info: Mapping[str, Any] | None = None
    on_primary: bool = True
    console: Mapping[str, Any] | None = None


class _Pending(Exception):
    """A live field was read before the live data was gathered (the filter's first pass)."""


#: The live data of an item whose live data is still to come (first filter pass).
PENDING = Live(error="pending")
#: The live data when live data was not asked for (luxid: "Live data disabled", RS_NODATA).
DISABLED = Live(error=ERR_NODATA)


@dataclass
class InstanceItem:
    """One instance as the getters see it."""

    cfg: ConfigData
    uuid: str
    raw: Mapping[str, Any]
    live: Live = DISABLED

    # -- the configuration around it -------------------------------------------------------
    @functools.cached_property
    def pnode(self) -> Mapping[str, Any] | None:
        return self.cfg.tree["nodes"].get(str(self.raw.get("primary_node", "")))

    @functools.cached_property
    def pgroup(self) -> Mapping[str, Any] | None:
        node = self.pnode
        return None if node is None else self.cfg.tree["nodegroups"].get(str(node.get("group", "")))

    @functools.cached_property
    def disks(self) -> list[Mapping[str, Any]] | None:
        """The disk objects in order; None when one is missing from config.data (luxid: no data)."""
        section = self.cfg.tree.get("disks") or {}
        found = [section.get(uuid) for uuid in self.raw.get("disks") or []]
        return None if any(d is None for d in found) else [d for d in found if d is not None]

    @functools.cached_property
    def secondaries(self) -> list[Mapping[str, Any]] | None:
        """The node objects holding disks besides the primary, in disk order."""
        disks = self.disks
        if disks is None or self.pnode is None:
            return None
        primary = str(self.raw.get("primary_node", ""))
        uuids: list[str] = []
        for disk in disks:
            for node in _disk_nodes(disk):
                if node != primary and node not in uuids:
                    uuids.append(node)
        nodes = self.cfg.tree["nodes"]
        return [nodes[uuid] for uuid in uuids if uuid in nodes]

    @functools.cached_property
    def hvparams(self) -> dict[str, Any]:
        """hvparams merged cluster -> os_hvp -> instance, without the cluster-global ones."""
        return {k: v for k, v in _filled_hv(self.cfg, self.raw).items() if k not in HVC_GLOBALS}

    @functools.cached_property
    def beparams(self) -> dict[str, Any]:
        own = dict(self.raw.get("beparams") or {})
        if "memory" in own:  # Ganeti's UpgradeBeParams
            memory = own.pop("memory")
            own.setdefault("maxmem", memory)
            own.setdefault("minmem", memory)
        return {**((self.cfg.cluster.get("beparams") or {}).get("default") or {}), **own}

    @functools.cached_property
    def osparams(self) -> dict[str, Any]:
        os_name = str(self.raw.get("os", ""))
        cluster_os = self.cfg.cluster.get("osparams") or {}
        base = os_name.split("+", 1)[0]
        filled = dict(cluster_os.get(base) or {})
        if base != os_name:
            filled.update(cluster_os.get(os_name) or {})
        filled.update(self.raw.get("osparams") or {})
        return filled

    @functools.cached_property
    def nics(self) -> list[Mapping[str, Any]]:
        return list(self.raw.get("nics") or [])

    @functools.cached_property
    def nicparams(self) -> list[dict[str, Any]]:
        """Each NIC's parameters merged over the cluster default."""
        default = (self.cfg.cluster.get("nicparams") or {}).get("default") or {}
        return [{**default, **(nic.get("nicparams") or {})} for nic in self.nics]


def _disk_nodes(disk: Mapping[str, Any]) -> list[str]:
    if disk.get("dev_type") == "drbd":
        logical = disk.get("logical_id") or []
        return [str(n) for n in logical[:2]]
    return [str(n) for n in disk.get("nodes") or []]


def _filled_hv(cfg: ConfigData, raw: Mapping[str, Any]) -> dict[str, Any]:
    hv = str(raw.get("hypervisor", ""))
    cluster = cfg.cluster
    filled = dict((cluster.get("hvparams") or {}).get(hv) or {})
    filled.update(((cluster.get("os_hvp") or {}).get(str(raw.get("os", ""))) or {}).get(hv) or {})
    filled.update(raw.get("hvparams") or {})
    return filled


# --- getters ---------------------------------------------------------------------------------

Getter = Callable[[InstanceItem], Entry]


def _nodata_if_none(value: Any) -> Entry:
    return (RS_NODATA, None) if value is None else normal(value)


def _unavail_if_none(value: Any) -> Entry:
    return UNAVAILABLE if value is None else normal(value)


def _raw(key: str, default: Any = None, missing: Callable[[Any], Entry] = _nodata_if_none) -> Getter:
    return lambda i: missing(i.raw.get(key, default))


def _node_name(node: Mapping[str, Any] | None) -> Entry:
    return _nodata_if_none(None if node is None else node.get("name"))


def _group_of(item: InstanceItem, node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return item.cfg.tree["nodegroups"].get(str(node.get("group", "")))


def _snodes(attr: Callable[[InstanceItem, Mapping[str, Any]], Any]) -> Getter:
    def get(item: InstanceItem) -> Entry:
        nodes = item.secondaries
        if nodes is None:
            return (RS_NODATA, None)
        return normal([attr(item, node) for node in nodes])
    return get


def _snode_groups(key: str) -> Getter:
    def get(item: InstanceItem) -> Entry:
        nodes = item.secondaries
        if nodes is None:
            return (RS_NODATA, None)
        groups = [g for g in (_group_of(item, node) for node in nodes) if g is not None]
        return normal([_group_uuid(item, g) if key == "uuid" else g.get(key) for g in groups])
    return get


def _group_uuid(item: InstanceItem, group: Mapping[str, Any]) -> Any:
    if "uuid" in group:
        return group["uuid"]
    return next((uuid for uuid, g in item.cfg.tree["nodegroups"].items() if g is group), None)


def _pgroup(key: str) -> Getter:
    def get(item: InstanceItem) -> Entry:
        group = item.pgroup
        if group is None:
            return (RS_NODATA, None)
        return _nodata_if_none(_group_uuid(item, group) if key == "uuid" else group.get(key))
    return get


def _be(param: str) -> Getter:
    return lambda i: _nodata_if_none(i.beparams.get(param))


def _hv(param: str) -> Getter:
    return lambda i: _unavail_if_none(i.hvparams.get(param))


def _disk_list(value: Callable[[Mapping[str, Any]], Any]) -> Getter:
    def get(item: InstanceItem) -> Entry:
        disks = item.disks
        return (RS_NODATA, None) if disks is None else normal([value(d) for d in disks])
    return get


def _disk_at(index: int, key: str) -> Getter:
    def get(item: InstanceItem) -> Entry:
        disks = item.disks
        if disks is None:
            return (RS_NODATA, None)
        return _unavail_if_none(disks[index].get(key) if index < len(disks) else None)
    return get


def _disk_template(item: InstanceItem) -> Entry:
    disks = item.disks
    if disks is None:
        return (RS_NODATA, None)
    kinds = list(dict.fromkeys(str(d["dev_type"]) for d in disks if d.get("dev_type")))
    if not kinds:
        return normal("diskless")
    return normal(kinds[0] if len(kinds) == 1 else "mixed")


def _disk_size_used(disk: Mapping[str, Any]) -> int:
    kind = disk.get("dev_type")
    if kind in ("diskless", "blockdev"):
        return 0
    size = int(disk.get("size") or 0)
    return size + DRBD_META_SIZE if kind == "drbd" else size


def _disk_usage(item: InstanceItem) -> Entry:
    disks = item.disks
    return (RS_NODATA, None) if disks is None else normal(sum(_disk_size_used(d) for d in disks))


def _nic_vlan(params: Mapping[str, Any]) -> Any:
    return params.get("vlan") if params.get("mode") == NIC_MODE_OVS else None


def _nic_bridge(params: Mapping[str, Any]) -> Any:
    return params.get("link") if params.get("mode") == NIC_MODE_BRIDGED else None


def _network_name(item: InstanceItem, network: Any) -> Any:
    if not network:
        return None
    found = (item.cfg.tree.get("networks") or {}).get(network)
    return None if found is None else found.get("name")


def _nic_at(index: int, value: Callable[[Mapping[str, Any]], Any]) -> Getter:
    return lambda i: _unavail_if_none(value(i.nics[index]) if index < len(i.nics) else None)


def _nicp_at(index: int, value: Callable[[Mapping[str, Any]], Any]) -> Getter:
    return lambda i: _unavail_if_none(value(i.nicparams[index]) if index < len(i.nicparams) else None)


def _nic_network_name_at(index: int) -> Getter:
    def get(item: InstanceItem) -> Entry:
        if index >= len(item.nics):
            return UNAVAILABLE
        return _unavail_if_none(_network_name(item, item.nics[index].get("network")))
    return get


#: Per-index field builders: "disk.size/%d" -> getter for that index.
_INDEXED: dict[str, Callable[[int], Getter]] = {
    "disk.size": lambda n: _disk_at(n, "size"),
    "disk.spindles": lambda n: _disk_at(n, "spindles"),
    "disk.name": lambda n: _disk_at(n, "name"),
    "disk.uuid": lambda n: _disk_at(n, "uuid"),
    "nic.ip": lambda n: _nic_at(n, lambda nic: nic.get("ip")),
    "nic.uuid": lambda n: _nic_at(n, lambda nic: nic.get("uuid")),
    "nic.mac": lambda n: _nic_at(n, lambda nic: nic.get("mac")),
    "nic.name": lambda n: _nic_at(n, lambda nic: nic.get("name")),
    "nic.network": lambda n: _nic_at(n, lambda nic: nic.get("network") or None),
    "nic.mode": lambda n: _nicp_at(n, lambda p: p.get("mode")),
    "nic.link": lambda n: _nicp_at(n, lambda p: p.get("link")),
    "nic.vlan": lambda n: _nicp_at(n, _nic_vlan),
    "nic.bridge": lambda n: _nicp_at(n, _nic_bridge),
    "nic.network.name": _nic_network_name_at,
}
_INDEXED_RE = re.compile(r"^(.+)/(\d+)$")


# --- live getters ----------------------------------------------------------------------------

def _live_of(item: InstanceItem) -> Live:
    if item.live is PENDING:
        raise _Pending(item.uuid)
    return item.live


def _error_entry(error: str) -> Entry:
    return (RS_OFFLINE if error == ERR_OFFLINE else RS_NODATA, None)


def _oper_state(item: InstanceItem) -> Entry:
    live = _live_of(item)
    return (RS_NODATA, None) if live.error else normal(live.info is not None)


def _oper(key: str) -> Getter:
    def get(item: InstanceItem) -> Entry:
        live = _live_of(item)
        if live.error:
            return _error_entry(live.error)
        if live.info is None:
            return UNAVAILABLE
        return _nodata_if_none(live.info.get(key))
    return get


def _console(item: InstanceItem) -> Entry:
    live = _live_of(item)
    if live.error:
        return _error_entry(live.error)
    return _nodata_if_none(live.console)


def _user_shutdown_allowed(item: InstanceItem) -> bool:
    if not item.cfg.cluster.get("enabled_user_shutdown"):
        return False
    return item.raw.get("hypervisor") != "kvm" or item.hvparams.get("user_shutdown") is True


def instance_status(item: InstanceItem) -> str:
    """luxid's status of the instance from its configuration and its live data."""
    live = _live_of(item)
    pnode = item.pnode
    if pnode is not None and pnode.get("offline"):
        return ST_NODE_OFFLINE
    if live.error:
        return ST_NODE_DOWN
    admin = item.raw.get("admin_state")
    if live.info is not None:
        if not live.on_primary:
            return ST_WRONG_NODE
        if live.info.get("state") in _HV_SHUTDOWN:
            if admin == "up":
                return ST_USER_DOWN if _user_shutdown_allowed(item) else ST_ERROR_DOWN
            return ST_ADMIN_DOWN
        return ST_RUNNING if admin == "up" else ST_ERROR_UP
    if admin == "up":
        return ST_ERROR_DOWN
    if admin == "offline":
        return ST_ADMIN_OFFLINE
    if item.raw.get("admin_state_source") == "user" and item.cfg.cluster.get("enabled_user_shutdown"):
        return ST_USER_DOWN
    return ST_ADMIN_DOWN


# --- the resource ----------------------------------------------------------------------------

def _getters(names: Iterable[str]) -> dict[str, Getter]:
    getters: dict[str, Getter] = {
        "admin_state": _raw("admin_state"),
        "admin_state_source": _raw("admin_state_source"),
        "admin_up": lambda i: _nodata_if_none(None if i.raw.get("admin_state") is None
                                              else i.raw.get("admin_state") == "up"),
        "disks_active": _raw("disks_active"),
        "name": _raw("name"),
        "hypervisor": _raw("hypervisor"),
        "network_port": _raw("network_port", missing=_unavail_if_none),
        "os": _raw("os"),
        "pnode": lambda i: _node_name(i.pnode),
        "pnode.group": _pgroup("name"),
        "pnode.group.uuid": _pgroup("uuid"),
        "snodes": _snodes(lambda _i, node: node.get("name")),
        "snodes.group": _snode_groups("name"),
        "snodes.group.uuid": _snode_groups("uuid"),
        "hvparams": lambda i: normal(dict(i.hvparams)),
        "beparams": lambda i: normal(dict(i.beparams)),
        "osparams": lambda i: normal(dict(i.osparams)),
        "custom_hvparams": lambda i: normal(dict(i.raw.get("hvparams") or {})),
        "custom_beparams": lambda i: normal(dict(i.raw.get("beparams") or {})),
        "custom_osparams": lambda i: normal(dict(i.raw.get("osparams") or {})),
        "custom_nicparams": lambda i: normal([dict(nic.get("nicparams") or {}) for nic in i.nics]),
        "disk_usage": _disk_usage,
        "disk.count": lambda i: normal(len(i.raw.get("disks") or [])),
        "disk.sizes": _disk_list(lambda d: d.get("size")),
        "disk.spindles": _disk_list(lambda d: d.get("spindles")),
        "disk.names": _disk_list(lambda d: d.get("name")),
        "disk.uuids": _disk_list(lambda d: d.get("uuid")),
        "disk_template": _disk_template,
        "nic.count": lambda i: normal(len(i.nics)),
        "nic.macs": lambda i: normal([nic.get("mac") for nic in i.nics]),
        "nic.ips": lambda i: normal([nic.get("ip") for nic in i.nics]),
        "nic.names": lambda i: normal([nic.get("name") for nic in i.nics]),
        "nic.uuids": lambda i: normal([nic.get("uuid") for nic in i.nics]),
        "nic.modes": lambda i: normal([p.get("mode") for p in i.nicparams]),
        "nic.vlans": lambda i: normal([_nic_vlan(p) for p in i.nicparams]),
        "nic.bridges": lambda i: normal([_nic_bridge(p) for p in i.nicparams]),
        "nic.links": lambda i: normal([p.get("link") for p in i.nicparams]),
        "nic.networks": lambda i: normal([nic.get("network") or None for nic in i.nics]),
        "nic.networks.names": lambda i: normal([_network_name(i, nic.get("network")) for nic in i.nics]),
        "status": lambda i: normal(instance_status(i)),
        "oper_state": _oper_state,
        "console": _console,
        "oper_ram": _oper("memory"),
        "oper_vcpus": _oper("vcpus"),
        "ctime": _raw("ctime"),
        "mtime": _raw("mtime"),
        "serial_no": lambda i: normal(int(i.raw.get("serial_no", 0))),
        "uuid": lambda i: normal(str(i.raw.get("uuid") or i.uuid)),
        "forthcoming": lambda i: normal(bool(i.raw.get("forthcoming", False))),
        "tags": lambda i: normal(list(i.raw.get("tags") or [])),
    }
    for name in names:
        if name in getters:
            continue
        target = ALIASES.get(name, name)
        if target.startswith("be/"):
            getters[name] = _be(target[3:])
        elif target.startswith("hv/"):
            getters[name] = _hv(target[3:])
        elif (match := _INDEXED_RE.match(target)) and match.group(1) in _INDEXED:
            getters[name] = _INDEXED[match.group(1)](int(match.group(2)))
    return getters


@functools.cache
def instance_resource() -> Resource[InstanceItem]:
    registry = FieldRegistry.load()
    names = registry.fields("instance")
    getters = {name: getter for name, getter in _getters(names).items() if name in names}
    hostname = frozenset({FLAG_HOSTNAME})
    return Resource.from_registry("instance", registry, getters, flags={"name": hostname, "pnode": hostname})


def _wanted_fields(fields: Sequence[str], qfilter: Any) -> set[str]:
    wanted = set(fields)
    if qfilter is not None:
        try:
            wanted.update(filter_field_names(qfilter))
        except Exception:  # a malformed filter is refused by the compiler, with Ganeti's message
            pass
    return wanted


def needs_live(fields: Sequence[str], qfilter: Any) -> bool:
    """Whether the fields or the filter ask for a live field (then the nodes are asked)."""
    return bool(_wanted_fields(fields, qfilter) & LIVE_FIELDS)


def instance_items(cfg: ConfigData, uuids: Sequence[str]) -> list[InstanceItem]:
    section = cfg.tree["instances"]
    return [InstanceItem(cfg, uuid, section[uuid]) for uuid in uuids]


# --- live data -------------------------------------------------------------------------------

def _hv_specs(cfg: ConfigData, items: Sequence[InstanceItem]) -> tuple[list[str], dict[str, Any]]:
    hvs = list(dict.fromkeys(str(i.raw.get("hypervisor")) for i in items if i.raw.get("hypervisor")))
    cluster_hv = cfg.cluster.get("hvparams") or {}
    return hvs, {hv: dict(cluster_hv.get(hv) or {}) for hv in hvs}


def _console_body(item: InstanceItem) -> dict[str, Any]:
    """instance_console_info's parameters for one instance, as luxid sends them."""
    raw = copy.deepcopy(dict(item.raw))
    raw.setdefault("uuid", item.uuid)
    group = dict(item.pgroup or {})
    return {"instance": raw, "node": dict(item.pnode or {}), "group": group,
            "hvParams": _filled_hv(item.cfg, item.raw), "beParams": dict(item.beparams)}


def _failure_error(result: RpcResult) -> str | None:
    if result.offline:
        return ERR_OFFLINE
    if result.fail_msg is not None or not isinstance(result.payload, dict):
        return ERR_NODATA
    return None


async def gather_live(cfg: ConfigData, rpc: NodeRpcClient | None, items: Sequence[InstanceItem],
                      console: bool = False) -> dict[str, Live]:
    """all_instances_info of the items' online primary nodes, in parallel (and their consoles if asked)."""
    nodes = cfg.tree["nodes"]
    primaries = [uuid for uuid in dict.fromkeys(str(i.raw.get("primary_node", "")) for i in items)
                 if uuid in nodes]
    names = {uuid: str(nodes[uuid].get("name", "")) for uuid in primaries}
    offline = [names[uuid] for uuid in primaries if nodes[uuid].get("offline")]
    results: dict[str, RpcResult] = {}
    consoles: dict[str, RpcResult] = {}
    if rpc is not None and primaries:
        hvs, hvparams = _hv_specs(cfg, items)
        info_call = call(rpc, [names[u] for u in primaries], "all_instances_info", [hvs, hvparams],
                         offline=offline)
        if console:
            by_node: dict[str, dict[str, Any]] = {}
            for item in items:
                primary = str(item.raw.get("primary_node", ""))
                if primary in names and names[primary] not in offline:
                    by_node.setdefault(names[primary], {})[str(item.raw.get("name"))] = _console_body(item)
            answers = await asyncio.gather(info_call, *(
                call(rpc, [node], "instance_console_info", body) for node, body in by_node.items()))
            results = answers[0]
            for answer in answers[1:]:
                consoles.update(answer)
        else:
            results = await info_call
    for node, reply in results.items():
        if reply.fail_msg is not None and not reply.offline:
            log.warning("all_instances_info of node %s failed: %s", node, reply.fail_msg)
    return combine_live(cfg, items, results, consoles)


def combine_live(cfg: ConfigData, items: Sequence[InstanceItem], results: Mapping[str, RpcResult],
                 consoles: Mapping[str, RpcResult] | None = None) -> dict[str, Live]:
    """Each item's Live from the nodes' answers (by node name) to all_instances_info / instance_console_info.

    A primary node without an answer counts as not answering (RS_NODATA),
    or as offline when the configuration says it is.
    """
    nodes = cfg.tree["nodes"]
    primaries = list(dict.fromkeys(str(i.raw.get("primary_node", "")) for i in items))
    names = {uuid: str(nodes[uuid].get("name", "")) for uuid in primaries if uuid in nodes}
    reports: dict[str, tuple[str | None, Mapping[str, Any]]] = {}  # node uuid: (error, its instances)
    for uuid, name in names.items():
        result = results.get(name)
        if result is None:
            result = RpcResult(name, fail_msg="Node response not present",
                               offline=bool(nodes[uuid].get("offline")))
        error = _failure_error(result)
        reports[uuid] = (error, {} if error else result.payload)
    return {item.uuid: _live_for(item, reports, consoles or {}, names) for item in items}


def _live_for(item: InstanceItem, reports: Mapping[str, tuple[str | None, Mapping[str, Any]]],
              consoles: Mapping[str, RpcResult], names: Mapping[str, str]) -> Live:
    name = str(item.raw.get("name", ""))
    primary = str(item.raw.get("primary_node", ""))
    console = None
    if primary in names:
        answer = consoles.get(names[primary])
        if answer is not None and answer.fail_msg is None and isinstance(answer.payload, dict):
            console = answer.payload.get(name)
    own = reports.get(primary)
    if own is not None and own[0] is None and name in own[1]:
        return Live(info=own[1][name], on_primary=True, console=console)
    for _uuid, (error, reported) in reports.items():
        if error is None and name in reported:
            return Live(info=reported[name], on_primary=False, console=console)
    if own is None:
        return Live(error=ERR_NODATA)  # luxid: "Node response not present"
    if own[0] is not None:
        return Live(error=own[0])
    return Live(info=None, console=console)


# --- selection and answers -------------------------------------------------------------------

def _all_sorted(cfg: ConfigData) -> list[str]:
    section = cfg.tree["instances"]
    return sorted(section, key=lambda uuid: nice_sort_key(str(section[uuid].get("name", ""))))


def _match(cfg: ConfigData, wanted: str) -> str | None:
    section = cfg.tree["instances"]
    if wanted in section:
        return wanted
    for uuid, raw in section.items():
        if raw.get("name") == wanted:
            return uuid
    short = [uuid for uuid, raw in section.items() if str(raw.get("name", "")).split(".", 1)[0] == wanted]
    return short[0] if len(short) == 1 else None


def select_instances(cfg: ConfigData, names: Sequence[Any]) -> list[str]:
    """uuids of the named instances in the order asked (every instance by name when `names` is empty)."""
    if not names:
        return _all_sorted(cfg)
    out: list[str] = []
    for wanted in names:
        if not isinstance(wanted, str):  # luxid only looks up quoted strings
            continue
        uuid = _match(cfg, wanted)
        if uuid is None:
            raise OpPrereqError(f"Instance name {wanted} not found", ECODE_NOENT)
        if uuid not in out:
            out.append(uuid)
    return out


def _passes_without_live(predicate: Callable[[Any], bool], item: InstanceItem) -> bool:
    try:
        return predicate(item)
    except _Pending:  # the filter needs live data: decided in the second pass
        return True


async def answer_items(cfg: ConfigData, rpc: NodeRpcClient | None, uuids: Sequence[str],
                       fields: Sequence[str], qfilter: Any) -> dict[str, Any]:
    """The Query answer over the given instances (in that order)."""
    resource = instance_resource()
    items = instance_items(cfg, uuids)
    wanted = _wanted_fields(fields, qfilter)
    if wanted & LIVE_FIELDS:
        predicate = compile_filter(qfilter, resource.specs)  # refuses a bad filter before any RPC
        for item in items:
            item.live = PENDING
        items = [item for item in items if _passes_without_live(predicate, item)]
        live = await gather_live(cfg, rpc, items, console="console" in wanted)
        items = [dataclasses.replace(item, live=live[item.uuid]) for item in items]
    return run_query(resource, fields, qfilter, items)


async def query_instances(cfg: ConfigData, rpc: NodeRpcClient | None, fields: Sequence[str],
                          qfilter: Any) -> dict[str, Any]:
    """Query("instance", fields, qfilter)."""
    names = requested_names(qfilter, "name")
    return await answer_items(cfg, rpc, select_instances(cfg, names or []), fields, qfilter)


def classic_filter(names: Sequence[Any]) -> Any:
    """luxid's filter for QueryInstances(names): name == n or uuid == n, for each n (None: all)."""
    if not names:
        return None
    return ["|", ["|", *(["==", "name", n] for n in names)], ["|", *(["==", "uuid", n] for n in names)]]


async def classic_instances(cfg: ConfigData, rpc: NodeRpcClient | None, names: Sequence[Any],
                            fields: Sequence[str]) -> list[list[Any]]:
    """QueryInstances(names, fields): rows in name order; unknown names dropped, unknown fields refused."""
    qfilter = classic_filter(list(names or []))
    return classic_rows(await answer_items(cfg, rpc, _all_sorted(cfg), fields, qfilter))
