"""The interface every hypervisor implements, and the parts they share.

A hypervisor object is cheap: it is created per call with the node's Paths
and keeps its state on disk (below the run directory), so instances outlive
the daemon. Methods raise HypervisorError for problems the caller reports;
the backends turn it into the answer Ganeti gives in the same place.

The interface follows Ganeti's BaseHypervisor: the read side (verify, node
info, instance listing, parameter checks) and the life cycle (start, stop,
reboot, balloon, console, migration, hotplug); a hypervisor overrides what it
supports, the rest raises HypervisorError saying it is not supported.
"""

from __future__ import annotations

import abc
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from noded.paths import Paths

#: Where Linux reports memory and CPUs.
PROC_MEMINFO = "/proc/meminfo"
PROC_CPUINFO = "/proc/cpuinfo"
SYSRQ_TRIGGER = "/proc/sysrq-trigger"


class HypervisorError(Exception):
    """A hypervisor operation failed; the message says why."""


class HotplugError(HypervisorError):
    """Hotplug cannot be done for this instance, action or device (Ganeti's
    HotplugError; the backends answer "Hotplug is not supported: <message>")."""


class InstanceState:
    """Ganeti's HvInstanceState values, as they travel on the wire."""

    RUNNING = 0
    SHUTDOWN = 1


@dataclass(frozen=True)
class InstanceInfo:
    """One instance as the hypervisor sees it (Ganeti's 6-tuple)."""

    name: str
    #: Hypervisor-specific id (a domain id, a pid...), as text.
    id: str
    #: Memory in MiB (None when the hypervisor cannot tell).
    memory: int | None
    vcpus: int | None
    #: InstanceState.RUNNING or InstanceState.SHUTDOWN.
    state: int
    #: CPU time used, in seconds (hypervisor-dependent precision).
    time: float

    def to_legacy(self) -> dict[str, Any]:
        """The {"memory", "vcpus", "state", "time"} dict of instance_info/all_instances_info."""
        return {"memory": self.memory, "vcpus": self.vcpus, "state": self.state, "time": self.time}


@dataclass(frozen=True)
class ParamCheck:
    """How one hypervisor parameter is checked (Ganeti's 5-tuple).

    The syntax check runs on the master (CheckParameterSyntax); the node
    check runs here, on the node (ValidateParameters).
    """

    required: bool
    syntax_check: Callable[[Any], bool] | None = None
    syntax_message: str | None = None
    node_check: Callable[[Any], bool] | None = None
    node_message: str | None = None


@dataclass(frozen=True)
class AttachedDisk:
    """An assembled disk of an instance, as start_instance receives it (Ganeti's
    (disk, link_name, uri) triple, with the device path resolved)."""

    #: The disk dict the master sent (objects.Disk.ToDict()).
    disk: Mapping[str, Any]
    #: Path of the device or file on this node.
    path: str
    #: $RUN_DIR/instance-disks/<instance>:<index>, a symlink to `path`.
    link: str
    #: Userspace access URI (e.g. gluster://...), or None.
    uri: str | None = None


def _unspecified(value: Any) -> bool:
    return value is None or value == ""


class Hypervisor(abc.ABC):
    """A virtualisation technology as the node daemon uses it."""

    #: The name Ganeti uses for it ("fake", "kvm", ...).
    NAME: ClassVar[str]
    #: Parameter name -> check. Every name must be present in a full hvparams dict.
    PARAMETERS: ClassVar[Mapping[str, ParamCheck]] = {}
    #: Ganeti's defaults for the parameters (constants.HVC_DEFAULTS[NAME]).
    DEFAULTS: ClassVar[Mapping[str, Any]] = {}
    #: Whether instances can be migrated.
    CAN_MIGRATE: ClassVar[bool] = False

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    # -- read side -------------------------------------------------------
    @abc.abstractmethod
    def verify(self, hvparams: Mapping[str, Any] | None = None) -> str | None:
        """A description of what is wrong with the hypervisor on this node, or None."""

    @abc.abstractmethod
    def node_info(self, hvparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Memory (MiB) and CPU facts: memory_total, memory_free, memory_dom0,
        cpu_total, cpu_dom0, cpu_nodes, cpu_sockets (plus optional hv_version, memory_hv)."""

    @abc.abstractmethod
    def list_instances(self, hvparams: Mapping[str, Any] | None = None) -> list[str]:
        """Names of the instances running on this node."""

    @abc.abstractmethod
    def instance_info(self, name: str, hvparams: Mapping[str, Any] | None = None) -> InstanceInfo | None:
        """One instance, or None when it is not running here."""

    @abc.abstractmethod
    def all_instances_info(self, hvparams: Mapping[str, Any] | None = None) -> list[InstanceInfo]:
        """Every instance running here."""

    # -- parameters ------------------------------------------------------
    @classmethod
    def check_parameter_syntax(cls, hvparams: Mapping[str, Any]) -> None:
        """The master-side check: no unknown names, all present, syntax valid."""
        for key in hvparams:
            if key not in cls.PARAMETERS:
                raise HypervisorError(f"Parameter '{key}' is not supported")
        for name, check in cls.PARAMETERS.items():
            if name not in hvparams:
                raise HypervisorError(f"Parameter '{name}' is missing")
            value = hvparams[name]
            if _unspecified(value):
                if check.required:
                    raise HypervisorError(f"Parameter '{name}' is required but is currently not defined")
                continue
            if check.syntax_check is not None and not check.syntax_check(value):
                raise HypervisorError(f"Parameter '{name}' fails syntax check: {check.syntax_message}"
                                      f" (current value: '{value}')")

    @classmethod
    def validate_parameters(cls, hvparams: Mapping[str, Any]) -> None:
        """The node-side check (Ganeti's ValidateParameters).

        Every parameter must be present: like Ganeti, a missing one raises
        KeyError(name), which the daemon answers as
        "Error while executing backend function: '<name>'".
        """
        for name, check in cls.PARAMETERS.items():
            value = hvparams[name]
            if not check.required and _unspecified(value):
                continue
            if check.node_check is not None and not check.node_check(value):
                raise HypervisorError(f"Parameter '{name}' fails validation: {check.node_message}"
                                      f" (current value: '{value}')")

    # -- life cycle (Ganeti's BaseHypervisor; instances are instance dicts) -----
    # Every method below raises HypervisorError when it fails. The defaults say
    # the hypervisor cannot do it; each hypervisor overrides what it supports.

    def _unsupported(self, what: str) -> HypervisorError:
        return HypervisorError(f"Hypervisor '{self.NAME}' does not support {what}")

    def start_instance(self, instance: Mapping[str, Any], disks: list[AttachedDisk],
                       startup_paused: bool) -> None:
        """Start `instance` with its assembled disks (in order); paused if asked.

        Fails when the instance already runs ("Instance ... is already running").
        """
        raise self._unsupported("starting instances")

    def stop_instance(self, instance: Mapping[str, Any], force: bool = False, retry: bool = False,
                      name: str | None = None, timeout: int | None = None) -> None:
        """Stop an instance: soft (ACPI/graceful, retried by the caller until its timeout) or,
        with `force`, at once. `name` overrides instance["name"] (cleanup of leftovers).
        Stopping an instance that does not run succeeds."""
        raise self._unsupported("stopping instances")

    def reboot_instance(self, instance: Mapping[str, Any]) -> None:
        """Soft-reboot a running instance (the guest reboots; the process stays)."""
        raise self._unsupported("soft reboots")

    def cleanup_instance(self, name: str) -> None:  # noqa: B027 - optional, nothing by default
        """Remove what a stopped instance left in the run directory."""

    def balloon_instance_memory(self, instance: Mapping[str, Any], memory: int) -> None:
        """Set a running instance's memory to `memory` MiB."""
        raise self._unsupported("memory ballooning")

    def instance_console(self, instance: Mapping[str, Any], primary_node: Mapping[str, Any],
                         node_group: Mapping[str, Any], hvparams: Mapping[str, Any],
                         beparams: Mapping[str, Any]) -> dict[str, Any]:
        """Ganeti's InstanceConsole dict: {"instance", "kind", "message"|"host","port","user",
        "command","display"} telling how to reach the instance's console."""
        raise self._unsupported("consoles")

    def migration_info(self, instance: Mapping[str, Any]) -> str:
        """Data the destination needs before accepting the instance ("" when none)."""
        raise self._unsupported("migration")

    def accept_instance(self, instance: Mapping[str, Any], info: str, target: str) -> None:
        """Destination side: prepare to receive `instance` (listening on `target`)."""
        raise self._unsupported("migration")

    def finalize_migration_dst(self, instance: Mapping[str, Any], info: str, success: bool) -> None:
        """Destination side: the instance arrived (success) or the attempt is abandoned."""
        raise self._unsupported("migration")

    def migrate_instance(self, cluster_name: str, instance: Mapping[str, Any], target: str,
                         live: bool) -> None:
        """Source side: send the running instance to the node at address `target`."""
        raise self._unsupported("migration")

    def finalize_migration_source(self, instance: Mapping[str, Any], success: bool, live: bool) -> None:
        """Source side: clean up after a migration (stop the source when it succeeded)."""
        raise self._unsupported("migration")

    def migration_status(self, instance: Mapping[str, Any]) -> dict[str, Any]:
        """Ganeti's MigrationStatus dict: {"status", "transferred_ram", "total_ram"}."""
        raise self._unsupported("migration")

    def hotplug_supported(self, instance: Mapping[str, Any]) -> None:
        """Succeeds when devices can be hot-plugged into `instance`, else raises HotplugError."""
        raise HotplugError("Hotplug is not supported by this hypervisor")

    def hotplug_device(self, instance: Mapping[str, Any], action: str, dev_type: str,
                       device: Mapping[str, Any], extra: Any, seq: int) -> Any:
        """hotadd/hotremove/hotmod of a disk or NIC; Ganeti's result for that action.

        Raises HotplugError when the action or device cannot be hot-plugged
        (Ganeti's VerifyHotplugSupport), HypervisorError when doing it failed."""
        raise HotplugError("Hotplug is not supported.")

    # -- node ------------------------------------------------------------
    def powercycle_node(self, hvparams: Mapping[str, Any] | None = None) -> None:
        """Hard-reboot the machine (the caller has already decided it may)."""
        linux_powercycle()


def linux_node_info(meminfo: str = PROC_MEMINFO, cpuinfo: str = PROC_CPUINFO) -> dict[str, Any]:
    """Memory and CPU facts of a Linux host that sees all its hardware (MiB).

    memory_free counts MemFree + Buffers + Cached and memory_dom0 is
    "Active", as in Ganeti; one NUMA node and one socket are assumed.
    """
    try:
        with open(meminfo) as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise HypervisorError(f"Failed to list node info: {err}") from err
    result: dict[str, Any] = {}
    free = 0
    try:
        for line in lines:
            key, sep, rest = line.partition(":")
            if not sep:
                continue
            key = key.strip()
            value_mib = int(rest.split()[0]) // 1024 if rest.split() else 0
            if key == "MemTotal":
                result["memory_total"] = value_mib
            elif key in ("MemFree", "Buffers", "Cached"):
                free += value_mib
            elif key == "Active":
                result["memory_dom0"] = value_mib
    except ValueError as err:
        raise HypervisorError(f"Failed to compute memory usage: {err}") from err
    result["memory_free"] = free
    try:
        with open(cpuinfo) as f:
            cpus = len(re.findall(r"(?m)^processor\s*:\s*[0-9]+\s*$", f.read()))
    except OSError as err:
        raise HypervisorError(f"Failed to list node info: {err}") from err
    result["cpu_total"] = cpus
    result["cpu_dom0"] = cpus
    result["cpu_nodes"] = 1
    result["cpu_sockets"] = 1
    return result


def linux_powercycle() -> None:  # pragma: no cover - never run in tests
    """Reboot now through SysRq, or `reboot -n -f` when SysRq is not there."""
    try:
        fd = os.open(SYSRQ_TRIGGER, os.O_WRONLY)
        try:
            os.write(fd, b"b")
        finally:
            os.close(fd)
    except OSError:
        subprocess.run(["reboot", "-n", "-f"], check=False)
