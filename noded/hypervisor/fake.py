"""Ganeti's "fake" hypervisor: instances are files, nothing runs.

A running instance is the file `$RUN_DIR/fake-hypervisor/<instance name>`
holding three lines, exactly as Ganeti's hv_fake keeps it: an id (always
"0"), the memory in MiB and the number of vCPUs. Starting an instance writes
the file, stopping removes it, so the state survives daemon restarts and is
shared with a real Ganeti noded using the same run directory.

Only the read side is implemented here yet; start/stop/reboot/balloon and
migration follow Ganeti's hv_fake when the instance procedures land.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from noded.hypervisor.base import (
    Hypervisor,
    HypervisorError,
    InstanceInfo,
    InstanceState,
    ParamCheck,
    linux_node_info,
)
from noded.paths import Paths

#: Ganeti's migration modes (constants.HT_MIGRATION_MODES).
MIGRATION_MODES = frozenset({"live", "non-live"})

#: Mode of the state directory (Ganeti's RUN_DIRS_MODE).
STATE_DIR_MODE = 0o775


def _to_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class FakeHypervisor(Hypervisor):
    """Instances as state files; the node's real memory and CPUs as node info."""

    NAME = "fake"
    PARAMETERS: ClassVar[Mapping[str, ParamCheck]] = {
        "migration_mode": ParamCheck(required=True,
                                     syntax_check=lambda v: v in MIGRATION_MODES,
                                     syntax_message="invalid migration mode"),
    }
    DEFAULTS: ClassVar[Mapping[str, Any]] = {"migration_mode": "live"}
    CAN_MIGRATE = True

    def __init__(self, paths: Paths) -> None:
        super().__init__(paths)
        # Like Ganeti, the state directory is created whenever the hypervisor is used.
        try:
            os.makedirs(self.state_dir, mode=STATE_DIR_MODE, exist_ok=True)
        except OSError:
            pass  # verify() reports the missing directory

    @property
    def state_dir(self) -> str:
        return os.path.join(self.paths.run_dir, "fake-hypervisor")

    def instance_file(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def _read(self, name: str) -> InstanceInfo:
        with open(self.instance_file(name)) as f:
            inst_id = f.readline().strip()
            memory = _to_int(f.readline().strip())
            vcpus = _to_int(f.readline().strip())
        return InstanceInfo(name=name, id=inst_id, memory=memory, vcpus=vcpus,
                            state=InstanceState.RUNNING, time=0)

    # -- read side -------------------------------------------------------
    def verify(self, hvparams: Mapping[str, Any] | None = None) -> str | None:
        if os.path.exists(self.state_dir):
            return None
        return f"The required directory '{self.state_dir}' does not exist"

    def list_instances(self, hvparams: Mapping[str, Any] | None = None) -> list[str]:
        try:
            return sorted(os.listdir(self.state_dir))
        except OSError as err:
            raise HypervisorError(f"Failed to list instances: {err}") from err

    def instance_info(self, name: str, hvparams: Mapping[str, Any] | None = None) -> InstanceInfo | None:
        if not os.path.exists(self.instance_file(name)):
            return None
        try:
            return self._read(name)
        except OSError as err:
            raise HypervisorError(f"Failed to list instance {name}: {err}") from err

    def all_instances_info(self, hvparams: Mapping[str, Any] | None = None) -> list[InstanceInfo]:
        result = []
        for name in self.list_instances():
            try:
                result.append(self._read(name))
            except FileNotFoundError:
                continue  # stopped while we were listing
            except OSError as err:
                raise HypervisorError(f"Failed to list instances: {err}") from err
        return result

    def node_info(self, hvparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The host's facts, with the fake instances' memory taken off memory_free."""
        info = linux_node_info()
        used = sum(i.memory or 0 for i in self.all_instances_info())
        info["memory_free"] -= min(info["memory_free"], used)
        return info
