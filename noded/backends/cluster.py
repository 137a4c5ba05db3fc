"""Cluster-level procedures: protocol version, master name, test delay, watcher pause."""

from __future__ import annotations

import asyncio
import math
import time

from noded.backends import ssconf_store
from noded.backends.fileio import remove_file, write_file_atomic
from noded.context import PROTOCOL_VERSION, NodeContext
from noded.errors import RpcFail
from noded.registry import procedure

#: A watcher pause file older than this many seconds past its end is removed
#: when read (utils.ReadWatcherPauseFile's remove_after).
WATCHER_PAUSE_STALE_AFTER = 3600


def _finite_number(value: object) -> int | float | None:
    """`value` if it is a finite JSON number (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


@procedure("version", blocking=False)
def version(ctx: NodeContext) -> int:
    """The RPC protocol version; a 3.0 master requires exactly 3000000."""
    return PROTOCOL_VERSION


@procedure("master_node_name")
def master_node_name(ctx: NodeContext) -> str:
    """The master node's name, from ssconf_master_node."""
    return ssconf_store.read_value(ctx.paths, "master_node")


@procedure("test_delay", blocking=False)
async def test_delay(ctx: NodeContext, duration: object) -> None:
    """Sleep `duration` seconds without holding up other requests."""
    seconds = _finite_number(duration)
    if seconds is None:
        raise RpcFail(f"Invalid sleep duration {duration!r}: expected a number of seconds")
    if seconds < 0:
        raise RpcFail("Invalid sleep duration")
    await asyncio.sleep(seconds)


@procedure("get_watcher_pause")
def get_watcher_pause(ctx: NodeContext) -> int | None:
    """Until when (epoch seconds) the watcher is paused, or None.

    Like Ganeti, a file with an invalid value, or whose pause ended more
    than an hour ago, is removed; a pause that has ended reads as None.
    """
    path = ctx.paths.watcher_pause_file
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise RpcFail(f"Cannot read the watcher pause file {path}: {err.strerror}") from err
    try:
        until = int(text)
    except ValueError:
        remove_file(path)
        return None
    now = time.time()
    if now > until + WATCHER_PAUSE_STALE_AFTER:
        remove_file(path)
        return None
    if now > until:
        return None
    return until


@procedure("set_watcher_pause")
def set_watcher_pause(ctx: NodeContext, until: object) -> None:
    """Pause the watcher until `until` (epoch seconds), or end the pause (None)."""
    path = ctx.paths.watcher_pause_file
    if until is None:
        remove_file(path)
        return
    end = _finite_number(until)
    if end is None:
        raise RpcFail("Duration must be numeric")
    write_file_atomic(path, b"%d\n" % int(end), mode=0o644)
