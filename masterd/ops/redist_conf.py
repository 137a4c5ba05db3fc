"""OP_CLUSTER_REDIST_CONF (`gnt-cluster redist-conf`): push the configuration to every online node.

As Ganeti's LUClusterRedistConf: the cluster object is "updated" (its
serial_no and mtime, and the configuration's serial, grow), which writes
config.data and distributes it; here the distribution is forced full:
config.data to every online master candidate and every ssconf value to every
online node, whatever they were sent before. Offline nodes are not
contacted. Node failures are reported in the job's log (Ganeti's warnings)
and do not fail the job. The opcode takes every node lock shared and the Big
Ganeti Lock shared (REQ_BGL false). Result: None.
"""

from __future__ import annotations

from typing import Any, ClassVar

from masterd.locking import ALL_SET, Level
from masterd.luxi.protocol import OpPrereqError
from masterd.ops.base import LockRequest, Operation


class ClusterRedistConf(Operation):
    op_id: ClassVar[str] = "OP_CLUSTER_REDIST_CONF"
    req_bgl: ClassVar[bool] = False

    def locks(self) -> list[LockRequest]:
        return [(Level.NODE_ALLOC, ALL_SET, True), (Level.NODE, ALL_SET, True)]

    async def exec(self) -> Any:
        config = self.ctx.config
        if config is None or not config.present:
            raise OpPrereqError("This master has no cluster configuration (config.data): there is"
                                " nothing to redistribute; initialise the cluster with gnt-cluster init",
                                "wrong_state")
        async with config.change(full=True) as cfg:
            cfg.touch_cluster()
        report = config.last_report
        if report is not None:
            for node, messages in sorted(report.failures.items()):
                await self.ctx.log(f"Warning: the configuration did not reach node {node}:"
                                   f" {'; '.join(messages)}")
        return None
