"""The export description `config.ini` (Ganeti's FinalizeExport), from the instance and exported disks.

Sections and keys are Ganeti 3.0.2's: [export] (version, timestamp,
source, os, compression), [instance] (name, memory sizes, vcpus,
disk_template, hypervisor, tags, nic<n>_*, nic_count, disk<n>_*,
disk_count), [hypervisor] (minus the cluster-wide parameters), [backend],
[os] and [os_private]. Values are Python's str() of the JSON values, as
Ganeti writes them ("None", "True").
"""

from __future__ import annotations

import configparser
import io
import time
from collections.abc import Mapping, Sequence
from typing import Any

#: constants.EXPORT_VERSION
EXPORT_VERSION = 0
#: Hypervisor parameters that are cluster-wide and not exported (constants.HVC_GLOBALS).
HVC_GLOBALS = frozenset({"migration_bandwidth", "migration_mode", "migration_port", "xen_cmd"})
#: NIC parameters written per NIC, in Ganeti's order (constants.NICS_PARAMETER_TYPES).
NIC_PARAMETERS = ("link", "mode", "vlan")
DT_DISKLESS = "diskless"
DT_MIXED = "mixed"


class ExportConfigError(Exception):
    """The instance lacks something the description needs; the message says what."""


def disk_template(disks: Sequence[Mapping[str, Any]]) -> str:
    """One template for the exported disks (Ganeti's GetDiskTemplate): diskless, the common one, or mixed."""
    kinds = {str(d.get("dev_type")) for d in disks}
    if not kinds:
        return DT_DISKLESS
    return kinds.pop() if len(kinds) == 1 else DT_MIXED


def _whole(beparams: Mapping[str, Any], key: str) -> str:
    value = beparams.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExportConfigError(f"Cannot write the export description: '{key}' must be a number,"
                                f" not {value!r}")
    return str(int(value))


def build(instance: Mapping[str, Any], snap_disks: Sequence[Any], now: float | None = None) -> str:
    """The text of config.ini. `snap_disks` has a disk dict per exported disk and false for the others."""
    config = configparser.RawConfigParser()
    exported = [d for d in snap_disks if isinstance(d, Mapping)]
    beparams = instance.get("beparams") or {}

    config.add_section("export")
    config.set("export", "version", str(EXPORT_VERSION))
    config.set("export", "timestamp", str(int(time.time() if now is None else now)))
    config.set("export", "source", str(instance.get("primary_node")))
    config.set("export", "os", str(instance.get("os")))
    config.set("export", "compression", "none")

    sec = "instance"
    config.add_section(sec)
    config.set(sec, "name", str(instance.get("name")))
    config.set(sec, "maxmem", _whole(beparams, "maxmem"))
    config.set(sec, "minmem", _whole(beparams, "minmem"))
    # "memory" is the old name of maxmem, kept for older Ganeti versions.
    config.set(sec, "memory", _whole(beparams, "maxmem"))
    config.set(sec, "vcpus", _whole(beparams, "vcpus"))
    config.set(sec, "disk_template", disk_template(exported))
    config.set(sec, "hypervisor", str(instance.get("hypervisor")))
    config.set(sec, "tags", " ".join(str(t) for t in instance.get("tags") or []))

    nics = instance.get("nics") or []
    for idx, nic in enumerate(nics):
        nicparams = nic.get("nicparams") or {}
        for key in ("mac", "ip", "network", "name"):
            config.set(sec, f"nic{idx}_{key}", str(nic.get(key)))
        for param in NIC_PARAMETERS:
            config.set(sec, f"nic{idx}_{param}", str(nicparams.get(param)))
    config.set(sec, "nic_count", str(len(nics)))

    for idx, disk in enumerate(snap_disks):
        if not isinstance(disk, Mapping):
            continue
        config.set(sec, f"disk{idx}_ivname", str(disk.get("iv_name")))
        config.set(sec, f"disk{idx}_dump", str(disk.get("uuid")))
        config.set(sec, f"disk{idx}_size", _whole(disk, "size"))
        config.set(sec, f"disk{idx}_name", str(disk.get("name")))
    config.set(sec, "disk_count", str(len(exported)))

    config.add_section("hypervisor")
    for name, value in (instance.get("hvparams") or {}).items():
        if name not in HVC_GLOBALS:
            config.set("hypervisor", name, str(value))
    config.add_section("backend")
    for name, value in beparams.items():
        config.set("backend", name, str(value))
    config.add_section("os")
    for name, value in (instance.get("osparams") or {}).items():
        config.set("os", name, str(value))
    config.add_section("os_private")
    for name, value in (instance.get("osparams_private") or {}).items():
        config.set("os_private", name, str(value))

    out = io.StringIO()
    config.write(out)
    return out.getvalue()
