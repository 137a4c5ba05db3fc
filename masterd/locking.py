"""The master's lock manager: Ganeti's lock levels, shared/exclusive modes, priorities, asyncio.

Levels, acquired strictly in this order (Ganeti's locking.LEVELS)::

    CLUSTER (the Big Ganeti Lock, one lock named "BGL"), NODEGROUP, INSTANCE,
    NODE_ALLOC (one lock named "NAL"), NODE, NODE_RES, NETWORK

Deadlock avoidance is Ganeti's ordering rule: an owner acquires levels in
increasing order, and within a level all the names it wants at once (sorted),
so no owner ever waits for a lock while holding a lock of a higher or the same
level; a request that breaks the rule raises `LockOrderError` instead of
waiting. Within a level a request is granted atomically (all its names or none),
which is equivalent to acquiring them one by one in sorted order, without the
partial holdings.

Modes: shared requests are compatible with each other; an exclusive request is
compatible with nothing that overlaps it. `ALL_SET` asks for every lock of the
level (Ganeti's `locking.ALL_SET`), present and future: it overlaps every other
request of that level, so "all nodes, exclusive" excludes any node lock.

Fairness and priorities: the waiters of a level are ordered by (priority,
arrival); lower numbers are more important, as in Ganeti (-20 .. 19). A waiter
is granted only when it is compatible with every holder *and* with every
waiter ahead of it, so an exclusive request is never starved by a stream of
shared ones, while requests that do not conflict with anything ahead pass at
once. Changing an owner's priority (`set_priority`) re-sorts its waits.

Cancellation: a waiting `acquire` is an ordinary awaitable; cancelling the
task (or an `asyncio.wait_for` timeout) withdraws the request and lets the
waiters behind it go, with nothing acquired.

Interface::

    manager = LockManager()
    await manager.acquire(owner, Level.NODE, ["node1", "node2"], shared=False, priority=0)
    manager.try_acquire(owner, level, names, shared) -> bool     # no waiting
    manager.release(owner, level=None)                            # one level, or everything
    manager.owned(owner) -> {Level: Holding}
    manager.set_priority(owner, priority)
    manager.is_waiting(owner) -> bool
    manager.snapshot() -> list of (level name, owner, names, mode, "held"|"waiting") for debugging
    async with manager.locked(owner, [(level, names, shared), ...], priority): ...  # all, in order

All methods must be called from the event loop's thread; nothing blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
from collections.abc import AsyncIterator, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final


class Level(enum.IntEnum):
    """Ganeti's lock levels, in acquisition order."""

    CLUSTER = 0
    NODEGROUP = 1
    INSTANCE = 2
    NODE_ALLOC = 3
    NODE = 4
    NODE_RES = 5
    NETWORK = 6


#: Ganeti's names of the levels (locking.LEVEL_NAMES).
LEVEL_NAMES: Final = {
    Level.CLUSTER: "cluster", Level.NODEGROUP: "nodegroup", Level.INSTANCE: "instance",
    Level.NODE_ALLOC: "node-alloc", Level.NODE: "node", Level.NODE_RES: "node-res",
    Level.NETWORK: "network",
}
#: The single lock of the cluster level and of the node-allocation level.
BGL: Final = "BGL"
NAL: Final = "NAL"


class _AllSet:
    """Every lock of a level (Ganeti's locking.ALL_SET)."""

    _instance: _AllSet | None = None

    def __new__(cls) -> _AllSet:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ALL_SET"


ALL_SET: Final = _AllSet()
Names = frozenset[str] | _AllSet


class LockError(Exception):
    """A lock request that cannot be honoured (a programming error of the caller)."""


class LockOrderError(LockError):
    """The request would break the level order (Ganeti's deadlock-avoidance rule)."""


def _normalize(names: Iterable[str] | _AllSet) -> Names:
    if isinstance(names, _AllSet):
        return names
    if isinstance(names, str):
        raise LockError(f"lock names must be a list of names or ALL_SET, not the string {names!r}")
    return frozenset(names)


def _overlap(a: Names, b: Names) -> bool:
    if isinstance(a, _AllSet) or isinstance(b, _AllSet):
        return True
    return not a.isdisjoint(b)


def _describe(names: Names) -> list[str] | str:
    return "ALL" if isinstance(names, _AllSet) else sorted(names)


@dataclass
class Holding:
    """What one owner holds (or asks for) at one level."""

    names: Names
    shared: bool

    def conflicts_with(self, other: Holding) -> bool:
        if self.shared and other.shared:
            return False
        return _overlap(self.names, other.names)


@dataclass
class _Waiter:
    owner: Hashable
    request: Holding
    priority: int
    seq: int
    future: asyncio.Future[None] = field(repr=False)

    @property
    def key(self) -> tuple[int, int]:
        return self.priority, self.seq


class _LevelState:
    def __init__(self) -> None:
        self.holders: dict[Hashable, Holding] = {}
        self.waiters: list[_Waiter] = []

    def compatible(self, owner: Hashable, request: Holding, ahead: Sequence[_Waiter]) -> bool:
        for other, held in self.holders.items():
            if other != owner and request.conflicts_with(held):
                return False
        return all(w.owner == owner or not request.conflicts_with(w.request) for w in ahead)


class LockManager:
    """Locks of every level; see the module docstring."""

    def __init__(self) -> None:
        self._levels = {level: _LevelState() for level in Level}
        self._seq = itertools.count()
        self._priorities: dict[Hashable, int] = {}

    # -- queries ---------------------------------------------------------------
    def owned(self, owner: Hashable) -> dict[Level, Holding]:
        return {level: state.holders[owner] for level, state in self._levels.items()
                if owner in state.holders}

    def is_waiting(self, owner: Hashable) -> bool:
        return any(w.owner == owner for state in self._levels.values() for w in state.waiters)

    def snapshot(self) -> list[tuple[str, Hashable, list[str] | str, str, str]]:
        rows: list[tuple[str, Hashable, list[str] | str, str, str]] = []
        for level, state in self._levels.items():
            for owner, held in state.holders.items():
                rows.append((LEVEL_NAMES[level], owner, _describe(held.names),
                             "shared" if held.shared else "exclusive", "held"))
            for waiter in state.waiters:
                rows.append((LEVEL_NAMES[level], waiter.owner, _describe(waiter.request.names),
                             "shared" if waiter.request.shared else "exclusive", "waiting"))
        return rows

    # -- acquisition --------------------------------------------------------------
    def _check_order(self, owner: Hashable, level: Level) -> None:
        higher = [LEVEL_NAMES[lv] for lv, state in self._levels.items()
                  if lv >= level and owner in state.holders]
        if higher:
            raise LockOrderError(
                f"{owner!r} asks for {LEVEL_NAMES[level]} locks while holding {', '.join(higher)} locks;"
                " locks must be acquired level by level in the order "
                + ", ".join(LEVEL_NAMES[lv] for lv in Level))
        if self.is_waiting(owner):
            raise LockOrderError(f"{owner!r} is already waiting for locks")

    def try_acquire(self, owner: Hashable, level: Level, names: Iterable[str] | _AllSet,
                    shared: bool = False) -> bool:
        """Acquire at once if nothing held or waiting ahead conflicts; False otherwise (nothing taken)."""
        level = Level(level)
        request = Holding(_normalize(names), shared)
        self._check_order(owner, level)
        if not isinstance(request.names, _AllSet) and not request.names:
            return True
        state = self._levels[level]
        if not state.compatible(owner, request, state.waiters):
            return False
        state.holders[owner] = request
        return True

    async def acquire(self, owner: Hashable, level: Level, names: Iterable[str] | _AllSet,
                      shared: bool = False, priority: int | None = None) -> None:
        """Wait until the locks are granted; cancel the awaiting task to withdraw the request."""
        level = Level(level)
        request = Holding(_normalize(names), shared)
        self._check_order(owner, level)
        if not isinstance(request.names, _AllSet) and not request.names:
            return  # nothing wanted at this level (Ganeti: needed_locks[level] = [])
        if priority is not None:
            self._priorities[owner] = priority
        prio = self._priorities.get(owner, 0)
        state = self._levels[level]
        ahead = [w for w in state.waiters if w.key < (prio, 1 << 62)]
        if state.compatible(owner, request, ahead):
            state.holders[owner] = request
            return
        waiter = _Waiter(owner, request, prio, next(self._seq), asyncio.get_running_loop().create_future())
        state.waiters.append(waiter)
        state.waiters.sort(key=lambda w: w.key)
        try:
            await waiter.future
        except BaseException:
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted just as we were cancelled: give the locks back.
                state.holders.pop(owner, None)
            with contextlib.suppress(ValueError):
                state.waiters.remove(waiter)
            self._grant(level)
            raise

    def _grant(self, level: Level) -> None:
        state = self._levels[level]
        granted = []
        for index, waiter in enumerate(state.waiters):
            if waiter.future.done():
                continue
            if state.compatible(waiter.owner, waiter.request, state.waiters[:index]):
                state.holders[waiter.owner] = waiter.request
                waiter.future.set_result(None)
                granted.append(waiter)
        for waiter in granted:
            state.waiters.remove(waiter)

    def release(self, owner: Hashable, level: Level | None = None) -> None:
        """Release the owner's locks of one level, or of every level (from the highest down)."""
        levels = [Level(level)] if level is not None else sorted(Level, reverse=True)
        for lv in levels:
            if self._levels[lv].holders.pop(owner, None) is not None:
                self._grant(lv)
        if level is None:
            self._priorities.pop(owner, None)

    def set_priority(self, owner: Hashable, priority: int) -> None:
        """Change the priority of the owner's current and future waits."""
        self._priorities[owner] = priority
        for level, state in self._levels.items():
            changed = False
            for waiter in state.waiters:
                if waiter.owner == owner and waiter.priority != priority:
                    waiter.priority = priority
                    changed = True
            if changed:
                state.waiters.sort(key=lambda w: w.key)
                self._grant(level)

    @contextlib.asynccontextmanager
    async def locked(self, owner: Hashable,
                     requests: Iterable[tuple[Level, Iterable[str] | _AllSet, bool]],
                     priority: int | None = None) -> AsyncIterator[None]:
        """Acquire every request in level order, release all on exit (also on error or cancel)."""
        ordered = sorted(requests, key=lambda r: Level(r[0]))
        levels = [Level(r[0]) for r in ordered]
        if len(set(levels)) != len(levels):
            raise LockError("one request per level")
        try:
            for level, names, shared in ordered:
                await self.acquire(owner, level, names, shared, priority)
            yield
        finally:
            self.release(owner)
