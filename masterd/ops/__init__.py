"""Opcode implementations run by the job engine (see masterd.ops.base for the interface).

`REGISTRY` maps an OP_ID to its `Operation` subclass. Opcodes that are valid
(masterd.opcodes knows all 75 of Ganeti 3.0) but not implemented here fail
when they run with ``OpExecError("Opcode OP_X is not implemented by this
master yet")``; they are accepted at submission, as Ganeti accepts any valid
opcode.
"""

from __future__ import annotations

from masterd.ops.base import OpContext, Operation
from masterd.ops.cluster import ClusterQuery
from masterd.ops.cluster_verify import (
    ClusterVerify,
    ClusterVerifyConfig,
    ClusterVerifyDisks,
    ClusterVerifyGroup,
    GroupVerifyDisks,
)
from masterd.ops.instance_create import InstanceCreate, InstanceRemove
from masterd.ops.instance_life import LIFE_OPERATIONS
from masterd.ops.instance_modify import OPERATIONS as INSTANCE_MODIFY_OPS
from masterd.ops.instance_move import InstanceFailover, InstanceMigrate, NodeMigrate
from masterd.ops.node_add import NodeAdd, NodeRemove
from masterd.ops.node_set_params import NodeSetParams
from masterd.ops.redist_conf import ClusterRedistConf
from masterd.ops.tags import TagsDel, TagsGet, TagsSet
from masterd.ops.test_delay import TestDelay

REGISTRY: dict[str, type[Operation]] = {
    cls.op_id: cls for cls in (TestDelay, ClusterQuery, ClusterRedistConf, TagsGet, TagsSet, TagsDel)
}

REGISTRY[NodeSetParams.op_id] = NodeSetParams
REGISTRY.update({NodeAdd.op_id: NodeAdd, NodeRemove.op_id: NodeRemove})
REGISTRY.update({cls.op_id: cls for cls in (ClusterVerify, ClusterVerifyConfig, ClusterVerifyGroup)})
REGISTRY.update({cls.op_id: cls for cls in (ClusterVerifyDisks, GroupVerifyDisks)})
REGISTRY.update({cls.op_id: cls for cls in (InstanceCreate, InstanceRemove)})
REGISTRY.update({cls.op_id: cls for cls in INSTANCE_MODIFY_OPS})
REGISTRY.update({cls.op_id: cls for cls in (InstanceFailover, InstanceMigrate, NodeMigrate)})
REGISTRY.update({cls.op_id: cls for cls in LIFE_OPERATIONS})

__all__ = ["REGISTRY", "OpContext", "Operation"]
