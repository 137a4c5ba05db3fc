"""Validation of submitted opcodes against Ganeti 3.0.2's definitions (opcodes.json).

Where the real Ganeti tree is installed, the verdicts on the same opcodes are
compared with Ganeti's own OpCode.Validate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from masterd.opcodes import OpcodeDefinitions, OpcodeError, validate_job, validate_opcode
from masterd.opcodes.types import accepts, describe

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples"
GANETI_TREE = "/usr/share/ganeti/3.0"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="the shared reference samples are not here")
needs_ganeti = pytest.mark.skipif(not os.path.isdir(os.path.join(GANETI_TREE, "ganeti")),
                                  reason="the real Ganeti 3.0 Python tree is not installed")

GOOD_DELAY: dict[str, Any] = {
    "OP_ID": "OP_TEST_DELAY", "duration": 0.5, "on_master": True, "on_nodes": ["node1.example.com"],
    "on_node_uuids": ["3192824e-77c3-4e4a-8c68-30c91f7b68f0"], "repeat": 3, "interruptible": True,
    "no_locks": False, "dry_run": False, "debug_level": 1, "priority": -10,
    "depends": [[-1, []], [7, ["success", "error"]], ["8", ["canceled"]]], "comment": "testing",
    "reason": [["gnt:client:gnt-debug", "delay", 1795312878399544832]],
}


def delay(**changes: Any) -> dict[str, Any]:
    op = dict(GOOD_DELAY)
    for key, value in changes.items():
        if value is ...:
            del op[key]
        else:
            op[key] = value
    return op


def refused(op: Any) -> OpcodeError:
    with pytest.raises(OpcodeError) as info:
        validate_opcode(op)
    return info.value


def test_test_delay_with_every_parameter_right_is_kept_as_given() -> None:
    assert validate_opcode(GOOD_DELAY) == GOOD_DELAY


def test_test_delay_defaults_are_filled_in() -> None:
    assert validate_opcode({"OP_ID": "OP_TEST_DELAY", "duration": 1.0}) == {
        "OP_ID": "OP_TEST_DELAY", "duration": 1.0, "on_master": True, "on_nodes": [], "on_node_uuids": None,
        "repeat": 0, "interruptible": False, "no_locks": True, "dry_run": None, "debug_level": None,
        "priority": 0, "depends": None, "comment": None, "reason": [],
    }


def test_integer_duration_becomes_a_float_like_ganeti() -> None:
    result = validate_opcode(delay(duration=2))
    assert result["duration"] == 2.0 and isinstance(result["duration"], float)


def test_null_for_a_parameter_with_a_default_means_the_default() -> None:
    assert validate_opcode(delay(on_master=None, repeat=None))["on_master"] is True


def test_validation_does_not_share_default_lists_between_opcodes() -> None:
    first = validate_opcode({"OP_ID": "OP_TEST_DELAY", "duration": 1.0})
    first["on_nodes"].append("x")
    assert validate_opcode({"OP_ID": "OP_TEST_DELAY", "duration": 1.0})["on_nodes"] == []


def test_validation_leaves_the_input_unchanged() -> None:
    op = {"OP_ID": "OP_TEST_DELAY", "duration": 1}
    validate_opcode(op)
    assert op == {"OP_ID": "OP_TEST_DELAY", "duration": 1}


WRONG_DELAYS: list[tuple[str, dict[str, Any], str]] = [
    ("duration", delay(duration=...), "is required but missing (type Float)"),
    ("duration", delay(duration=None), "is required but missing (type Float)"),
    ("duration", delay(duration="1.0"), 'expected Float, got string "1.0"'),
    ("duration", delay(duration=True), "expected Float, got boolean true"),
    ("on_master", delay(on_master="yes"), 'expected Boolean, got string "yes"'),
    ("on_nodes", delay(on_nodes="node1"), 'expected List of NonEmptyString, got string "node1"'),
    ("on_nodes", delay(on_nodes=["node1", ""]), 'expected NonEmptyString at [1], got string ""'),
    ("on_node_uuids", delay(on_node_uuids=[1]), "expected NonEmptyString at [0], got integer 1"),
    ("repeat", delay(repeat=-1), "expected EqualOrGreaterThanZero, got integer -1"),
    ("repeat", delay(repeat=1.5), "expected EqualOrGreaterThanZero, got number 1.5"),
    ("repeat", delay(repeat=True), "expected EqualOrGreaterThanZero, got boolean true"),
    ("interruptible", delay(interruptible=1), "expected Boolean, got integer 1"),
    ("no_locks", delay(no_locks="false"), 'expected Boolean, got string "false"'),
    ("dry_run", delay(dry_run="no"), 'expected None or Boolean, got string "no"'),
    ("debug_level", delay(debug_level=-1), "expected None or EqualOrGreaterThanZero, got integer -1"),
    ("priority", delay(priority=5), "expected OneOf -10, 0, 10, got integer 5"),
    ("priority", delay(priority="0"), 'expected OneOf -10, 0, 10, got string "0"'),
    ("depends", delay(depends=[[1]]), "(Length 2) and (Item 0 is (JobId or RelativeJobId), item 1 is "
                                      "(List of (OneOf canceled, error, success))) at [0], got list [1]"),
    ("depends", delay(depends=[[-1, ["bogus"]]]), 'expected OneOf canceled, error, success at [0][1][0]'),
    ("depends", delay(depends=[["x", []]]), "expected JobId or RelativeJobId at [0][0]"),
    ("comment", delay(comment=5), "expected None or String, got integer 5"),
    ("reason", delay(reason="because"), 'got string "because"'),
    ("reason", delay(reason=[["src", "text"]]), "at [0]"),
    ("reason", delay(reason=[["src", "text", "yesterday"]]), "expected Integer at [0][2]"),
]


@pytest.mark.parametrize(("parameter", "op", "why"), WRONG_DELAYS,
                         ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(WRONG_DELAYS)])
def test_test_delay_wrong_parameter_is_named_with_the_reason(parameter: str, op: dict[str, Any],
                                                             why: str) -> None:
    error = refused(op)
    assert error.op_id == "OP_TEST_DELAY"
    assert error.parameter == parameter
    assert f"Parameter 'OP_TEST_DELAY.{parameter}'" in error.message
    assert why in error.message


def test_unknown_parameter_is_named_with_the_accepted_ones() -> None:
    error = refused(delay(durration=1.0))
    assert error.parameter == "durration"
    assert error.message.startswith("Parameter 'OP_TEST_DELAY.durration' is unknown")
    assert "takes duration, on_master, on_nodes" in error.message
    assert "generic dry_run, debug_level, priority, depends, comment, reason" in error.message


def test_error_is_encoded_like_luxid_parse_failures() -> None:
    error = refused(delay(repeat=-1))
    assert error.encode() == ("Failed to parse request: Parameter 'OP_TEST_DELAY.repeat' fails validation: "
                              "expected EqualOrGreaterThanZero, got integer -1")
    assert error.encode_prereq() == ["OpPrereqError", [error.message, "wrong_input"]]


def test_cluster_query_takes_only_the_generic_parameters() -> None:
    result = validate_opcode({"OP_ID": "OP_CLUSTER_QUERY", "priority": 10})
    assert result == {"OP_ID": "OP_CLUSTER_QUERY", "dry_run": None, "debug_level": None, "priority": 10,
                      "depends": None, "comment": None, "reason": []}
    error = refused({"OP_ID": "OP_CLUSTER_QUERY", "name": "x"})
    assert "takes no parameters of its own" in error.message


def test_tags_set_on_the_cluster() -> None:
    result = validate_opcode({"OP_ID": "OP_TAGS_SET", "kind": "cluster", "tags": ["a", "b"]})
    assert (result["kind"], result["tags"], result["name"]) == ("cluster", ["a", "b"], None)


@pytest.mark.parametrize(("op", "parameter", "why"), [
    ({"OP_ID": "OP_TAGS_SET", "kind": "planet", "tags": ["a"]}, "kind",
     'expected OneOf nodegroup, network, node, cluster, instance, got string "planet"'),
    ({"OP_ID": "OP_TAGS_SET", "kind": "cluster"}, "tags", "is required but missing (type List of String)"),
    ({"OP_ID": "OP_TAGS_SET", "kind": "cluster", "tags": ["a", 1]}, "tags", "expected String at [1]"),
    ({"OP_ID": "OP_TAGS_SET", "kind": "node", "tags": ["a"], "name": 7}, "name", "expected None or String"),
    ({"OP_ID": "OP_TAGS_SET", "tags": ["a"]}, "kind", "is required but missing"),
])
def test_tags_set_wrong_parameter(op: dict[str, Any], parameter: str, why: str) -> None:
    error = refused(op)
    assert (error.op_id, error.parameter) == ("OP_TAGS_SET", parameter)
    assert why in error.message


def test_unknown_opcode_is_named_with_suggestions() -> None:
    error = refused({"OP_ID": "OP_TEST_DELEY", "duration": 1.0})
    assert error.op_id == "OP_TEST_DELEY"
    assert error.message.startswith("Unknown opcode 'OP_TEST_DELEY'")
    assert "OP_TEST_DELAY" in error.message


@pytest.mark.parametrize(("op", "why"), [
    (["OP_TEST_DELAY"], 'An opcode must be a JSON object with an OP_ID, got list ["OP_TEST_DELAY"]'),
    ({"duration": 1.0}, "Opcode has no OP_ID"),
    ({"OP_ID": 3}, "OP_ID must be a string, got integer 3"),
])
def test_malformed_opcodes(op: Any, why: str) -> None:
    assert refused(op).message == why


def test_job_errors_name_the_opcode_index() -> None:
    with pytest.raises(OpcodeError, match=r"^Opcode 1 of the job: Parameter 'OP_TEST_DELAY.repeat'"):
        validate_job([delay(), delay(repeat=-1)])


def test_empty_job_is_refused() -> None:
    with pytest.raises(OpcodeError, match="at least one opcode"):
        validate_job([])


def test_every_opcode_of_the_reference_is_defined() -> None:
    definitions = OpcodeDefinitions.load()
    assert len(definitions.op_ids()) == 75
    assert definitions.get("OP_TEST_DELAY") is not None


def sample_opcodes() -> list[tuple[str, dict[str, Any]]]:
    found = []
    files = sorted(SAMPLES.glob("job-*.json")) + sorted((SAMPLES / "real_queue_3.0.2").rglob("job-*"))
    for path in files:
        job = json.loads(path.read_text())
        if isinstance(job, dict):
            found.extend((f"{path.name}#{i}", op["input"]) for i, op in enumerate(job["ops"]))
    return found


@needs_samples
def test_every_opcode_of_the_real_job_samples_validates() -> None:
    opcodes = sample_opcodes()
    assert len(opcodes) > 40
    for name, op in opcodes:
        try:
            validate_opcode(op)
        except OpcodeError as err:
            pytest.fail(f"{name}: {err}")


@needs_samples
def test_type_descriptions_round_trip_to_ganeti_text() -> None:
    reference = json.loads((SAMPLES / "opcodes_reference.json").read_text())
    defs = json.loads((ROOT / "masterd" / "opcodes" / "opcodes.json").read_text())
    for entry in reference:
        ours = defs["opcodes"][entry["OP_ID"]]["params"]
        assert [p["name"] for p in ours] == [p["name"] for p in entry["params"]]
        for theirs, mine in zip(entry["params"], ours, strict=True):
            if not theirs["type"].startswith("<function") and "(<function" not in theirs["type"]:
                assert describe(mine["type"]) == theirs["type"], (entry["OP_ID"], theirs["name"])


@needs_samples
@pytest.mark.parametrize("tool", ["gen_opcode_defs.py", "gen_query_fields.py"])
def test_committed_data_files_are_fresh(tool: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / tool), "--check"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


GANETI_VALIDATE = r"""
import json, sys
from ganeti import opcodes, errors
out = []
for op in json.load(sys.stdin):
    try:
        opcodes.OpCode.LoadOpCode(op).Validate(True)
        out.append(True)
    except (errors.OpPrereqError, ValueError, TypeError, AttributeError) as err:
        out.append(False)
print(json.dumps(out))
"""

#: Opcodes whose verdict must be the same as Ganeti's Validate: its rules and ours agree on these.
COMPARED_OPCODES: list[dict[str, Any]] = [
    GOOD_DELAY,
    {"OP_ID": "OP_TEST_DELAY", "duration": 1},
    {"OP_ID": "OP_CLUSTER_QUERY"},
    {"OP_ID": "OP_TAGS_SET", "kind": "cluster", "tags": ["a"]},
    {"OP_ID": "OP_TAGS_GET", "kind": "instance", "name": "inst1"},
    {"OP_ID": "OP_QUERY", "what": "job", "fields": ["id"], "qfilter": ["==", "id", 1]},
    {"OP_ID": "OP_CLUSTER_VERIFY", "ignore_errors": ["ENODESETUP"], "skip_checks": ["nplusone_mem"]},
    {"OP_ID": "OP_NETWORK_ADD", "network_name": "n1", "network": "10.0.0.0/24", "gateway": "10.0.0.1"},
    {"OP_ID": "OP_CLUSTER_SET_PARAMS", "uid_pool": [[100, 200]], "candidate_pool_size": 3},
    *[op for (_, op, _) in WRONG_DELAYS
      if op.get("duration") is not None and op.get("reason") == GOOD_DELAY["reason"]],
    {"OP_ID": "OP_TAGS_SET", "kind": "planet", "tags": ["a"]},
    {"OP_ID": "OP_TAGS_SET", "kind": "cluster", "tags": ["a", 1]},
    {"OP_ID": "OP_NETWORK_ADD", "network_name": "n1", "network": "10.0.0.0/33"},
    {"OP_ID": "OP_NETWORK_ADD", "network_name": "n1", "network": "10.0.0.0/24", "gateway": "10.0.0"},
    {"OP_ID": "OP_CLUSTER_SET_PARAMS", "uid_pool": [[100]]},
    {"OP_ID": "OP_CLUSTER_SET_PARAMS", "candidate_pool_size": 0},
    {"OP_ID": "OP_CLUSTER_VERIFY", "ignore_errors": ["EBOGUS"]},
    {"OP_ID": "OP_QUERY", "what": "planet", "fields": ["id"]},
    {"OP_ID": "OP_NO_SUCH_THING"},
]


def our_verdict(op: dict[str, Any]) -> bool:
    try:
        validate_opcode(op)
    except OpcodeError:
        return False
    return True


@needs_ganeti
def test_verdicts_agree_with_ganeti_validate() -> None:
    env = {**os.environ, "PYTHONPATH": GANETI_TREE}
    proc = subprocess.run(["/usr/bin/python3", "-c", GANETI_VALIDATE], input=json.dumps(COMPARED_OPCODES),
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    theirs = json.loads(proc.stdout)
    ours = [our_verdict(op) for op in COMPARED_OPCODES]
    disagreements = [(op, o, t) for op, o, t in zip(COMPARED_OPCODES, ours, theirs, strict=True) if o != t]
    assert not disagreements
    assert theirs.count(True) >= 9 and theirs.count(False) >= 10


def example_value(node: dict[str, Any]) -> Any:
    """A value of the type, for building opcodes with every required parameter."""
    kind = node["t"]
    simple = {"any": "x", "none": None, "bool": True, "int": 1, "float": 1.5, "string": "x",
              "nonempty_string": "x", "list": [], "dict": {}, "non_negative_int": 1, "positive_int": 1,
              "ipv4_address": "192.0.2.1", "ipv4_network": "192.0.2.0/24", "ipv6_address": "2001:db8::1",
              "ipv6_network": "2001:db8::/64", "job_id": 1, "relative_job_id": -1,
              "list_of": [], "set_of": [], "dict_of": {}}
    if kind in simple:
        return simple[kind]
    if kind == "elem_of":
        return node["values"][0]
    if kind == "private":
        return example_value(node["inner"])
    if kind in ("tuple_of", "items"):
        return [example_value(item) for item in node["items"]]
    if kind == "or":
        options = [p for p in node["of"] if p["t"] != "none"] or node["of"]
        return example_value(options[0])
    if kind == "and":
        for part in node["of"]:
            candidate = example_value(part)
            if accepts(node, candidate):
                return candidate
    raise AssertionError(f"no example for {node}")


GANETI_DEFAULTS = r"""
import json, logging, sys
logging.disable(logging.CRITICAL)
from ganeti import opcodes, errors
out = {}
for op in json.load(sys.stdin):
    try:
        loaded = opcodes.OpCode.LoadOpCode(op)
        loaded.Validate(True)
        out[op["OP_ID"]] = loaded.__getstate__()
    except (errors.OpPrereqError, ValueError) as err:
        out[op["OP_ID"]] = str(err)
print(json.dumps(out))
"""


@needs_ganeti
def test_required_parameters_and_defaults_agree_with_ganeti_for_every_opcode() -> None:
    definitions = OpcodeDefinitions.load()
    minimal = []
    for op_id in definitions.op_ids():
        opdef = definitions.get(op_id)
        assert opdef is not None
        op = {p.name: example_value(p.type) for p in opdef.params if p.required}
        minimal.append({"OP_ID": op_id, **op})
    env = {**os.environ, "PYTHONPATH": GANETI_TREE}
    proc = subprocess.run(["/usr/bin/python3", "-c", GANETI_DEFAULTS], input=json.dumps(minimal),
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    theirs = json.loads(proc.stdout)
    assert len(theirs) == 75
    for op in minimal:
        assert validate_opcode(op) == theirs[op["OP_ID"]], op["OP_ID"]


def test_garbage_opcodes_give_opcode_errors_and_never_crash() -> None:
    import random
    rng = random.Random(7)
    names = ["duration", "on_nodes", "repeat", "depends", "reason", "priority", "kind", "tags", "name", "x"]
    values: list[Any] = [None, True, 0, -3, 1.5, "", "cluster", [], [[-1, []]], [["a", "b", 1]], {"a": 1},
                         [1, "x"], [[1, ["success"]]], "OP_TEST_DELAY"]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        op_ids: list[Any] = ["OP_TEST_DELAY", "OP_TAGS_SET", "OP_CLUSTER_QUERY", 5, "OP_X"]
        op: dict[str, Any] = {"OP_ID": rng.choice(op_ids)}
        for _ in range(rng.randrange(4)):
            op[rng.choice(names)] = rng.choice(values)
        try:
            validate_opcode(op)
            outcomes["ok"] += 1
        except OpcodeError as err:
            assert err.message
            outcomes["error"] += 1
    assert outcomes["ok"] > 50 and outcomes["error"] > 50
