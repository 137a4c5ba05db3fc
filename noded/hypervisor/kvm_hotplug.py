"""Hot-plugging disks and NICs into a running kvm instance through QMP.

Like Ganeti: the device type (disk_type / nic_type the instance started
with) must be hot-pluggable; a new device gets Ganeti's id and the next free
slot of its bus (from the devices the runtime file lists); after the QMP
command the device must appear in (or vanish from) /machine/peripheral; the
runtime file is updated so a migration or a later hotplug sees the device.
Disks are attached with blockdev-add + device_add, NICs with netdev_add
(user-mode network, or a tap device on the NIC's bridge passed with getfd) +
device_add. Removing a device needs the guest's cooperation (ACPI PCI
hot-unplug): a guest without an OS never lets it go, and the removal fails.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from noded.hypervisor import kvm_cmd
from noded.hypervisor.base import HotplugError, HypervisorError
from noded.hypervisor.kvm_net import attach_to_bridge, nic_bridge, open_tap
from noded.hypervisor.kvm_state import dump_runtime, load_runtime
from noded.hypervisor.qmp import QmpClient

if TYPE_CHECKING:
    from noded.hypervisor.kvm import KvmHypervisor

ACTIONS = ("hotadd", "hotremove", "hotmod")
DEV_TYPES = ("disk", "nic")


def hotplug(hv: KvmHypervisor, instance: Mapping[str, Any], action: str, dev_type: str,
            device: Mapping[str, Any], extra: Any, seq: int) -> Any:
    """Ganeti's HotAddDevice / HotDelDevice / HotModDevice; hotremove returns the device's hvinfo.

    HotplugError when the device cannot be hot-plugged at all, HypervisorError when doing it failed.
    """
    name = str(instance["name"])
    if action not in ACTIONS:
        raise HotplugError(f"Unknown hotplug action '{action}'")
    if dev_type not in DEV_TYPES:
        raise HotplugError(f"Unknown hotplug device type '{dev_type}'")
    if hv.instance_pid(name) is None:
        raise HotplugError(f"Instance {name} is not running")
    cmd, nics, hvp, disks = load_runtime(hv.dirs.read_runtime(name))
    hv_type = str(hvp["disk_type"] if dev_type == "disk" else hvp["nic_type"])
    allowed = kvm_cmd.HOTPLUGGABLE_DISK_TYPES if dev_type == "disk" else kvm_cmd.HOTPLUGGABLE_NIC_TYPES
    if hv_type not in allowed:
        raise HotplugError(f"Hotplug is not supported for device type {hv_type}")
    if action == "hotadd":
        _add(hv, name, (cmd, nics, hvp, disks), dev_type, hv_type, dict(device), extra, seq)
        return None
    if action == "hotremove":
        return _remove(hv, name, (cmd, nics, hvp, disks), dev_type, device, seq)
    if dev_type != "nic":
        return None  # Ganeti modifies NICs only
    hvinfo = _remove(hv, name, (cmd, nics, hvp, disks), dev_type, device, seq)
    cmd, nics, hvp, disks = load_runtime(hv.dirs.read_runtime(name))
    _add(hv, name, (cmd, nics, hvp, disks), dev_type, hv_type, {**device, "hvinfo": hvinfo}, extra, seq)
    return None


def _slots(hvp: Mapping[str, Any], nics: list[dict[str, Any]], disks: list[list[Any]]) -> kvm_cmd.BusSlots:
    slots = kvm_cmd.BusSlots.initial(hvp)
    for entry in [d[0] for d in disks] + nics:
        hvinfo = entry.get("hvinfo") if isinstance(entry, dict) else None
        if hvinfo:
            slots.mark_used(hvinfo)
    return slots


def _has_device(qmp: QmpClient, devid: str) -> bool:
    children = qmp.execute("qom-list", {"path": "/machine/peripheral"})
    return any(child.get("name") == devid for child in children)


def _verify(qmp: QmpClient, devid: str, should_exist: bool, tries: int, delay: float) -> None:
    for attempt in range(tries):
        if _has_device(qmp, devid) == should_exist:
            return
        if attempt + 1 < tries:
            time.sleep(delay)
    if should_exist:
        raise HypervisorError(f"Device {devid} should have been added but is missing")
    raise HypervisorError(f"Device {devid} should have been removed but is still there")


def _qmp_device_args(hvinfo: Mapping[str, Any]) -> dict[str, Any]:
    args = {key: value for key, value in hvinfo.items()
            if key in ("driver", "id", "bus", "addr", "channel", "scsi-id", "lun")}
    return args


def _add(hv: KvmHypervisor, name: str, runtime: Any, dev_type: str, hv_type: str, device: dict[str, Any],
         extra: Any, seq: int) -> None:
    cmd, nics, hvp, disks = runtime
    devid = kvm_cmd.device_id(dev_type, device, seq)
    if not device.get("hvinfo"):
        device["hvinfo"] = kvm_cmd.device_hvinfo(dev_type, devid, hv_type, _slots(hvp, nics, disks))
    hvinfo = device["hvinfo"]
    devid = str(hvinfo.get("id", devid))
    tap = None
    with hv.qmp_session(name) as qmp:
        if dev_type == "disk":
            link, uri = _disk_extra(extra)
            path = uri if uri and (device.get("params") or {}).get("access") == "userspace" else link
            if not path:
                raise HypervisorError(f"No path given for the disk to hot-add to {name}")
            node: dict[str, Any] = {"driver": "raw", "node-name": devid,
                                    "file": {"driver": "file", "filename": path}}
            if "cache=none" in kvm_cmd.disk_cache_options(hvp, device.get("dev_type")):
                node["cache"] = {"direct": True}
            if hvp.get("disk_discard") not in ("default", "", None):
                node["discard"] = hvp["disk_discard"]
            qmp.execute("blockdev-add", node)
            qmp.execute("device_add", {**_qmp_device_args(hvinfo), "drive": devid})
            entry: Any = [device, link, uri]
        else:
            bridge = nic_bridge(device)
            if bridge is not None:
                fd, tap = open_tap(bool(hvp.get("vnet_hdr")) and hv_type == "paravirtual")
                try:
                    attach_to_bridge(tap, bridge)
                    qmp.execute("getfd", {"fdname": devid}, fds=[fd])
                finally:
                    os.close(fd)
                qmp.execute("netdev_add", {"type": "tap", "id": devid, "fd": devid})
            else:
                qmp.execute("netdev_add", {"type": "user", "id": devid})
            arguments = {**_qmp_device_args(hvinfo), "netdev": devid}
            if device.get("mac"):
                arguments["mac"] = device["mac"]
            qmp.execute("device_add", arguments)
            entry = device
        _verify(qmp, devid, True, hv.HOTPLUG_VERIFY_TRIES, hv.HOTPLUG_VERIFY_DELAY)
    if tap is not None:
        os.makedirs(hv.dirs.nic_dir(name), exist_ok=True)
        with open(hv.dirs.nic_file(name, seq), "w") as f:
            f.write(tap)
    (disks if dev_type == "disk" else nics).append(entry)
    hv.dirs.write_runtime(name, dump_runtime((cmd, nics, hvp, disks)))


def _disk_extra(extra: Any) -> tuple[str | None, str | None]:
    """(link, uri) from the RPC's `extra` ([link, uri], or a plain path)."""
    if isinstance(extra, str):
        return extra, None
    if isinstance(extra, (list, tuple)) and extra:
        link = extra[0] if isinstance(extra[0], str) else None
        uri = extra[1] if len(extra) > 1 and isinstance(extra[1], str) else None
        return link, uri
    return None, None


def _remove(hv: KvmHypervisor, name: str, runtime: Any, dev_type: str, device: Mapping[str, Any],
            seq: int) -> Any:
    cmd, nics, hvp, disks = runtime
    uuid = device.get("uuid")
    if dev_type == "disk":
        found = [d for d in disks if d[0].get("uuid") == uuid]
    else:
        found = [n for n in nics if n.get("uuid") == uuid]
    if not found:
        raise HypervisorError(f"Cannot find runtime info for {dev_type} with UUID {uuid}")
    entry = found[0]
    kvm_device = entry[0] if dev_type == "disk" else entry
    hvinfo = kvm_device.get("hvinfo") or {}
    devid = str(hvinfo.get("id") or kvm_cmd.device_id(dev_type, kvm_device, seq))
    with hv.qmp_session(name) as qmp:
        qmp.execute("device_del", {"id": devid})
        _verify(qmp, devid, False, hv.HOTPLUG_VERIFY_TRIES, hv.HOTPLUG_VERIFY_DELAY)
        with contextlib.suppress(Exception):
            if dev_type == "disk":
                qmp.execute("blockdev-del", {"node-name": devid})
            else:
                qmp.execute("netdev_del", {"id": devid})
    if dev_type == "nic":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(hv.dirs.nic_file(name, seq))
    (disks if dev_type == "disk" else nics).remove(entry)
    hv.dirs.write_runtime(name, dump_runtime((cmd, nics, hvp, disks)))
    return hvinfo
