"""Cluster procedures: version, master_node_name, test_delay, watcher pause."""

from __future__ import annotations

import asyncio
import inspect
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from noded.backends import cluster
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths
from noded.registry import Procedure


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    paths.ensure_dirs()
    return NodeContext(paths=paths)


def _registered(func: Any) -> Procedure:
    proc = func.__ganeti_procedure__
    assert isinstance(proc, Procedure)
    return proc


def test_version_is_the_3_0_protocol_number(ctx: NodeContext) -> None:
    assert cluster.version(ctx) == 3000000
    assert _registered(cluster.version).blocking is False


def test_master_node_name_reads_ssconf_master_node(ctx: NodeContext) -> None:
    Path(ctx.paths.ssconf_file("master_node")).write_text("node1.example.com\n")
    assert cluster.master_node_name(ctx) == "node1.example.com"


def test_master_node_name_without_ssconf_fails_like_ganeti(ctx: NodeContext) -> None:
    path = ctx.paths.ssconf_file("master_node")
    with pytest.raises(RpcFail) as err:
        cluster.master_node_name(ctx)
    assert err.value.message == (
        f"Cluster configuration incomplete: Can't read ssconf file {path}: "
        f"[Errno 2] No such file or directory: '{path}'")


def test_test_delay_is_a_non_blocking_coroutine(ctx: NodeContext) -> None:
    assert inspect.iscoroutinefunction(cluster.test_delay)
    assert _registered(cluster.test_delay).blocking is False


def test_test_delay_sleeps_for_the_duration(ctx: NodeContext) -> None:
    start = time.monotonic()
    assert asyncio.run(cluster.test_delay(ctx, 0.2)) is None
    assert time.monotonic() - start >= 0.2


def test_test_delay_does_not_hold_up_the_event_loop(ctx: NodeContext) -> None:
    async def three_delays() -> None:
        await asyncio.gather(*(cluster.test_delay(ctx, 0.3) for _ in range(3)))

    start = time.monotonic()
    asyncio.run(three_delays())
    assert time.monotonic() - start < 0.8


def test_test_delay_refuses_a_negative_duration(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=r"^Invalid sleep duration$"):
        asyncio.run(cluster.test_delay(ctx, -1))


def test_test_delay_refuses_a_non_number(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="Invalid sleep duration"):
        asyncio.run(cluster.test_delay(ctx, "1"))


def test_set_watcher_pause_writes_the_epoch_as_an_integer_line(ctx: NodeContext) -> None:
    until = time.time() + 60.7
    assert cluster.set_watcher_pause(ctx, until) is None
    path = ctx.paths.watcher_pause_file
    assert Path(path).read_text() == f"{int(until)}\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_get_watcher_pause_returns_the_pause_end(ctx: NodeContext) -> None:
    until = int(time.time()) + 60
    cluster.set_watcher_pause(ctx, until)
    assert cluster.get_watcher_pause(ctx) == until


def test_set_watcher_pause_none_removes_the_file(ctx: NodeContext) -> None:
    cluster.set_watcher_pause(ctx, time.time() + 60)
    cluster.set_watcher_pause(ctx, None)
    assert not os.path.exists(ctx.paths.watcher_pause_file)
    assert cluster.get_watcher_pause(ctx) is None


def test_set_watcher_pause_refuses_a_non_number(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=r"^Duration must be numeric$"):
        cluster.set_watcher_pause(ctx, "tomorrow")
    assert not os.path.exists(ctx.paths.watcher_pause_file)


def test_get_watcher_pause_is_none_without_file(ctx: NodeContext) -> None:
    assert cluster.get_watcher_pause(ctx) is None


def test_get_watcher_pause_is_none_after_the_end_but_keeps_a_recent_file(ctx: NodeContext) -> None:
    Path(ctx.paths.watcher_pause_file).write_text(f"{int(time.time()) - 60}\n")
    assert cluster.get_watcher_pause(ctx) is None
    assert os.path.exists(ctx.paths.watcher_pause_file)


def test_get_watcher_pause_removes_a_file_ended_over_an_hour_ago(ctx: NodeContext) -> None:
    Path(ctx.paths.watcher_pause_file).write_text(f"{int(time.time()) - 3700}\n")
    assert cluster.get_watcher_pause(ctx) is None
    assert not os.path.exists(ctx.paths.watcher_pause_file)


def test_get_watcher_pause_removes_an_invalid_file(ctx: NodeContext) -> None:
    Path(ctx.paths.watcher_pause_file).write_text("soon\n")
    assert cluster.get_watcher_pause(ctx) is None
    assert not os.path.exists(ctx.paths.watcher_pause_file)
