"""Our ganeti-masterd driven by Debian's real Ganeti 3.0 tools (gnt-debug, gnt-job, gnt-cluster, luxi client).

The daemon runs detached in a temporary GANETI_ROOTDIR with the ssconf files
the CLI needs; the real tools find its socket through GANETI_ROOTDIR and
GANETI_HOSTNAME. Expected outputs are those of cli-needs.md and the real
Ganeti 3.0.2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from masterd.jqueue.model import RESTART_ERROR_MESSAGE, Job

SBIN = "/usr/sbin"
MASTERD = str(Path(sys.executable).parent / "ganeti-masterd")
GANETI_PY = "/usr/share/ganeti/3.0"

pytestmark = pytest.mark.skipif(not os.path.exists(f"{SBIN}/gnt-job") or not os.path.exists(MASTERD),
                                reason="needs Debian's ganeti package and our ganeti-masterd console script")

CTIME_RE = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"


@dataclass
class Master:
    root: Path
    host: str

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(GANETI_ROOTDIR=str(self.root), GANETI_HOSTNAME=self.host)
        env.pop("PYTHONPATH", None)
        return env

    @property
    def queue(self) -> Path:
        return self.root / "var/lib/ganeti/queue"

    @property
    def pid_file(self) -> Path:
        return self.root / "var/run/ganeti/ganeti-masterd.pid"

    def start(self, *args: str) -> None:
        done = self.run_masterd(*args)
        assert done.returncode == 0, done.stderr

    def run_masterd(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([MASTERD, *args], env=self.env, capture_output=True, text=True, timeout=30,
                              input=stdin)

    def pid(self) -> int:
        return int(self.pid_file.read_text().strip())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        try:
            pid = self.pid()
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)

    def gnt(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([f"{SBIN}/gnt-{tool}", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def job(self, job_id: int) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.queue / f"job-{job_id}").read_text())
        return data


def make_master(base: Path, host: str = "node1") -> Master:
    root = base / host
    data = root / "var/lib/ganeti"
    data.mkdir(parents=True)
    for key, value in {"master_node": host, "cluster_name": "cluster.example.com", "node_list": host,
                       "node_primary_ips": f"{host} 127.0.0.1", "master_netdev": "lo",
                       "primary_ip_family": "2", "release_version": "3.0.2"}.items():
        (data / f"ssconf_{key}").write_text(value + "\n")
    return Master(root, host)


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Master]:
    m = make_master(tmp_path_factory.mktemp("masterd"))
    m.start()
    try:
        yield m
    finally:
        m.stop()


def submit_id(done: subprocess.CompletedProcess[str]) -> int:
    match = re.search(r"JobID: (\d+)", done.stderr)
    assert done.returncode == 0 and match, done.stderr
    return int(match.group(1))


def wait_status(m: Master, job_id: int, wanted: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Job.from_dict(m.job(job_id)).status == wanted:
            return
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} is {Job.from_dict(m.job(job_id)).status}, not {wanted}")


# -- gnt-debug ----------------------------------------------------------------------------------

def test_gnt_debug_delay_succeeds_silently(master: Master) -> None:
    done = master.gnt("debug", "delay", "0.1")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_gnt_debug_delay_submit_prints_the_job_id(master: Master) -> None:
    job_id = submit_id(master.gnt("debug", "delay", "--submit", "0.1"))
    wait_status(master, job_id, "success")


def test_gnt_debug_delay_repeat_prints_each_iteration(master: Master) -> None:
    done = master.gnt("debug", "delay", "-r", "3", "0.1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    for index, line in enumerate(lines):
        assert re.fullmatch(rf"{CTIME_RE}  - INFO: Test delay iteration {index}/2", line), line


def test_gnt_debug_delay_of_zero_fails_as_ganeti(master: Master) -> None:
    done = master.gnt("debug", "delay", "0")
    assert done.returncode == 1
    assert "Failure: prerequisites not met for this operation:" in done.stderr
    assert "Duration must be greater than zero" in done.stderr


# -- gnt-job -----------------------------------------------------------------------------------

def test_gnt_job_list_shows_id_status_summary(master: Master) -> None:
    assert master.gnt("debug", "delay", "0.1").returncode == 0
    done = master.gnt("job", "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"\s*ID Status\s+Summary", lines[0])
    assert any(re.fullmatch(r"\s*\d+ success\s+TEST_DELAY\(0\.1\)", line) for line in lines[1:])


def test_gnt_job_info_shows_the_job(master: Master) -> None:
    job_id = submit_id(master.gnt("debug", "delay", "--submit", "0.1"))
    wait_status(master, job_id, "success")
    done = master.gnt("job", "info", str(job_id))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for expected in (f"- Job ID: {job_id}\n", "  Status: success\n", "  Received: ", "  Processing start: ",
                     "  Total processing time: ", "    - Opcode: OP_TEST_DELAY\n", "        duration: 0.1\n",
                     "      Result: None\n", "      Execution log: "):
        assert expected in text, expected


def test_gnt_job_info_of_a_missing_job_says_not_found(master: Master) -> None:
    done = master.gnt("job", "info", "99999")
    assert "Job ID 99999 not found" in done.stdout + done.stderr


def test_gnt_job_watch_follows_the_job(master: Master) -> None:
    job_id = submit_id(master.gnt("debug", "delay", "--submit", "-r", "2", "0.1"))
    done = master.gnt("job", "watch", str(job_id))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"Output from job {job_id} follows"
    assert set(lines[1]) == {"-"}
    assert [line.split("  - INFO: ")[1] for line in lines[2:]] == ["Test delay iteration 0/1",
                                                                   "Test delay iteration 1/1"]


def test_gnt_job_cancel_of_a_waiting_delay_job(master: Master) -> None:
    running = submit_id(master.gnt("debug", "delay", "--submit", "60"))
    waiting = submit_id(master.gnt("debug", "delay", "--submit", "60"))
    try:
        wait_status(master, waiting, "waiting")
        done = master.gnt("job", "cancel", str(waiting))
        assert (done.returncode, done.stdout.strip()) == (0, "Job successfully cancelled")
        assert Job.from_dict(master.job(waiting)).status == "canceled"
        refused = master.gnt("job", "cancel", str(running))
        assert refused.returncode == 1
        assert "Job no longer waiting, can't cancel (informed it anyway)" in refused.stdout
    finally:
        killed = master.gnt("job", "cancel", "--kill", "--yes-do-it", str(running))
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert Job.from_dict(master.job(running)).status == "error"


def test_gnt_job_change_priority_of_a_waiting_job(master: Master) -> None:
    running = submit_id(master.gnt("debug", "delay", "--submit", "60"))
    waiting = submit_id(master.gnt("debug", "delay", "--submit", "60"))
    try:
        wait_status(master, waiting, "waiting")
        done = master.gnt("job", "change-priority", "--priority", "low", str(waiting))
        assert done.returncode == 0, done.stderr
        assert f"Priorities of pending opcodes for job {waiting} have been changed to 10" in done.stdout
        ops = master.job(waiting)["ops"]
        assert isinstance(ops, list) and ops[0]["priority"] == 10
    finally:
        master.gnt("job", "cancel", str(waiting))
        master.gnt("job", "cancel", "--kill", "--yes-do-it", str(running))


def test_gnt_job_archive_moves_the_job(master: Master) -> None:
    job_id = submit_id(master.gnt("debug", "delay", "--submit", "0.1"))
    wait_status(master, job_id, "success")
    done = master.gnt("job", "archive", str(job_id))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert (master.queue / "archive" / str(job_id // 10000) / f"job-{job_id}").exists()
    assert not re.search(rf"^\s*{job_id} ", master.gnt("job", "list").stdout, re.M)
    again = master.gnt("job", "archive", str(job_id))
    assert again.returncode == 1 and f"Failed to archive job with ID '{job_id}'" in again.stderr


def test_gnt_job_autoarchive_all(master: Master) -> None:
    job_id = submit_id(master.gnt("debug", "delay", "--submit", "0.1"))
    wait_status(master, job_id, "success")
    done = master.gnt("job", "autoarchive", "all")
    assert done.returncode == 0, done.stderr
    match = re.fullmatch(r"Archived (\d+) jobs, 0 unchecked left\n", done.stdout)
    assert match and int(match.group(1)) >= 1
    assert not (master.queue / f"job-{job_id}").exists()


# -- gnt-cluster ---------------------------------------------------------------------------------

def test_gnt_cluster_queue_drain_info_undrain(master: Master) -> None:
    try:
        assert master.gnt("cluster", "queue", "drain").returncode == 0
        assert master.gnt("cluster", "queue", "info").stdout == "The drain flag is set\n"
        refused = master.gnt("debug", "delay", "0.1")
        assert refused.returncode == 1 and "Queue drained" in refused.stderr
    finally:
        assert master.gnt("cluster", "queue", "undrain").returncode == 0
    assert master.gnt("cluster", "queue", "info").stdout == "The drain flag is unset\n"


def test_gnt_cluster_version(master: Master) -> None:
    done = master.gnt("cluster", "version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("Software version: 3.0.2\nInternode protocol: 3000000\n"
                           "Configuration format: 3000000\nOS api version: 20\nExport interface: 0\n"
                           "VCS version: (ganeti) version 3.0.2-3\n")


def test_gnt_cluster_info(master: Master) -> None:
    done = master.gnt("cluster", "info")
    assert done.returncode == 0, done.stderr
    for expected in ("Cluster name: cluster.example.com\n", "Master node: node1\n", "Tags: (none)\n",
                     "Default hypervisor: fake\n", "Instance policy - limits for instances: \n",
                     "Data collectors: \n"):
        assert expected in done.stdout, expected


def test_gnt_cluster_tags_add_list_remove(master: Master) -> None:
    assert master.gnt("cluster", "add-tags", "beta", "alpha").returncode == 0
    assert master.gnt("cluster", "list-tags").stdout == "alpha\nbeta\n"
    assert "Tags: alpha, beta\n" in master.gnt("cluster", "info").stdout
    assert master.gnt("cluster", "remove-tags", "beta").returncode == 0
    assert master.gnt("cluster", "list-tags").stdout == "alpha\n"
    missing = master.gnt("cluster", "remove-tags", "nope")
    assert missing.returncode == 1 and "Tag(s) 'nope' not found" in missing.stderr
    assert master.gnt("cluster", "remove-tags", "alpha").returncode == 0


# -- the daemon ----------------------------------------------------------------------------------

def test_luxi_sockets_are_mode_0660(master: Master) -> None:
    for name in ("ganeti-query", "ganeti-master"):
        path = master.root / "var/run/ganeti/socket" / name
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o660


def test_second_master_on_the_same_node_is_refused(master: Master) -> None:
    done = master.run_masterd()
    assert done.returncode == 1 and "another ganeti-masterd is running" in done.stderr
    assert done.stderr.startswith("ganeti-masterd: ")


def test_master_refuses_to_start_on_a_node_that_is_not_the_master(tmp_path: Path) -> None:
    m = make_master(tmp_path)
    (m.root / "var/lib/ganeti/ssconf_master_node").write_text("node2\n")
    done = m.run_masterd()
    assert done.returncode == 11
    assert "this node (node1) is not the master node: ssconf_master_node names node2" in done.stderr


def test_no_voting_asks_and_aborts_without_an_uppercase_yes(tmp_path: Path) -> None:
    m = make_master(tmp_path)
    done = m.run_masterd("--no-voting", stdin="yes\n")
    assert done.returncode == 1 and "please confirm by typing uppercase 'yes'" in done.stdout
    assert "Aborting." in done.stderr and not m.pid_file.exists()


def test_no_voting_with_yes_do_it_starts_without_asking(tmp_path: Path) -> None:
    m = make_master(tmp_path)
    done = m.run_masterd("--no-voting", "--yes-do-it")
    try:
        assert done.returncode == 0 and done.stdout == ""
        assert m.gnt("cluster", "version").returncode == 0
    finally:
        m.stop()


def test_sigterm_leaves_a_job_still_running_after_the_grace_to_the_restart_rule(tmp_path: Path) -> None:
    m = make_master(tmp_path)
    m.start("--shutdown-grace", "0.2")
    try:
        job_id = submit_id(m.gnt("debug", "delay", "--submit", "60"))
        wait_status(m, job_id, "running")
        pid = m.pid()
        m.stop(signal.SIGTERM)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert not m.pid_file.exists()
        assert Job.from_dict(m.job(job_id)).status == "running"
        m.start()
        job = Job.from_dict(m.job(job_id))
        assert job.status == "error" and job.ops[0].result == ["OpExecError", [RESTART_ERROR_MESSAGE]]
    finally:
        m.stop()


# -- crash ---------------------------------------------------------------------------------------

SUBMIT_SCRIPT = """
import json, sys
from ganeti import luxi, opcodes
client = luxi.Client()
jobs = [[opcodes.OpTestDelay(duration=0.01, on_master=True)] for _ in range(int(sys.argv[1]))]
print(json.dumps(client.SubmitManyJobs(jobs)))
"""


def test_sigkill_while_jobs_run_loses_nothing_acknowledged(tmp_path: Path) -> None:
    m = make_master(tmp_path)
    m.start()
    try:
        env = dict(m.env, PYTHONPATH=GANETI_PY)
        done = subprocess.run(["/usr/bin/python3", "-c", SUBMIT_SCRIPT, "200"], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        answers = json.loads(done.stdout)
        assert all(ok for ok, _ in answers)
        ids = [job_id for _, job_id in answers]
        assert len(set(ids)) == 200
        running_seen = False
        deadline = time.monotonic() + 10
        while not running_seen and time.monotonic() < deadline:
            for job_id in ids:
                path = m.queue / f"job-{job_id}"
                if path.exists() and '"status": "running"' in path.read_text():
                    running_seen = True
                    break
        m.stop(signal.SIGKILL)
        assert running_seen, "no job was seen running before the kill"
        before = {job_id: Job.from_json((m.queue / f"job-{job_id}").read_bytes()) for job_id in ids}
        unfinished = {i for i, job in before.items() if job.status in ("running", "waiting", "canceling")}
        queued = {i for i, job in before.items() if job.status == "queued"}
        assert unfinished, "the kill came after every job had finished"
        print(f"at the kill: {len(unfinished)} running/waiting, {len(queued)} queued,"
              f" {200 - len(unfinished) - len(queued)} finished")
        m.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            after = {job_id: Job.from_json((m.queue / f"job-{job_id}").read_bytes()) for job_id in ids}
            if all(job.is_finalized for job in after.values()):
                break
            time.sleep(0.1)
        for job_id in unfinished:
            assert after[job_id].status == "error"
            assert after[job_id].ops[0].result == ["OpExecError", [RESTART_ERROR_MESSAGE]]
        for job_id in queued:
            assert after[job_id].status == "success"
        for job_id, job in before.items():
            if job.is_finalized:
                assert after[job_id].status == job.status
        again = subprocess.run(["/usr/bin/python3", "-c", SUBMIT_SCRIPT, "1"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert json.loads(again.stdout)[0][1] > max(ids)
    finally:
        m.stop()
    if os.environ.get("KEEP_MASTER_ROOT") is None:
        shutil.rmtree(m.root, ignore_errors=True)
