"""Instances and their disks in config.data: read, built, changed, and encoded for the nodes.

Ganeti 3.0 keeps instances in the configuration's ``instances`` section and
their disks as separate objects in ``disks`` (an instance lists its disk
uuids in order); an instance has no disk template of its own: it is its
first disk's ``dev_type``, or ``diskless`` without disks. This module works
on `masterd.config.model.ConfigData`'s JSON tree so that keys it does not
know survive.

Parameters are filled as Ganeti's objects.Cluster does: hypervisor
parameters cluster -> OS-specific (os_hvp) -> instance; backend parameters
cluster default -> instance (an old ``memory`` becomes maxmem/minmem); OS
parameters cluster (OS base name, then OS+variant) -> instance; NIC
parameters cluster default -> NIC.

The node encodings are what the real master's RPC layer sends
(RpcRunner._InstDict and the disk encoders with their annotated disk
parameters), so the node daemons, ours or Ganeti's, get the same JSON. One
addition for several nodes on one machine: file paths under the master's
GANETI_ROOTDIR are sent as virtual paths (``/###-VIRTUAL-PATH-###,/srv/...``,
Ganeti's vcluster form), so every node maps them below its own root; with no
root (a real deployment) paths are sent as they are, like Ganeti.

Interface::

    Instance (snapshot), instances(cfg), instance(cfg, uuid), find_instance(cfg, name) -> Instance | None,
    lookup_instance(cfg, name_or_uuid) -> Instance     OpPrereqError(..., "unknown_entity")
    instance_disks(cfg, inst) -> [disk dict], disk_template(cfg, inst), instance_secondaries(cfg, inst)
    fill_hv / fill_be / fill_os / fill_nic
    new_disk(...), new_nic(...), new_instance(...), generate_mac(cfg), file_disk_path(...)
    add_instance(cfg, inst, disks), remove_instance(cfg, uuid), set_instance(cfg, uuid, **values),
    set_disk(cfg, uuid, **values), add_disk / detach_disk
    virtual_path(root, path), disk_dict(cfg, disk, inst, root), inst_dict(cfg, inst, root, hvp, bep, osp)
"""

from __future__ import annotations

import copy
import random
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from masterd.config import defaults
from masterd.config.model import ConfigData, ConfigError
from masterd.luxi.protocol import OpPrereqError
from noded.paths import VIRTUAL_PATH_PREFIX

DT_DISKLESS = "diskless"
DT_FILE = "file"
DT_SHAREDFILE = "sharedfile"
#: The disk templates whose disks are files in a storage directory.
FILE_TEMPLATES = (DT_FILE, DT_SHAREDFILE)
#: The templates this master can create (no LVM, DRBD, RBD, ExtStorage, Gluster here).
SUPPORTED_TEMPLATES = (DT_DISKLESS, DT_FILE, DT_SHAREDFILE)
ADMIN_UP = "up"
ADMIN_DOWN = "down"
ADMIN_OFFLINE = "offline"
#: Backend parameter names (constants.BES_PARAMETERS) and the legacy alias Ganeti upgrades.
BE_MEMORY = "memory"
BE_MAXMEM = "maxmem"
BE_MINMEM = "minmem"
#: A NIC's keys in wconfd's order (the sample has mac, nicparams, uuid; the optional ones between).
NIC_KEY_ORDER = ("mac", "ip", "nicparams", "network", "name", "uuid")


@dataclass(frozen=True)
class Instance:
    """One instance of config.data (a snapshot; change it through the functions below)."""

    uuid: str
    name: str
    primary_node: str
    os: str
    hypervisor: str
    admin_state: str
    admin_state_source: str
    disks_active: bool
    hvparams: dict[str, Any]
    beparams: dict[str, Any]
    osparams: dict[str, Any]
    nics: list[dict[str, Any]]
    disks: list[str]
    tags: list[str]
    network_port: int | None
    serial_no: int
    raw: dict[str, Any]


def _instance_from(uuid: str, raw: dict[str, Any]) -> Instance:
    return Instance(
        uuid=uuid, name=str(raw.get("name", "")), primary_node=str(raw.get("primary_node", "")),
        os=str(raw.get("os", "")), hypervisor=str(raw.get("hypervisor", "")),
        admin_state=str(raw.get("admin_state", ADMIN_DOWN)),
        admin_state_source=str(raw.get("admin_state_source", "admin")),
        disks_active=bool(raw.get("disks_active", False)),
        hvparams=copy.deepcopy(raw.get("hvparams") or {}), beparams=copy.deepcopy(raw.get("beparams") or {}),
        osparams=copy.deepcopy(raw.get("osparams") or {}), nics=copy.deepcopy(raw.get("nics") or []),
        disks=list(raw.get("disks") or []), tags=list(raw.get("tags") or []),
        network_port=raw.get("network_port"), serial_no=int(raw.get("serial_no", 0)),
        raw=copy.deepcopy(raw))


# --- reading ---------------------------------------------------------------------------------

def instances(cfg: ConfigData) -> list[Instance]:
    """Every instance, in the file's order."""
    return [_instance_from(uuid, raw) for uuid, raw in cfg.tree["instances"].items()]


def instance(cfg: ConfigData, uuid: str) -> Instance:
    raw = cfg.tree["instances"].get(uuid)
    if raw is None:
        raise ConfigError(f"Instance uuid {uuid} not found")
    return _instance_from(uuid, raw)


def find_instance(cfg: ConfigData, name: str) -> Instance | None:
    """The instance named `name` (or with that uuid), or None."""
    raw = cfg.tree["instances"].get(name)
    if raw is not None:
        return _instance_from(name, raw)
    for uuid, raw in cfg.tree["instances"].items():
        if raw.get("name") == name:
            return _instance_from(uuid, raw)
    # Ganeti also accepts an unambiguous short name ("inst1" for "inst1.example.com")
    matches = [(uuid, raw) for uuid, raw in cfg.tree["instances"].items()
               if str(raw.get("name", "")).split(".", 1)[0] == name]
    if len(matches) == 1:
        return _instance_from(*matches[0])
    return None


def lookup_instance(cfg: ConfigData, name: str) -> Instance:
    """The instance, or Ganeti's OpPrereqError for an unknown one."""
    found = find_instance(cfg, name)
    if found is None:
        raise OpPrereqError(f"Instance '{name}' not known", "unknown_entity")
    return found


def instance_disks(cfg: ConfigData, inst: Instance) -> list[dict[str, Any]]:
    """The instance's disks (copies of the config objects), in order."""
    disks = cfg.tree["disks"]
    missing = [uuid for uuid in inst.disks if uuid not in disks]
    if missing:
        raise ConfigError(f"instance {inst.name} refers to unknown disk(s) {', '.join(missing)}")
    return [copy.deepcopy(disks[uuid]) for uuid in inst.disks]


def disk_template(cfg: ConfigData, inst: Instance) -> str:
    """Ganeti 3.0's derived disk template: the first disk's type, or diskless."""
    if not inst.disks:
        return DT_DISKLESS
    disk = cfg.tree["disks"].get(inst.disks[0]) or {}
    return str(disk.get("dev_type", DT_DISKLESS))


def instance_secondaries(cfg: ConfigData, inst: Instance) -> list[str]:
    """The uuids of the nodes holding the instance's disks besides the primary (none for file disks)."""
    found: list[str] = []
    for disk in instance_disks(cfg, inst):
        for node in disk.get("nodes") or []:
            if node != inst.primary_node and node not in found:
                found.append(node)
    return found


def instance_nodes(cfg: ConfigData, inst: Instance) -> list[str]:
    """Primary first, then the secondaries (node uuids)."""
    return [inst.primary_node, *instance_secondaries(cfg, inst)]


# --- parameters ------------------------------------------------------------------------------

def _fill(base: Mapping[str, Any] | None, own: Mapping[str, Any] | None) -> dict[str, Any]:
    filled = copy.deepcopy(dict(base or {}))
    filled.update(copy.deepcopy(dict(own or {})))
    return filled


def fill_hv(cfg: ConfigData, hypervisor: str, os_name: str,
            hvparams: Mapping[str, Any] | None) -> dict[str, Any]:
    """Hypervisor parameters: cluster defaults, then the OS's (os_hvp), then the instance's."""
    cluster = cfg.cluster
    filled = _fill((cluster.get("hvparams") or {}).get(hypervisor), None)
    filled.update(copy.deepcopy(((cluster.get("os_hvp") or {}).get(os_name) or {}).get(hypervisor) or {}))
    filled.update(copy.deepcopy(dict(hvparams or {})))
    return filled


def upgrade_be(beparams: Mapping[str, Any] | None) -> dict[str, Any]:
    """Ganeti's UpgradeBeParams: an old `memory` sets maxmem and minmem."""
    result = dict(beparams or {})
    if BE_MEMORY in result:
        memory = result.pop(BE_MEMORY)
        result.setdefault(BE_MAXMEM, memory)
        result.setdefault(BE_MINMEM, memory)
    return result


def fill_be(cfg: ConfigData, beparams: Mapping[str, Any] | None) -> dict[str, Any]:
    """Backend parameters: the cluster's default group, then the instance's."""
    return _fill((cfg.cluster.get("beparams") or {}).get("default"), upgrade_be(beparams))


def fill_os(cfg: ConfigData, os_name: str, osparams: Mapping[str, Any] | None) -> dict[str, Any]:
    """OS parameters: the cluster's for the OS, then for OS+variant, then the instance's."""
    cluster_os = cfg.cluster.get("osparams") or {}
    base = os_name.split("+", 1)[0]
    filled = _fill(cluster_os.get(base), None)
    if base != os_name:
        filled.update(copy.deepcopy(cluster_os.get(os_name) or {}))
    filled.update(copy.deepcopy(dict(osparams or {})))
    return filled


def fill_nic(cfg: ConfigData, nicparams: Mapping[str, Any] | None) -> dict[str, Any]:
    """NIC parameters: the cluster's default, then the NIC's."""
    return _fill((cfg.cluster.get("nicparams") or {}).get("default"), nicparams)


def disk_params(cfg: ConfigData, inst: Instance) -> dict[str, Any]:
    """The disk parameters for the instance's group: cluster per template, then the group's."""
    node_raw = cfg.tree["nodes"].get(inst.primary_node) or {}
    group = cfg.tree["nodegroups"].get(node_raw.get("group", "")) or {}
    result = copy.deepcopy(cfg.cluster.get("diskparams") or {})
    for template, values in (group.get("diskparams") or {}).items():
        result.setdefault(template, {}).update(copy.deepcopy(values))
    return result


# --- building --------------------------------------------------------------------------------

def _ordered(values: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    keys = [k for k in order if k in values] + sorted(k for k in values if k not in order)
    return {k: values[k] for k in keys}


def new_disk(cfg: ConfigData, *, dev_type: str, logical_id: Sequence[Any] | None, nodes: Sequence[str],
             index: int, size: int, mode: str = "rw", params: Mapping[str, Any] | None = None,
             name: str | None = None, spindles: int | None = None, uuid: str | None = None) -> dict[str, Any]:
    """A disk object as config.data holds it."""
    now = cfg.now()
    values: dict[str, Any] = {
        "logical_id": list(logical_id) if logical_id is not None else None, "dev_type": dev_type,
        "children": [], "nodes": list(nodes), "iv_name": f"disk/{index}", "size": int(size), "mode": mode,
        "params": dict(params or {}), "uuid": uuid or str(uuidlib.uuid4()), "serial_no": 1,
        "ctime": now, "mtime": now}
    if values["logical_id"] is None:
        del values["logical_id"]
    if name:
        values["name"] = name
    if spindles is not None:
        values["spindles"] = spindles
    return _ordered(values, defaults.DISK_KEY_ORDER)


def new_nic(*, mac: str, ip: str | None = None, network: str | None = None, name: str | None = None,
            nicparams: Mapping[str, Any] | None = None, uuid: str | None = None) -> dict[str, Any]:
    """A NIC as an instance holds it (unset values are left out, as Ganeti writes them)."""
    values: dict[str, Any] = {"mac": mac, "ip": ip, "nicparams": dict(nicparams or {}), "network": network,
                              "name": name, "uuid": uuid or str(uuidlib.uuid4())}
    return _ordered({k: v for k, v in values.items() if v is not None}, NIC_KEY_ORDER)


def new_instance(cfg: ConfigData, *, name: str, primary_node: str, os: str, hypervisor: str,
                 hvparams: Mapping[str, Any], beparams: Mapping[str, Any], osparams: Mapping[str, Any],
                 osparams_private: Mapping[str, Any], nics: Sequence[dict[str, Any]], disks: Sequence[str],
                 admin_state: str, tags: Sequence[str] = (), network_port: int | None = None,
                 uuid: str | None = None) -> dict[str, Any]:
    """An instance object as config.data holds it (disks are uuids of objects in `disks`)."""
    now = cfg.now()
    values: dict[str, Any] = {
        "name": name, "primary_node": primary_node, "os": os, "hypervisor": hypervisor,
        "hvparams": dict(hvparams), "beparams": dict(beparams), "osparams": dict(osparams),
        "osparams_private": dict(osparams_private), "admin_state": admin_state, "admin_state_source": "admin",
        "nics": [dict(n) for n in nics], "disks": list(disks), "disks_active": False, "ctime": now,
        "mtime": now, "uuid": uuid or str(uuidlib.uuid4()), "serial_no": 1, "tags": list(tags)}
    if network_port is not None:
        values["network_port"] = network_port
    return _ordered(values, defaults.INSTANCE_KEY_ORDER)


def used_macs(cfg: ConfigData) -> set[str]:
    return {str(nic.get("mac", "")).lower() for raw in cfg.tree["instances"].values()
            for nic in raw.get("nics") or []}


def generate_mac(cfg: ConfigData, reserved: set[str] | None = None, rng: random.Random | None = None) -> str:
    """A MAC address with the cluster's prefix that no NIC uses (Ganeti's GenerateMAC)."""
    prefix = str(cfg.cluster.get("mac_prefix") or defaults.CLUSTER_DEFAULTS["mac_prefix"])
    taken = used_macs(cfg) | {m.lower() for m in (reserved or set())}
    source = rng or random.SystemRandom()
    for _ in range(1000):
        mac = f"{prefix}:{source.randrange(256):02x}:{source.randrange(256):02x}:{source.randrange(256):02x}"
        if mac.lower() not in taken:
            return mac
    raise OpPrereqError("Cannot generate a unique MAC address", "insufficient_resources")


def storage_dir(cfg: ConfigData, template: str) -> str:
    """The cluster's storage directory for a file template."""
    key = "file_storage_dir" if template == DT_FILE else "shared_file_storage_dir"
    return str(cfg.cluster.get(key) or "")


def storage_unit(cfg: ConfigData, template: str, root: str) -> list[Any]:
    """node_info's storage unit for a file template: its directory as sent to the nodes (virtual_path)."""
    return [template, virtual_path(root, storage_dir(cfg, template)), []]


def file_disk_path(directory: str, disk_uuid: str, index: int, template: str) -> str:
    """Ganeti's file disk name: <dir>/<disk uuid>.<template>.disk<index>."""
    return f"{directory}/{disk_uuid}.{template}.disk{index}"


# --- changing --------------------------------------------------------------------------------

def add_instance(cfg: ConfigData, inst: dict[str, Any], disks: Sequence[dict[str, Any]]) -> Instance:
    """Add an instance and its disk objects; the caller has checked names and resources."""
    uuid = str(inst["uuid"])
    if uuid in cfg.tree["instances"]:
        raise ConfigError(f"Instance uuid {uuid} already exists")
    if any(raw.get("name") == inst["name"] for raw in cfg.tree["instances"].values()):
        raise ConfigError(f"Instance {inst['name']} is already in the configuration")
    for disk in disks:
        cfg.tree["disks"][str(disk["uuid"])] = copy.deepcopy(disk)
    cfg.tree["instances"][uuid] = copy.deepcopy(inst)
    cfg.bump()
    return instance(cfg, uuid)


def remove_instance(cfg: ConfigData, uuid: str) -> None:
    """Remove an instance and its disk objects."""
    raw = cfg.tree["instances"].pop(uuid, None)
    if raw is None:
        raise ConfigError(f"Instance uuid {uuid} not found")
    for disk_uuid in raw.get("disks") or []:
        cfg.tree["disks"].pop(disk_uuid, None)
    cfg.bump()


def _touch(cfg: ConfigData, obj: dict[str, Any]) -> None:
    obj["serial_no"] = int(obj.get("serial_no", 0)) + 1
    obj["mtime"] = cfg.now()


def set_instance(cfg: ConfigData, uuid: str, **values: Any) -> Instance:
    """Set top-level fields of an instance (admin_state, disks_active, primary_node, ...) and bump serials.

    Nothing changes (no serial bump) when every value is already set.
    """
    raw = cfg.tree["instances"].get(uuid)
    if raw is None:
        raise ConfigError(f"Instance uuid {uuid} not found")
    changed = {k: copy.deepcopy(v) for k, v in values.items() if raw.get(k) != v}
    if changed:
        raw.update(changed)
        ordered = _ordered(raw, defaults.INSTANCE_KEY_ORDER)
        raw.clear()
        raw.update(ordered)
        _touch(cfg, raw)
        cfg.bump()
    return instance(cfg, uuid)


def set_disk(cfg: ConfigData, uuid: str, **values: Any) -> dict[str, Any]:
    """Set fields of a disk object (size, logical_id, nodes, iv_name ...) and bump serials."""
    raw = cfg.tree["disks"].get(uuid)
    if raw is None:
        raise ConfigError(f"Disk uuid {uuid} not found")
    changed = {k: copy.deepcopy(v) for k, v in values.items() if raw.get(k) != v}
    if changed:
        raw.update(changed)
        _touch(cfg, raw)
        cfg.bump()
    return copy.deepcopy(raw)


def add_disk(cfg: ConfigData, inst_uuid: str, disk: dict[str, Any], index: int | None = None) -> None:
    """Attach a new disk object to an instance (at `index`, default last)."""
    raw = cfg.tree["instances"].get(inst_uuid)
    if raw is None:
        raise ConfigError(f"Instance uuid {inst_uuid} not found")
    cfg.tree["disks"][str(disk["uuid"])] = copy.deepcopy(disk)
    uuids = list(raw.get("disks") or [])
    uuids.insert(len(uuids) if index is None else index, str(disk["uuid"]))
    raw["disks"] = uuids
    _touch(cfg, raw)
    cfg.bump()


def remove_disk(cfg: ConfigData, inst_uuid: str, disk_uuid: str) -> None:
    """Detach a disk from an instance and drop the disk object."""
    raw = cfg.tree["instances"].get(inst_uuid)
    if raw is None:
        raise ConfigError(f"Instance uuid {inst_uuid} not found")
    uuids = list(raw.get("disks") or [])
    if disk_uuid not in uuids:
        raise ConfigError(f"Disk {disk_uuid} is not a disk of instance {raw.get('name')}")
    uuids.remove(disk_uuid)
    raw["disks"] = uuids
    cfg.tree["disks"].pop(disk_uuid, None)
    _touch(cfg, raw)
    cfg.bump()


# --- what the nodes are sent -----------------------------------------------------------------

def virtual_path(root: str, path: str) -> str:
    """`path` as sent to the nodes: below the master's root it becomes a virtual path (vcluster)."""
    if root and (path == root or path.startswith(root.rstrip("/") + "/")):
        return VIRTUAL_PATH_PREFIX + (path[len(root.rstrip("/")):] or "/")
    return path


def _virtual_logical_id(disk: dict[str, Any], root: str) -> None:
    if disk.get("dev_type") in FILE_TEMPLATES and isinstance(disk.get("logical_id"), list) \
            and len(disk["logical_id"]) == 2 and isinstance(disk["logical_id"][1], str):
        disk["logical_id"] = [disk["logical_id"][0], virtual_path(root, disk["logical_id"][1])]
    for child in disk.get("children") or []:
        _virtual_logical_id(child, root)


def _ld_params(dev_type: str, all_params: Mapping[str, Any]) -> dict[str, Any]:
    """Ganeti's ComputeLDParams for the non-DRBD templates: the template's own parameters."""
    return copy.deepcopy(dict(all_params.get(dev_type) or {}))


def disk_dict(cfg: ConfigData, disk: Mapping[str, Any], inst: Instance, root: str = "") -> dict[str, Any]:
    """A disk as the master sends it (annotated with its parameters, dynamic params included)."""
    result = copy.deepcopy(dict(disk))
    if result.get("dev_type") != DT_DISKLESS:
        result["params"] = _fill(_ld_params(str(result.get("dev_type")), disk_params(cfg, inst)),
                                 result.get("params"))
    result["dynamic_params"] = {}
    _virtual_logical_id(result, root)
    return result


def inst_dict(cfg: ConfigData, inst: Instance, root: str = "", hvp: Mapping[str, Any] | None = None,
              bep: Mapping[str, Any] | None = None, osp: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The instance as the master sends it (RpcRunner._InstDict): parameters filled, disks_info added."""
    idict = copy.deepcopy(inst.raw)
    idict["hvparams"] = fill_hv(cfg, inst.hypervisor, inst.os, inst.hvparams)
    if hvp:
        idict["hvparams"].update(copy.deepcopy(dict(hvp)))
    idict["secondary_nodes"] = instance_secondaries(cfg, inst)
    idict["beparams"] = fill_be(cfg, inst.beparams)
    if bep:
        idict["beparams"].update(copy.deepcopy(dict(bep)))
    idict["osparams"] = fill_os(cfg, inst.os, inst.osparams)
    if osp:
        idict["osparams"].update(copy.deepcopy(dict(osp)))
    idict["disks_info"] = [disk_dict(cfg, disk, inst, root) for disk in instance_disks(cfg, inst)]
    for nic in idict.get("nics") or []:
        nic["nicparams"] = fill_nic(cfg, nic.get("nicparams"))
    return idict
