"""An instance's life on our three-node cluster, driven by Debian's Ganeti clients, checked on the nodes.

One cluster for the module (tests/instance_cluster.py, 127.0.12.x, cluster IP
127.0.12.100): a fake instance (``ifake``, file disk on node2) and a kvm one
(``ikvm``, tiny OS on a file disk on node3) are added with Debian's
gnt-instance, then started, rebooted (soft, hard, full), stopped, their
disks activated and deactivated, queried (gnt-instance info, also -s) and
their consoles asked for. After each step the nodes are looked at: the fake
hypervisor's state file, the qemu process and its pid file below the node's
root, the disk links of the node daemon, the disk files, the admin state in
config.data.

Debian's gnt-instance startup/shutdown/reboot/console first expand the
instance names with a luxi instance query (masterd/query, not part of this
module's subject), so most steps submit the opcodes through Debian's client
library (cli.SubmitOpCode, what those commands call after the name
expansion), and the console command is printed by Debian's own gnt-instance
code (_DoConsole, as --show-cmd does). test_debian_gnt_instance_commands runs
the real commands; it is skipped when the master has no instance query.
activate-disks, deactivate-disks and info are always Debian's commands.

The tests run in file order and share the cluster's state.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster_support import BIN, alive, needs_cluster  # isort: skip
from instance_cluster import InstanceCluster, build_cluster  # isort: skip

ADDRESSES = {"node1": "127.0.12.1", "node2": "127.0.12.2", "node3": "127.0.12.3"}
CLUSTER_IP = "127.0.12.100"
FAKE, FAKE_IP, FAKE_NODE = "ifake", "127.0.12.50", "node2"
KVM, KVM_IP, KVM_NODE = "ikvm", "127.0.12.51", "node3"
GANETI_PY = "/usr/share/ganeti/3.0"
QEMU = "/usr/bin/qemu-system-x86_64"

pytestmark = [needs_cluster, pytest.mark.skipif(not os.path.exists(QEMU), reason="needs qemu-system-x86_64")]

#: Submit one opcode with Debian's client library (as gnt-instance does after expanding names).
DRIVER = r"""
import json, sys
from ganeti import cli, errors, opcodes
op = opcodes.OpCode.LoadOpCode(json.loads(sys.argv[1]))
try:
    result = cli.SubmitOpCode(op)
except errors.GenericError as err:
    sys.stderr.write("Failure: %s\n" % (cli.FormatError(err)[1],))
    sys.exit(1)
if len(sys.argv) > 2 and sys.argv[2] == "console":
    from ganeti import objects
    from ganeti.client import gnt_instance
    gnt_instance._DoConsole(objects.InstanceConsole.FromDict(result), True, "cluster1")
else:
    print(json.dumps(result))
"""


# --- the cluster and what the nodes hold -----------------------------------------------------

@pytest.fixture(scope="module")
def c() -> Iterator[InstanceCluster]:
    with build_cluster("gl", ADDRESSES, CLUSTER_IP, instances={FAKE: FAKE_IP, KVM: KVM_IP}) as made:
        done = made.gnt("gnt-instance", "add", "-n", FAKE_NODE, "-t", "file", "-o", "noop", "--no-ip-check",
                        "--no-start", "-H", "fake", "-B", "memory=128M", "--disk", "0:size=1G",
                        "--net", f"0:mode=routed,ip={FAKE_IP}", FAKE)
        assert done.returncode == 0, done.stdout + done.stderr
        done = made.gnt("gnt-instance", "add", "-n", KVM_NODE, "-t", "file", "-o", "tiny+default",
                        "--no-ip-check", "--no-start", "-H", "kvm", "-B", "memory=64M",
                        "--disk", "0:size=16M", "--no-nics", "--ignore-ipolicy", KVM)
        assert done.returncode == 0, done.stdout + done.stderr
        yield made


def submit(c: InstanceCluster, op: dict[str, Any], console: bool = False) -> subprocess.CompletedProcess[str]:
    """One opcode through Debian's cli.SubmitOpCode (feedback printed as gnt-* prints it)."""
    env = dict(c.env, PYTHONPATH=GANETI_PY)
    argv = ["/usr/bin/python3", "-c", DRIVER, json.dumps(op)] + (["console"] if console else [])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"rc={done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def inst_raw(c: InstanceCluster, name: str) -> dict[str, Any]:
    cfg = c.config()
    found = [raw for raw in cfg.tree["instances"].values() if raw["name"] == name]
    assert len(found) == 1
    return found[0]


def fake_running(c: InstanceCluster, node: str, name: str = FAKE) -> bool:
    return (c.root(node) / "var/run/ganeti/fake-hypervisor" / name).exists()


def fake_state_inode(c: InstanceCluster) -> int:
    return (c.root(FAKE_NODE) / "var/run/ganeti/fake-hypervisor" / FAKE).stat().st_ino


def last_reason(c: InstanceCluster, node: str, name: str) -> tuple[str, int]:
    """The node daemon's own (last) entry of the instance's reason trail: (source, timestamp)."""
    trail = json.loads((c.root(node) / "var/run/ganeti/instance-reason" / name).read_text())
    return str(trail[-1][0]), int(trail[-1][2])


def disk_links(c: InstanceCluster, node: str, name: str) -> list[str]:
    directory = c.root(node) / "var/run/ganeti/instance-disks"
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f"{name}:"))


def disk_files(c: InstanceCluster, name: str) -> dict[str, list[str]]:
    """Per node, the disk files of the instance in the node's file storage directory."""
    found = {}
    for node in ADDRESSES:
        directory = c.file_dir(node) / name
        found[node] = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    return found


def kvm_dir(c: InstanceCluster, node: str = KVM_NODE) -> Path:
    return c.root(node) / "var/run/ganeti/kvm-hypervisor"


def kvm_pid(c: InstanceCluster) -> int | None:
    """The pid in ikvm's pid file below node3's root, when that process lives."""
    pid_file = kvm_dir(c) / "pid" / KVM
    if not pid_file.exists():
        return None
    text = pid_file.read_text().split()
    pid = int(text[0]) if text and text[0].isdigit() else None
    return pid if pid is not None and alive(pid) else None


def wait_for(predicate: Any, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def only_on(c: InstanceCluster, node: str, name: str) -> None:
    """The instance's disk file exists on its node and on no other."""
    files = disk_files(c, name)
    assert len(files[node]) == 1 and files[node][0].endswith(".file.disk0"), files
    assert all(not found for other, found in files.items() if other != node), files


# --- the fake instance -------------------------------------------------------------------------

def test_added_instances_are_down_with_their_disks_on_their_nodes(c: InstanceCluster) -> None:
    assert inst_raw(c, FAKE)["admin_state"] == "down"
    assert inst_raw(c, KVM)["admin_state"] == "down"
    only_on(c, FAKE_NODE, FAKE)
    only_on(c, KVM_NODE, KVM)
    assert not any(fake_running(c, n) for n in ADDRESSES)
    assert kvm_pid(c) is None


def test_startup_runs_the_fake_instance_on_its_primary(c: InstanceCluster) -> None:
    ok(submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": FAKE}))
    assert fake_running(c, FAKE_NODE)
    assert not fake_running(c, "node1") and not fake_running(c, "node3")
    raw = inst_raw(c, FAKE)
    assert raw["admin_state"] == "up" and raw["disks_active"] is True
    assert disk_links(c, FAKE_NODE, FAKE) == [f"{FAKE}:0"]
    assert disk_links(c, "node1", FAKE) == [] and disk_links(c, "node3", FAKE) == []
    only_on(c, FAKE_NODE, FAKE)


def test_startup_of_a_running_instance_changes_nothing_on_the_node(c: InstanceCluster) -> None:
    inode = fake_state_inode(c)
    ok(submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": FAKE}))
    assert fake_state_inode(c) == inode
    assert inst_raw(c, FAKE)["admin_state"] == "up"


def test_info_shows_the_live_state_and_the_disk_on_the_primary(c: InstanceCluster) -> None:
    out = ok(c.gnt("gnt-instance", "info", FAKE))
    assert f"Instance name: {FAKE}" in out
    assert "State: configured to be up, actual state is up" in out
    assert "primary: node2" in out
    assert "Hypervisor: fake" in out
    assert "Disk template: file" in out
    assert "mode: routed" in out and f"IP: {FAKE_IP}" in out
    disk_path = str(c.file_dir(FAKE_NODE) / FAKE)
    on_primary = [line for line in out.splitlines() if "on primary:" in line]
    assert len(on_primary) == 1 and disk_path in on_primary[0], out


def test_static_info_has_no_live_state(c: InstanceCluster) -> None:
    out = ok(c.gnt("gnt-instance", "info", "-s", FAKE))
    assert "State: configured to be up\n" in out or out.count("State: configured to be up") == 1
    assert "actual state" not in out
    assert "on primary" not in out
    assert f"Instance name: {FAKE}" in out


def test_info_of_all_instances_and_of_an_unknown_one(c: InstanceCluster) -> None:
    out = ok(c.gnt("gnt-instance", "info", "--all"))
    assert f"Instance name: {FAKE}" in out and f"Instance name: {KVM}" in out
    assert "configured to be down, actual state is down" in out  # ikvm
    serial = c.serial()
    done = c.gnt("gnt-instance", "info", "nosuch")
    assert done.returncode != 0
    assert "Instance 'nosuch' not known" in done.stderr + done.stdout
    assert c.serial() == serial


def test_soft_reboot_leaves_the_fake_instance_running(c: InstanceCluster) -> None:
    inode = fake_state_inode(c)
    before = last_reason(c, FAKE_NODE, FAKE)
    assert before[0].endswith(":start")
    ok(submit(c, {"OP_ID": "OP_INSTANCE_REBOOT", "instance_name": FAKE, "reboot_type": "soft"}))
    assert fake_state_inode(c) == inode  # the fake hypervisor's soft reboot keeps the instance
    assert last_reason(c, FAKE_NODE, FAKE) == before  # instance_reboot soft: no new start
    assert inst_raw(c, FAKE)["admin_state"] == "up"


def test_hard_reboot_restarts_the_fake_instance(c: InstanceCluster) -> None:
    before = last_reason(c, FAKE_NODE, FAKE)
    ok(submit(c, {"OP_ID": "OP_INSTANCE_REBOOT", "instance_name": FAKE, "reboot_type": "hard"}))
    assert fake_running(c, FAKE_NODE)
    source, stamp = last_reason(c, FAKE_NODE, FAKE)
    assert source.endswith(":reboot") and stamp > before[1]  # the node's instance_reboot restarted it
    assert disk_links(c, FAKE_NODE, FAKE) == [f"{FAKE}:0"]


def test_full_reboot_stops_and_starts_with_the_disks(c: InstanceCluster) -> None:
    before = last_reason(c, FAKE_NODE, FAKE)
    ok(submit(c, {"OP_ID": "OP_INSTANCE_REBOOT", "instance_name": FAKE, "reboot_type": "full"}))
    assert fake_running(c, FAKE_NODE)
    source, stamp = last_reason(c, FAKE_NODE, FAKE)
    assert source.endswith(":start") and stamp > before[1]  # instance_shutdown, then instance_start
    raw = inst_raw(c, FAKE)
    assert raw["admin_state"] == "up" and raw["disks_active"] is True
    assert disk_links(c, FAKE_NODE, FAKE) == [f"{FAKE}:0"]


def test_deactivate_disks_is_refused_while_the_instance_runs(c: InstanceCluster) -> None:
    serial = c.serial()
    done = c.gnt("gnt-instance", "deactivate-disks", FAKE)
    assert done.returncode != 0
    assert f"Instance '{FAKE}' is marked to be up, cannot shutdown disks" in done.stderr + done.stdout
    assert c.serial() == serial
    assert disk_links(c, FAKE_NODE, FAKE) == [f"{FAKE}:0"]


def test_console_of_the_fake_instance_is_a_message(c: InstanceCluster) -> None:
    out = ok(submit(c, {"OP_ID": "OP_INSTANCE_CONSOLE", "instance_name": FAKE}, console=True))
    assert out.strip() == "Console not available for fake hypervisor"


def test_shutdown_stops_the_instance_and_its_disks(c: InstanceCluster) -> None:
    ok(submit(c, {"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": FAKE}))
    assert not any(fake_running(c, n) for n in ADDRESSES)
    raw = inst_raw(c, FAKE)
    assert raw["admin_state"] == "down" and raw["disks_active"] is False
    assert disk_links(c, FAKE_NODE, FAKE) == []
    only_on(c, FAKE_NODE, FAKE)  # the disk itself stays
    out = ok(c.gnt("gnt-instance", "info", FAKE))
    assert "State: configured to be down, actual state is down" in out


def test_console_of_a_stopped_instance_is_refused(c: InstanceCluster) -> None:
    done = submit(c, {"OP_ID": "OP_INSTANCE_CONSOLE", "instance_name": FAKE}, console=True)
    assert done.returncode != 0
    assert f"Instance {FAKE} is not running (state ADMIN_down)" in done.stderr


def test_activate_and_deactivate_disks(c: InstanceCluster) -> None:
    out = ok(c.gnt("gnt-instance", "activate-disks", FAKE))
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    node, iv_name, dev_path = lines[0].split(":", 2)
    assert (node, iv_name) == (FAKE_NODE, "disk/0")
    assert Path(dev_path).is_file() and dev_path.startswith(str(c.file_dir(FAKE_NODE) / FAKE))
    assert disk_links(c, FAKE_NODE, FAKE) == [f"{FAKE}:0"]
    assert os.path.realpath(c.root(FAKE_NODE) / "var/run/ganeti/instance-disks" / f"{FAKE}:0") == dev_path
    assert inst_raw(c, FAKE)["disks_active"] is True
    assert not fake_running(c, FAKE_NODE)
    ok(c.gnt("gnt-instance", "deactivate-disks", FAKE))
    assert disk_links(c, FAKE_NODE, FAKE) == []
    assert inst_raw(c, FAKE)["disks_active"] is False
    only_on(c, FAKE_NODE, FAKE)


def test_reboot_of_a_stopped_instance_starts_it(c: InstanceCluster) -> None:
    done = ok(submit(c, {"OP_ID": "OP_INSTANCE_REBOOT", "instance_name": FAKE, "reboot_type": "soft"}))
    assert fake_running(c, FAKE_NODE)
    assert inst_raw(c, FAKE)["admin_state"] == "up"
    assert done is not None
    ok(submit(c, {"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": FAKE, "no_remember": True}))
    assert not fake_running(c, FAKE_NODE)
    assert inst_raw(c, FAKE)["admin_state"] == "up"  # no_remember: the configuration keeps "up"
    ok(submit(c, {"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": FAKE}))
    assert inst_raw(c, FAKE)["admin_state"] == "down"


def test_startup_with_temporary_parameters_and_forced_deactivate_disks(c: InstanceCluster) -> None:
    serial = c.serial()
    be_before = inst_raw(c, FAKE)["beparams"]
    ok(submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": FAKE, "beparams": {"maxmem": "256M"},
                  "hvparams": {"migration_mode": "non-live"}}))
    state = (c.root(FAKE_NODE) / "var/run/ganeti/fake-hypervisor" / FAKE).read_text().split("\n")
    assert state[1] == "256"  # the fake hypervisor started it with the temporary maxmem
    raw = inst_raw(c, FAKE)
    assert raw["beparams"] == be_before and raw["hvparams"].get("migration_mode") is None
    assert c.serial() > serial  # admin state up
    ok(c.gnt("gnt-instance", "deactivate-disks", "-f", FAKE))
    assert disk_links(c, FAKE_NODE, FAKE) == [] and inst_raw(c, FAKE)["disks_active"] is False
    assert fake_running(c, FAKE_NODE)  # only the disks went
    ok(submit(c, {"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": FAKE}))
    assert not fake_running(c, FAKE_NODE)


def test_startup_with_invalid_hypervisor_parameters(c: InstanceCluster) -> None:
    serial = c.serial()
    done = submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": FAKE,
                      "hvparams": {"migration_mode": "sideways"}})
    assert done.returncode != 0
    assert "Parameter 'migration_mode' fails syntax check: invalid migration mode (current value:" \
           " 'sideways')" in done.stderr, done.stderr
    assert c.serial() == serial and not fake_running(c, FAKE_NODE)
    done = submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": FAKE, "hvparams": {"no_such": "1"}})
    assert done.returncode != 0 and "Parameter 'no_such' is not supported" in done.stderr, done.stderr
    assert c.serial() == serial and not fake_running(c, FAKE_NODE)


def test_startup_no_remember_keeps_the_admin_state(c: InstanceCluster) -> None:
    ok(submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": FAKE, "no_remember": True}))
    assert fake_running(c, FAKE_NODE)
    assert inst_raw(c, FAKE)["admin_state"] == "down"
    ok(submit(c, {"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": FAKE, "force": True}))
    assert not fake_running(c, FAKE_NODE)


def test_activate_disks_ignoring_the_size_and_waiting_for_sync(c: InstanceCluster) -> None:
    out = ok(c.gnt("gnt-instance", "activate-disks", "--ignore-size", "--wait-for-sync", FAKE))
    assert f"INFO: Instance {FAKE}'s disks are in sync" in out, out  # the feedback, then the disks
    node, iv_name, dev_path = out.strip().splitlines()[-1].split(":", 2)
    assert (node, iv_name) == (FAKE_NODE, "disk/0") and Path(dev_path).is_file()
    assert disk_links(c, FAKE_NODE, FAKE) == [f"{FAKE}:0"]
    ok(c.gnt("gnt-instance", "deactivate-disks", FAKE))
    assert disk_links(c, FAKE_NODE, FAKE) == []


def test_activate_disks_with_a_missing_disk_file(c: InstanceCluster) -> None:
    disk = next((c.file_dir(FAKE_NODE) / FAKE).iterdir())
    aside = disk.with_name(disk.name + ".aside")
    disk.rename(aside)
    try:
        done = c.gnt("gnt-instance", "activate-disks", FAKE)
        assert done.returncode != 0
        text = done.stdout + done.stderr
        assert f"Could not prepare block device disk/0 on node {FAKE_NODE} (is_primary=True, pass=2)" in text
        assert "Cannot activate block devices" in text
        assert inst_raw(c, FAKE)["disks_active"] is False
        assert disk_links(c, FAKE_NODE, FAKE) == []
    finally:
        aside.rename(disk)
    only_on(c, FAKE_NODE, FAKE)


def _hook(c: InstanceCluster, node: str, hpath: str, phase: str, body: str) -> Path:
    directory = c.root(node) / "etc/ganeti/hooks" / f"{hpath}-{phase}.d"
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "10-test"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_hooks_of_startup_and_a_failing_shutdown_pre_hook(c: InstanceCluster) -> None:
    record = c.base / "hook-env"
    scripts = [_hook(c, FAKE_NODE, "instance-start", phase, f"env | grep ^GANETI_ > {record}.{phase}")
               for phase in ("pre", "post")]
    try:
        ok(submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": FAKE, "force": True}))
        pre = _env_file(Path(f"{record}.pre"))
        post = _env_file(Path(f"{record}.post"))
    finally:
        for script in scripts:
            script.unlink()
    assert pre["GANETI_HOOKS_PATH"] == "instance-start" and pre["GANETI_HOOKS_PHASE"] == "pre"
    assert pre["GANETI_OP_CODE"] == "OP_INSTANCE_STARTUP" and pre["GANETI_OBJECT_TYPE"] == "INSTANCE"
    assert pre["GANETI_FORCE"] == "True" and pre["GANETI_INSTANCE_NAME"] == FAKE
    assert pre["GANETI_INSTANCE_PRIMARY"] == FAKE_NODE and pre["GANETI_INSTANCE_STATUS"] == "down"
    assert post["GANETI_HOOKS_PHASE"] == "post" and post["GANETI_POST_INSTANCE_STATUS"] == "up"
    assert fake_running(c, FAKE_NODE)

    failing = _hook(c, "node1", "instance-stop", "pre", "echo no stopping today; exit 1")
    try:
        serial = c.serial()
        done = submit(c, {"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": FAKE})
        assert done.returncode != 0
        assert "no stopping today" in done.stderr, done.stderr
        assert c.serial() == serial
        assert fake_running(c, FAKE_NODE) and inst_raw(c, FAKE)["admin_state"] == "up"
    finally:
        failing.unlink()
    ok(submit(c, {"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": FAKE}))
    assert not fake_running(c, FAKE_NODE) and inst_raw(c, FAKE)["admin_state"] == "down"


# --- bad input ---------------------------------------------------------------------------------

def test_startup_of_an_unknown_instance(c: InstanceCluster) -> None:
    serial = c.serial()
    done = submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": "nosuch"})
    assert done.returncode != 0
    assert "Instance 'nosuch' not known" in done.stderr
    assert c.serial() == serial


def test_startup_beyond_the_free_memory_of_the_node(c: InstanceCluster) -> None:
    serial = c.serial()
    done = submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": FAKE,
                      "beparams": {"memory": "64T"}})
    assert done.returncode != 0
    text = done.stderr
    assert f"Not enough memory on node {FAKE_NODE} for starting instance {FAKE}: needed 67108864 MiB," \
           " available " in text, text
    assert c.serial() == serial
    assert not fake_running(c, FAKE_NODE)
    assert disk_links(c, FAKE_NODE, FAKE) == []
    assert inst_raw(c, FAKE)["admin_state"] == "down"


def test_startup_on_an_offline_primary_is_refused(c: InstanceCluster) -> None:
    ok(c.gnt("gnt-node", "modify", "-O", "yes", "--force", FAKE_NODE, timeout=120))
    try:
        serial = c.serial()
        done = submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": FAKE})
        assert done.returncode != 0
        assert f"Can't use offline node {FAKE_NODE}" in done.stderr
        assert c.serial() == serial
        assert inst_raw(c, FAKE)["admin_state"] == "down"
        assert not fake_running(c, FAKE_NODE)
        done = c.gnt("gnt-instance", "info", FAKE)
        assert done.returncode == 0, done.stderr
        assert f"Primary node {FAKE_NODE} is marked offline, returning static information only" \
            in done.stdout + done.stderr
        assert "State: configured to be down\n" in done.stdout and "actual state" not in done.stdout
        # ignore_offline_nodes: only the configuration changes
        out = ok(submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": FAKE,
                            "ignore_offline_nodes": True}))
        assert "Primary node offline, marked instance as started" in out
        assert inst_raw(c, FAKE)["admin_state"] == "up" and not fake_running(c, FAKE_NODE)
        ok(submit(c, {"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": FAKE, "ignore_offline_nodes": True}))
        assert inst_raw(c, FAKE)["admin_state"] == "down"
    finally:
        ok(c.gnt("gnt-node", "modify", "-O", "no", "--force", FAKE_NODE, timeout=120))


def test_deactivate_disks_of_an_unknown_instance(c: InstanceCluster) -> None:
    serial = c.serial()
    done = c.gnt("gnt-instance", "deactivate-disks", "nosuch")
    assert done.returncode != 0 and "Instance 'nosuch' not known" in done.stderr + done.stdout
    assert c.serial() == serial


# --- the kvm instance --------------------------------------------------------------------------

def test_startup_paused_runs_qemu_on_the_primary(c: InstanceCluster) -> None:
    ok(submit(c, {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": KVM, "startup_paused": True}))
    pid = kvm_pid(c)
    assert pid is not None
    assert pid in c.qemu_pids()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert str(c.root(KVM_NODE)) in cmdline
    for node in ("node1", "node2"):
        assert not (kvm_dir(c, node) / "pid" / KVM).exists()
    assert inst_raw(c, KVM)["admin_state"] == "up"
    assert disk_links(c, KVM_NODE, KVM) == [f"{KVM}:0"]
    only_on(c, KVM_NODE, KVM)
    out = ok(c.gnt("gnt-instance", "info", KVM))
    assert "State: configured to be up, actual state is up" in out
    assert "Hypervisor: kvm" in out


def _console_command(c: InstanceCluster) -> tuple[list[str], str]:
    """Debian's `gnt-instance console --show-cmd` output for ikvm: (ssh argv, the remote shell command)."""
    out = ok(submit(c, {"OP_ID": "OP_INSTANCE_CONSOLE", "instance_name": KVM}, console=True))
    argv = shlex.split(out.strip())
    assert argv[0] == "ssh" and f"root@{KVM_NODE}" in argv, argv
    assert "-t" in argv  # a terminal for the console
    remote = " ".join(argv[argv.index(f"root@{KVM_NODE}") + 1:])
    return argv, remote


def _reader(fd_or_sock: Any, sink: list[bytes], stop: threading.Event) -> None:
    def read() -> None:
        while not stop.is_set():
            try:
                if isinstance(fd_or_sock, socket.socket):
                    data = fd_or_sock.recv(4096)
                else:
                    data = os.read(fd_or_sock, 4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            sink.append(data)
    threading.Thread(target=read, daemon=True).start()


def test_console_command_unpauses_and_shows_the_serial_console(c: InstanceCluster) -> None:
    """The command ssh would run on node3, run here (node3 is this machine) on a terminal."""
    _, remote = _console_command(c)
    words = shlex.split(remote)
    assert "/usr/lib/ganeti/tools/kvm-console-wrapper" in words and KVM in words
    serial = [w for w in words if w.startswith("UNIX-CONNECT:")]
    assert len(serial) == 1 and Path(serial[0].split(":", 1)[1]).is_socket()
    assert serial[0].split(":", 1)[1].startswith(str(kvm_dir(c)))
    main, side = pty.openpty()
    proc = subprocess.Popen(["/bin/sh", "-c", remote], stdin=side, stdout=side, stderr=side,
                            start_new_session=True)
    os.close(side)
    sink: list[bytes] = []
    stop = threading.Event()
    _reader(main, sink, stop)
    try:
        expected = f"ganeti-ng tiny OS booted: {KVM}".encode()
        assert wait_for(lambda: expected in b"".join(sink), 90), b"".join(sink)
        assert f"Instance {KVM} is paused, unpausing".encode() in b"".join(sink)
    finally:
        stop.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        os.close(main)


def test_soft_reboot_of_kvm_boots_the_guest_again_in_the_same_qemu(c: InstanceCluster) -> None:
    _, remote = _console_command(c)
    path = next(w for w in shlex.split(remote) if w.startswith("UNIX-CONNECT:")).split(":", 1)[1]
    sink: list[bytes] = []
    stop = threading.Event()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    conn.settimeout(0.2)
    _reader(conn, sink, stop)
    try:
        pid = kvm_pid(c)
        ok(submit(c, {"OP_ID": "OP_INSTANCE_REBOOT", "instance_name": KVM, "reboot_type": "soft"}))
        expected = f"ganeti-ng tiny OS booted: {KVM}".encode()
        assert wait_for(lambda: expected in b"".join(sink), 60), b"".join(sink)
        assert kvm_pid(c) == pid  # system_reset in the same qemu process
    finally:
        stop.set()
        conn.close()


def test_hard_and_full_reboot_of_the_kvm_instance(c: InstanceCluster) -> None:
    pid = kvm_pid(c)
    # the tiny OS ignores ACPI powerdown: a short shutdown timeout, then qemu is stopped
    ok(submit(c, {"OP_ID": "OP_INSTANCE_REBOOT", "instance_name": KVM, "reboot_type": "hard",
                  "shutdown_timeout": 2}))
    hard = kvm_pid(c)
    assert hard is not None and hard != pid and not alive(pid or 0)
    ok(submit(c, {"OP_ID": "OP_INSTANCE_REBOOT", "instance_name": KVM, "reboot_type": "full",
                  "shutdown_timeout": 2}))
    full = kvm_pid(c)
    assert full is not None and full != hard
    assert c.qemu_pids() == [full]
    assert inst_raw(c, KVM)["admin_state"] == "up"
    assert disk_links(c, KVM_NODE, KVM) == [f"{KVM}:0"]


# --- the master daemon restarted -------------------------------------------------------------

def test_the_instance_outlives_the_master_daemon(c: InstanceCluster) -> None:
    qemu = kvm_pid(c)
    assert qemu is not None
    jobs_before = ok(c.gnt("gnt-job", "list", "--no-headers", "-o", "id,status"))
    listing = ("gnt-instance", "list", "--no-headers", "-o", "name,pnode,admin_state,oper_state")
    list_before = c.gnt(*listing)  # where the master has an instance query
    config_before = c.config().tree
    masterd = c.pid_of("node1", "ganeti-masterd")
    assert masterd is not None and alive(masterd)
    os.kill(masterd, signal.SIGTERM)
    assert wait_for(lambda: not alive(masterd), 30)
    assert alive(qemu) and kvm_pid(c) == qemu
    with socket.socket(socket.AF_UNIX) as luxi, pytest.raises(OSError):  # no master to answer
        luxi.connect(str(c.root("node1") / "var/run/ganeti/socket/ganeti-query"))
    started = subprocess.run([str(BIN / "ganeti-masterd"), "--grpc-port", "0"], env=c.env,
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    new_master = c.pid_of("node1", "ganeti-masterd")
    assert new_master is not None and new_master != masterd and alive(new_master)
    assert c.config().tree == config_before
    assert ok(c.gnt("gnt-job", "list", "--no-headers", "-o", "id,status")) == jobs_before
    out = ok(c.gnt("gnt-instance", "info", KVM))
    assert "State: configured to be up, actual state is up" in out
    if list_before.returncode == 0:
        assert f"{KVM} {KVM_NODE} up Y" in " ".join(list_before.stdout.split())
        assert ok(c.gnt(*listing)) == list_before.stdout
    assert alive(qemu) and kvm_pid(c) == qemu


def test_shutdown_stops_qemu(c: InstanceCluster) -> None:
    pid = kvm_pid(c)
    assert pid is not None
    ok(submit(c, {"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": KVM, "timeout": 5}))
    assert wait_for(lambda: not alive(pid), 30)
    assert kvm_pid(c) is None and c.qemu_pids() == []
    raw = inst_raw(c, KVM)
    assert raw["admin_state"] == "down" and raw["disks_active"] is False
    assert disk_links(c, KVM_NODE, KVM) == []
    only_on(c, KVM_NODE, KVM)


# --- Debian's gnt-instance commands that need the instance query --------------------------------

def test_debian_gnt_instance_commands(c: InstanceCluster) -> None:
    """Debian's gnt-instance startup/reboot/console/shutdown themselves (they expand names by a query)."""
    if c.gnt("gnt-instance", "list").returncode != 0:
        pytest.skip("our master has no instance query yet (gnt-instance startup expands names with it)")
    ok(c.gnt("gnt-instance", "startup", FAKE))
    assert fake_running(c, FAKE_NODE) and inst_raw(c, FAKE)["admin_state"] == "up"
    for kind in ("soft", "hard", "full"):
        before = last_reason(c, FAKE_NODE, FAKE)
        ok(c.gnt("gnt-instance", "reboot", "--type", kind, FAKE))
        assert fake_running(c, FAKE_NODE)
        assert (last_reason(c, FAKE_NODE, FAKE) == before) == (kind == "soft")
    out = ok(c.gnt("gnt-instance", "console", "--show-cmd", FAKE))
    assert out.strip() == "Console not available for fake hypervisor"
    ok(c.gnt("gnt-instance", "shutdown", FAKE))
    assert not fake_running(c, FAKE_NODE) and inst_raw(c, FAKE)["admin_state"] == "down"
    assert disk_links(c, FAKE_NODE, FAKE) == []

    ok(c.gnt("gnt-instance", "startup", KVM))
    pid = kvm_pid(c)
    assert pid is not None and c.qemu_pids() == [pid]
    out = ok(c.gnt("gnt-instance", "console", "--show-cmd", KVM))
    argv = shlex.split(out.strip())
    assert argv[0] == "ssh" and f"root@{KVM_NODE}" in argv
    serial = [w for w in shlex.split(" ".join(argv[argv.index(f"root@{KVM_NODE}") + 1:]))
              if w.startswith("UNIX-CONNECT:")]
    assert len(serial) == 1 and Path(serial[0].split(":", 1)[1]).is_socket()
    ok(c.gnt("gnt-instance", "shutdown", "--timeout", "2", KVM))
    assert wait_for(lambda: not alive(pid), 30) and kvm_pid(c) is None
    assert inst_raw(c, KVM)["admin_state"] == "down"

    serial_no = c.serial()
    done = c.gnt("gnt-instance", "startup", "nosuch")
    assert done.returncode != 0 and done.stderr.startswith("Failure: prerequisites not met"), done.stderr
    assert c.serial() == serial_no
