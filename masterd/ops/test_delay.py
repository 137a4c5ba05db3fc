"""OP_TEST_DELAY: sleep on the master and/or on nodes (Ganeti's LUTestDelay).

Semantics, from cmdlib/test.py of Ganeti 3.0.2:

* ``duration <= 0`` fails with OpPrereqError "Duration must be greater than zero".
* Node locks (exclusive, level NODE) on ``on_nodes`` plus the master when
  ``on_master``. Deviation: Ganeti 3.0.2 overwrites its own `no_locks` test
  and always locks; here ``no_locks=true`` takes no node lock, as the
  parameter documents ("Don't acquire locks"). The CLI sends false, so
  `gnt-debug delay` jobs on one node run one after the other, as in Ganeti.
* Unknown node names fail with OpPrereqError "Node 'x' not known"
  (unknown_entity); the known nodes are ssconf_node_list (this host when
  there is none).
* The master's share is an `asyncio.sleep` in this process (Ganeti calls the
  master's own node daemon); the nodes' ``test_delay`` runs through their
  gRPC door, all in parallel with the master's sleep. A node failure is
  OpExecError "Failure during rpc call to node X: <error>".
* ``repeat`` N > 0: N iterations, each logged " - INFO: Test delay iteration i/N-1".
* ``interruptible``: on the master only (as in Ganeti): a Unix socket in a
  fresh temporary directory, announced by a ``delay-test`` log entry
  ``[path]``; a client connecting and then sending a byte (or closing) ends
  the delay early and stops the repetitions.
* The result is null.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from typing import Any, ClassVar

from masterd import ssconf
from masterd.jqueue.model import ELOG_DELAY_TEST
from masterd.locking import Level
from masterd.luxi.protocol import OpExecError, OpPrereqError
from masterd.ops.base import LockRequest, Operation


class TestDelay(Operation):
    op_id: ClassVar[str] = "OP_TEST_DELAY"
    req_bgl: ClassVar[bool] = False
    __test__ = False  # not a pytest class

    def _master(self) -> str:
        return ssconf.master_node(self.ctx.paths) or self.ctx.paths.hostname

    def locks(self) -> list[LockRequest]:
        duration = self.op.get("duration")
        if not isinstance(duration, int | float) or duration <= 0:
            raise OpPrereqError("Duration must be greater than zero")
        known = set(ssconf.known_nodes(self.ctx.paths)) | {self._master()}
        nodes: list[str] = []
        for name in self.op.get("on_nodes") or []:
            if name not in known:
                raise OpPrereqError(f"Node '{name}' not known", "unknown_entity")
            if name not in nodes:
                nodes.append(name)
        self.remote = nodes
        wanted = set(nodes)
        if self.op.get("on_master"):
            wanted.add(self._master())
        if self.op.get("no_locks") or not wanted:
            return []
        return [(Level.NODE, sorted(wanted), False)]

    async def exec(self) -> Any:
        repeat = int(self.op.get("repeat") or 0)
        if repeat == 0:
            await self._delay()
            return None
        for index in range(repeat):
            await self.ctx.log_info("Test delay iteration %d/%d", index, repeat - 1)
            if await self._delay():
                break
        return None

    async def _delay(self) -> bool:
        """One delay; whether it was interrupted."""
        duration = float(self.op["duration"])
        if self.op.get("interruptible"):
            return await self._interruptible(duration)
        remote = list(getattr(self, "remote", []))
        work = []
        if not remote or (self.op.get("on_master") and self._master() not in remote):
            work.append(asyncio.sleep(duration))
        if remote:
            work.append(self._on_nodes(remote, duration))
        await asyncio.gather(*work)
        return False

    async def _on_nodes(self, nodes: list[str], duration: float) -> None:
        if self.ctx.node_rpc is None:
            raise OpExecError("Failure during rpc call: this master has no node RPC client")
        results = await self.ctx.node_rpc.test_delay(nodes, duration)
        for node in nodes:
            error = results.get(node)
            if error is not None:
                raise OpExecError(f"Failure during rpc call to node {node}: {error}")

    async def _interruptible(self, duration: float) -> bool:
        tmpdir = tempfile.mkdtemp(prefix="ganeti-delay-")
        path = os.path.join(tmpdir, "sock")
        connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future())

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if not connected.done():
                connected.set_result((reader, writer))
            else:
                writer.close()

        server = await asyncio.start_unix_server(on_connect, path=path)
        start = time.monotonic()
        try:
            await self.ctx.log([path], ELOG_DELAY_TEST)
            try:
                reader, writer = await asyncio.wait_for(connected, duration)
            except TimeoutError:
                return False
        finally:
            server.close()
            shutil.rmtree(tmpdir, ignore_errors=True)
        try:
            left = max(0.0, duration - (time.monotonic() - start))
            await self.ctx.log(f"Received connection, time to go is {int(left)}")
            try:
                await asyncio.wait_for(reader.read(1), left)
            except TimeoutError:
                return False
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        await self.ctx.log(f"Interrupted, time spent waiting: {int(time.monotonic() - start)}")
        return True
