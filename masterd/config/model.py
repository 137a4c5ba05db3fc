"""config.data: Ganeti 3.0's cluster configuration, loaded, read, changed and dumped.

The configuration is kept as the JSON tree Ganeti writes (the dict from the
file, key order kept), so an object this module does not know about
(networks, filters, instance details ...) survives a load and dump
untouched. Typed, read-only snapshots (`Node`, `NodeGroup`) serve what the
master needs; changes go through `ConfigData`'s mutation helpers, which bump
the changed object's serial_no and mtime and the configuration's own.

Wire format: `dumps` writes exactly what wconfd (Haskell, Text.JSON) writes:
compact JSON, keys in the tree's order, non-ASCII as UTF-8, integral numbers
as integers and other floats in Haskell's `show` form (fixed notation for
0.1 <= |x| < 10^7, else "1.795313909211783e9"). Loading the real sample and
dumping it gives the same bytes. One documented limit: a string that starts
with the two characters U+0001 U+0002 cannot be represented (the encoder
uses them as a float marker); Ganeti objects never hold control characters.

Interface::

    load(path) -> ConfigData               ConfigError with the path and what is wrong
    ConfigData.from_json(text) / from_dict(tree)
    ConfigData.dumps() -> str              Ganeti's exact JSON
    cfg.cluster_name, cfg.master_node_uuid, cfg.master_node, cfg.serial_no ...
    cfg.nodes() -> [Node] (file order), cfg.node(uuid), cfg.node_by_name(name)
    cfg.groups() -> [NodeGroup], cfg.instance_names()
    cfg.set_node_flags(uuid, **flags), cfg.set_candidate_cert(uuid, digest|None),
    cfg.add_node(...), cfg.set_master_node(uuid), cfg.bump()
    new_config(...) -> ConfigData          a fresh config as `gnt-cluster init` writes it
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from masterd.config import defaults

CONFIG_VERSION = defaults.CONFIG_VERSION
#: The sections every config.data has (objects.ConfigData).
TOP_SECTIONS = ("cluster", "nodes", "nodegroups", "instances", "networks", "disks")
#: Node flags a change may set (booleans).
NODE_FLAGS = ("master_candidate", "drained", "offline", "master_capable", "vm_capable")


class ConfigError(Exception):
    """config.data cannot be read, is not Ganeti's format, or a change is inconsistent."""


# --- exact JSON --------------------------------------------------------------------------------

_FLOAT_MARK = "\x01\x02"
_FLOAT_TOKEN = re.compile(r'"\\u0001\\u0002([^"]*)"')


def haskell_float(value: float) -> str:
    """`value` as Text.JSON writes a Double: integral -> integer, else Haskell's `show`."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} has no JSON form")
    if value == int(value):
        return str(int(value))
    sign = "-" if value < 0 else ""
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    significant = digits.lstrip("0")
    # value = 0.<digits> * 10**point (Haskell's floatToDigits convention)
    point = len(whole) + (int(exp) if exp else 0) - (len(digits) - len(significant))
    digits = significant.rstrip("0")
    if 0 <= point <= 7:
        int_part = digits[:point].ljust(point, "0") or "0"
        return f"{sign}{int_part}.{digits[point:] or '0'}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}e{point - 1}"


def _mark_floats(node: Any) -> Any:
    """A copy of `node` where floats are marked strings (containers without floats are shared)."""
    if isinstance(node, dict):
        out: dict[str, Any] | None = None
        for key, value in node.items():
            if isinstance(value, float):
                new: Any = _FLOAT_MARK + haskell_float(value)
            elif isinstance(value, (dict, list)):
                new = _mark_floats(value)
            else:
                continue
            if new is not value:
                if out is None:
                    out = dict(node)
                out[key] = new
        return node if out is None else out
    if isinstance(node, list):
        lout: list[Any] | None = None
        for index, value in enumerate(node):
            if isinstance(value, float):
                new = _FLOAT_MARK + haskell_float(value)
            elif isinstance(value, (dict, list)):
                new = _mark_floats(value)
            else:
                continue
            if new is not value:
                if lout is None:
                    lout = list(node)
                lout[index] = new
        return node if lout is None else lout
    return node


def dumps(tree: Any) -> str:
    """`tree` as Ganeti's wconfd writes JSON (see the module docstring)."""
    text = json.dumps(_mark_floats(tree), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return _FLOAT_TOKEN.sub(r"\1", text)


# --- typed snapshots ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    """One node of config.data (a snapshot; change it through ConfigData)."""

    uuid: str
    name: str
    primary_ip: str
    secondary_ip: str
    master_candidate: bool
    drained: bool
    offline: bool
    master_capable: bool
    vm_capable: bool
    group: str
    ndparams: dict[str, Any]
    serial_no: int


@dataclass(frozen=True)
class NodeGroup:
    uuid: str
    name: str
    alloc_policy: str
    ndparams: dict[str, Any]
    serial_no: int


def _require(section: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in section:
        raise ConfigError(f"{where} has no '{key}'")
    value = section[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: '{key}' should be {names}, not {type(value).__name__} {value!r}")
    return value


def _node_from(uuid: str, raw: dict[str, Any]) -> Node:
    where = f"node {uuid}"
    flags = {flag: _require(raw, flag, bool, where) for flag in NODE_FLAGS}
    return Node(uuid=uuid, name=_require(raw, "name", str, where),
                primary_ip=_require(raw, "primary_ip", str, where),
                secondary_ip=raw.get("secondary_ip") or raw["primary_ip"],
                group=_require(raw, "group", str, where), ndparams=dict(raw.get("ndparams") or {}),
                serial_no=int(raw.get("serial_no", 0)), **flags)


class ConfigData:
    """The whole configuration (objects.ConfigData), backed by Ganeti's JSON tree."""

    def __init__(self, tree: dict[str, Any], *, clock: Callable[[], float] = time.time) -> None:
        self.tree = tree
        self._clock = clock
        self.validate()

    # loading / dumping

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "config.data") -> ConfigData:
        try:
            tree = json.loads(text)
        except ValueError as err:
            raise ConfigError(f"{source} is not valid JSON ({err}); the file is corrupt: restore it from"
                              " a master candidate's copy") from err
        if not isinstance(tree, dict):
            raise ConfigError(f"{source} holds a JSON {type(tree).__name__},"
                              " not Ganeti's configuration object")
        try:
            return cls(tree)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from err

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> ConfigData:
        return cls(copy.deepcopy(tree))

    def dumps(self) -> str:
        return dumps(self.tree)

    def copy(self) -> ConfigData:
        return ConfigData(copy.deepcopy(self.tree), clock=self._clock)

    def validate(self) -> None:
        """Check the structure the master relies on; ConfigError says what is wrong."""
        tree = self.tree
        version = tree.get("version")
        if version != CONFIG_VERSION:
            raise ConfigError(f"configuration version {version!r} is not supported (this master reads"
                              f" {CONFIG_VERSION}, Ganeti 3.0); upgrade it with Ganeti's cfgupgrade")
        for section in TOP_SECTIONS:
            _require(tree, section, dict, "configuration")
        _require(tree, "serial_no", int, "configuration")
        cluster = tree["cluster"]
        for key in ("cluster_name", "master_node", "master_ip", "master_netdev"):
            _require(cluster, key, str, "cluster")
        for node_uuid, raw in tree["nodes"].items():
            if not isinstance(raw, dict):
                raise ConfigError(f"node {node_uuid} is not an object")
            node = _node_from(node_uuid, raw)
            if node.group not in tree["nodegroups"]:
                raise ConfigError(f"node {node.name} belongs to unknown node group {node.group}")
        if cluster["master_node"] not in tree["nodes"]:
            raise ConfigError(f"the master node {cluster['master_node']} is not among the nodes")

    # accessors

    @property
    def cluster(self) -> dict[str, Any]:
        cluster: dict[str, Any] = self.tree["cluster"]
        return cluster

    @property
    def serial_no(self) -> int:
        return int(self.tree["serial_no"])

    @property
    def cluster_name(self) -> str:
        return str(self.cluster["cluster_name"])

    @property
    def cluster_uuid(self) -> str:
        return str(self.cluster.get("uuid", ""))

    @property
    def master_node_uuid(self) -> str:
        return str(self.cluster["master_node"])

    @property
    def master_node(self) -> Node:
        return self.node(self.master_node_uuid)

    @property
    def candidate_pool_size(self) -> int:
        return int(self.cluster.get("candidate_pool_size", defaults.CLUSTER_DEFAULTS["candidate_pool_size"]))

    @property
    def candidate_certs(self) -> dict[str, str]:
        return dict(self.cluster.get("candidate_certs") or {})

    def nodes(self) -> list[Node]:
        """Every node, in the file's order."""
        return [_node_from(node_uuid, raw) for node_uuid, raw in self.tree["nodes"].items()]

    def node(self, node_uuid: str) -> Node:
        raw = self.tree["nodes"].get(node_uuid)
        if raw is None:
            raise ConfigError(f"Node uuid {node_uuid} not found")
        return _node_from(node_uuid, raw)

    def node_by_name(self, name: str) -> Node:
        for node in self.nodes():
            if node.name == name:
                return node
        raise ConfigError(f"Node name {name} not found")

    def lookup_node(self, name_or_uuid: str) -> Node:
        if name_or_uuid in self.tree["nodes"]:
            return self.node(name_or_uuid)
        return self.node_by_name(name_or_uuid)

    def groups(self) -> list[NodeGroup]:
        return [NodeGroup(uuid=group_uuid, name=str(raw.get("name", "")),
                          alloc_policy=str(raw.get("alloc_policy", "")),
                          ndparams=dict(raw.get("ndparams") or {}), serial_no=int(raw.get("serial_no", 0)))
                for group_uuid, raw in self.tree["nodegroups"].items()]

    def node_ndparams(self, node: Node) -> dict[str, Any]:
        """The node's effective ndparams: cluster, then its group, then its own."""
        filled = dict(self.cluster.get("ndparams") or {})
        group = self.tree["nodegroups"].get(node.group) or {}
        filled.update(group.get("ndparams") or {})
        filled.update(node.ndparams)
        return filled

    def instance_names(self) -> list[str]:
        return [str(raw["name"]) for raw in self.tree["instances"].values() if raw.get("name")]

    def node_instances(self, node_uuid: str) -> tuple[list[str], list[str]]:
        """(primary, secondary) instance names of a node (secondaries through the disks' nodes)."""
        primary: list[str] = []
        secondary: list[str] = []
        disks = self.tree["disks"]
        for raw in self.tree["instances"].values():
            name = str(raw.get("name", ""))
            if raw.get("primary_node") == node_uuid:
                primary.append(name)
                continue
            for disk_uuid in raw.get("disks") or []:
                if node_uuid in ((disks.get(disk_uuid) or {}).get("nodes") or []):
                    secondary.append(name)
                    break
        return primary, secondary

    # mutations

    def now(self) -> float:
        return self._clock()

    def bump(self) -> None:
        """One configuration change: serial_no + 1, mtime now."""
        self.tree["serial_no"] = self.serial_no + 1
        self.tree["mtime"] = self.now()

    def _touch(self, obj: dict[str, Any]) -> None:
        obj["serial_no"] = int(obj.get("serial_no", 0)) + 1
        obj["mtime"] = self.now()

    def touch_cluster(self) -> None:
        self._touch(self.cluster)
        self.bump()

    def set_node_flags(self, node_uuid: str, **flags: bool) -> Node:
        """Set role/capability flags of one node (only the ones given), bumping serials."""
        raw = self.tree["nodes"].get(node_uuid)
        if raw is None:
            raise ConfigError(f"Node uuid {node_uuid} not found")
        unknown = set(flags) - set(NODE_FLAGS)
        if unknown:
            raise ConfigError(f"unknown node flag(s): {', '.join(sorted(unknown))}")
        changed = {k: v for k, v in flags.items() if raw.get(k) != v}
        if changed:
            raw.update(changed)
            self._touch(raw)
            self.bump()
        return _node_from(node_uuid, raw)

    def set_candidate_cert(self, node_uuid: str, digest: str | None) -> None:
        """Add (digest) or remove (None) a node's client certificate digest in candidate_certs."""
        certs = self.cluster.setdefault("candidate_certs", {})
        if digest is None:
            if node_uuid not in certs:
                return
            del certs[node_uuid]
        else:
            if certs.get(node_uuid) == digest:
                return
            certs[node_uuid] = digest
        self.touch_cluster()

    def set_master_node(self, node_uuid: str) -> None:
        self.node(node_uuid)
        if self.cluster["master_node"] != node_uuid:
            self.cluster["master_node"] = node_uuid
            self.touch_cluster()

    def add_node(self, name: str, primary_ip: str, *, secondary_ip: str | None = None,
                 group_uuid: str | None = None, master_candidate: bool = False, master_capable: bool = True,
                 vm_capable: bool = True, node_uuid: str | None = None) -> Node:
        """Add a node (Ganeti's checks on names and addresses belong to the caller's opcode)."""
        if any(node.name == name for node in self.nodes()):
            raise ConfigError(f"Node {name} is already in the configuration")
        group = group_uuid or self.default_group_uuid()
        if group not in self.tree["nodegroups"]:
            raise ConfigError(f"Unknown node group: {group}")
        new_uuid = node_uuid or str(uuidlib.uuid4())
        now = self.now()
        values = {"name": name, "primary_ip": primary_ip, "secondary_ip": secondary_ip or primary_ip,
                  "master_candidate": master_candidate, "offline": False, "drained": False,
                  "group": group, "master_capable": master_capable, "vm_capable": vm_capable,
                  "ndparams": {}, "powered": True, "ctime": now, "mtime": now, "uuid": new_uuid,
                  "serial_no": 1, "tags": []}
        self.tree["nodes"][new_uuid] = {k: values[k] for k in defaults.NODE_KEY_ORDER if k in values}
        self.bump()
        return self.node(new_uuid)

    def remove_node(self, node_uuid: str) -> None:
        if node_uuid == self.master_node_uuid:
            raise ConfigError("The master node cannot be removed from the configuration")
        if self.tree["nodes"].pop(node_uuid, None) is None:
            raise ConfigError(f"Node uuid {node_uuid} not found")
        self.cluster.get("candidate_certs", {}).pop(node_uuid, None)
        self.bump()

    def default_group_uuid(self) -> str:
        groups = self.groups()
        for group in groups:
            if group.name == defaults.INITIAL_NODE_GROUP_NAME:
                return group.uuid
        if not groups:
            raise ConfigError("the configuration has no node group")
        return groups[0].uuid


def load(path: str) -> ConfigData:
    """Read config.data; ConfigError names the file and the problem."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as err:
        raise ConfigError(f"{path} does not exist: this node is not part of a cluster"
                          " (run gnt-cluster init, or gnt-node add from the master)") from err
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    return ConfigData.from_json(data, source=path)


def _ordered(values: dict[str, Any], order: Iterable[str]) -> dict[str, Any]:
    keys = list(order)
    return {k: values[k] for k in keys if k in values} | {k: v for k, v in values.items() if k not in keys}


def new_config(*, cluster_name: str, master_name: str, master_ip: str, cluster_ip: str,
               master_netdev: str, master_netmask: int = 32, secondary_ip: str | None = None,
               enabled_hypervisors: list[str] | None = None,
               enabled_disk_templates: list[str] | None = None,
               file_storage_dir: str | None = None, shared_file_storage_dir: str | None = None,
               gluster_storage_dir: str | None = None, nicparams: dict[str, Any] | None = None,
               candidate_pool_size: int | None = None, modify_etc_hosts: bool = True,
               modify_ssh_setup: bool = True, default_iallocator: str = "",
               rsahostkeypub: str = "", dsahostkeypub: str = "", primary_ip_family: int = 2,
               mac_prefix: str | None = None, uid_pool: list[list[int]] | None = None,
               maintain_node_health: bool = False, enabled_user_shutdown: bool = False,
               now: float | None = None, uuids: tuple[str, str, str] | None = None) -> ConfigData:
    """The configuration `gnt-cluster init` writes (bootstrap.InitCluster/InitConfig's values).

    The master is the only node, a master candidate, in the default group;
    the ipolicy's disk templates are restricted to the enabled ones and
    hv_state_static has Ganeti's defaults for each enabled hypervisor.
    `uuids` is (cluster, master node, default group) for reproducible output.
    """
    hypervisors = list(enabled_hypervisors or ["kvm"])
    templates = list(enabled_disk_templates or ["drbd", "plain"])
    for hv in hypervisors:
        if hv not in defaults.HYPERVISOR_TYPES:
            raise ConfigError(f"Unknown hypervisor '{hv}' (known: {', '.join(defaults.HYPERVISOR_TYPES)})")
    for template in templates:
        if template not in defaults.DISK_TEMPLATES:
            raise ConfigError(f"Unknown disk template '{template}'"
                              f" (known: {', '.join(defaults.DISK_TEMPLATES)})")
    stamp = time.time() if now is None else now
    cluster_uuid, node_uuid, group_uuid = uuids or tuple(str(uuidlib.uuid4()) for _ in range(3))
    cluster: dict[str, Any] = copy.deepcopy(defaults.CLUSTER_DEFAULTS)
    nic_default = cluster["nicparams"]["default"]
    nic_default.update(nicparams or {})
    ipolicy = cluster["ipolicy"]
    ipolicy["disk-templates"] = [t for t in templates if t in ipolicy["disk-templates"]]
    cluster.update({
        "rsahostkeypub": rsahostkeypub, "dsahostkeypub": dsahostkeypub,
        "master_node": node_uuid, "master_ip": cluster_ip, "master_netdev": master_netdev,
        "master_netmask": master_netmask, "cluster_name": cluster_name,
        "enabled_hypervisors": hypervisors, "enabled_disk_templates": templates,
        "hv_state_static": {hv: dict(defaults.HVST_DEFAULTS) for hv in hypervisors},
        "default_iallocator": default_iallocator, "modify_etc_hosts": modify_etc_hosts,
        "modify_ssh_setup": modify_ssh_setup, "primary_ip_family": primary_ip_family,
        "uid_pool": uid_pool or [], "maintain_node_health": maintain_node_health,
        "enabled_user_shutdown": enabled_user_shutdown,
        "ctime": stamp, "mtime": stamp, "uuid": cluster_uuid, "serial_no": 1,
    })
    for key, value in (("file_storage_dir", file_storage_dir),
                       ("shared_file_storage_dir", shared_file_storage_dir),
                       ("gluster_storage_dir", gluster_storage_dir),
                       ("candidate_pool_size", candidate_pool_size), ("mac_prefix", mac_prefix)):
        if value is not None:
            cluster[key] = value
    node = {"name": master_name, "primary_ip": master_ip, "secondary_ip": secondary_ip or master_ip,
            "master_candidate": True, "offline": False, "drained": False, "group": group_uuid,
            "master_capable": True, "vm_capable": True, "ndparams": {}, "powered": True,
            "ctime": stamp, "mtime": stamp, "uuid": node_uuid, "serial_no": 1, "tags": []}
    group = {"name": defaults.INITIAL_NODE_GROUP_NAME, "members": [], "ndparams": {},
             "alloc_policy": defaults.ALLOC_POLICY_PREFERRED, "ipolicy": {}, "diskparams": {},
             "networks": {}, "ctime": 0, "mtime": stamp, "uuid": group_uuid, "serial_no": 1, "tags": []}
    tree = {"version": CONFIG_VERSION, "cluster": _ordered(cluster, defaults.CLUSTER_KEY_ORDER),
            "nodes": {node_uuid: _ordered(node, defaults.NODE_KEY_ORDER)},
            "nodegroups": {group_uuid: _ordered(group, defaults.GROUP_KEY_ORDER)},
            "instances": {}, "networks": {}, "disks": {}, "filters": {},
            "ctime": stamp, "mtime": stamp, "serial_no": 1}
    return ConfigData(_ordered(tree, defaults.TOP_KEY_ORDER))
