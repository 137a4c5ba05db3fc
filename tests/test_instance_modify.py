"""Changing instances on our three-node cluster with Debian's gnt-instance / gnt-node, checked on the nodes.

One cluster for the module (tests/instance_cluster.py, 127.0.15.x, cluster IP
127.0.15.100): a fake instance ``inst1`` (file disk on node2), a fake
instance ``inst2`` (file disk on node1) and a kvm instance ``ikvm`` (tiny OS,
file disk on node3, started for the hotplug tests). Debian's real tools run
against our master: gnt-instance modify (-B, -H, --disk add/remove, --net
add/modify/remove, --offline/--online, --hotplug, -m), grow-disk, rename,
reinstall, add-tags/list-tags/remove-tags and gnt-node add-tags/list-tags.
After each change the configuration (config.data on the master), the disk
files below the node roots and, for hotplug, the running qemu (its QMP
socket) are looked at. Bad input fails with Ganeti's message and leaves the
configuration serial unchanged.

The tests run in file order and share the cluster's state.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster_support import needs_cluster  # isort: skip
from instance_cluster import InstanceCluster, build_cluster  # isort: skip

ADDRESSES = {"node1": "127.0.15.1", "node2": "127.0.15.2", "node3": "127.0.15.3"}
CLUSTER_IP = "127.0.15.100"
INSTANCES = {"inst1": "127.0.15.50", "inst2": "127.0.15.51", "ikvm": "127.0.15.52", "inst1new": "127.0.15.53"}
QEMU = "/usr/bin/kvm"
MIB = 1024 * 1024

pytestmark = [needs_cluster, pytest.mark.skipif(not os.path.exists(QEMU), reason="needs qemu (/usr/bin/kvm)")]


@pytest.fixture(scope="module")
def c() -> Iterator[InstanceCluster]:
    with build_cluster("gm", ADDRESSES, CLUSTER_IP, instances=INSTANCES) as made:
        for name, node in (("inst1", "node2"), ("inst2", "node1")):
            done = made.gnt("gnt-instance", "add", "-n", node, "-t", "file", "-o", "noop", "--no-ip-check",
                            "--no-start", "-H", "fake", "-B", "memory=128M", "--disk", "0:size=1G",
                            "--net", f"0:mode=routed,ip={INSTANCES[name]}", name)
            assert done.returncode == 0, done.stdout + done.stderr
        done = made.gnt("gnt-instance", "add", "-n", "node3", "-t", "file", "-o", "tiny+default",
                        "--no-ip-check", "--no-start", "--ignore-ipolicy", "-H", "kvm", "-B", "memory=64M",
                        "--disk", "0:size=1G", "--net", f"0:mode=routed,ip={INSTANCES['ikvm']}", "ikvm")
        assert done.returncode == 0, done.stdout + done.stderr
        yield made


# --- helpers ---------------------------------------------------------------------------------

def ok(c: InstanceCluster, tool: str, *args: str) -> str:
    done = c.gnt(tool, *args)
    assert done.returncode == 0, f"{tool} {args}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def fails(c: InstanceCluster, tool: str, *args: str) -> str:
    """The command fails and changes nothing in the configuration; its output."""
    before = c.serial()
    done = c.gnt(tool, *args)
    assert done.returncode != 0, f"{tool} {args} succeeded: {done.stdout}"
    assert c.serial() == before
    return done.stdout + done.stderr


def inst(c: InstanceCluster, name: str) -> dict[str, Any]:
    cfg = c.config()
    [raw] = [i for i in cfg.tree["instances"].values() if i["name"] == name]
    return dict(raw)


def disks(c: InstanceCluster, name: str) -> list[dict[str, Any]]:
    cfg = c.config()
    return [dict(cfg.tree["disks"][u]) for u in inst(c, name)["disks"]]


def disk_file(c: InstanceCluster, node: str, disk: dict[str, Any]) -> Path:
    """Where a file disk of the configuration lives below the node's root."""
    path = str(disk["logical_id"][1])
    master_root = str(c.root("node1"))
    assert path.startswith(master_root + "/")
    return c.root(node) / path[len(master_root) + 1:]


def qmp(c: InstanceCluster, command: str, arguments: dict[str, Any] | None = None) -> Any:
    """One QMP command to ikvm's qemu on node3."""
    path = c.root("node3") / "var/run/ganeti/kvm-hypervisor/ctrl/ikvm.qmp"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        stream = sock.makefile("rw")
        stream.readline()  # greeting

        def run(name: str, args: dict[str, Any] | None = None) -> Any:
            stream.write(json.dumps({"execute": name, **({"arguments": args} if args else {})}) + "\n")
            stream.flush()
            while True:
                answer = json.loads(stream.readline())
                if "return" in answer:
                    return answer["return"]
                assert "error" not in answer, answer

        run("qmp_capabilities")
        return run(command, arguments)


def peripherals(c: InstanceCluster) -> list[str]:
    return [child["name"] for child in qmp(c, "qom-list", {"path": "/machine/peripheral"})
            if str(child.get("type", "")).startswith("child<")]


def has_device(names: list[str], kind: str, uuid: str) -> bool:
    """Whether qemu has Ganeti's device id for the disk/NIC with that uuid (<kind>-<uuid prefix>)."""
    return any(n.startswith(f"{kind}-") and uuid.startswith(n[len(kind) + 1:]) for n in names)


# --- parameters --------------------------------------------------------------------------------

def test_modify_memory(c: InstanceCluster) -> None:
    before = c.serial()
    out = ok(c, "gnt-instance", "modify", "-B", "memory=256M", "inst1")
    assert "Modified instance inst1" in out and " - be/memory -> 256" in out
    assert inst(c, "inst1")["beparams"] == {"maxmem": 256, "minmem": 256}
    assert c.serial() > before
    out = ok(c, "gnt-instance", "modify", "-B", "vcpus=2,maxmem=512M", "inst1")
    assert " - be/vcpus -> 2" in out and " - be/maxmem -> 512" in out
    assert inst(c, "inst1")["beparams"] == {"maxmem": 512, "minmem": 256, "vcpus": 2}


def test_modify_hypervisor_and_os_parameters(c: InstanceCluster) -> None:
    out = ok(c, "gnt-instance", "modify", "-H", "kernel_path=/boot/vmlinuz-test", "inst1")
    assert " - hv/kernel_path -> /boot/vmlinuz-test" in out
    assert inst(c, "inst1")["hvparams"]["kernel_path"] == "/boot/vmlinuz-test"
    out = ok(c, "gnt-instance", "modify", "-H", "kernel_path=default", "inst1")
    assert "kernel_path" not in inst(c, "inst1")["hvparams"]


def test_add_and_remove_a_disk(c: InstanceCluster) -> None:
    out = ok(c, "gnt-instance", "modify", "--disk", "add:size=1G", "inst1")
    assert " - disk/1 -> add:size=1024,mode=rw" in out
    found = disks(c, "inst1")
    assert [d["iv_name"] for d in found] == ["disk/0", "disk/1"] and found[1]["size"] == 1024
    added = disk_file(c, "node2", found[1])
    assert added.is_file() and added.stat().st_size == 1024 * MIB
    assert added.parent == disk_file(c, "node2", found[0]).parent  # in the instance's directory

    out = ok(c, "gnt-instance", "modify", "--disk", "1:remove", "inst1")
    assert " - disk/1 -> remove" in out
    assert [d["uuid"] for d in disks(c, "inst1")] == [found[0]["uuid"]]
    assert not added.exists() and disk_file(c, "node2", found[0]).is_file()


def test_add_modify_and_remove_a_nic(c: InstanceCluster) -> None:
    out = ok(c, "gnt-instance", "modify", "--net", "add:mode=routed,ip=127.0.15.60", "inst1")
    nics = inst(c, "inst1")["nics"]
    assert len(nics) == 2 and nics[1]["ip"] == "127.0.15.60" and nics[1]["nicparams"]["mode"] == "routed"
    assert f" - nic.1 -> add:mac={nics[1]['mac']},ip=127.0.15.60,mode=routed," in out
    assert nics[1]["mac"] != nics[0]["mac"]

    out = ok(c, "gnt-instance", "modify", "--net", "1:ip=127.0.15.61,name=second", "inst1")
    assert " - nic.ip/1 -> 127.0.15.61" in out and " - nic.name/1 -> second" in out
    nics = inst(c, "inst1")["nics"]
    assert nics[1]["ip"] == "127.0.15.61" and nics[1]["name"] == "second"

    out = ok(c, "gnt-instance", "modify", "--net", "second:remove", "inst1")
    assert " - nic/1 -> remove" in out
    assert [n["ip"] for n in inst(c, "inst1")["nics"]] == ["127.0.15.50"]


def test_change_the_os(c: InstanceCluster) -> None:
    out = fails(c, "gnt-instance", "modify", "-o", "nosuchos", "inst2")
    assert "OS Parameters validation failed on node node1" in out
    ok(c, "gnt-instance", "modify", "-o", "tiny+default", "inst2")
    assert inst(c, "inst2")["os"] == "tiny+default"
    ok(c, "gnt-instance", "modify", "-o", "noop", "inst2")
    assert inst(c, "inst2")["os"] == "noop"


def test_hotplug_if_possible_on_the_fake_hypervisor(c: InstanceCluster) -> None:
    out = ok(c, "gnt-instance", "modify", "--hotplug-if-possible", "-B", "vcpus=1", "inst2")
    assert "Modification will take place without hotplugging." in out and " - be/vcpus -> 1" in out
    assert inst(c, "inst2")["beparams"]["vcpus"] == 1


def test_offline_and_online(c: InstanceCluster) -> None:
    out = ok(c, "gnt-instance", "modify", "--offline", "inst2")
    assert " - admin_state -> offline" in out and inst(c, "inst2")["admin_state"] == "offline"
    out = ok(c, "gnt-instance", "modify", "--online", "inst2")
    assert " - admin_state -> down" in out and inst(c, "inst2")["admin_state"] == "down"


def test_bad_modifications(c: InstanceCluster) -> None:
    out = fails(c, "gnt-instance", "modify", "-B", "memory=256M", "nosuch")
    assert "Instance 'nosuch' not known" in out
    out = fails(c, "gnt-instance", "modify", "-f", "-B", "memory=100G", "inst1")
    assert "violates policy: memory-size value 102400 is not in range [128, 32768]" in out
    out = fails(c, "gnt-instance", "modify", "--disk", "0:size=2G", "inst1")
    assert "Disk size change not possible, use grow-disk" in out
    out = fails(c, "gnt-instance", "modify", "--disk", "5:remove", "inst1")
    assert "Got disk index 5, but there are only 1" in out
    out = fails(c, "gnt-instance", "modify", "--net", "add:mode=routed", "inst1")
    assert "Cannot set the NIC IP address to None on a routed NIC" in out
    taken = inst(c, "inst2")["nics"][0]["mac"]
    out = fails(c, "gnt-instance", "modify", "--net", f"add:mode=routed,ip=127.0.15.62,mac={taken}", "inst1")
    assert "already in use in cluster" in out
    out = fails(c, "gnt-instance", "modify", "--hotplug", "--net", "add:mode=routed,ip=127.0.15.62", "inst1")
    assert "Hotplug is not possible" in out
    out = fails(c, "gnt-instance", "modify", "--net", "0:mode=bridged,link=nosuchbr0", "inst1")
    assert "Error checking bridges on node 'node2'" in out
    out = fails(c, "gnt-instance", "modify", "-H", "migration_port=1", "inst1")
    assert "global and cannot be customized at instance level" in out


# --- grow-disk -----------------------------------------------------------------------------------

def test_grow_disk(c: InstanceCluster) -> None:
    [disk] = disks(c, "inst1")
    path = disk_file(c, "node2", disk)
    assert path.stat().st_size == 1024 * MIB
    ok(c, "gnt-instance", "deactivate-disks", "inst1")
    assert inst(c, "inst1")["disks_active"] is False
    out = ok(c, "gnt-instance", "grow-disk", "inst1", "0", "1G")
    assert "Growing disk 0 of instance 'inst1' by 1.0G to 2.0G" in out
    assert path.stat().st_size == 2048 * MIB and disks(c, "inst1")[0]["size"] == 2048
    ok(c, "gnt-instance", "grow-disk", "--absolute", "inst1", "0", "3G")
    assert path.stat().st_size == 3072 * MIB and disks(c, "inst1")[0]["size"] == 3072
    assert inst(c, "inst1")["disks_active"] is False  # assembled for the grow, shut down again

    out = fails(c, "gnt-instance", "grow-disk", "--absolute", "inst1", "0", "2G")
    assert "Requested size (2.0G) is smaller than current disk size (3.0G)" in out
    out = fails(c, "gnt-instance", "grow-disk", "inst1", "3", "1G")
    assert "Invalid disk index" in out
    out = fails(c, "gnt-instance", "grow-disk", "inst1", "0", "2000G")
    assert "Growing disk 0 violates policy: disk-size/0 value" in out
    assert path.stat().st_size == 3072 * MIB


# --- the kvm instance: hotplug and runtime memory ------------------------------------------------

def test_hotplug_into_the_running_kvm_instance(c: InstanceCluster) -> None:
    ok(c, "gnt-instance", "start", "ikvm")
    before = peripherals(c)
    out = ok(c, "gnt-instance", "modify", "--hotplug", "--net", "add:mode=routed,ip=127.0.15.63", "ikvm")
    assert " - nic.1 -> hotplug:done" in out
    nic = inst(c, "ikvm")["nics"][1]
    assert nic["ip"] == "127.0.15.63"
    after = peripherals(c)
    assert has_device(after, "nic", nic["uuid"]) and not has_device(before, "nic", nic["uuid"])

    out = ok(c, "gnt-instance", "modify", "--hotplug", "--disk", "add:size=1G", "ikvm")
    assert " - disk/1 -> add:size=1024,mode=rw" in out and " - disk/1 -> hotplug:done" in out
    disk = disks(c, "ikvm")[1]
    assert has_device(peripherals(c), "disk", disk["uuid"])
    assert disk_file(c, "node3", disk).stat().st_size == 1024 * MIB
    runtime = (c.root("node3") / "var/run/ganeti/kvm-hypervisor/conf/ikvm.runtime").read_text()
    assert disk["uuid"] in runtime and nic["uuid"] in runtime


def test_no_disk_removal_from_a_running_instance_without_hotplug(c: InstanceCluster) -> None:
    out = fails(c, "gnt-instance", "modify", "--disk", "1:remove", "ikvm")
    assert "can't remove volume from a running instance without using hotplug" in out
    out = fails(c, "gnt-instance", "modify", "--offline", "ikvm")
    assert "can't change to offline without being down first" in out


def test_grow_a_running_disk_beyond_the_storage(c: InstanceCluster) -> None:
    disk = disks(c, "ikvm")[0]
    path = disk_file(c, "node3", disk)
    free_mib = shutil.disk_usage(path.parent).free // MIB
    out = fails(c, "gnt-instance", "grow-disk", "--ignore-ipolicy", "ikvm", "0", f"{free_mib + 10240}M")
    assert "Dry-run grow request failed to node node3" in out and "Not enough free space" in out
    assert path.stat().st_size == 1024 * MIB and disks(c, "ikvm")[0]["size"] == 1024


def test_runtime_memory(c: InstanceCluster) -> None:
    out = fails(c, "gnt-instance", "modify", "-m", "600", "ikvm")
    assert "Instance ikvm must have memory between 64 and 64 MB of memory unless --force is given" in out
    ok(c, "gnt-instance", "modify", "--ignore-ipolicy", "-B", "minmem=32M", "ikvm")
    out = ok(c, "gnt-instance", "modify", "-m", "48", "ikvm")
    assert " - runtime_memory -> 48" in out
    out = fails(c, "gnt-instance", "modify", "-m", "48", "inst1")
    assert "Instance inst1 is not running" in out


def test_hot_removal_of_a_nic_and_a_disk(c: InstanceCluster) -> None:
    # the tiny guest does not acknowledge ACPI unplug requests: Ganeti then warns and goes on
    out = ok(c, "gnt-instance", "modify", "--hotplug", "--net", "1:remove", "ikvm")
    assert " - nic/1 -> remove" in out and (" - nic/1 -> hotplug:done" in out or "hotplug:failed" in out)
    assert len(inst(c, "ikvm")["nics"]) == 1
    disk = disks(c, "ikvm")[1]
    out = ok(c, "gnt-instance", "modify", "--hotplug", "--disk", "1:remove", "ikvm")
    assert " - disk/1 -> remove" in out and (" - disk/1 -> hotplug:done" in out or "hotplug:failed" in out)
    assert [d["uuid"] for d in disks(c, "ikvm")] != [] and disk["uuid"] not in inst(c, "ikvm")["disks"]
    assert not disk_file(c, "node3", disk).exists()


# --- rename and reinstall ------------------------------------------------------------------------

def test_rename(c: InstanceCluster) -> None:
    out = fails(c, "gnt-instance", "rename", "inst1", "inst2")
    assert "Instance 'inst2' is already in the cluster" in out
    out = fails(c, "gnt-instance", "rename", "ikvm", "inst1new")
    assert "Instance 'ikvm' is marked to be up, cannot rename" in out
    old_dir = disk_file(c, "node2", disks(c, "inst1")[0]).parent
    out = ok(c, "gnt-instance", "rename", "inst1", "inst1new")
    assert "Instance 'inst1' renamed to 'inst1new'" in out
    assert "inst1" not in c.config().instance_names()
    [disk] = disks(c, "inst1new")
    assert Path(disk["logical_id"][1]).parent.name == "inst1new"
    path = disk_file(c, "node2", disk)
    assert path.is_file() and path.stat().st_size == 3072 * MIB and not old_dir.exists()


def test_reinstall(c: InstanceCluster) -> None:
    out = fails(c, "gnt-instance", "reinstall", "-f", "ikvm")
    assert "Instance 'ikvm' is marked to be up, cannot reinstall" in out
    logs = c.root("node2") / "var/log/ganeti/os"
    seen = set(logs.glob("add-*inst1new*")) if logs.exists() else set()
    out = ok(c, "gnt-instance", "reinstall", "-f", "-o", "tiny+default", "inst1new")
    assert "Running instance OS create scripts..." in out
    assert inst(c, "inst1new")["os"] == "tiny+default"
    new_logs = set(logs.glob("add-tiny+default-inst1new-*")) - seen
    assert new_logs, f"no OS create log for inst1new below {logs}"
    assert inst(c, "inst1new")["disks_active"] is False


# --- tags ----------------------------------------------------------------------------------------

def test_instance_tags(c: InstanceCluster) -> None:
    before = c.serial()
    ok(c, "gnt-instance", "add-tags", "inst2", "web", "env:prod")
    assert c.serial() > before
    assert sorted(inst(c, "inst2")["tags"]) == ["env:prod", "web"]
    assert ok(c, "gnt-instance", "list-tags", "inst2").split() == ["env:prod", "web"]
    ok(c, "gnt-instance", "remove-tags", "inst2", "web")
    assert inst(c, "inst2")["tags"] == ["env:prod"]
    out = fails(c, "gnt-instance", "remove-tags", "inst2", "web")
    assert "Tag(s) 'web' not found" in out
    out = fails(c, "gnt-instance", "add-tags", "inst2", "bad tag")
    assert "Tag contains invalid characters" in out
    out = fails(c, "gnt-instance", "add-tags", "inst2", "x" * 129)
    assert "Tag too long" in out
    out = fails(c, "gnt-instance", "add-tags", "nosuch", "web")
    assert "nosuch" in out and "not known" in out


def test_node_tags(c: InstanceCluster) -> None:
    ok(c, "gnt-node", "add-tags", "node2", "rack:1", "ssd")
    assert ok(c, "gnt-node", "list-tags", "node2").split() == ["rack:1", "ssd"]
    cfg = c.config()
    assert sorted(cfg.tree["nodes"][cfg.lookup_node("node2").uuid].get("tags") or []) == ["rack:1", "ssd"]
    ok(c, "gnt-node", "remove-tags", "node2", "ssd")
    assert ok(c, "gnt-node", "list-tags", "node2").split() == ["rack:1"]
    out = fails(c, "gnt-node", "add-tags", "nosuchnode", "x")
    assert "nosuchnode" in out
