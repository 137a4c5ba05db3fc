"""An instance's life cycle as a real master drives it, replayed by the real Ganeti 3.0 RPC client.

The calls are those ../shared/reference/rpc-trace.md recorded on a real
cluster, in that order, for

- add with OS install and start: hypervisor_validate_params, os_validate,
  bridges_exist, node_info, hooks_runner (pre), file_storage_dir_create,
  blockdev_create, blockdev_getmirrorstatus x2, os_diagnose, instance_os_add,
  instance_metadata_modify, instance_start, hooks_runner (post);
- reboot: bridges_exist, hooks pre, instance_info, instance_reboot, hooks post;
- shutdown: hooks pre, instance_shutdown, blockdev_shutdown, hooks post;
- startup: bridges_exist, instance_info, node_info, hooks pre,
  blockdev_assemble x2, instance_start, hooks post;
- remove: hooks pre, instance_shutdown, blockdev_remove,
  file_storage_dir_remove, hooks post;

made by Ganeti's own client code (tests/interop_instance_client.py: the
master's encoders, with instance dicts filled in the way RpcRunner._InstDict
fills them from a cluster's defaults) with one 16 MiB `file` disk, in the
order add (started), reboot (hard), shutdown, startup, remove; kvm adds a
soft reboot after add. A hook script installed for every instance hook path
and phase prints what it was run for: each hooks_runner must have run it.

With the `fake` hypervisor and Debian's `noop` OS the same sequence goes to
our daemon and to the real ganeti-noded, and their answers are compared where
they are deterministic (node_info by shape, os_diagnose by its noop entry);
instance_metadata_modify goes to ours only (the real one would start a
ganeti-metad on the machine). With the `kvm` hypervisor (the cluster's
parameters are Ganeti's HVC_DEFAULTS["kvm"], kernel_path emptied as an
administrator does to boot from the disk), our tools/os/tiny OS and 32 MiB of
memory, the sequence goes to ours only: a real qemu runs after each start and
is gone after each stop (short timeouts: the tiny guest has no ACPI), and the
serial console shows tiny's greeting after a soft reboot.

After each step the files are checked: the disk file exists from create to
remove, the fake hypervisor's state file exactly while the instance runs.

bridges_exist: the NIC's link is the cluster's default bridge `gnt-br0`; this
machine may not have it (the tests never create interfaces outside private
namespaces), so its answer is checked against /sys/class/net, the same on
both daemons, and the replay goes on as if it had succeeded.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import interop_support
import pytest
from interop_support import (
    CANDIDATE,
    Call,
    Pair,
    Result,
    Target,
    call,
    comparable,
    describe,
    node_path,
    run_client,
    shape,
    start_our_noded,
    start_real_noded,
    with_cert,
)
from real_ganeti import requires_real_ganeti, run_real_ganeti

pytestmark = requires_real_ganeti

OURS_ADDRESS = "127.0.0.27"
REAL_ADDRESS = "127.0.0.28"
CLIENT = str(Path(__file__).resolve().parent / "interop_instance_client.py")
REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tools" / "os" / "tiny"
QEMU = "qemu-system-x86_64"

CLUSTER = "cluster.example.com"
INSTANCE = "inst1.example.com"
NODE_UUID = "2523accb-2e74-49d6-84bd-85f1f8adc7aa"
INSTANCE_UUID = "7068278d-eff0-4c73-abe3-ed8bfa80ab14"
DISK_UUID = "87beb71d-9a6c-4c98-9c54-6dd6ccffcef8"
NIC_UUID = "597f9ada-772f-4c0e-a78a-84e429cf60ec"
FILE_STORAGE = "/srv/ganeti/file-storage"
INSTANCE_DIR = f"{FILE_STORAGE}/{INSTANCE}"
#: The master names a file disk <file storage dir>/<instance>/<random uuid>.file.disk<index>.
DISK_PATH = f"{INSTANCE_DIR}/2cd7ea89-0c51-43c4-a8a8-2154637f9761.file.disk0"
DISK_MIB = 16
MIB = 1024 * 1024
BRIDGE = "gnt-br0"
#: The port the master allocates for a kvm instance (VNC; unused without vnc_bind_address).
NETWORK_PORT = 11000
#: Shutdown timeout of the trace (gnt-instance's default) and the short one the tiny guest gets.
TRACE_SHUTDOWN_TIMEOUT = 120
KVM_SHUTDOWN_TIMEOUT = 1
TINY_GREETING = f"ganeti-ng tiny OS booted: {INSTANCE}"
HOOK = "00-instance"
HOOK_SUCCESS = 2  # constants.HKR_SUCCESS

#: How the answers of ours and the real noded are compared.
SAME, NODE_INFO, NOOP_ENTRY, OURS_ONLY = "same", "node_info shape", "noop entry", "ours only"


# -- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Our daemon and the real one (file storage allowed, hooks installed), called by the instance client."""
    base = tmp_path_factory.mktemp("interop-instance")
    for d in ("ours", "real", "ours-master", "real-master"):
        (base / d).mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(interop_support, "CLIENT", CLIENT)
        real = start_real_noded(base / "real", base / "real-master", REAL_ADDRESS)
        try:
            ours = start_our_noded(base / "ours", base / "ours-master", OURS_ADDRESS)
        except Exception:
            real.stop()
            raise
        p = Pair(ours=ours, real=real)
        try:
            for t in p.targets:
                t.path("/etc/ganeti/file-storage-paths").write_text(f"{t.root}{FILE_STORAGE}\n")
                install_hooks(t)
            p.ensure_mode(CANDIDATE)
            yield p
        finally:
            ours.stop()
            real.stop()


@pytest.fixture(scope="module")
def defaults() -> dict[str, Any]:
    """Ganeti's parameter defaults, which `gnt-cluster init` copies into the cluster."""
    out = run_real_ganeti("import json\nfrom ganeti import constants\n"
                          "print(json.dumps({'hv': constants.HVC_DEFAULTS, 'be': constants.BEC_DEFAULTS,"
                          " 'nic': constants.NICC_DEFAULTS}))")
    values: dict[str, Any] = json.loads(out)
    return values


@pytest.fixture
def clean(pair: Pair) -> Iterator[None]:
    """No instance files before and after the test; a qemu left running is killed by its pid."""
    def wipe() -> None:
        for t in pair.targets:
            pid = kvm_pid(t)
            if pid is not None and qemu_runs(pid):
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(t.path(INSTANCE_DIR), ignore_errors=True)
            for leftover in (fake_state_file(t), t.path(f"/var/run/ganeti/instance-disks/{INSTANCE}:0")):
                leftover.unlink(missing_ok=True)

    wipe()
    yield
    wipe()


# -- what the master sends ----------------------------------------------------------

def install_hooks(t: Target) -> None:
    """A hook for every instance path and phase that prints what it was run for."""
    for hpath in ("instance-add", "instance-reboot", "instance-stop", "instance-start", "instance-remove"):
        for phase in ("pre", "post"):
            d = t.path(f"/etc/ganeti/hooks/{hpath}-{phase}.d")
            d.mkdir(parents=True, exist_ok=True)
            script = d / HOOK
            script.write_text('#!/bin/sh\n'
                              'echo "$GANETI_HOOKS_PATH $GANETI_HOOKS_PHASE $GANETI_INSTANCE_NAME"\n')
            script.chmod(0o755)


@dataclass(frozen=True)
class Cluster:
    """The parts of a cluster's configuration the instance encoders fill instances from."""

    hypervisor: str
    os_name: str
    defaults: dict[str, Any]
    #: The instance's own parameters (`gnt-instance add -H/-B`).
    hvparams: dict[str, Any]
    beparams: dict[str, Any]

    @property
    def cluster_hvparams(self) -> dict[str, Any]:
        hvp = dict(self.defaults["hv"][self.hypervisor])
        if self.hypervisor == "kvm":
            hvp["kernel_path"] = ""  # boot the instance's disk (gnt-cluster modify -H kvm:kernel_path=)
        return hvp

    @property
    def full_hvparams(self) -> dict[str, Any]:
        return {**self.cluster_hvparams, **self.hvparams}

    def disk(self) -> dict[str, Any]:
        """The instance's disk as the configuration holds it."""
        return {"logical_id": ["loop", node_path(DISK_PATH)], "dev_type": "file", "children": [],
                "nodes": [NODE_UUID], "iv_name": "disk/0", "size": DISK_MIB, "mode": "rw", "params": {},
                "uuid": DISK_UUID, "serial_no": 1, "ctime": 1795313918.40, "mtime": 1795313918.40}

    def config(self, admin_state: str = "up") -> dict[str, Any]:
        """The instance as the configuration holds it (Instance.ToDict())."""
        inst = {"name": INSTANCE, "primary_node": NODE_UUID, "os": self.os_name,
                "hypervisor": self.hypervisor,
                "hvparams": dict(self.hvparams), "beparams": dict(self.beparams), "osparams": {},
                "osparams_private": {}, "admin_state": admin_state, "admin_state_source": "admin",
                "nics": [{"mac": "aa:00:00:c7:54:8c", "nicparams": {}, "uuid": NIC_UUID}],
                "disks": [DISK_UUID], "disks_active": admin_state == "up", "ctime": 1795313918.37,
                "mtime": 1795313918.85, "uuid": INSTANCE_UUID, "serial_no": 3, "tags": []}
        if self.hypervisor == "kvm":
            inst["network_port"] = NETWORK_PORT
        return inst

    def instance(self, admin_state: str = "up") -> dict[str, Any]:
        """An instance argument for the encoders (see interop_instance_client.py)."""
        return {"config": self.config(admin_state), "disks": [self.disk()],
                "cluster": {"hvparams": {self.hypervisor: self.cluster_hvparams},
                            "beparams": {"default": self.defaults["be"]},
                            "nicparams": {"default": {**self.defaults["nic"], "link": BRIDGE}},
                            "osparams": {}, "os_hvp": {}}}

    def metadata(self) -> dict[str, Any]:
        """What UpdateMetadata sends: the configuration's instance plus the OS parameters given to add."""
        return {**self.config(), "osparams_private": {}, "osparams_secret": {}}

    def hooks_env(self, hpath: str, phase: str, opcode: str) -> dict[str, str]:
        return {"GANETI_HOOKS_VERSION": "2", "GANETI_HOOKS_PATH": hpath, "GANETI_HOOKS_PHASE": phase,
                "GANETI_OP_CODE": opcode, "GANETI_OBJECT_TYPE": "INSTANCE", "GANETI_CLUSTER": CLUSTER,
                "GANETI_MASTER": "node1", "GANETI_DATA_DIR": "/var/lib/ganeti",
                "GANETI_INSTANCE_NAME": INSTANCE, "GANETI_INSTANCE_PRIMARY": "node1",
                "GANETI_INSTANCE_OS_TYPE": self.os_name, "GANETI_INSTANCE_HYPERVISOR": self.hypervisor,
                "GANETI_INSTANCE_DISK_TEMPLATE": "file",
                "GANETI_INSTANCE_MEMORY": str(self.beparams["maxmem"])}


@dataclass(frozen=True)
class Sent:
    """One call of a sequence and how to compare the two daemons' answers."""

    call: Call
    compare: str = SAME
    #: Whether the master expects success (bridges_exist depends on the machine).
    succeeds: bool = True


def reason(command: str, opcode: str) -> list[list[Any]]:
    """The reason trail gnt-instance and the job queue give an opcode."""
    now = time.time_ns()
    return [["gnt:client:gnt-instance", command, now], [f"gnt:opcode:{opcode}", "job=1;index=0", now + 3000]]


def hooks(c: Cluster, hpath: str, phase: str, opcode: str) -> Sent:
    return Sent(call("hooks_runner", hpath, phase, c.hooks_env(hpath, phase, opcode)))


def bridges() -> Sent:
    return Sent(call("bridges_exist", [BRIDGE]), succeeds=bridge_exists(BRIDGE))


def add_calls(c: Cluster) -> list[Sent]:
    hv = [[c.hypervisor, c.full_hvparams]]
    return [
        Sent(call("hypervisor_validate_params", c.hypervisor, c.full_hvparams)),
        Sent(call("os_validate", True, c.os_name, ["parameters"], {}, False)),
        bridges(),
        Sent(call("node_info", None, hv), compare=NODE_INFO),
        hooks(c, "instance-add", "pre", "OP_INSTANCE_CREATE"),
        Sent(call("file_storage_dir_create", node_path(INSTANCE_DIR))),
        Sent(call("blockdev_create", c.disk(), DISK_MIB, INSTANCE, True, f"originstname+{INSTANCE}", False)),
        # WaitForSync asks only for the mirrored (DRBD) disks: none
        Sent(call("blockdev_getmirrorstatus", [])),
        Sent(call("blockdev_getmirrorstatus", [])),
        Sent(call("os_diagnose"), compare=NOOP_ENTRY),
        Sent(call("instance_os_add", [c.instance(), None], False, 0)),
        Sent(call("instance_metadata_modify", c.metadata()), compare=OURS_ONLY),
        Sent(call("instance_start", [c.instance(), None, None], False, reason("add", "instance_create"))),
        hooks(c, "instance-add", "post", "OP_INSTANCE_CREATE"),
    ]


def reboot_calls(c: Cluster, reboot_type: str, timeout: int) -> list[Sent]:
    return [
        bridges(),
        hooks(c, "instance-reboot", "pre", "OP_INSTANCE_REBOOT"),
        Sent(call("instance_info", INSTANCE, c.hypervisor, c.full_hvparams)),
        Sent(call("instance_reboot", c.instance(), reboot_type, timeout,
                  reason("reboot", "instance_reboot"))),
        hooks(c, "instance-reboot", "post", "OP_INSTANCE_REBOOT"),
    ]


def shutdown_calls(c: Cluster, timeout: int) -> list[Sent]:
    return [
        hooks(c, "instance-stop", "pre", "OP_INSTANCE_SHUTDOWN"),
        Sent(call("instance_shutdown", c.instance("down"), timeout, reason("shutdown", "instance_shutdown"))),
        Sent(call("blockdev_shutdown", c.disk())),
        hooks(c, "instance-stop", "post", "OP_INSTANCE_SHUTDOWN"),
    ]


def startup_calls(c: Cluster) -> list[Sent]:
    return [
        bridges(),
        Sent(call("instance_info", INSTANCE, c.hypervisor, c.full_hvparams)),
        Sent(call("node_info", None, [[c.hypervisor, c.full_hvparams]]), compare=NODE_INFO),
        hooks(c, "instance-start", "pre", "OP_INSTANCE_STARTUP"),
        # AssembleInstanceDisks: first pass as secondary, second as primary
        Sent(call("blockdev_assemble", c.disk(), c.instance(), False, 0)),
        Sent(call("blockdev_assemble", c.disk(), c.instance(), True, 0)),
        Sent(call("instance_start", [c.instance(), None, None], False,
                  reason("startup", "instance_startup"))),
        hooks(c, "instance-start", "post", "OP_INSTANCE_STARTUP"),
    ]


def remove_calls(c: Cluster, timeout: int) -> list[Sent]:
    return [
        hooks(c, "instance-remove", "pre", "OP_INSTANCE_REMOVE"),
        Sent(call("instance_shutdown", c.instance("down"), timeout, reason("remove", "instance_remove"))),
        Sent(call("blockdev_remove", c.disk())),
        Sent(call("file_storage_dir_remove", node_path(INSTANCE_DIR))),
        hooks(c, "instance-remove", "post", "OP_INSTANCE_REMOVE"),
    ]


# -- replaying and comparing --------------------------------------------------------

def raw_outcome(result: Result, target: Target) -> tuple[bool, Any]:
    """(ok, payload) of the raw answer (the client turns some payloads into objects), roots replaced."""
    if result["fail_msg"]:
        return comparable(result, target)
    return comparable({**result, "payload": result["data"][1]}, target)


def node_info_shape(payload: Any) -> Any:
    """The shape of node_info's [boot id, storage, hypervisors] answer, without the storage part.

    Asked for no storage units (null), the real noded answers null there and
    ours [] (the proto's repeated field has no null); the masters ignore that
    part of this call (CheckNodeFreeMemory reads the hypervisor part only).
    """
    boot_id, storage, hv_info = payload
    assert storage in (None, []), f"node_info reported storage that was not asked for: {storage}"
    return shape([boot_id, hv_info])


def noop_entry(diagnosis: Any) -> Any:
    entries = [e for e in diagnosis if isinstance(e, list) and e and e[0] == "noop"]
    return entries[:1]


def check_outcome(sent: Sent, ours: tuple[bool, Any]) -> None:
    assert ours[0] == sent.succeeds, describe(sent.call, ours, f"(success expected: {sent.succeeds})")
    if sent.call["proc"] == "hooks_runner":
        hpath, phase = sent.call["args"][0], sent.call["args"][1]
        assert ours[1] == [[f"{hpath}-{phase}.d/{HOOK}", HOOK_SUCCESS, f"{hpath} {phase} {INSTANCE}"]], (
            describe(sent.call, ours, "(the hook's output)"))


def replay_on_both(pair: Pair, sents: list[Sent]) -> list[tuple[bool, Any]]:
    """The calls on ours and (all but OURS_ONLY) on the real noded; answers compared; our outcomes."""
    calls = [with_cert(s.call) for s in sents]
    shared = [c for c, s in zip(calls, sents, strict=True) if s.compare != OURS_ONLY]
    ours_results, real_results = pair.run(lambda t: calls if t is pair.ours else shared)
    real_iter = iter(real_results)
    outcomes = []
    for sent, o in zip(sents, ours_results, strict=True):
        ours = raw_outcome(o, pair.ours)
        outcomes.append(ours)
        if sent.compare != OURS_ONLY:  # compared first: a failure report then shows both answers
            real = raw_outcome(next(real_iter), pair.real)
            if sent.compare == NODE_INFO:
                assert ours[0] and real[0] and node_info_shape(ours[1]) == node_info_shape(real[1]), (
                    describe(sent.call, ours, real))
            elif sent.compare == NOOP_ENTRY:
                assert ours[0] and real[0] and noop_entry(ours[1]) == noop_entry(real[1]) != [], (
                    describe(sent.call, noop_entry(ours[1]), noop_entry(real[1])))
            else:
                assert ours == real, describe(sent.call, ours, real)
        check_outcome(sent, ours)
    return outcomes


def replay_on_ours(t: Target, sents: list[Sent]) -> list[tuple[bool, Any]]:
    """The calls on our daemon only; every answer checked against what the master expects."""
    outcomes = []
    # candidate mode (the pair's): the client presents client.pem, as call() asks
    for sent, result in zip(sents, run_client(t, [s.call for s in sents]), strict=True):
        ours = raw_outcome(result, t)
        check_outcome(sent, ours)
        outcomes.append(ours)
    return outcomes


def proc_outcome(sents: list[Sent], outcomes: list[tuple[bool, Any]], proc: str) -> list[Any]:
    return [o for s, o in zip(sents, outcomes, strict=True) if s.call["proc"] == proc]


# -- what is on the node ---------------------------------------------------------------

def bridge_exists(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def disk_file(t: Target) -> Path:
    return t.path(DISK_PATH)


def fake_state_file(t: Target) -> Path:
    return t.path(f"/var/run/ganeti/fake-hypervisor/{INSTANCE}")


def assert_disk(t: Target, exists: bool, when: str) -> None:
    path = disk_file(t)
    if exists:
        assert path.is_file(), f"{t.name}, {when}: the disk file {path} is missing"
        assert path.stat().st_size == DISK_MIB * MIB, f"{t.name}, {when}: {path} is not {DISK_MIB} MiB"
    else:
        assert not path.exists(), f"{t.name}, {when}: the disk file {path} is still there"
        assert not t.path(INSTANCE_DIR).exists(), f"{t.name}, {when}: {t.path(INSTANCE_DIR)} is still there"


def assert_fake_running(t: Target, running: bool, when: str) -> None:
    path = fake_state_file(t)
    assert path.is_file() == running, (
        f"{t.name}, {when}: the fake hypervisor's state file {path} "
        + ("is missing" if running else "is still there"))


def kvm_pid(t: Target) -> int | None:
    """The pid in our run directory's kvm pid file for the instance (Ganeti's layout)."""
    try:
        return int(t.path(f"/var/run/ganeti/kvm-hypervisor/pid/{INSTANCE}").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def qemu_runs(pid: int) -> bool:
    """Whether /proc shows a live qemu-system-x86_64 with that pid."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return os.path.basename(exe) == QEMU and state != "Z"


def assert_qemu_running(t: Target, when: str) -> int:
    pid = kvm_pid(t)
    assert pid is not None, f"{when}: no kvm pid file for {INSTANCE} in {t.path('/var/run/ganeti')}"
    assert qemu_runs(pid), f"{when}: pid {pid} of the pid file is not a running {QEMU}"
    return pid


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while qemu_runs(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not qemu_runs(pid)


def read_until(sock: socket.socket, wanted: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        if not chunk:
            break
        seen += chunk
    return seen


def kvm_unavailable_reason() -> str | None:
    """Why the kvm part cannot run: kvm not registered (yet) in noded.hypervisor, or no qemu.

    Imported at run time: a registered kvm that does not import fails the test.
    """
    if "kvm" not in importlib.import_module("noded.hypervisor").HYPERVISORS:
        return ("the kvm hypervisor (noded/hypervisor/kvm.py) is not registered in"
                " noded/hypervisor/__init__.py yet")
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (Debian package qemu-system-x86)"
    return None


# -- the tests ---------------------------------------------------------------------------

def test_fake_instance_life_cycle_answers_like_the_real_noded_and_leaves_the_right_files(
        pair: Pair, defaults: dict[str, Any], clean: None) -> None:
    c = Cluster("fake", "noop", defaults, hvparams={}, beparams={"maxmem": 128, "minmem": 128})

    add = add_calls(c)
    outcomes = replay_on_both(pair, add)
    assert proc_outcome(add, outcomes, "blockdev_create") == [(True, ["loop", f"<ROOT>{DISK_PATH}"])]
    for t in pair.targets:
        assert_disk(t, True, "after add")
        assert_fake_running(t, True, "after add (started)")
        assert list(t.path("/var/log/ganeti/os").glob(f"add-noop-{INSTANCE}-*.log")), (
            f"{t.name}: instance_os_add wrote no OS log")
    assert (pair.ours.path(f"/var/run/ganeti/instance-metadata/{INSTANCE}.json").is_file())

    reboot = reboot_calls(c, "hard", TRACE_SHUTDOWN_TIMEOUT)
    outcomes = replay_on_both(pair, reboot)
    assert proc_outcome(reboot, outcomes, "instance_info") == [
        (True, {"memory": 128, "vcpus": 1, "state": 0, "time": 0})]
    for t in pair.targets:
        assert_fake_running(t, True, "after reboot")

    replay_on_both(pair, shutdown_calls(c, TRACE_SHUTDOWN_TIMEOUT))
    for t in pair.targets:
        assert_fake_running(t, False, "after shutdown")
        assert_disk(t, True, "after shutdown")

    startup = startup_calls(c)
    outcomes = replay_on_both(pair, startup)
    assert proc_outcome(startup, outcomes, "instance_info") == [(True, {})]
    assert proc_outcome(startup, outcomes, "blockdev_assemble")[1] == (
        True, [f"<ROOT>{DISK_PATH}", f"<ROOT>/var/run/ganeti/instance-disks/{INSTANCE}:0", None])
    for t in pair.targets:
        assert_fake_running(t, True, "after startup")

    replay_on_both(pair, remove_calls(c, TRACE_SHUTDOWN_TIMEOUT))
    for t in pair.targets:
        assert_fake_running(t, False, "after remove")
        assert_disk(t, False, "after remove")


def test_kvm_instance_life_cycle_runs_a_real_qemu_that_greets_on_the_serial_console(
        pair: Pair, defaults: dict[str, Any], clean: None) -> None:
    why = kvm_unavailable_reason()
    if why is not None:
        pytest.skip(why)
    ours = pair.ours
    tiny_link = ours.path("/srv/ganeti/os/tiny")
    if not tiny_link.is_symlink():
        tiny_link.symlink_to(TINY)
    c = Cluster("kvm", "tiny+default", defaults, hvparams={}, beparams={"maxmem": 32, "minmem": 32})
    assert c.full_hvparams["kvm_path"] == "/usr/bin/kvm" and c.full_hvparams["acpi"] is True

    replay_on_ours(ours, add_calls(c))
    assert_disk(ours, True, "after add")
    first = assert_qemu_running(ours, "after add")
    with disk_file(ours).open("rb") as f:
        assert f.read(512)[510:] == b"\x55\xaa", "tiny's create script wrote no boot sector on the disk"

    # The guest greeted before anyone listened: a soft reboot (system_reset) greets again.
    serial_path = str(ours.path(f"/var/run/ganeti/kvm-hypervisor/ctrl/{INSTANCE}.serial"))
    qmp = importlib.import_module("noded.hypervisor.qmp")
    with contextlib.closing(qmp.connect_unix(serial_path)) as serial:
        replay_on_ours(ours, reboot_calls(c, "soft", KVM_SHUTDOWN_TIMEOUT))
        output = read_until(serial, TINY_GREETING.encode(), timeout=30.0)
    assert TINY_GREETING.encode() in output, f"no greeting on the serial console: {output[-300:]!r}"
    assert assert_qemu_running(ours, "after a soft reboot") == first

    reboot = reboot_calls(c, "hard", KVM_SHUTDOWN_TIMEOUT)
    outcomes = replay_on_ours(ours, reboot)
    (info,) = proc_outcome(reboot, outcomes, "instance_info")
    assert (info[1]["memory"], info[1]["vcpus"]) == (32, 1)
    second = assert_qemu_running(ours, "after a hard reboot")
    assert second != first and wait_gone(first), "a hard reboot keeps the old qemu"

    replay_on_ours(ours, shutdown_calls(c, KVM_SHUTDOWN_TIMEOUT))
    assert wait_gone(second), f"qemu {second} still runs after instance_shutdown"
    assert_disk(ours, True, "after shutdown")

    startup = startup_calls(c)
    outcomes = replay_on_ours(ours, startup)
    assert proc_outcome(startup, outcomes, "instance_info") == [(True, {})]
    third = assert_qemu_running(ours, "after startup")
    cmdline = Path(f"/proc/{third}/cmdline").read_bytes().split(b"\0")
    assert [b"-m", b"32"] == cmdline[cmdline.index(b"-m"):cmdline.index(b"-m") + 2]

    replay_on_ours(ours, remove_calls(c, KVM_SHUTDOWN_TIMEOUT))
    assert wait_gone(third), f"qemu {third} still runs after remove"
    assert_disk(ours, False, "after remove")
