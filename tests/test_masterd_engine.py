"""The job engine in-process on a temporary root: submission, execution, locks, cancel, archive, restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support import NodeRoot, RunningNoded

from masterd.engine import JobEngine
from masterd.jqueue.model import RESTART_ERROR_MESSAGE
from masterd.jqueue.store import JobQueueStore
from masterd.luxi.protocol import GenericError, JobLost, RequestParseError
from masterd.query.jobs import job_status
from masterd.rpc import NodeRpcClient
from noded.paths import Paths

SAMPLES = Path("/work/shared/reference/samples")


def make_paths(tmp_path: Path, host: str = "node1") -> Paths:
    paths = Paths(root=str(tmp_path / host), hostname=host)
    os.makedirs(paths.data_dir, exist_ok=True)
    Path(paths.ssconf_file("master_node")).write_text(f"{host}\n")
    Path(paths.ssconf_file("cluster_name")).write_text("cluster.example.com\n")
    Path(paths.ssconf_file("node_list")).write_text(f"{host}\n")
    return paths


def delay(duration: float = 0.01, **params: Any) -> dict[str, Any]:
    return {"OP_ID": "OP_TEST_DELAY", "duration": duration, **params}


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(body(), 30))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def master(paths: Paths, grace: float = 5.0, **kwargs: Any) -> AsyncIterator[JobEngine]:
    store = JobQueueStore(paths)
    engine = JobEngine(store, paths, **kwargs)
    try:
        await engine.start()
        yield engine
    finally:
        await engine.shutdown(grace)
        store.close()


def on_disk(paths: Paths, job_id: int) -> dict[str, Any]:
    return json.loads(Path(paths.queue_dir, f"job-{job_id}").read_text())


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def _status(data: dict[str, Any]) -> str:
    return job_status(data)


# -- submission ---------------------------------------------------------------------------

def test_submitted_job_runs_to_success_and_is_on_disk(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([delay()])
            assert on_disk(paths, job_id)["id"] == job_id  # durable before the answer
            await engine.wait_idle()
            data = on_disk(paths, job_id)
            assert [op["status"] for op in data["ops"]] == ["success"]
            assert data["ops"][0]["result"] is None and data["end_timestamp"] is not None
    run(body)


def test_submit_many_shares_the_received_timestamp_and_resolves_relative_dependencies(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            answers = await engine.submit_many([[delay()], [delay(depends=[[-1, ["success"]]])]])
            assert [ok for ok, _ in answers] == [True, True]
            first, second = (job_id for _, job_id in answers)
            await engine.wait_idle()
            a, b = on_disk(paths, first), on_disk(paths, second)
            assert a["received_timestamp"] == b["received_timestamp"]
            assert b["ops"][0]["input"]["depends"] == [[first, ["success"]]]
            assert b["ops"][0]["status"] == "success"
    run(body)


def test_drained_queue_refuses_submissions_but_not_to_drained_queue(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            await engine.set_drained(True)
            with pytest.raises(GenericError) as err:
                await engine.submit([delay()])
            assert err.value.encode() == ["GenericError", ["Queue drained"]]
            with pytest.raises(GenericError):
                await engine.submit_many([[delay()]])
            assert await engine.submit([delay()], ignore_drain=True) == 1
            await engine.set_drained(False)
            assert await engine.submit([delay()]) == 2
    run(body)


def test_invalid_opcode_is_refused_naming_the_parameter(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            with pytest.raises(RequestParseError, match=r"OP_TEST_DELAY\.repeat"):
                await engine.submit([delay(repeat=-1)])
            answers = await engine.submit_many([[delay(bogus=1)], [delay()]])
            assert answers[0][0] is False and "bogus" in answers[0][1]
            assert answers[1] == [True, 1]  # no id used by the refused job
    run(body)


# -- execution ------------------------------------------------------------------------------

def test_first_failing_opcode_fails_the_job_and_later_ones_do_not_run(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([delay(), delay(-1.0), delay()])
            await engine.wait_idle()
            ops = on_disk(paths, job_id)["ops"]
            assert [op["status"] for op in ops] == ["success", "error", "error"]
            assert ops[1]["result"] == ["OpPrereqError", ["Duration must be greater than zero"]]
            assert ops[2]["result"] == ["OpExecError", ["Preceding opcode failed"]]
            assert ops[2]["exec_timestamp"] is None
    run(body)


def test_jobs_without_locks_run_at_the_same_time(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            start = time.monotonic()
            await engine.submit_many([[delay(0.3, no_locks=True)] for _ in range(5)])
            await engine.wait_idle()
            assert time.monotonic() - start < 1.2
    run(body)


def test_job_waiting_for_a_node_lock_is_in_state_waiting(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            first = await engine.submit([delay(0.3, no_locks=False)])
            second = await engine.submit([delay(0.01, no_locks=False)])
            await until(lambda: _status(on_disk(paths, second)) == "waiting")
            assert _status(on_disk(paths, first)) == "running"
            await engine.wait_idle()
            assert _status(on_disk(paths, second)) == "success"
    run(body)


def test_higher_priority_queued_job_starts_first(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths, max_running=1) as engine:
            await engine.submit([delay(0.2)])
            low = await engine.submit([delay(priority=10)])
            high = await engine.submit([delay(priority=-10)])
            await engine.wait_idle()
            started = {job_id: on_disk(paths, job_id)["ops"][0]["exec_timestamp"] for job_id in (low, high)}
            assert started[high] < started[low]
    run(body)


def test_dependency_on_a_failed_job_fails_the_dependent_opcode(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            bad = await engine.submit([delay(-1.0)])
            dependent = await engine.submit([delay(depends=[[bad, ["success"]]])])
            await engine.wait_idle()
            result = on_disk(paths, dependent)["ops"][0]["result"]
            assert result[0] == "OpExecError"
            assert f"Dependency job {bad} finished with status 'error'" in result[1][0]
    run(body)


def test_dependency_on_a_canceled_job_cancels_the_dependent(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths, max_running=1) as engine:
            await engine.submit([delay(0.2)])
            victim = await engine.submit([delay()])
            dependent = await engine.submit([delay(depends=[[victim, []]])])
            assert await engine.cancel(victim) == (True, f"Dequeued job {victim}")
            await engine.wait_idle()
            assert _status(on_disk(paths, dependent)) == "canceled"
    run(body)


def test_unknown_dependency_is_an_error(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([delay(depends=[[999, []]])])
            await engine.wait_idle()
            assert on_disk(paths, job_id)["ops"][0]["result"] == ["OpExecError",
                                                                   ["Dependency error: Job 999 not found"]]
    run(body)


def test_unimplemented_opcode_fails_when_it_runs(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([{"OP_ID": "OP_CLUSTER_REPAIR_DISK_SIZES"}])
            await engine.wait_idle()
            result = on_disk(paths, job_id)["ops"][0]["result"]
            message = "Opcode OP_CLUSTER_REPAIR_DISK_SIZES is not implemented by this master yet"
            assert result == ["OpExecError", [message]]
    run(body)


# -- cancel, priority, archive -------------------------------------------------------------------

def test_cancel_of_a_job_waiting_for_locks_cancels_it(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            await engine.submit([delay(0.3, no_locks=False)])
            waiting = await engine.submit([delay(30, no_locks=False)])
            await until(lambda: _status(engine.published(waiting) or {}) == "waiting")
            assert await engine.cancel(waiting) == (True, "Job successfully cancelled")
            ops = on_disk(paths, waiting)["ops"]
            assert ops[0]["status"] == "canceled" and ops[0]["result"] == "Job canceled by request"
    run(body)


def test_cancel_of_a_running_job_is_refused_without_kill(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([delay(0.3)])
            await until(lambda: _status(engine.published(job_id) or {}) == "running")
            assert await engine.cancel(job_id) == (False,
                                                   "Job no longer waiting, can't cancel (informed it anyway)")
            await engine.wait_idle()
            assert _status(on_disk(paths, job_id)) == "success"
    run(body)


def test_kill_interrupts_the_running_opcode_and_fails_the_job(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([delay(30), delay(0.01)])
            await until(lambda: _status(engine.published(job_id) or {}) == "running")
            ok, _ = await engine.cancel(job_id, kill=True)
            assert ok
            ops = on_disk(paths, job_id)["ops"]
            assert ops[0]["result"] == ["OpExecError", [f"Job {job_id} killed by request"]]
            assert ops[1]["status"] == "error"
    run(body)


def test_cancel_of_unknown_job_says_so(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            assert await engine.cancel(42) == (False, "Job 42 not found in queue")
    run(body)


def test_change_priority_of_a_queued_job_is_written(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths, max_running=1) as engine:
            await engine.submit([delay(0.2)])
            queued = await engine.submit([delay()])
            ok, message = await engine.change_priority(queued, 10)
            assert ok and message == f"Priorities of pending opcodes for job {queued} have been changed to 10"
            assert on_disk(paths, queued)["ops"][0]["priority"] == 10
    run(body)


def test_archive_moves_a_finished_job_and_watchers_then_lose_it(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([delay()])
            await engine.wait_idle()
            assert await engine.archive(job_id)
            assert Path(paths.queue_dir, "archive", "0", f"job-{job_id}").exists()
            assert not await engine.archive(job_id)
            with pytest.raises(JobLost):
                await engine.wait_for_change(job_id, ["status"], None, None, 1)
            assert engine.job_source.load_job(job_id) is not None  # still queryable as archived
    run(body)


def test_autoarchive_all_archives_every_finished_job_only(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            await engine.submit_many([[delay()], [delay()]])
            await engine.wait_idle()
            running = await engine.submit([delay(0.5)])
            assert await engine.autoarchive(-1, 30) == (2, 0)
            assert engine.job_source.live_job_ids() == [running]
    run(body)


# -- watching ------------------------------------------------------------------------------------

def test_wait_for_job_change_returns_on_change_not_before(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths, max_running=1) as engine:
            await engine.submit([delay(0.3)])
            job_id = await engine.submit([delay(0.05)])
            start = time.monotonic()
            info, logs = await engine.wait_for_change(job_id, ["status"], ["queued"], None, 10)
            elapsed = time.monotonic() - start
            assert info != ["queued"] and 0.2 < elapsed < 5 and logs == []
            # what a watcher sees is already on disk
            assert _status(on_disk(paths, job_id)) in (info[0], "success")
    run(body)


def test_wait_for_job_change_times_out_with_the_unchanged_state(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([delay(2)])
            await until(lambda: _status(engine.published(job_id) or {}) == "running")
            start = time.monotonic()
            answer = await engine.wait_for_change(job_id, ["status"], ["running"], None, 0.3)
            assert answer == [["running"], []]
            assert time.monotonic() - start >= 0.25
    run(body)


def test_feedback_reaches_the_watcher_with_serials(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([delay(0.01, repeat=2)])
            await engine.wait_idle()
            info, logs = await engine.wait_for_change(job_id, ["status"], None, None, 1)
            assert info == ["success"]
            assert [(entry[0], entry[2], entry[3]) for entry in logs] == [
                (1, "message", " - INFO: Test delay iteration 0/1"),
                (2, "message", " - INFO: Test delay iteration 1/1")]
            assert (await engine.wait_for_change(job_id, ["status"], None, 1, 1))[1][0][0] == 2
    run(body)


def test_interruptible_delay_ends_when_its_socket_is_poked(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([delay(20, interruptible=True)])
            info, logs = await engine.wait_for_change(job_id, ["status"], None, None, 5)
            while not logs:
                info, logs = await engine.wait_for_change(job_id, ["status"], info, None, 5)
            assert logs[0][2] == "delay-test"
            sock_path = logs[0][3][0]
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(sock_path)
                await asyncio.sleep(0.1)
                sock.sendall(b"x")
            await asyncio.wait_for(engine.wait_idle(), 5)
            assert _status(on_disk(paths, job_id)) == "success"
    run(body)


# -- restart -------------------------------------------------------------------------------------

def test_restart_fails_running_jobs_and_runs_queued_ones(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def first_life() -> tuple[int, int]:
        async with master(paths, grace=0, max_running=1) as engine:
            running = await engine.submit([delay(30)])
            queued = await engine.submit([delay()])
            await until(lambda: _status(engine.published(running) or {}) == "running")
            return running, queued

    async def second_life(ids: tuple[int, int]) -> None:
        async with master(paths) as engine:
            await engine.wait_idle()
            running, queued = ids
            assert on_disk(paths, running)["ops"][0]["result"] == ["OpExecError", [RESTART_ERROR_MESSAGE]]
            assert _status(on_disk(paths, queued)) == "success"
            assert await engine.submit([delay()]) == queued + 1

    ids = run(first_life)
    assert _status(on_disk(paths, ids[0])) == "running"  # left for the restart rule
    run(lambda: second_life(ids))


# -- the other opcodes ---------------------------------------------------------------------------

def test_cluster_query_has_every_key_of_the_real_answer(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)
    real = json.loads((SAMPLES / "real_QueryClusterInfo.json").read_text())

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([{"OP_ID": "OP_CLUSTER_QUERY"}])
            await engine.wait_idle()
            result = on_disk(paths, job_id)["ops"][0]["result"]
            assert set(result) == set(real)
            assert result["name"] == "cluster.example.com" and result["master"] == "node1"
    run(body)


def test_cluster_tags_are_set_listed_and_deleted(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            change = await engine.submit([{"OP_ID": "OP_TAGS_SET", "kind": "cluster", "tags": ["b", "a"]},
                                          {"OP_ID": "OP_TAGS_DEL", "kind": "cluster", "tags": ["b"]}])
            get = await engine.submit([{"OP_ID": "OP_TAGS_GET", "kind": "cluster",
                                        "depends": [[change, ["success"]]]}])
            missing = await engine.submit([{"OP_ID": "OP_TAGS_DEL", "kind": "cluster", "tags": ["zz"]}])
            bad = await engine.submit([{"OP_ID": "OP_TAGS_SET", "kind": "cluster", "tags": ["a b"]}])
            await engine.wait_idle()
            assert on_disk(paths, get)["ops"][0]["result"] == ["a"]
            assert on_disk(paths, missing)["ops"][0]["result"] == [
                "OpPrereqError", ["Tag(s) 'zz' not found", "unknown_entity"]]
            assert on_disk(paths, bad)["ops"][0]["result"] == [
                "TagError", ["Tag contains invalid characters"]]
    run(body)


def test_delay_on_unknown_node_is_a_prerequisite_error(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with master(paths) as engine:
            job_id = await engine.submit([delay(on_nodes=["nosuchnode"])])
            await engine.wait_idle()
            assert on_disk(paths, job_id)["ops"][0]["result"] == [
                "OpPrereqError", ["Node 'nosuchnode' not known", "unknown_entity"]]
    run(body)


def test_delay_on_nodes_calls_the_node_daemon_over_grpc(node_root: NodeRoot, noded: RunningNoded) -> None:
    paths = node_root.paths
    Path(paths.ssconf_file("master_node")).write_text("node1\n")
    Path(paths.ssconf_file("node_list")).write_text("node1\n")

    async def body() -> None:
        rpc = NodeRpcClient(paths, port=noded.grpc_port, addresses={"node1": noded.address})
        try:
            async with master(paths, node_rpc=rpc) as engine:
                start = time.monotonic()
                job_id = await engine.submit([delay(0.3, on_master=False, on_nodes=["node1"])])
                await engine.wait_idle()
                assert _status(on_disk(paths, job_id)) == "success"
                assert time.monotonic() - start >= 0.3
        finally:
            await rpc.close()
    run(body)


def test_delay_on_an_unreachable_node_fails_naming_it(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        rpc = NodeRpcClient(paths, port=1, addresses={"node1": "127.0.0.1"})
        async with master(paths, node_rpc=rpc) as engine:
            job_id = await engine.submit([delay(0.1, on_master=False, on_nodes=["node1"])])
            await engine.wait_idle()
            result = on_disk(paths, job_id)["ops"][0]["result"]
            assert result[0] == "OpExecError" and "Failure during rpc call to node node1" in result[1][0]
    run(body)
