"""OP_NODE_SET_PARAMS (`gnt-node modify`): a node's role flags and capabilities.

Supported parameters: master_candidate, drained, offline, master_capable,
vm_capable, auto_promote (and force, accepted). The rules are Ganeti's
LUNodeSetParams, in masterd.config.roles (plan_node_change refuses with
Ganeti's messages; apply_node_change changes the configuration). secondary_ip,
ndparams, hv_state, disk_state and powered are refused (OpPrereqError,
"wrong_input") until this master supports them.

Locks: the node, exclusive (every node when auto_promote may promote others);
REQ_BGL false. Steps, in order, before anything changes:

- a node leaving offline must answer `version` (else OpPrereqError
  "Node X is being de-offlined but fails to report its version: ...");
- each new master candidate (the node, auto-promoted nodes) is asked its
  client certificate digest with node_crypto_tokens (else OpExecError
  "Could not retrieve the node's (uuid U) SSL digest.: ...").

Then the configuration is changed (ConfigManager.change: written, config.data
sent to the online candidates and ssconf, with master_candidates_certs, to
every online node) and a node that stopped being a candidate without going
offline is told node_demote_from_mc (a failure is a warning, as in Ganeti).

Result: Ganeti's list of ``[parameter, str(new value)]``, e.g.
``[["master_candidate", "False"]]``, which gnt-node prints as
"Modified node X" and " - master_candidate -> False".
"""

from __future__ import annotations

from typing import Any, ClassVar

from masterd.config.model import ConfigData, ConfigError
from masterd.config.roles import FlagRequest, RoleChange, RoleError, apply_node_change, plan_node_change
from masterd.confmgr import ConfigManager
from masterd.locking import ALL_SET, Level
from masterd.luxi.protocol import OpExecError, OpPrereqError
from masterd.ops.base import LockRequest, Operation
from masterd.rpc import NodeRpcClient

#: Ganeti's PROTOCOL_VERSION for 3.0.
PROTOCOL_VERSION = 3000000
#: Parameters this master does not change yet.
_UNSUPPORTED = ("secondary_ip", "ndparams", "hv_state", "disk_state", "powered")


class NodeSetParams(Operation):
    op_id: ClassVar[str] = "OP_NODE_SET_PARAMS"
    req_bgl: ClassVar[bool] = False

    def _config(self) -> ConfigManager:
        config = self.ctx.config
        if config is None or not config.present:
            raise OpPrereqError("This master has no cluster configuration (config.data): nodes cannot be"
                                " modified; initialise the cluster with gnt-cluster init", "wrong_state")
        return config

    def _rpc(self) -> NodeRpcClient:
        if self.ctx.node_rpc is None:
            raise OpExecError("This master has no node RPC client")
        return self.ctx.node_rpc

    def _node_name(self, cfg: ConfigData) -> str:
        wanted = self.op.get("node_uuid") or self.op.get("node_name")
        if not wanted:
            raise OpPrereqError("Node name or uuid must be given", "wrong_input")
        try:
            return cfg.lookup_node(str(wanted)).name
        except ConfigError:
            raise OpPrereqError(f"Node '{wanted}' not known", "unknown_entity") from None

    def _request(self) -> FlagRequest:
        for name in _UNSUPPORTED:
            if self.op.get(name) not in (None, {}):
                raise OpPrereqError(f"Changing {name} of a node is not supported by this master yet",
                                    "wrong_input")
        return FlagRequest(master_candidate=self.op.get("master_candidate"), drained=self.op.get("drained"),
                           offline=self.op.get("offline"), master_capable=self.op.get("master_capable"),
                           vm_capable=self.op.get("vm_capable"),
                           auto_promote=bool(self.op.get("auto_promote")))

    def locks(self) -> list[LockRequest]:
        name = self._node_name(self._config().current)
        request = self._request()
        might_demote = (request.master_candidate is False or request.offline is True
                        or request.drained is True or request.master_capable is False)
        if request.auto_promote and might_demote:
            return [(Level.NODE, ALL_SET, False), (Level.NODE_RES, ALL_SET, False)]
        return [(Level.NODE, [name], False), (Level.NODE_RES, [name], False)]

    async def exec(self) -> Any:
        config = self._config()
        current = config.current
        node = current.node_by_name(self._node_name(current))
        try:
            change = plan_node_change(current, node.uuid, self._request())
        except RoleError as err:
            raise OpPrereqError(str(err), err.code) from None
        if change.version_check:
            await self._check_version(node.name)
        for message in change.warnings:
            await self.ctx.log(f" - WARNING: {message}")
        for message in change.info:
            await self.ctx.log_info(message)
        digests = await self._digests(current, change)
        async with config.change() as cfg:
            try:
                apply_node_change(cfg, change, digests)
            except ConfigError as err:
                raise OpExecError(str(err)) from None
        if change.demote_rpc:
            failure = (await self._rpc().node_demote_from_mc([node.name]))[node.name]
            if failure is not None:
                await self.ctx.log(f" - WARNING: Node failed to demote itself: {failure}")
        report = config.last_report
        if report is not None:
            for name, messages in sorted(report.failures.items()):
                await self.ctx.log(f" - WARNING: the configuration did not reach node {name}:"
                                   f" {'; '.join(messages)}")
        return [[param, value] for param, value in change.result]

    async def _check_version(self, name: str) -> None:
        version, failure = (await self._rpc().version([name]))[name]
        if failure is not None:
            raise OpPrereqError(f"Node {name} is being de-offlined but fails to report its version:"
                                f" {failure}", "wrong_state")
        if version != PROTOCOL_VERSION:
            raise OpPrereqError(f"Version mismatch master version {PROTOCOL_VERSION}, node version {version}",
                                "environment_error")

    async def _digests(self, cfg: ConfigData, change: RoleChange) -> dict[str, str]:
        if not change.cert_add:
            return {}
        names = {uuid: cfg.node(uuid).name for uuid in change.cert_add}
        answers = await self._rpc().node_crypto_tokens(list(names.values()))
        digests: dict[str, str] = {}
        for uuid, name in names.items():
            digest, failure = answers[name]
            if digest is None:
                raise OpExecError(f"Could not retrieve the node's (uuid {uuid}) SSL digest.: {failure}")
            digests[uuid] = digest
        return digests
