"""The master's lock manager: levels, modes, ALL_SET, order rule, priorities, fairness, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from masterd.locking import ALL_SET, BGL, Level, LockManager, LockOrderError


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), 5))  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_shared_locks_are_held_together() -> None:
    async def body() -> None:
        lm = LockManager()
        await lm.acquire("a", Level.CLUSTER, [BGL], shared=True)
        await lm.acquire("b", Level.CLUSTER, [BGL], shared=True)
        assert Level.CLUSTER in lm.owned("a") and Level.CLUSTER in lm.owned("b")
    run(body)


def test_exclusive_lock_waits_for_shared_holder() -> None:
    async def body() -> None:
        lm = LockManager()
        await lm.acquire("a", Level.NODE, ["n1"], shared=True)
        waiter = asyncio.create_task(lm.acquire("b", Level.NODE, ["n1"]))
        await settle()
        assert not waiter.done() and lm.is_waiting("b")
        lm.release("a")
        await asyncio.wait_for(waiter, 1)
        assert lm.owned("b")[Level.NODE].names == frozenset({"n1"})
    run(body)


def test_disjoint_exclusive_names_do_not_conflict() -> None:
    async def body() -> None:
        lm = LockManager()
        await lm.acquire("a", Level.NODE, ["n1"])
        await asyncio.wait_for(lm.acquire("b", Level.NODE, ["n2"]), 0.5)
    run(body)


def test_all_set_conflicts_with_any_name_of_the_level() -> None:
    async def body() -> None:
        lm = LockManager()
        await lm.acquire("a", Level.NODE, ["n7"])
        waiter = asyncio.create_task(lm.acquire("b", Level.NODE, ALL_SET, shared=True))
        await settle()
        assert not waiter.done()
        lm.release("a", Level.NODE)
        await asyncio.wait_for(waiter, 1)
        assert not lm.try_acquire("c", Level.NODE, ["n99"])
    run(body)


def test_acquiring_a_lower_level_after_a_higher_one_is_refused() -> None:
    async def body() -> None:
        lm = LockManager()
        await lm.acquire("a", Level.NODE, ["n1"])
        with pytest.raises(LockOrderError, match="level by level"):
            await lm.acquire("a", Level.INSTANCE, ["i1"])
    run(body)


def test_higher_priority_waiter_is_granted_first() -> None:
    async def body() -> None:
        lm = LockManager()
        order: list[str] = []
        await lm.acquire("holder", Level.NODE, ["n1"])

        async def want(owner: str, prio: int) -> None:
            await lm.acquire(owner, Level.NODE, ["n1"], priority=prio)
            order.append(owner)
            lm.release(owner)

        low = asyncio.create_task(want("low", 10))
        await settle()
        high = asyncio.create_task(want("high", -10))
        await settle()
        lm.release("holder")
        await asyncio.gather(low, high)
        assert order == ["high", "low"]
    run(body)


def test_shared_request_does_not_overtake_a_waiting_exclusive_one() -> None:
    async def body() -> None:
        lm = LockManager()
        await lm.acquire("reader1", Level.CLUSTER, [BGL], shared=True)
        writer = asyncio.create_task(lm.acquire("writer", Level.CLUSTER, [BGL]))
        await settle()
        reader2 = asyncio.create_task(lm.acquire("reader2", Level.CLUSTER, [BGL], shared=True))
        await settle()
        assert not writer.done() and not reader2.done()
        lm.release("reader1")
        await asyncio.wait_for(writer, 1)
        assert not reader2.done()
        lm.release("writer")
        await asyncio.wait_for(reader2, 1)
    run(body)


def test_cancelled_wait_withdraws_and_lets_the_next_waiter_in() -> None:
    async def body() -> None:
        lm = LockManager()
        await lm.acquire("holder", Level.NODE, ["n1"], shared=True)
        blocked = asyncio.create_task(lm.acquire("x", Level.NODE, ["n1"]))
        await settle()
        behind = asyncio.create_task(lm.acquire("y", Level.NODE, ["n1"], shared=True))
        await settle()
        assert not behind.done()  # fair: behind the exclusive waiter
        blocked.cancel()
        await asyncio.wait_for(behind, 1)
        assert not lm.owned("x") and not lm.is_waiting("x")
    run(body)


def test_timeout_leaves_nothing_acquired() -> None:
    async def body() -> None:
        lm = LockManager()
        await lm.acquire("holder", Level.INSTANCE, ["i1"])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(lm.acquire("x", Level.INSTANCE, ["i1"]), 0.05)
        assert lm.owned("x") == {} and not lm.is_waiting("x")
    run(body)


def test_changing_priority_reorders_waiters() -> None:
    async def body() -> None:
        lm = LockManager()
        order: list[str] = []
        await lm.acquire("holder", Level.NODE, ["n1"])

        async def want(owner: str) -> None:
            await lm.acquire(owner, Level.NODE, ["n1"], priority=0)
            order.append(owner)
            lm.release(owner)

        first = asyncio.create_task(want("first"))
        await settle()
        second = asyncio.create_task(want("second"))
        await settle()
        lm.set_priority("second", -20)
        lm.release("holder")
        await asyncio.gather(first, second)
        assert order == ["second", "first"]
    run(body)


def test_locked_context_takes_levels_in_order_and_releases_all() -> None:
    async def body() -> None:
        lm = LockManager()
        async with lm.locked("j", [(Level.NODE, ["b", "a"], False), (Level.CLUSTER, [BGL], True)]):
            owned = lm.owned("j")
            assert set(owned) == {Level.CLUSTER, Level.NODE}
            assert owned[Level.NODE].names == frozenset({"a", "b"})
        assert lm.owned("j") == {}
    run(body)


def test_ordered_acquisition_of_crossing_requests_does_not_deadlock() -> None:
    async def body() -> None:
        lm = LockManager()

        async def job(owner: str, nodes: list[str]) -> None:
            async with lm.locked(owner, [(Level.CLUSTER, [BGL], True), (Level.NODE, nodes, False)]):
                await asyncio.sleep(0.001)

        await asyncio.wait_for(asyncio.gather(*(
            job(f"j{i}", ["n1", "n2"] if i % 2 else ["n2", "n1"]) for i in range(20))), 3)
    run(body)
