"""The job queue directory: ids, durable writes, loading, archive, drain, restart recovery, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from masterd.jqueue import durable
from masterd.jqueue.model import InvalidJobError, Job, encode_error
from masterd.jqueue.store import (
    CorruptJobError,
    JobNotFinalizedError,
    JobNotFoundError,
    JobQueueStore,
    JobWriteError,
    QueueLockedError,
    QueueVersionError,
)
from noded.paths import VIRTUAL_PATH_PREFIX, Paths

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples"

T0 = (1795312878, 402313)
T1 = (1795312879, 1)


def delay_op(**extra: Any) -> dict[str, Any]:
    return {"OP_ID": "OP_TEST_DELAY", "duration": 0.0, "on_master": True, "priority": 0, **extra}


class Replicas:
    """Records what the store asks to replicate."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, bytes]] = []
        self.renames: list[list[tuple[str, str]]] = []

    def update(self, name: str, content: bytes) -> None:
        self.updates.append((name, content))

    def rename(self, pairs: list[tuple[str, str]]) -> None:
        self.renames.append(pairs)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(root=str(tmp_path / "node1"), hostname="node1")


@pytest.fixture
def replicas() -> Replicas:
    return Replicas()


@pytest.fixture
def store(paths: Paths, replicas: Replicas) -> Iterator[JobQueueStore]:
    with JobQueueStore(paths, replicas.update, replicas.rename) as opened:
        yield opened


def queue(paths: Paths, *parts: str) -> Path:
    return Path(paths.queue_dir, *parts)


def finished_job(store: JobQueueStore, end: tuple[int, int] = T1) -> Job:
    job = store.create_job([delay_op()], received=T0)
    job.mark_running(0, T0)
    job.mark_success(0, None, end)
    store.write_job(job)
    return job


def running_job(store: JobQueueStore) -> Job:
    job = store.create_job([delay_op(), delay_op()], received=T0)
    job.mark_running(0, T0)
    store.write_job(job)
    return job


# -- layout and ids ------------------------------------------------------------------
def test_new_queue_gets_ganeti_layout(store: JobQueueStore, paths: Paths) -> None:
    assert queue(paths, "version").read_bytes() == b"1\n"
    assert queue(paths, "serial").read_bytes() == b"0\n"
    assert queue(paths, "lock").is_file()
    assert queue(paths, "archive").is_dir()


def test_first_job_gets_id_1_and_the_serial_records_it(store: JobQueueStore, paths: Paths) -> None:
    job = store.create_job([delay_op()], received=T0)
    assert job.id == 1
    assert queue(paths, "serial").read_bytes() == b"1\n"
    assert json.loads(queue(paths, "job-1").read_bytes())["id"] == 1


def test_ids_continue_from_an_existing_serial(paths: Paths) -> None:
    queue(paths).mkdir(parents=True)
    queue(paths, "serial").write_bytes((SAMPLES / "queue-serial").read_bytes())
    queue(paths, "version").write_bytes((SAMPLES / "queue-version").read_bytes())
    with JobQueueStore(paths) as store:
        assert store.allocate_ids(2) == [26, 27]
    assert queue(paths, "serial").read_bytes() == b"27\n"


def test_ids_are_not_reused_after_a_crash_between_serial_and_job_write(paths: Paths) -> None:
    with JobQueueStore(paths) as store:
        store.create_job([delay_op()], received=T0)
        store.allocate_ids(3)  # ids 2-4 handed out, the "crash" comes before their files exist
    with JobQueueStore(paths) as store:
        assert store.create_job([delay_op()], received=T0).id == 5


def test_a_stale_serial_is_raised_above_the_jobs_on_disk(paths: Paths) -> None:
    with JobQueueStore(paths) as store:
        for _ in range(3):
            finished_job(store)
        store.archive_job(3)
    queue(paths, "serial").write_bytes(b"1\n")
    with JobQueueStore(paths) as store:
        assert store.allocate_ids() == [4]


def test_an_unreadable_serial_is_recomputed_from_the_jobs(paths: Paths) -> None:
    with JobQueueStore(paths) as store:
        store.create_job([delay_op()], received=T0)
    queue(paths, "serial").write_bytes(b"garbage")
    with JobQueueStore(paths) as store:
        assert store.allocate_ids() == [2]


def test_other_queue_version_is_refused(paths: Paths) -> None:
    queue(paths).mkdir(parents=True)
    queue(paths, "version").write_bytes(b"2\n")
    with pytest.raises(QueueVersionError, match="understands only version 1"):
        JobQueueStore(paths)


# -- the lock -----------------------------------------------------------------------------
def test_second_store_in_the_same_process_is_refused(store: JobQueueStore, paths: Paths) -> None:
    with pytest.raises(QueueLockedError, match="already has the queue open"):
        JobQueueStore(paths)


def test_other_process_cannot_open_a_locked_queue(store: JobQueueStore, paths: Paths) -> None:
    code = textwrap.dedent(f"""
        from masterd.jqueue.store import JobQueueStore, QueueLockedError
        from noded.paths import Paths
        try:
            JobQueueStore(Paths(root={paths.root!r}, hostname="node1"))
        except QueueLockedError as err:
            print(err)
            raise SystemExit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "Failed to obtain the job-queue lock" in proc.stdout


def test_closing_releases_the_lock(paths: Paths) -> None:
    JobQueueStore(paths).close()
    JobQueueStore(paths).close()


# -- durable writes ------------------------------------------------------------------------------
@pytest.fixture
def io_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Records fsync (of which path) and rename calls, in order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def rename(src: str, dst: str) -> None:
        real_rename(src, dst)
        events.append(("rename", f"{src} -> {dst}"))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    return events


def test_job_write_is_fsynced_renamed_and_directory_synced_before_replication(
        paths: Paths, io_events: list[tuple[str, str]]) -> None:
    with JobQueueStore(paths, lambda name, data: io_events.append(("replicate", name))) as store:
        io_events.clear()
        store.write_job(Job.new(1, [delay_op()], received=T0))
    kinds = [kind for kind, _ in io_events]
    assert kinds == ["fsync", "rename", "fsync", "replicate"]
    temp = io_events[0][1]
    assert os.path.dirname(temp) == paths.queue_dir
    assert durable.is_temp_name(os.path.basename(temp))
    assert io_events[1][1] == f"{temp} -> {queue(paths, 'job-1')}"
    assert io_events[2][1] == paths.queue_dir


def test_every_job_write_costs_two_fsyncs(store: JobQueueStore, io_events: list[tuple[str, str]]) -> None:
    job = Job.new(1, [delay_op()], received=T0)
    for _ in range(5):
        store.write_job(job)
    assert sum(1 for kind, _ in io_events if kind == "fsync") == 10


def test_serial_is_durable_before_an_id_is_returned(store: JobQueueStore, paths: Paths,
                                                      io_events: list[tuple[str, str]]) -> None:
    ids = store.allocate_ids(3)
    assert ids == [1, 2, 3]
    assert [kind for kind, _ in io_events] == ["fsync", "rename", "fsync"]
    assert io_events[1][1].endswith(" -> " + str(queue(paths, "serial")))
    assert queue(paths, "serial").read_bytes() == b"3\n"


def test_group_commit_fsyncs_every_file_before_any_rename_and_the_directory_once(
        store: JobQueueStore, paths: Paths, io_events: list[tuple[str, str]]) -> None:
    jobs = [Job.new(i, [delay_op()], received=T0) for i in (1, 2, 3)]
    assert store.write_jobs_data([(job.id, job.to_json()) for job in jobs]) == [None, None, None]
    assert [kind for kind, _ in io_events] == ["fsync"] * 3 + ["rename"] * 3 + ["fsync"]
    assert io_events[-1][1] == paths.queue_dir
    assert [store.load_job(i) for i in (1, 2, 3)] == jobs


def test_a_batch_of_jobs_and_its_serial_share_one_directory_fsync(
        store: JobQueueStore, paths: Paths, io_events: list[tuple[str, str]]) -> None:
    store.create_jobs([[delay_op()], [delay_op()], [delay_op()]], T0)
    synced = [path for kind, path in io_events if kind == "fsync"]
    assert len(synced) == 5  # the serial, three job files, the directory
    assert synced[-1] == paths.queue_dir and synced.count(paths.queue_dir) == 1
    assert queue(paths, "serial").read_bytes() == b"3\n"
    assert store.live_job_ids() == [1, 2, 3]


def test_a_group_commit_reports_a_failed_file_in_its_place(
        store: JobQueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = durable._write_temp

    def full_disk_for_job_2(directory: str, base: str, data: bytes, mode: int) -> str:
        if base == "job-2":
            raise OSError(28, "No space left on device")
        return real_write(directory, base, data, mode)

    monkeypatch.setattr(durable, "_write_temp", full_disk_for_job_2)
    jobs = [Job.new(i, [delay_op()], received=T0) for i in (1, 2, 3)]
    first, failed, third = store.write_jobs_data([(job.id, job.to_json()) for job in jobs])
    assert first is None and third is None
    assert isinstance(failed, OSError) and failed.errno == 28
    assert store.live_job_ids() == [1, 3]


def test_a_batch_whose_serial_cannot_be_written_keeps_none_of_its_jobs(
        store: JobQueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = durable._write_temp

    def full_disk_for_serial(directory: str, base: str, data: bytes, mode: int) -> str:
        if base == "serial":
            raise OSError(28, "No space left on device")
        return real_write(directory, base, data, mode)

    monkeypatch.setattr(durable, "_write_temp", full_disk_for_serial)
    with pytest.raises(OSError, match="No space left"):
        store.create_jobs([[delay_op()], [delay_op()]], T0)
    assert store.live_job_ids() == []
    monkeypatch.undo()
    assert store.create_job([delay_op()], received=T0).id == 3  # ids 1 and 2 are not reused


def test_written_files_have_ganeti_modes(store: JobQueueStore, paths: Paths) -> None:
    store.create_job([delay_op()], received=T0)
    assert queue(paths, "job-1").stat().st_mode & 0o777 == 0o640
    assert queue(paths, "serial").stat().st_mode & 0o777 == 0o640


def test_job_and_serial_are_replicated_under_virtual_names(store: JobQueueStore, paths: Paths,
                                                           replicas: Replicas) -> None:
    job = store.create_job([delay_op()], received=T0)
    assert replicas.updates == [
        (f"{VIRTUAL_PATH_PREFIX}/var/lib/ganeti/queue/serial", b"1\n"),
        (f"{VIRTUAL_PATH_PREFIX}/var/lib/ganeti/queue/job-1", job.to_json())]


def test_write_without_replication(store: JobQueueStore, replicas: Replicas) -> None:
    job = store.create_job([delay_op()], received=T0)
    replicas.updates.clear()
    store.write_job(job, replicate=False)
    assert replicas.updates == []


def test_replication_failure_is_logged_not_raised(paths: Paths, caplog: pytest.LogCaptureFixture) -> None:
    def broken(name: str, content: bytes) -> None:
        raise ConnectionError("node2 is down")

    with JobQueueStore(paths, broken) as store:
        job = store.create_job([delay_op()], received=T0)
    assert queue(paths, "job-1").read_bytes() == job.to_json()
    assert "could not replicate" in caplog.text


def test_temporary_files_of_a_crash_are_removed_at_open(paths: Paths) -> None:
    with JobQueueStore(paths) as store:
        store.create_job([delay_op()], received=T0)
    leftover = queue(paths, ".job-1.abc123.tmp")
    leftover.write_bytes(b'{"id": 1, "ops": [')
    with JobQueueStore(paths) as store:
        assert not leftover.exists()
        assert store.live_job_ids() == [1]


# -- loading ----------------------------------------------------------------------------------
def test_loaded_job_equals_the_written_one(store: JobQueueStore) -> None:
    job = running_job(store)
    job.add_log(0, "hello", now=T1)
    store.write_job(job)
    assert store.load_job(job.id) == job


def test_loading_a_missing_job_gives_none(store: JobQueueStore) -> None:
    assert store.load_job(99) is None


def test_corrupt_job_files_are_reported_and_the_rest_loaded(store: JobQueueStore, paths: Paths) -> None:
    good = store.create_job([delay_op()], received=T0)
    queue(paths, "job-2").write_bytes(b'{"id": 2, "ops": [')
    queue(paths, "job-3").write_bytes(b"")
    jobs, problems = store.load_all()
    assert [job.id for job in jobs] == [good.id]
    assert sorted(p.path for p in problems) == [str(queue(paths, "job-2")), str(queue(paths, "job-3"))]
    assert all("not valid JSON" in p.reason for p in problems)


def test_job_file_holding_another_id_is_corrupt(store: JobQueueStore, paths: Paths) -> None:
    store.create_job([delay_op()], received=T0)
    os.rename(queue(paths, "job-1"), queue(paths, "job-8"))
    with pytest.raises(CorruptJobError, match="holds job 1, not job 8"):
        store.load_job(8)


def test_real_queue_files_load(store: JobQueueStore, paths: Paths) -> None:
    for sample in ("job-2.success.CLUSTER_VERIFY_parent.json", "job-14.error.INSTANCE_CREATE.json"):
        job_id = sample.split(".")[0]
        queue(paths, job_id).write_bytes((SAMPLES / sample).read_bytes())
    jobs, problems = store.load_all()
    assert problems == []
    assert [(job.id, job.status) for job in jobs] == [(2, "success"), (14, "error")]


# -- archive -----------------------------------------------------------------------------------
def test_archiving_moves_a_finished_job_into_its_archive_directory(
        store: JobQueueStore, paths: Paths, replicas: Replicas) -> None:
    job = finished_job(store)
    content = queue(paths, "job-1").read_bytes()
    store.archive_job(job.id)
    assert not queue(paths, "job-1").exists()
    assert queue(paths, "archive", "0", "job-1").read_bytes() == content
    assert replicas.renames == [[(f"{VIRTUAL_PATH_PREFIX}/var/lib/ganeti/queue/job-1",
                                  f"{VIRTUAL_PATH_PREFIX}/var/lib/ganeti/queue/archive/0/job-1")]]
    assert store.job_status(job.id) == "success"
    assert store.live_job_ids() == []


def test_archive_directory_is_id_div_10000(store: JobQueueStore, paths: Paths) -> None:
    job = Job.new(12345, [delay_op()], received=T0)
    job.cancel(T1)
    store.write_job(job)
    store.archive_job(12345)
    assert queue(paths, "archive", "1", "job-12345").is_file()


def test_archiving_an_unfinished_job_is_refused(store: JobQueueStore, paths: Paths) -> None:
    job = running_job(store)
    with pytest.raises(JobNotFinalizedError, match="is running"):
        store.archive_job(job.id)
    assert queue(paths, "job-1").is_file()


def test_archiving_an_unknown_job_is_refused(store: JobQueueStore) -> None:
    with pytest.raises(JobNotFoundError, match="Job 42 not found"):
        store.archive_job(42)


def test_autoarchive_with_negative_age_archives_every_finished_job(store: JobQueueStore) -> None:
    finished_job(store)
    running = running_job(store)
    queued = store.create_job([delay_op()], received=T0)
    failed = store.create_job([delay_op()], received=T0)
    failed.mark_error(0, encode_error("OpPrereqError", "no", "wrong_input"), T1)
    store.write_job(failed)
    assert store.autoarchive(-1, 60) == (2, 0)
    assert store.live_job_ids() == [running.id, queued.id]


def test_autoarchive_keeps_jobs_younger_than_age(store: JobQueueStore) -> None:
    old = finished_job(store, end=(1000, 0))
    young = finished_job(store, end=(5000, 0))
    assert store.autoarchive(3600, 60, now=6000.0) == (1, 0)
    assert store.live_job_ids() == [young.id]
    assert store.job_status(old.id) == "success"


def test_autoarchive_past_its_timeout_reports_unchecked_jobs(store: JobQueueStore) -> None:
    finished_job(store)
    finished_job(store)
    assert store.autoarchive(-1, -1) == (0, 2)


# -- drain -------------------------------------------------------------------------------------
def test_drain_flag_is_an_empty_file(store: JobQueueStore, paths: Paths) -> None:
    assert not store.is_drained()
    store.set_drained(True)
    store.set_drained(True)
    assert store.is_drained() and queue(paths, "drain").read_bytes() == b""
    store.set_drained(False)
    store.set_drained(False)
    assert not store.is_drained() and not queue(paths, "drain").exists()


# -- restart ---------------------------------------------------------------------------------------
def test_restart_fails_running_jobs_and_keeps_queued_ones(paths: Paths, replicas: Replicas) -> None:
    with JobQueueStore(paths) as store:
        done = finished_job(store)
        running = running_job(store)
        queued = store.create_job([delay_op()], received=T0)
    done_bytes = queue(paths, f"job-{done.id}").read_bytes()
    queue(paths, "job-9").write_bytes(b"not json")
    with JobQueueStore(paths, replicas.update) as store:
        report = store.recover_after_restart(T1)
        assert [job.id for job in report.queued] == [queued.id]
        assert [job.id for job in report.failed] == [running.id]
        assert [p.path for p in report.corrupt] == [str(queue(paths, "job-9"))]
        on_disk = store.load_job(running.id)
    assert on_disk is not None and on_disk.status == "error" and on_disk.end_timestamp == T1
    assert [op.result for op in on_disk.ops] == [
        ["OpExecError", ["Job aborted: the master daemon has been stopped during the job execution"]]] * 2
    assert queue(paths, f"job-{done.id}").read_bytes() == done_bytes
    assert json.loads(queue(paths, f"job-{queued.id}").read_bytes())["ops"][0]["status"] == "queued"
    assert [name for name, _ in replicas.updates] == [
        f"{VIRTUAL_PATH_PREFIX}/var/lib/ganeti/queue/job-{running.id}"]


# -- submission batches ---------------------------------------------------------------------------
def test_batch_resolves_relative_dependencies_and_keeps_ids_of_invalid_jobs(store: JobQueueStore) -> None:
    results = store.create_jobs([[delay_op()], [], [delay_op(depends=[[-2, ["success"]]])]], T0)
    first, bad, third = results
    assert isinstance(first, Job) and first.id == 1
    assert isinstance(bad, InvalidJobError)
    assert isinstance(third, Job) and third.id == 3
    assert third.ops[0].input["depends"] == [[1, ["success"]]]
    assert store.live_job_ids() == [1, 3]
    assert store.allocate_ids() == [4]


# -- a real crash ------------------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys
    from masterd.jqueue.store import JobQueueStore
    from noded.paths import Paths
    store = JobQueueStore(Paths(root=sys.argv[1], hostname="node1"))
    while True:
        job = store.create_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0.0}])
        print(job.id, flush=True)
        job.mark_running(0)
        store.write_job(job)
        job.add_log(0, "x" * 2000)
        store.write_job(job)
""")


def run_writer_and_kill(root: str, wanted: int) -> list[int]:
    """Start a process creating jobs, SIGKILL it once it acknowledged `wanted` ids; return them."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, root], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    acknowledged: list[int] = []
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        while len(acknowledged) < wanted and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert len(acknowledged) >= wanted, "the writer stopped early"
    return acknowledged


def test_sigkilled_writer_leaves_valid_job_files_and_unique_ids(paths: Paths) -> None:
    first = run_writer_and_kill(paths.root, 30)
    second = run_writer_and_kill(paths.root, 30)
    acknowledged = first + second
    assert len(set(acknowledged)) == len(acknowledged)
    assert min(second) > max(first)
    files = sorted(p for p in queue(paths).iterdir() if p.name.startswith("job-"))
    for path in files:
        data = json.loads(path.read_bytes())
        assert path.name == f"job-{data['id']}"
    on_disk = {int(p.name[4:]) for p in files}
    assert set(acknowledged) <= on_disk
    with JobQueueStore(paths) as store:
        assert store.last_job_id >= max(on_disk)
        report = store.recover_after_restart()
        assert report.corrupt == []
        jobs, _ = store.load_all()
    # Killed mid-run: error now; killed between creation and start: still queued.
    assert {job.status for job in jobs} <= {"error", "queued"}
    assert sum(job.status == "error" for job in jobs) >= len(jobs) - 2


def test_a_job_that_cannot_be_written_is_reported_in_its_place(
        store: JobQueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = durable._write_temp

    def full_disk_for_job_1(directory: str, base: str, data: bytes, mode: int) -> str:
        if base == "job-1":
            raise OSError(28, "No space left on device")
        return real_write(directory, base, data, mode)

    monkeypatch.setattr(durable, "_write_temp", full_disk_for_job_1)
    failed, written = store.create_jobs([[delay_op()], [delay_op()]], T0)
    assert isinstance(failed, JobWriteError) and "No space left on device" in str(failed)
    assert isinstance(written, Job) and written.id == 2
    assert store.live_job_ids() == [2]
