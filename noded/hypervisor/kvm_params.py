"""Ganeti's kvm hypervisor parameters: names, defaults and checks.

The names, defaults and value sets are Ganeti 3.0's (constants.HVC_DEFAULTS
["kvm"] and hv_kvm's PARAMETERS). Each parameter has a syntax check (run on
the master, no access to the node) and possibly a node check (files and
directories exist, users exist, qemu supports what is asked); the
cross-parameter rules of Ganeti's hv_kvm.validation follow the table.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from noded.hypervisor.base import HypervisorError, ParamCheck

#: Where Ganeti looks for the kvm binary when no parameters are given.
KVM_PATH = "/usr/bin/kvm"
SOCAT_PATH = "/usr/bin/socat"

BOOT_ORDERS = ("cdrom", "disk", "floppy", "network")
NIC_TYPES = ("e1000", "i82551", "i82557b", "i82559er", "ne2k_isa", "ne2k_pci", "paravirtual", "pcnet",
             "rtl8139")
DISK_TYPES = ("ide", "mtd", "paravirtual", "pflash", "scsi", "scsi-block", "scsi-cd", "scsi-generic",
              "scsi-hd", "sd")
SCSI_DISK_TYPES = ("scsi-block", "scsi-cd", "scsi-generic", "scsi-hd")
SCSI_CONTROLLER_TYPES = ("lsi", "megasas", "virtio-scsi-pci")
DISCARD_TYPES = ("default", "ignore", "unmap")
MOUSE_TYPES = ("mouse", "tablet")
CACHE_TYPES = ("default", "none", "writeback", "writethrough")
AIO_TYPES = ("native", "threads")
SECURITY_MODELS = ("none", "pool", "user")
KVM_FLAG_VALUES = ("disabled", "enabled")
REBOOT_BEHAVIORS = ("reboot", "exit")
MIGRATION_MODES = ("live", "non-live")
SPICE_LOSSLESS_COMPRESSIONS = ("auto_glz", "auto_lz", "glz", "lz", "off", "quic")
SPICE_LOSSY_COMPRESSIONS = ("always", "auto", "never")
SPICE_VIDEO_STREAMING = ("all", "filter", "off")
SERIAL_SPEEDS = (75, 110, 300, 600, 1200, 1800, 2400, 4800, 9600, 14400, 19200, 28800, 38400, 57600,
                 115200, 230400, 345600, 460800)
#: PCI slots of QEMU's first bus.
QEMU_PCI_SLOTS = 32
#: "all": no CPU pinning.
CPU_PINNING_ALL = "all"

DEFAULTS: Mapping[str, Any] = {
    "acpi": True,
    "boot_order": "disk",
    "cdrom2_image_path": "",
    "cdrom_disk_type": "",
    "cdrom_image_path": "",
    "cpu_cores": 0,
    "cpu_mask": "all",
    "cpu_sockets": 0,
    "cpu_threads": 0,
    "cpu_type": "",
    "disk_aio": "threads",
    "disk_cache": "default",
    "disk_discard": "default",
    "disk_type": "paravirtual",
    "floppy_image_path": "",
    "initrd_path": "",
    "kernel_args": "ro",
    "kernel_path": "/boot/vmlinuz-3-kvmU",
    "keymap": "",
    "kvm_extra": "",
    "kvm_flag": "",
    "kvm_path": KVM_PATH,
    "kvm_pci_reservations": 12,
    "machine_version": "",
    "mem_path": "",
    "migration_bandwidth": 32,
    "migration_caps": "",
    "migration_downtime": 30,
    "migration_mode": "live",
    "migration_port": 8102,
    "nic_type": "paravirtual",
    "reboot_behavior": "reboot",
    "root_path": "/dev/vda1",
    "scsi_controller_type": "lsi",
    "security_domain": "",
    "security_model": "none",
    "serial_console": True,
    "serial_speed": 38400,
    "soundhw": "",
    "spice_bind": "",
    "spice_image_compression": "",
    "spice_ip_version": 0,
    "spice_jpeg_wan_compression": "",
    "spice_password_file": "",
    "spice_playback_compression": True,
    "spice_streaming_video": "",
    "spice_tls_ciphers": "HIGH:-DES:-3DES:-EXPORT:-DH",
    "spice_use_tls": False,
    "spice_use_vdagent": True,
    "spice_zlib_glz_wan_compression": "",
    "usb_devices": "",
    "usb_mouse": "",
    "use_chroot": False,
    "use_guest_agent": False,
    "use_localtime": False,
    "user_shutdown": False,
    "vga": "",
    "vhost_net": False,
    "virtio_net_queues": 1,
    "vnc_bind_address": "",
    "vnc_password_file": "",
    "vnc_tls": False,
    "vnc_x509_path": "",
    "vnc_x509_verify": False,
    "vnet_hdr": True,
}


# -- value predicates (never raise: a value of the wrong type fails) -----------
def _safe(pred: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        try:
            return bool(pred(value))
        except (TypeError, ValueError):
            return False
    return check


def is_norm_abs_path(value: Any) -> bool:
    return isinstance(value, str) and os.path.isabs(value) and os.path.normpath(value) == value


def is_url(value: Any) -> bool:
    return isinstance(value, str) and re.match(r"(https?|ftps?)://", value) is not None


def is_ip_address(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_interface(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and os.path.exists(
        f"/sys/class/net/{name}")


def parse_cpu_mask(mask: str) -> list[int]:
    """"0-2,5" -> [0, 1, 2, 5]; ValueError when malformed."""
    cpus: list[int] = []
    if not mask:
        return cpus
    for part in mask.split(","):
        bounds = part.split("-")
        if len(bounds) > 2:
            raise ValueError(f"Invalid CPU ID range definition (only one hyphen allowed): {part}")
        lower, higher = int(bounds[0]), int(bounds[-1])
        if lower > higher:
            raise ValueError(f"Invalid CPU ID range definition ({lower} > {higher}): {part}")
        cpus.extend(range(lower, higher + 1))
    return cpus


def parse_multi_cpu_mask(mask: str) -> list[list[int] | None]:
    """"0-1:all:3" -> [[0, 1], None, [3]] (None: all CPUs); ValueError when malformed."""
    if not mask:
        return []
    return [None if part == CPU_PINNING_ALL else sorted(set(parse_cpu_mask(part)))
            for part in mask.split(":")]


def _multi_cpu_mask_ok(value: Any) -> bool:
    parse_multi_cpu_mask(value)
    return True


# -- check builders (Ganeti's hv_base check tuples) ---------------------------
NO_CHECK = ParamCheck(required=False)


def _file(required: bool) -> ParamCheck:
    return ParamCheck(required, is_norm_abs_path, "must be an absolute normalized path",
                      _safe(os.path.isfile), "not found or not a file")


def _file_or_url(required: bool) -> ParamCheck:
    return ParamCheck(required, lambda v: is_norm_abs_path(v) or is_url(v),
                      "must be an absolute normalized path or a URL",
                      _safe(lambda v: os.path.isfile(v) or is_url(v)), "not found or not a file or URL")


def _directory(required: bool) -> ParamCheck:
    return ParamCheck(required, is_norm_abs_path, "must be an absolute normalized path",
                      _safe(os.path.isdir), "not found or not a directory")


def _in_set(required: bool, values: Iterable[Any]) -> ParamCheck:
    allowed = tuple(values)
    return ParamCheck(required, _safe(lambda v: v in allowed),
                      "The value must be one of: " + ", ".join(str(v) for v in allowed))


def _nonnegative(required: bool) -> ParamCheck:
    return ParamCheck(required, _safe(lambda v: v >= 0), "cannot be negative")


PARAMETERS: Mapping[str, ParamCheck] = {
    "kvm_path": _file(True),
    "kernel_path": _file(False),
    "initrd_path": _file(False),
    "root_path": NO_CHECK,
    "kernel_args": NO_CHECK,
    "acpi": NO_CHECK,
    "serial_console": NO_CHECK,
    "serial_speed": NO_CHECK,
    "vnc_bind_address": NO_CHECK,
    "vnc_tls": NO_CHECK,
    "vnc_x509_path": _directory(False),
    "vnc_x509_verify": NO_CHECK,
    "vnc_password_file": _file(False),
    "spice_bind": NO_CHECK,
    "spice_ip_version": ParamCheck(False, _safe(lambda v: v == 0 or v in (4, 6)),
                                   "The SPICE IP version should be 4 or 6"),
    "spice_password_file": _file(False),
    "spice_image_compression": _in_set(False, SPICE_LOSSLESS_COMPRESSIONS),
    "spice_jpeg_wan_compression": _in_set(False, SPICE_LOSSY_COMPRESSIONS),
    "spice_zlib_glz_wan_compression": _in_set(False, SPICE_LOSSY_COMPRESSIONS),
    "spice_streaming_video": _in_set(False, SPICE_VIDEO_STREAMING),
    "spice_playback_compression": NO_CHECK,
    "spice_use_tls": NO_CHECK,
    "spice_tls_ciphers": NO_CHECK,
    "spice_use_vdagent": NO_CHECK,
    "floppy_image_path": _file(False),
    "cdrom_image_path": _file_or_url(False),
    "cdrom2_image_path": _file_or_url(False),
    "boot_order": _in_set(True, BOOT_ORDERS),
    "nic_type": _in_set(True, NIC_TYPES),
    "disk_type": _in_set(True, DISK_TYPES),
    "scsi_controller_type": _in_set(True, SCSI_CONTROLLER_TYPES),
    "disk_discard": _in_set(False, DISCARD_TYPES),
    "cdrom_disk_type": _in_set(False, DISK_TYPES),
    "usb_mouse": _in_set(False, MOUSE_TYPES),
    "keymap": NO_CHECK,
    "migration_port": ParamCheck(True, _safe(lambda v: 0 < v < 65535), "invalid port number"),
    "migration_bandwidth": _nonnegative(True),
    "migration_downtime": _nonnegative(True),
    "migration_mode": ParamCheck(True, _safe(lambda v: v in MIGRATION_MODES), "invalid migration mode"),
    "use_guest_agent": NO_CHECK,
    "use_localtime": NO_CHECK,
    "disk_cache": _in_set(True, CACHE_TYPES),
    "disk_aio": _in_set(False, AIO_TYPES),
    "security_model": _in_set(True, SECURITY_MODELS),
    "security_domain": NO_CHECK,
    "kvm_flag": _in_set(False, KVM_FLAG_VALUES),
    "vhost_net": NO_CHECK,
    "virtio_net_queues": ParamCheck(False, _safe(lambda v: 0 < v < 9), "invalid number of queues"),
    "use_chroot": NO_CHECK,
    "user_shutdown": NO_CHECK,
    "mem_path": _directory(False),
    "reboot_behavior": _in_set(True, REBOOT_BEHAVIORS),
    "cpu_mask": ParamCheck(False, _safe(_multi_cpu_mask_ok),
                           "Multiple CPU mask definition is not well-formed"),
    "cpu_type": NO_CHECK,
    "cpu_cores": _nonnegative(False),
    "cpu_threads": _nonnegative(False),
    "cpu_sockets": _nonnegative(False),
    "soundhw": NO_CHECK,
    "usb_devices": NO_CHECK,
    "vga": NO_CHECK,
    "kvm_extra": NO_CHECK,
    "machine_version": NO_CHECK,
    "migration_caps": NO_CHECK,
    "kvm_pci_reservations": ParamCheck(False, _safe(lambda v: 0 <= v <= QEMU_PCI_SLOTS),
                                       f"The number of PCI slots managed by QEMU (max: {QEMU_PCI_SLOTS})"),
    "vnet_hdr": NO_CHECK,
}

#: SPICE parameters that need spice_bind.
_SPICE_DEPENDENT = ("spice_ip_version", "spice_password_file", "spice_image_compression",
                    "spice_jpeg_wan_compression", "spice_zlib_glz_wan_compression",
                    "spice_streaming_video", "spice_use_tls")


# -- cross-parameter rules: master side (CheckParameterSyntax) ------------------
def check_syntax_rules(hvp: Mapping[str, Any]) -> None:
    """Ganeti's check_boot/security/console/vnc/spice/disk_cache rules."""
    if hvp["boot_order"] == "cdrom" and not hvp["cdrom_image_path"]:
        raise HypervisorError("Cannot boot from cdrom without an ISO path")
    if hvp["kernel_path"] and not hvp["root_path"]:
        raise HypervisorError("Need a root partition for the instance, if a kernel is defined")
    model = hvp["security_model"]
    if model == "user" and not hvp["security_domain"]:
        raise HypervisorError("A security domain (user to run kvm as) must be specified")
    if model in ("none", "pool") and hvp["security_domain"]:
        raise HypervisorError("Cannot have a security domain when the security model is 'none' or 'pool'")
    if hvp["serial_console"] and hvp["serial_speed"] not in SERIAL_SPEEDS:
        raise HypervisorError("Invalid serial console speed, must be one of: "
                              + ", ".join(str(s) for s in SERIAL_SPEEDS))
    if hvp["vnc_x509_verify"] and not hvp["vnc_x509_path"]:
        raise HypervisorError("vnc_x509_path must be defined, if vnc_x509_verify is")
    spice_bind = hvp["spice_bind"]
    if spice_bind:
        version = hvp["spice_ip_version"]
        if version:
            try:
                family = ipaddress.ip_address(spice_bind).version
            except ValueError:
                family = None
            if family is not None and family != version:
                raise HypervisorError(f"SPICE: Got an IPv{family} address ({spice_bind}), but the specified"
                                      f" IP version is {version}")
    else:
        for name in _SPICE_DEPENDENT:
            if hvp[name]:
                raise HypervisorError(f"SPICE: {name} requires spice_bind to be set")
    if hvp["disk_aio"] == "native" and hvp["disk_cache"] != "none":
        raise HypervisorError("When 'disk_aio' is set to 'native', the only supported value for"
                              " 'disk_cache' is 'none'.")


# -- cross-parameter rules: node side (ValidateParameters) ----------------------
def check_node_rules(hvp: Mapping[str, Any], kvm_help: Callable[[], str],
                     machine_list: Callable[[], str]) -> None:
    """The node checks of Ganeti's hv_kvm.validation: users, addresses, qemu support."""
    if hvp["security_model"] == "user":
        try:
            pwd.getpwnam(hvp["security_domain"])
        except KeyError:
            raise HypervisorError(f"Unknown security domain user {hvp['security_domain']}") from None
    vnc = hvp["vnc_bind_address"]
    if vnc and not (is_ip_address(vnc) or is_interface(vnc) or is_norm_abs_path(vnc)):
        raise HypervisorError("VNC: The vnc_bind_address parameter must be either a valid IP address,"
                              " an interface name, or an absolute path")
    spice_bind = hvp["spice_bind"]
    if spice_bind:
        if vnc:
            raise HypervisorError("Both SPICE and VNC are configured, but only one of them can be used"
                                  " at a given time")
        if not re.search(r"^-spice\s", kvm_help(), re.M):
            raise HypervisorError("SPICE is configured, but it is not supported according to 'kvm --help'")
        if not (is_ip_address(spice_bind) or is_interface(spice_bind)):
            raise HypervisorError("SPICE: The spice_bind parameter must be either a valid IP address or"
                                  " interface name")
    version = hvp["machine_version"]
    if version and not re.search(rf"^({re.escape(version)})[ ]+.*PC", machine_list(), re.M):
        raise HypervisorError(f"Unsupported machine version: {version}")
