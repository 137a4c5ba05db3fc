"""Instances outlive the node daemon: SIGKILL every process of the daemon while an instance runs,
start the daemon again, and the instance is still there."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from support import NodeRoot, RunningNoded, start_noded

NAME = "inst1.example.com"
FAKE = {"migration_mode": "live"}


def _session_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # the fields after the command name, which is in parentheses and may hold spaces
    return int(stat[stat.rindex(")") + 2:].split()[3])


def _daemon_processes(pid: int) -> list[int]:
    """The daemon's main process and every process in its session (the legacy door workers)."""
    session = _session_of(pid)
    assert session != os.getsid(0), "the daemon shares the test's session: refusing to kill it"
    found = [pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            if _session_of(int(entry)) == session:
                found.append(int(entry))
        except (OSError, ValueError):
            continue  # gone meanwhile
    return found


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _fake_instance(node: NodeRoot) -> dict[str, Any]:
    disk_dir = Path(node.paths.file_storage_dir) / NAME
    disk_dir.mkdir(parents=True, exist_ok=True)
    with open(disk_dir / "disk0", "wb") as f:
        f.truncate(1024 * 1024)
    Path(node.paths.file_storage_paths_file).write_text(f"{node.paths.file_storage_dir}\n")
    return {"name": NAME, "hypervisor": "fake", "hvparams": FAKE, "os": "noop",
            "beparams": {"maxmem": 128, "minmem": 64, "vcpus": 1},
            "osparams": {}, "nics": [], "disks": ["disk-uuid-0"], "secondary_nodes": [],
            "disks_info": [{"dev_type": "file", "logical_id": ["loop", str(disk_dir / "disk0")],
                            "children": [], "iv_name": "disk/0", "size": 1, "mode": "rw",
                            "params": {}, "uuid": "disk-uuid-0"}],
            "uuid": "inst-uuid-1", "admin_state": "up"}


def test_a_fake_instance_survives_the_node_daemon_being_killed(noded: RunningNoded) -> None:
    inst = _fake_instance(noded.node)
    assert noded.call("instance_start", inst, False, []) == [True, None]
    assert noded.call("instance_list", ["fake"], {"fake": FAKE}) == [True, [NAME]]

    pid = int(Path(noded.paths.noded_pid_file).read_text())
    victims = _daemon_processes(pid)
    assert len(victims) >= 2, "expected the main process and its legacy door workers"
    for victim in victims:
        os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not all(_gone(v) for v in victims) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(v) for v in victims)

    again = start_noded(noded.node, noded.address)
    try:
        assert again.pid != pid
        assert again.call("instance_list", ["fake"], {"fake": FAKE}) == [True, [NAME]]
        assert again.call("instance_info", NAME, "fake", FAKE) == [
            True, {"memory": 128, "vcpus": 1, "state": 0, "time": 0}]
        assert again.call("instance_shutdown", inst, 5, []) == [True, None]
        assert again.call("instance_list", ["fake"], {"fake": FAKE}) == [True, []]
    finally:
        again.stop()
