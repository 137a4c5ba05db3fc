"""Hypervisors the node daemon can drive, looked up by Ganeti's names.

`get_hypervisor("fake", paths)` returns a fresh object for one call; the
state lives on disk. Unknown names raise HypervisorError with Ganeti's
message ("Unknown hypervisor type 'xen-pvm'").
"""

from __future__ import annotations

from noded.hypervisor.base import (
    AttachedDisk,
    Hypervisor,
    HypervisorError,
    InstanceInfo,
    InstanceState,
    ParamCheck,
)
from noded.hypervisor.fake import FakeHypervisor
from noded.hypervisor.kvm import KvmHypervisor
from noded.paths import Paths

#: Hypervisor name -> class.
HYPERVISORS: dict[str, type[Hypervisor]] = {
    FakeHypervisor.NAME: FakeHypervisor,
    KvmHypervisor.NAME: KvmHypervisor,
}


def get_hypervisor_class(name: str) -> type[Hypervisor]:
    """The class implementing hypervisor `name`."""
    try:
        return HYPERVISORS[name]
    except (KeyError, TypeError):
        raise HypervisorError(f"Unknown hypervisor type '{name}'") from None


def get_hypervisor(name: str, paths: Paths) -> Hypervisor:
    """A hypervisor object for one call on the node described by `paths`."""
    return get_hypervisor_class(name)(paths)


__all__ = [
    "HYPERVISORS",
    "AttachedDisk",
    "FakeHypervisor",
    "Hypervisor",
    "HypervisorError",
    "InstanceInfo",
    "InstanceState",
    "ParamCheck",
    "get_hypervisor",
    "get_hypervisor_class",
]
