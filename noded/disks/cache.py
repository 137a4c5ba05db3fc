"""Ganeti's block device cache: one small file per active device in $RUN_DIR/bdev-cache.

`bdev_<device path without /dev/, slashes as underscores>` holds
"<owner> <primary|secondary> <iv_name|not_visible>"; it is informational
(administrators read it), so failures to write it are ignored, as in Ganeti.
"""

from __future__ import annotations

import contextlib
import os

from noded.paths import Paths

_DEV_PREFIX = "/dev/"


def cache_dir(paths: Paths) -> str:
    return os.path.join(paths.run_dir, "bdev-cache")


def cache_file(paths: Paths, dev_path: str) -> str:
    """The cache file of the device at `dev_path`."""
    name = dev_path[len(_DEV_PREFIX):] if dev_path.startswith(_DEV_PREFIX) else dev_path
    return os.path.join(cache_dir(paths), "bdev_" + name.replace("/", "_"))


def update(paths: Paths, dev_path: str, owner: str | None, on_primary: bool, iv_name: str | None) -> None:
    """Record who uses the device and how."""
    state = "primary" if on_primary else "secondary"
    text = f"{owner} {state} {iv_name if iv_name is not None else 'not_visible'}\n"
    target = cache_file(paths, dev_path)
    with contextlib.suppress(OSError):
        os.makedirs(cache_dir(paths), exist_ok=True)
        tmp = f"{target}.new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, target)


def remove(paths: Paths, dev_path: str) -> None:
    """Forget the device (a missing entry is fine)."""
    with contextlib.suppress(OSError):
        os.unlink(cache_file(paths, dev_path))
