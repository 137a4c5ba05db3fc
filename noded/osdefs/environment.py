"""The environment OS scripts run with (ganeti-os-interface(7), "Common environment").

Scripts get only these variables (the node's own environment is not passed
on). The names, values and their order are those of Ganeti's OSCoreEnv and
OSEnvironment, so an exported `environment` file lists them in the same
order: the OS part (OS_API_VERSION, OS_NAME, DEBUG_LEVEL, OS_VARIANT,
OSP_*, PATH), the instance (INSTANCE_NAME, _OS, _UUID, _CTIME, _MTIME,
_PRIMARY_NODE, HYPERVISOR, DISK_COUNT, NIC_COUNT, INSTANCE_SECONDARY_NODES),
then per disk DISK_<n>_*, per NIC NIC_<n>_*, and INSTANCE_BE_<param> /
INSTANCE_HV_<param> (parameter names kept as they are, in lower case, as
Ganeti does). Values are Python's str() of the JSON values the master sent,
which is what Ganeti writes too ("None", "True", "1700000000.0").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from noded.backends.osdiag import OS_API_V15, OsDefinition
from noded.hypervisor.base import AttachedDisk
from noded.osdefs.lookup import api_version, split_name

#: The PATH OS scripts get (Ganeti's HOOKS_PATH).
SCRIPT_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"
#: Hypervisor parameters that name the guest's disk and NIC models.
HV_DISK_TYPE = "disk_type"
HV_NIC_TYPE = "nic_type"
NIC_MODE_BRIDGED = "bridged"
#: Disk types whose devices are block devices / files (constants.DTS_BLOCK, DTS_FILEBASED).
BLOCK_DISK_TYPES = frozenset({"blockdev", "drbd", "ext", "plain", "rbd"})
FILE_DISK_TYPES = frozenset({"file", "gluster", "sharedfile"})


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def param_variable(name: str) -> str:
    """The variable an OS parameter is exported as: "dhcp" -> "OSP_DHCP", "root-size" -> "OSP_ROOT_SIZE"."""
    return "OSP_" + name.upper().replace("-", "_")


def core_env(full_name: str, osd: OsDefinition, os_params: Mapping[str, Any],
             debug: int = 0) -> dict[str, str]:
    """The variables every OS script gets, also `verify` (Ganeti's OSCoreEnv).

    `full_name` is the OS name as the instance or request has it, with an
    optional "+variant"; without one, the first variant of variants.list is
    used (for API 15 and later).
    """
    api = api_version(osd)
    env = {"OS_API_VERSION": str(api), "OS_NAME": osd.name, "DEBUG_LEVEL": str(int(debug))}
    variant = ""
    if api >= OS_API_V15 and osd.variants:
        variant = split_name(full_name)[1] or osd.variants[0]
    env["OS_VARIANT"] = variant
    for name, value in os_params.items():
        env[param_variable(name)] = _text(value)
    env["PATH"] = SCRIPT_PATH
    return env


def instance_os_params(instance: Mapping[str, Any]) -> dict[str, Any]:
    """The instance's OS parameters: `osparams`, overridden by `osparams_private`."""
    params = dict(instance.get("osparams") or {})
    params.update(instance.get("osparams_private") or {})
    return params


def _disk_env(idx: int, attached: AttachedDisk, hvparams: Mapping[str, Any]) -> dict[str, str]:
    disk = attached.disk
    env = {
        f"DISK_{idx}_ACCESS": _text(disk.get("mode")),
        f"DISK_{idx}_UUID": _text(disk.get("uuid")),
        f"DISK_{idx}_SIZE": _text(disk.get("size")),
    }
    if attached.path:
        env[f"DISK_{idx}_PATH"] = attached.path
    if attached.uri:
        env[f"DISK_{idx}_URI"] = attached.uri
    if disk.get("name"):
        env[f"DISK_{idx}_NAME"] = _text(disk["name"])
    if HV_DISK_TYPE in hvparams:
        env[f"DISK_{idx}_FRONTEND_TYPE"] = _text(hvparams[HV_DISK_TYPE])
    dev_type = disk.get("dev_type")
    if dev_type in BLOCK_DISK_TYPES:
        env[f"DISK_{idx}_BACKEND_TYPE"] = "block"
    elif dev_type in FILE_DISK_TYPES:
        logical_id = disk.get("logical_id") or [""]
        env[f"DISK_{idx}_BACKEND_TYPE"] = f"file:{logical_id[0]}"
    return env


def _network_env(prefix: str, netinfo: Mapping[str, Any]) -> dict[str, str]:
    """NIC_<n>_NETWORK_* for a NIC on a network (Ganeti's Network.HooksDict)."""
    env = {
        f"{prefix}NETWORK_NAME": _text(netinfo.get("name")),
        f"{prefix}NETWORK_UUID": _text(netinfo.get("uuid")),
        f"{prefix}NETWORK_TAGS": " ".join(_text(t) for t in netinfo.get("tags") or []),
    }
    for key, suffix in (("network", "SUBNET"), ("gateway", "GATEWAY"), ("network6", "SUBNET6"),
                        ("gateway6", "GATEWAY6"), ("mac_prefix", "MAC_PREFIX")):
        if netinfo.get(key):
            env[f"{prefix}NETWORK_{suffix}"] = _text(netinfo[key])
    return env


def _nic_env(idx: int, nic: Mapping[str, Any], hvparams: Mapping[str, Any]) -> dict[str, str]:
    nicparams = nic.get("nicparams") or {}
    mode = nicparams.get("mode")
    link = nicparams.get("link")
    env = {f"NIC_{idx}_MAC": _text(nic.get("mac")), f"NIC_{idx}_UUID": _text(nic.get("uuid"))}
    if nic.get("name"):
        env[f"NIC_{idx}_NAME"] = _text(nic["name"])
    if nic.get("ip"):
        env[f"NIC_{idx}_IP"] = _text(nic["ip"])
    env[f"NIC_{idx}_MODE"] = _text(mode)
    if mode == NIC_MODE_BRIDGED:
        env[f"NIC_{idx}_BRIDGE"] = _text(link)
    if link:
        env[f"NIC_{idx}_LINK"] = _text(link)
    if nic.get("netinfo"):
        env.update(_network_env(f"NIC_{idx}_", nic["netinfo"]))
    if HV_NIC_TYPE in hvparams:
        env[f"NIC_{idx}_FRONTEND_TYPE"] = _text(hvparams[HV_NIC_TYPE])
    return env


def instance_env(instance: Mapping[str, Any], osd: OsDefinition, disks: Sequence[AttachedDisk],
                 debug: int = 0) -> dict[str, str]:
    """The environment of the create, rename, export and import scripts (Ganeti's OSEnvironment).

    `disks` are the instance's disks (instance["disks_info"], in order) as
    found on this node; their paths and URIs become DISK_<n>_PATH/_URI.
    """
    env = core_env(_text(instance.get("os")), osd, instance_os_params(instance), debug)
    for attr in ("name", "os", "uuid", "ctime", "mtime", "primary_node"):
        env[f"INSTANCE_{attr.upper()}"] = _text(instance.get(attr))
    nics = instance.get("nics") or []
    hvparams = instance.get("hvparams") or {}
    env["HYPERVISOR"] = _text(instance.get("hypervisor"))
    env["DISK_COUNT"] = str(len(disks))
    env["NIC_COUNT"] = str(len(nics))
    env["INSTANCE_SECONDARY_NODES"] = " ".join(_text(n) for n in instance.get("secondary_nodes") or [])
    for idx, attached in enumerate(disks):
        env.update(_disk_env(idx, attached, hvparams))
    for idx, nic in enumerate(nics):
        env.update(_nic_env(idx, nic, hvparams))
    for source, kind in ((instance.get("beparams") or {}, "BE"), (hvparams, "HV")):
        for key, value in source.items():
            env[f"INSTANCE_{kind}_{key}"] = _text(value)
    return env
