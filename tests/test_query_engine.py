"""Query, QueryFields and classic answers for the job resource, over real Ganeti 3.0.2 job files.

The answers are compared with what the real luxid gave
(samples/real_luxid_responses.json) and, where the real Ganeti tree is
installed, fed to the real client code (objects.QueryResponse and the
gnt-job list formatter).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from masterd.query.engine import (
    UnknownResourceError,
    check_fields_response,
    check_query_response,
    classic_rows,
    query_fields,
    resource_definitions,
)
from masterd.query.errors import FilterError, GenericError, OpPrereqError
from masterd.query.fields import FieldRegistry, nice_sort_key
from masterd.query.jobs import (
    QueueDirJobSource,
    haskell_show_double,
    job_field_values,
    job_resource,
    op_summary,
    query_jobs,
    query_jobs_classic,
)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples"
SNAPSHOTS = SAMPLES / "real_queue_3.0.2" / "snapshots"
GANETI_TREE = "/usr/share/ganeti/3.0"

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="the shared reference samples are not here")
needs_ganeti = pytest.mark.skipif(not os.path.isdir(os.path.join(GANETI_TREE, "ganeti")),
                                  reason="the real Ganeti 3.0 Python tree is not installed")

#: queue file -> sample it is copied from
QUEUE_FILES = {
    "job-1": SNAPSHOTS / "job-1.9e683e5d",                      # success, CLUSTER_POST_INIT (as luxid saw it)
    "job-4": SNAPSHOTS / "job-4.6ec6d158",                      # running CLUSTER_VERIFY_GROUP
    "job-10": SNAPSHOTS / "job-10.589aedc9",                    # error TEST_DELAY(0.0)
    "job-11": SNAPSHOTS / "job-11.cce20551",                    # queued TEST_DELAY
    "job-12": SAMPLES / "job-12.success.TEST_DELAY.json",       # success TEST_DELAY(1.0)
    "job-14": SAMPLES / "job-14.error.INSTANCE_CREATE.json",    # error INSTANCE_CREATE
    "archive/0/job-2": SNAPSHOTS / "archive__0__job-2.daacc33f",  # archived CLUSTER_VERIFY
}


def real_result(name: str) -> Any:
    responses = json.loads((SAMPLES / "real_luxid_responses.json").read_text())
    answer = json.loads(responses[name].rstrip("\x03"))
    assert answer["success"] is True
    return answer["result"]


@pytest.fixture
def queue(tmp_path: Path) -> QueueDirJobSource:
    queue_dir = tmp_path / "queue"
    for name, source in QUEUE_FILES.items():
        target = queue_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (queue_dir / "serial").write_text("14\n")
    (queue_dir / "job-13.tmp").write_text("not a job file name")
    return QueueDirJobSource(str(queue_dir))


def column(response: dict[str, Any], index: int) -> list[Any]:
    return [row[index] for row in response["data"]]


def test_query_fields_of_jobs_equals_real_luxid() -> None:
    assert query_fields(job_resource().definitions, None) == real_result("QueryFields_job")


def test_query_fields_empty_list_means_all_fields() -> None:
    assert query_fields(job_resource().definitions, []) == real_result("QueryFields_job")


def test_query_fields_unknown_name_gets_unknown_kind() -> None:
    answer = query_fields(job_resource().definitions, ["status", "foo"])
    assert answer["fields"][1] == {"name": "foo", "title": "foo", "kind": "unknown",
                                   "doc": "Unknown field 'foo'"}
    check_fields_response(answer)


def test_query_by_ids_equals_real_luxid_with_a_missing_job(queue: QueueDirJobSource) -> None:
    fields = ["id", "status", "priority", "summary", "received_ts", "oplog", "archived"]
    answer = query_jobs(queue, fields, ["|", ["==", "id", 1], ["==", "id", 999999]])
    assert answer == real_result("Query_job_1_and_missing")


def test_query_jobs_with_string_ids_equals_real_luxid(queue: QueueDirJobSource) -> None:
    rows = query_jobs_classic(queue, ["1", "999999"], ["id", "status", "opstatus", "opresult"])
    assert rows == real_result("QueryJobs_str_id")


def test_no_filter_lists_live_jobs_sorted_by_id(queue: QueueDirJobSource) -> None:
    answer = query_jobs(queue, ["id", "status"], None)
    assert column(answer, 0) == [[0, 1], [0, 4], [0, 10], [0, 11], [0, 12], [0, 14]]
    assert column(answer, 1) == [[0, "success"], [0, "running"], [0, "error"], [0, "queued"],
                                 [0, "success"], [0, "error"]]


def test_archived_field_brings_in_archived_jobs(queue: QueueDirJobSource) -> None:
    answer = query_jobs(queue, ["id", "archived"], None)
    assert [row[0][1] for row in answer["data"]] == [1, 2, 4, 10, 11, 12, 14]
    assert answer["data"][1] == [[0, 2], [0, True]]


def test_explicit_ids_keep_request_order_without_duplicates(queue: QueueDirJobSource) -> None:
    answer = query_jobs(queue, ["id"], ["|", ["==", "id", 12], ["==", "id", "1"], ["==", "id", 12]])
    assert answer["data"] == [[[0, 12]], [[0, 1]]]


def test_explicit_id_finds_an_archived_job(queue: QueueDirJobSource) -> None:
    answer = query_jobs(queue, ["id", "status", "summary"], ["|", ["==", "id", 2]])
    assert answer["data"] == [[[0, 2], [0, "success"], [0, ["CLUSTER_VERIFY"]]]]


def test_filter_on_status_selects_among_live_jobs(queue: QueueDirJobSource) -> None:
    answer = query_jobs(queue, ["id"], ["|", ["==", "status", "error"], ["==", "status", "queued"]])
    assert answer["data"] == [[[0, 10]], [[0, 11]], [[0, 14]]]


def test_filter_on_received_timestamp_compares_seconds(queue: QueueDirJobSource) -> None:
    answer = query_jobs(queue, ["id"], [">", "received_ts", 1795313240])
    assert answer["data"] == [[[0, 10]], [[0, 11]]]


def test_summaries_follow_luxid(queue: QueueDirJobSource) -> None:
    group = json.loads(QUEUE_FILES["job-4"].read_text())["ops"][0]["input"]["group_name"]
    answer = query_jobs(queue, ["summary"], None)
    assert column(answer, 0) == [[0, ["CLUSTER_POST_INIT"]], [0, [f"CLUSTER_VERIFY_GROUP({group})"]],
                                 [0, ["TEST_DELAY(0.0)"]], [0, ["TEST_DELAY(0.0)"]], [0, ["TEST_DELAY(1.0)"]],
                                 [0, ["INSTANCE_CREATE(inst1.example.com)"]]]


def test_running_job_has_no_end_timestamp(queue: QueueDirJobSource) -> None:
    answer = query_jobs(queue, ["start_ts", "end_ts", "opstart", "opexec", "opend"], ["|", ["==", "id", 4]])
    ((start, end, opstart, opexec, opend),) = answer["data"]
    assert start == [0, [1795313202, 883442]]
    assert end == [3, None]
    assert opstart == [0, [[1795313202, 883442]]]
    assert opexec[0] == 0 and opexec[1][0] is not None
    assert opend == [0, [None]]


def test_queued_job_priority_is_its_lowest_pending_opcode_priority(queue: QueueDirJobSource) -> None:
    path = Path(queue.queue_dir) / "job-11"
    job = json.loads(path.read_text())
    job["ops"][0]["priority"] = 10
    path.write_text(json.dumps(job))
    answer = query_jobs(queue, ["priority", "oppriority"], ["|", ["==", "id", 11]])
    assert answer["data"] == [[[0, 10], [0, [10]]]]


def test_finished_job_priority_is_the_default(queue: QueueDirJobSource) -> None:
    answer = query_jobs(queue, ["priority"], ["|", ["==", "id", 14]])
    assert answer["data"] == [[[0, 0]]]


def test_opcode_fields_come_from_the_job_file(queue: QueueDirJobSource) -> None:
    job = json.loads(QUEUE_FILES["job-14"].read_text())
    answer = query_jobs(queue, ["ops", "opresult", "opstatus", "oplog"], ["|", ["==", "id", 14]])
    assert answer["data"] == [[[0, [job["ops"][0]["input"]]], [0, [job["ops"][0]["result"]]],
                               [0, ["error"]], [0, [job["ops"][0]["log"]]]]]


def test_unreadable_job_file_counts_as_missing(queue: QueueDirJobSource) -> None:
    (Path(queue.queue_dir) / "job-20").write_text("{not json")
    answer = query_jobs(queue, ["id", "status"], ["|", ["==", "id", 20]])
    assert answer["data"] == [[[0, 20], [3, None]]]


def test_unknown_field_gets_status_unknown_in_every_row(queue: QueueDirJobSource) -> None:
    answer = query_jobs(queue, ["id", "foo"], ["|", ["==", "id", 1], ["==", "id", 12]])
    assert answer["fields"][1]["kind"] == "unknown"
    assert column(answer, 1) == [[1, None], [1, None]]
    check_query_response(answer)


def test_classic_rows_refuse_unknown_fields(queue: QueueDirJobSource) -> None:
    with pytest.raises(OpPrereqError) as info:
        query_jobs_classic(queue, None, ["id", "foo", "bar"])
    assert info.value.encode() == ["OpPrereqError",
                                   ["Unknown output fields selected: foo, bar", "wrong_input"]]


def test_classic_rows_drop_statuses(queue: QueueDirJobSource) -> None:
    assert query_jobs_classic(queue, [], ["id", "end_ts"])[1] == [4, None]


def test_invalid_job_id_in_filter_is_refused(queue: QueueDirJobSource) -> None:
    with pytest.raises(FilterError, match=r"Unable to compare field 'id' .* expected JobId"):
        query_jobs(queue, ["id"], ["|", ["==", "id", 1], ["==", "id", "x"]])


def test_invalid_job_id_in_query_jobs_is_refused(queue: QueueDirJobSource) -> None:
    with pytest.raises(OpPrereqError, match="Invalid job ID '-3'"):
        query_jobs_classic(queue, [-3], ["id"])


def test_bad_filter_is_refused_with_ganeti_message(queue: QueueDirJobSource) -> None:
    with pytest.raises(FilterError, match="Unknown field 'nosuch'"):
        query_jobs(queue, ["id"], ["==", "nosuch", 1])


def test_every_answer_respects_the_strict_keys_rule(queue: QueueDirJobSource) -> None:
    all_fields = list(job_resource().definitions)
    check_query_response(query_jobs(queue, all_fields, None))
    check_query_response(query_jobs(queue, all_fields, ["|", ["==", "id", 999]]))
    check_fields_response(query_fields(job_resource().definitions, None))


def test_strict_keys_check_catches_an_extra_key() -> None:
    with pytest.raises(ValueError, match="exactly the keys"):
        check_query_response({"fields": [], "data": [], "extra": 1})
    with pytest.raises(ValueError, match="null value"):
        check_query_response({"fields": [{"name": "a", "title": "A", "kind": "text", "doc": ""}],
                              "data": [[[3, "x"]]]})


def test_job_resource_has_every_real_job_field() -> None:
    resource = job_resource()
    assert sorted(resource.specs) == sorted(FieldRegistry.load().fields("job"))
    assert len(resource.specs) == 16


def test_registry_has_the_real_field_counts() -> None:
    registry = FieldRegistry.load()
    counts = {res: len(registry.fields(res)) for res in registry.resources()}
    assert counts == {"node": 46, "instance": 292, "job": 16, "group": 25, "network": 19, "export": 2,
                      "filter": 6, "lock": 4}
    expected = ["GenericError", ["QueryFields 'ItemTypeOpCode QRCluster' not supported"]]
    assert registry.unsupported_error("cluster") == expected


def test_registry_definitions_equal_the_real_tables() -> None:
    real = json.loads((SAMPLES / "real_query_fields.json").read_text())
    registry = FieldRegistry.load()
    for resource in registry.resources():
        ours = query_fields(registry.fields(resource), None)["fields"]
        assert ours == real[resource], resource


def test_natural_sort_orders_numbers_by_value() -> None:
    names = ["disk.size/10", "disk.size/2", "disk.sizes", "disk.count", "nic.mac/1"]
    assert sorted(names, key=nice_sort_key) == ["disk.count", "disk.size/2", "disk.size/10", "disk.sizes",
                                                "nic.mac/1"]


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1.0"), (0.5, "0.5"), (12.25, "12.25"), (0.1, "0.1"), (0.05, "5.0e-2"), (0.001, "1.0e-3"),
    (100.0, "100.0"), (9999999.0, "9999999.0"), (1e7, "1.0e7"), (0.0, "0.0"), (-2.5, "-2.5"),
])
def test_delay_durations_are_shown_like_haskell(value: float, text: str) -> None:
    assert haskell_show_double(value) == text


def test_summary_of_opcodes_without_key_field_and_invalid_ones() -> None:
    assert op_summary({"OP_ID": "OP_CLUSTER_QUERY"}) == "CLUSTER_QUERY"
    assert op_summary({"OP_ID": "OP_TAGS_GET", "kind": "cluster", "name": None}) == "TAGS_GET(None)"
    assert op_summary({"OP_ID": "OP_TEST_DELAY", "duration": 2}) == "TEST_DELAY(2.0)"
    assert op_summary({"no": "id"}) == "INVALID_OP"


def test_generic_error_encoding() -> None:
    assert GenericError("Query 'x' not supported").encode() == ["GenericError", ["Query 'x' not supported"]]


def test_classic_rows_of_a_hand_made_answer() -> None:
    answer = {"fields": [{"name": "a", "title": "A", "kind": "text", "doc": "d"}],
              "data": [[[0, "x"]], [[2, None]]]}
    assert classic_rows(answer) == [["x"], [None]]


CLIENT_CHECK = r"""
import json, sys
from ganeti import objects, cli
from ganeti.client import gnt_job
query_answer, fields_answer = json.load(sys.stdin)
response = objects.QueryResponse.FromDict(query_answer)
objects.QueryFieldsResponse.FromDict(fields_answer)
status, lines = cli.FormatQueryResult(response, header=True, format_override=gnt_job._JOB_LIST_FORMAT)
print(json.dumps([status, lines]))
"""


@needs_ganeti
def test_real_client_accepts_and_formats_our_answers(queue: QueueDirJobSource) -> None:
    answer = query_jobs(queue, ["id", "status", "summary"], None)
    fields = query_fields(job_resource().definitions, None)
    env = {**os.environ, "PYTHONPATH": GANETI_TREE}
    proc = subprocess.run(["/usr/bin/python3", "-c", CLIENT_CHECK], input=json.dumps([answer, fields]),
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    status, lines = json.loads(proc.stdout)
    assert status == 0  # constants.QR_NORMAL
    assert lines[0].split() == ["ID", "Status", "Summary"]
    assert lines[5].split() == ["12", "success", "TEST_DELAY(1.0)"]
    assert lines[6].split() == ["14", "error", "INSTANCE_CREATE(inst1.example.com)"]


def test_fields_of_a_refused_resource_give_luxid_error() -> None:
    registry = FieldRegistry.load()
    with pytest.raises(GenericError) as info:
        resource_definitions(registry, "cluster", "QueryFields")
    assert info.value.encode() == real_query_fields_error("cluster")
    with pytest.raises(GenericError, match=r"^Query 'ItemTypeOpCode QROs' not supported$"):
        resource_definitions(registry, "os", "Query")


def test_unknown_resource_is_a_parse_failure() -> None:
    with pytest.raises(UnknownResourceError) as info:
        resource_definitions(FieldRegistry.load(), "planet")
    assert info.value.encode() == ("Failed to parse request: Can't parse value 'planet' as neither "
                                   "QueryTypeLuxi nor QueryTypeOp")


def test_fields_of_node_resource_are_served_without_getters() -> None:
    definitions = resource_definitions(FieldRegistry.load(), "node", "QueryFields")
    assert query_fields(definitions, ["name", "pinst_cnt"])["fields"][0]["title"] == "Node"


def real_query_fields_error(resource: str) -> Any:
    return json.loads((SAMPLES / "real_query_fields.json").read_text())[resource]["error"]


def test_job_field_values_of_one_job_in_memory() -> None:
    job = json.loads(QUEUE_FILES["job-12"].read_text())
    assert job_field_values(12, job, ["status", "end_ts", "summary"]) == [
        "success", [1795312879, 947437], ["TEST_DELAY(1.0)"]]
    assert job_field_values(12, None, ["id", "status"]) == [12, None]
    with pytest.raises(OpPrereqError, match="Unknown output fields selected: nope"):
        job_field_values(12, job, ["nope"])
