"""The kvm hypervisor with real qemu processes.

The guest is a 512-byte boot sector assembled here: it prints a line on the
first serial port and halts (no OS, no ACPI handling), so a soft stop never
ends by itself and the force path runs. KVM is used when /dev/kvm works,
plain emulation otherwise. Every qemu a test starts is killed by its pid at
the end of the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from noded.hypervisor import get_hypervisor
from noded.hypervisor.base import AttachedDisk, HotplugError, HypervisorError, InstanceState
from noded.hypervisor.kvm import KvmHypervisor, kvm_acceleration
from noded.hypervisor.kvm_state import process_alive, read_pid_file
from noded.hypervisor.qmp import QmpClient, connect_unix
from noded.paths import Paths

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed"
                                " (Debian package qemu-system-x86)")

BOOT_LINE = b"GANETI-KVM-BOOT-OK"
INSTANCE = "inst1.example.com"


def boot_sector(message: bytes = BOOT_LINE) -> bytes:
    """16-bit code at 0x7c00: print `message` on COM1 (port 0x3f8), then cli; hlt forever."""
    text = message + b"\r\n\x00"
    code = bytes([
        0x31, 0xC0,        # xor ax, ax
        0x8E, 0xD8,        # mov ds, ax
        0xFC,              # cld
        0xBA, 0xF8, 0x03,  # mov dx, 0x3f8
        0xBE, 0x17, 0x7C,  # mov si, 0x7c17 (the text, right after this code)
        0xAC,              # next: lodsb
        0x84, 0xC0,        # test al, al
        0x74, 0x03,        # jz halt
        0xEE,              # out dx, al
        0xEB, 0xF8,        # jmp next
        0xFA,              # halt: cli
        0xF4,              # hlt
        0xEB, 0xFC,        # jmp halt
    ])
    assert len(code) == 0x17
    sector = code + text
    return sector + b"\x00" * (510 - len(sector)) + b"\x55\xaa"


def make_disk(path: Path, size: int = 2 * 1024 * 1024) -> Path:
    with open(path, "wb") as f:
        f.write(boot_sector())
        f.truncate(size)
    return path


def free_port(start: int = 0) -> int:
    """A free TCP port on loopback (from `start` upwards when given)."""
    for port in ([0] if not start else range(start, start + 500)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


def make_hv(root: Path, hostname: str = "node1") -> KvmHypervisor:
    node_root = root / hostname
    node_root.mkdir(parents=True, exist_ok=True)
    return KvmHypervisor(Paths(root=str(node_root), hostname=hostname))


def make_instance(name: str = INSTANCE, **hvparams: Any) -> dict[str, Any]:
    return {
        "name": name,
        "uuid": "932df160-7a22-4067-a566-7e0ca8386133",
        "hypervisor": "kvm",
        "hvparams": {"kvm_path": QEMU, "kernel_path": "", "migration_port": free_port(),
                     "migration_bandwidth": 1000, **hvparams},
        "beparams": {"maxmem": 32, "minmem": 32, "vcpus": 1},
        "nics": [],
        "network_port": 0,
        "disks_info": [],
    }


def attached(path: Path, index: int = 0, link: str | None = None) -> AttachedDisk:
    disk = {"dev_type": "file", "mode": "rw", "size": 2, "logical_id": ["loop", str(path)],
            "uuid": f"aaaaaaa{index}-bbbb-cccc-dddd-eeeeeeeeeeee"}
    return AttachedDisk(disk=disk, path=str(path), link=link or str(path))


def kill_all(hv: KvmHypervisor) -> None:
    """Stop by pid every qemu this node's pid files name."""
    with contextlib.suppress(OSError):
        for name in os.listdir(hv.dirs.pid_dir):
            pid = hv.instance_pid(name)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def hv(tmp_path: Path) -> Iterator[KvmHypervisor]:
    hyper = make_hv(tmp_path)
    yield hyper
    kill_all(hyper)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return make_disk(tmp_path / "disk0.img")


def read_line(sock: socket.socket, timeout: float = 20.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data


def qmp(hv: KvmHypervisor, command: str, arguments: dict[str, Any] | None = None) -> Any:
    with QmpClient(hv.dirs.qmp(INSTANCE)) as client:
        return client.execute(command, arguments)


def wait_status(hv: KvmHypervisor, wanted: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = qmp(hv, "query-status")["status"]
        if status == wanted:
            break
        time.sleep(0.05)
    return status


# -- life cycle ---------------------------------------------------------------------
def test_started_instance_is_a_running_qemu_listed_with_its_memory_and_vcpus(hv: KvmHypervisor,
                                                                               disk: Path) -> None:
    inst = make_instance()
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    pid = read_pid_file(hv.dirs.pid_file(INSTANCE))
    assert process_alive(pid)
    assert hv.list_instances() == [INSTANCE]
    info = hv.instance_info(INSTANCE)
    assert info is not None
    assert (info.id, info.memory, info.vcpus, info.state) == (str(pid), 32, 1, InstanceState.RUNNING)
    assert [i.name for i in hv.all_instances_info()] == [INSTANCE]
    assert wait_status(hv, "running") == "running"


def test_runtime_file_keeps_command_nics_hvparams_and_disks(hv: KvmHypervisor, disk: Path) -> None:
    inst = make_instance()
    inst["nics"] = [{"mac": "aa:00:00:12:34:56", "uuid": "11111111-2222-3333-4444-555555555555",
                     "nicparams": {"mode": "bridged", "link": "no-such-bridge"}}]
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    cmd, nics, hvparams, disks = json.loads(Path(hv.dirs.runtime_file(INSTANCE)).read_text())
    assert cmd[:5] == [QEMU, "-name", INSTANCE, "-m", "32"]
    assert nics[0]["mac"] == "aa:00:00:12:34:56"
    assert nics[0]["hvinfo"]["id"] == "nic-11111111-2222-3333"
    assert hvparams["kvm_path"] == QEMU
    assert disks[0][0]["hvinfo"] == {"driver": "virtio-blk-pci", "id": "disk-aaaaaaa0-bbbb-cccc",
                                     "bus": "pci.0", "addr": "0xc"}
    assert disks[0][1] == str(disk)
    devices = {c["name"] for c in qmp(hv, "qom-list", {"path": "/machine/peripheral"})}
    assert {"disk-aaaaaaa0-bbbb-cccc", "nic-11111111-2222-3333"} <= devices


@pytest.mark.parametrize("kvm_flag", ["", "disabled"], ids=["kvm-when-usable", "emulated"])
def test_serial_console_socket_carries_the_guest_output(hv: KvmHypervisor, disk: Path, kvm_flag: str) -> None:
    hv.start_instance(make_instance(kvm_flag=kvm_flag), [attached(disk)], startup_paused=True)
    expect_kvm = kvm_acceleration()[0] and kvm_flag != "disabled"
    assert qmp(hv, "query-kvm")["enabled"] is expect_kvm
    with connect_unix(hv.dirs.serial(INSTANCE)) as serial:
        qmp(hv, "cont")
        assert read_line(serial).strip() == BOOT_LINE


def test_paused_start_waits_for_cont(hv: KvmHypervisor, disk: Path) -> None:
    hv.start_instance(make_instance(), [attached(disk)], startup_paused=True)
    status = qmp(hv, "query-status")
    assert (status["status"], status["running"]) == ("prelaunch", False)
    assert hv.list_instances() == [INSTANCE]
    qmp(hv, "cont")
    assert wait_status(hv, "running") == "running"


def test_starting_a_running_instance_fails(hv: KvmHypervisor, disk: Path) -> None:
    inst = make_instance()
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    with pytest.raises(HypervisorError, match="already running"):
        hv.start_instance(inst, [attached(disk)], startup_paused=False)
    assert hv.list_instances() == [INSTANCE]


def test_failed_start_leaves_no_state_behind(hv: KvmHypervisor, tmp_path: Path) -> None:
    with pytest.raises(HypervisorError, match="Failed to start instance"):
        hv.start_instance(make_instance(), [attached(tmp_path / "missing.img")], startup_paused=False)
    assert hv.list_instances() == []
    assert os.listdir(hv.dirs.conf_dir) == []
    assert os.listdir(hv.dirs.ctrl_dir) == []


def test_soft_stop_is_ignored_by_a_guest_without_acpi_so_force_kills(hv: KvmHypervisor, disk: Path) -> None:
    inst = make_instance()
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    pid = read_pid_file(hv.dirs.pid_file(INSTANCE))
    # The backend's loop: soft stop, retried until the (short) timeout, then force.
    deadline = time.monotonic() + 1.0
    retry = False
    while time.monotonic() < deadline and hv.instance_info(INSTANCE) is not None:
        hv.stop_instance(inst, retry=retry, timeout=1)
        retry = True
        time.sleep(0.2)
    assert hv.list_instances() == [INSTANCE]
    hv.stop_instance(inst, force=True)
    assert not process_alive(pid)
    assert hv.list_instances() == []
    assert hv.instance_info(INSTANCE) is None
    hv.cleanup_instance(INSTANCE)
    assert os.listdir(hv.dirs.conf_dir) == []
    assert os.listdir(hv.dirs.ctrl_dir) == []


def test_stop_without_acpi_kills_at_once(hv: KvmHypervisor, disk: Path) -> None:
    inst = make_instance(acpi=False)
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    hv.stop_instance(inst)
    assert hv.list_instances() == []


def test_stopping_a_stopped_instance_succeeds(hv: KvmHypervisor) -> None:
    hv.stop_instance(make_instance())
    hv.stop_instance(make_instance(), force=True)
    hv.cleanup_instance(INSTANCE)


def test_soft_reboot_resets_the_guest_in_the_same_process(hv: KvmHypervisor, disk: Path) -> None:
    inst = make_instance(kvm_flag="disabled")  # the BIOS boots twice: emulation is faster than nested KVM
    hv.start_instance(inst, [attached(disk)], startup_paused=True)
    pid = read_pid_file(hv.dirs.pid_file(INSTANCE))
    with connect_unix(hv.dirs.serial(INSTANCE)) as serial:
        qmp(hv, "cont")
        assert read_line(serial).strip() == BOOT_LINE
        hv.reboot_instance(inst)
        assert read_line(serial).strip() == BOOT_LINE
    assert read_pid_file(hv.dirs.pid_file(INSTANCE)) == pid


def test_rebooting_a_stopped_instance_fails(hv: KvmHypervisor) -> None:
    with pytest.raises(HypervisorError, match="not running"):
        hv.reboot_instance(make_instance())


def test_a_new_hypervisor_object_finds_running_instances(tmp_path: Path, disk: Path) -> None:
    first = make_hv(tmp_path)
    try:
        first.start_instance(make_instance(), [attached(disk)], startup_paused=False)
        pid = read_pid_file(first.dirs.pid_file(INSTANCE))
        assert os.getsid(pid) != os.getsid(0)  # its own session: the daemon's death does not reach it
        restarted = get_hypervisor("kvm", Paths(root=str(tmp_path / "node1"), hostname="node1"))
        assert restarted.list_instances() == [INSTANCE]
        info = restarted.instance_info(INSTANCE)
        assert info is not None and info.id == str(pid)
        restarted.stop_instance(make_instance(), force=True)
        assert not process_alive(pid)
    finally:
        kill_all(first)


def test_balloon_reaches_a_running_instance_and_fails_on_a_stopped_one(hv: KvmHypervisor,
                                                                        disk: Path) -> None:
    inst = make_instance()
    with pytest.raises(HypervisorError, match="not running"):
        hv.balloon_instance_memory(inst, 16)
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    hv.balloon_instance_memory(inst, 16)  # the guest has no balloon driver: qemu accepts the target
    assert qmp(hv, "query-balloon")["actual"] == 32 * 1048576


def test_vnc_listens_on_the_bind_address(hv: KvmHypervisor, disk: Path) -> None:
    inst = make_instance(vnc_bind_address="127.0.0.1")
    inst["network_port"] = free_port(15900)
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    with socket.create_connection(("127.0.0.1", inst["network_port"]), timeout=10) as conn:
        assert conn.recv(12).startswith(b"RFB ")
    console = hv.instance_console(inst, {"name": "node1"}, {}, {**inst["hvparams"], "serial_console": False},
                                  inst["beparams"])
    assert console == {"instance": INSTANCE, "kind": "vnc", "host": "127.0.0.1",
                       "port": inst["network_port"], "display": inst["network_port"] - 5900}


# -- console, parameters, node ----------------------------------------------------------
def test_serial_console_is_reached_over_ssh_with_socat(hv: KvmHypervisor) -> None:
    inst = make_instance()
    console = hv.instance_console(inst, {"name": "node1.example.com", "ndparams": {"ssh_port": 2222}},
                                  {"ndparams": {"ssh_port": 22}}, inst["hvparams"], inst["beparams"])
    assert console == {
        "instance": INSTANCE, "kind": "ssh", "host": "node1.example.com", "port": 2222, "user": "root",
        "command": ["/usr/lib/ganeti/tools/kvm-console-wrapper", "/usr/bin/socat", INSTANCE,
                    hv.dirs.monitor(INSTANCE), "STDIO,raw,echo=0,escape=0x1d",
                    f"UNIX-CONNECT:{hv.dirs.serial(INSTANCE)}"]}


def test_console_without_serial_or_vnc_is_a_message(hv: KvmHypervisor) -> None:
    inst = make_instance(serial_console=False)
    console = hv.instance_console(inst, {"name": "n"}, {}, inst["hvparams"], inst["beparams"])
    assert console == {"instance": INSTANCE, "kind": "msg",
                       "message": f"No serial shell for instance {INSTANCE}"}


def test_defaults_pass_the_syntax_check_and_cover_every_parameter() -> None:
    assert set(KvmHypervisor.DEFAULTS) == set(KvmHypervisor.PARAMETERS)
    KvmHypervisor.check_parameter_syntax(dict(KvmHypervisor.DEFAULTS))


@pytest.mark.parametrize(("changes", "message"), [
    ({"boot_order": "tape"}, "Parameter 'boot_order' fails syntax check"),
    ({"migration_port": 70000}, "invalid port number"),
    ({"cpu_mask": "3-1"}, "not well-formed"),
    ({"disk_aio": "native"}, "only supported value for 'disk_cache' is 'none'"),
    ({"security_model": "user"}, "security domain"),
    ({"spice_use_tls": True}, "requires spice_bind"),
    ({"kernel_path": "relative/vmlinuz"}, "absolute normalized path"),
    ({"no_such_param": 1}, "Parameter 'no_such_param' is not supported"),
])
def test_bad_parameters_fail_the_syntax_check(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(HypervisorError, match=message):
        KvmHypervisor.check_parameter_syntax({**KvmHypervisor.DEFAULTS, **changes})


@pytest.mark.parametrize(("changes", "message"), [
    ({"kernel_path": "/nonexistent/vmlinuz"}, "Parameter 'kernel_path' fails validation"),
    ({"machine_version": "no-such-machine"}, "Unsupported machine version"),
    ({"vnc_bind_address": "not-an-address"}, "VNC: The vnc_bind_address parameter"),
    ({"security_model": "user", "security_domain": "no-such-user-here"}, "Unknown security domain user"),
])
def test_bad_parameters_fail_node_validation(changes: dict[str, Any], message: str) -> None:
    params = {**KvmHypervisor.DEFAULTS, "kvm_path": QEMU, "kernel_path": "", **changes}
    with pytest.raises(HypervisorError, match=message):
        KvmHypervisor.validate_parameters(params)


GANETI_TREE = "/usr/share/ganeti/3.0"


@pytest.mark.skipif(not os.path.isdir(f"{GANETI_TREE}/ganeti"), reason="Ganeti 3.0 is not installed")
def test_defaults_and_required_parameters_are_ganetis() -> None:
    code = ("import json; from ganeti import constants;"
            " from ganeti.hypervisor.hv_kvm import KVMHypervisor as K;"
            " print(json.dumps({'defaults': constants.HVC_DEFAULTS['kvm'],"
            " 'required': sorted(k for k, v in K.PARAMETERS.items() if v[0])}))")
    result = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": GANETI_TREE})
    ganeti = json.loads(result.stdout)
    assert dict(KvmHypervisor.DEFAULTS) == ganeti["defaults"]
    assert sorted(k for k, v in KvmHypervisor.PARAMETERS.items() if v.required) == ganeti["required"]


def test_valid_parameters_pass_node_validation() -> None:
    KvmHypervisor.validate_parameters({**KvmHypervisor.DEFAULTS, "kvm_path": QEMU, "kernel_path": "",
                                       "machine_version": "pc", "vnc_bind_address": "127.0.0.1"})


def test_verify_names_a_missing_binary(hv: KvmHypervisor) -> None:
    assert hv.verify({"kvm_path": QEMU}) is None
    problem = hv.verify({"kvm_path": "/nonexistent/qemu"})
    assert problem is not None and "The KVM binary ('/nonexistent/qemu') does not exist" in problem


def test_node_info_reports_memory_cpus_and_qemu_version(hv: KvmHypervisor) -> None:
    info = hv.node_info({"kvm_path": QEMU})
    assert info["memory_total"] > 0 and info["cpu_total"] >= 1
    version_line = subprocess.run([str(QEMU), "--version"], capture_output=True, text=True,
                                  check=True).stdout.splitlines()[0]
    assert ".".join(str(v) for v in info["hv_version"]) in version_line


# -- hotplug --------------------------------------------------------------------------
def test_hotplug_is_supported_only_while_running(hv: KvmHypervisor, disk: Path) -> None:
    inst = make_instance()
    with pytest.raises(HotplugError, match="probably down"):
        hv.hotplug_supported(inst)
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    hv.hotplug_supported(inst)


def test_hotplug_adds_a_disk_and_a_nic(hv: KvmHypervisor, disk: Path, tmp_path: Path) -> None:
    inst = make_instance()
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    second = make_disk(tmp_path / "disk1.img")
    new_disk = {"dev_type": "file", "mode": "rw", "uuid": "bbbbbbbb-1111-2222-3333-444444444444"}
    hv.hotplug_device(inst, "hotadd", "disk", new_disk, [str(second), None], 1)
    new_nic = {"mac": "aa:00:00:00:00:02", "uuid": "cccccccc-1111-2222-3333-444444444444",
               "nicparams": {"mode": "bridged", "link": "no-such-bridge"}}
    hv.hotplug_device(inst, "hotadd", "nic", new_nic, None, 0)
    devices = {c["name"] for c in qmp(hv, "qom-list", {"path": "/machine/peripheral"})}
    assert {"disk-bbbbbbbb-1111-2222", "nic-cccccccc-1111-2222"} <= devices
    _, nics, _, disks = json.loads(Path(hv.dirs.runtime_file(INSTANCE)).read_text())
    assert [d[0]["hvinfo"]["addr"] for d in disks] == ["0xc", "0xd"]
    assert [d[1] for d in disks] == [str(disk), str(second)]
    assert nics[0]["hvinfo"]["addr"] == "0xe"


def test_hotplug_removes_a_scsi_disk_it_added(hv: KvmHypervisor, disk: Path, tmp_path: Path) -> None:
    # SCSI devices leave without the guest's help (PCI ones need an OS that answers ACPI).
    inst = make_instance(disk_type="scsi-hd")
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    new_disk = {"dev_type": "file", "mode": "rw", "uuid": "bbbbbbbb-1111-2222-3333-444444444444"}
    hv.hotplug_device(inst, "hotadd", "disk", new_disk, [str(make_disk(tmp_path / "disk1.img")), None], 1)
    _, _, _, disks = json.loads(Path(hv.dirs.runtime_file(INSTANCE)).read_text())
    assert [d[0]["hvinfo"]["scsi-id"] for d in disks] == [0, 1]
    hvinfo = hv.hotplug_device(inst, "hotremove", "disk", new_disk, None, 1)
    assert hvinfo["id"] == "disk-bbbbbbbb-1111-2222"
    devices = {c["name"] for c in qmp(hv, "qom-list", {"path": "/machine/peripheral"})}
    assert "disk-bbbbbbbb-1111-2222" not in devices
    _, _, _, disks = json.loads(Path(hv.dirs.runtime_file(INSTANCE)).read_text())
    assert len(disks) == 1


def test_hot_removing_an_unknown_device_fails(hv: KvmHypervisor, disk: Path) -> None:
    inst = make_instance()
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    with pytest.raises(HypervisorError, match="Cannot find runtime info for nic"):
        hv.hotplug_device(inst, "hotremove", "nic", {"uuid": "no-such-nic"}, None, 0)


def test_hotplug_refuses_a_device_type_qemu_cannot_plug(hv: KvmHypervisor, disk: Path) -> None:
    inst = make_instance(disk_type="ide")
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    with pytest.raises(HotplugError, match="not supported for device type ide"):
        hv.hotplug_device(inst, "hotadd", "disk", {"uuid": "x-y-z"}, ["/dev/null", None], 1)


# -- live migration between two nodes on this machine -----------------------------------
@pytest.mark.migration
@pytest.mark.parametrize("live", [True, False], ids=["live", "non-live"])
def test_migration_moves_the_instance_and_stops_the_source(tmp_path: Path, disk: Path, live: bool) -> None:
    source, target = make_hv(tmp_path, "node1"), make_hv(tmp_path, "node2")
    try:
        inst = make_instance()
        links = []
        for hyper in (source, target):  # what blockdev_assemble does on each node
            link_dir = Path(hyper.paths.run_dir) / "instance-disks"
            link_dir.mkdir(parents=True, exist_ok=True)
            link = link_dir / f"{INSTANCE}:0"
            link.symlink_to(disk)
            links.append(str(link))
        source.start_instance(inst, [attached(disk, link=links[0])], startup_paused=False)
        source_pid = read_pid_file(source.dirs.pid_file(INSTANCE))

        info = source.migration_info(inst)
        target.accept_instance(inst, info, "127.0.0.1")
        assert target.qmp_command(INSTANCE, "query-status")["status"] == "inmigrate"
        target_cmdline = Path(f"/proc/{read_pid_file(target.dirs.pid_file(INSTANCE))}/cmdline").read_bytes()
        assert links[1].encode() in target_cmdline  # the target's own disk link

        source.migrate_instance("cluster", inst, "127.0.0.1", live=live)
        deadline = time.monotonic() + 60
        status = source.migration_status(inst)
        while status["status"] == "active" and time.monotonic() < deadline:
            time.sleep(0.1)
            status = source.migration_status(inst)
        assert status["status"] == "completed"
        assert status["total_ram"] > 0

        target.finalize_migration_dst(inst, info, success=True)
        source.finalize_migration_source(inst, success=True, live=live)

        assert target.qmp_command(INSTANCE, "query-status")["status"] == "running"
        assert target.list_instances() == [INSTANCE]
        assert not process_alive(source_pid)
        assert source.list_instances() == []
        assert not os.path.exists(source.dirs.runtime_file(INSTANCE))
    finally:
        kill_all(source)
        kill_all(target)


# -- bridged NICs, in a network namespace of the test's own ---------------------------
BRIDGE_SCRIPT = textwrap.dedent("""
    import json, os, subprocess, sys
    from noded.hypervisor.base import AttachedDisk
    from noded.hypervisor.kvm import KvmHypervisor
    from noded.paths import Paths

    root, disk, qemu, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    subprocess.run(["ip", "link", "add", "br-gnt", "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", "br-gnt", "up"], check=True)
    hv = KvmHypervisor(Paths(root=root, hostname=os.path.basename(root)))
    nic = {"mac": "aa:00:00:00:00:01", "uuid": "dddddddd-1111-2222-3333-444444444444",
           "nicparams": {"mode": "bridged", "link": "br-gnt"}}
    inst = {"name": "inst1", "hvparams": {"kvm_path": qemu, "kernel_path": "", "migration_port": port},
            "beparams": {"maxmem": 32, "vcpus": 1}, "nics": [nic]}
    hv.start_instance(inst, [AttachedDisk(disk={"mode": "rw"}, path=disk, link=disk)], False)
    taps = []
    try:
        print(json.dumps({"pid": hv.instance_pid("inst1")}), flush=True)
        taps.append(open(hv.dirs.nic_file("inst1", 0)).read())
        second = {**nic, "mac": "aa:00:00:00:00:02", "uuid": "eeeeeeee-1111-2222-3333-444444444444"}
        hv.hotplug_device(inst, "hotadd", "nic", second, None, 1)
        taps.append(open(hv.dirs.nic_file("inst1", 1)).read())
        masters = [os.path.basename(os.readlink(f"/sys/class/net/{tap}/master")) for tap in taps]
    finally:
        hv.stop_instance(inst, force=True)
        hv.cleanup_instance("inst1")
    gone = [not os.path.exists(f"/sys/class/net/{tap}") for tap in taps]
    print(json.dumps({"taps": taps, "masters": masters, "gone": gone}), flush=True)
""")


def test_nic_on_a_bridge_gets_a_tap_device_in_that_bridge(tmp_path: Path, disk: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to make a network namespace with a bridge")
    probe = subprocess.run([unshare, "--net", "--mount", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.decode().strip()}")
    root = tmp_path / "node1"
    root.mkdir()
    script = tmp_path / "bridge_case.py"
    script.write_text(BRIDGE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    # A new network namespace (the bridge exists only there) with its own /sys to see it.
    shell = f"mount -t sysfs none /sys && exec {sys.executable} {script} {root} {disk} {QEMU} {free_port()}"
    result = subprocess.run([unshare, "--net", "--mount", "sh", "-c", shell], capture_output=True,
                            text=True, env=env, timeout=120, check=False)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if lines and not result.returncode == 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(lines[0]["pid"], signal.SIGKILL)
    assert result.returncode == 0, result.stderr
    outcome = lines[-1]
    assert outcome["masters"] == ["br-gnt", "br-gnt"]
    assert outcome["gone"] == [True, True]
    assert not process_alive(lines[0]["pid"])


@pytest.mark.migration
def test_abandoned_migration_drops_the_target_and_keeps_the_source(tmp_path: Path, disk: Path) -> None:
    source, target = make_hv(tmp_path, "node1"), make_hv(tmp_path, "node2")
    try:
        inst = make_instance()
        source.start_instance(inst, [attached(disk)], startup_paused=False)
        info = source.migration_info(inst)
        target.accept_instance(inst, info, "127.0.0.1")
        target_pid = target.instance_pid(INSTANCE)
        assert target_pid is not None
        target.finalize_migration_dst(inst, info, success=False)
        source.finalize_migration_source(inst, success=False, live=True)
        assert not process_alive(target_pid)
        assert target.list_instances() == []
        assert source.qmp_command(INSTANCE, "query-status")["status"] == "running"
    finally:
        kill_all(source)
        kill_all(target)


def test_accepting_an_instance_that_runs_here_fails_and_keeps_it(hv: KvmHypervisor, disk: Path) -> None:
    inst = make_instance()
    hv.start_instance(inst, [attached(disk)], startup_paused=False)
    pid = hv.instance_pid(INSTANCE)
    with pytest.raises(HypervisorError, match="already running"):
        hv.accept_instance(inst, hv.migration_info(inst), "127.0.0.1")
    assert hv.instance_pid(INSTANCE) == pid
    assert os.path.exists(hv.dirs.runtime_file(INSTANCE))


# -- through the instance procedures ------------------------------------------------------
def test_instance_procedures_start_and_shut_down_a_real_qemu(tmp_path: Path) -> None:
    from noded.backends import instance as procedures
    from noded.backends import node as node_procedures
    from noded.context import NodeContext

    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    paths.ensure_dirs()
    Path(paths.file_storage_paths_file).write_text(f"{paths.file_storage_dir}\n")
    ctx = NodeContext(paths=paths)
    disk_dir = Path(paths.file_storage_dir) / INSTANCE
    disk_dir.mkdir(parents=True)
    disk_file = make_disk(disk_dir / "disk0")
    inst = make_instance(kvm_flag="disabled")
    inst["disks_info"] = [{"dev_type": "file", "logical_id": ["loop", str(disk_file)], "children": [],
                           "iv_name": "disk/0", "size": 2, "mode": "rw", "params": {},
                           "uuid": "0d15c000-1111-2222-3333-444444444444"}]
    hv = KvmHypervisor(paths)
    try:
        procedures.instance_start(ctx, inst, False, [])
        pid = hv.instance_pid(INSTANCE)
        assert pid is not None
        assert node_procedures.instance_list(ctx, ["kvm"], {"kvm": inst["hvparams"]}) == [INSTANCE]
        link = Path(paths.run_dir) / "instance-disks" / f"{INSTANCE}:0"
        assert str(link).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        procedures.instance_shutdown(ctx, inst, 1, [])  # no ACPI in the guest: forced after 1 s
        assert not process_alive(pid)
        assert node_procedures.instance_list(ctx, ["kvm"], {"kvm": inst["hvparams"]}) == []
        assert not os.path.lexists(link)
    finally:
        kill_all(hv)
