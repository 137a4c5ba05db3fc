"""The interface every hypervisor implements, and the parts they share.

A hypervisor object is cheap: it is created per call with the node's Paths
and keeps its state on disk (below the run directory), so instances outlive
the daemon. Methods raise HypervisorError for problems the caller reports;
the backends turn it into the answer Ganeti gives in the same place.

The read side (verify, node info, instance listing, parameter checks) is
here now; starting, stopping, rebooting, ballooning, migration, consoles and
hotplug are added to this interface by the hypervisor that needs them (the
fake one first, then kvm), following Ganeti's BaseHypervisor.
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
