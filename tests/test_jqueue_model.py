"""The job model: Ganeti's job JSON, status derivation, priorities, summaries, transitions."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from masterd.jqueue import model
from masterd.jqueue.model import (
    DependencyResult,
    InvalidJobError,
    Job,
    JobFormatError,
    JobStateError,
    calc_job_status,
    check_dependency,
    opcode_summary,
    show_double,
)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples"
REAL_QUEUE = SAMPLES / "real_queue_3.0.2"
GANETI_PYTHONPATH = "/usr/share/ganeti/3.0"

EXECUTOR_SAMPLES = sorted(SAMPLES.glob("job-*.json")) + sorted(REAL_QUEUE.glob("job-*.captured"))
ALL_SAMPLES = EXECUTOR_SAMPLES + sorted(REAL_QUEUE.glob("snapshots/*job-*"))

T0 = (1795312878, 402313)
T1 = (1795312878, 773661)
T2 = (1795312878, 797060)
T3 = (1795312879, 947426)


def delay_op(duration: float = 1.0, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"OP_ID": "OP_TEST_DELAY", "duration": duration, "on_master": True,
                          "on_nodes": [], "repeat": 0, "priority": 0, "depends": None,
                          "comment": None, "reason": [["gnt:client:gnt-debug", "delay", 1]]}
    op.update(extra)
    return op


def job_with_statuses(*statuses: str) -> Job:
    job = Job.new(7, [delay_op() for _ in statuses], received=T0)
    for op, status in zip(job.ops, statuses, strict=True):
        op.status = status
    return job


# -- serialization ---------------------------------------------------------------
@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: p.name)
def test_real_job_file_round_trips_to_the_same_json(path: Path) -> None:
    raw = path.read_bytes()
    assert json.loads(Job.from_json(raw).to_json()) == json.loads(raw)


@pytest.mark.parametrize("path", EXECUTOR_SAMPLES, ids=lambda p: p.name)
def test_executor_written_job_file_round_trips_byte_for_byte(path: Path) -> None:
    raw = path.read_bytes()
    assert Job.from_json(raw).to_json() == raw


def test_loaded_sample_exposes_its_fields() -> None:
    job = Job.from_json((SAMPLES / "job-24.success.INSTANCE_CREATE.json").read_bytes())
    assert job.id == 24
    assert job.received_timestamp == (1795312949, 893168)
    assert job.livelock == "/var/run/ganeti/livelocks/job_000024_1795312950"
    assert job.process_id == 11652
    op = job.ops[0]
    assert op.op_id == "OP_INSTANCE_CREATE"
    assert op.result == ["node1.example.com"]
    assert op.log[0] == model.LogEntry(1, (1795312950, 624633), "message", "* disk 0, size 1.0G")
    assert job.log_serial == 10


def test_livelock_and_process_id_are_omitted_until_set() -> None:
    job = Job.new(3, [delay_op()], received=T0)
    data = json.loads(job.to_json())
    assert "livelock" not in data and "process_id" not in data
    job.livelock, job.process_id = "/var/run/ganeti/livelocks/job_000003_1", 42
    data = json.loads(job.to_json())
    assert (data["livelock"], data["process_id"]) == ("/var/run/ganeti/livelocks/job_000003_1", 42)


def test_new_job_has_ganeti_key_sets_and_null_timestamps() -> None:
    data = json.loads(Job.new(3, [delay_op()], received=T0).to_json())
    assert set(data) == {"id", "ops", "received_timestamp", "start_timestamp", "end_timestamp"}
    assert data["received_timestamp"] == list(T0)
    assert data["start_timestamp"] is None and data["end_timestamp"] is None
    op = data["ops"][0]
    assert set(op) == {"input", "status", "result", "log", "priority", "start_timestamp",
                       "exec_timestamp", "end_timestamp"}
    assert (op["status"], op["result"], op["log"], op["priority"]) == ("queued", None, [], 0)


def test_unknown_keys_are_kept() -> None:
    raw = json.loads((SAMPLES / "job-12.success.TEST_DELAY.json").read_bytes())
    raw["future_field"] = {"x": 1}
    raw["ops"][0]["op_extra"] = [1, 2]
    again = json.loads(Job.from_dict(raw).to_json())
    assert again["future_field"] == {"x": 1} and again["ops"][0]["op_extra"] == [1, 2]


@pytest.mark.parametrize("text, complaint", [
    (b"{not json", "not valid JSON"),
    (b"[]", "JSON object"),
    (b'{"ops": []}', "job id"),
    (b'{"id": 1}', "ops must be a list"),
    (b'{"id": 1, "ops": [{"input": {}, "status": "exploded", "result": null, "log": []}]}', "status"),
    (b'{"id": 1, "ops": [{"status": "queued"}]}', "input must be an object"),
    (b'{"id": 1, "ops": [], "start_timestamp": [1.5, 2]}', "start_timestamp"),
    (b'{"id": 1, "ops": [{"input": {}, "status": "queued", "log": [[1, [1, 2], "message"]]}]}', "log[0]"),
])
def test_malformed_job_is_refused_with_a_message_naming_the_problem(text: bytes, complaint: str) -> None:
    with pytest.raises(JobFormatError, match=complaint.replace("[", r"\[")):
        Job.from_json(text)


# -- submission -----------------------------------------------------------------
def test_new_job_appends_luxid_reason_with_received_time_in_ns() -> None:
    job = Job.new(13, [delay_op(), {"OP_ID": "OP_CLUSTER_VERIFY"}], received=T0)
    assert job.ops[0].input["reason"] == [
        ["gnt:client:gnt-debug", "delay", 1],
        ["gnt:opcode:test_delay", "job=13;index=0", 1795312878402313000]]
    assert job.ops[1].input["reason"] == [["gnt:opcode:cluster_verify", "job=13;index=1",
                                           1795312878402313000]]


def test_new_job_does_not_modify_the_callers_opcode() -> None:
    op = delay_op()
    Job.new(1, [op], received=T0)
    assert op["reason"] == [["gnt:client:gnt-debug", "delay", 1]]


def test_new_job_resolves_relative_dependencies_against_its_own_id() -> None:
    job = Job.new(4, [delay_op(depends=[[-1, []], [2, ["success", "error"]]])], received=T0)
    assert job.ops[0].input["depends"] == [[3, []], [2, ["success", "error"]]]
    assert job.dependencies(0) == [(3, []), (2, ["success", "error"])]


@pytest.mark.parametrize("depends, complaint", [
    ([[-4, []]], "Unable to resolve relative job ID -4"),
    ([[4, []]], "can't depend on itself"),
    ([[1, ["running"]]], "wanted statuses"),
    ([[1]], "job_id"),
    ("soon", "list"),
])
def test_bad_dependencies_are_refused(depends: Any, complaint: str) -> None:
    with pytest.raises(InvalidJobError, match=complaint):
        Job.new(4, [delay_op(depends=depends)], received=T0)


def test_job_without_opcodes_is_refused() -> None:
    with pytest.raises(InvalidJobError, match="at least one opcode"):
        Job.new(1, [], received=T0)


def test_opcode_without_op_id_is_refused() -> None:
    with pytest.raises(InvalidJobError, match="OP_ID"):
        Job.new(1, [{"duration": 1}], received=T0)


def test_opcode_priority_comes_from_its_input() -> None:
    job = Job.new(1, [delay_op(priority=-10), delay_op(priority=10)], received=T0)
    assert [op.priority for op in job.ops] == [-10, 10]


# -- status and priority --------------------------------------------------------------
@pytest.mark.parametrize("statuses, expected", [
    ((), "success"),
    (("queued",), "queued"),
    (("queued", "queued"), "queued"),
    (("success", "queued"), "queued"),
    (("waiting", "queued"), "waiting"),
    (("success", "running", "queued"), "running"),
    (("running", "waiting"), "waiting"),
    (("success", "success"), "success"),
    (("success", "error", "error"), "error"),
    (("error", "canceled"), "error"),
    (("canceling", "canceling"), "canceling"),
    (("canceled", "canceled"), "canceled"),
    (("running", "canceled"), "canceled"),
    (("success", "canceling", "error"), "canceling"),
])
def test_job_status_is_derived_from_the_opcodes_as_ganeti_does(statuses: tuple[str, ...],
                                                               expected: str) -> None:
    assert calc_job_status(statuses) == expected


def test_job_priority_is_the_minimum_over_unfinished_opcodes() -> None:
    job = Job.new(1, [delay_op(priority=-10), delay_op(priority=10), delay_op(priority=0)], received=T0)
    assert job.priority == -10
    job.ops[0].status = "success"
    assert job.priority == 0


def test_finished_job_has_the_default_priority() -> None:
    job = job_with_statuses("success", "error")
    job.ops[1].priority = -20
    assert job.priority == 0


# -- summaries --------------------------------------------------------------------------
@pytest.mark.parametrize("op, expected", [
    ({"OP_ID": "OP_TEST_DELAY", "duration": 1.0}, "TEST_DELAY(1.0)"),
    ({"OP_ID": "OP_TEST_DELAY", "duration": 0}, "TEST_DELAY(0.0)"),
    ({"OP_ID": "OP_TEST_DELAY", "duration": 0.001}, "TEST_DELAY(1.0e-3)"),
    ({"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "node2.example.com"}, "NODE_SET_PARAMS(node2.example.com)"),
    ({"OP_ID": "OP_CLUSTER_VERIFY"}, "CLUSTER_VERIFY"),
    ({"OP_ID": "OP_CLUSTER_VERIFY_GROUP", "group_name": "uuid-1"}, "CLUSTER_VERIFY_GROUP(uuid-1)"),
    ({"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": "inst1"}, "INSTANCE_STARTUP(inst1)"),
    ({"OP_ID": "OP_GROUP_ADD", "group_name": "g2"}, "GROUP_ADD(g2)"),
    ({"OP_ID": "OP_QUERY", "what": "instance"}, "QUERY(instance)"),
    ({"OP_ID": "OP_TAGS_GET", "kind": "instance", "name": "inst1"}, "TAGS_GET(inst1)"),
    ({"OP_ID": "OP_TAGS_GET", "kind": "cluster", "name": ""}, "TAGS_GET(None)"),
    ({"OP_ID": "OP_TAGS_SEARCH", "pattern": "a.*"}, "TAGS_SEARCH(a.*)"),
    ({"OP_ID": "OP_TEST_ALLOCATOR", "iallocator": None}, "TEST_ALLOCATOR(None)"),
    ({"OP_ID": "OP_NETWORK_ADD", "network_name": "net1"}, "NETWORK_ADD(net1)"),
    ({"OP_ID": "OP_CLUSTER_RENAME", "name": "c2"}, "CLUSTER_RENAME(c2)"),
    ({"OP_ID": "OP_TAGS_SET"}, "TAGS_SET"),
    ({"duration": 1}, "INVALID_OP"),
    ("OP_TEST_DELAY", "INVALID_OP"),
])
def test_opcode_summary(op: Any, expected: str) -> None:
    assert opcode_summary(op) == expected


def test_job_summary_lists_every_opcode() -> None:
    job = Job.new(1, [delay_op(2.5), {"OP_ID": "OP_CLUSTER_VERIFY"}], received=T0)
    assert job.summary == ["TEST_DELAY(2.5)", "CLUSTER_VERIFY"]


@pytest.mark.parametrize("value, text", [
    (1.0, "1.0"), (0.1, "0.1"), (0.05, "5.0e-2"), (1234.5, "1234.5"), (1e7, "1.0e7"),
    (9999999.0, "9999999.0"), (-2.0, "-2.0"), (0.0, "0.0"),
])
def test_show_double_formats_like_haskell(value: float, text: str) -> None:
    assert show_double(value) == text


# -- transitions --------------------------------------------------------------------------
def test_successful_run_sets_ganeti_timestamps() -> None:
    job = Job.new(12, [delay_op()], received=T0)
    job.mark_waiting(0, T1)
    assert (job.status, job.start_timestamp, job.ops[0].start_timestamp) == ("waiting", T1, T1)
    job.mark_running(0, T2)
    assert (job.status, job.ops[0].exec_timestamp) == ("running", T2)
    assert job.mark_success(0, None, T3) is True
    assert (job.status, job.ops[0].end_timestamp, job.end_timestamp) == ("success", T3, T3)


def test_success_of_a_middle_opcode_does_not_finish_the_job() -> None:
    job = Job.new(1, [delay_op(), delay_op()], received=T0)
    job.mark_running(0, T1)
    assert job.mark_success(0, True, T2) is False
    assert (job.status, job.end_timestamp, job.next_opcode_index()) == ("queued", None, 1)


def test_error_fails_the_later_opcodes_with_preceding_opcode_failed() -> None:
    job = Job.new(1, [delay_op(), delay_op(), delay_op()], received=T0)
    job.mark_running(0, T1)
    job.mark_error(0, model.encode_error("OpPrereqError", "bad", "wrong_input"), T2)
    assert job.status == "error" and job.end_timestamp == T2
    assert job.ops[0].result == ["OpPrereqError", ["bad", "wrong_input"]]
    assert [op.status for op in job.ops] == ["error", "error", "error"]
    assert job.ops[1].result == ["OpExecError", ["Preceding opcode failed"]]
    assert job.ops[1].end_timestamp is None


def test_marking_a_finished_opcode_running_is_refused() -> None:
    job = job_with_statuses("success")
    with pytest.raises(JobStateError, match="is success"):
        job.mark_running(0, T1)


def test_cancel_of_a_queued_job_cancels_every_opcode() -> None:
    job = Job.new(5, [delay_op(), delay_op()], received=T0)
    assert job.cancel(T1) == (True, "Job 5 canceled")
    assert [op.status for op in job.ops] == ["canceled", "canceled"]
    assert job.ops[0].result == "Job canceled by request" and job.end_timestamp == T1


def test_cancel_of_a_waiting_job_marks_it_canceling_then_canceled() -> None:
    job = Job.new(5, [delay_op(), delay_op()], received=T0)
    job.mark_waiting(0, T1)
    assert job.cancel(T2) == (True, "Job 5 will be canceled")
    assert job.status == "canceling" and job.end_timestamp is None
    job.mark_canceled(0, T3)
    assert job.status == "canceled" and job.end_timestamp == T3
    assert [op.result for op in job.ops] == ["Job canceled by request"] * 2


def test_cancel_of_a_running_job_is_refused() -> None:
    job = Job.new(5, [delay_op()], received=T0)
    job.mark_running(0, T1)
    assert job.cancel(T2) == (False, "Job 5 is no longer waiting in the queue")
    assert job.status == "running"


def test_change_priority_touches_only_pending_opcodes() -> None:
    job = Job.new(2, [delay_op(), delay_op(), delay_op()], received=T0)
    job.mark_running(0, T1)
    ok, message = job.change_priority(10)
    assert ok and message == "Priorities of pending opcodes for job 2 have been changed to 10"
    assert [op.priority for op in job.ops] == [0, 10, 10]


def test_change_priority_of_a_finished_job_is_refused() -> None:
    assert job_with_statuses("success").change_priority(10) == (False, "Job 7 is finished")


def test_log_serials_are_job_wide_and_message_lists_are_split() -> None:
    job = Job.new(1, [delay_op(), delay_op()], received=T0)
    job.add_log(0, "first", now=T1)
    job.add_log(1, ["a", "b"], model.ELOG_MESSAGE_LIST, now=T2)
    assert [e.serial for e in job.get_log_entries()] == [1, 2, 3]
    assert job.ops[1].log[1].to_json() == [3, list(T2), "message", "b"]
    assert [e.message for e in job.get_log_entries(1)] == ["a", "b"]


# -- restart ----------------------------------------------------------------------------------
def test_restart_fails_a_running_job_with_an_op_exec_error() -> None:
    job = Job.new(9, [delay_op(), delay_op(), delay_op()], received=T0)
    job.mark_running(0, T1)
    job.mark_success(0, True, T1)
    job.mark_running(1, T2)
    assert job.finalize_after_restart(T3) is True
    assert job.status == "error" and job.end_timestamp == T3
    assert [op.status for op in job.ops] == ["success", "error", "error"]
    assert job.ops[0].result is True
    for op in job.ops[1:]:
        assert op.result[0] == "OpExecError"
        assert "the master daemon has been stopped during the job execution" in op.result[1][0]
        assert op.end_timestamp == T3
    assert job.ops[1].input["reason"][-1][0] == model.RESTART_REASON_SOURCE


@pytest.mark.parametrize("statuses", [("waiting",), ("canceling",)])
def test_restart_fails_waiting_and_canceling_jobs_too(statuses: tuple[str, ...]) -> None:
    job = job_with_statuses(*statuses)
    assert job.finalize_after_restart(T3) is True
    assert job.status == "error"


@pytest.mark.parametrize("statuses", [("queued", "queued"), ("success", "queued"), ("success",),
                                      ("error",), ("canceled",)])
def test_restart_leaves_queued_and_finished_jobs_alone(statuses: tuple[str, ...]) -> None:
    job = job_with_statuses(*statuses)
    before = job.to_json()
    assert job.finalize_after_restart(T3) is False
    assert job.to_json() == before


# -- dependencies ----------------------------------------------------------------------------
@pytest.mark.parametrize("wanted, dep_status, result", [
    ([], "running", DependencyResult.WAIT),
    ([], "queued", DependencyResult.WAIT),
    ([], "error", DependencyResult.CONTINUE),
    (["success"], "success", DependencyResult.CONTINUE),
    (["success"], "error", DependencyResult.WRONGSTATUS),
    (["success"], "canceled", DependencyResult.CANCEL),
    (["canceled"], "canceled", DependencyResult.CONTINUE),
    ([], None, DependencyResult.ERROR),
])
def test_dependency_decision(wanted: list[str], dep_status: str | None,
                             result: DependencyResult) -> None:
    assert check_dependency(5, 3, wanted, dep_status)[0] is result


def test_wrong_dependency_status_message_is_ganetis() -> None:
    assert check_dependency(5, 3, ["success", "canceled"], "error")[1] == (
        "Dependency job 3 finished with status 'error', not one of 'success, canceled' as required")


# -- interoperability with the real Ganeti ------------------------------------------------------
@pytest.mark.skipif(not os.path.isdir(GANETI_PYTHONPATH), reason="Ganeti 3.0 is not installed")
def test_real_ganeti_loads_our_job_file_and_agrees_on_status_priority_and_log(tmp_path: Path) -> None:
    job = Job.new(30, [{"OP_ID": "OP_CLUSTER_VERIFY_GROUP", "group_name": "g1", "priority": 10},
                       {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": "inst1", "priority": -10}],
                  received=T0)
    job.mark_running(0, T1)
    job.add_log(0, ["one", "two"], model.ELOG_MESSAGE_LIST, now=T2)
    job.mark_success(0, True, T2)
    job.mark_waiting(1, T3)
    path = tmp_path / "job-30"
    path.write_bytes(job.to_json())
    probe = ("import json, sys\n"
             "from ganeti import jqueue\n"
             "job = jqueue._QueuedJob.Restore(None, json.load(open(sys.argv[1])), False, False)\n"
             "print(json.dumps([job.CalcStatus(), job.CalcPriority(),"
             " [op.input.Summary() for op in job.ops], job.log_serial]))\n")
    out = subprocess.run(["/usr/bin/python3", "-c", probe, str(path)], check=True, capture_output=True,
                         env={**os.environ, "PYTHONPATH": GANETI_PYTHONPATH}, timeout=60).stdout
    assert json.loads(out) == [job.status, job.priority, job.summary, job.log_serial]
