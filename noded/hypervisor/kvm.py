"""Ganeti's "kvm" hypervisor: every instance is a detached qemu-system-x86_64.

Behaviour follows Ganeti 3.0's hv_kvm (its parameters, run-directory layout
and runtime file, the start sequence "start paused, then continue", ACPI
power-down for a soft stop, live migration over TCP); the differences:

- The monitor, QMP and serial sockets are created by the node daemon and
  handed to qemu as descriptors, so they work under a virtual node's long
  run directory; the runtime file keeps only the instance's part of the
  command line (the node's part - pid file, sockets, log, drives' local
  paths, -incoming - is added at each start), so a migration between two
  virtual nodes on one machine works.
- Acceleration: kvm_flag "enabled" means KVM, "disabled" plain emulation
  (TCG), and the default "" KVM when /dev/kvm works, TCG otherwise.
- A soft reboot resets the guest through QMP (system_reset) and keeps the
  process; Ganeti restarts the process.
- NICs use a tap device when their link is an existing bridge, qemu's
  user-mode networking otherwise; the uid pool (security_model=pool) is not
  supported.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from noded.hypervisor import kvm_cmd, kvm_hotplug, kvm_params
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
from noded.hypervisor.kvm_net import attach_to_bridge, nic_bridge, open_tap
from noded.hypervisor.kvm_state import (
    SECURE_DIR_MODE,
    KvmDirs,
    Runtime,
    cpu_seconds,
    dump_runtime,
    load_runtime,
    qemu_process,
    read_pid_file,
    wait_gone,
)
from noded.hypervisor.qmp import QmpClient, QmpError, listen_unix
from noded.paths import Paths

log = logging.getLogger(__name__)

KVM_DEVICE = "/dev/kvm"
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12
#: Ganeti's console helper (it resumes a paused instance once the console is attached).
KVM_CONSOLE_WRAPPER = "/usr/lib/ganeti/tools/kvm-console-wrapper"
SOCAT_CONSOLE_PARAMS = "raw,echo=0,escape=0x1d"
SSH_CONSOLE_USER = "root"
#: Ganeti's default ndparams ssh_port, for node and group dicts that do not carry it.
DEFAULT_SSH_PORT = 22
#: Statuses of query-migrate that Ganeti passes on.
MIGRATION_STATUSES = frozenset({"active", "cancelled", "completed", "failed", "postcopy-active"})
#: Passing states of a migration in progress, reported as "active" (Ganeti waits 2 s and asks
#: again when it sees them, which only slows the master down).
MIGRATION_IN_PROGRESS = frozenset({"setup", "pre-switchover", "device", "wait-unplug"})
#: Precopy passes before switching to postcopy (when migration_caps asks for it).
POSTCOPY_SYNC_COUNT_THRESHOLD = 2
#: Seconds qemu gets to exit on SIGTERM before SIGKILL.
KILL_GRACE = 5.0


def kvm_acceleration() -> tuple[bool, str]:
    """Whether KVM can run guests here, and why not."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return False, f"{KVM_DEVICE} cannot be opened: {err.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        if version != KVM_API_VERSION:
            return False, f"{KVM_DEVICE} speaks KVM API {version}, not {KVM_API_VERSION}"
        os.close(fcntl.ioctl(fd, KVM_CREATE_VM, 0))
    except OSError as err:
        return False, f"{KVM_DEVICE} cannot create a virtual machine: {err.strerror}"
    finally:
        os.close(fd)
    return True, f"{KVM_DEVICE} is usable"


class KvmHypervisor(Hypervisor):
    """qemu processes described by files below $RUN_DIR/kvm-hypervisor."""

    NAME = "kvm"
    PARAMETERS: ClassVar[Mapping[str, ParamCheck]] = kvm_params.PARAMETERS
    DEFAULTS: ClassVar[Mapping[str, Any]] = kvm_params.DEFAULTS
    CAN_MIGRATE = True

    #: query-migrate retries on an unknown answer, and the pause between them (seconds).
    MIGRATION_STATUS_TRIES: ClassVar[int] = 5
    MIGRATION_STATUS_DELAY: ClassVar[float] = 2.0
    #: Checks that a hot-plugged device appeared/went, and the pause between them.
    HOTPLUG_VERIFY_TRIES: ClassVar[int] = 5
    HOTPLUG_VERIFY_DELAY: ClassVar[float] = 0.5

    def __init__(self, paths: Paths) -> None:
        super().__init__(paths)
        self.dirs = KvmDirs(paths)
        # Like Ganeti, the directories are (re)created whenever the hypervisor is used.
        with contextlib.suppress(OSError):
            self.dirs.ensure()

    # -- helpers -----------------------------------------------------------
    @classmethod
    def full_hvparams(cls, hvparams: Mapping[str, Any] | None) -> dict[str, Any]:
        """Ganeti's defaults overridden by `hvparams`."""
        return {**cls.DEFAULTS, **(hvparams or {})}

    def _pid_alive(self, name: str) -> tuple[int, bool]:
        """(pid from the pid file, whether that pid is qemu running instance `name`)."""
        pid = read_pid_file(self.dirs.pid_file(name))
        proc = qemu_process(pid) if pid > 0 else None
        return pid, proc is not None and proc.name == name

    def instance_pid(self, name: str) -> int | None:
        """The pid of the qemu running instance `name`, or None."""
        pid, alive = self._pid_alive(name)
        return pid if alive else None

    def _require_running(self, name: str, message: str) -> int:
        pid, alive = self._pid_alive(name)
        if not alive:
            raise HypervisorError(message)
        return pid

    @contextlib.contextmanager
    def qmp_session(self, name: str, timeout: float = 10.0) -> Iterator[QmpClient]:
        client = QmpClient(self.dirs.qmp(name), timeout=timeout)
        try:
            client.connect()
        except QmpError as err:
            raise HypervisorError(f"Cannot talk to instance {name}: {err}") from err
        try:
            yield client
        except QmpError as err:
            raise HypervisorError(f"Instance {name}: {err}") from err
        finally:
            client.close()

    def qmp_command(self, name: str, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one QMP command on a running instance."""
        with self.qmp_session(name) as qmp:
            return qmp.execute(command, arguments)

    # -- read side -----------------------------------------------------------
    def verify(self, hvparams: Mapping[str, Any] | None = None) -> str | None:
        hvp = self.full_hvparams(hvparams)
        problems = []
        kvm_path = str(hvp["kvm_path"])
        if not os.path.exists(kvm_path):
            problems.append(f"The KVM binary ('{kvm_path}') does not exist")
        if not os.path.exists(kvm_params.SOCAT_PATH):
            problems.append(f"The socat binary ('{kvm_params.SOCAT_PATH}') does not exist")
        usable, reason = kvm_acceleration()
        if hvp["kvm_flag"] == "enabled" and not usable:
            problems.append(f"kvm_flag is 'enabled' but KVM acceleration is not available: {reason}")
        elif not usable:
            log.info("KVM acceleration is not available (%s); instances run emulated (TCG)", reason)
        if not os.path.isdir(self.dirs.root):
            problems.append(f"The required directory '{self.dirs.root}' does not exist")
        return "; ".join(problems) if problems else None

    def node_info(self, hvparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
        info = linux_node_info()
        kvm_path = str((hvparams or {}).get("kvm_path") or kvm_params.KVM_PATH)
        info["hv_version"] = list(kvm_cmd.qemu_version(kvm_path))
        return info

    def list_instances(self, hvparams: Mapping[str, Any] | None = None) -> list[str]:
        try:
            names = sorted(os.listdir(self.dirs.pid_dir))
        except OSError as err:
            raise HypervisorError(f"Failed to list instances: {err}") from err
        return [name for name in names if not name.startswith(".") and self._pid_alive(name)[1]]

    def instance_info(self, name: str, hvparams: Mapping[str, Any] | None = None) -> InstanceInfo | None:
        pid, alive = self._pid_alive(name)
        if not alive:
            if os.path.exists(self.dirs.shutdown_marker(name)):
                return InstanceInfo(name=name, id="-1", memory=0, vcpus=0, state=InstanceState.SHUTDOWN,
                                    time=0)
            return None
        proc = qemu_process(pid)
        if proc is None:
            return None
        memory, vcpus = proc.memory, proc.vcpus
        try:
            with self.qmp_session(name, timeout=2.0) as qmp:
                vcpus = len(qmp.execute("query-cpus-fast"))
                # Fails without a balloon device: the command line's figure stays.
                memory = int(qmp.execute("query-balloon")["actual"]) // 1048576
        except (HypervisorError, KeyError, TypeError, ValueError):
            pass
        return InstanceInfo(name=name, id=str(pid), memory=memory, vcpus=vcpus,
                            # Whole seconds: the Haskell master decodes "time" as an Int.
                            state=InstanceState.RUNNING, time=int(cpu_seconds(pid)))

    def all_instances_info(self, hvparams: Mapping[str, Any] | None = None) -> list[InstanceInfo]:
        result = []
        for name in self.list_instances():
            try:
                info = self.instance_info(name)
            except HypervisorError:
                continue  # stopped while we were listing
            if info is not None:
                result.append(info)
        return result

    # -- parameters ------------------------------------------------------------
    @classmethod
    def check_parameter_syntax(cls, hvparams: Mapping[str, Any]) -> None:
        super().check_parameter_syntax(hvparams)
        kvm_params.check_syntax_rules(hvparams)

    @classmethod
    def validate_parameters(cls, hvparams: Mapping[str, Any]) -> None:
        super().validate_parameters(hvparams)
        kvm_path = str(hvparams["kvm_path"])
        kvm_params.check_node_rules(hvparams, lambda: kvm_cmd.qemu_output(kvm_path, "--help"),
                                    lambda: kvm_cmd.qemu_output(kvm_path, "-machine", "help"))

    # -- start -------------------------------------------------------------------
    def start_instance(self, instance: Mapping[str, Any], disks: list[AttachedDisk],
                       startup_paused: bool) -> None:
        name = str(instance["name"])
        self._check_down(name)
        hvp = self.full_hvparams(instance.get("hvparams"))
        self.validate_parameters(hvp)
        cmd, nics, kvm_disks = kvm_cmd.generate_runtime(instance, hvp, disks, startup_paused)
        runtime: Runtime = (cmd, nics, hvp, kvm_disks)
        self.dirs.write_runtime(name, dump_runtime(runtime))
        try:
            self._execute(instance, runtime)
        except BaseException:
            self._cleanup_failed_start(name)
            raise

    def _check_down(self, name: str) -> None:
        if self._pid_alive(name)[1]:
            raise HypervisorError(f"Failed to start instance {name}: already running")

    def _cleanup_failed_start(self, name: str) -> None:
        pid, alive = self._pid_alive(name)
        if alive:
            self._kill(pid)
        self.dirs.remove_runtime_files(name)

    def _accel(self, hvp: Mapping[str, Any]) -> str:
        if hvp["kvm_flag"] == "enabled":
            return "kvm"
        if hvp["kvm_flag"] == "disabled":
            return "tcg"
        return "kvm" if kvm_acceleration()[0] else "tcg"

    def _execute(self, instance: Mapping[str, Any], runtime: Runtime,
                 incoming: tuple[str, int] | None = None) -> None:
        """Start qemu for `runtime` with this node's part of the command line."""
        name = str(instance["name"])  # the caller has checked that it is not running
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dirs.shutdown_marker(name))
        stored_cmd, nics, up_hvp, disks = runtime
        # Parameters that do not change what the guest sees come from the current configuration.
        conf_hvp = self.full_hvparams(instance.get("hvparams"))
        hvp = {**conf_hvp, **up_hvp}
        kvm_path = stored_cmd[0]
        cmd = list(stored_cmd)
        os.makedirs(self.dirs.log_dir, exist_ok=True)
        cmd += ["-pidfile", self.dirs.pid_file(name), "-daemonize", "-D", self.dirs.log_file(name),
                "-accel", self._accel(hvp)]
        if conf_hvp["security_model"] == "user":
            cmd += ["-runas", str(conf_hvp["security_domain"])]
        elif conf_hvp["security_model"] == "pool":
            raise HypervisorError("security_model 'pool' (uids from the cluster's uid pool) is not supported"
                                  " by this node daemon; use 'none' or 'user'")
        if conf_hvp["keymap"]:
            cmd += ["-k", str(conf_hvp["keymap"])]
        if conf_hvp["use_chroot"]:
            os.makedirs(self.dirs.chroot_dir(name), mode=SECURE_DIR_MODE, exist_ok=True)
            cmd += ["-chroot", self.dirs.chroot_dir(name)]

        pass_fds: list[int] = []
        keep: list[socket.socket] = []
        taps: dict[int, str] = {}
        tap_fds: list[int] = []
        start_paused = False
        try:
            for sock_path, chardev, use in ((self.dirs.monitor(name), "monitor0", "readline"),
                                            (self.dirs.qmp(name), "qmp0", "control")):
                sock = listen_unix(sock_path)
                keep.append(sock)
                pass_fds.append(sock.fileno())
                cmd += ["-chardev", f"socket,id={chardev},fd={sock.fileno()},server=on,wait=off",
                        "-mon", f"chardev={chardev},mode={use}"]
            if hvp["serial_console"]:
                sock = listen_unix(self.dirs.serial(name))
                keep.append(sock)
                pass_fds.append(sock.fileno())
                cmd += ["-chardev", f"socket,id=serial0,fd={sock.fileno()},server=on,wait=off",
                        "-serial", "chardev:serial0"]
            else:
                cmd += ["-serial", "none"]
            cmd += self._nic_args(hvp, nics, tap_fds, taps)
            pass_fds += tap_fds
            if incoming:
                host, port = incoming
                host = f"[{host}]" if ":" in host else host
                cmd += ["-incoming", f"tcp:{host}:{port}"]
            cmd += kvm_cmd.drive_args(kvm_path, hvp, disks, self._local_links(name, disks))
            start_paused = "-S" not in cmd and not incoming
            if start_paused:
                cmd += ["-S"]
            self._run_qemu(name, cmd, pass_fds)
        finally:
            for sock in keep:
                sock.close()
            for fd in tap_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if taps:
            os.makedirs(self.dirs.nic_dir(name), exist_ok=True)
            for seq, tap in taps.items():
                with open(self.dirs.nic_file(name, seq), "w") as f:
                    f.write(tap)
        self._after_start(name, conf_hvp, hvp, resume=start_paused)

    def _local_links(self, name: str, disks: list[list[Any]]) -> dict[int, str]:
        """This node's $RUN_DIR/instance-disks/<name>:<index> links, where they exist."""
        links = {}
        for index in range(len(disks)):
            link = os.path.join(self.paths.run_dir, "instance-disks", f"{name}:{index}")
            if os.path.lexists(link):
                links[index] = link
        return links

    def _nic_args(self, hvp: Mapping[str, Any], nics: list[dict[str, Any]], tap_fds: list[int],
                  taps: dict[int, str]) -> list[str]:
        """-netdev/-device options; opened tap descriptors are added to `tap_fds`."""
        if not nics:
            return ["-net", "none"]
        args: list[str] = []
        model = kvm_cmd.device_driver("nic", str(hvp["nic_type"]))
        for seq, nic in enumerate(nics):
            hvinfo = nic.get("hvinfo") or {}
            netdev = str(hvinfo.get("id") or f"netdev{seq}")
            bridge = nic_bridge(nic)
            if bridge is not None:
                fd, tap = open_tap(bool(hvp["vnet_hdr"]) and hvp["nic_type"] == "paravirtual")
                tap_fds.append(fd)
                taps[seq] = tap
                attach_to_bridge(tap, bridge)
                backend = f"tap,id={netdev},fd={fd}"
            else:
                backend = f"user,id={netdev}"
            device = kvm_cmd.hvinfo_str(hvinfo) if "id" in hvinfo else model
            device += f",netdev={netdev}"
            if nic.get("mac"):
                device += f",mac={nic['mac']}"
            args += ["-netdev", backend, "-device", device]
        return args

    def _run_qemu(self, name: str, cmd: list[str], pass_fds: list[int]) -> None:
        log.info("Starting instance %s: %s", name, shlex.join(cmd))
        try:
            result = subprocess.run(cmd, pass_fds=pass_fds, stdin=subprocess.DEVNULL, capture_output=True,
                                    text=True, timeout=120, start_new_session=True, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise HypervisorError(f"Failed to start instance {name}: {err}") from err
        if result.stderr.strip():
            with contextlib.suppress(OSError), open(self.dirs.log_file(name), "a") as f:
                f.write(result.stderr)
        if result.returncode != 0:
            detail = result.stderr.strip() or self._log_tail(name)
            raise HypervisorError(f"Failed to start instance {name}: qemu exited with code"
                                  f" {result.returncode}: {detail}")
        if not self._pid_alive(name)[1]:
            raise HypervisorError(f"Failed to start instance {name}: qemu is not running"
                                  f" (see {self.dirs.log_file(name)})")

    def _log_tail(self, name: str, lines: int = 5) -> str:
        """The last lines of qemu's log (with -D, qemu writes its errors there)."""
        try:
            with open(self.dirs.log_file(name), errors="replace") as f:
                return " / ".join(line.strip() for line in f.readlines()[-lines:] if line.strip())
        except OSError:
            return f"(no log in {self.dirs.log_file(name)})"

    def _after_start(self, name: str, conf_hvp: Mapping[str, Any], up_hvp: Mapping[str, Any],
                     resume: bool) -> None:
        """What Ganeti does while the new qemu is paused: VNC password, CPU pinning, then continue."""
        password_file = conf_hvp["vnc_password_file"]
        with self.qmp_session(name) as qmp:
            if password_file:
                try:
                    with open(str(password_file)) as f:
                        password = f.readline().rstrip("\n")
                except OSError as err:
                    raise HypervisorError(f"Failed to open VNC password file {password_file}: {err}") from err
                qmp.execute("change-vnc-password", {"password": password})
            mask = up_hvp.get("cpu_mask") or kvm_params.CPU_PINNING_ALL
            if mask != kvm_params.CPU_PINNING_ALL:
                self._pin_cpus(name, qmp, str(mask))
            if resume:
                qmp.execute("cont")

    def _pin_cpus(self, name: str, qmp: QmpClient, mask: str) -> None:
        try:
            masks = kvm_params.parse_multi_cpu_mask(mask)
        except ValueError as err:
            raise HypervisorError(f"Invalid cpu_mask '{mask}': {err}") from err
        all_cpus = set(range(os.cpu_count() or 1))
        try:
            if len(masks) == 1:
                os.sched_setaffinity(self._pid_alive(name)[0], set(masks[0] or all_cpus))
                return
            threads = {int(cpu["cpu-index"]): int(cpu["thread-id"]) for cpu in qmp.execute("query-cpus-fast")}
            if len(threads) != len(masks):
                raise HypervisorError(f"cpu_mask '{mask}' has {len(masks)} entries but the instance has"
                                      f" {len(threads)} vCPUs")
            for index, cpus in enumerate(masks):
                os.sched_setaffinity(threads[index], set(cpus or all_cpus))
        except OSError as err:
            raise HypervisorError(f"Cannot pin the CPUs of instance {name}: {err}") from err

    # -- stop, reboot, cleanup ------------------------------------------------------
    def _kill(self, pid: int) -> None:
        """SIGTERM, then SIGKILL when qemu does not exit in time (Ganeti's KillProcess)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if wait_gone(pid, KILL_GRACE):
                return
        raise HypervisorError(f"Process {pid} did not exit even after SIGKILL")

    def stop_instance(self, instance: Mapping[str, Any], force: bool = False, retry: bool = False,
                      name: str | None = None, timeout: int | None = None) -> None:
        if name is not None and not force:
            raise HypervisorError("Cannot shutdown cleanly by name only")
        if name is None:
            name = str(instance["name"])
            acpi = bool(self.full_hvparams(instance.get("hvparams"))["acpi"])
        else:
            acpi = False
        pid, alive = self._pid_alive(name)
        if pid > 0 and alive:
            if force or not acpi:
                self._kill(pid)
            else:
                self.qmp_command(name, "system_powerdown")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dirs.shutdown_marker(name))

    def cleanup_instance(self, name: str) -> None:
        pid, alive = self._pid_alive(name)
        if pid > 0 and alive:
            raise HypervisorError("Cannot cleanup a live instance")
        self.dirs.remove_runtime_files(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dirs.shutdown_marker(name))

    def reboot_instance(self, instance: Mapping[str, Any]) -> None:
        name = str(instance["name"])
        self._require_running(name, f"Failed to reboot instance {name}: not running")
        self.qmp_command(name, "system_reset")

    def balloon_instance_memory(self, instance: Mapping[str, Any], memory: int) -> None:
        name = str(instance["name"])
        self._require_running(name, f"Cannot balloon instance {name}: not running")
        self.qmp_command(name, "balloon", {"value": int(memory) * 1048576})

    # -- console -------------------------------------------------------------------
    def instance_console(self, instance: Mapping[str, Any], primary_node: Mapping[str, Any],
                         node_group: Mapping[str, Any], hvparams: Mapping[str, Any],
                         beparams: Mapping[str, Any]) -> dict[str, Any]:
        name = str(instance["name"])
        hvp = self.full_hvparams(hvparams)
        if hvp["serial_console"]:
            ndparams = {**(node_group.get("ndparams") or {}), **(primary_node.get("ndparams") or {})}
            command = [KVM_CONSOLE_WRAPPER, kvm_params.SOCAT_PATH, shlex.quote(name),
                       shlex.quote(self.dirs.monitor(name)), f"STDIO,{SOCAT_CONSOLE_PARAMS}",
                       f"UNIX-CONNECT:{self.dirs.serial(name)}"]
            return {"instance": name, "kind": "ssh", "host": primary_node.get("name"),
                    "port": ndparams.get("ssh_port", DEFAULT_SSH_PORT), "user": SSH_CONSOLE_USER,
                    "command": command}
        port = int(instance.get("network_port") or 0)
        vnc = hvp["vnc_bind_address"]
        if vnc and port > kvm_cmd.VNC_BASE_PORT:
            return {"instance": name, "kind": "vnc", "host": vnc, "port": port,
                    "display": port - kvm_cmd.VNC_BASE_PORT}
        if hvp["spice_bind"]:
            return {"instance": name, "kind": "spice", "host": hvp["spice_bind"], "port": port}
        return {"instance": name, "kind": "msg", "message": f"No serial shell for instance {name}"}

    # -- migration ------------------------------------------------------------------
    def migration_info(self, instance: Mapping[str, Any]) -> str:
        return self.dirs.read_runtime(str(instance["name"]))

    def _migration_caps(self, instance: Mapping[str, Any]) -> list[str]:
        caps = str(self.full_hvparams(instance.get("hvparams"))["migration_caps"] or "")
        return [cap for cap in caps.split(":") if cap]

    def _set_migration_caps(self, instance: Mapping[str, Any], state: bool) -> None:
        caps = self._migration_caps(instance)
        if caps:
            self.qmp_command(str(instance["name"]), "migrate-set-capabilities",
                             {"capabilities": [{"capability": c, "state": state} for c in caps]})

    def accept_instance(self, instance: Mapping[str, Any], info: str, target: str) -> None:
        name = str(instance["name"])
        runtime = load_runtime(info)
        port = int(self.full_hvparams(instance.get("hvparams"))["migration_port"])
        self._check_down(name)
        self.dirs.write_runtime(name, info)
        try:
            self._execute(instance, runtime, incoming=(target, port))
            self._set_migration_caps(instance, True)
        except BaseException:
            self._cleanup_failed_start(name)
            raise

    def finalize_migration_dst(self, instance: Mapping[str, Any], info: str, success: bool) -> None:
        name = str(instance["name"])
        if not success:
            self.stop_instance(instance, force=True)
            self.dirs.remove_runtime_files(name)
            return
        self._require_running(name, f"Instance {name} is not running on the target node")
        self.dirs.write_runtime(name, info)
        with self.qmp_session(name) as qmp:
            deadline = time.monotonic() + 30
            status = qmp.execute("query-status")["status"]
            while status == "inmigrate" and time.monotonic() < deadline:
                time.sleep(0.1)
                status = qmp.execute("query-status")["status"]
            if status == "inmigrate":
                raise HypervisorError(f"Instance {name} is still receiving its migration")
            if status != "running":
                qmp.execute("cont")
        self._set_migration_caps(instance, False)

    def migrate_instance(self, cluster_name: str, instance: Mapping[str, Any], target: str,
                         live: bool) -> None:
        name = str(instance["name"])
        hvp = self.full_hvparams(instance.get("hvparams"))
        self._require_running(name, "Instance not running, cannot migrate")
        host = f"[{target}]" if ":" in target else target
        with self.qmp_session(name) as qmp:
            if not live:
                qmp.execute("stop")
            qmp.execute("migrate-set-parameters", {
                "max-bandwidth": int(hvp["migration_bandwidth"]) * 1024 * 1024,
                "downtime-limit": int(hvp["migration_downtime"])})
            caps = self._migration_caps(instance)
            if caps:
                qmp.execute("migrate-set-capabilities",
                            {"capabilities": [{"capability": c, "state": True} for c in caps]})
            qmp.execute("migrate", {"uri": f"tcp:{host}:{int(hvp['migration_port'])}"})

    def migration_status(self, instance: Mapping[str, Any]) -> dict[str, Any]:
        name = str(instance["name"])
        postcopy = any("postcopy-ram" in cap for cap in self._migration_caps(instance))
        for attempt in range(self.MIGRATION_STATUS_TRIES):
            with self.qmp_session(name) as qmp:
                answer = qmp.execute("query-migrate")
                status = answer.get("status") if isinstance(answer, dict) else None
                if status in MIGRATION_IN_PROGRESS:
                    status = "active"
                if status in MIGRATION_STATUSES:
                    result: dict[str, Any] = {"status": status}
                    ram = answer.get("ram")
                    if isinstance(ram, dict):
                        result["transferred_ram"] = ram.get("transferred")
                        result["total_ram"] = ram.get("total")
                        if (postcopy and status == "active"
                                and int(ram.get("dirty-sync-count", 0)) >= POSTCOPY_SYNC_COUNT_THRESHOLD):
                            qmp.execute("migrate-start-postcopy")
                            result["postcopy_status"] = "postcopy-active"
                    return result
            log.warning("KVM: unknown migration status of %s: %s", name, answer)
            if attempt + 1 < self.MIGRATION_STATUS_TRIES:
                time.sleep(self.MIGRATION_STATUS_DELAY)
        return {"status": "failed"}

    def finalize_migration_source(self, instance: Mapping[str, Any], success: bool, live: bool) -> None:
        name = str(instance["name"])
        pid, alive = self._pid_alive(name)
        if success:
            if alive:
                self._kill(pid)
            self.dirs.remove_runtime_files(name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dirs.shutdown_marker(name))
        elif alive:
            self.qmp_command(name, "cont")
            self._set_migration_caps(instance, False)
        else:
            self.cleanup_instance(name)

    # -- hotplug --------------------------------------------------------------------
    def hotplug_supported(self, instance: Mapping[str, Any]) -> None:
        name = str(instance["name"])
        if not self._pid_alive(name)[1]:
            raise HotplugError("Instance is probably down")
        try:
            with self.qmp_session(name) as qmp:
                version = qmp.version
        except HypervisorError as err:
            raise HotplugError(f"Instance is probably down ({err})") from err
        if version[:2] < (1, 7):
            raise HotplugError("Hotplug not supported for qemu versions < 1.7")

    def hotplug_device(self, instance: Mapping[str, Any], action: str, dev_type: str,
                       device: Mapping[str, Any], extra: Any, seq: int) -> Any:
        return kvm_hotplug.hotplug(self, instance, action, dev_type, device, extra, seq)
