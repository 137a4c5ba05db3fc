"""The master role: master IP, master daemons, demotion, leaving the cluster, power cycling."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from noded.backends import master
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    paths.ensure_dirs()
    return NodeContext(paths=paths)


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)
    return path


def _params(ip: str = "127.1.2.3", netmask: int = 32, netdev: str = "lo",
            family: int = socket.AF_INET) -> dict[str, Any]:
    return {"uuid": "3192824e-77c3-4e4a-8c68-30c91f7b68f0", "ip": ip, "netmask": netmask,
            "netdev": netdev, "ip_family": family}


# -- master IP in a network namespace ---------------------------------------------------

@pytest.fixture
def netns() -> Iterator[str]:
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2")
    name = f"gtest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _ns_call(netns: str, ctx: NodeContext, procedure: str, *args: Any) -> list[Any]:
    """Call a master backend inside the namespace; [ok, payload-or-message]."""
    code = f"""
import json
from noded.backends import master
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths
ctx = NodeContext(paths=Paths(root={ctx.paths.root!r}, hostname="node1"))
try:
    print(json.dumps([True, master.{procedure}(ctx, *json.loads({json.dumps(list(args))!r}))]))
except RpcFail as err:
    print(json.dumps([False, err.message]))
"""
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=60)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _ns_addresses(netns: str, dev: str = "lo") -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "ip", "-o", "addr", "show", "dev", dev],
                          capture_output=True, text=True, check=True).stdout


def test_activate_master_ip_adds_a_loopback_address(ctx: NodeContext, netns: str) -> None:
    assert _ns_call(netns, ctx, "node_activate_master_ip", _params(), False) == [True, None]
    assert " 127.1.2.3/32 " in _ns_addresses(netns)
    assert "lo:0" in _ns_addresses(netns)


def test_activating_twice_leaves_one_address(ctx: NodeContext, netns: str) -> None:
    _ns_call(netns, ctx, "node_activate_master_ip", _params(), False)
    assert _ns_call(netns, ctx, "node_activate_master_ip", _params(), False) == [True, None]
    assert _ns_addresses(netns).count("127.1.2.3/32") == 1


def test_deactivate_master_ip_removes_it(ctx: NodeContext, netns: str) -> None:
    _ns_call(netns, ctx, "node_activate_master_ip", _params(), False)
    assert _ns_call(netns, ctx, "node_deactivate_master_ip", _params(), False) == [True, None]
    assert "127.1.2.3" not in _ns_addresses(netns)


def test_deactivating_an_absent_master_ip_is_fine(ctx: NodeContext, netns: str) -> None:
    assert _ns_call(netns, ctx, "node_deactivate_master_ip", _params(), False) == [True, None]


def test_deactivate_refuses_an_address_on_another_device(ctx: NodeContext, netns: str) -> None:
    ns = ["ip", "netns", "exec", netns]
    subprocess.run([*ns, "ip", "link", "add", "gdummy0", "type", "bridge"], check=True)
    subprocess.run([*ns, "ip", "addr", "add", "10.250.0.1/32", "dev", "gdummy0"], check=True)
    assert _ns_call(netns, ctx, "node_deactivate_master_ip", _params("10.250.0.1"), False) == [
        False, "Failed to stop the master IP. Script return value: 1, output: 'Error: master IP address"
               " configured on wrong device, can't shut it down.\n'"]
    assert "10.250.0.1/32" in _ns_addresses(netns, "gdummy0")


def test_activate_on_a_missing_device_fails(ctx: NodeContext, netns: str) -> None:
    ok, msg = _ns_call(netns, ctx, "node_activate_master_ip", _params("127.1.2.3", netdev="gnodev0"), False)
    assert ok is False
    assert msg.startswith("Failed to start the master IP. Script return value: 1, output: '")
    assert msg.endswith("Error during the activation of the master IP address\n'")


def test_masterip_module_works_as_a_master_ip_setup_script(netns: str) -> None:
    env = {"PATH": os.environ["PATH"], "MASTER_IP": "127.9.9.9", "MASTER_NETMASK": "32",
           "MASTER_NETDEV": "lo", "CLUSTER_IP_VERSION": "4"}
    cmd = ["ip", "netns", "exec", netns, sys.executable, "-m", "noded.backends.masterip"]
    assert subprocess.run([*cmd, "start"], cwd=REPO, env=env, check=False).returncode == 0
    assert " 127.9.9.9/32 " in _ns_addresses(netns)
    stop = subprocess.run([*cmd, "stop"], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert stop.returncode == 0 and "127.9.9.9" not in _ns_addresses(netns)
    again = subprocess.run([*cmd, "stop"], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert again.stdout == "Master IP address not configured on this machine. Doing nothing.\n"


def test_change_master_netmask_replaces_the_prefix(ctx: NodeContext, netns: str) -> None:
    _ns_call(netns, ctx, "node_activate_master_ip", _params(netmask=32), False)
    assert _ns_call(netns, ctx, "node_change_master_netmask", 32, 30, "127.1.2.3", "lo") == [True, None]
    addrs = _ns_addresses(netns)
    assert " 127.1.2.3/30 " in addrs and "127.1.2.3/32" not in addrs


def test_change_master_netmask_needs_the_address_up(ctx: NodeContext, netns: str) -> None:
    assert _ns_call(netns, ctx, "node_change_master_netmask", 24, 25, "10.250.9.9", "lo") == [
        False, "The master IP address is not up, not attempting to change its netmask"]


def test_change_master_netmask_to_the_same_value_does_nothing(ctx: NodeContext) -> None:
    assert master.node_change_master_netmask(ctx, 32, 32, "192.0.2.200", "nodev") is None


def test_master_ip_on_host_lo_is_added_and_removed(ctx: NodeContext) -> None:
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2")
    ip = f"127.{uuid.uuid4().int % 200 + 20}.{uuid.uuid4().int % 250 + 1}.{uuid.uuid4().int % 250 + 1}"

    def on_lo() -> bool:
        out = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True,
                             check=True).stdout
        return f" {ip}/32 " in out

    assert not on_lo()
    try:
        master.node_activate_master_ip(ctx, _params(ip), False)
        assert on_lo()
        master.node_deactivate_master_ip(ctx, _params(ip), False)
        assert not on_lo()
    finally:
        subprocess.run(["ip", "addr", "del", f"{ip}/32", "dev", "lo"], capture_output=True, check=False)


# -- external script and hooks (no network change) ------------------------------------------

def test_external_mip_script_gets_the_master_environment(ctx: NodeContext, tmp_path: Path) -> None:
    record = tmp_path / "record"
    _script(Path(master.external_mip_script(ctx.paths)),
            f'#!/bin/sh\necho "$1 $(/usr/bin/env | /usr/bin/sort | /usr/bin/tr "\\n" " ")" >> {record}\n')
    master.node_activate_master_ip(ctx, _params("192.0.2.7", 24, "eth9"), True)
    master.node_deactivate_master_ip(ctx, _params("192.0.2.7", 24, "eth9"), True)
    lines = [line.split() for line in record.read_text().splitlines()]
    assert [line[0] for line in lines] == ["start", "stop"]
    env = {kv.split("=", 1)[0]: kv.split("=", 1)[1] for kv in lines[0][1:] if kv.split("=")[0] != "PWD"}
    assert env == {"CLUSTER_IP_VERSION": "4", "MASTER_IP": "192.0.2.7", "MASTER_NETDEV": "eth9",
                   "MASTER_NETMASK": "24"}


def test_a_failing_external_mip_script_is_reported(ctx: NodeContext) -> None:
    _script(Path(master.external_mip_script(ctx.paths)), "#!/bin/sh\necho no way\nexit 5\n")
    with pytest.raises(RpcFail) as err:
        master.node_activate_master_ip(ctx, _params(), True)
    assert err.value.message == "Failed to start the master IP. Script return value: 5, output: 'no way\n'"


def test_a_missing_external_mip_script_is_reported(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=r"external master IP setup script .* does not exist"):
        master.node_activate_master_ip(ctx, _params(), True)


def test_ipv6_family_gives_cluster_ip_version_6(ctx: NodeContext, tmp_path: Path) -> None:
    record = tmp_path / "record"
    _script(Path(master.external_mip_script(ctx.paths)),
            f'#!/bin/sh\necho "$CLUSTER_IP_VERSION" > {record}\n')
    master.node_activate_master_ip(ctx, _params("fd00::7", 128, "lo", socket.AF_INET6), True)
    assert record.read_text() == "6\n"


def test_master_ip_turnup_hooks_run_around_the_script(ctx: NodeContext, tmp_path: Path) -> None:
    record = tmp_path / "record"
    Path(ctx.paths.ssconf_file("cluster_name")).write_text("cluster.example.com\n")
    _script(Path(master.external_mip_script(ctx.paths)), f"#!/bin/sh\necho script >> {record}\n")
    hooks_dir = Path(ctx.paths.hooks_dir)
    _script(hooks_dir / "master-ip-turnup-pre.d" / "10-pre",
            f'#!/bin/sh\necho "pre $GANETI_OP_CODE $GANETI_MASTER_IP $GANETI_CLUSTER" >> {record}\n')
    _script(hooks_dir / "master-ip-turnup-post.d" / "10-post",
            f'#!/bin/sh\necho "post $GANETI_HOOKS_PHASE $GANETI_POST_MASTER_NETDEV" >> {record}\n')
    master.node_activate_master_ip(ctx, _params("192.0.2.7", 24, "eth9"), True)
    assert record.read_text().splitlines() == [
        "pre OP_CLUSTER_IP_TURNUP 192.0.2.7 cluster.example.com", "script", "post post eth9"]


def test_a_failing_pre_hook_keeps_the_master_ip_untouched(ctx: NodeContext, tmp_path: Path) -> None:
    record = tmp_path / "record"
    _script(Path(master.external_mip_script(ctx.paths)), f"#!/bin/sh\necho script >> {record}\n")
    _script(Path(ctx.paths.hooks_dir) / "master-ip-turndown-pre.d" / "veto", "#!/bin/sh\necho busy\nexit 1\n")
    with pytest.raises(RpcFail, match=r"master-ip-turndown-pre\.d/veto: busy"):
        master.node_deactivate_master_ip(ctx, _params(), True)
    assert not record.exists()


# -- master daemons ------------------------------------------------------------------

def test_start_master_uses_our_masterd_when_installed(ctx: NodeContext, tmp_path: Path) -> None:
    record = tmp_path / "record"
    bin_dir = tmp_path / "bin"
    _script(bin_dir / "ganeti-masterd", f'#!/bin/sh\necho "$* $GANETI_ROOTDIR" > {record}\n')
    master.start_master_daemons(ctx.paths, True, daemon_util=str(tmp_path / "none"), search_path=str(bin_dir))
    assert record.read_text() == f"--no-voting --yes-do-it {ctx.paths.root}\n"


def test_start_master_reports_a_failing_masterd(ctx: NodeContext, tmp_path: Path) -> None:
    _script(tmp_path / "bin" / "ganeti-masterd", "#!/bin/sh\necho not the master >&2\nexit 1\n")
    with pytest.raises(RpcFail, match=r"^Can't start Ganeti master: not the master\n$"):
        master.start_master_daemons(ctx.paths, False, search_path=str(tmp_path / "bin"))


def test_start_master_falls_back_to_ganeti_daemon_util(ctx: NodeContext, tmp_path: Path) -> None:
    record = tmp_path / "record"
    util = _script(tmp_path / "daemon-util",
                   f'#!/bin/sh\necho "$1 [$EXTRA_LUXID_ARGS] [$EXTRA_WCONFD_ARGS]" > {record}\n')
    master.start_master_daemons(ctx.paths, True, daemon_util=str(util), search_path=str(tmp_path / "empty"))
    assert record.read_text() == "start-master [--no-voting --yes-do-it] [--no-voting --yes-do-it]\n"


def test_start_master_without_any_master_daemon_fails_clearly(ctx: NodeContext, tmp_path: Path) -> None:
    with pytest.raises(RpcFail, match="no master daemon is installed on this node"):
        master.start_master_daemons(ctx.paths, False, daemon_util=str(tmp_path / "none"),
                                    search_path=str(tmp_path / "empty"))


def test_stop_master_terminates_our_masterd(ctx: NodeContext) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        Path(ctx.paths.run_dir, "ganeti-masterd.pid").write_text(f"{proc.pid}\n")
        master.node_stop_master(ctx)
        assert proc.wait(timeout=5) == -15
    finally:
        proc.kill()
        proc.wait()


def test_stop_master_stops_running_ganeti_daemons_with_daemon_util(ctx: NodeContext, tmp_path: Path) -> None:
    record = tmp_path / "record"
    util = _script(tmp_path / "daemon-util", f'#!/bin/sh\necho "$1 $GANETI_ROOTDIR" > {record}\n')
    Path(ctx.paths.run_dir, "ganeti-luxid.pid").write_text(f"{os.getpid()}\n")
    master.stop_master_daemons(ctx.paths, daemon_util=str(util))
    assert record.read_text() == f"stop-master {ctx.paths.root}\n"


def test_stop_master_with_nothing_running_does_nothing(ctx: NodeContext, tmp_path: Path) -> None:
    record = tmp_path / "record"
    util = _script(tmp_path / "daemon-util", f"#!/bin/sh\necho called > {record}\n")
    assert master.stop_master_daemons(ctx.paths, daemon_util=str(util)) is None
    assert not record.exists()


def test_ensure_daemon_answers_false_for_other_daemons(ctx: NodeContext) -> None:
    assert master.node_ensure_daemon(ctx, "ganeti-confd", True) is False


def test_ensure_daemon_drives_kvmd_through_daemon_util(ctx: NodeContext, tmp_path: Path) -> None:
    record = tmp_path / "record"
    util = _script(tmp_path / "daemon-util", f'#!/bin/sh\necho "$*" >> {record}\n[ "$1" = stop ]\n')
    assert master.ensure_daemon(ctx.paths, "ganeti-kvmd", False, daemon_util=str(util)) is True
    assert master.ensure_daemon(ctx.paths, "ganeti-kvmd", True, daemon_util=str(util)) is False
    assert record.read_text().splitlines() == ["stop ganeti-kvmd", "check-and-start ganeti-kvmd"]


# -- demotion and leaving -------------------------------------------------------------

def test_demote_refuses_on_the_master(ctx: NodeContext) -> None:
    Path(ctx.paths.ssconf_file("master_node")).write_text("node1\n")
    with pytest.raises(RpcFail, match=r"^ssconf status shows I'm the master node, will not demote$"):
        master.node_demote_from_mc(ctx)


def test_demote_without_ssconf_fails_like_ganeti(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=r"^Cluster configuration incomplete: Can't read ssconf file"):
        master.node_demote_from_mc(ctx)


def test_demote_backs_up_and_removes_the_configuration(ctx: NodeContext) -> None:
    Path(ctx.paths.ssconf_file("master_node")).write_text("node2\n")
    Path(ctx.paths.config_file).write_text('{"version": 3000000}')
    assert master.node_demote_from_mc(ctx) is None
    assert not os.path.exists(ctx.paths.config_file)
    [backup] = Path(ctx.paths.data_dir).glob("config.data.backup-*")
    assert backup.read_text() == '{"version": 3000000}'


def test_demote_refuses_while_our_masterd_runs(ctx: NodeContext) -> None:
    Path(ctx.paths.ssconf_file("master_node")).write_text("node2\n")
    Path(ctx.paths.run_dir, "ganeti-masterd.pid").write_text(f"{os.getpid()}\n")
    with pytest.raises(RpcFail, match=r"^The master daemon is running, will not demote$"):
        master.node_demote_from_mc(ctx)


def test_leave_cluster_removes_the_cluster_files_and_shuts_down(ctx: NodeContext) -> None:
    requested: list[bool] = []
    ctx.request_shutdown = lambda: requested.append(True)
    data = Path(ctx.paths.data_dir)
    for name in ("config.data", "ssconf_master_node", "server.pem", "client.pem", "known_hosts", "hmac.key"):
        (data / name).write_text("x")
    Path(ctx.paths.crypto_dir, "x509-1").mkdir()
    Path(ctx.paths.crypto_dir, "stray").write_text("x")
    Path(ctx.paths.queue_dir, "job-1").write_text("{}")
    Path(ctx.paths.queue_archive_dir, "job-0").write_text("{}")
    assert master.node_leave_cluster(ctx, False) == "Shutdown scheduled"
    assert requested == [True]
    assert [p.name for p in data.iterdir() if not p.is_dir()] == []
    assert [p.name for p in Path(ctx.paths.crypto_dir).iterdir()] == ["x509-1"]
    assert [p.name for p in Path(ctx.paths.queue_dir).iterdir() if p.is_file()] in ([], ["lock"])
    assert list(Path(ctx.paths.queue_archive_dir).iterdir()) == []


def test_leave_cluster_removes_the_cluster_ssh_key(ctx: NodeContext) -> None:
    ssh = Path(ctx.paths.root_ssh_dir)
    ssh.mkdir(parents=True)
    (ssh / "id_rsa").write_text("PRIVATE")
    (ssh / "id_rsa.pub").write_text("ssh-rsa AAAACLUSTER root@node1\n")
    (ssh / "authorized_keys").write_text("ssh-rsa AAAAOTHER admin@desk\nssh-rsa AAAACLUSTER root@node1\n")
    master.node_leave_cluster(ctx, True)
    assert sorted(p.name for p in ssh.iterdir()) == ["authorized_keys"]
    assert (ssh / "authorized_keys").read_text() == "ssh-rsa AAAAOTHER admin@desk\n"


def test_leave_cluster_keeps_ssh_keys_unless_asked(ctx: NodeContext) -> None:
    ssh = Path(ctx.paths.root_ssh_dir)
    ssh.mkdir(parents=True)
    (ssh / "id_rsa.pub").write_text("ssh-rsa AAAACLUSTER root@node1\n")
    master.node_leave_cluster(ctx, False)
    assert (ssh / "id_rsa.pub").exists()


# -- power cycle (never performed) -----------------------------------------------------

def test_powercycle_is_refused_without_permission(ctx: NodeContext) -> None:
    assert ctx.allow_powercycle is False
    start = time.monotonic()
    with pytest.raises(RpcFail, match="not started with --allow-powercycle"):
        master.node_powercycle(ctx, "fake", {"migration_mode": "live"})
    assert time.monotonic() - start < 1
