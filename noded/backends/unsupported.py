"""DRBD, LVM, Open vSwitch and ExtStorage: answered as a Ganeti node without them answers.

This node daemon stores disks in files only. For the procedures of the
other storage technologies it gives the answer a real Ganeti 3.0.2 noded
gives on a machine without DRBD, without LVM volume groups, without Open
vSwitch and without ExtStorage providers (captured by running Ganeti's own
backend on such a machine; see tests/test_backend_unsupported.py):

- LVM: no volume groups (`vg_list` {}, `node_volumes` [], `lv_list` {} or
  lvs' "Volume group not found" error for named groups);
- DRBD: the module is not loaded, so `drbd_helper` cannot read
  /sys/module/drbd/parameters/usermode_helper, and every call about a DRBD
  disk fails the way Ganeti fails without /proc/drbd ("argument of type
  'NoneType' is not iterable", Ganeti's own internal error, kept verbatim so
  answers compare equal);
- Open vSwitch: `ovs-vsctl` is run, so without it the call fails with
  "Can't execute 'ovs-vsctl ...': not found";
- ExtStorage: no providers (`extstorage_diagnose` []).

The generic block-device calls here (pause/resume sync, add/remove
children) also accept file disks, with Ganeti's answers for them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from typing import Any

from noded.backends import runcmd
from noded.backends.storagepaths import FileStoragePathError, check_file_storage_acceptance, node_path
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths
from noded.registry import procedure

DRBD_USERMODE_HELPER_FILE = "/sys/module/drbd/parameters/usermode_helper"
PROC_DRBD = "/proc/drbd"

#: Ganeti's device class per disk type, as named in its error messages.
_DEVICE_CLASS = {
    "plain": "LogicalVolume", "drbd": "DRBD8Dev", "blockdev": "PersistentBlockDevice",
    "rbd": "RADOSBlockDevice", "ext": "ExtStorageDevice", "file": "FileStorage",
    "sharedfile": "FileStorage", "gluster": "GlusterStorage",
}


class DrbdNotAvailable(Exception):
    """A DRBD disk was named but DRBD is not available on this node.

    The message is the one Ganeti 3.0.2 gives in this situation (an
    internal error of its DRBD code when /proc/drbd is missing).
    """

    def __init__(self) -> None:
        super().__init__("argument of type 'NoneType' is not iterable")


class InvalidDiskType(Exception):
    """The disk type cannot be a block device at all (e.g. "diskless")."""


# -- DRBD probes (also used by node_verify) --------------------------------

def drbd_proc_status() -> str:
    """Ganeti's message for the DRBD status file: why it cannot be read, or that DRBD is unsupported."""
    try:
        with open(PROC_DRBD):
            pass
    except OSError as err:
        return f"The file {PROC_DRBD} cannot be opened, check if the module is loaded ({err})"
    return f"DRBD is loaded on this node ({PROC_DRBD} exists), but this node daemon does not support DRBD"


def drbd_usermode_helper() -> str:
    """The DRBD usermode helper from sysfs; RpcFail when the DRBD module is not loaded."""
    try:
        with open(DRBD_USERMODE_HELPER_FILE) as f:
            helper = f.read().strip()
    except OSError as err:
        raise RpcFail(f"The file {DRBD_USERMODE_HELPER_FILE} cannot be opened, check if the module is"
                      f" loaded ({err})") from err
    if not helper:
        raise RpcFail(f"Can't read any data from {DRBD_USERMODE_HELPER_FILE}")
    return helper


# -- disks ------------------------------------------------------------------

def _disk_repr(disk: Mapping[str, Any]) -> str:
    fields = ("dev_type", "logical_id", "children", "iv_name", "size", "mode", "params", "uuid", "name",
              "spindles")
    shown: dict[str, Any] = {}
    for key in fields:
        if disk.get(key) is None:
            continue
        value = disk[key]
        if key == "logical_id" and isinstance(value, list):
            value = tuple(value)
        shown[key] = value
    return repr(shown)


def describe_disk(disk: Mapping[str, Any]) -> str:
    """A disk written the way Ganeti writes one in its messages (objects.Disk.__str__)."""
    dev_type = disk.get("dev_type")
    logical_id = disk.get("logical_id") or []
    children = disk.get("children") or []
    if dev_type == "plain" and len(logical_id) >= 2:
        text = f"<LogicalVolume(/dev/{logical_id[0]}/{logical_id[1]}"
    elif dev_type == "drbd" and len(logical_id) >= 5:
        node_a, node_b, port, minor_a, minor_b = logical_id[:5]
        text = f"<DRBD8(hosts={node_a}/{minor_a}-{node_b}/{minor_b}, port={port}, "
        if len(children) >= 2:
            text += f"backend={describe_disk(children[0])}, metadev={describe_disk(children[1])}"
        else:
            text += "no local storage"
    else:
        lid = tuple(logical_id) if isinstance(logical_id, list) else logical_id
        text = f"<Disk(type={dev_type}, logical_id={lid}, children=[{', '.join(map(_disk_repr, children))}]"
    iv_name = disk.get("iv_name")
    text += ", not visible" if iv_name is None else f", visible as /dev/{iv_name}"
    if disk.get("spindles") is not None:
        text += f", spindles={disk['spindles']}"
    size = disk.get("size")
    text += f", size={size}m)>" if isinstance(size, int) else f", size='{size}')>"
    return text


def find_disk(paths: Paths, disk: Mapping[str, Any]) -> bool:
    """Whether the device of `disk` is present on this node (Ganeti's _RecursiveFindBD).

    Raises DrbdNotAvailable for DRBD disks, InvalidDiskType for types that
    are no device, and FileStoragePathError for file disks outside the
    allowed file storage paths. LVM, RBD, ExtStorage and Gluster devices
    never exist here.
    """
    dev_type = disk.get("dev_type")
    for child in disk.get("children") or []:
        find_disk(paths, child)
    if dev_type == "drbd":
        raise DrbdNotAvailable()
    if dev_type not in _DEVICE_CLASS:
        raise InvalidDiskType(f"Invalid block device type '{dev_type}'")
    logical_id = disk.get("logical_id") or []
    if dev_type in ("file", "sharedfile"):
        if len(logical_id) != 2:
            raise ValueError(f"Invalid configuration data {logical_id}")
        path = node_path(paths, str(logical_id[1]))
        check_file_storage_acceptance(paths, path)
        return os.path.isfile(path)
    if dev_type == "blockdev" and len(logical_id) == 2:
        try:
            return stat.S_ISBLK(os.stat(str(logical_id[1])).st_mode)
        except OSError:
            return False
    return False


def _no_method(disk: Mapping[str, Any], method: str) -> AttributeError:
    cls = _DEVICE_CLASS.get(str(disk.get("dev_type")), "BlockDev")
    return AttributeError(f"'{cls}' object has no attribute '{method}'")


def _find_all(paths: Paths, disks: Sequence[Mapping[str, Any]]) -> None:
    """Ganeti's _FindDisks: every disk must be present."""
    for disk in disks:
        if not find_disk(paths, disk):
            raise RpcFail(f"Can't find device {describe_disk(disk)}")


def _drbd_only(paths: Paths, disks: Sequence[Mapping[str, Any]], method: str) -> None:
    """Find the disks, then fail as a non-DRBD device fails the DRBD-only `method`."""
    _find_all(paths, disks)
    if disks:
        raise _no_method(disks[0], method)


# -- DRBD procedures ----------------------------------------------------------

@procedure("drbd_helper", blocking=True)
def drbd_helper(ctx: NodeContext) -> str:
    """The DRBD usermode helper; fails while the DRBD module is not loaded."""
    return drbd_usermode_helper()


@procedure("drbd_disconnect_net", blocking=True)
def drbd_disconnect_net(ctx: NodeContext, disks: list[dict[str, Any]]) -> None:
    """Put DRBD disks in standalone mode: impossible without DRBD (no-op for no disks)."""
    _drbd_only(ctx.paths, disks, "DisconnectNet")


@procedure("drbd_attach_net", blocking=True)
def drbd_attach_net(ctx: NodeContext, disks: list[dict[str, Any]], multimaster: bool) -> None:
    """Reconnect DRBD disks: impossible without DRBD (no-op for no disks)."""
    _drbd_only(ctx.paths, disks, "AttachNet")


@procedure("drbd_wait_sync", blocking=True)
def drbd_wait_sync(ctx: NodeContext, disks: list[dict[str, Any]]) -> list[Any]:
    """[all_done, min_sync_percent]; [true, 100] for no disks."""
    _drbd_only(ctx.paths, disks, "GetProcStatus")
    return [True, 100]


@procedure("drbd_needs_activation", blocking=True)
def drbd_needs_activation(ctx: NodeContext, disks: list[dict[str, Any]]) -> list[str]:
    """UUIDs of the disks whose device is missing (all of them: none can be active here)."""
    missing = []
    for disk in disks:
        if not find_disk(ctx.paths, disk):
            missing.append(disk.get("uuid"))
        else:
            raise _no_method(disk, "GetProcStatus")
    return [u for u in missing if u is not None]


@procedure("blockdev_pause_resume_sync", blocking=True)
def blockdev_pause_resume_sync(ctx: NodeContext, disks: list[dict[str, Any]], pause: bool) -> list[list[Any]]:
    """Per disk [success, message]: devices without sync (files) succeed, missing ones fail."""
    result: list[list[Any]] = []
    for disk in disks:
        if find_disk(ctx.paths, disk):
            result.append([True, None])
        else:
            result.append([False, f"Cannot change sync for device {disk.get('iv_name')}: device not found"])
    return result


@procedure("blockdev_addchildren", blocking=True)
def blockdev_addchildren(ctx: NodeContext, bdev: dict[str, Any], ndevs: list[dict[str, Any]]) -> None:
    """Add mirror children: only DRBD devices have them."""
    if not find_disk(ctx.paths, bdev):
        raise RpcFail(f"Can't find parent device '{describe_disk(bdev)}' in add children")
    found = [find_disk(ctx.paths, d) for d in ndevs]
    if not all(found):
        shown = ", ".join(describe_disk(d) if ok else "None" for d, ok in zip(ndevs, found, strict=True))
        raise RpcFail(f"Can't find new device(s) to add: [{shown}]:[{', '.join(map(_disk_repr, ndevs))}]")
    raise _no_method(bdev, "AddChildren")


@procedure("blockdev_removechildren", blocking=True)
def blockdev_removechildren(ctx: NodeContext, bdev: dict[str, Any], ndevs: list[dict[str, Any]]) -> None:
    """Remove mirror children: only DRBD devices have them."""
    if not find_disk(ctx.paths, bdev):
        raise RpcFail(f"Can't find parent device '{describe_disk(bdev)}' in remove children")
    for disk in ndevs:
        if disk.get("dev_type") != "plain" and not find_disk(ctx.paths, disk):
            raise RpcFail(f"Can't find device {describe_disk(disk)} while removing children")
    raise _no_method(bdev, "RemoveChildren")


# -- LVM ----------------------------------------------------------------------

@procedure("vg_list", blocking=True)
def vg_list(ctx: NodeContext) -> dict[str, int]:
    """Volume groups and their sizes (MiB): none."""
    return {}


@procedure("lv_list", blocking=True)
def lv_list(ctx: NodeContext, vg_name: list[str] | str | None) -> dict[str, Any]:
    """Logical volumes of the given volume groups: none, and named groups do not exist."""
    names = [vg_name] if isinstance(vg_name, str) else list(vg_name or [])
    if not names:
        return {}
    lvs_output = "".join(f'  Volume group "{vg}" not found\n  Cannot process volume group {vg}\n'
                         for vg in names)
    raise RpcFail(f"Failed to list logical volumes, lvs output: {lvs_output}")


@procedure("node_volumes", blocking=True)
def node_volumes(ctx: NodeContext) -> list[dict[str, Any]]:
    """All logical volumes of the node: none."""
    return []


# -- Open vSwitch ---------------------------------------------------------------

@procedure("node_configure_ovs", blocking=True)
def node_configure_ovs(ctx: NodeContext, ovs_name: str, ovs_link: str | None) -> None:
    """Create Open vSwitch `ovs_name` (and plug `ovs_link` into it) with ovs-vsctl.

    Without Open vSwitch installed this fails like Ganeti:
    "Error while executing backend function: Can't execute 'ovs-vsctl ...': not found (...)".
    """
    res = runcmd.run(["ovs-vsctl", "--may-exist", "add-br", ovs_name])
    if res.failed:
        raise RpcFail(f"Failed to create openvswitch. Script return value: {res.exit_code},"
                      f" output: '{res.output}'")
    if ovs_link:
        res = runcmd.run(["ovs-vsctl", "--may-exist", "add-port", ovs_name, ovs_link])
        if res.failed:
            raise RpcFail(f"Failed to connect openvswitch to  interface {ovs_link}. Script return"
                          f" value: {res.exit_code}, output: '{res.output}'")


# -- ExtStorage ------------------------------------------------------------------

@procedure("extstorage_diagnose", blocking=True)
def extstorage_diagnose(ctx: NodeContext) -> list[list[Any]]:
    """ExtStorage providers of this node: none."""
    return []


__all__ = ["DrbdNotAvailable", "FileStoragePathError", "InvalidDiskType", "describe_disk", "find_disk"]
