"""The `instances` scenario: instance start/stop and file-disk create/remove, ours beside the real noded.

Single calls through the legacy door (tools/bench/legacy_call.py, a new TLS
connection per call, as a master makes them), each repeated `repeat` times
after one unmeasured warm-up cycle, ours and the real ganeti-noded
alternating (ABBA). What each figure measures, from the start of the call:

- `instance_start`, fake hypervisor, one 1 MiB file disk: until the call
  returned and the hypervisor's state file `$RUN_DIR/fake-hypervisor/<name>`
  is present; `instance_shutdown` (timeout 120 s, the master's default):
  until it returned and that file is gone. Both daemons.
- `instance_start`, kvm, one 1 MiB file disk holding the tiny OS's boot
  sector (tools/os/tiny/bootsector.bin), 32 MiB of memory, no NIC: until the
  call returned, and until a qemu-system-x86_64 whose pid is in
  `$RUN_DIR/kvm-hypervisor/pid/<name>` is alive; `instance_shutdown` with a
  short timeout (the guest has no ACPI, so the soft stop waits out the
  timeout and qemu is then killed): until it returned, and until that qemu
  is gone. Ours only: the real noded has no kvm on these machines. Skipped,
  with the reason printed, while kvm is not in noded.hypervisor.HYPERVISORS
  or qemu is not installed.
- `blockdev_create` of a 10 GiB sparse file disk: until the call returned
  (the file is then checked: present, 10 GiB long, sparse);
  `blockdev_remove` of it: until it returned (the file is then checked gone).
  Both daemons.

Every qemu process seen is stopped by its pid before the scenario ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.bench.legacy_call import Answer, LegacyClient
from tools.bench.procs import BenchError
from tools.bench.servers import REPO, Certs, Server

QEMU = "qemu-system-x86_64"
TINY_BOOT_SECTOR = REPO / "tools" / "os" / "tiny" / "bootsector.bin"
MIB = 1024 * 1024
BIG_DISK_MIB = 10 * 1024
SMALL_DISK_MIB = 1
FAKE_NAME = "bench-fake.example.com"
KVM_NAME = "bench-kvm.example.com"
#: The master's default shutdown timeout (gnt-instance shutdown --timeout), seconds.
FAKE_SHUTDOWN_TIMEOUT = 120
REASON_SOURCE = "gnt:client:bench"
#: How long a state change may lag behind the call before it counts as a failure, seconds.
SETTLE_TIMEOUT = 30.0
POLL_INTERVAL = 0.001

# Row keys, in the order of the table.
FAKE_START, FAKE_STOP = "fake-start", "fake-shutdown"
KVM_START_CALL, KVM_START_ALIVE = "kvm-start-call", "kvm-start-alive"
KVM_STOP_CALL, KVM_STOP_GONE = "kvm-shutdown-call", "kvm-shutdown-gone"
DISK_CREATE, DISK_REMOVE = "disk-create", "disk-remove"

Outcome = dict[str, float | str]  # row key -> seconds, or why this measurement failed


@dataclass
class Series:
    """The repetitions of one measurement on one daemon."""

    seconds: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def add(self, value: float | str) -> None:
        if isinstance(value, str):
            self.errors += 1
            self.first_error = self.first_error or value
        else:
            self.seconds.append(value)

    def ms(self, which: Callable[[list[float]], float]) -> float | None:
        return 1000.0 * which(self.seconds) if self.seconds else None

    @property
    def median_ms(self) -> float | None:
        return self.ms(statistics.median)

    @property
    def min_ms(self) -> float | None:
        return self.ms(min)

    @property
    def max_ms(self) -> float | None:
        return self.ms(max)

    def summary(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)
        return {"runs_ms": [round(1000.0 * s, 3) for s in self.seconds], "median_ms": r(self.median_ms),
                "min_ms": r(self.min_ms), "max_ms": r(self.max_ms), "errors": self.errors,
                "first_error": self.first_error}


@dataclass
class Row:
    """One line of the table: a call, what it worked on, what the time runs until."""

    key: str
    call: str
    subject: str
    until: str
    ours: Series = field(default_factory=Series)
    real: Series | None = field(default_factory=Series)  # None: not measured on the real noded
    real_note: str = ""

    def summary(self) -> dict[str, Any]:
        return {"key": self.key, "call": self.call, "subject": self.subject, "until": self.until,
                "ours": self.ours.summary(), "real": None if self.real is None else self.real.summary(),
                "real_note": self.real_note}


@dataclass
class Result:
    rows: list[Row]
    notes: list[str]  # settings and skipped rows, for the report

    @property
    def errors(self) -> int:
        return sum(r.ours.errors + (r.real.errors if r.real else 0) for r in self.rows)


@dataclass
class Node:
    """A daemon under test: its root (Ganeti's virtual-cluster layout) and a client for its legacy door."""

    label: str
    root: Path
    client: LegacyClient

    @property
    def run_dir(self) -> Path:
        return self.root / "var" / "run" / "ganeti"

    @property
    def storage_dir(self) -> Path:
        return self.root / "srv" / "ganeti" / "file-storage"

    @property
    def disk_dir(self) -> Path:
        return self.storage_dir / "bench"

    def allow_file_storage(self) -> None:
        """List the file storage dir in etc/ganeti/file-storage-paths (both daemons refuse others)."""
        paths_file = self.root / "etc" / "ganeti" / "file-storage-paths"
        paths_file.parent.mkdir(parents=True, exist_ok=True)
        paths_file.write_text(f"{self.storage_dir}\n")
        self.disk_dir.mkdir(parents=True, exist_ok=True)

    def call(self, procedure: str, *args: Any) -> Answer:
        return self.client.call(procedure, list(args))


def make_node(server: Server, certs: Certs) -> Node:
    if server.root is None:
        raise BenchError(f"{server.name}: no node root known")
    return Node(server.name, server.root, LegacyClient(server.address, server.port, certs.server_pem,
                                                       certs.client_pem))


# -- the dicts a master sends (already filled, as its encoders send them) ------------------------

def file_disk(path: Path, size_mib: int, uuid: str) -> dict[str, Any]:
    return {"dev_type": "file", "logical_id": ["loop", str(path)], "children": [], "iv_name": "disk/0",
            "size": size_mib, "mode": "rw", "params": {}, "uuid": uuid, "nodes": ["node1-uuid"],
            "serial_no": 1}


def instance(name: str, hypervisor: str, hvparams: dict[str, Any], beparams: dict[str, Any],
             disk: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "uuid": f"bench-{hypervisor}-0000-4000-8000-000000000001",
            "primary_node": "node1-uuid", "secondary_nodes": [], "os": "tiny+default",
            "hypervisor": hypervisor, "hvparams": hvparams, "beparams": beparams, "osparams": {},
            "admin_state": "up", "admin_state_source": "admin", "nics": [], "disks": [disk["uuid"]],
            "disks_info": [disk], "disk_template": "file", "disks_active": True, "network_port": 0,
            "serial_no": 1}


def reason(operation: str) -> list[list[Any]]:
    return [[REASON_SOURCE, f"bench {operation}", time.time_ns()]]


# -- waiting for the node's state --------------------------------------------------------------

def wait_until(condition: Callable[[], bool], started: float,
               timeout: float = SETTLE_TIMEOUT) -> float | None:
    """Seconds from `started` (perf_counter) until `condition()` holds; None if it did not in `timeout`."""
    while True:
        if condition():
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            return None
        time.sleep(POLL_INTERVAL)


def qemu_alive(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) qemu-system-x86_64."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return QEMU.encode() in f.read()
    except (OSError, IndexError):
        return False


def qemu_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` when it names a live qemu."""
    try:
        pid = int(pid_file.read_text().strip() or "0")
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and qemu_alive(pid) else None


def kvm_skip_reason() -> str | None:
    """Why the kvm rows cannot run here, or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (Debian package qemu-system-x86)"
    try:
        from noded.hypervisor import HYPERVISORS
    except Exception as err:  # kvm is being written: a broken import must not stop the benchmark
        return f"noded.hypervisor does not import ({type(err).__name__}: {err})"
    if "kvm" not in HYPERVISORS:
        return "kvm is not registered in noded.hypervisor.HYPERVISORS yet"
    if not TINY_BOOT_SECTOR.exists():
        return f"{TINY_BOOT_SECTOR} not found"
    return None


def kvm_acceleration() -> str:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return "TCG emulation (no usable /dev/kvm)"
    os.close(fd)
    return "KVM"


# -- the measured cycles -----------------------------------------------------------------------

class InstanceBench:
    """Runs the scenario on our daemon and the real one; every qemu it sees is stopped by pid."""

    def __init__(self, ours: Node, real: Node, repeat: int, kvm_timeout: int,
                 log: Callable[[str], None]) -> None:
        self.ours, self.real = ours, real
        self.repeat = repeat
        self.kvm_timeout = kvm_timeout
        self.log = log
        self.qemu_pids: set[int] = set()
        self.serial = 0

    def _unique(self, stem: str) -> str:
        self.serial += 1
        return f"{stem}-{self.serial}"

    def _small_disk(self, node: Node, stem: str, boot_sector: bool) -> dict[str, Any]:
        """A 1 MiB file disk made through the door (not measured), with the tiny OS's boot sector if asked."""
        name = self._unique(stem)
        disk = file_disk(node.disk_dir / f"{name}.file.disk0", SMALL_DISK_MIB,
                         f"5e1e1e1e-0000-4000-8000-{self.serial:012d}")
        answer = node.call("blockdev_create", disk, SMALL_DISK_MIB, stem, True, f"bench {stem}", False)
        if not answer.ok:
            raise BenchError(f"instances: {node.label}: cannot create the instance disk: {answer.error}")
        if boot_sector:
            with open(disk["logical_id"][1], "r+b") as f:
                f.write(TINY_BOOT_SECTOR.read_bytes())
        return disk

    def disk_cycle(self, node: Node) -> Outcome:
        """blockdev_create then blockdev_remove of a 10 GiB sparse file."""
        out: Outcome = {}
        name = self._unique("big")
        path = node.disk_dir / f"{name}.file.disk0"
        disk = file_disk(path, BIG_DISK_MIB, f"b16d15c0-0000-4000-8000-{self.serial:012d}")
        created = node.call("blockdev_create", disk, BIG_DISK_MIB, "bench-disk", True, "bench disk", False)
        if not created.ok:
            out[DISK_CREATE] = out[DISK_REMOVE] = f"blockdev_create failed: {created.error}"
            return out
        try:
            st = path.stat()
        except OSError as err:
            out[DISK_CREATE] = f"blockdev_create succeeded but {path} is missing: {err}"
        else:
            if st.st_size != BIG_DISK_MIB * MIB:
                out[DISK_CREATE] = f"{path} is {st.st_size} bytes long, not {BIG_DISK_MIB * MIB}"
            elif st.st_blocks * 512 > 64 * MIB:
                out[DISK_CREATE] = f"{path} is not sparse: {st.st_blocks * 512} bytes allocated"
            else:
                out[DISK_CREATE] = created.seconds
        removed = node.call("blockdev_remove", disk)
        if not removed.ok:
            out[DISK_REMOVE] = f"blockdev_remove failed: {removed.error}"
        elif path.exists():
            out[DISK_REMOVE] = f"blockdev_remove succeeded but {path} is still there"
        else:
            out[DISK_REMOVE] = removed.seconds
        if path.exists():
            path.unlink()  # leave nothing for the next round
        return out

    def fake_cycle(self, node: Node, inst: dict[str, Any]) -> Outcome:
        """instance_start then instance_shutdown of a fake instance."""
        out: Outcome = {}
        state = node.run_dir / "fake-hypervisor" / FAKE_NAME
        started = node.call("instance_start", inst, False, reason("start"))
        if not started.ok:
            out[FAKE_START] = f"instance_start failed: {started.error}"
        else:
            t = wait_until(state.exists, started.started)
            out[FAKE_START] = t if t is not None else f"instance_start succeeded but {state} did not appear"
        stopped = node.call("instance_shutdown", inst, FAKE_SHUTDOWN_TIMEOUT, reason("shutdown"))
        if not stopped.ok:
            out[FAKE_STOP] = f"instance_shutdown failed: {stopped.error}"
        elif not started.ok:
            out[FAKE_STOP] = "not measured: instance_start failed"
        else:
            t = wait_until(lambda: not state.exists(), stopped.started)
            out[FAKE_STOP] = t if t is not None else f"instance_shutdown succeeded but {state} is still there"
        return out

    def kvm_cycle(self, node: Node, inst: dict[str, Any]) -> Outcome:
        """instance_start then instance_shutdown (short timeout) of a kvm instance running the tiny OS."""
        out: Outcome = {}
        pid_file = node.run_dir / "kvm-hypervisor" / "pid" / KVM_NAME
        started = node.call("instance_start", inst, False, reason("start"))
        pid: int | None = None
        if not started.ok:
            out[KVM_START_CALL] = out[KVM_START_ALIVE] = f"instance_start failed: {started.error}"
        else:
            out[KVM_START_CALL] = started.seconds
            t = wait_until(lambda: qemu_pid(pid_file) is not None, started.started)
            pid = qemu_pid(pid_file)
            if pid is not None:
                self.qemu_pids.add(pid)
            out[KVM_START_ALIVE] = t if t is not None else \
                f"instance_start succeeded but no live {QEMU} is named in {pid_file}"
        stopped = node.call("instance_shutdown", inst, self.kvm_timeout, reason("shutdown"))
        if not stopped.ok:
            out[KVM_STOP_CALL] = out[KVM_STOP_GONE] = f"instance_shutdown failed: {stopped.error}"
        elif pid is None:
            out[KVM_STOP_CALL] = out[KVM_STOP_GONE] = "not measured: no qemu was running"
        else:
            out[KVM_STOP_CALL] = stopped.seconds
            running = pid
            t = wait_until(lambda: not qemu_alive(running), stopped.started)
            out[KVM_STOP_GONE] = t if t is not None else \
                f"instance_shutdown succeeded but qemu {pid} still runs"
        self.stop_qemus()
        return out

    def stop_qemus(self) -> None:
        """SIGKILL, by pid, every qemu this run saw that still runs (none, when shutdown worked)."""
        for pid in sorted(self.qemu_pids):
            if qemu_alive(pid):
                self.log(f"  instances: stopping leftover qemu {pid}")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.qemu_pids = {p for p in self.qemu_pids if qemu_alive(p)}

    # -- the whole scenario ----------------------------------------------------------------------

    def run(self) -> Result:
        kvm_skip = kvm_skip_reason()
        rows = self._rows(kvm_skip)
        by_key = {r.key: r for r in rows}
        notes = [f"{self.repeat} measured runs per row after one unmeasured warm-up, ours and the real "
                 f"noded alternating; times from the start of the call (new TLS connection, as a master "
                 f"calls) until what the row says; load average (1 min) at the start: "
                 f"{os.getloadavg()[0]:.2f}."]
        try:
            for node in (self.ours, self.real):
                node.allow_file_storage()
            fake = {n.label: instance(FAKE_NAME, "fake", {"migration_mode": "live"},
                                      {"maxmem": 128, "minmem": 128, "vcpus": 1},
                                      self._small_disk(n, "fake", False))
                    for n in (self.ours, self.real)}
            for i in range(-1, self.repeat):  # -1: warm-up
                order = [self.ours, self.real] if i % 2 == 0 else [self.real, self.ours]
                for node in order:
                    outcome = {**self.disk_cycle(node), **self.fake_cycle(node, fake[node.label])}
                    self._record(by_key, node, outcome, i)
            if kvm_skip is not None:
                self.log(f"instances: kvm rows skipped: {kvm_skip}")
                notes.append(f"kvm rows skipped: {kvm_skip}.")
            else:
                qemu = shutil.which(QEMU) or QEMU
                notes.append(f"kvm: {qemu}, {kvm_acceleration()}; instance_shutdown timeout "
                             f"{self.kvm_timeout} s: the tiny guest has no ACPI, so the soft stop "
                             f"waits out the timeout and qemu is then killed.")
                kvm = instance(KVM_NAME, "kvm", {"kvm_path": qemu, "kernel_path": ""},
                               {"maxmem": 32, "minmem": 32, "vcpus": 1},
                               self._small_disk(self.ours, "kvm", True))
                for i in range(-1, self.repeat):
                    self._record(by_key, self.ours, self.kvm_cycle(self.ours, kvm), i)
        finally:
            self.stop_qemus()
        return Result(rows, notes)

    def _record(self, by_key: dict[str, Row], node: Node, outcome: Outcome, i: int) -> None:
        shown = ", ".join(f"{k} {v * 1000:.1f} ms" if isinstance(v, float) else f"{k} FAILED: {v}"
                          for k, v in outcome.items())
        self.log(f"  instances {'warm-up' if i < 0 else f'run {i + 1}'} {node.label}: {shown}")
        if i < 0:
            return
        for key, value in outcome.items():
            row = by_key[key]
            series = row.ours if node is self.ours else row.real
            if series is not None:
                series.add(value)

    def _rows(self, kvm_skip: str | None) -> list[Row]:
        fake_disk = f"fake, one {SMALL_DISK_MIB} MiB file disk"
        kvm = "kvm, tiny OS on a 1 MiB file disk, 32 MiB RAM"
        no_kvm = "no kvm on this machine's real noded"
        rows = [
            Row(FAKE_START, "instance_start", fake_disk, "returned, state file present"),
            Row(FAKE_STOP, "instance_shutdown", f"fake (timeout {FAKE_SHUTDOWN_TIMEOUT} s)",
                "returned, state file gone"),
        ]
        if kvm_skip is None:
            stop = f"kvm (timeout {self.kvm_timeout} s: no ACPI in the guest)"
            rows += [
                Row(KVM_START_CALL, "instance_start", kvm, "returned", real=None, real_note=no_kvm),
                Row(KVM_START_ALIVE, "instance_start", kvm, "qemu alive (pid file in our run dir)",
                    real=None, real_note=no_kvm),
                Row(KVM_STOP_CALL, "instance_shutdown", stop, "returned", real=None, real_note=no_kvm),
                Row(KVM_STOP_GONE, "instance_shutdown", stop, "qemu gone", real=None, real_note=no_kvm),
            ]
        rows += [
            Row(DISK_CREATE, "blockdev_create", f"file, {BIG_DISK_MIB // 1024} GiB sparse",
                "returned (file then checked: size, sparse)"),
            Row(DISK_REMOVE, "blockdev_remove", f"file, {BIG_DISK_MIB // 1024} GiB sparse",
                "returned (file then checked gone)"),
        ]
        return rows
