"""The descriptor-driven mapping between legacy JSON and proto messages."""

from __future__ import annotations

import json

import pytest

from compat_jsonrpc import codec
from generated.ganeti.node.v1 import cluster_pb2, node_pb2, objects_pb2


def test_request_is_positional_in_field_order() -> None:
    msg = codec.request_from_args(cluster_pb2.TestDelayRequest, [1.5], "test_delay")
    assert msg.duration == 1.5
    assert codec.args_from_request(msg) == [1.5]


def test_wrong_argument_count_names_the_arguments() -> None:
    with pytest.raises(codec.CodecError, match=r"test_delay takes 1 argument\(s\) \(duration\), got 2"):
        codec.request_from_args(cluster_pb2.TestDelayRequest, [1, 2], "test_delay")


def test_body_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(codec.CodecError, match="JSON list of 1 positional arguments, got an object"):
        codec.request_from_args(cluster_pb2.TestDelayRequest, {"duration": 1}, "test_delay")


def test_wrong_type_says_where_and_what() -> None:
    with pytest.raises(codec.CodecError, match=r"argument 1 \(duration\) of test_delay: expected a number"):
        codec.request_from_args(cluster_pb2.TestDelayRequest, ["1"], "test_delay")


def test_single_field_response_unwraps_to_its_value() -> None:
    resp = codec.response_from_result(cluster_pb2.VersionResponse, 3000000, "version")
    assert codec.result_from_response(resp) == 3000000
    assert json.dumps(codec.result_from_response(resp)) == "3000000"


def test_response_without_fields_is_null() -> None:
    resp = codec.response_from_result(cluster_pb2.TestDelayResponse, None, "test_delay")
    assert codec.result_from_response(resp) is None


def test_optional_scalar_is_null_when_unset() -> None:
    resp = codec.response_from_result(cluster_pb2.GetWatcherPauseResponse, None, "get_watcher_pause")
    assert not resp.HasField("until")
    assert codec.result_from_response(resp) is None
    resp = codec.response_from_result(cluster_pb2.GetWatcherPauseResponse, 1795313549, "x")
    assert codec.result_from_response(resp) == 1795313549


def test_integer_field_refuses_fractions_and_accepts_integral_floats() -> None:
    with pytest.raises(codec.CodecError, match=r"expected an integer, got 1\.5"):
        codec.response_from_result(cluster_pb2.VersionResponse, 1.5, "version")
    resp = codec.response_from_result(cluster_pb2.VersionResponse, 3000000.0, "version")
    assert json.dumps(codec.result_from_response(resp)) == "3000000"


def test_boolean_is_not_an_integer() -> None:
    with pytest.raises(codec.CodecError, match="expected an integer, got a boolean"):
        codec.response_from_result(cluster_pb2.VersionResponse, True, "version")


def test_struct_numbers_come_back_as_integers_when_integral() -> None:
    disk = {"dev_type": "file", "logical_id": ["loop", "/x/disk0"], "size": 1024,
            "params": {"a": 1, "b": 2.5, "c": [1, 2.0], "d": None, "e": True}}
    msg = codec.from_native(objects_pb2.Disk, disk)
    out = codec.to_native(msg)
    expected = '{"a": 1, "b": 2.5, "c": [1, 2], "d": null, "e": true}'
    assert json.dumps(out["params"], sort_keys=True) == expected
    assert json.dumps(out["logical_id"]) == '["loop", "/x/disk0"]'


def test_unknown_object_keys_are_kept_by_the_rest_field() -> None:
    disk = {"dev_type": "file", "logical_id": ["loop", "/x"], "future_key": 5, "other": {"bus": 0}}
    msg = codec.from_native(objects_pb2.Disk, disk)
    assert dict(msg.extra.fields).keys() == {"future_key", "other"}
    out = codec.to_native(msg)
    assert out["future_key"] == 5 and out["other"] == {"bus": 0}


def test_unset_optional_fields_are_left_out_of_objects() -> None:
    out = codec.to_native(codec.from_native(objects_pb2.Disk, {"dev_type": "diskless"}))
    assert "size" not in out and "uuid" not in out and "params" not in out
    assert out["dev_type"] == "diskless"


def test_null_for_an_optional_field_leaves_it_unset() -> None:
    msg = codec.from_native(objects_pb2.Disk, {"dev_type": "file", "size": None})
    assert not msg.HasField("size")


def test_null_for_a_required_scalar_is_refused() -> None:
    with pytest.raises(codec.CodecError, match="dev_type: must not be null"):
        codec.from_native(objects_pb2.Disk, {"dev_type": None})


def test_tuple_message_round_trips_as_a_list() -> None:
    msg = codec.from_native(objects_pb2.CompressedData, [1, "eJwrSS0uAQAEXQHB"])
    assert (msg.encoding, msg.data) == (1, "eJwrSS0uAQAEXQHB")
    assert codec.to_native(msg) == [1, "eJwrSS0uAQAEXQHB"]
    with pytest.raises(codec.CodecError, match="expected 2 items, got 3"):
        codec.from_native(objects_pb2.CompressedData, [1, "x", 2])


def test_large_integers_in_typed_fields_are_exact() -> None:
    entry = ["gnt:daemon:noded:start", "", 1732240805123456789]
    msg = codec.from_native(objects_pb2.ReasonEntry, entry)
    assert codec.to_native(msg) == entry


def test_nested_messages_and_repeated_fields() -> None:
    inst = {"name": "inst1", "nics": [{"mac": "aa:00:00:00:00:01", "nicparams": {"mode": "bridged"}}],
            "disks_info": [{"dev_type": "file", "logical_id": ["loop", "/d"], "children": []}],
            "tags": ["a"], "beparams": {"maxmem": 128}}
    out = codec.to_native(codec.from_native(objects_pb2.Instance, inst))
    assert out["nics"][0]["nicparams"] == {"mode": "bridged"}
    assert out["disks_info"][0]["logical_id"] == ["loop", "/d"]
    assert json.dumps(out["beparams"]) == '{"maxmem": 128}'
    assert out["tags"] == ["a"]


def test_wrong_nested_type_reports_the_path() -> None:
    with pytest.raises(codec.CodecError, match=r"nics\[0\]\.mac: expected a string"):
        codec.from_native(objects_pb2.Instance, {"name": "i", "nics": [{"mac": 5}]}, where="instance")


def test_trailing_nullable_arguments_may_be_left_out() -> None:
    from generated.ganeti.node.v1 import instance_pb2
    msg = codec.request_from_args(instance_pb2.InstanceInfoRequest, ["inst1", "fake"], "instance_info")
    assert codec.args_from_request(msg) == ["inst1", "fake", None]


def test_doubles_without_fraction_are_written_as_integers() -> None:
    from generated.ganeti.node.v1 import instance_pb2
    resp = codec.response_from_result(
        instance_pb2.InstanceInfoResponse, {"memory": 128, "vcpus": 1, "state": 0, "time": 0.0},
        "instance_info")
    assert json.dumps(codec.result_from_response(resp), sort_keys=True) == \
        '{"memory": 128, "state": 0, "time": 0, "vcpus": 1}'


def test_node_info_keeps_null_and_empty_lists_apart() -> None:
    """Ganeti answers null for the parts node_info was not asked about, [] for an empty request."""
    unset = codec.request_from_args(node_pb2.NodeInfoRequest, [None, None], "node_info")
    assert not unset.HasField("storage_units") and not unset.HasField("hv_specs")
    assert codec.args_from_request(unset) == [None, None]
    empty = codec.request_from_args(node_pb2.NodeInfoRequest, [[], []], "node_info")
    assert empty.HasField("storage_units") and codec.args_from_request(empty) == [[], []]
    for result in (["boot", None, None], ["boot", [], []],
                   ["boot", [{"type": "file", "name": "/d", "storage_free": 5, "storage_size": 9}], None]):
        response = codec.response_from_result(node_pb2.NodeInfoResponse, result, "node_info")
        assert codec.result_from_response(response) == result
