"""The daemon's behaviour from its manual page: detaching, files, signals, options."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import NODED, NodeRoot, RunningNoded, free_port, make_root, start_noded

from noded.tls import split_pem


def _wait_gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_detaches_and_writes_its_pid_file(noded: RunningNoded) -> None:
    pid = int(Path(noded.paths.noded_pid_file).read_text())
    assert pid == noded.pid and noded.alive()
    assert os.getsid(pid) != os.getsid(0)  # a session of its own, not ours
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid()
    assert Path(noded.paths.noded_log_file).exists()


def test_sigterm_lets_an_in_flight_call_finish(noded: RunningNoded) -> None:
    result: dict[str, object] = {}

    def slow_call() -> None:
        result["answer"] = noded.call("test_delay", 2)

    t = threading.Thread(target=slow_call)
    t.start()
    time.sleep(0.7)
    os.kill(noded.pid, signal.SIGTERM)
    t.join(30)
    assert result.get("answer") == [True, None]
    assert _wait_gone(noded.pid)
    assert not Path(noded.paths.noded_pid_file).exists()
    log = Path(noded.paths.noded_log_file).read_text()
    assert "Received signal 15 asking for shutdown" in log


def test_foreground_exits_zero_on_sigterm(node_root: NodeRoot) -> None:
    port = free_port("127.0.0.2")
    proc = subprocess.Popen([NODED, "-f", "--no-mlock", "-b", "127.0.0.2", "-p", str(port),
                             "--grpc-port", "0"], env=node_root.env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.2", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_two_daemons_with_their_own_roots_run_side_by_side(noded_factory) -> None:  # type: ignore[no-untyped-def]
    a = noded_factory("node1", "127.0.0.2")
    b = noded_factory("node2", "127.0.0.3")
    assert a.call("version") == [True, 3000000]
    assert b.call("version") == [True, 3000000]
    assert a.paths.root != b.paths.root
    assert Path(a.paths.noded_pid_file).read_text().strip() == str(a.pid)
    assert Path(b.paths.noded_pid_file).read_text().strip() == str(b.pid)


def test_second_daemon_on_the_same_root_is_refused(noded: RunningNoded) -> None:
    res = subprocess.run([NODED, "--no-mlock", "-b", "127.0.0.3", "-p", str(free_port("127.0.0.3")),
                          "--grpc-port", "0"], env=noded.node.env, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 1
    assert f"another ganeti-noded (pid {noded.pid}) is running" in res.stderr


def test_port_in_use_is_reported_by_the_starting_process(noded: RunningNoded, tmp_path: Path) -> None:
    other = make_root(tmp_path / "vc2", "node2", cluster_pem=noded.server_pem)
    res = subprocess.run([NODED, "--no-mlock", "-b", noded.address, "-p", str(noded.port),
                          "--grpc-port", "0"], env=other.env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert f"cannot bind the legacy door to {noded.address}:{noded.port}" in res.stderr


def test_port_comes_from_the_services_database_under_the_root(node_root: NodeRoot) -> None:
    port = free_port("127.0.0.2")
    services = Path(node_root.paths.services_file)
    services.parent.mkdir(parents=True, exist_ok=True)
    services.write_text(f"ssh 22/tcp\nganeti-noded {port}/tcp  # Ganeti node daemon\n")
    res = subprocess.run([NODED, "--no-mlock", "-b", "127.0.0.2", "--grpc-port", "0"],
                         env=node_root.env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    daemon = RunningNoded(node=node_root, address="127.0.0.2", port=port, grpc_port=0,
                          pid=int(Path(node_root.paths.noded_pid_file).read_text()))
    try:
        assert daemon.call("version") == [True, 3000000]
    finally:
        daemon.stop()


def test_interface_option_binds_the_interface_address(node_root: NodeRoot) -> None:
    port = free_port("127.0.0.1")
    res = subprocess.run([NODED, "--no-mlock", "-i", "lo", "-p", str(port), "--grpc-port", "0"],
                         env=node_root.env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    daemon = RunningNoded(node=node_root, address="127.0.0.1", port=port, grpc_port=0,
                          pid=int(Path(node_root.paths.noded_pid_file).read_text()))
    try:
        assert daemon.call("version") == [True, 3000000]
    finally:
        daemon.stop()


def test_sighup_reopens_the_log_file(noded: RunningNoded) -> None:
    log = Path(noded.paths.noded_log_file)
    rotated = log.with_suffix(".log.1")
    log.rename(rotated)
    os.kill(noded.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    noded.call("version")
    time.sleep(0.2)
    text = log.read_text()
    assert "Reopening log files after receiving SIGHUP" in text
    assert "POST /version HTTP/1.1 200" in text


def test_max_clients_makes_extra_connections_wait_not_fail(noded_factory) -> None:  # type: ignore[no-untyped-def]
    daemon = noded_factory("node1", "127.0.0.2", "--max-clients", "1")
    answers: list[object] = []

    def call() -> None:
        answers.append(daemon.call("test_delay", 1))

    started = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - started
    assert answers == [[True, None]] * 3
    assert elapsed >= 2.9  # served one at a time


def test_memory_is_locked_by_default(node_root: NodeRoot) -> None:
    port = free_port("127.0.0.2")
    res = subprocess.run([NODED, "-b", "127.0.0.2", "-p", str(port), "--grpc-port", "0"],
                         env=node_root.env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    pid = int(Path(node_root.paths.noded_pid_file).read_text())
    daemon = RunningNoded(node=node_root, address="127.0.0.2", port=port, grpc_port=0, pid=pid)
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        locked_kb = int(next(line for line in status.splitlines() if line.startswith("VmLck:")).split()[1])
        assert locked_kb > 0
    finally:
        daemon.stop()


def test_grpc_health_and_reflection_are_served(noded: RunningNoded) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    key, chain = split_pem(Path(noded.client_pem).read_bytes())
    _, ca = split_pem(Path(noded.server_pem).read_bytes())
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
    with grpc.secure_channel(f"{noded.address}:{noded.grpc_port}", creds,
                             options=[("grpc.ssl_target_name_override", "ganeti.example.com")]) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(iter(refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)))
        names = {s.name for s in resp.list_services_response.service}
        assert "ganeti.node.v1.ClusterService" in names


@pytest.mark.parametrize("bad", [["--max-clients", "0"], ["-b", "127.0.0.2", "-i", "lo"]])
def test_bad_options_are_refused_with_a_reason(node_root: NodeRoot, bad: list[str]) -> None:
    res = subprocess.run([NODED, "--no-mlock", *bad], env=node_root.env, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 1 and res.stderr.startswith("ganeti-noded: ")


def test_root_must_end_with_the_hostname(tmp_path: Path) -> None:
    env = dict(os.environ, GANETI_ROOTDIR=str(tmp_path / "node1"), GANETI_HOSTNAME="node2")
    res = subprocess.run([NODED, "--no-mlock"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "must equal GANETI_HOSTNAME" in res.stderr


def test_missing_certificate_is_a_clear_start_error(tmp_path: Path) -> None:
    root = tmp_path / "node1"
    env = dict(os.environ, GANETI_ROOTDIR=str(root), GANETI_HOSTNAME="node1")
    res = subprocess.run([NODED, "--no-mlock", "-b", "127.0.0.2", "-p", str(free_port("127.0.0.2")),
                          "--grpc-port", "0"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "server.pem not found" in res.stderr


def test_start_helper_is_used(node_root: NodeRoot) -> None:
    daemon = start_noded(node_root, "127.0.0.4")
    try:
        assert daemon.call("version") == [True, 3000000]
    finally:
        daemon.stop()


def test_syslog_without_a_syslog_socket_falls_back_to_the_log_file(node_root: NodeRoot) -> None:
    if os.path.exists("/dev/log"):
        pytest.skip("this machine has a syslog socket")
    port = free_port("127.0.0.2")
    res = subprocess.run([NODED, "--no-mlock", "--syslog=only", "-b", "127.0.0.2", "-p", str(port),
                          "--grpc-port", "0"], env=node_root.env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    daemon = RunningNoded(node=node_root, address="127.0.0.2", port=port, grpc_port=0,
                          pid=int(Path(node_root.paths.noded_pid_file).read_text()))
    try:
        assert daemon.call("version") == [True, 3000000]
        log = Path(node_root.paths.noded_log_file).read_text()
        assert "--syslog=only asked for, but /dev/log does not exist" in log
    finally:
        daemon.stop()


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def test_a_daemon_killed_with_sigkill_frees_its_port_for_a_restart(noded_factory) -> None:  # type: ignore[no-untyped-def]
    """The legacy door workers notice their daemon is gone and stop: the same ports can be bound again."""
    first = noded_factory("node1", "127.0.0.2", "--legacy-workers", "2")
    workers = _children(first.pid)
    assert len(workers) == 2
    os.kill(first.pid, signal.SIGKILL)
    assert _wait_gone(first.pid)
    assert all(_wait_gone(pid, 10) for pid in workers), "a legacy door worker outlived its daemon"
    again = start_noded(first.node, first.address, "--legacy-workers", "2", port=first.port,
                        grpc_port=first.grpc_port)
    try:
        assert again.call("version") == [True, 3000000]
    finally:
        again.stop()
