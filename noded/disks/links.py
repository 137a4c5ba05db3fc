"""The instance disk links: $RUN_DIR/instance-disks/<instance name>:<disk index> -> device path.

Hypervisors open an instance's disks through these links (Ganeti's
_SymlinkBlockDev, _RemoveBlockDevLinks and _GatherAndLinkBlockDevs). A link
is (re)pointed at the device when a disk is assembled or opened on the
instance's primary node, and removed when the instance stops or its disks
are closed or shut down.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from typing import Any

from noded.backends.unsupported import describe_disk
from noded.disks.base import DeviceError
from noded.disks.devices import find_device
from noded.hypervisor.base import AttachedDisk
from noded.paths import Paths

#: Between the instance name and the disk index (constants.DISK_SEPARATOR).
DISK_SEPARATOR = ":"
LDP_ACCESS = "access"
DISK_USERSPACE = "userspace"


def links_dir(paths: Paths) -> str:
    return os.path.join(paths.run_dir, "instance-disks")


def link_path(paths: Paths, instance_name: str, idx: int) -> str:
    """Where the link of disk `idx` of `instance_name` lives."""
    if not instance_name or "/" in instance_name or instance_name in (".", ".."):
        raise DeviceError(f"Invalid instance name {instance_name!r} for a disk link")
    return os.path.join(links_dir(paths), f"{instance_name}{DISK_SEPARATOR}{idx}")


def symlink_device(paths: Paths, instance_name: str, dev_path: str | None, idx: int) -> str | None:
    """Point the instance's link for disk `idx` at `dev_path`; the link's path (None without a path).

    An existing link pointing elsewhere (or a stray file) is replaced. OSError on failure.
    """
    if not dev_path:
        return None
    link = link_path(paths, instance_name, idx)
    os.makedirs(links_dir(paths), exist_ok=True)
    try:
        os.symlink(dev_path, link)
    except FileExistsError:
        if not os.path.islink(link) or os.readlink(link) != dev_path:
            os.remove(link)
            os.symlink(dev_path, link)
    return link


def remove_links(paths: Paths, instance_name: str, count: int) -> None:
    """Remove the links of disks 0..count-1 of the instance (the ones that are links)."""
    for idx in range(count):
        link = link_path(paths, instance_name, idx)
        if os.path.islink(link):
            with contextlib.suppress(OSError):
                os.remove(link)


def unlink(paths: Paths, instance_name: str) -> None:
    """Remove every disk link of the instance; nothing to remove is fine."""
    pattern = re.compile(re.escape(instance_name + DISK_SEPARATOR) + r"\d+\Z")
    try:
        names = os.listdir(links_dir(paths))
    except OSError:
        return
    for name in names:
        full = os.path.join(links_dir(paths), name)
        if pattern.match(name) and os.path.islink(full):
            with contextlib.suppress(OSError):
                os.remove(full)


def unlink_device(paths: Paths, dev_path: str) -> None:
    """Remove every instance disk link that points at `dev_path`."""
    try:
        names = os.listdir(links_dir(paths))
    except OSError:
        return
    for name in names:
        full = os.path.join(links_dir(paths), name)
        with contextlib.suppress(OSError):
            if os.path.islink(full) and os.readlink(full) == dev_path:
                os.remove(full)


def device_uri(disk: Mapping[str, Any], device: Any, hypervisor: str) -> str | None:
    """The userspace access URI of the disk (None unless its `access` parameter says userspace)."""
    params = disk.get("params") or {}
    if params.get(LDP_ACCESS) == DISK_USERSPACE:
        uri: str = device.userspace_uri(hypervisor)
        return uri
    return None


def gather_and_link(paths: Paths, instance: Mapping[str, Any]) -> list[AttachedDisk]:
    """The instance's disks (instance["disks_info"], in order), each found, opened and linked.

    Raises DeviceError ("Block device '<disk>' is not set up." when a disk is
    not present, "Cannot create block device symlink: ..." when the link
    cannot be made); DiskConfigError for unacceptable disk dicts.
    """
    name = str(instance.get("name"))
    attached: list[AttachedDisk] = []
    for idx, disk in enumerate(instance.get("disks_info") or []):
        device = find_device(paths, disk)
        if device is None:
            raise DeviceError(f"Block device '{describe_disk(disk)}' is not set up.")
        device.open()
        try:
            link = symlink_device(paths, name, device.dev_path, idx)
        except OSError as err:
            raise DeviceError(f"Cannot create block device symlink: {err.strerror}") from err
        uri = device_uri(disk, device, str(instance.get("hypervisor")))
        attached.append(AttachedDisk(disk=disk, path=device.dev_path, link=link or "", uri=uri))
    return attached
