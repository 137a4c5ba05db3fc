"""The qemu command line of a kvm instance, built as Ganeti's hv_kvm builds it.

Two parts, as in Ganeti: `generate_runtime` makes the part that follows the
instance wherever it runs (kept in the runtime file and sent to the
destination of a migration), and `KvmHypervisor` adds the node's own part
when it starts the process (pid file, sockets, log, acceleration, network
backends, drives, -incoming). Devices get Ganeti's ids
(`disk-<uuid prefix>`, `nic-<uuid prefix>`) and PCI slots from 12 upwards,
kept in each device's "hvinfo" so hotplug finds free slots.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from noded.hypervisor.base import AttachedDisk, HypervisorError
from noded.hypervisor.kvm_params import SCSI_DISK_TYPES, is_interface, is_ip_address, is_url

PCI_BUS = "pci.0"
SCSI_BUS = "scsi.0"
SCSI_SLOTS = 16
VNC_BASE_PORT = 5900
#: Disk templates whose storage other nodes see too: no host cache (migration safety).
EXT_MIRROR_TEMPLATES = frozenset({"blockdev", "diskless", "ext", "gluster", "rbd", "sharedfile"})
HOTPLUGGABLE_NIC_TYPES = ("e1000", "i82551", "i82559er", "i82557b", "ne2k_pci", "paravirtual", "pcnet",
                          "rtl8139")
HOTPLUGGABLE_DISK_TYPES = ("paravirtual", "scsi-block", "scsi-generic", "scsi-hd", "scsi-cd")


# -- what the qemu binary offers (cached per binary and modification time) -----
@functools.lru_cache(maxsize=32)
def _qemu_output(kvm_path: str, mtime: float, args: tuple[str, ...], may_fail: bool) -> str:
    try:
        result = subprocess.run([kvm_path, *args], capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise HypervisorError(f"Unable to get KVM {' '.join(args)} output: {err}") from err
    if result.returncode != 0 and not may_fail:
        raise HypervisorError(f"Unable to get KVM {' '.join(args)} output: {result.stderr.strip()}")
    return result.stdout


def qemu_output(kvm_path: str, *args: str, may_fail: bool = False) -> str:
    """Output of `kvm_path args` (e.g. "--help", "-machine", "help")."""
    try:
        mtime = os.stat(kvm_path).st_mtime
    except OSError as err:
        raise HypervisorError(f"The KVM binary ('{kvm_path}') does not exist: {err.strerror}") from err
    return _qemu_output(kvm_path, mtime, args, may_fail)


def qemu_version(kvm_path: str) -> tuple[int, int, int]:
    """(major, minor, micro) from `qemu --version`."""
    first = (qemu_output(kvm_path, "--version").splitlines() or [""])[0]
    match = re.search(r"\b(\d+)\.(\d+)(\.(\d+))?\b", first)
    if not match:
        raise HypervisorError("Unable to get KVM version")
    return int(match.group(1)), int(match.group(2)), int(match.group(4) or 0)


def default_machine(kvm_path: str) -> str:
    match = re.search(r"^(\S+).*\(default\)", qemu_output(kvm_path, "-machine", "help"), re.M)
    return match.group(1) if match else "pc"


def device_supported(kvm_path: str, driver: str) -> bool:
    devices = qemu_output(kvm_path, "-device", "help", may_fail=True)
    return re.search(rf'^name "{re.escape(driver)}"', devices, re.M) is not None


# -- device ids and slots --------------------------------------------------------
def device_id(dev_type: str, device: Mapping[str, Any], index: int) -> str:
    """Ganeti's QEMU id: "disk-932df160-7a22-4067" from the UUID (ids are limited to 30 chars)."""
    dev_uuid = device.get("uuid")
    if isinstance(dev_uuid, str) and dev_uuid:
        return f"{dev_type}-{dev_uuid.rsplit('-', 2)[0]}"
    return f"{dev_type}-idx{index}"


def device_driver(dev_type: str, hv_type: str) -> str:
    if dev_type == "nic":
        return "virtio-net-pci" if hv_type == "paravirtual" else hv_type
    return "virtio-blk-pci" if hv_type == "paravirtual" else hv_type


@dataclass
class BusSlots:
    """Free and used slots of the first PCI bus and the SCSI bus."""

    pci: list[bool]
    scsi: list[bool] = field(default_factory=lambda: [False] * SCSI_SLOTS)

    @classmethod
    def initial(cls, hvp: Mapping[str, Any]) -> BusSlots:
        reserved = int(hvp.get("kvm_pci_reservations", 12))
        return cls(pci=[i < reserved for i in range(32)])

    def mark_used(self, hvinfo: Mapping[str, Any]) -> None:
        bus = hvinfo.get("bus")
        if bus == PCI_BUS and "addr" in hvinfo:
            self.pci[int(str(hvinfo["addr"]), 16)] = True
        elif bus == SCSI_BUS and "scsi-id" in hvinfo:
            self.scsi[int(hvinfo["scsi-id"])] = True

    def take(self, bus: str) -> int:
        slots = self.pci if bus == PCI_BUS else self.scsi
        for index, used in enumerate(slots):
            if not used:
                slots[index] = True
                return index
        raise HypervisorError(f"All slots of QEMU bus {bus} are taken")


def device_hvinfo(dev_type: str, devid: str, hv_type: str, slots: BusSlots) -> dict[str, Any]:
    """The -device properties of a disk or NIC (Ganeti's hvinfo)."""
    driver = device_driver(dev_type, hv_type)
    if dev_type == "nic" and hv_type == "ne2k_isa":
        return {"driver": driver, "id": devid}
    bus = SCSI_BUS if dev_type == "disk" and hv_type in SCSI_DISK_TYPES else PCI_BUS
    slot = slots.take(bus)
    if bus == PCI_BUS:
        return {"driver": driver, "id": devid, "bus": bus, "addr": hex(slot)}
    return {"driver": driver, "id": devid, "bus": bus, "channel": 0, "scsi-id": slot, "lun": 0}


def hvinfo_str(hvinfo: Mapping[str, Any]) -> str:
    """"virtio-blk-pci,id=disk-1234,bus=pci.0,addr=0xc"."""
    rest = [f"{key}={value}" for key, value in hvinfo.items() if key != "driver"]
    return ",".join([str(hvinfo["driver"]), *rest])


def qemu_escape(value: str) -> str:
    """A value inside a qemu option list (commas are doubled)."""
    return value.replace(",", ",,")


def disk_cache_options(hvp: Mapping[str, Any], dev_type: str | None) -> str:
    cache = hvp["disk_cache"]
    if dev_type in EXT_MIRROR_TEMPLATES and dev_type != "rbd":
        cache = "none"  # shared storage: no host cache, or a migration could corrupt it
    if hvp.get("disk_aio") == "native":
        return ",aio=native,cache=none"
    return ",aio=threads" if cache == "default" else f",aio=threads,cache={cache}"


def drive_path(entry: AttachedDisk) -> str:
    access = (entry.disk.get("params") or {}).get("access", "kernelspace")
    if entry.uri and access == "userspace":
        return entry.uri
    return entry.link or entry.path


# -- the instance part -------------------------------------------------------------
def generate_runtime(instance: Mapping[str, Any], hvp: Mapping[str, Any], disks: list[AttachedDisk],
                     startup_paused: bool) -> tuple[list[str], list[dict[str, Any]], list[list[Any]]]:
    """(command, nics, disks) of the runtime file; the node's part is added at start."""
    name = str(instance["name"])
    beparams = instance.get("beparams") or {}
    kvm_path = str(hvp["kvm_path"])
    cmd = [kvm_path, "-name", name, "-m", str(beparams.get("maxmem", beparams.get("memory", 128)))]
    smp = [str(beparams.get("vcpus", 1))]
    for key, label in (("cpu_cores", "cores"), ("cpu_threads", "threads"), ("cpu_sockets", "sockets")):
        if hvp[key]:
            smp.append(f"{label}={hvp[key]}")
    cmd += ["-smp", ",".join(smp)]
    if hvp["soundhw"]:
        cmd += ["-soundhw", str(hvp["soundhw"])]
    if hvp["disk_type"] in SCSI_DISK_TYPES:
        cmd += ["-device", f"{hvp['scsi_controller_type']},id=scsi"]
    cmd += ["-device", "virtio-balloon"]
    if not hvp["acpi"]:
        cmd += ["-no-acpi"]
    if hvp["reboot_behavior"] == "exit":
        cmd += ["-no-reboot"]
    cmd += ["-machine", str(hvp["machine_version"] or default_machine(kvm_path))]
    kernel = hvp["kernel_path"]
    boot = "" if kernel else hvp["boot_order"]
    if startup_paused:
        cmd += ["-S"]
    if boot == "network":
        cmd += ["-boot", "n"]
    cdrom_type = hvp["cdrom_disk_type"] or hvp["disk_type"]
    if hvp["cdrom_image_path"]:
        cmd += _cdrom(str(hvp["cdrom_image_path"]), cdrom_type, boot == "cdrom")
    if hvp["cdrom2_image_path"]:
        cmd += _cdrom(str(hvp["cdrom2_image_path"]), cdrom_type, False)
    if hvp["floppy_image_path"]:
        if boot == "floppy":
            cmd += ["-boot", "a"]
        floppy = qemu_escape(str(hvp["floppy_image_path"]))
        cmd += ["-drive", f"file={floppy},format=raw,media=disk,if=floppy"]
    if kernel:
        cmd += ["-kernel", str(kernel)]
        if hvp["initrd_path"]:
            cmd += ["-initrd", str(hvp["initrd_path"])]
        append = [f"root={hvp['root_path']}", str(hvp["kernel_args"])]
        if hvp["serial_console"]:
            append.append(f"console=ttyS0,{hvp['serial_speed']}")
        cmd += ["-append", " ".join(append)]
    if hvp["mem_path"]:
        cmd += ["-mem-path", str(hvp["mem_path"]), "-mem-prealloc"]
    cmd += ["-usb"]
    if hvp["usb_mouse"]:
        cmd += ["-usbdevice", str(hvp["usb_mouse"])]
    elif hvp["vnc_bind_address"]:
        cmd += ["-usbdevice", "tablet"]
    cmd += _display(instance, hvp)
    if hvp["use_localtime"]:
        cmd += ["-rtc", "base=localtime"]
    if hvp["cpu_type"]:
        cmd += ["-cpu", str(hvp["cpu_type"])]
    if hvp["vga"]:
        cmd += ["-vga", str(hvp["vga"])]
    elif hvp["spice_bind"]:
        cmd += ["-vga", "qxl"]
    for dev in str(hvp["usb_devices"] or "").split(","):
        if dev:
            cmd += ["-usbdevice", dev]
    if _is_uuid(instance.get("uuid")):
        cmd += ["-uuid", str(instance["uuid"])]
    if hvp["kvm_extra"]:
        cmd += str(hvp["kvm_extra"]).split(" ")

    slots = BusSlots.initial(hvp)
    kvm_disks: list[list[Any]] = []
    for index, entry in enumerate(disks):
        disk = dict(entry.disk)
        disk["hvinfo"] = device_hvinfo("disk", device_id("disk", disk, index), str(hvp["disk_type"]), slots)
        kvm_disks.append([disk, entry.link or entry.path, entry.uri])
    kvm_nics: list[dict[str, Any]] = []
    for index, nic in enumerate(instance.get("nics") or []):
        nic = dict(nic)
        nic["hvinfo"] = device_hvinfo("nic", device_id("nic", nic, index), str(hvp["nic_type"]), slots)
        kvm_nics.append(nic)
    return cmd, kvm_nics, kvm_disks


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _cdrom(image: str, disk_type: str, boot: bool) -> list[str]:
    options = ",media=cdrom" if is_url(image) else ",media=cdrom,format=raw"
    if boot:
        iface = "ide"
    else:
        iface = "virtio" if disk_type == "paravirtual" else disk_type
    args = ["-boot", "d"] if boot else []
    return [*args, "-drive", f"file={qemu_escape(image)}{options},if={iface}"]


def _display(instance: Mapping[str, Any], hvp: Mapping[str, Any]) -> list[str]:
    vnc = str(hvp["vnc_bind_address"] or "")
    port = int(instance.get("network_port") or 0)
    name = str(instance["name"])
    if vnc:
        if not (is_ip_address(vnc) or vnc.startswith("/")) and is_interface(vnc):
            vnc = _interface_ipv4(vnc) or vnc
        if vnc.startswith("/"):
            return ["-vnc", f"unix:{vnc}/{name}.vnc"]
        if port <= VNC_BASE_PORT:
            return ["-vnc", "none"]
        display = port - VNC_BASE_PORT
        if vnc == "0.0.0.0":
            arg = f":{display}"
        elif ":" in vnc:
            arg = f"[{vnc}]:{display}"
        else:
            arg = f"{vnc}:{display}"
        if hvp["vnc_password_file"]:
            arg += ",password=on"
        return ["-vnc", arg]
    if hvp["spice_bind"]:
        spice = f"addr={hvp['spice_bind']},port={port}"
        if not hvp["spice_password_file"]:
            spice += ",disable-ticketing=on"
        if hvp["spice_ip_version"]:
            spice += f",ipv{hvp['spice_ip_version']}=on"
        return ["-spice", spice]
    return ["-display", "none"]


def _interface_ipv4(name: str) -> str | None:
    try:
        result = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", name], capture_output=True,
                                text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"inet (\S+)/", result.stdout)
    return match.group(1) if match else None


def drive_args(kvm_path: str, hvp: Mapping[str, Any], disks: list[list[Any]],
               link_of: Mapping[int, str]) -> list[str]:
    """-drive/-device options of the runtime's disks (`link_of`: local path override by index)."""
    disk_type = str(hvp["disk_type"])
    driver = device_driver("disk", disk_type)
    with_device = device_supported(kvm_path, driver)
    iface = "virtio" if disk_type == "paravirtual" else disk_type
    discard = "" if hvp["disk_discard"] in ("default", "", None) else f",discard={hvp['disk_discard']}"
    boot = not hvp["kernel_path"] and hvp["boot_order"] == "disk"
    args: list[str] = []
    for index, (disk, link, uri) in enumerate(disks):
        if disk.get("mode", "rw") != "rw":
            raise HypervisorError("Instance has read-only disks which are not supported by KVM")
        if boot:
            args += ["-boot", "c"]
            boot = False
        entry = AttachedDisk(disk=disk, path=link_of.get(index, link), link=link_of.get(index, link), uri=uri)
        hvinfo = disk.get("hvinfo") or {}
        use_device = with_device and "id" in hvinfo
        value = (f"file={qemu_escape(drive_path(entry))},format=raw"
                 f"{',if=none' if use_device else ',if=' + iface}"
                 f"{disk_cache_options(hvp, disk.get('dev_type'))}{discard}")
        if use_device:
            value += f",id={hvinfo['id']}"
            args += ["-device", f"{hvinfo_str(hvinfo)},drive={hvinfo['id']}"]
        args += ["-drive", value]
    return args
