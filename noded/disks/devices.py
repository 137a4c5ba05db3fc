"""From a master's disk dict to the device that serves it on this node (Ganeti's bdev.FindDevice,
Assemble and Create).

This node stores disks in files: `file` and `sharedfile` disks get a
FileStorage device. The other templates Ganeti knows are answered the way a
Ganeti node without their technology answers: their devices are never
present (LVM, RBD, ExtStorage, Gluster, block devices are not driven here),
DRBD fails as Ganeti fails without the DRBD module, and creating or
assembling one fails, saying so. `diskless` and unknown types are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from noded.backends.unsupported import DrbdNotAvailable
from noded.disks.base import BlockDevice, DiskConfigError
from noded.disks.diskless import DISKLESS, no_device
from noded.disks.file import FILE_TEMPLATES, FileStorage
from noded.paths import Paths

#: Templates Ganeti has drivers for that this node does not drive, and what they would need.
OTHER_TEMPLATES = {
    "plain": "LVM", "drbd": "DRBD", "blockdev": "adopted block devices", "rbd": "Ceph RBD",
    "ext": "ExtStorage providers", "gluster": "Gluster",
}


def _check_type(disk: Mapping[str, Any]) -> str:
    if not isinstance(disk, Mapping):
        raise DiskConfigError(f"A disk must be a disk dict, not {disk!r}")
    dev_type = disk.get("dev_type")
    if dev_type == DISKLESS:
        raise no_device(disk)
    if dev_type not in FILE_TEMPLATES and dev_type not in OTHER_TEMPLATES:
        raise DiskConfigError(f"Invalid block device type '{dev_type}'")
    return str(dev_type)


def device_for(paths: Paths, disk: Mapping[str, Any]) -> BlockDevice:
    """The device object for `disk`, to create or assemble it; DiskConfigError if it cannot be here."""
    dev_type = _check_type(disk)
    if dev_type in FILE_TEMPLATES:
        return FileStorage(paths, disk)
    raise DiskConfigError(f"Disk template '{dev_type}' is not supported on this node: it keeps disks in"
                          f" files only (file, sharedfile) and has no {OTHER_TEMPLATES[dev_type]}")


def find_device(paths: Paths, disk: Mapping[str, Any]) -> BlockDevice | None:
    """The device of `disk` if it is present on this node, else None (Ganeti's _RecursiveFindBD).

    Children are looked at first, as Ganeti does. DeviceError when the device
    cannot be probed, DiskConfigError when the disk dict is unacceptable.
    """
    dev_type = _check_type(disk)
    for child in disk.get("children") or []:
        find_device(paths, child)
    if dev_type == "drbd":
        raise DrbdNotAvailable()
    if dev_type not in FILE_TEMPLATES:
        return None
    device = FileStorage(paths, disk)
    return device if device.exists() else None
