"""Ganeti's generic storage units: list, modify and run operations on their entities.

A storage unit is named by its type and built from the arguments the
master sends (Ganeti's storage/container.py):

- "file", "sharedfile" and "gluster" take one argument, the list of their
  directories; each directory is one entity, with its size and free space
  (of the file system it is on) and the space its files use, in MiB. They
  have no modifiable field and no operation.
- "lvm-vg" and "lvm-pv" take no argument. This node daemon drives no LVM:
  it answers as a Ganeti node that has LVM installed but no volume group
  and no physical volume (the same as `vg_list`), with the output the
  LVM 2.03 tools give there for a named group or volume.

Failures raise StorageUnitError, whose text the node daemon answers after
Ganeti's "Error while executing backend function: " (the way Ganeti
answers its own StorageError).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from noded.backends.storagepaths import node_path
from noded.paths import Paths

FILE_TYPES = ("file", "sharedfile", "gluster")
LVM_VG = "lvm-vg"
LVM_PV = "lvm-pv"
STORAGE_TYPES = (*FILE_TYPES, LVM_VG, LVM_PV)

SF_NAME, SF_SIZE, SF_USED, SF_FREE, SF_ALLOCATABLE = "name", "size", "used", "free", "allocatable"
#: The one operation Ganeti knows (on lvm-vg only).
SO_FIX_CONSISTENCY = "fix-consistency"

#: Per LVM storage type: its field -> the columns its list command (vgs/pvs) would print for it.
_LVM_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    LVM_VG: {SF_NAME: ("vg_name",), SF_SIZE: ("vg_size",), SF_FREE: ("vg_free",),
             SF_USED: ("vg_size", "vg_free"), SF_ALLOCATABLE: ()},
    LVM_PV: {SF_NAME: ("pv_name",), SF_SIZE: ("pv_size",), SF_USED: ("pv_used",),
             SF_FREE: ("pv_free",), SF_ALLOCATABLE: ("pv_attr",)},
}


class StorageUnitError(Exception):
    """A storage unit cannot do what was asked (Ganeti's StorageError)."""


# -- sizes ----------------------------------------------------------------------------

def bytes_to_mib(value: int) -> int:
    """Bytes in MiB, rounded to the nearest (Ganeti's BytesToMebibyte)."""
    return int(round(value / (1024.0 * 1024.0), 0))


def directory_size_mib(path: str) -> int:
    """The apparent size of the files below `path`, in MiB (0 when it is missing)."""
    total = 0
    for current, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(current, name)).st_size
    return bytes_to_mib(total)


def filesystem_mib(path: str) -> tuple[int, int]:
    """(size, free space for unprivileged users) of the file system holding `path`, in MiB."""
    st = os.statvfs(path)
    return bytes_to_mib(st.f_blocks * st.f_frsize), bytes_to_mib(st.f_bavail * st.f_frsize)


# -- units ------------------------------------------------------------------------------

class StorageUnit:
    """One storage unit: its entities can be listed, modified and operated on."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def rows(self, name: str | None, fields: Sequence[str]) -> list[list[Any]]:
        """One row per entity (only `name` when given) with the `fields`, in their order."""
        raise NotImplementedError

    def modify(self, name: str, changes: Mapping[str, Any]) -> None:
        """Change fields of entity `name`; no change at all is always fine."""
        if changes:
            # Ganeti's wording, missing space included, so answers compare equal.
            raise StorageUnitError(f"Unable to modify the followingfields: {list(changes)!r}")

    def execute(self, name: str, op: str) -> Any:
        """Run operation `op` on entity `name`."""
        # Ganeti answers an empty message here (a bare NotImplementedError).
        raise StorageUnitError(f"Operation '{op}' is not supported for storage type '{self.kind}'")


class FileStorageUnit(StorageUnit):
    """Directories holding file disks; each is listed with the space of its file system."""

    def __init__(self, paths: Paths, kind: str, directories: Sequence[str]) -> None:
        super().__init__(kind)
        self.paths = paths
        self.directories = list(directories)

    def rows(self, name: str | None, fields: Sequence[str]) -> list[list[Any]]:
        wanted = self.directories if name is None else [name]
        return [self._row(d, fields) for d in wanted]

    def _row(self, directory: str, fields: Sequence[str]) -> list[Any]:
        local = node_path(self.paths, directory)
        used = directory_size_mib(local) if SF_USED in fields else None
        size, free = filesystem_mib(local) if (SF_SIZE in fields or SF_FREE in fields) else (None, None)
        values = {SF_NAME: directory, SF_USED: used, SF_SIZE: size, SF_FREE: free, SF_ALLOCATABLE: True}
        row = []
        for field in fields:
            if field not in values:
                raise StorageUnitError(f"Unknown field: {field!r}")
            row.append(values[field])
        return row


class AbsentLvmUnit(StorageUnit):
    """LVM volume groups or physical volumes of a node that has none.

    Listing everything gives no row; a named entity fails with the output
    `vgs`/`pvs` give for it; changing a volume's allocatable flag fails with
    `pvchange`'s output, and fix-consistency with `vgreduce`'s.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.columns = _LVM_COLUMNS[kind]

    def rows(self, name: str | None, fields: Sequence[str]) -> list[list[Any]]:
        columns: list[str] = []
        for field in fields:
            if field not in self.columns:
                raise StorageUnitError(f"Unknown field: {field!r}")
            columns.extend(c for c in self.columns[field] if c not in columns)
        if name is None:
            return []
        command = "vgs" if self.kind == LVM_VG else "pvs"
        raise StorageUnitError(f"Failed to run {command!r}, command output: {self._not_found(name, columns)}")

    def _not_found(self, name: str, columns: Sequence[str]) -> str:
        if self.kind == LVM_VG:
            return _vg_not_found(name)
        if list(columns) == ["pv_name"]:
            return f'  Failed to find device "{name}".\n'
        return f"  Cannot use {name}: device not found\n"

    def modify(self, name: str, changes: Mapping[str, Any]) -> None:
        if self.kind == LVM_PV and SF_ALLOCATABLE in changes:
            output = ("  0 physical volumes changed / 0 physical volumes not changed\n"
                      f"  Cannot use {name}: device not found\n")
            raise StorageUnitError(f"Failed to modify physical volume, pvchange output: {output}")
        super().modify(name, changes)

    def execute(self, name: str, op: str) -> Any:
        if self.kind == LVM_VG and op == SO_FIX_CONSISTENCY:
            missing = _vg_not_found(name)
            raise StorageUnitError(f"Volume group '{name}' still not consistent, 'vgreduce' output:"
                                   f" {missing + chr(10) + missing!r}, 'vgs' output: {missing!r}")
        return super().execute(name, op)


def _vg_not_found(name: str) -> str:
    return f'  Volume group "{name}" not found\n  Cannot process volume group {name}\n'


def open_unit(paths: Paths, su_name: str, su_args: Sequence[Any]) -> StorageUnit:
    """The storage unit of type `su_name` built from the master's arguments `su_args`."""
    if su_name not in STORAGE_TYPES:
        raise StorageUnitError(f"Unknown storage type: {su_name!r}")
    args = list(su_args or [])
    if su_name in FILE_TYPES:
        if len(args) != 1:
            raise StorageUnitError(f"Storage type {su_name!r} takes one argument (the list of its"
                                   f" directories), got {len(args)}")
        dirs = args[0]
        if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
            raise StorageUnitError(f"Storage type {su_name!r} needs a list of directory names,"
                                   f" got {dirs!r}")
        return FileStorageUnit(paths, su_name, dirs)
    if args:
        raise StorageUnitError(f"Storage type {su_name!r} takes no arguments, got {len(args)}")
    return AbsentLvmUnit(su_name)
