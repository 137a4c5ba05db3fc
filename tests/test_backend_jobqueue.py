"""Job-queue files: update, rename, purge, drain flag, start-up initialisation."""

from __future__ import annotations

import base64
import fcntl
import os
import stat
import threading
import time
import zlib
from pathlib import Path

import pytest

from noded.backends import jobqueue
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import VIRTUAL_PATH_PREFIX, Paths

V = VIRTUAL_PATH_PREFIX
# shared/ lies beside the checkout (here, and in CI).
REFERENCE_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples"


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    paths.ensure_dirs()
    return NodeContext(paths=paths)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _queue(ctx: NodeContext, *parts: str) -> Path:
    return Path(ctx.paths.queue_dir, *parts)


def test_jobqueue_update_writes_the_job_file_with_mode_0640(ctx: NodeContext) -> None:
    assert jobqueue.jobqueue_update(ctx, V + "/var/lib/ganeti/queue/job-1", [0, '{"id": 1}']) is None
    path = _queue(ctx, "job-1")
    assert path.read_text() == '{"id": 1}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_jobqueue_update_decodes_compressed_content(ctx: NodeContext) -> None:
    data = b'{"ops": [' + b'"x", ' * 2000 + b'"y"]}'
    jobqueue.jobqueue_update(ctx, V + "/var/lib/ganeti/queue/job-2",
                             [1, base64.b64encode(zlib.compress(data)).decode()])
    assert _queue(ctx, "job-2").read_bytes() == data


def test_jobqueue_update_overwrites_without_leftover_temporary_files(ctx: NodeContext) -> None:
    for n in range(3):
        jobqueue.jobqueue_update(ctx, V + "/var/lib/ganeti/queue/serial", [0, f"{n}\n"])
    assert _queue(ctx, "serial").read_text() == "2\n"
    assert sorted(os.listdir(ctx.paths.queue_dir)) == ["archive", "lock", "serial"]


def test_jobqueue_update_outside_the_queue_is_refused_like_ganeti(ctx: NodeContext, tmp_path: Path) -> None:
    before = _tree(tmp_path)
    with pytest.raises(RpcFail) as err:
        jobqueue.jobqueue_update(ctx, V + "/var/lib/ganeti/evil", [0, "x"])
    assert err.value.message == (
        f"Passed job queue file '{ctx.paths.data_dir}/evil' does not belong to the queue directory"
        f" '{ctx.paths.queue_dir}'")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("name", [
    V + "/var/lib/ganeti/queue/../evil",
    V + "/var/lib/ganeti/queue/archive/../../config.data",
    V + "/var/lib/ganeti/queue/../../../../../../tmp/evil",
    V + "/var/lib/ganeti/queue-evil/job-1",
    V + "/var/lib/ganeti/queue",
    V + "/var/lib/ganeti/queue/",
])
def test_jobqueue_update_dotdot_tricks_are_refused(ctx: NodeContext, tmp_path: Path, name: str) -> None:
    before = _tree(tmp_path)
    with pytest.raises(RpcFail, match=r"does not belong to the queue directory|outside the node root"):
        jobqueue.jobqueue_update(ctx, name, [0, "x"])
    assert _tree(tmp_path) == before


def test_jobqueue_update_of_a_non_virtual_path_is_refused(ctx: NodeContext, tmp_path: Path) -> None:
    before = _tree(tmp_path)
    with pytest.raises(RpcFail, match="is not a virtual path"):
        jobqueue.jobqueue_update(ctx, "/var/lib/ganeti/queue/job-1", [0, "x"])
    assert _tree(tmp_path) == before


def test_jobqueue_update_accepts_a_real_path_below_the_root(ctx: NodeContext) -> None:
    jobqueue.jobqueue_update(ctx, str(_queue(ctx, "job-3")), [0, "{}"])
    assert _queue(ctx, "job-3").read_text() == "{}"


def test_jobqueue_update_refuses_to_replace_the_queue_lock(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="is the queue lock"):
        jobqueue.jobqueue_update(ctx, V + "/var/lib/ganeti/queue/lock", [0, "x"])


def test_jobqueue_update_refuses_a_symlink_out_of_the_queue(ctx: NodeContext, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _queue(ctx, "link").symlink_to(outside)
    with pytest.raises(RpcFail, match="through a symbolic link"):
        jobqueue.jobqueue_update(ctx, V + "/var/lib/ganeti/queue/link/job-1", [0, "x"])
    assert list(outside.iterdir()) == []


def test_jobqueue_update_gives_up_when_the_queue_lock_stays_taken(ctx: NodeContext,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobqueue, "QUEUE_LOCK_TIMEOUT", 0.3)
    fd = os.open(_queue(ctx, "lock"), os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        start = time.monotonic()
        with pytest.raises(RpcFail, match="Could not get the job queue lock"):
            jobqueue.jobqueue_update(ctx, V + "/var/lib/ganeti/queue/job-1", [0, "x"])
        assert time.monotonic() - start >= 0.3
    finally:
        os.close(fd)
    assert not _queue(ctx, "job-1").exists()


def test_jobqueue_update_waits_for_the_queue_lock(ctx: NodeContext) -> None:
    fd = os.open(_queue(ctx, "lock"), os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.flock(fd, fcntl.LOCK_EX)
    writer = threading.Thread(target=jobqueue.jobqueue_update,
                              args=(ctx, V + "/var/lib/ganeti/queue/job-1", [0, "x"]))
    writer.start()
    try:
        time.sleep(0.3)
        assert not _queue(ctx, "job-1").exists()
    finally:
        os.close(fd)
    writer.join(5)
    assert _queue(ctx, "job-1").read_text() == "x"


def test_jobqueue_rename_archives_and_answers_one_null_per_pair(ctx: NodeContext) -> None:
    for n in (1, 2):
        _queue(ctx, f"job-{n}").write_text(str(n))
    result = jobqueue.jobqueue_rename(ctx, [
        [V + "/var/lib/ganeti/queue/job-1", V + "/var/lib/ganeti/queue/archive/0/job-1"],
        [V + "/var/lib/ganeti/queue/job-2", V + "/var/lib/ganeti/queue/archive/0/job-2"],
    ])
    assert result == [None, None]
    archive = _queue(ctx, "archive", "0")
    assert stat.S_IMODE(archive.stat().st_mode) == 0o750
    assert sorted(p.name for p in archive.iterdir()) == ["job-1", "job-2"]
    assert not _queue(ctx, "job-1").exists()


def test_jobqueue_rename_with_a_target_outside_the_queue_renames_nothing(ctx: NodeContext) -> None:
    _queue(ctx, "job-1").write_text("1")
    _queue(ctx, "job-2").write_text("2")
    with pytest.raises(RpcFail, match="does not belong to the queue directory"):
        jobqueue.jobqueue_rename(ctx, [
            [V + "/var/lib/ganeti/queue/job-1", V + "/var/lib/ganeti/queue/archive/0/job-1"],
            [V + "/var/lib/ganeti/queue/job-2", V + "/var/lib/ganeti/queue/../../../etc/job-2"],
        ])
    assert _queue(ctx, "job-1").exists() and _queue(ctx, "job-2").exists()
    assert not _queue(ctx, "archive", "0").exists()


def test_jobqueue_rename_of_a_missing_file_fails_clearly(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=r"Cannot rename job queue file .*job-9"):
        jobqueue.jobqueue_rename(ctx, [[V + "/var/lib/ganeti/queue/job-9",
                                        V + "/var/lib/ganeti/queue/archive/0/job-9"]])
    assert not _queue(ctx, "archive", "0").exists()


def test_jobqueue_purge_removes_queue_files_but_the_lock(ctx: NodeContext) -> None:
    for name in ("job-1", "serial", "version", "drain", ".hidden"):
        _queue(ctx, name).write_text("x")
    _queue(ctx, "archive", "job-7").write_text("x")
    _queue(ctx, "archive", "0").mkdir()
    _queue(ctx, "archive", "0", "job-3").write_text("x")
    _queue(ctx, "lock").write_text("")
    assert jobqueue.jobqueue_purge(ctx) is None
    assert sorted(os.listdir(ctx.paths.queue_dir)) == [".hidden", "archive", "lock"]
    # As in Ganeti 3.0.2, only files directly in archive/ go; its numbered subdirectories stay.
    assert sorted(os.listdir(ctx.paths.queue_archive_dir)) == ["0"]
    assert _queue(ctx, "archive", "0", "job-3").exists()


def test_jobqueue_set_drain_flag_creates_and_removes_the_drain_file(ctx: NodeContext) -> None:
    assert jobqueue.jobqueue_set_drain_flag(ctx, True) is None
    drain = _queue(ctx, "drain")
    assert drain.read_bytes() == b""
    assert stat.S_IMODE(drain.stat().st_mode) == 0o640
    assert jobqueue.jobqueue_set_drain_flag(ctx, False) is None
    assert not drain.exists()
    jobqueue.jobqueue_set_drain_flag(ctx, False)


def test_init_queue_creates_version_and_serial_like_the_real_queue(tmp_path: Path) -> None:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    jobqueue.init_queue(paths)
    version = Path(paths.queue_dir, "version")
    serial = Path(paths.queue_dir, "serial")
    assert version.read_text() == "1\n"
    assert serial.read_text() == "0\n"
    assert stat.S_IMODE(version.stat().st_mode) == 0o640
    if (REFERENCE_SAMPLES / "queue-version").exists():
        assert version.read_bytes() == (REFERENCE_SAMPLES / "queue-version").read_bytes()


def test_init_queue_keeps_existing_files(ctx: NodeContext) -> None:
    _queue(ctx, "serial").write_text("421\n")
    jobqueue.init_queue(ctx.paths)
    assert _queue(ctx, "serial").read_text() == "421\n"
    assert _queue(ctx, "version").read_text() == "1\n"


def test_init_queue_leaves_the_queue_alone_while_someone_holds_the_lock(ctx: NodeContext) -> None:
    fd = os.open(_queue(ctx, "lock"), os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        jobqueue.init_queue(ctx.paths)
    finally:
        os.close(fd)
    assert not _queue(ctx, "version").exists()
