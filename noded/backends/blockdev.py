"""The block device procedures for the disks this node keeps: `file` and `sharedfile`.

Each procedure follows Ganeti 3.0.2's backend (same arguments, result
shapes and messages); the devices come from noded.disks. Other templates
answer as a Ganeti node without their technology (see noded.disks.devices;
blockdev_pause_resume_sync, _addchildren and _removechildren live in
noded.backends.unsupported).

Where this node is stricter than Ganeti, it refuses before it changes
anything: disk paths outside the directories of
`$CONF_DIR/file-storage-paths` (also for blockdev_assemble on secondaries,
where Ganeti does not look), `..` in paths, negative, fractional or absurd
sizes (more than the free space), renames onto existing files, image URLs
(this node does not download). Deliberate differences in behaviour:
blockdev_shutdown also removes the instance disk links pointing at the
device; blockdev_wipe zeroes the range without truncating the file after
it (Ganeti's dd cuts the file at the end of the range).
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from noded.backends.storagepaths import node_path
from noded.backends.unsupported import describe_disk
from noded.context import NodeContext
from noded.disks import cache, data, links
from noded.disks.base import BlockDevice, DeviceError, DiskConfigError
from noded.disks.devices import device_for, find_device
from noded.disks.file import whole_mib
from noded.errors import RpcFail
from noded.paths import Paths
from noded.registry import procedure

F = TypeVar("F", bound=Callable[..., Any])

#: Templates whose devices can be snapshotted (constants.DTS_SNAPSHOT_CAPABLE).
SNAPSHOT_CAPABLE = ("drbd", "ext", "plain")
#: What Ganeti takes for a URL in blockdev_image (utils.IsUrl).
_URL = re.compile(r"^(https?|ftps?)://", re.IGNORECASE)
DEV_PREFIX = "/dev/"
#: Unit of the sizes in /sys/dev/block/*/size.
SECTOR = 512


def _refusing(func: F) -> F:
    """Answer unacceptable disks (and device errors Ganeti lets through) as plain failures."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (DiskConfigError, DeviceError) as err:
            raise RpcFail(str(err)) from err

    return wrapper  # type: ignore[return-value]


def _disk_list(value: Any, what: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(d, Mapping) for d in value):
        raise DiskConfigError(f"{what} must be a list of disk dicts, not {value!r}")
    return value


def _found(paths: Paths, disk: Mapping[str, Any], message: str) -> BlockDevice:
    """The present device of `disk`; RpcFail(message % disk) when it is not present."""
    device = find_device(paths, disk)
    if device is None:
        raise RpcFail(message % describe_disk(disk))
    return device


def _find_or_none(paths: Paths, disk: Mapping[str, Any]) -> BlockDevice | None:
    """The device, or None when it is absent or cannot be probed."""
    try:
        return find_device(paths, disk)
    except DeviceError:
        return None


# -- life cycle ------------------------------------------------------------------------

@procedure("blockdev_create", blocking=True)
@_refusing
def blockdev_create(ctx: NodeContext, bdev: dict[str, Any], size: Any, owner: str, on_primary: bool,
                    info: str, exclusive_storage: bool) -> list[Any]:
    """Create the disk's device (file: a sparse file of the disk's size); its logical id.

    `size` is ignored in favour of bdev["size"], as in Ganeti. Not idempotent.
    """
    try:
        device = device_for(ctx.paths, bdev)
    except DeviceError as err:
        raise RpcFail(f"Can't create block device: {err}") from err
    if exclusive_storage:
        raise RpcFail(f"{type(device).__name__} device requested with exclusive_storage")
    try:
        device.create()
    except DeviceError as err:
        raise RpcFail(f"Can't create block device: {err}") from err
    if on_primary or device.assemble_on_secondary:
        try:
            device.assemble()
        except DeviceError as err:
            raise RpcFail(f"Can't assemble device after creation, unusual event: {err}") from err
        try:
            device.open()
        except DeviceError as err:
            raise RpcFail(f"Can't make device r/w after creation, unusual event: {err}") from err
        cache.update(ctx.paths, device.dev_path, owner, bool(on_primary), bdev.get("iv_name"))
    device.set_info(info)
    return device.unique_id


@procedure("blockdev_remove", blocking=True)
@_refusing
def blockdev_remove(ctx: NodeContext, bdev: dict[str, Any]) -> None:
    """Remove the device and its children; an absent device is fine (idempotent)."""
    messages: list[str] = []
    device = _find_or_none(ctx.paths, bdev)
    if device is not None:
        try:
            device.remove()
        except DeviceError as err:
            messages.append(str(err))
        else:
            cache.remove(ctx.paths, device.dev_path)
    for child in bdev.get("children") or []:
        try:
            blockdev_remove(ctx, child)
        except RpcFail as err:
            messages.append(err.message)
    if messages:
        raise RpcFail("; ".join(messages))


@procedure("blockdev_rename", blocking=True)
@_refusing
def blockdev_rename(ctx: NodeContext, devlist: list[Any]) -> None:
    """Give each device its new logical id; every pair is tried, failures are joined with "; ".

    New ids are all checked before anything is renamed.
    """
    if not isinstance(devlist, list) or not all(isinstance(e, list) and len(e) == 2 for e in devlist):
        raise DiskConfigError(f"devlist must be a list of [disk, new_logical_id] pairs, not {devlist!r}")
    for disk, new_id in devlist:
        device_for(ctx.paths, {**disk, "logical_id": new_id, "children": []})
    messages = []
    for disk, new_id in devlist:
        device = find_device(ctx.paths, disk)
        if device is None:
            messages.append(f"Can't find device {describe_disk(disk)} in rename")
            continue
        old_path = device.dev_path
        try:
            device.rename(new_id)
        except DeviceError as err:
            messages.append(f"Can't rename device '{old_path}' to '{list(new_id)}': {err}")
            continue
        if device.dev_path != old_path:
            cache.remove(ctx.paths, old_path)
    if messages:
        raise RpcFail("; ".join(messages))


@procedure("blockdev_grow", blocking=True)
@_refusing
def blockdev_grow(ctx: NodeContext, cf_bdev: dict[str, Any], amount: int, dryrun: bool,
                  backingstore: bool, es_flag: bool) -> None:
    """Grow the device by `amount` MiB (files: only with `backingstore`); only check with `dryrun`."""
    device = _found(ctx.paths, cf_bdev, "Cannot find block device %s")
    try:
        device.grow(amount, bool(dryrun), bool(backingstore), bool(es_flag))
    except DeviceError as err:
        raise RpcFail(f"Failed to grow block device: {err}") from err


@procedure("blockdev_snapshot", blocking=True)
@_refusing
def blockdev_snapshot(ctx: NodeContext, cf_bdev: dict[str, Any], snap_name: str, snap_size: int) -> list[Any]:
    """Snapshot the device: only LVM, DRBD (through its data child) and ExtStorage disks can be."""
    if not isinstance(cf_bdev, Mapping):
        raise DiskConfigError(f"A disk must be a disk dict, not {cf_bdev!r}")
    dev_type = cf_bdev.get("dev_type")
    logical_id = cf_bdev.get("logical_id")
    shown_id = tuple(logical_id) if isinstance(logical_id, list) else logical_id
    if dev_type not in SNAPSHOT_CAPABLE:
        raise RpcFail(f"Cannot snapshot block device '{shown_id}' of type '{dev_type}'")
    if dev_type == "drbd":
        children = cf_bdev.get("children") or []
        if not children:
            raise RpcFail(f"DRBD device '{shown_id}' without backing storage cannot be snapshotted")
        return blockdev_snapshot(ctx, children[0], snap_name, snap_size)
    device = _found(ctx.paths, cf_bdev, "Cannot find block device %s")
    return device.snapshot(snap_name, snap_size)


# -- activation ---------------------------------------------------------------------------

@procedure("blockdev_assemble", blocking=True)
@_refusing
def blockdev_assemble(ctx: NodeContext, disk: dict[str, Any], instance: dict[str, Any], on_primary: bool,
                      idx: int) -> list[Any]:
    """Activate the disk: [dev_path, link, uri] on the primary, [true, true] where nothing is needed."""
    if not isinstance(instance, Mapping) or not isinstance(instance.get("name"), str):
        raise DiskConfigError(f"The instance must be an instance dict with a name, not {instance!r}")
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise DiskConfigError(f"Invalid disk index {idx!r}")
    try:
        device = device_for(ctx.paths, disk)
        if not (on_primary or device.assemble_on_secondary):
            return [True, True]
        device.assemble()
        if on_primary:
            device.open()
        cache.update(ctx.paths, device.dev_path, instance["name"], bool(on_primary), disk.get("iv_name"))
        link = uri = None
        if on_primary:
            link = links.symlink_device(ctx.paths, instance["name"], device.dev_path, idx)
            uri = links.device_uri(disk, device, str(instance.get("hypervisor")))
    except DeviceError as err:
        raise RpcFail(f"Error while assembling disk: {err}") from err
    except OSError as err:
        raise RpcFail(f"Error while symlinking disk: {err}") from err
    return [device.dev_path, link, uri]


@procedure("blockdev_shutdown", blocking=True)
@_refusing
def blockdev_shutdown(ctx: NodeContext, disk: dict[str, Any]) -> None:
    """Deactivate the device and its children, dropping the instance links to it (idempotent)."""
    messages: list[str] = []
    device = find_device(ctx.paths, disk)
    if device is not None:
        try:
            device.shutdown()
        except DeviceError as err:
            messages.append(str(err))
        else:
            cache.remove(ctx.paths, device.dev_path)
            links.unlink_device(ctx.paths, device.dev_path)
    for child in disk.get("children") or []:
        try:
            blockdev_shutdown(ctx, child)
        except RpcFail as err:
            messages.append(err.message)
    if messages:
        raise RpcFail("; ".join(messages))


@procedure("blockdev_open", blocking=True)
@_refusing
def blockdev_open(ctx: NodeContext, instance_name: str, disks: list[dict[str, Any]], exclusive: bool) -> None:
    """Open the disks (files: nothing to do) and point the instance's links at them."""
    devices = [_found(ctx.paths, d, "Can't find device %s") for d in _disk_list(disks, "disks")]
    messages = []
    for idx, device in enumerate(devices):
        try:
            device.open(exclusive=bool(exclusive))
            links.symlink_device(ctx.paths, instance_name, device.dev_path, idx)
        except (DeviceError, OSError) as err:
            messages.append(str(err))
    if messages:
        raise RpcFail(f"Can't open devices: {','.join(messages)}")


@procedure("blockdev_close", blocking=True)
@_refusing
def blockdev_close(ctx: NodeContext, instance_name: str, disks: list[dict[str, Any]]) -> None:
    """Close the disks (files: nothing to do); with an instance name, remove its disk links."""
    checked = _disk_list(disks, "disks")
    devices = [_found(ctx.paths, d, "Can't find device %s") for d in checked]
    messages = []
    for device in devices:
        try:
            device.close()
        except DeviceError as err:
            messages.append(str(err))
    if messages:
        raise RpcFail(f"Can't close devices: {','.join(messages)}")
    if instance_name:
        links.remove_links(ctx.paths, instance_name, len(checked))


# -- state ------------------------------------------------------------------------------------

@procedure("blockdev_find", blocking=True)
@_refusing
def blockdev_find(ctx: NodeContext, disk: dict[str, Any]) -> dict[str, Any] | None:
    """The device's status dict, or null when it is not present."""
    try:
        device = find_device(ctx.paths, disk)
    except DeviceError as err:
        raise RpcFail(f"Failed to find device: {err}") from err
    return None if device is None else device.sync_status().to_legacy()


@procedure("blockdev_getdimensions", blocking=True)
@_refusing
def blockdev_getdimensions(ctx: NodeContext, disks: list[dict[str, Any]]) -> list[list[Any] | None]:
    """[size in bytes, spindles|null] per disk, or null for a disk that is not present."""
    result: list[list[Any] | None] = []
    for disk in _disk_list(disks, "disks"):
        device = _find_or_none(ctx.paths, disk)
        result.append(None if device is None else [device.size_bytes(), device.spindles()])
    return result


@procedure("blockdev_getmirrorstatus", blocking=True)
@_refusing
def blockdev_getmirrorstatus(ctx: NodeContext, disks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The status of each disk; fails when one is not present."""
    return [_found(ctx.paths, d, "Can't find device %s").sync_status().to_legacy()
            for d in _disk_list(disks, "disks")]


@procedure("blockdev_getmirrorstatus_multi", blocking=True)
@_refusing
def blockdev_getmirrorstatus_multi(ctx: NodeContext, node_disks: list[dict[str, Any]]) -> list[list[Any]]:
    """[true, status] or [false, message] per disk."""
    result: list[list[Any]] = []
    for disk in _disk_list(node_disks, "node_disks"):
        try:
            device = find_device(ctx.paths, disk)
            if device is None:
                result.append([False, f"Can't find device {describe_disk(disk)}"])
                continue
            status = device.sync_status()
        except DeviceError as err:
            result.append([False, str(err)])
        else:
            result.append([True, status.to_legacy()])
    return result


@procedure("blockdev_setinfo", blocking=True)
@_refusing
def blockdev_setinfo(ctx: NodeContext, disk: dict[str, Any], info: str) -> None:
    """Store `info` with the device (files keep no metadata)."""
    device = _found(ctx.paths, disk, "Cannot find block device %s")
    try:
        device.set_info(info)
    except DeviceError as err:
        raise RpcFail(f"Failed to set information on block device: {err}") from err


# -- data -------------------------------------------------------------------------------------

@procedure("blockdev_wipe", blocking=True)
@_refusing
def blockdev_wipe(ctx: NodeContext, bdev: dict[str, Any], offset: int, size: int) -> None:
    """Zero `size` MiB of the device from `offset` MiB (both within the disk's size)."""
    device = _find_or_none(ctx.paths, bdev)
    if device is None:
        raise RpcFail(f"Cannot wipe device {bdev.get('iv_name')}: device not found")
    if isinstance(offset, int) and not isinstance(offset, bool) and offset < 0:
        raise RpcFail("Negative offset")
    if isinstance(size, int) and not isinstance(size, bool) and size < 0:
        raise RpcFail("Negative size")
    offset, size = whole_mib(offset, "offset"), whole_mib(size, "size")
    if offset > device.size_mib:
        raise RpcFail("Wipe offset is bigger than device size")
    if offset + size > device.size_mib:
        raise RpcFail("Wipe offset and size are bigger than device size")
    try:
        data.zero_range(device.dev_path, offset, size)
    except OSError as err:
        raise RpcFail(f"Cannot wipe device {bdev.get('iv_name')}: {err}") from err


@procedure("blockdev_image", blocking=True)
@_refusing
def blockdev_image(ctx: NodeContext, bdev: dict[str, Any], image: str, size: int) -> None:
    """Write the first `size` MiB of the image file `image` onto the device."""
    if not isinstance(image, str) or not image:
        raise DiskConfigError(f"Invalid image {image!r}: a path on the node is needed")
    is_url = bool(_URL.match(image))
    local = None if is_url else node_path(ctx.paths, image)
    if local is not None and not os.path.exists(local):
        raise RpcFail(f"Image '{image}' not found")
    device = _find_or_none(ctx.paths, bdev)
    if device is None:
        raise RpcFail(f"Cannot image device {bdev.get('iv_name')}: device not found")
    if isinstance(size, int) and not isinstance(size, bool) and size < 0:
        raise RpcFail("Negative size")
    size = whole_mib(size, "size")
    if size > device.size_mib:
        raise RpcFail("Image size is bigger than device size")
    if local is None:
        raise RpcFail(f"Cannot image device {bdev.get('iv_name')} from '{image}': this node daemon does not"
                      f" download images; copy the image onto the node and give its path")
    try:
        data.copy_prefix(local, device.dev_path, size)
    except OSError as err:
        raise RpcFail(f"Cannot image device {bdev.get('iv_name')} from '{image}': {err}") from err


@procedure("blockdev_convert", blocking=True)
@_refusing
def blockdev_convert(ctx: NodeContext, bdev_src: dict[str, Any], bdev_dest: dict[str, Any]) -> None:
    """Copy the source disk's data (its recorded size) onto the destination disk."""
    src = _find_or_none(ctx.paths, bdev_src)
    if src is None:
        raise RpcFail(f"Cannot copy from device '{bdev_src.get('uuid')}': device not found")
    dest = _find_or_none(ctx.paths, bdev_dest)
    if dest is None:
        raise RpcFail(f"Cannot copy to device '{bdev_dest.get('uuid')}': device not found")
    try:
        data.copy_prefix(src.dev_path, dest.dev_path, src.size_mib)
    except OSError as err:
        raise RpcFail(f"Disk conversion from '{src.dev_path}' to '{dest.dev_path}' failed: {err}") from err


# -- real block devices -------------------------------------------------------------------------

@procedure("bdev_sizes", blocking=True)
def bdev_sizes(ctx: NodeContext, devices: list[str]) -> dict[str, int]:
    """Size in MiB (rounded down) of each given path that is a block device below /dev/.

    Other paths, missing ones and devices whose size cannot be read are left
    out. The size comes from sysfs (/sys/dev/block/<major>:<minor>/size), so
    no device is opened; Ganeti runs `blockdev --getsize64`, which needs to
    open it.
    """
    sizes: dict[str, int] = {}
    for path in devices or []:
        if not isinstance(path, str) or not os.path.normpath(path).startswith(DEV_PREFIX):
            continue
        size = block_device_bytes(path)
        if size is not None:
            sizes[path] = size // (1024 * 1024)
    return sizes


def block_device_bytes(path: str) -> int | None:
    """The size in bytes of the block device at `path`; None when it is no block device or unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    try:
        with open(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/size") as f:
            return int(f.read().strip()) * SECTOR
    except (OSError, ValueError):
        pass
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        return None
    finally:
        os.close(fd)
