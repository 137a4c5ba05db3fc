"""Network backends of kvm NICs: a tap device on a bridge, or qemu's user-mode network.

A NIC whose nicparams say mode "bridged" with a link that is an existing
bridge gets a tap device (opened here, handed to qemu as a descriptor, and
attached to the bridge with `ip link`); every other NIC uses qemu's
user-mode networking (`-netdev user`), which needs nothing from the host.
Ganeti runs its kvm-ifup script instead; routed and openvswitch modes are
not set up here.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
from collections.abc import Mapping
from typing import Any

from noded.hypervisor.base import HypervisorError

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNGETFEATURES = 0x800454CF
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000


def nic_bridge(nic: Mapping[str, Any]) -> str | None:
    """The bridge the NIC's tap device joins, or None for user-mode networking."""
    params = nic.get("nicparams") or {}
    link = params.get("link")
    if params.get("mode", "bridged") != "bridged" or not isinstance(link, str) or not link or "/" in link:
        return None
    return link if os.path.isdir(f"/sys/class/net/{link}/bridge") else None


def open_tap(vnet_hdr: bool) -> tuple[int, str]:
    """A new tap device: (descriptor, interface name). It lives while a descriptor is open."""
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR)
    except OSError as err:
        raise HypervisorError(f"Failed to open {TUN_DEVICE}: {err.strerror}") from err
    try:
        flags = IFF_TAP | IFF_NO_PI
        if vnet_hdr:
            try:
                features = struct.unpack("I", fcntl.ioctl(fd, TUNGETFEATURES, struct.pack("I", 0)))[0]
            except OSError:
                features = 0
            if features & IFF_VNET_HDR:
                flags |= IFF_VNET_HDR
        result = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"", flags))
    except OSError as err:
        os.close(fd)
        raise HypervisorError(f"Failed to allocate a new TAP device: {err.strerror}") from err
    name = struct.unpack("16sH", result[:18])[0].rstrip(b"\x00").decode()
    return fd, name


def attach_to_bridge(tap: str, bridge: str) -> None:
    """Put `tap` in `bridge` and bring it up."""
    try:
        result = subprocess.run(["ip", "link", "set", "dev", tap, "master", bridge, "up"],
                                capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise HypervisorError(f"Failed to attach {tap} to bridge {bridge}: {err}") from err
    if result.returncode != 0:
        raise HypervisorError(f"Failed to attach {tap} to bridge {bridge}: {result.stderr.strip()}")
