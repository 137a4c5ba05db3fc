"""The master API's proto surface (ganeti.master.v1) fits LUXI.

Every LUXI method issue 4 asks for has an rpc carrying its name as the legacy
option, with request fields named and ordered like the method's positional
arguments (masterd/luxi/methods.py); real LUXI arguments and results (from
/work/shared/reference: luxi-protocol.md, cli-needs.md, the real luxid's
answers) survive the trip through the typed messages, and their binary form,
unchanged; every service, rpc, message and field has a comment.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from compat_jsonrpc import codec  # noqa: E402
from generated.ganeti.common.v1 import legacy_pb2  # noqa: E402
from generated.ganeti.master.v1 import cluster_pb2, jobs_pb2, objects_pb2, query_pb2  # noqa: E402
from masterd.jqueue import model  # noqa: E402
from masterd.luxi import methods  # noqa: E402

PROTO_DIR = ROOT / "proto"
MASTER_PROTO_DIR = PROTO_DIR / "ganeti" / "master" / "v1"
DOCS_PAGE = ROOT / "docs" / "api" / "ganeti.master.v1.md"
SAMPLES = Path("/work/shared/reference/samples")
MODULES = (cluster_pb2, jobs_pb2, objects_pb2, query_pb2)

# Issue 4 item 3: jobs (submit one or many, watch, cancel, archive,
# autoarchive, change priority, query), queries of cluster, nodes, instances,
# groups and jobs with fields and filters, drain flag, watcher pause.
ISSUE_METHODS = (
    "SubmitJob", "SubmitManyJobs", "WaitForJobChange", "QueryJobs", "CancelJob", "ArchiveJob",
    "AutoArchiveJobs", "ChangeJobPriority", "Query", "QueryFields", "QueryNodes", "QueryInstances",
    "QueryGroups", "QueryClusterInfo", "QueryConfigValues", "QueryTags", "SetDrainFlag", "SetWatcherPause",
)
# rpcs with no LUXI twin.
GRPC_ONLY = frozenset({"WatchJob", "GetJob"})

NS_TIMESTAMP = 1795312878399544832  # above 2**53: a double would not keep it

# A real opcode: job 12's OP_TEST_DELAY (samples/job-12.success.TEST_DELAY.json).
TEST_DELAY_OP: dict[str, Any] = {
    "duration": 1.0, "on_master": True, "on_nodes": [],
    "on_node_uuids": ["3192824e-77c3-4e4a-8c68-30c91f7b68f0"], "repeat": 0, "interruptible": False,
    "no_locks": False, "dry_run": False, "debug_level": 0, "priority": 0, "depends": None,
    "comment": None,
    "reason": [["gnt:client:gnt-debug", "delay", NS_TIMESTAMP],
               ["gnt:opcode:test_delay", "job=12;index=0", 1795312878402313000]],
    "OP_ID": "OP_TEST_DELAY",
}
# A child job of OP_CLUSTER_VERIFY (job-queue.md section 4), with a dependency.
VERIFY_GROUP_OP: dict[str, Any] = {
    "debug_level": 0, "priority": 0, "depends": [[-1, []]], "comment": "Submitted by OP_CLUSTER_VERIFY",
    "reason": [["gnt:client:gnt-cluster", "verify", 1795313201585067520]],
    "OP_ID": "OP_CLUSTER_VERIFY_GROUP", "group_name": "90ec0b36-db1b-4688-8220-84c1e26a0ec0",
    "debug_simulate_errors": False, "error_codes": False, "skip_checks": [], "ignore_errors": ["ENODESETUP"],
    "verbose": False, "verify_clutter": False,
}
JOB_SHOW_FIELDS = ["id", "status", "ops", "opresult", "opstatus", "oplog", "opstart", "opexec", "opend",
                   "received_ts", "start_ts", "end_ts"]

# (method, args as the tools send them, args after the LUXI door's normalisation
# or None when that changes nothing). Sources: cli-needs.md, luxi-protocol.md.
REQUEST_SAMPLES: list[tuple[str, list[Any], list[Any] | None]] = [
    ("SubmitJob", [[TEST_DELAY_OP]], None),
    ("SubmitJob", [[{"OP_ID": "OP_CLUSTER_QUERY"}, {"OP_ID": "OP_TAGS_GET", "kind": "cluster"}]], None),
    ("SubmitManyJobs", [[[TEST_DELAY_OP], [VERIFY_GROUP_OP]]], None),
    ("WaitForJobChange", [13, ["status"], None, None, 60], None),
    ("WaitForJobChange", [13, ["status"], ["waiting"], None, 60], None),
    ("WaitForJobChange", [13, ["status"], ["running"], 1, 60], None),
    ("WaitForJobChange", ["14", ["status"], None, None, 60], [14, ["status"], None, None, 60]),
    ("WaitForJobChange", [15, ["status"], ["running"], 3, 20.5], None),
    ("QueryJobs", [[3, 4], ["status"]], None),
    ("QueryJobs", [[1, 999999], ["id", "status", "opstatus", "opresult"]], None),
    ("QueryJobs", [["14"], ["status", "opstatus", "opresult"]], [[14], ["status", "opstatus", "opresult"]]),
    ("QueryJobs", [None, ["id", "status"]], None),
    ("QueryJobs", [[], ["id"]], None),
    ("CancelJob", [5, False], None),
    ("CancelJob", [5, True], None),
    ("CancelJob", [5], [5, False]),
    ("ChangeJobPriority", [2, 10], None),
    ("ChangeJobPriority", [2, -10], None),
    ("ArchiveJob", [7], None),
    ("AutoArchiveJobs", [-1, 89], None),
    ("AutoArchiveJobs", [21600, 89], None),
    ("SetDrainFlag", [True], None),
    ("SetDrainFlag", [False], None),
    ("SetWatcherPause", [1795316478.25], None),
    ("SetWatcherPause", [None], None),
    ("Query", ["node", ["name", "pinst_cnt", "mfree"], None], None),
    ("Query", ["job", ["id", "status", "summary"], ["|", ["==", "status", "running"]]], None),
    ("Query", ["node", ["uuid"], ["|", ["=", "role", "M"], ["=", "role", "C"]]], None),
    ("Query", ["job", JOB_SHOW_FIELDS, ["|", ["==", "id", 15], ["==", "id", 16]]], None),
    ("Query", ["instance", ["name"], ["=~", "name", "^inst[^.]*(\\..*)?$"]], None),
    ("QueryFields", ["node", None], None),
    ("QueryFields", ["job", ["id", "status"]], None),
    ("QueryFields", ["job", []], None),
    ("QueryNodes", [["node1"], ["name", "sip", "master", "ndp/ssh_port"], False], None),
    ("QueryNodes", [["nosuchnode"], ["name"], False], None),
    ("QueryInstances", [["inst1", "inst2"], ["name"], False], None),
    ("QueryGroups", [[], ["ndp/ssh_port"], False], None),
    ("QueryGroups", [[], ["name", "ndp/ssh_port"], False], None),
    ("QueryClusterInfo", [], None),
    ("QueryConfigValues", [["cluster_name"]], None),
    ("QueryConfigValues", [["ssh_key_type", "ssh_key_bits"]], None),
    ("QueryTags", ["cluster", ""], None),
    ("QueryTags", ["cluster", None], ["cluster", ""]),
    ("QueryTags", ["instance", "inst1.example.com"], None),
]

FIELD_DEF = {"name": "id", "title": "ID", "kind": "number", "doc": "Job ID"}
# (method, result): results the tools need (cli-needs.md, luxi-protocol.md).
RESULT_SAMPLES: list[tuple[str, Any]] = [
    ("SubmitJob", 12),
    ("SubmitManyJobs", [[True, 21], [True, 22],
                        [False, "Parameter 'OP_TEST_DELAY.repeat' fails validation"]]),
    ("WaitForJobChange", [["waiting"], []]),
    ("WaitForJobChange", [["running"], [[1, [1795313202, 905790], "message", "* Verifying group 'default'"],
                                        [2, [1795313202, 909178], "jqueue-test", {"step": 2}]]]),
    ("QueryJobs", [[1, "success", ["success"], [True]], [999999, None, None, None]]),
    ("QueryJobs", [["error", ["error"], [["OpExecError", ["Duration must be greater than zero"]]]]]),
    ("CancelJob", [True, "Dequeued job 3"]),
    ("CancelJob", [False, "Job 9 not found in queue"]),
    ("ChangeJobPriority", [True, "Priorities of pending opcodes for job 2 have been changed to 10"]),
    ("ArchiveJob", True),
    ("ArchiveJob", False),
    ("AutoArchiveJobs", [14, 0]),
    ("SetDrainFlag", True),
    ("SetWatcherPause", 1795316478.25),
    ("SetWatcherPause", None),
    ("Query", {"fields": [FIELD_DEF, {"name": "foo", "title": "foo", "kind": "unknown",
                                      "doc": "Unknown field 'foo'"}],
               "data": [[[0, 15], [1, None]], [[0, 16], [1, None]]]}),
    ("Query", {"fields": [FIELD_DEF], "data": []}),
    ("QueryFields", {"fields": [FIELD_DEF]}),
    ("QueryFields", {"fields": []}),
    ("QueryNodes", []),
    ("QueryNodes", [["node1", "192.0.2.1", True, 22]]),
    ("QueryInstances", [["inst1"], ["inst2"]]),
    ("QueryGroups", [["default", 22]]),
    ("QueryConfigValues", ["cluster.example.com", "node1.example.com", False, None, True, "rsa", 2048, None]),
    ("QueryTags", ["a", "b"]),
]

# Answers of the real luxid (samples/real_luxid_responses.json) -> the method.
REAL_RESPONSE_METHODS = {
    "QueryClusterInfo": "QueryClusterInfo", "QueryConfigValues": "QueryConfigValues",
    "Query_node": "Query", "Query_instance": "Query", "Query_job_1_and_missing": "Query",
    "QueryFields_job": "QueryFields", "QueryNodes_missingname": "QueryNodes",
    "QueryJobs_str_id": "QueryJobs", "WFJC_finished": "WaitForJobChange",
    "WFJC_finished_same": "WaitForJobChange", "QueryTags_cluster": "QueryTags", "QueryGroups": "QueryGroups",
}


# --- the rpcs --------------------------------------------------------------


@functools.cache
def _rpcs() -> tuple[MethodDescriptor, ...]:
    return tuple(method for module in MODULES
                 for service in module.DESCRIPTOR.services_by_name.values()
                 for method in service.methods)


def _legacy_name(method: MethodDescriptor) -> str | None:
    options = method.GetOptions()
    if not options.HasExtension(legacy_pb2.legacy):
        return None
    return str(options.Extensions[legacy_pb2.legacy].name)


@functools.cache
def _by_luxi_method() -> dict[str, MethodDescriptor]:
    found: dict[str, MethodDescriptor] = {}
    for method in _rpcs():
        name = _legacy_name(method)
        if name is not None:
            assert name not in found, f"two rpcs answer to {name}"
            found[name] = method
    return found


def _message_class(desc: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(desc)


def _same(expected: Any, got: Any, where: str = "value") -> None:
    """Equal JSON, and every integer still an integer (a float without fraction may become one)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not an object"
        assert sorted(got) == sorted(expected), f"{where}: keys differ"
        for key, item in expected.items():
            _same(item, got[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list), f"{where}: {got!r} is not a list"
        assert len(got) == len(expected), f"{where}: length differs"
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(expected, bool) or expected is None or isinstance(expected, str):
        assert got is expected or (isinstance(expected, str) and got == expected), \
            f"{where}: {got!r} != {expected!r}"
    elif isinstance(expected, int):
        assert type(got) is int and got == expected, f"{where}: {got!r} != {expected!r}"
    else:
        assert isinstance(got, (int, float)) and not isinstance(got, bool) and got == expected, \
            f"{where}: {got!r} != {expected!r}"


def test_issue_methods_are_luxi_methods() -> None:
    assert [m for m in ISSUE_METHODS if m not in methods.METHODS] == []


def test_every_issue_method_has_an_rpc_with_its_legacy_name() -> None:
    assert sorted(set(ISSUE_METHODS) - set(_by_luxi_method())) == []


def test_legacy_names_are_luxi_methods() -> None:
    assert sorted(set(_by_luxi_method()) - set(methods.METHODS)) == []


def test_only_grpc_only_rpcs_lack_a_legacy_option() -> None:
    assert {m.name for m in _rpcs() if _legacy_name(m) is None} == GRPC_ONLY


def test_rpc_names_are_unique_across_services() -> None:
    names = [m.name for m in _rpcs()]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_watch_job_streams_its_updates() -> None:
    watch = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].methods_by_name["WatchJob"]
    assert watch.server_streaming and not watch.client_streaming
    assert all(not m.server_streaming for m in _rpcs() if m.name != "WatchJob")


@pytest.mark.parametrize("luxi_method", ISSUE_METHODS)
def test_request_fields_are_the_luxi_arguments_in_order(luxi_method: str) -> None:
    request = _by_luxi_method()[luxi_method].input_type
    fields = [f.name for f in sorted(request.fields, key=lambda f: f.number)]
    assert fields == [p.name for p in methods.METHODS[luxi_method].params]


def test_optional_luxi_arguments_have_presence() -> None:
    # The codec accepts a shorter argument list only when the missing trailing fields may be unset.
    for name in ISSUE_METHODS:
        request = _by_luxi_method()[name].input_type
        ordered = sorted(request.fields, key=lambda f: f.number)
        for param, field in zip(methods.METHODS[name].params, ordered, strict=True):
            if param.optional:
                assert field.has_presence, f"{name}: {field.name} is optional in LUXI"


def test_every_issue_method_has_request_and_result_samples() -> None:
    assert sorted(set(ISSUE_METHODS) - {m for m, _, _ in REQUEST_SAMPLES}) == []
    assert sorted(set(ISSUE_METHODS) - {m for m, _ in RESULT_SAMPLES} - {"QueryClusterInfo"}) == []


# --- LUXI arguments and results through the messages ------------------------


@pytest.mark.parametrize(("luxi_method", "args", "normalised"), REQUEST_SAMPLES,
                         ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(REQUEST_SAMPLES)])
def test_luxi_door_normalises_the_sample_as_expected(luxi_method: str, args: list[Any],
                                                     normalised: list[Any] | None) -> None:
    assert methods.validate_args(luxi_method, args) == (args if normalised is None else normalised)


@pytest.mark.parametrize(("luxi_method", "args", "normalised"), REQUEST_SAMPLES,
                         ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(REQUEST_SAMPLES)])
def test_luxi_arguments_round_trip_through_the_request(luxi_method: str, args: list[Any],
                                                       normalised: list[Any] | None) -> None:
    wanted = args if normalised is None else normalised
    cls = _message_class(_by_luxi_method()[luxi_method].input_type)
    msg = codec.request_from_args(cls, wanted, luxi_method)
    _same(wanted, codec.args_from_request(msg))
    over_the_wire = cls.FromString(msg.SerializeToString())
    _same(wanted, codec.args_from_request(over_the_wire))


@pytest.mark.parametrize(("luxi_method", "result"), RESULT_SAMPLES,
                         ids=[f"{m}-{i}" for i, (m, _) in enumerate(RESULT_SAMPLES)])
def test_luxi_result_round_trips_through_the_response(luxi_method: str, result: Any) -> None:
    cls = _message_class(_by_luxi_method()[luxi_method].output_type)
    msg = codec.response_from_result(cls, result, luxi_method)
    _same(result, codec.result_from_response(msg))
    _same(result, codec.result_from_response(cls.FromString(msg.SerializeToString())))


def _real_responses() -> dict[str, Any]:
    path = SAMPLES / "real_luxid_responses.json"
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    # Each value is the raw LUXI answer: a JSON document ended by 0x03.
    return {key: json.loads(raw.rstrip("\x03")) for key, raw in json.loads(path.read_text()).items()}


@pytest.mark.parametrize("sample", sorted(REAL_RESPONSE_METHODS))
def test_real_luxid_result_round_trips_through_the_response(sample: str) -> None:
    answer = _real_responses()[sample]
    assert answer["success"] is True
    luxi_method = REAL_RESPONSE_METHODS[sample]
    cls = _message_class(_by_luxi_method()[luxi_method].output_type)
    msg = codec.response_from_result(cls, answer["result"], luxi_method)
    _same(answer["result"], codec.result_from_response(cls.FromString(msg.SerializeToString())))


def test_cluster_info_keys_are_typed_or_kept() -> None:
    info = _real_responses()["QueryClusterInfo"]["result"]
    msg = codec.response_from_result(cluster_pb2.QueryClusterInfoResponse, info, "QueryClusterInfo")
    assert isinstance(msg, cluster_pb2.QueryClusterInfoResponse)
    assert (msg.software_version, msg.protocol_version, msg.name) == ("3.0.2", 3000000, "cluster.example.com")
    assert msg.other.fields["ipolicy"].struct_value.fields["vcpu-ratio"].number_value == 4
    assert "name" not in msg.other.fields


def test_real_query_field_definitions_fit_the_field_definition() -> None:
    path = SAMPLES / "real_query_fields.json"
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    # {resource: [field definitions]}; resources luxid refuses map to {"error": ...} instead.
    tables = {what: defs for what, defs in json.loads(path.read_text()).items() if isinstance(defs, list)}
    assert "job" in tables and "node" in tables
    for what, defs in tables.items():
        msg = codec.response_from_result(query_pb2.QueryFieldsResponse, {"fields": defs}, "QueryFields")
        _same({"fields": defs}, codec.result_from_response(msg), what)


def test_reason_timestamps_keep_every_nanosecond() -> None:
    msg = codec.request_from_args(jobs_pb2.SubmitJobRequest, [[TEST_DELAY_OP]], "SubmitJob")
    assert isinstance(msg, jobs_pb2.SubmitJobRequest)
    op = jobs_pb2.SubmitJobRequest.FromString(msg.SerializeToString()).ops[0]
    assert op.op_id == "OP_TEST_DELAY"
    assert op.reason.entries[0].timestamp_ns == NS_TIMESTAMP
    assert "reason" not in op.params.fields and op.params.fields["repeat"].number_value == 0


def test_an_opcode_without_reason_stays_without() -> None:
    msg = codec.request_from_args(jobs_pb2.SubmitJobRequest, [[{"OP_ID": "OP_CLUSTER_QUERY"}]], "SubmitJob")
    assert isinstance(msg, jobs_pb2.SubmitJobRequest)
    assert not msg.ops[0].HasField("reason")
    assert codec.args_from_request(msg) == [[{"OP_ID": "OP_CLUSTER_QUERY"}]]


def test_query_jobs_tells_all_jobs_from_no_jobs() -> None:
    all_jobs = codec.request_from_args(jobs_pb2.QueryJobsRequest, [None, ["id"]], "QueryJobs")
    none = codec.request_from_args(jobs_pb2.QueryJobsRequest, [[], ["id"]], "QueryJobs")
    assert isinstance(all_jobs, jobs_pb2.QueryJobsRequest) and isinstance(none, jobs_pb2.QueryJobsRequest)
    assert not all_jobs.HasField("job_ids") and none.HasField("job_ids")


# --- a real job as a Job message -------------------------------------------


def _job_fields(job: dict[str, Any]) -> dict[str, Any]:
    """The job query fields of a job file, straight from the file (luxi-protocol.md section 8.4)."""
    ops = job["ops"]
    statuses = [op["status"] for op in ops]
    unfinished = [op["priority"] for op in ops if op["status"] not in ("success", "error", "canceled")]
    fields: dict[str, Any] = {
        "id": job["id"], "status": model.calc_job_status(statuses),
        "priority": min(unfinished) if unfinished else 0, "archived": False,
        "ops": [op["input"] for op in ops], "opresult": [op["result"] for op in ops],
        "opstatus": statuses, "oplog": [op["log"] for op in ops],
        "opstart": [op["start_timestamp"] for op in ops], "opexec": [op["exec_timestamp"] for op in ops],
        "opend": [op["end_timestamp"] for op in ops], "oppriority": [op["priority"] for op in ops],
        "summary": [model.opcode_summary(op["input"]) for op in ops],
    }
    for key, field in (("received_timestamp", "received_ts"), ("start_timestamp", "start_ts"),
                       ("end_timestamp", "end_ts")):
        if job.get(key) is not None:
            fields[field] = job[key]
    return fields


def _job_files() -> list[Path]:
    files = sorted(SAMPLES.glob("job-*.json"))
    if not files:
        pytest.skip(f"no real job files in {SAMPLES}")
    return files


def test_real_jobs_fit_the_job_message() -> None:
    for path in _job_files():
        fields = _job_fields(json.loads(path.read_text()))
        msg = codec.from_native(objects_pb2.Job, fields)
        again = objects_pb2.Job.FromString(msg.SerializeToString())
        _same(fields, codec.to_native(again), path.name)
        assert not again.HasField("other")


def test_job_keeps_unknown_fields_and_missing_opcode_timestamps() -> None:
    fields = {"id": 3, "status": "queued", "priority": 0, "archived": False, "ops": [TEST_DELAY_OP],
              "opresult": [None], "opstatus": ["queued"], "oplog": [[]], "opstart": [None],
              "opexec": [None], "opend": [None], "oppriority": [0], "summary": ["TEST_DELAY(1.0)"],
              "received_ts": [1795312878, 402313], "lock_status": None, "future_field": {"x": [1, 2]}}
    msg = codec.from_native(objects_pb2.Job, fields)
    assert isinstance(msg, objects_pb2.Job)
    assert not msg.opstart[0].HasField("timestamp") and not msg.HasField("start_ts")
    assert sorted(msg.other.fields) == ["future_field", "lock_status"]
    _same(fields, codec.to_native(msg))


# --- comments, read from protoc's source info -------------------------------

_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_SERVICE_METHOD, _ENUM_VALUE = 2, 2


@functools.cache
def _descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO_DIR)) for p in MASTER_PROTO_DIR.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "master.binpb"
        proc = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}",
             "--include_source_info", f"--descriptor_set_out={out}", *files],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _message_elements(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...],
                      prefix: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    if message.options.map_entry:
        return
    name = f"{prefix}{message.name}"
    yield f"message {name}", path
    for i, field in enumerate(message.field):
        yield f"field {name}.{field.name}", (*path, _MESSAGE_FIELD, i)
    for i, nested in enumerate(message.nested_type):
        yield from _message_elements(nested, (*path, _MESSAGE_NESTED, i), f"{name}.")
    for i, enum in enumerate(message.enum_type):
        yield from _enum_elements(enum, (*path, _MESSAGE_ENUM, i), f"{name}.")


def _enum_elements(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...],
                   prefix: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"enum {prefix}{enum.name}", path
    for i, value in enumerate(enum.value):
        yield f"enum value {prefix}{enum.name}.{value.name}", (*path, _ENUM_VALUE, i)


def _file_elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, tuple[int, ...]]]:
    for i, message in enumerate(file.message_type):
        yield from _message_elements(message, (_FILE_MESSAGE, i), "")
    for i, enum in enumerate(file.enum_type):
        yield from _enum_elements(enum, (_FILE_ENUM, i), "")
    for i, service in enumerate(file.service):
        yield f"service {service.name}", (_FILE_SERVICE, i)
        for j, method in enumerate(service.method):
            yield f"rpc {service.name}.{method.name}", (_FILE_SERVICE, i, _SERVICE_METHOD, j)


def test_every_service_rpc_message_and_field_has_a_leading_comment() -> None:
    uncommented: list[str] = []
    for file in _descriptor_set().file:
        comments = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        uncommented.extend(f"{file.name}: {what}" for what, path in _file_elements(file)
                           if not comments.get(path, "").strip())
    assert uncommented == []


def test_comment_check_sees_every_rpc() -> None:
    seen = {what.split(".", 1)[1] for file in _descriptor_set().file
            for what, _ in _file_elements(file) if what.startswith("rpc ")}
    assert seen == {m.name for m in _rpcs()}
    assert len(_descriptor_set().file) == len(MODULES)


def test_api_docs_describe_every_rpc() -> None:
    page = DOCS_PAGE.read_text()
    missing = [m.full_name for m in _rpcs() if f'<a id="{m.full_name}"></a>' not in page]
    assert missing == []
