"""The `diskless` template: an instance without disks.

A diskless instance has no disk dicts at all, so no block device procedure
is ever asked about one. A disk dict whose dev_type is "diskless" is a
mistake of the caller; it is refused with Ganeti's message for a type that
has no device driver, followed by the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from noded.disks.base import DiskConfigError

DISKLESS = "diskless"


def no_device(disk: Mapping[str, Any]) -> DiskConfigError:
    """The error for a disk dict of the diskless template."""
    return DiskConfigError(f"Invalid block device type '{disk.get('dev_type')}' (the diskless template"
                           f" has no disks, so there is no device to act on)")
