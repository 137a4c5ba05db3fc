"""Ganeti's "fake" hypervisor: instances are files, nothing runs.

A running instance is the file `$RUN_DIR/fake-hypervisor/<instance name>`
holding three lines, exactly as Ganeti's hv_fake keeps it: an id (always
"0"), the memory in MiB and the number of vCPUs. Starting an instance writes
the file, stopping removes it, so the state survives daemon restarts and is
shared with a real Ganeti noded using the same run directory.

Life cycle, as hv_fake: start fails when the file exists ("already running")
and writes it with the startup memory (maxmem, lowered to the node's free
memory but not below minmem); stop removes it (stopping a stopped instance
succeeds); a soft reboot changes nothing; ballooning rewrites the memory;
the console is Ganeti's "not available" message; hotplug is not supported.

Migration moves the state file from the source node's run directory to the
destination's, so it also works between two node daemons on one machine
with different roots (nothing travels over the network):

- `migration_info` (source) returns the instance's state file text (hv_fake
  returns an empty string), so the destination gets the memory the instance runs with;
- `accept_instance` (destination) refuses an instance that runs there and
  records the incoming instance in `$RUN_DIR/fake-hypervisor-incoming/<name>`;
- `migrate_instance` (source) only logs: there is nothing to transfer;
- `migration_status` is always "completed";
- `finalize_migration_dst` writes the state file on success (memory from the
  migration info when it came from us, else the startup memory, as hv_fake),
  removes it on failure, and drops the incoming record either way;
- `finalize_migration_source` removes the source's state file on success.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Any, ClassVar

from noded.hypervisor.base import (
    AttachedDisk,
    HotplugError,
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

#: What instance_console answers (Ganeti's hv_fake message).
CONSOLE_MESSAGE = "Console not available for fake hypervisor"

log = logging.getLogger(__name__)


def _to_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _checked_name(name: str) -> str:
    """`name` when it can be a file name in the state directory."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise HypervisorError(f"Invalid instance name '{name}'")
    return name


def _state_text(memory: int, vcpus: int) -> str:
    return f"0\n{memory}\n{vcpus}\n"


def _memory_from_state(text: str) -> int | None:
    """The memory line of a state file's text, or None when `text` is not one."""
    lines = text.split("\n")
    if len(lines) < 3 or lines[0] != "0":
        return None
    return _to_int(lines[1])


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

    @property
    def incoming_dir(self) -> str:
        """Where accept_instance records instances migrating to this node."""
        return os.path.join(self.paths.run_dir, "fake-hypervisor-incoming")

    def instance_file(self, name: str) -> str:
        return os.path.join(self.state_dir, _checked_name(name))

    def incoming_file(self, name: str) -> str:
        return os.path.join(self.incoming_dir, _checked_name(name))

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

    # -- life cycle ------------------------------------------------------
    def _alive(self, name: str) -> bool:
        return os.path.exists(self.instance_file(name))

    def _write_state(self, name: str, text: str, exclusive: bool) -> None:
        """Write the state file atomically; with `exclusive`, fail when it exists."""
        target = self.instance_file(name)
        os.makedirs(self.state_dir, mode=STATE_DIR_MODE, exist_ok=True)
        # The temporary file lives beside the directory, not in it, so that a
        # listing never sees a half-written instance.
        fd, tmp = tempfile.mkstemp(prefix=".fake-hypervisor-", dir=self.paths.run_dir)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            if exclusive:
                os.link(tmp, target)  # FileExistsError when the instance runs
            else:
                os.replace(tmp, target)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def _mark_down(self, name: str) -> None:
        try:
            os.unlink(self.instance_file(name))
        except FileNotFoundError:
            pass

    def startup_memory(self, instance: Mapping[str, Any]) -> int:
        """maxmem, lowered to the node's free memory but never below minmem (MiB)."""
        beparams = instance["beparams"]
        free = self.node_info(instance.get("hvparams"))["memory_free"]
        return int(max(beparams["minmem"], min(beparams["maxmem"], free)))

    def start_instance(self, instance: Mapping[str, Any], disks: list[AttachedDisk],
                       startup_paused: bool) -> None:
        name = instance["name"]
        if self._alive(name):
            raise HypervisorError(f"Failed to start instance {name}: already running")
        text = _state_text(self.startup_memory(instance), int(instance["beparams"]["vcpus"]))
        try:
            self._write_state(name, text, exclusive=True)
        except FileExistsError:
            raise HypervisorError(f"Failed to start instance {name}: already running") from None
        except OSError as err:
            raise HypervisorError(f"Failed to start instance {name}: {err}") from err

    def stop_instance(self, instance: Mapping[str, Any], force: bool = False, retry: bool = False,
                      name: str | None = None, timeout: int | None = None) -> None:
        name = name if name is not None else instance["name"]
        try:
            self._mark_down(name)
        except OSError as err:
            raise HypervisorError(f"Failed to stop instance {name}: {err}") from err

    def reboot_instance(self, instance: Mapping[str, Any]) -> None:
        name = instance["name"]
        if not self._alive(name):
            raise HypervisorError(f"Failed to reboot instance {name}: not running")

    def balloon_instance_memory(self, instance: Mapping[str, Any], memory: int) -> None:
        name = instance["name"]
        if not self._alive(name):
            raise HypervisorError(f"Failed to balloon memory for {name}: not running")
        try:
            self._write_state(name, _state_text(int(memory), int(instance["beparams"]["vcpus"])),
                              exclusive=False)
        except OSError as err:
            raise HypervisorError(f"Failed to balloon memory for {name}: {err.strerror or err}") from err

    def instance_console(self, instance: Mapping[str, Any], primary_node: Mapping[str, Any],
                         node_group: Mapping[str, Any], hvparams: Mapping[str, Any],
                         beparams: Mapping[str, Any]) -> dict[str, Any]:
        return {"instance": instance["name"], "kind": "msg", "message": CONSOLE_MESSAGE}

    # -- migration -------------------------------------------------------
    def migration_info(self, instance: Mapping[str, Any]) -> str:
        """The state file's text (memory and vCPUs as they run), "" when not running here."""
        try:
            with open(self.instance_file(instance["name"])) as f:
                return f.read()
        except FileNotFoundError:
            return ""
        except OSError as err:
            raise HypervisorError(f"Failed to read the state of {instance['name']}: {err}") from err

    def accept_instance(self, instance: Mapping[str, Any], info: str, target: str) -> None:
        name = instance["name"]
        if self._alive(name):
            raise HypervisorError("Can't accept instance, already running")
        try:
            os.makedirs(self.incoming_dir, mode=STATE_DIR_MODE, exist_ok=True)
            with open(self.incoming_file(name), "w") as f:
                f.write(info or "")
        except OSError as err:
            raise HypervisorError(f"Failed to record incoming instance {name}: {err}") from err

    def migrate_instance(self, cluster_name: str, instance: Mapping[str, Any], target: str,
                         live: bool) -> None:
        log.debug("Fake hypervisor migrating %s to %s (live=%s)", instance["name"], target, live)

    def finalize_migration_dst(self, instance: Mapping[str, Any], info: str, success: bool) -> None:
        name = instance["name"]
        try:
            if success:
                memory = _memory_from_state(info or "")
                if memory is None:
                    memory = self.startup_memory(instance)
                self._write_state(name, _state_text(memory, int(instance["beparams"]["vcpus"])),
                                  exclusive=False)
            else:
                self._mark_down(name)
            try:
                os.unlink(self.incoming_file(name))
            except FileNotFoundError:
                pass
        except OSError as err:
            raise HypervisorError(f"Failed to finalize the migration of {name}: {err}") from err

    def finalize_migration_source(self, instance: Mapping[str, Any], success: bool, live: bool) -> None:
        if success:
            try:
                self._mark_down(instance["name"])
            except OSError as err:
                raise HypervisorError(f"Failed to stop instance {instance['name']}: {err}") from err

    def migration_status(self, instance: Mapping[str, Any]) -> dict[str, Any]:
        return {"status": "completed"}

    # -- hotplug (never, as in Ganeti) ------------------------------------
    def hotplug_supported(self, instance: Mapping[str, Any]) -> None:
        raise HotplugError("Hotplug is not supported by this hypervisor")

    def hotplug_device(self, instance: Mapping[str, Any], action: str, dev_type: str,
                       device: Mapping[str, Any], extra: Any, seq: int) -> Any:
        raise HotplugError("Hotplug is not supported.")
