"""Job filter rules: matching (masterd.filters.rules), the engine's scheduler applying them, the LUXI
methods, and Debian's real gnt-filter / gnt-debug against our ganeti-masterd."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_masterd_real_tools import Master, make_master, submit_id, wait_status

from masterd.engine import JobEngine
from masterd.filters.rules import FilterRule, RuleError, applying_rule, order_rules
from masterd.filters.store import FilterStore, FilterStoreError
from masterd.jqueue.store import JobQueueStore
from masterd.luxi.protocol import GanetiError, GenericError, RequestParseError
from masterd.luxi_handler import LuxiHandler
from masterd.query.jobs import job_status
from noded.paths import Paths

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
U3 = "33333333-3333-4333-8333-333333333333"
DELAY_ONLY = [["opcode", ["==", "OP_ID", "OP_TEST_DELAY"]]]


def rule(uuid: str = U1, action: Any = "PAUSE", predicates: Any = None, priority: int = 0,
         watermark: int = 0) -> FilterRule:
    return FilterRule.new(uuid, watermark, priority, predicates or [], action, [])


def delay_op(duration: float = 0.01, **params: Any) -> dict[str, Any]:
    return {"OP_ID": "OP_TEST_DELAY", "duration": duration, **params}


# -- matching ----------------------------------------------------------------------------------

def test_rule_without_predicates_matches_every_job() -> None:
    assert rule().matches(5, [delay_op()])


def test_jobid_predicate_compares_with_the_watermark() -> None:
    newer = rule(predicates=[["jobid", [">", "id", "watermark"]]], watermark=10)
    assert newer.matches(11, [delay_op()])
    assert not newer.matches(10, [delay_op()])


def test_jobid_predicate_with_a_regex_never_matches_as_in_luxid() -> None:
    assert not rule(predicates=[["jobid", ["=~", "id", "1"]]]).matches(1, [delay_op()])


def test_opcode_predicate_holds_when_one_opcode_matches() -> None:
    only_tags = rule(predicates=[["opcode", ["==", "OP_ID", "OP_TAGS_SET"]]])
    assert only_tags.matches(1, [delay_op(), {"OP_ID": "OP_TAGS_SET", "kind": "cluster"}])
    assert not only_tags.matches(1, [delay_op()])


def test_opcode_predicate_with_a_missing_field_is_false_for_that_opcode() -> None:
    either = rule(predicates=[["opcode", ["|", ["==", "OP_ID", "OP_TEST_DELAY"], ["==", "nosuch", 1]]]])
    assert not either.matches(1, [delay_op()])


def test_opcode_predicate_reaches_nested_fields_with_dots() -> None:
    nested = rule(predicates=[["opcode", ["==", "a.b", "x"]]])
    assert nested.matches(1, [{"OP_ID": "OP_X", "a": {"b": "x"}}])


def test_reason_predicate_looks_at_every_reason_entry() -> None:
    maint = rule(predicates=[["reason", ["==", "reason", "maintenance"]]])
    op = delay_op(reason=[["gnt:client:gnt-debug", "", 1], ["user", "maintenance", 2]])
    assert maint.matches(1, [op])
    assert not maint.matches(1, [delay_op(reason=[["user", "other", 2]])])


def test_rules_are_ordered_by_priority_then_watermark_then_uuid() -> None:
    rules = [rule(U3, priority=1), rule(U2, priority=0, watermark=5), rule(U1, priority=0, watermark=5),
             rule(U3.replace("3", "4"), priority=0, watermark=1)]
    assert [r.uuid for r in order_rules(rules)] == [rules[3].uuid, U1, U2, U3]


def test_continue_rules_never_apply() -> None:
    ordered = order_rules([rule(U1, "CONTINUE", priority=0), rule(U2, "REJECT", priority=1)])
    applying = applying_rule(ordered, 1, [delay_op()])
    assert applying is not None and applying.uuid == U2


def test_malformed_predicates_are_refused_with_the_reason() -> None:
    with pytest.raises(RuleError, match="unknown filter operator"):
        rule(predicates=[["opcode", ["~~", "OP_ID", "x"]]])
    with pytest.raises(RuleError, match="must be"):
        rule(predicates=[["nosuch", ["==", "OP_ID", "x"]]])


def test_rate_limit_needs_a_positive_count() -> None:
    with pytest.raises(RuleError, match="RATE_LIMIT"):
        rule(action=["RATE_LIMIT", 0])


# -- storage -----------------------------------------------------------------------------------

def test_store_keeps_rules_across_a_reload(tmp_path: Path) -> None:
    store = FilterStore(str(tmp_path / "job-filters.json"))
    store.replace(rule(U1, ["RATE_LIMIT", 2], DELAY_ONLY, priority=3, watermark=7))
    again = FilterStore(store.path)
    again.load()
    assert again.get(U1) == store.get(U1)
    assert json.loads(Path(store.path).read_text())[U1]["action"] == ["RATE_LIMIT", 2]


def test_store_refuses_a_corrupt_file_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "job-filters.json"
    path.write_text("{not json")
    with pytest.raises(FilterStoreError, match=str(path)):
        FilterStore(str(path)).load()


# -- the engine --------------------------------------------------------------------------------

def make_paths(tmp_path: Path, host: str = "node1") -> Paths:
    paths = Paths(root=str(tmp_path / host), hostname=host)
    Path(paths.data_dir).mkdir(parents=True, exist_ok=True)
    for key, value in {"master_node": host, "cluster_name": "cluster.example.com", "node_list": host}.items():
        Path(paths.ssconf_file(key)).write_text(value + "\n")
    return paths


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(body(), 30))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def engine_on(paths: Paths, **kwargs: Any) -> AsyncIterator[JobEngine]:
    store = JobQueueStore(paths)
    engine = JobEngine(store, paths, **kwargs)
    try:
        await engine.start()
        yield engine
    finally:
        await engine.shutdown(5.0)
        store.close()


def status(engine: JobEngine, job_id: int) -> str:
    data = engine.published(job_id)
    assert data is not None
    return job_status(data)


async def stays(engine: JobEngine, job_id: int, wanted: str, seconds: float = 0.3) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert status(engine, job_id) == wanted
        await asyncio.sleep(0.01)


async def until_status(engine: JobEngine, job_id: int, wanted: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while status(engine, job_id) != wanted:
        assert time.monotonic() < deadline, f"job {job_id} is {status(engine, job_id)}, not {wanted}"
        await asyncio.sleep(0.005)


def on_disk(paths: Paths, job_id: int) -> dict[str, Any]:
    return json.loads(Path(paths.queue_dir, f"job-{job_id}").read_text())


def test_reject_rule_cancels_a_new_matching_job_on_disk(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            await engine.replace_filter(None, 0, DELAY_ONLY, "REJECT", [])
            job_id = await engine.submit([delay_op()])
            await engine.wait_idle()
            data = on_disk(paths, job_id)
            assert job_status(data) == "canceled"
            assert [op["status"] for op in data["ops"]] == ["canceled"]
            assert data["end_timestamp"] is not None
    run(body)


def test_reject_rule_leaves_other_opcodes_alone(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            await engine.replace_filter(None, 0, DELAY_ONLY, "REJECT", [])
            job_id = await engine.submit([{"OP_ID": "OP_TAGS_GET", "kind": "cluster"}])
            await engine.wait_idle()
            assert status(engine, job_id) == "success"
    run(body)


def test_pause_rule_keeps_the_job_queued_until_it_is_deleted(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            uuid = await engine.replace_filter(None, 0, [], "PAUSE", [])
            job_id = await engine.submit([delay_op()])
            await stays(engine, job_id, "queued")
            await engine.delete_filter(uuid)
            await until_status(engine, job_id, "success")
    run(body)


def test_replacing_a_pause_by_a_reject_cancels_the_queued_job(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            uuid = await engine.replace_filter(None, 0, [], "PAUSE", [])
            job_id = await engine.submit([delay_op()])
            await stays(engine, job_id, "queued", 0.1)
            assert await engine.replace_filter(uuid, 0, [], "REJECT", []) == uuid
            await until_status(engine, job_id, "canceled")
            assert len(engine.filter_rules()) == 1
    run(body)


def test_accept_with_a_better_priority_overrides_a_pause(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            await engine.replace_filter(None, 1, [], "PAUSE", [])
            await engine.replace_filter(None, 0, DELAY_ONLY, "ACCEPT", [])
            job_id = await engine.submit([delay_op()])
            await until_status(engine, job_id, "success")
    run(body)


def test_pause_with_a_better_priority_overrides_an_accept(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            await engine.replace_filter(None, 0, [], "PAUSE", [])
            await engine.replace_filter(None, 1, DELAY_ONLY, "ACCEPT", [])
            job_id = await engine.submit([delay_op()])
            await stays(engine, job_id, "queued")
    run(body)


def test_continue_rule_lets_the_next_rule_decide(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            await engine.replace_filter(None, 0, [], "CONTINUE", [])
            await engine.replace_filter(None, 1, [], "REJECT", [])
            job_id = await engine.submit([delay_op()])
            await until_status(engine, job_id, "canceled")
    run(body)


def test_watermark_rule_rejects_only_jobs_submitted_after_it(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            pause = await engine.replace_filter(None, 5, [], "PAUSE", [])
            before = await engine.submit([delay_op()])
            await engine.replace_filter(None, 0, [["jobid", [">", "id", "watermark"]]], "REJECT", [])
            assert engine.filter_rules()[0].watermark == before
            after = await engine.submit([delay_op()])
            await until_status(engine, after, "canceled")
            assert status(engine, before) == "queued"
            await engine.delete_filter(pause)
            await until_status(engine, before, "success")
    run(body)


def test_rate_limit_runs_matching_jobs_one_at_a_time(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            await engine.replace_filter(None, 0, DELAY_ONLY, ["RATE_LIMIT", 1], [])
            ids = [await engine.submit([delay_op(0.05)]) for _ in range(3)]
            await engine.wait_idle()
            spans = [(on_disk(paths, i)["start_timestamp"], on_disk(paths, i)["end_timestamp"]) for i in ids]
            assert all(job_status(on_disk(paths, i)) == "success" for i in ids)
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert tuple(start) >= tuple(end)
    run(body)


def test_rules_survive_a_restart_and_still_apply(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def first() -> str:
        async with engine_on(paths) as engine:
            return await engine.replace_filter(None, 0, [], "PAUSE", [["user", "maint", 1]])

    async def second(uuid: str) -> None:
        async with engine_on(paths) as engine:
            assert [r.uuid for r in engine.filter_rules()] == [uuid]
            job_id = await engine.submit([delay_op()])
            await stays(engine, job_id, "queued")
    uuid = run(first)
    run(lambda: second(uuid))


def test_replace_filter_appends_luxids_reason_and_takes_the_serial_as_watermark(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            last = await engine.submit([delay_op()])
            await engine.replace_filter(U1, 2, [], "ACCEPT", [["gnt:user", "why", 5]])
            stored = engine.filter_rules()[0]
            assert stored.watermark == last and stored.priority == 2
            assert stored.reason_trail[0] == ["gnt:user", "why", 5]
            source, text, ns = stored.reason_trail[1]
            assert (source, text) == ("luxid", "") and abs(ns - time.time_ns()) < 60 * 10**9
    run(body)


def test_replace_filter_refuses_a_uuid_that_is_not_one(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            with pytest.raises(GenericError, match="Unable to parse UUID"):
                await engine.replace_filter("not-a-uuid", 0, [], "ACCEPT", [])
    run(body)


def test_replace_filter_refuses_malformed_predicates(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            with pytest.raises(RequestParseError, match="predicate"):
                await engine.replace_filter(None, 0, [["opcode"]], "ACCEPT", [])
            assert engine.filter_rules() == []
    run(body)


def test_delete_filter_of_an_unknown_uuid_fails_as_luxid(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            with pytest.raises(GenericError, match=f"Filter rule with UUID {U1} does not exist"):
                await engine.delete_filter(U1)
    run(body)


# -- LUXI handler ------------------------------------------------------------------------------

def test_query_filters_returns_classic_rows_and_query_filter_the_fields(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            handler = LuxiHandler(engine, paths)
            await handler.replace_filter(U2, 1, DELAY_ONLY, "REJECT", [])
            await handler.replace_filter(U1, 0, [], ["RATE_LIMIT", 3], [])
            rows = await handler.query_filters(None, ["uuid", "priority", "action"])
            assert rows == [[U1, 0, ["RATE_LIMIT", 3]], [U2, 1, "REJECT"]]
            assert await handler.query_filters([U2], ["predicates"]) == [[DELAY_ONLY]]
            answer = await handler.query("filter", ["uuid", "watermark"], ["==", "uuid", U1])
            assert answer["data"] == [[[0, U1], [0, 0]]]
            assert answer["fields"][1]["title"] == "Watermark"
    run(body)


def test_query_filter_of_an_unknown_uuid_is_an_unknown_entity(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)

    async def body() -> None:
        async with engine_on(paths) as engine:
            handler = LuxiHandler(engine, paths)
            with pytest.raises(GanetiError) as caught:
                await handler.query_filters([U3], ["uuid"])
            wanted = ["OpPrereqError", [f"Filter uuid {U3} not found", "unknown_entity"]]
            assert caught.value.encode() == wanted
    run(body)


# -- Debian's real gnt-filter against our ganeti-masterd ---------------------------------------

@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Master]:
    m = make_master(tmp_path_factory.mktemp("filters"))
    m.start()
    try:
        yield m
    finally:
        m.stop()


def add_rule(m: Master, *args: str) -> str:
    done = m.gnt("filter", "add", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    uuid = done.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", uuid), done.stdout
    return uuid


def test_real_reject_rule_makes_gnt_debug_delay_fail_until_deleted(real: Master) -> None:
    uuid = add_rule(real, '--predicates=[["opcode", ["=", "OP_ID", "OP_TEST_DELAY"]]]', "--action=REJECT")
    try:
        refused = real.gnt("debug", "delay", "0.1")
        assert refused.returncode != 0
        assert refused.stderr.strip() == "Unhandled Ganeti error: Job was canceled", refused.stderr
    finally:
        deleted = real.gnt("filter", "delete", uuid)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    again = real.gnt("debug", "delay", "0.1")
    assert again.returncode == 0, again.stdout + again.stderr


def test_real_pause_rule_keeps_a_submitted_job_queued_until_deleted(real: Master) -> None:
    uuid = add_rule(real, "--action=PAUSE")
    try:
        job_id = submit_id(real.gnt("debug", "delay", "--submit", "0.1"))
        time.sleep(0.5)
        wait_status(real, job_id, "queued")
    finally:
        deleted = real.gnt("filter", "delete", uuid)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    wait_status(real, job_id, "success")


def test_real_gnt_filter_list_info_and_replace(real: Master) -> None:
    uuid = add_rule(real, "--priority=7", '--predicates=[["jobid", [">", "id", "watermark"]]]',
                    "--action=CONTINUE")
    try:
        listed = real.gnt("filter", "list", "--no-headers", "-o", "uuid,priority,action")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert listed.stdout.split() == [uuid, "7", "CONTINUE"]
        replaced = real.gnt("filter", "replace", "--priority=3", "--action=RATE_LIMIT 2", uuid)
        assert (replaced.returncode, replaced.stdout.strip()) == (0, uuid), replaced.stderr
        info = real.gnt("filter", "info", uuid)
        assert info.returncode == 0, info.stdout + info.stderr
        lines = info.stdout.splitlines()
        assert lines[0] == f"UUID: {uuid}"
        assert lines[2] == "  Priority: 3"
        assert lines[4] == "  Action: ['RATE_LIMIT', 2]"
        assert lines[5].startswith("  Reason trail: [['luxid', '', ")
    finally:
        real.gnt("filter", "delete", uuid)
    gone = real.gnt("filter", "list", "--no-headers")
    assert (gone.returncode, gone.stdout) == (0, "")


def test_real_gnt_filter_delete_of_an_unknown_uuid_fails(real: Master) -> None:
    done = real.gnt("filter", "delete", U3)
    assert done.returncode != 0
    assert f"Filter rule with UUID {U3} does not exist" in done.stdout + done.stderr
