"""What every block device driver offers (the ideas of Ganeti's storage/base.py BlockDev).

A device object stands for one disk dict of the master (Ganeti's
objects.Disk) on this node. It is created cheaply from the dict and probes
the node when asked; nothing is kept in memory between calls. A driver
raises:

- `DiskConfigError` when the disk dict itself is unacceptable (a malformed
  logical id, a path outside the allowed file storage directories, `..` in
  a path, an unknown disk type): the call fails whatever it was doing;
- `DeviceError` (Ganeti's BlockDeviceError) when an operation on a valid
  device fails (no such file, cannot grow, ...): the procedures word it the
  way Ganeti's backend words it in that place.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noded.paths import Paths

MIB = 1024 * 1024

#: Ganeti's local disk states (constants.LDS_*).
LDS_OKAY = 1
LDS_SYNC = 2
LDS_UNKNOWN = 3
LDS_FAULTY = 4


class DeviceError(Exception):
    """An operation on a block device failed (Ganeti's errors.BlockDeviceError)."""


class DiskConfigError(Exception):
    """The disk description is not acceptable on this node; the message says why."""


@dataclass(frozen=True)
class SyncStatus:
    """Ganeti's objects.BlockDevStatus: what blockdev_find and the mirror status calls report."""

    dev_path: str | None
    major: int | None = None
    minor: int | None = None
    #: Percentage of a running resync, None when not syncing.
    sync_percent: float | None = None
    #: Seconds left of a running resync, None when unknown or not syncing.
    estimated_time: int | None = None
    #: True when the device lacks redundancy.
    is_degraded: bool = False
    #: One of the LDS_* values.
    ldisk_status: int | None = LDS_OKAY

    def to_legacy(self) -> dict[str, Any]:
        """The status dict as Ganeti sends it: keys whose value is None are left out."""
        fields = {"dev_path": self.dev_path, "major": self.major, "minor": self.minor,
                  "sync_percent": self.sync_percent, "estimated_time": self.estimated_time,
                  "is_degraded": self.is_degraded, "ldisk_status": self.ldisk_status}
        return {k: v for k, v in fields.items() if v is not None}


class BlockDevice(abc.ABC):
    """One device on this node, described by the master's disk dict.

    `dev_path` is the local path of the device (for files: the file below
    the node root); `unique_id` is the logical id as the master sent it.
    """

    #: Whether the device must be active on secondary nodes too (DRBD, LVM); files: no.
    assemble_on_secondary: bool = False

    def __init__(self, paths: Paths, disk: Mapping[str, Any]) -> None:
        self.paths = paths
        self.disk = disk

    # -- identity ----------------------------------------------------------------

    @property
    def dev_type(self) -> str:
        return str(self.disk.get("dev_type"))

    @property
    def unique_id(self) -> list[Any]:
        return list(self.disk.get("logical_id") or [])

    @property
    def size_mib(self) -> int:
        """The size the master recorded for the disk (MiB)."""
        size = self.disk.get("size")
        return int(size) if isinstance(size, int | float) and not isinstance(size, bool) else 0

    @property
    @abc.abstractmethod
    def dev_path(self) -> str:
        """The device's path on this node."""

    # -- presence -----------------------------------------------------------------

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the device is present and usable ("attached") on this node."""

    @abc.abstractmethod
    def create(self) -> None:
        """Make the device with the disk's size; DeviceError when it exists or cannot be made."""

    @abc.abstractmethod
    def remove(self) -> None:
        """Delete the device and its data; a missing device is fine."""

    def assemble(self) -> None:
        """Bring the device up; DeviceError when it cannot be."""
        return None

    def shutdown(self) -> None:
        """Take the device down (its data stays)."""
        return None

    def open(self, exclusive: bool = True) -> None:
        """Make the device ready for I/O (read-write)."""
        return None

    def close(self) -> None:
        """Tell the device it is no longer used for I/O."""
        return None

    # -- changes -----------------------------------------------------------------

    @abc.abstractmethod
    def rename(self, new_id: list[Any]) -> None:
        """Give the device the logical id `new_id`."""

    @abc.abstractmethod
    def grow(self, amount: int, dryrun: bool, backingstore: bool, excl_stor: bool) -> None:
        """Grow by `amount` MiB (backing storage only when `backingstore`); only check with `dryrun`."""

    def set_info(self, text: str) -> None:
        """Store metadata text with the device (most devices keep none)."""
        return None

    def snapshot(self, snap_name: str, snap_size: int) -> list[Any]:
        """Snapshot the device; the snapshot's logical id."""
        raise DeviceError(f"Snapshot is not supported for disk {tuple(self.unique_id)} of type"
                          f" {type(self).__name__}.")

    # -- state ----------------------------------------------------------------------

    @abc.abstractmethod
    def size_bytes(self) -> int:
        """The actual size of the device, in bytes."""

    def spindles(self) -> int | None:
        """Spindles used (None: not tracked by this kind of device)."""
        return None

    def sync_status(self) -> SyncStatus:
        """The device's (mirror) status; devices without mirroring are never degraded."""
        return SyncStatus(dev_path=self.dev_path)

    def pause_resume_sync(self, pause: bool) -> bool:
        """Pause or resume a resync; True when the device is in the asked state (no mirror: True)."""
        return True

    def userspace_uri(self, hypervisor: str) -> str:
        """The URI a hypervisor uses for userspace access to the device."""
        raise DeviceError(f"Userspace access with {type(self).__name__} block device and {hypervisor}"
                          f" hypervisor is not supported.")
