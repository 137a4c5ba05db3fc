"""Our ganeti-watcher (tools.watcher): state files, pause, restart limits, and a cluster run.

The first part needs no cluster: the state file (read and written by Ganeti
3.0's own watcher state module too), the pause file, the instance status
files, the restart/cleanup decisions with their MAXTRIES limit, the options,
and a node that is not the master.

The second part runs on a three-node cluster of ours (tests/instance_cluster.py,
127.0.16.x, cluster IP 127.0.16.100): a kvm instance made with Debian's
gnt-instance add is killed (SIGKILL to its qemu) and one `ganeti-watcher` run
starts it again; `gnt-cluster watcher pause 1h` (Debian's tool and ours)
stops that, `continue` allows it again; a fake-hypervisor instance "dies" by
losing its state file and comes back; a record at MAXTRIES makes the watcher
give up; old jobs are archived.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tools.watcher import main as watcher
from tools.watcher import state as wstate

from cluster_support import BIN, alive, needs_cluster  # isort: skip
from instance_cluster import InstanceCluster, build_cluster  # isort: skip

GANETI_PY = "/usr/share/ganeti/3.0"
REAL_PYTHON = "/usr/bin/python3"
WATCHER = str(BIN / "ganeti-watcher")

has_real_ganeti = pytest.mark.skipif(not os.path.isdir(f"{GANETI_PY}/ganeti/watcher")
                                     or not os.path.exists(REAL_PYTHON),
                                     reason="needs Debian's ganeti package (its watcher state module)")


def real_ganeti(code: str) -> str:
    done = subprocess.run([REAL_PYTHON, "-c", code], env=dict(os.environ, PYTHONPATH=GANETI_PY),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- the state file ----------------------------------------------------------------------------
def test_state_file_records_attempts_and_boot_ids_in_ganetis_format(tmp_path: Path) -> None:
    path = str(tmp_path / "watcher.g.data")
    notepad = wstate.WatcherState.open(path)
    assert notepad is not None
    notepad.record_restart("inst1")
    notepad.record_restart("inst1")
    notepad.record_cleanup("inst2")
    notepad.set_boot_id("node1", "boot-a")
    notepad.save()
    notepad.close()
    data = json.loads(Path(path).read_text())
    assert data["instance"]["inst1"]["restart_count"] == 2
    assert abs(data["instance"]["inst1"]["restart_when"] - time.time()) < 60
    assert data["instance"]["inst2"]["cleanup_count"] == 1
    assert data["node"] == {"node1": {"bootid": "boot-a"}}
    assert Path(path).read_text().endswith("}\n")
    again = wstate.WatcherState.open(path)
    assert again is not None
    assert again.restart_attempts("inst1") == 2
    assert again.cleanup_attempts("inst2") == 1
    assert again.restart_attempts("inst2") == 0
    assert again.boot_id("node1") == "boot-a"
    again.close()


@has_real_ganeti
def test_ganetis_watcher_reads_our_state_file_and_we_read_its(tmp_path: Path) -> None:
    ours = str(tmp_path / "ours.data")
    notepad = wstate.WatcherState.open(ours)
    assert notepad is not None
    notepad.record_restart("inst1")
    notepad.set_boot_id("node2", "b-2")
    notepad.save()
    notepad.close()
    out = real_ganeti(
        "from ganeti.watcher import state\n"
        f"s = state.WatcherState(state.OpenStateFile({ours!r}))\n"
        "print(s.NumberOfRestartAttempts('inst1'), s.GetNodeBootID('node2'))\n")
    assert out.split() == ["1", "b-2"]
    theirs = str(tmp_path / "theirs.data")
    real_ganeti(
        "from ganeti.watcher import state\n"
        f"s = state.WatcherState(state.OpenStateFile({theirs!r}))\n"
        "s.RecordRestartAttempt('x'); s.RecordRestartAttempt('x'); s.RecordCleanupAttempt('y')\n"
        "s.SetNodeBootID('n', 'bid')\n"
        f"s.Save({theirs!r})\n")
    read = wstate.WatcherState.open(theirs)
    assert read is not None
    assert (read.restart_attempts("x"), read.cleanup_attempts("y"), read.boot_id("n")) == (2, 1, "bid")
    read.close()


def test_a_locked_state_file_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "watcher.g.data")
    first = wstate.WatcherState.open(path)
    assert first is not None
    with caplog.at_level(logging.ERROR):
        assert wstate.WatcherState.open(path) is None
    assert "Can't acquire lock on state file" in caplog.text
    first.record_restart("a")
    first.save()
    # The lock moves to the renamed file: still locked after saving.
    assert wstate.WatcherState.open(path) is None
    first.close()
    third = wstate.WatcherState.open(path)
    assert third is not None and third.restart_attempts("a") == 1
    third.close()


def test_an_invalid_state_file_counts_as_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "watcher.g.data"
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        notepad = wstate.WatcherState.open(str(path))
    assert notepad is not None
    assert "Invalid state file. Using defaults." in caplog.text
    assert notepad.restart_attempts("x") == 0
    notepad.close()


def test_maintain_forgets_gone_instances_and_expired_records(tmp_path: Path) -> None:
    notepad = wstate.WatcherState.open(str(tmp_path / "s.data"))
    assert notepad is not None
    for name in ("old", "gone", "fresh"):
        notepad.record_restart(name)
    notepad.instances["old"]["restart_when"] = time.time() - wstate.RETRY_EXPIRATION - 10
    notepad.maintain(["old", "fresh"])
    assert set(notepad.instances) == {"fresh"}
    notepad.close()


def test_an_unchanged_state_is_only_touched(tmp_path: Path) -> None:
    path = tmp_path / "s.data"
    notepad = wstate.WatcherState.open(str(path))
    assert notepad is not None
    notepad.record_restart("a")
    notepad.save()
    text = path.read_text()
    os.utime(path, (1000, 1000))
    notepad.save()
    assert path.read_text() == text
    assert path.stat().st_mtime > 1000
    notepad.close()


# -- pause and status files -----------------------------------------------------------------------
def test_pause_file_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "watcher.pause"
    assert wstate.read_pause(str(path)) is None
    now = 1_000_000
    path.write_text(f"{now + 100}\n")
    assert wstate.read_pause(str(path), now=now) == now + 100
    assert wstate.read_pause(str(path), now=now + 200) is None
    assert path.exists(), "a pause that ended less than an hour ago stays"
    assert wstate.read_pause(str(path), now=now + 100 + 3601) is None
    assert not path.exists(), "a pause more than an hour past is removed"
    path.write_text("soon\n")
    with caplog.at_level(logging.WARNING):
        assert wstate.read_pause(str(path)) is None
    assert not path.exists()
    assert "contains invalid value, removing it" in caplog.text


@has_real_ganeti
def test_pause_file_agrees_with_ganetis_reader(tmp_path: Path) -> None:
    path = tmp_path / "watcher.pause"
    until = int(time.time()) + 600
    path.write_text(f"{until}\n")
    out = real_ganeti(f"from ganeti import utils\nprint(utils.ReadWatcherPauseFile({str(path)!r}))\n")
    assert out.strip() == str(until) == str(wstate.read_pause(str(path)))


def test_instance_status_files_merge_newest_first(tmp_path: Path) -> None:
    group_a, group_b = tmp_path / "watcher.a.instance-status", tmp_path / "watcher.b.instance-status"
    wstate.write_instance_status(str(group_a), [("inst2", "running"), ("inst1", "ERROR_down")])
    assert group_a.read_text() == "inst1 ERROR_down\ninst2 running"
    wstate.write_instance_status(str(group_b), [("inst1", "running"), ("inst3", "ADMIN_down")])
    os.utime(group_a, (1000, 1000))
    merged = tmp_path / "run" / "instance-status"
    assert wstate.merge_instance_status(str(merged), [str(group_a), str(group_b),
                                                      str(tmp_path / "watcher.missing.instance-status")])
    assert merged.read_text() == "inst1 running\ninst2 running\ninst3 ADMIN_down"


# -- decisions ---------------------------------------------------------------------------------------
class Recorder:
    """Stands for the jobs: records the instances it was asked about, can fail like a failing job."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def __call__(self, inst: watcher.Instance) -> None:
        self.calls.append(inst.name)
        if self.fail:
            raise RuntimeError(f"job for {inst.name} failed")


def test_a_down_instance_gets_five_restarts_then_the_watcher_gives_up(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notepad = wstate.WatcherState.open(str(tmp_path / "s.data"))
    assert notepad is not None
    restart, shutdown = Recorder(fail=True), Recorder()
    down = {"inst1": watcher.Instance("inst1", "ERROR_down", "up")}
    with caplog.at_level(logging.INFO):
        for _ in range(watcher.MAXTRIES):
            assert watcher.check_instances(notepad, down, set(), restart, shutdown) == set()
    assert restart.calls == ["inst1"] * watcher.MAXTRIES
    assert notepad.restart_attempts("inst1") == watcher.MAXTRIES
    assert "Restarting instance 'inst1' (attempt #5)" in caplog.text
    with caplog.at_level(logging.INFO):
        watcher.check_instances(notepad, down, set(), restart, shutdown)
    assert "Could not restart instance 'inst1' after 5 attempts, giving up" in caplog.text
    assert notepad.restart_attempts("inst1") == watcher.MAXTRIES + 1
    with caplog.at_level(logging.INFO):
        watcher.check_instances(notepad, down, set(), restart, shutdown)
    assert "Not restarting instance 'inst1', retries exhausted" in caplog.text
    assert len(restart.calls) == watcher.MAXTRIES
    assert shutdown.calls == []
    notepad.close()


def test_a_restarted_instance_is_forgotten_once_it_runs(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    notepad = wstate.WatcherState.open(str(tmp_path / "s.data"))
    assert notepad is not None
    restart = Recorder()
    started = watcher.check_instances(notepad, {"i": watcher.Instance("i", "ERROR_down", "up")}, set(),
                                      restart, Recorder())
    assert started == {"i"} and notepad.restart_attempts("i") == 1
    with caplog.at_level(logging.INFO):
        watcher.check_instances(notepad, {"i": watcher.Instance("i", "running", "up")}, set(), restart,
                                Recorder())
    assert notepad.restart_attempts("i") == 0 and "i" not in notepad.instances
    assert "Restart of instance 'i' succeeded" in caplog.text
    # Healthy, admin-down and node-down instances are left alone.
    others = {"a": watcher.Instance("a", "running", "up"), "b": watcher.Instance("b", "ADMIN_down", "down"),
              "c": watcher.Instance("c", "ERROR_nodedown", "up")}
    assert watcher.check_instances(notepad, others, set(), restart, Recorder()) == set()
    assert restart.calls == ["i"]
    notepad.close()


def test_a_user_down_instance_is_cleaned_up_unless_locked(tmp_path: Path) -> None:
    notepad = wstate.WatcherState.open(str(tmp_path / "s.data"))
    assert notepad is not None
    restart, shutdown = Recorder(), Recorder()
    user_down = {"u": watcher.Instance("u", "USER_down", "up"),
                 "v": watcher.Instance("v", "USER_down", "down")}
    watcher.check_instances(notepad, user_down, {"u"}, restart, shutdown)
    assert shutdown.calls == []
    watcher.check_instances(notepad, user_down, set(), restart, shutdown)
    assert shutdown.calls == ["u"] and restart.calls == []
    failing = Recorder(fail=True)
    watcher.check_instances(notepad, user_down, set(), restart, failing)
    assert notepad.cleanup_attempts("u") == 1
    notepad.close()


def test_a_rebooted_secondary_gets_its_instances_disks_activated(tmp_path: Path) -> None:
    notepad = wstate.WatcherState.open(str(tmp_path / "s.data"))
    assert notepad is not None
    notepad.set_boot_id("n2", "old")
    notepad.set_boot_id("n3", "same")
    instances = {"a": watcher.Instance("a", "running", "up", disks_active=True, snodes=["n2"]),
                 "b": watcher.Instance("b", "running", "up", disks_active=False, snodes=["n2"]),
                 "c": watcher.Instance("c", "ERROR_down", "up", disks_active=True, snodes=["n2"]),
                 "d": watcher.Instance("d", "running", "up", disks_active=True, snodes=["n3"])}
    nodes = {"n2": watcher.Node("n2", "new", False, {"a", "b", "c"}),
             "n3": watcher.Node("n3", "same", False, {"d"}),
             "n4": watcher.Node("n4", None, True)}
    activate = Recorder()
    watcher.check_disks(notepad, nodes, instances, {"c"}, activate)
    assert activate.calls == ["a"]
    assert notepad.boot_id("n2") == "new"
    watcher.check_disks(notepad, nodes, instances, set(), activate)
    assert activate.calls == ["a"], "the boot ID is remembered: nothing more to do"
    notepad.close()


def test_the_watchers_opcodes() -> None:
    op = watcher.restart_op("inst1")
    assert op["OP_ID"] == "OP_INSTANCE_STARTUP"
    assert op["instance_name"] == "inst1" and op["force"] is False
    [[source, text, stamp]] = op["reason"]
    assert (source, text) == ("gnt:watcher", "Restarting instance inst1") and stamp > 0
    cleanup = watcher.cleanup_op("inst2")
    assert cleanup["OP_ID"] == "OP_INSTANCE_SHUTDOWN" and cleanup["admin_state_source"] == "user"
    assert watcher.activate_disks_op("inst3")["OP_ID"] == "OP_INSTANCE_ACTIVATE_DISKS"


# -- options and the command ---------------------------------------------------------------------
def test_options() -> None:
    opts = watcher.parse_options([])
    assert (opts.job_age, opts.wait_children, opts.ignore_pause, opts.interval, opts.debug) == \
        (6 * 3600, True, False, None, 0)
    opts = watcher.parse_options(["-d", "-A", "2h", "--no-wait-children", "--ignore-pause",
                                  "--interval", "30"])
    assert (opts.job_age, opts.wait_children, opts.ignore_pause, opts.interval, opts.debug) == \
        (7200, False, True, 30.0, 1)
    assert watcher.parse_options(["--job-age=90"]).job_age == 90


@pytest.mark.parametrize("argv", [["extra"], ["--interval", "0"], ["--interval", "soon"], ["-A", "3x"],
                                  ["--job-age", "h"]])
def test_bad_options_are_refused(argv: list[str], tmp_path: Path) -> None:
    done = subprocess.run([WATCHER, *argv], capture_output=True, text=True, timeout=60,
                          env=_root_env(tmp_path, "nodeq"))
    assert done.returncode == 2
    assert "error" in done.stderr
    assert not (tmp_path / "nodeq" / "var/log/ganeti/watcher.log").exists()


def _root_env(base: Path, name: str) -> dict[str, str]:
    root = base / name
    root.mkdir(exist_ok=True)
    env = dict(os.environ, GANETI_ROOTDIR=str(root), GANETI_HOSTNAME=name)
    env.pop("PYTHONPATH", None)
    return env


def test_outside_a_cluster_and_on_a_non_master_it_exits_quietly(tmp_path: Path) -> None:
    env = _root_env(tmp_path, "nodex")
    done = subprocess.run([WATCHER], capture_output=True, text=True, timeout=60, env=env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    data = tmp_path / "nodex/var/lib/ganeti"
    data.mkdir(parents=True)
    (data / "ssconf_master_node").write_text("othernode\n")
    (data / "ssconf_nodegroups").write_text("0f1e2d3c-0000-4000-8000-000000000001 default\n")
    done = subprocess.run([WATCHER, "-d"], capture_output=True, text=True, timeout=60, env=env)
    assert (done.returncode, done.stdout) == (0, "")
    assert not list(data.glob("watcher.*"))
    # A group run on a non-master fails its master check (Ganeti's EXIT_NOTMASTER) and writes nothing.
    done = subprocess.run([WATCHER, "--node-group", "0f1e2d3c-0000-4000-8000-000000000001"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == watcher.EXIT_NOTMASTER, done.stderr
    assert (data / "watcher.0f1e2d3c-0000-4000-8000-000000000001.data").read_text() == ""
    assert not (data / "watcher.0f1e2d3c-0000-4000-8000-000000000001.instance-status").exists()


def test_a_bad_group_is_refused(tmp_path: Path) -> None:
    env = _root_env(tmp_path, "nodey")
    data = tmp_path / "nodey/var/lib/ganeti"
    data.mkdir(parents=True)
    (data / "ssconf_nodegroups").write_text("0f1e2d3c-0000-4000-8000-000000000001 default\n")
    for group, text in (("notauuid", "must be given a UUID"),
                        ("0f1e2d3c-0000-4000-8000-000000000002", "is not known by ssconf")):
        done = subprocess.run([WATCHER, "-d", "-g", group], capture_output=True, text=True, timeout=60,
                              env=env)
        assert done.returncode == watcher.EXIT_FAILURE
        assert text in done.stderr
    assert not list(data.glob("watcher.*"))


def test_a_pause_stops_the_run_before_anything(tmp_path: Path) -> None:
    env = _root_env(tmp_path, "nodez")
    data = tmp_path / "nodez/var/lib/ganeti"
    data.mkdir(parents=True)
    (data / "watcher.pause").write_text(f"{int(time.time()) + 3600}\n")
    (data / "ssconf_nodegroups").write_text("0f1e2d3c-0000-4000-8000-000000000001 default\n")
    done = subprocess.run([WATCHER, "-d", "-g", "0f1e2d3c-0000-4000-8000-000000000001"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0
    assert "Pause has been set, exiting" in done.stderr
    assert not list(data.glob("watcher.*.data"))
    # --ignore-pause runs anyway (and here fails: this node is no master).
    done = subprocess.run([WATCHER, "--ignore-pause", "-g", "0f1e2d3c-0000-4000-8000-000000000001"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == watcher.EXIT_NOTMASTER
    assert list(data.glob("watcher.*.data"))


def test_a_run_holding_the_watcher_lock_exclusively_blocks_runs(tmp_path: Path) -> None:
    env = _root_env(tmp_path, "nodew")
    lock_dir = tmp_path / "nodew/var/lock"
    lock_dir.mkdir(parents=True)
    with open(lock_dir / "ganeti-watcher.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        done = subprocess.run([WATCHER, "-d"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0
    assert "Can't acquire lock on" in done.stderr


def test_the_loop_runs_until_sigterm(tmp_path: Path) -> None:
    env = _root_env(tmp_path, "nodev")
    proc = subprocess.Popen([WATCHER, "-d", "--interval", "0.3"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        log_file = tmp_path / "nodev/var/log/ganeti/watcher.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _runs(log_file) < 3:
            time.sleep(0.1)
        assert _runs(log_file) >= 3
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "Terminating on signal" in err


def _runs(log_file: Path) -> int:
    """Watcher runs logged so far (-d logs the start of each)."""
    return log_file.read_text().count("Watcher run starting") if log_file.exists() else 0


# -- on a cluster of ours ------------------------------------------------------------------------------
ADDRESSES = {"node1": "127.0.16.1", "node2": "127.0.16.2", "node3": "127.0.16.3"}
CLUSTER_IP = "127.0.16.100"
KVM, KVM_NODE = "inst1", "node2"
FAKE, FAKE_NODE, FAKE_IP = "inst2", "node3", "127.0.16.52"
#: Seconds to wait for an instance's status to show what was done to it.
SETTLE = 60.0


@pytest.fixture(scope="module")
def c() -> Iterator[InstanceCluster]:
    with build_cluster("gw", ADDRESSES, CLUSTER_IP, instances={KVM: "127.0.16.51", FAKE: FAKE_IP}) as made:
        done = made.gnt("gnt-instance", "add", "-n", KVM_NODE, "-t", "file", "-o", "tiny+default",
                        "--no-ip-check", "-H", "kvm", "-B", "memory=64M", "--disk", "0:size=16M",
                        "--no-nics", "--ignore-ipolicy", KVM)
        assert done.returncode == 0, done.stdout + done.stderr
        done = made.gnt("gnt-instance", "add", "-n", FAKE_NODE, "-t", "file", "-o", "noop", "--no-ip-check",
                        "-H", "fake", "-B", "memory=128M", "--disk", "0:size=1G",
                        "--net", f"0:mode=routed,ip={FAKE_IP}", FAKE)
        assert done.returncode == 0, done.stdout + done.stderr
        yield made


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"rc={done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def status(c: InstanceCluster, name: str) -> str:
    """The instance's status as Debian's gnt-instance list shows it."""
    return ok(c.gnt("gnt-instance", "list", "--no-headers", "-o", "status", name)).strip()


def wait_status(c: InstanceCluster, name: str, wanted: str) -> None:
    deadline = time.monotonic() + SETTLE
    while (now := status(c, name)) != wanted and time.monotonic() < deadline:
        time.sleep(0.3)
    assert now == wanted, f"{name} is {now}, not {wanted}"


def group_uuid(c: InstanceCluster) -> str:
    return (c.data("node1") / "ssconf_nodegroups").read_text().split()[0]


def state_data(c: InstanceCluster) -> dict[str, Any]:
    path = c.data("node1") / f"watcher.{group_uuid(c)}.data"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def watcher_log(c: InstanceCluster) -> str:
    path = c.root("node1") / "var/log/ganeti/watcher.log"
    return path.read_text() if path.exists() else ""


def kill_kvm(c: InstanceCluster, settle: bool = True) -> int:
    """SIGKILL the instance's qemu; its pid once it is gone (and, with `settle`, the status is ERROR_down)."""
    [pid] = c.qemu_pids()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + SETTLE
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
    if not settle:
        return pid
    wait_status(c, KVM, "ERROR_down")
    assert c.qemu_pids() == []
    return pid


def fake_state(c: InstanceCluster) -> Path:
    return c.root(FAKE_NODE) / "var/run/ganeti/fake-hypervisor" / FAKE


def kill_fake(c: InstanceCluster) -> None:
    fake_state(c).unlink()
    wait_status(c, FAKE, "ERROR_down")


def watch(c: InstanceCluster, *args: str) -> subprocess.CompletedProcess[str]:
    done = c.ours("ganeti-watcher", *args)
    assert done.returncode == 0, f"rc={done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def pause_file(c: InstanceCluster, node: str = "node1") -> Path:
    return c.data(node) / "watcher.pause"


@needs_cluster
def test_one_run_starts_a_killed_kvm_instance_again(c: InstanceCluster) -> None:
    wait_status(c, KVM, "running")
    old = kill_kvm(c)
    watch(c)
    pids = c.qemu_pids()
    assert len(pids) == 1 and pids[0] != old
    wait_status(c, KVM, "running")
    assert "Restarting instance 'inst1' (attempt #1)" in watcher_log(c)
    record = state_data(c)["instance"][KVM]
    assert record["restart_count"] == 1 and abs(record["restart_when"] - time.time()) < 300
    assert set(state_data(c)["node"]) == set(ADDRESSES)
    # The status files were written before the restart.
    group_file = c.data("node1") / f"watcher.{group_uuid(c)}.instance-status"
    assert group_file.read_text() == f"{KVM} ERROR_down\n{FAKE} running"
    assert (c.root("node1") / "var/run/ganeti/instance-status").read_text() == group_file.read_text()
    # The job went through the queue with the watcher's reason.
    jobs = ok(c.gnt("gnt-job", "list", "--no-headers", "-o", "summary,status"))
    assert f"INSTANCE_STARTUP({KVM}) success" in " ".join(jobs.split())
    # The next run sees it running: the record goes, the restart is logged as a success.
    watch(c)
    assert KVM not in state_data(c)["instance"]
    assert "Restart of instance 'inst1' succeeded" in watcher_log(c)
    assert group_file.read_text() == f"{KVM} running\n{FAKE} running"
    assert c.qemu_pids() == pids


@needs_cluster
def test_a_pause_set_with_debians_tool_stops_restarts_until_continue_with_ours(c: InstanceCluster) -> None:
    out = ok(c.gnt("gnt-cluster", "watcher", "pause", "1h"))
    assert out.startswith("The watcher is paused until ")
    until = int(pause_file(c).read_text())
    assert abs(until - (time.time() + 3600)) < 120
    for node in ADDRESSES:  # every master candidate keeps the pause, as with luxid
        assert int(pause_file(c, node).read_text()) == until
    assert ok(c.gnt("gnt-cluster", "watcher", "info")) == out
    assert ok(c.ours("gnt-cluster", "watcher", "info")) == out
    kill_kvm(c)
    watch(c)
    assert c.qemu_pids() == []
    assert status(c, KVM) == "ERROR_down"
    assert KVM not in state_data(c)["instance"]
    assert ok(c.ours("gnt-cluster", "watcher", "continue")) == "The watcher is no longer paused.\n"
    for node in ADDRESSES:
        assert not pause_file(c, node).exists()
    assert ok(c.gnt("gnt-cluster", "watcher", "info")) == "The watcher is not paused.\n"
    watch(c)
    assert len(c.qemu_pids()) == 1
    wait_status(c, KVM, "running")


@needs_cluster
def test_a_pause_set_with_our_tool_is_skipped_with_ignore_pause(c: InstanceCluster) -> None:
    out = ok(c.ours("gnt-cluster", "watcher", "pause", "30m"))
    assert out.startswith("The watcher is paused until ")
    assert ok(c.gnt("gnt-cluster", "watcher", "info")) == out
    kill_fake(c)
    watch(c)
    assert not fake_state(c).exists()
    watch(c, "--ignore-pause")
    assert fake_state(c).exists()
    wait_status(c, FAKE, "running")
    assert ok(c.gnt("gnt-cluster", "watcher", "continue")) == "The watcher is no longer paused.\n"
    assert not pause_file(c).exists()
    assert ok(c.ours("gnt-cluster", "watcher", "info")) == "The watcher is not paused.\n"


@needs_cluster
@pytest.mark.parametrize("args, error", [
    (("pause",), "Missing pause duration"),
    (("pause", "1x"), "Invalid time specification '1x'"),
    (("pause", "h"), "Invalid time specification (only suffix passed)"),
    (("frobnicate",), "Command 'frobnicate' is not valid."),
])
def test_bad_watcher_commands_are_refused_like_debians(c: InstanceCluster, args: tuple[str, ...],
                                                       error: str) -> None:
    serial = c.serial()
    ours = c.ours("gnt-cluster", "watcher", *args)
    theirs = c.gnt("gnt-cluster", "watcher", *args)
    assert ours.returncode == theirs.returncode == 1
    assert error in ours.stderr and error in theirs.stderr
    assert (ours.stdout, ours.stderr) == (theirs.stdout, theirs.stderr)
    assert not pause_file(c).exists()
    assert c.serial() == serial


@needs_cluster
def test_a_fake_instance_that_died_is_started_and_maxtries_is_kept(c: InstanceCluster) -> None:
    # A record stays until a run sees the instance running: a new death adds to it.
    before = state_data(c)["instance"].get(FAKE, {}).get("restart_count", 0)
    kill_fake(c)
    watch(c)
    assert fake_state(c).exists()
    wait_status(c, FAKE, "running")
    assert state_data(c)["instance"][FAKE]["restart_count"] == before + 1
    # An instance that already had MAXTRIES attempts is not started again: the watcher gives up.
    path = c.data("node1") / f"watcher.{group_uuid(c)}.data"
    data = state_data(c)
    data["instance"][FAKE] = {"restart_when": time.time(), "restart_count": watcher.MAXTRIES}
    path.write_text(json.dumps(data))
    kill_fake(c)
    watch(c)
    assert not fake_state(c).exists()
    assert "Could not restart instance 'inst2' after 5 attempts, giving up" in watcher_log(c)
    assert state_data(c)["instance"][FAKE]["restart_count"] == watcher.MAXTRIES + 1
    watch(c)
    assert not fake_state(c).exists()
    assert "Not restarting instance 'inst2', retries exhausted" in watcher_log(c)
    assert state_data(c)["instance"][FAKE]["restart_count"] == watcher.MAXTRIES + 1
    # Removing the state file resets the counters (the man page's advice).
    path.unlink()
    watch(c)
    assert fake_state(c).exists()
    wait_status(c, FAKE, "running")


@needs_cluster
def test_without_waiting_for_children_the_group_child_still_does_the_work(c: InstanceCluster) -> None:
    before = state_data(c)["instance"].get(FAKE, {}).get("restart_count", 0)
    kill_fake(c)
    watch(c, "--no-wait-children")
    deadline = time.monotonic() + SETTLE
    while not fake_state(c).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake_state(c).exists()
    # The child saves the state file and lets go of its lock when done.
    path = str(c.data("node1") / f"watcher.{group_uuid(c)}.data")
    while (notepad := wstate.WatcherState.open(path)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert notepad is not None
    assert notepad.restart_attempts(FAKE) == before + 1
    notepad.close()
    wait_status(c, FAKE, "running")


@needs_cluster
def test_old_jobs_are_archived(c: InstanceCluster) -> None:
    before = ok(c.gnt("gnt-job", "list", "--no-headers", "-o", "id")).split()
    assert before
    watch(c)  # default age (6 hours): nothing this young goes
    assert set(before) <= set(ok(c.gnt("gnt-job", "list", "--no-headers", "-o", "id")).split())
    time.sleep(1.5)
    watch(c, "--job-age", "1")
    after = ok(c.gnt("gnt-job", "list", "--no-headers", "-o", "id")).split()
    assert not set(before) & set(after)
    archived = {p.name for p in (c.data("node1") / "queue/archive").rglob("job-*")}
    assert {f"job-{job_id}" for job_id in before} <= archived


@needs_cluster
def test_the_loop_restarts_an_instance_while_it_runs(c: InstanceCluster) -> None:
    wait_status(c, KVM, "running")
    proc = subprocess.Popen([str(BIN / "ganeti-watcher"), "--interval", "1"], env=c.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        old = kill_kvm(c, settle=False)
        deadline = time.monotonic() + SETTLE
        while not [p for p in c.qemu_pids() if p != old] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.qemu_pids()
        wait_status(c, KVM, "running")
        # While qemu daemonizes two processes show for a moment: wait for the job to end.
        while len(c.qemu_pids()) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(c.qemu_pids()) == 1
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    wait_status(c, KVM, "running")


@needs_cluster
def test_on_a_node_that_is_not_the_master_it_does_nothing(c: InstanceCluster) -> None:
    env = dict(c.env, GANETI_ROOTDIR=str(c.root("node2")), GANETI_HOSTNAME="node2")
    kill_fake(c)
    done = subprocess.run([str(BIN / "ganeti-watcher")], env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not list(c.data("node2").glob("watcher.*"))
    assert not fake_state(c).exists()
    watch(c)
    assert fake_state(c).exists()
