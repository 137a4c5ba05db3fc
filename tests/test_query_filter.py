"""The query filter language: operators, errors and luxid's name selection.

Where the real Ganeti 3.0 code is installed, the same filters are compiled by
Ganeti's own query._CompileFilter (run with /usr/bin/python3) over the same
items, and matches and error messages are compared.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from masterd.query.errors import FilterError, QueryFilterParseError
from masterd.query.fields import (
    FLAG_HOSTNAME,
    FLAG_SPLIT_TIMESTAMP,
    RS_NODATA,
    RS_NORMAL,
    Entry,
    FieldDefinition,
    FieldSpec,
)
from masterd.query.filter import compile_filter, filter_field_names, requested_names

GANETI_TREE = "/usr/share/ganeti/3.0"

# name -> (kind, flags)
FIELD_TABLE: dict[str, tuple[str, frozenset[str]]] = {
    "name": ("text", frozenset({FLAG_HOSTNAME})),
    "role": ("text", frozenset()),
    "count": ("number", frozenset()),
    "mem": ("unit", frozenset()),
    "ratio": ("float", frozenset()),
    "on": ("bool", frozenset()),
    "tags": ("other", frozenset()),
    "ts": ("other", frozenset({FLAG_SPLIT_TIMESTAMP})),
    "ctime": ("timestamp", frozenset()),
}

ITEMS: list[dict[str, Any]] = [
    {"name": "node1.example.com", "role": "M", "count": 3, "mem": 1024, "ratio": 0.5, "on": True,
     "tags": ["a", "b"], "ts": [100, 500000], "ctime": 10.5},
    {"name": "node2.example.com", "role": "C", "count": 0, "mem": 512, "ratio": 1.5, "on": False,
     "tags": [], "ts": [200, 0], "ctime": 20.0},
    {"name": "Node10.other.org", "role": "R", "count": 12, "mem": 2048, "ratio": 2.0, "on": True,
     "tags": ["b", 7], "ts": [100, 500000], "ctime": 5.0},
]


def _getter(name: str) -> Any:
    def get(item: dict[str, Any]) -> Entry:
        return (RS_NORMAL, item[name])
    return get


def make_fields() -> dict[str, FieldSpec[dict[str, Any]]]:
    return {name: FieldSpec(FieldDefinition(name, name.title(), kind, f"{name} field"), _getter(name), flags)
            for name, (kind, flags) in FIELD_TABLE.items()}


FIELDS = make_fields()


def matches(qfilter: Any, items: list[dict[str, Any]] = ITEMS) -> list[int]:
    predicate = compile_filter(qfilter, FIELDS)
    return [index for index, item in enumerate(items) if predicate(item)]


# The oracle: Ganeti's own filter compiler over the same fields and items.
ORACLE = r"""
import json, sys
from ganeti import query, objects, errors
table, items, cases = json.load(sys.stdin)
flag_bits = {"hostname": query.QFF_HOSTNAME, "split_timestamp": query.QFF_SPLIT_TIMESTAMP}
fields = {}
for name, (kind, flags) in table.items():
    fdef = objects.QueryFieldDefinition(name=name, title=name.title(), kind=kind, doc=name)
    bits = 0
    for flag in flags:
        bits |= flag_bits[flag]
    fields[name] = (fdef, None, bits, (lambda n: lambda ctx, item: item[n])(name))
out = []
for qfilter in cases:
    try:
        fn = query._CompileFilter(fields, None, qfilter)
        out.append(["ok", [i for i, item in enumerate(items) if fn(None, item)]])
    except errors.GenericError as err:
        out.append([err.__class__.__name__, str(err.args[0])])
print(json.dumps(out))
"""

COMPARED_FILTERS: list[Any] = [
    ["==", "role", "M"],
    ["=", "role", "C"],
    ["!=", "role", "M"],
    ["==", "name", "node1"],
    ["==", "name", "NODE10"],
    ["==", "name", "node1.example"],
    ["==", "name", "node1.ex"],
    ["!=", "name", "node2"],
    ["<", "count", 3],
    ["<=", "count", 3],
    [">", "mem", 512],
    [">=", "mem", 1024],
    [">", "ratio", 0.75],
    ["<", "ctime", 10],
    [">=", "ctime", 10.5],
    ["?", "on"],
    ["?", "count"],
    ["?", "tags"],
    ["=~", "name", r"^node\d\."],
    ["=~", "name", "example"],
    ["=[]", "tags", "b"],
    ["=[]", "tags", 7],
    ["==", "ts", [100, 500000]],
    ["==", "ts", 200],
    ["<", "ts", 150],
    [">=", "ts", [100, 500000]],
    ["==", "on", True],
    ["&"],
    ["|"],
    ["&", ["==", "role", "M"], ["?", "on"]],
    ["|", ["==", "role", "M"], ["==", "role", "R"]],
    ["!", ["|", ["==", "role", "M"], ["==", "role", "R"]]],
    ["&", ["!", ["==", "count", 0]], ["|", ["<", "mem", 1500], ["=~", "name", "org$"]]],
]

INVALID_FILTERS: list[Any] = [
    [],
    "role",
    ["=*", "name", "node*"],
    ["!~", "name", "x"],
    ["nosuchop", "name"],
    ["!"],
    ["!", ["?", "on"], ["?", "on"]],
    ["?", "on", "off"],
    ["==", "role"],
    ["==", "role", "M", "C"],
    ["==", "nosuchfield", 1],
    ["?", "nosuchfield"],
    ["==", "count", "3"],
    ["==", "count", True],
    ["==", "role", 1],
    ["==", "on", "yes"],
    ["==", "ratio", 1],
    ["<", "mem", 1.5],
    ["&", ["==", "role", "M"], "oops"],
    ["!", ["!", ["!", ["!", ["!", ["!", ["!", ["!", ["!", ["!", ["?", "on"]]]]]]]]]]],
]


def run_oracle(cases: list[Any]) -> list[Any]:
    env = {**os.environ, "PYTHONPATH": GANETI_TREE}
    proc = subprocess.run(["/usr/bin/python3", "-c", ORACLE],
                          input=json.dumps([FIELD_TABLE_JSON, ITEMS, cases]),
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    return json.loads(proc.stdout)


FIELD_TABLE_JSON = {name: [kind, sorted(flags)] for name, (kind, flags) in FIELD_TABLE.items()}

needs_ganeti = pytest.mark.skipif(not os.path.isdir(os.path.join(GANETI_TREE, "ganeti")),
                                  reason="the real Ganeti 3.0 Python tree is not installed")


@pytest.fixture(scope="module")
def oracle_results() -> list[Any]:
    return run_oracle(COMPARED_FILTERS + INVALID_FILTERS)


@needs_ganeti
def test_matches_agree_with_ganeti_filter_compiler(oracle_results: list[Any]) -> None:
    ours = [["ok", matches(f)] for f in COMPARED_FILTERS]
    assert ours == oracle_results[:len(COMPARED_FILTERS)]


@needs_ganeti
def test_error_messages_agree_with_ganeti_filter_compiler(oracle_results: list[Any]) -> None:
    theirs = oracle_results[len(COMPARED_FILTERS):]
    ours = []
    for qfilter in INVALID_FILTERS:
        with pytest.raises(FilterError) as info:
            compile_filter(qfilter, FIELDS)
        ours.append(["ParameterError", info.value.message])
    assert ours == theirs


def test_no_filter_matches_everything() -> None:
    assert matches(None) == [0, 1, 2]


def test_glob_operator_is_not_part_of_the_list_language() -> None:
    with pytest.raises(QueryFilterParseError, match="Unknown operator '=\\*'"):
        compile_filter(["=*", "name", "node*"], FIELDS)


def test_filter_errors_are_encoded_as_parameter_error() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(["==", "nosuchfield", 1], FIELDS)
    assert info.value.encode() == ["ParameterError", ["Unknown field 'nosuchfield'"]]


def test_invalid_regex_is_refused_when_compiling() -> None:
    with pytest.raises(FilterError, match=r"^Invalid regex pattern \("):
        compile_filter(["=~", "role", "("], FIELDS)


def test_nesting_is_limited_to_ten_levels() -> None:
    qfilter: Any = ["?", "on"]
    for _ in range(9):
        qfilter = ["!", qfilter]
    assert matches(qfilter) == [1]
    with pytest.raises(QueryFilterParseError, match="nested too deep"):
        compile_filter(["!", qfilter], FIELDS)


def test_unavailable_value_lets_the_condition_pass_like_luxid() -> None:
    spec = FieldSpec(FieldDefinition("count", "Count", "number", "d"), lambda item: (RS_NODATA, None))
    predicate = compile_filter(["==", "count", 5], {"count": spec})
    assert predicate(object()) is True


def test_comparing_incompatible_values_is_an_error_not_a_crash() -> None:
    predicate = compile_filter(["<", "tags", 3], FIELDS)
    with pytest.raises(FilterError, match="Invalid types in comparison"):
        predicate(ITEMS[0])


def test_regex_on_a_non_string_value_is_an_error() -> None:
    predicate = compile_filter(["=~", "tags", "a"], FIELDS)
    with pytest.raises(FilterError, match="expecting string"):
        predicate(ITEMS[0])


def test_requested_names_of_an_or_of_equalities() -> None:
    qfilter = ["|", ["==", "id", 3], ["=", "id", "4"], ["|", ["==", "id", 5]]]
    assert requested_names(qfilter, "id") == [3, "4", 5]


def test_requested_names_of_no_filter_is_everything() -> None:
    assert requested_names(None, "name") == []


@pytest.mark.parametrize("qfilter", [
    ["|", ["==", "id", 3], ["==", "status", "error"]],
    ["&", ["==", "id", 3]],
    ["!=", "id", 3],
    ["|", ["<", "id", 3]],
])
def test_requested_names_is_none_for_other_filters(qfilter: Any) -> None:
    assert requested_names(qfilter, "id") is None


def test_filter_field_names_lists_each_field_once() -> None:
    qfilter = ["&", ["==", "role", "M"], ["!", ["?", "on"]], ["|", ["<", "count", 1], ["==", "role", "C"]]]
    assert filter_field_names(qfilter) == ["role", "on", "count"]


def random_json(rng: Any, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 4 else 6)
    scalars = [None, True, False, 0, -1, 7, 2.5, "", "role", "name", "count", "tags", "ts", "==", "|", "!",
               "?", "=~", "=[]", "<", "(", "node1"]
    if choice < 6:
        return rng.choice(scalars)
    if choice < 8:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {"k": random_json(rng, depth + 1)}


def test_garbage_filters_give_filter_errors_and_never_crash() -> None:
    import random
    rng = random.Random(4)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        qfilter = random_json(rng)
        if rng.random() < 0.7:
            qfilter = [rng.choice(["&", "|", "!", "?", "==", "<", "=~", "=[]"]), *(
                random_json(rng, 1) for _ in range(rng.randrange(4)))]
        try:
            predicate = compile_filter(qfilter, FIELDS)
            for item in ITEMS:
                predicate(item)
            outcomes["ok"] += 1
        except FilterError:
            outcomes["error"] += 1
    assert outcomes["ok"] > 50 and outcomes["error"] > 50


# --- the text language (qlang.ParseFilter / MakeFilter) ---------------------------------------

TEXT_FILTERS = [
    'name == "a" and not x or y', "a and b and c", "not not a", "1 in tags", '"x" not in tags',
    "name =~ m/^n.*/i", 'name !* "*.site"', "a < -5", "(a or b) and c", "name =~ #a/b#",
    'status == "running" or status == "error" or id > 3', r'x = "a\"b"', r"name =~ /^node\d+\/x\t$/",
    r'name == "a\tb\\c"', "name == 'it''s'", 'name == "x" or not y and z', "name=~/a/si", "name =~ ^abc^",
    "-3 in tags", "+3 in tags", "a>=-1", "not (a and b)", "not a == 1", 'x != ""', "a\tand\nb",
    "name =~ /a/i and b", "1 intags", "and", "or", "a and or", "not and", 'name =* "n?de*"',
    "name =~ m /a/", "a or b and c or d", "((a))", "a and (b or c) and d", "not not not a", "x!=1",
    'x  ==  "y"', "a.b/c_d == 1", '"a" in b and c', "not", "andy", "not_a", "a <= 2 and b >= 3 or c < 1",
    'name !~ /x/', "x == 007",
]
BAD_TEXT_FILTERS = [
    "name == ", "a b", "name =~ /x/q", "name =~ /(/", "", 'name == "a" and', "x == 1.5", "a or (b",
    "x in tags", 'x == "a" "b"', 'name == "a\nb"', "(a) == 1", 'name=~"a"', "name =~ /a/ and b", "a and",
    "(a", "a)", "1 == a", "name =~ /abc", "==",
]

QLANG_ORACLE = r"""
import json, sys
from ganeti import qlang, errors
out = []
for text in json.load(sys.stdin):
    try:
        out.append(["ok", qlang.ParseFilter(text)])
    except errors.QueryFilterParseError as err:
        out.append(["error", None])
print(json.dumps(out))
"""


@needs_ganeti
def test_text_filters_parse_like_ganeti_qlang() -> None:
    from masterd.query.qlang import parse_filter
    env = {**os.environ, "PYTHONPATH": GANETI_TREE}
    cases = TEXT_FILTERS + BAD_TEXT_FILTERS
    proc = subprocess.run(["/usr/bin/python3", "-c", QLANG_ORACLE], input=json.dumps(cases),
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    theirs = json.loads(proc.stdout)
    ours = []
    for text in cases:
        try:
            ours.append(["ok", parse_filter(text)])
        except QueryFilterParseError:
            ours.append(["error", None])
    assert [text for text, o, g in zip(cases, ours, theirs, strict=True) if o != g] == []
    assert all(result[0] == "ok" for result in theirs[:len(TEXT_FILTERS)])
    assert all(result[0] == "error" for result in theirs[len(TEXT_FILTERS):])


def test_text_filter_error_names_the_filter_and_position() -> None:
    from masterd.query.qlang import parse_filter
    with pytest.raises(QueryFilterParseError, match=r"^Failed to parse query filter 'a b': .*\(at char 2\)$"):
        parse_filter("a b")


def test_text_filter_unknown_regex_flag_is_named() -> None:
    from masterd.query.qlang import parse_filter
    with pytest.raises(QueryFilterParseError, match="Unknown regular expression flags: 'q'"):
        parse_filter("name =~ /x/q")


MAKE_FILTER_CASES: list[tuple[list[str], bool, str | None, bool]] = [
    ([], False, None, False),
    (["node1", "node2"], False, None, False),
    (["web*", "db?.example.com"], False, None, False),
    (["14", "15"], False, "id", True),
    (['status == "error"'], False, "id", True),
    (["a"], True, None, False),
    (["inst1.example.com"], False, None, False),
]


@needs_ganeti
def test_make_filter_agrees_with_ganeti() -> None:
    from masterd.query.qlang import make_filter
    oracle = r"""
import json, sys
from ganeti import qlang
print(json.dumps([qlang.MakeFilter(a, f, namefield=n, isnumeric=i) for a, f, n, i in json.load(sys.stdin)]))
"""
    env = {**os.environ, "PYTHONPATH": GANETI_TREE}
    proc = subprocess.run(["/usr/bin/python3", "-c", oracle], input=json.dumps(MAKE_FILTER_CASES),
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    assert [make_filter(a, f, n, i) for a, f, n, i in MAKE_FILTER_CASES] == json.loads(proc.stdout)


def test_make_filter_refuses_non_numeric_job_ids() -> None:
    from masterd.query.errors import OpPrereqError
    from masterd.query.qlang import make_filter
    with pytest.raises(OpPrereqError, match="Invalid job ID passed: invalid literal for int"):
        make_filter(["abc"], False, "id", True)


def test_make_filter_with_force_needs_exactly_one_argument() -> None:
    from masterd.query.errors import OpPrereqError
    from masterd.query.qlang import make_filter
    with pytest.raises(OpPrereqError, match="Exactly one argument must be given as a filter"):
        make_filter(["a", "b"], True)
