"""Where a kvm instance's state lives, and what /proc says about its process.

The layout is Ganeti's, below `$RUN_DIR/kvm-hypervisor`:

    pid/<name>                 qemu's pid file (qemu writes it)
    uid/<name>                 uid taken from the pool (security_model=pool)
    ctrl/<name>.monitor        human monitor socket (kvm-console-wrapper uses it)
    ctrl/<name>.serial         serial console socket
    ctrl/<name>.qmp            QMP socket
    ctrl/<name>.shutdown       present when the guest powered itself off (user_shutdown)
    conf/<name>.runtime        runtime data: JSON [command, nics, hvparams, disks]
    nic/<name>/<seq>           tap device of NIC <seq>
    chroot/<name>              empty chroot directory (use_chroot)
    chroot-quarantine/         chroot directories found not empty after a stop

qemu's own log goes to `$LOG_DIR/kvm/<name>.log`. Nothing here depends on
the node daemon's memory: a restarted daemon finds its instances again from
the pid files and /proc.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from noded.hypervisor.base import HypervisorError
from noded.paths import Paths

#: Mode of the state directories (Ganeti's RUN_DIRS_MODE).
RUN_DIRS_MODE = 0o775
SECURE_DIR_MODE = 0o700

#: Runtime file: (command, nics, hvparams, disks) as Ganeti keeps it.
Runtime = tuple[list[str], list[dict[str, Any]], dict[str, Any], list[list[Any]]]


@dataclass(frozen=True)
class KvmDirs:
    """The kvm state directories of one node."""

    paths: Paths

    @property
    def root(self) -> str:
        return os.path.join(self.paths.run_dir, "kvm-hypervisor")

    def _sub(self, name: str) -> str:
        return os.path.join(self.root, name)

    @property
    def pid_dir(self) -> str:
        return self._sub("pid")

    @property
    def uid_dir(self) -> str:
        return self._sub("uid")

    @property
    def ctrl_dir(self) -> str:
        return self._sub("ctrl")

    @property
    def conf_dir(self) -> str:
        return self._sub("conf")

    @property
    def nic_root(self) -> str:
        return self._sub("nic")

    @property
    def chroot_root(self) -> str:
        return self._sub("chroot")

    @property
    def quarantine_dir(self) -> str:
        return self._sub("chroot-quarantine")

    @property
    def all_dirs(self) -> list[str]:
        return [self.root, self.pid_dir, self.uid_dir, self.ctrl_dir, self.conf_dir, self.nic_root,
                self.chroot_root, self.quarantine_dir]

    @property
    def log_dir(self) -> str:
        return os.path.join(self.paths.log_dir, "kvm")

    def ensure(self) -> None:
        for directory in self.all_dirs:
            os.makedirs(directory, mode=RUN_DIRS_MODE, exist_ok=True)

    # -- per instance ------------------------------------------------------
    def pid_file(self, name: str) -> str:
        return os.path.join(self.pid_dir, name)

    def uid_file(self, name: str) -> str:
        return os.path.join(self.uid_dir, name)

    def monitor(self, name: str) -> str:
        return os.path.join(self.ctrl_dir, f"{name}.monitor")

    def serial(self, name: str) -> str:
        return os.path.join(self.ctrl_dir, f"{name}.serial")

    def qmp(self, name: str) -> str:
        return os.path.join(self.ctrl_dir, f"{name}.qmp")

    def shutdown_marker(self, name: str) -> str:
        return os.path.join(self.ctrl_dir, f"{name}.shutdown")

    def runtime_file(self, name: str) -> str:
        return os.path.join(self.conf_dir, f"{name}.runtime")

    def nic_dir(self, name: str) -> str:
        return os.path.join(self.nic_root, name)

    def nic_file(self, name: str, seq: int) -> str:
        return os.path.join(self.nic_dir(name), str(seq))

    def chroot_dir(self, name: str) -> str:
        return os.path.join(self.chroot_root, name)

    def log_file(self, name: str) -> str:
        return os.path.join(self.log_dir, f"{name}.log")

    # -- runtime file ------------------------------------------------------
    def write_runtime(self, name: str, data: str) -> None:
        target = self.runtime_file(name)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.conf_dir, prefix=f".{name}.")
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.replace(tmp, target)
        except OSError as err:
            raise HypervisorError(f"Failed to save KVM runtime file: {err}") from err

    def read_runtime(self, name: str) -> str:
        try:
            with open(self.runtime_file(name)) as f:
                return f.read()
        except OSError as err:
            raise HypervisorError(f"Failed to load KVM runtime file: {err}") from err

    def remove_runtime_files(self, name: str) -> None:
        """Everything a stopped instance leaves (idempotent)."""
        for path in (self.pid_file(name), self.monitor(name), self.serial(name), self.qmp(name),
                     self.runtime_file(name), self.uid_file(name)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        shutil.rmtree(self.nic_dir(name), ignore_errors=True)
        chroot = self.chroot_dir(name)
        try:
            os.rmdir(chroot)
        except FileNotFoundError:
            pass
        except OSError:
            # Not empty: kept aside for forensics, as Ganeti does.
            stamp = time.strftime("%Y-%m-%d_%H_%M_%S")
            target = tempfile.mkdtemp(dir=self.quarantine_dir, prefix=f"{name}-{stamp}-")
            os.replace(chroot, target)


def dump_runtime(runtime: Runtime) -> str:
    return json.dumps(list(runtime))


def load_runtime(text: str) -> Runtime:
    """Parse a runtime file (ours or Ganeti's: disks may be missing in old files)."""
    try:
        data = json.loads(text)
        cmd, nics, hvparams = data[0], data[1], data[2]
        disks = data[3] if len(data) > 3 else []
    except (ValueError, TypeError, IndexError, KeyError) as err:
        raise HypervisorError(f"Invalid KVM runtime data: {err}") from err
    if not (isinstance(cmd, list) and isinstance(nics, list) and isinstance(hvparams, dict)
            and isinstance(disks, list)):
        raise HypervisorError("Invalid KVM runtime data: unexpected structure")
    return [str(a) for a in cmd], nics, hvparams, disks


# -- processes -----------------------------------------------------------------
def read_pid_file(path: str) -> int:
    """The pid in `path`, or 0 when there is none (Ganeti's ReadPidFile)."""
    try:
        with open(path) as f:
            return int(f.read(64).strip() or 0)
    except (OSError, ValueError):
        return 0


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]
    return state not in (["Z"], ["X"])


@dataclass(frozen=True)
class QemuProcess:
    """What a qemu command line says about its instance."""

    pid: int
    name: str
    memory: int
    vcpus: int


def qemu_process(pid: int) -> QemuProcess | None:
    """The instance a live qemu process runs (from -name, -m, -smp), or None."""
    if not process_alive(pid):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\x00")
    except OSError:
        return None
    name: str | None = None
    memory = vcpus = 0
    it = iter(args)
    for arg in it:
        try:
            if arg == "-name":
                name = next(it).split(",")[0]
            elif arg == "-m":
                memory = int(next(it).split(",")[0].rstrip("M"))
            elif arg == "-smp":
                vcpus = int(next(it).split(",")[0])
        except (StopIteration, ValueError):
            break
    if name is None:
        return None
    return QemuProcess(pid=pid, name=name, memory=memory, vcpus=vcpus)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, in seconds (0 when unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    except (OSError, ValueError, IndexError):
        return 0.0
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until `pid` is gone; whether it went within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
