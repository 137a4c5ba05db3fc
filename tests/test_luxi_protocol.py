"""masterd.luxi.protocol and masterd.luxi.methods: framing, parsing, encoding, argument shapes."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from masterd.luxi import methods
from masterd.luxi.methods import (
    METHODS,
    WFJC_TIMEOUT_MAX,
    LuxiHandler,
    UnimplementedHandler,
    dispatch,
    validate_args,
)
from masterd.luxi.protocol import (
    EOM,
    FramingError,
    GanetiError,
    GenericError,
    JobQueueFull,
    LuxiRequest,
    MessageSplitter,
    OpExecError,
    OpPrereqError,
    Oversized,
    RequestParseError,
    decode_response,
    encode_failure,
    encode_request,
    encode_success,
    frame,
    parse_request,
)

REAL_CONSTANTS = Path("/usr/share/ganeti/3.0/ganeti/_constants.py")

# What the real Python client sends (captured; luxi-protocol.md section 2).
REAL_CLIENT_REQUEST = b'{"method": "QueryConfigValues", "args": [["cluster_name"]], "version": 3000000}\n'

OP = {"OP_ID": "OP_TEST_DELAY", "duration": 0}

#: A valid call of every LUXI method (shapes from luxi-protocol.md section 6).
VALID_ARGS: dict[str, list[Any]] = {
    "SubmitJob": [[OP]],
    "SubmitJobToDrainedQueue": [[OP]],
    "SubmitManyJobs": [[[OP], [OP, OP]]],
    "PickupJob": [1],
    "WaitForJobChange": [13, ["status"], ["running"], 1, 60],
    "QueryJobs": [[1, "14"], ["id", "status"]],
    "CancelJob": [1, False],
    "ChangeJobPriority": [2, 10],
    "ArchiveJob": [1],
    "AutoArchiveJobs": [-1, 89],
    "SetDrainFlag": [True],
    "SetWatcherPause": [1700000000.5],
    "Query": ["job", ["id", "status"], ["|", ["==", "id", 15]]],
    "QueryFields": ["job", None],
    "QueryNodes": [["node1"], ["name", "pip"], False],
    "QueryInstances": [[], ["name"], False],
    "QueryGroups": [[], ["name", "ndp/ssh_port"], False],
    "QueryNetworks": [[], ["name"], False],
    "QueryExports": [["node1"], False],
    "QueryClusterInfo": [],
    "QueryConfigValues": [["cluster_name", "master_node"]],
    "QueryTags": ["cluster", ""],
    "QueryFilters": [None, ["uuid", "priority"]],
    "ReplaceFilter": [None, 0, [["jobid", ["==", "id", 1]]], ["RATE_LIMIT", 2], []],
    "DeleteFilter": ["0f3e-uuid"],
}

#: A value of the wrong shape for every argument of every method.
BAD_VALUE = {"wrong": "shape"}


# -- framing ----------------------------------------------------------------

def test_frame_appends_the_terminator() -> None:
    assert frame(b'{"a":1}') == b'{"a":1}\x03'


def test_frame_refuses_a_payload_containing_the_terminator() -> None:
    with pytest.raises(FramingError, match="byte 3"):
        frame(b'"ab\x03c"')


def test_splitter_returns_every_message_of_one_chunk() -> None:
    splitter = MessageSplitter(100)
    assert splitter.feed(b"one\x03two\x03thr") == [b"one", b"two"]
    assert splitter.pending == 3


def test_splitter_keeps_the_remainder_across_chunks_fed_byte_by_byte() -> None:
    splitter = MessageSplitter(100)
    stream = b'{"a": 1}\n\x03{"b": 2}\x03'
    got: list[bytes | Oversized] = []
    for i in range(len(stream)):
        got += splitter.feed(stream[i:i + 1])
    assert got == [b'{"a": 1}\n', b'{"b": 2}']
    assert splitter.pending == 0


def test_splitter_accepts_a_message_of_exactly_the_limit() -> None:
    assert MessageSplitter(5).feed(b"12345\x03") == [b"12345"]


def test_splitter_reports_a_terminated_oversized_message_and_goes_on() -> None:
    splitter = MessageSplitter(5)
    assert splitter.feed(b"123456\x03ok\x03") == [Oversized(6, 5), b"ok"]


def test_splitter_reports_an_unterminated_oversized_message_once_and_drops_its_tail() -> None:
    splitter = MessageSplitter(5)
    assert splitter.feed(b"1234567") == [Oversized(7, 5)]
    assert splitter.discarding
    assert splitter.feed(b"89" * 1000) == []
    assert splitter.pending == 0
    assert splitter.feed(b"0\x03next\x03") == [b"next"]
    assert not splitter.discarding


def test_splitter_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError):
        MessageSplitter(0)


# -- requests ---------------------------------------------------------------

def test_parse_request_reads_the_real_clients_bytes_with_trailing_newline() -> None:
    assert parse_request(REAL_CLIENT_REQUEST) == LuxiRequest("QueryConfigValues", [["cluster_name"]], 3000000)


def test_parse_request_does_not_need_a_version() -> None:
    assert parse_request(b'{"method":"QueryClusterInfo","args":[]}') == LuxiRequest("QueryClusterInfo", [])


def test_encode_request_round_trips_through_parse_request() -> None:
    raw = encode_request("QueryJobs", [[1], ["status"]])
    assert raw.endswith(EOM)
    assert parse_request(raw[:-1]) == LuxiRequest("QueryJobs", [[1], ["status"]], 3000000)


@pytest.mark.parametrize(("message", "detail"), [
    (b"\xff\xfe", "not valid UTF-8 (byte 0"),
    (b'{"method": "X",', "not valid JSON: Expecting property name enclosed in double quotes at line 1"),
    (b"[1, 2]", "must be a JSON object with 'method' and 'args', got array"),
    (b'{"args": []}', "has no 'method' field"),
    (b'{"method": null, "args": []}', "has no 'method' field"),
    (b'{"method": 7, "args": []}', "'method' must be a string, got number"),
    (b'{"method": "QueryJobs"}', "request QueryJobs: the 'args' field is missing"),
    (b'{"method": "QueryJobs", "args": {"a": 1}}', "request QueryJobs: 'args' must be a JSON array"),
    (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
])
def test_parse_request_says_what_is_wrong(message: bytes, detail: str) -> None:
    with pytest.raises(RequestParseError) as info:
        parse_request(message)
    assert detail in info.value.encode()
    assert info.value.encode().startswith("Failed to parse request: ")


# -- responses and errors ---------------------------------------------------

def test_success_is_compact_json_without_version() -> None:
    assert encode_success([1, "a", None]) == b'{"success":true,"result":[1,"a",null]}\x03'


def test_success_is_utf8_and_escapes_a_terminator_inside_strings() -> None:
    raw = encode_success("é\x03")
    assert raw.count(EOM) == 1
    assert decode_response(raw[:-1]) == (True, "é\x03")
    assert "é".encode() in raw


def test_lone_surrogates_are_sent_escaped() -> None:
    raw = encode_success("bad \ud800 method")
    assert raw.isascii()
    assert decode_response(raw[:-1]) == (True, "bad \ud800 method")


def test_success_refuses_a_result_that_is_not_json() -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_success(float("nan"))
    with pytest.raises((TypeError, ValueError)):
        encode_success({1, 2})


def test_opprereqerror_with_ecode_is_encoded_like_ganeti() -> None:
    raw = encode_failure(OpPrereqError("Unknown output fields selected: x", "wrong_input"))
    assert raw == b'{"success":false,"result":["OpPrereqError",["Unknown output fields selected: x",' \
                  b'"wrong_input"]]}\x03'


def test_opprereqerror_without_ecode_has_one_argument() -> None:
    assert OpPrereqError("msg").encode() == ["OpPrereqError", ["msg"]]


def test_opprereqerror_refuses_an_unknown_ecode() -> None:
    with pytest.raises(ValueError, match="wrong_input"):
        OpPrereqError("msg", "no_such_code")


def test_jobqueuefull_has_no_arguments() -> None:
    assert JobQueueFull().encode() == ["JobQueueFull", []]


def test_subclasses_carry_their_ganeti_class_name() -> None:
    assert OpExecError("boom").encode() == ["OpExecError", ["boom"]]
    assert GenericError("Queue drained").encode() == ["GenericError", ["Queue drained"]]


def test_ganeti_error_names_any_other_class() -> None:
    assert GanetiError("TagError", "bad tag").encode() == ["TagError", ["bad tag"]]


def test_ganeti_error_without_a_class_name_is_refused() -> None:
    with pytest.raises(TypeError):
        GanetiError()


def test_parse_error_is_the_plain_string_form() -> None:
    raw = encode_failure(RequestParseError("SubmitJob: argument 1 (ops) must be a list"))
    assert decode_response(raw[:-1]) == (
        False, "Failed to parse request: SubmitJob: argument 1 (ops) must be a list")


# -- the method table ---------------------------------------------------------

@pytest.mark.skipif(not REAL_CONSTANTS.exists(), reason="Debian's ganeti 3.0 is not installed")
def test_table_has_exactly_ganetis_luxi_methods() -> None:
    match = re.search(r"^LUXI_REQ_ALL = frozenset\(\[(.*)\]\)$", REAL_CONSTANTS.read_text(), re.M)
    assert match is not None
    assert set(METHODS) == set(json.loads("[" + match.group(1) + "]"))


def test_every_method_has_a_valid_example() -> None:
    assert set(VALID_ARGS) == set(METHODS)


def test_every_method_has_a_handler_method() -> None:
    for spec in METHODS.values():
        assert callable(getattr(UnimplementedHandler, spec.handler_attr))
        assert spec.handler_attr in LuxiHandler.__dict__


@pytest.mark.parametrize("method", sorted(VALID_ARGS))
def test_valid_arguments_are_accepted(method: str) -> None:
    assert len(validate_args(method, VALID_ARGS[method])) == len(METHODS[method].params)


@pytest.mark.parametrize(("method", "position"), [
    (name, i) for name, spec in sorted(METHODS.items()) for i in range(len(spec.params))])
def test_a_wrong_argument_is_refused_naming_method_and_argument(method: str, position: int) -> None:
    args = list(VALID_ARGS[method])
    args[position] = BAD_VALUE
    with pytest.raises(RequestParseError) as info:
        validate_args(method, args)
    name = METHODS[method].params[position].name
    assert info.value.detail.startswith(f"{method}: argument {position + 1} ({name}) must be")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_too_many_arguments_are_refused(method: str) -> None:
    too_many = len(METHODS[method].params) + 1
    with pytest.raises(RequestParseError, match=rf"^{method} takes .* got {too_many}$"):
        validate_args(method, [*VALID_ARGS[method], 1])


@pytest.mark.parametrize("method", sorted(m for m, s in METHODS.items() if s.params))
def test_missing_arguments_are_refused(method: str) -> None:
    with pytest.raises(RequestParseError, match=rf"^{method} takes .*\[.*\], got 0$"):
        validate_args(method, [])


def test_unknown_method_is_refused_by_name() -> None:
    with pytest.raises(RequestParseError) as info:
        validate_args("NoSuchMethod", [])
    assert info.value.detail.startswith("Unable to parse LUXI request method: unknown method 'NoSuchMethod'")


def test_numeric_string_job_ids_become_ints() -> None:
    assert validate_args("WaitForJobChange", ["14", ["status"], None, None, 60])[0] == 14
    assert validate_args("QueryJobs", [["14", 3], ["id"]])[0] == [14, 3]


@pytest.mark.parametrize("bad", ["x", "1.5", "-1", -1, 1.0, True, None, ""])
def test_bad_job_ids_are_refused(bad: Any) -> None:
    with pytest.raises(RequestParseError, match=r"ArchiveJob: argument 1 \(job_id\) must be a job id"):
        validate_args("ArchiveJob", [bad])


def test_a_bad_list_element_is_named_by_index() -> None:
    with pytest.raises(RequestParseError, match=r"QueryJobs: argument 1 \(job_ids\[1\]\) must be a job id"):
        validate_args("QueryJobs", [[1, "x"], ["id"]])
    with pytest.raises(RequestParseError,
                       match=r"SubmitManyJobs: argument 1 \(jobs\[1\]\[0\]\) must be a JSON"):
        validate_args("SubmitManyJobs", [[[OP], ["OP_TEST_DELAY"]]])


def test_query_jobs_accepts_null_for_all_jobs() -> None:
    assert validate_args("QueryJobs", [None, ["id"]]) == [None, ["id"]]


def test_cancel_job_kill_defaults_to_false() -> None:
    assert validate_args("CancelJob", ["7"]) == [7, False]


def test_wait_for_job_change_timeout_is_capped() -> None:
    assert validate_args("WaitForJobChange", [1, ["status"], None, None, 600])[4] == WFJC_TIMEOUT_MAX


def test_wait_for_job_change_refuses_a_negative_timeout() -> None:
    with pytest.raises(RequestParseError, match=r"argument 5 \(timeout\) must be a non-negative number"):
        validate_args("WaitForJobChange", [1, ["status"], None, None, -1])


def test_query_tags_refuses_an_unknown_kind() -> None:
    with pytest.raises(RequestParseError, match=r"QueryTags: argument 1 \(kind\) must be one of cluster"):
        validate_args("QueryTags", ["os", "x"])


def test_replace_filter_refuses_a_negative_priority() -> None:
    with pytest.raises(RequestParseError, match=r"argument 2 \(priority\) must be a non-negative integer"):
        validate_args("ReplaceFilter", [None, -1, [], "ACCEPT", []])


def test_nullable_argument_error_says_null_is_allowed() -> None:
    with pytest.raises(RequestParseError, match=r"\(prev_log_serial\) must be null or an integer"):
        validate_args("WaitForJobChange", [1, ["status"], None, "1", 60])


# -- dispatch -------------------------------------------------------------------

class RecordingHandler(UnimplementedHandler):
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def cancel_job(self, job_id: int, kill: bool) -> list[Any]:
        self.calls.append(("cancel_job", (job_id, kill)))
        return [True, f"Dequeued job {job_id}"]


def test_dispatch_calls_the_handler_with_normalised_arguments() -> None:
    handler = RecordingHandler()
    result = asyncio.run(dispatch(handler, LuxiRequest("CancelJob", ["12"])))
    assert result == [True, "Dequeued job 12"]
    assert handler.calls == [("cancel_job", (12, False))]


def test_dispatch_validates_before_calling_the_handler() -> None:
    handler = RecordingHandler()
    with pytest.raises(RequestParseError):
        asyncio.run(dispatch(handler, LuxiRequest("CancelJob", ["x"])))
    assert handler.calls == []


def test_unimplemented_methods_fail_with_generic_error_naming_them() -> None:
    with pytest.raises(GenericError) as info:
        asyncio.run(dispatch(RecordingHandler(), LuxiRequest("QueryClusterInfo", [])))
    assert info.value.encode() == [
        "GenericError", ["LUXI method QueryClusterInfo is not implemented by this server"]]


def test_pickup_job_gets_luxids_answer() -> None:
    with pytest.raises(GenericError) as info:
        asyncio.run(dispatch(RecordingHandler(), LuxiRequest("PickupJob", [3])))
    assert info.value.encode() == ["GenericError", ["Luxi call 'PickupJob' is for internal use only"]]


def test_signature_lists_optional_arguments() -> None:
    assert methods.METHODS["CancelJob"].signature == "CancelJob[job_id, kill?]"
