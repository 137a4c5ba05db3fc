"""Disks stored as regular files: the `file` and `sharedfile` templates (Ganeti's FileStorage).

The logical id is `[driver, path]` (driver "loop", "blktap" or "blktap2";
the driver only matters to hypervisors). The path arrives as the master
sends it: a plain node path (mapped below the node root when there is one)
or a virtual-cluster path (`/###-VIRTUAL-PATH-###,/srv/...`). It must lie
below one of the directories listed in `$CONF_DIR/file-storage-paths` (for
both templates, as in Ganeti), must not contain a `..` component, and must
not be in a system directory.

A new disk is a sparse file of the disk's size; creating it is exclusive
(an existing file is an error). Assembling checks that the file exists;
shutting down, opening and closing do nothing. Growing extends the file.

Where this differs from Ganeti 3.0.2 (which does none of these checks), it
refuses up front instead of half-doing the work: negative or non-integer
sizes, sizes larger than the free space of the file system (with the
wording of Ganeti's LVM driver), a rename onto an existing file (Ganeti
silently overwrites it), a grow by a negative amount even in a dry run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from noded.backends.storagepaths import FileStoragePathError, check_file_storage_acceptance, node_path
from noded.disks.base import MIB, BlockDevice, DeviceError, DiskConfigError
from noded.errors import RpcFail
from noded.paths import VIRTUAL_PATH_PREFIX, Paths

FILE_TEMPLATES = ("file", "sharedfile")
#: Drivers Ganeti knows for file disks (constants.FILE_DRIVER).
FILE_DRIVERS = ("loop", "blktap", "blktap2")


def whole_mib(value: Any, what: str) -> int:
    """`value` as a whole, non-negative number of MiB; DiskConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise DiskConfigError(f"Invalid {what} {value!r}: a whole number of MiB is needed")
    if value < 0:
        raise DiskConfigError(f"Invalid {what} {int(value)} MiB: it must not be negative")
    return int(value)


def free_mib(directory: str) -> int:
    """Free space (for unprivileged users) of the file system holding `directory`, in MiB."""
    st = os.statvfs(directory)
    return (st.f_bavail * st.f_frsize) // MIB


def file_disk_path(paths: Paths, logical_id: Any) -> str:
    """The file on this node for a file disk's logical id; DiskConfigError unless it is acceptable."""
    if not isinstance(logical_id, list | tuple) or len(logical_id) != 2:
        shown = tuple(logical_id) if isinstance(logical_id, list) else logical_id
        raise DiskConfigError(f"Invalid configuration data {shown}")
    raw = logical_id[1]
    if not isinstance(raw, str) or not raw:
        raise DiskConfigError(f"Invalid file disk path {raw!r} in logical id {tuple(logical_id)}")
    rest = raw[len(VIRTUAL_PATH_PREFIX):] if raw.startswith(VIRTUAL_PATH_PREFIX) else raw
    if ".." in rest.split("/"):
        raise DiskConfigError(f"File disk path '{raw}' must not contain '..'")
    try:
        local = node_path(paths, raw)
    except RpcFail as err:
        raise DiskConfigError(str(err)) from err
    try:
        check_file_storage_acceptance(paths, local)
    except FileStoragePathError as err:
        text = str(err)
        listing = paths.file_storage_paths_file
        if listing not in text:
            text += f" (the directories allowed for file storage are listed in '{listing}')"
        raise DiskConfigError(text) from err
    return local


class FileStorage(BlockDevice):
    """A disk kept in a regular (sparse) file."""

    def __init__(self, paths: Paths, disk: Mapping[str, Any]) -> None:
        super().__init__(paths, disk)
        if disk.get("children"):
            raise DeviceError("Invalid setup for file device")
        self.path = file_disk_path(paths, disk.get("logical_id"))

    @property
    def dev_path(self) -> str:
        return self.path

    @property
    def driver(self) -> str:
        return str(self.unique_id[0])

    def _must_exist(self) -> None:
        if not os.path.isfile(self.path):
            raise DeviceError(f"{self.path}: No such file")

    # -- presence ------------------------------------------------------------------

    def exists(self) -> bool:
        return os.path.isfile(self.path)

    def create(self) -> None:
        size = whole_mib(self.disk.get("size"), "disk size")
        directory = os.path.dirname(self.path)
        if os.path.lexists(self.path):
            raise DeviceError(f"{self.path}: can't create: [Errno 17] File exists: '{self.path}'")
        if os.path.isdir(directory):
            available = free_mib(directory)
            if size > available:
                raise DeviceError(f"{self.path}: can't create: Not enough free space: required {size},"
                                  f" available {available} (MiB, in the file system of '{directory}')")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except OSError as err:
            raise DeviceError(f"{self.path}: can't create: {err}") from err
        try:
            os.ftruncate(fd, size * MIB)
        except OSError as err:
            os.close(fd)
            os.unlink(self.path)
            raise DeviceError(f"{self.path}: can't create: {err}") from err
        os.close(fd)

    def remove(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise DeviceError(f"{self.path}: can't remove: {err}") from err

    def assemble(self) -> None:
        self._must_exist()

    # -- changes -------------------------------------------------------------------

    def rename(self, new_id: list[Any]) -> None:
        new_path = file_disk_path(self.paths, new_id)
        self.rename_to(new_path)
        self.disk = {**self.disk, "logical_id": list(new_id)}

    def rename_to(self, new_path: str) -> None:
        """Move the file to `new_path` (already checked); refuses to overwrite another file."""
        self._must_exist()
        if os.path.normpath(new_path) == os.path.normpath(self.path):
            return
        if os.path.lexists(new_path):
            raise DeviceError(f"{self.path}: can't rename to {new_path}: [Errno 17] File exists")
        try:
            os.rename(self.path, new_path)
        except OSError as err:
            raise DeviceError(f"{self.path}: can't rename to {new_path}: {err}") from err
        self.path = new_path

    def grow(self, amount: int, dryrun: bool, backingstore: bool, excl_stor: bool) -> None:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise DiskConfigError(f"Invalid amount {amount!r}: a whole number of MiB is needed")
        self._must_exist()
        if amount < 0:
            raise DeviceError(f"{self.path}: can't grow by negative amount")
        available = free_mib(os.path.dirname(self.path))
        if amount > available:
            raise DeviceError(f"Not enough free space to grow {self.path}: {amount} MiB required,"
                              f" {available} MiB available")
        if dryrun or not backingstore:
            return
        try:
            new_size = os.stat(self.path).st_size + amount * MIB
            os.truncate(self.path, new_size)
        except OSError as err:
            raise DeviceError(f"{self.path}: can't grow: {err}") from err

    # -- state -------------------------------------------------------------------------

    def size_bytes(self) -> int:
        self._must_exist()
        try:
            return os.stat(self.path).st_size
        except OSError as err:
            raise DeviceError(f"{self.path}: can't stat: {err}") from err
