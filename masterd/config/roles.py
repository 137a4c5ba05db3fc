"""Ganeti's node roles and the rules for changing them, as pure functions over the config.

Roles (ganeti(7), NODE ROLES), in the order Ganeti decides them: the node
the cluster names as master is "master"; otherwise a master candidate is
"master_candidate", then "drained", then "offline", else "regular". A node
holds at most one of the flags master_candidate, drained, offline.

`plan_node_change` is LUNodeSetParams' CheckArguments/CheckPrereq for the
flags (--master-candidate, --drained, --offline, --master-capable,
--vm-capable, --auto-promote): it refuses with Ganeti's messages
(`RoleError`, whose `code` is Ganeti's error code "wrong_input" or
"wrong_state") and returns a `RoleChange`: the new flags, the values the
opcode returns, the messages it logs, the candidates promoted to keep
candidate_pool_size, the certificate digests to add to or drop from
cluster.candidate_certs, and the RPCs the caller must make
(node_demote_from_mc; a version check before leaving offline). The random
choice of nodes to promote (MaintainCandidatePool shuffles) takes a
`random.Random` for reproducibility.

`apply_node_change` performs a RoleChange on a ConfigData (flags, promoted
nodes, candidate_certs), bumping serial numbers; nothing else mutates.

Contact rule: offline nodes are never contacted, except by the startup
vote (`contactable`, `may_contact`). Drained and offline nodes take no new
instances (`accepts_new_instances`).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from masterd.config.model import ConfigData, ConfigError, Node

ECODE_INVAL = "wrong_input"
ECODE_STATE = "wrong_state"


class RoleError(ConfigError):
    """A requested role change Ganeti refuses (an OpPrereqError)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class NodeRole(enum.Enum):
    MASTER = "master"
    CANDIDATE = "master_candidate"
    DRAINED = "drained"
    OFFLINE = "offline"
    REGULAR = "regular"

    @property
    def letter(self) -> str:
        """The one-letter role of `gnt-node list -o role` (M, C, D, O, R)."""
        return _LETTERS[self.value]


_LETTERS = {"master": "M", "master_candidate": "C", "drained": "D", "offline": "O", "regular": "R"}


def node_role(cfg: ConfigData, node: Node) -> NodeRole:
    if node.uuid == cfg.master_node_uuid:
        return NodeRole.MASTER
    if node.master_candidate:
        return NodeRole.CANDIDATE
    if node.drained:
        return NodeRole.DRAINED
    if node.offline:
        return NodeRole.OFFLINE
    return NodeRole.REGULAR


# --- contact rules -----------------------------------------------------------------------------

def may_contact(node: Node, *, voting: bool = False) -> bool:
    """Whether the master may send `node` an RPC: never an offline node, except to vote."""
    return voting or not node.offline


def contactable(cfg: ConfigData, *, voting: bool = False) -> list[Node]:
    return [node for node in cfg.nodes() if may_contact(node, voting=voting)]


def accepts_new_instances(node: Node) -> bool:
    """Drained and offline nodes get no new instances; neither do nodes not vm_capable."""
    return node.vm_capable and not node.drained and not node.offline


def config_receivers(cfg: ConfigData) -> list[Node]:
    """Nodes that receive config.data and the job files: online master candidates, not the master."""
    return [node for node in cfg.nodes()
            if node.master_candidate and not node.offline and node.uuid != cfg.master_node_uuid]


# --- candidate pool ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CandidateStats:
    now: int       # current master candidates
    should: int    # desired: min(possible, candidate_pool_size)
    possible: int  # online, undrained, master-capable nodes


def candidate_stats(nodes: Iterable[Node], pool_size: int | None,
                    exceptions: Iterable[str] = ()) -> CandidateStats:
    skip = set(exceptions)
    now = possible = 0
    for node in nodes:
        if node.uuid in skip:
            continue
        if not (node.offline or node.drained) and node.master_capable:
            possible += 1
        if node.master_candidate:
            now += 1
    should = possible if pool_size is None else min(possible, pool_size)
    return CandidateStats(now=now, should=should, possible=possible)


def pool_promotions(nodes: list[Node], pool_size: int | None, exceptions: Iterable[str] = (),
                    rng: random.Random | None = None) -> list[str]:
    """Uuids of the nodes to promote so the pool reaches its desired size (random pick, as Ganeti)."""
    skip = set(exceptions)
    stats = candidate_stats(nodes, pool_size, skip)
    missing = stats.should - stats.now
    if missing <= 0:
        return []
    eligible = [node.uuid for node in nodes
                if not (node.master_candidate or node.offline or node.drained or node.uuid in skip)
                and node.master_capable]
    (rng or random.Random()).shuffle(eligible)
    return eligible[:missing]


def should_self_promote(cfg: ConfigData, exceptions: Iterable[str] = ()) -> bool:
    """Ganeti's _DecideSelfPromotion: would one more candidate still be within the pool?"""
    stats = candidate_stats(cfg.nodes(), cfg.candidate_pool_size, exceptions)
    return stats.now < min(stats.should + 1, cfg.candidate_pool_size)


# --- OP_NODE_SET_PARAMS flags --------------------------------------------------------------------

@dataclass(frozen=True)
class FlagRequest:
    """The flag parameters of OP_NODE_SET_PARAMS (None: leave unchanged)."""

    master_candidate: bool | None = None
    drained: bool | None = None
    offline: bool | None = None
    master_capable: bool | None = None
    vm_capable: bool | None = None
    auto_promote: bool = False
    #: Other modifications in the same opcode (secondary_ip, ndparams ...), for the "nothing to do" check.
    other_changes: bool = False


_ROLE_FLAGS = ("master_candidate", "drained", "offline")
_ROLE_OF_FLAGS = {(True, False, False): NodeRole.CANDIDATE, (False, True, False): NodeRole.DRAINED,
                  (False, False, True): NodeRole.OFFLINE, (False, False, False): NodeRole.REGULAR}
_FLAGS_OF_ROLE = {role: flags for flags, role in _ROLE_OF_FLAGS.items()}


@dataclass
class RoleChange:
    node_uuid: str
    old_role: NodeRole
    new_role: NodeRole
    #: Flags to set on the node (only those that change).
    flags: dict[str, bool] = field(default_factory=dict)
    #: What the opcode returns: [(parameter, str(new value))], Ganeti's order.
    result: list[tuple[str, str]] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Other nodes promoted to master candidate (auto-promote), uuids.
    promoted: list[str] = field(default_factory=list)
    #: Nodes whose client certificate digest joins / leaves cluster.candidate_certs.
    cert_add: list[str] = field(default_factory=list)
    cert_remove: list[str] = field(default_factory=list)
    #: The caller must call node_demote_from_mc on the node after writing the config.
    demote_rpc: bool = False
    #: The node leaves offline: the caller must check it answers `version` before applying.
    version_check: bool = False


def plan_node_change(cfg: ConfigData, node_uuid: str, request: FlagRequest,
                     rng: random.Random | None = None) -> RoleChange:
    """Check a flag change like LUNodeSetParams and compute its effects (RoleError if refused)."""
    node = cfg.lookup_node(node_uuid)
    mods = [request.offline, request.master_candidate, request.drained, request.master_capable,
            request.vm_capable]
    if all(value is None for value in mods) and not request.other_changes:
        raise RoleError("Please pass at least one modification", ECODE_INVAL)
    if mods.count(True) > 1:
        raise RoleError("Can't set the node into more than one state at the same time", ECODE_INVAL)
    might_demote = (request.master_candidate is False or request.offline is True
                    or request.drained is True or request.master_capable is False)
    lock_all = request.auto_promote and might_demote
    wanted = {"master_candidate": request.master_candidate, "drained": request.drained,
              "offline": request.offline}
    is_master = node.uuid == cfg.master_node_uuid
    change = RoleChange(node_uuid=node.uuid, old_role=NodeRole.REGULAR, new_role=NodeRole.REGULAR)

    if any(value is not None for value in wanted.values()) and is_master:
        raise RoleError("The master role can be changed only via master-failover", ECODE_INVAL)
    if request.master_candidate and not node.master_capable:
        raise RoleError(f"Node {node.name} is not master capable, cannot make it a master candidate",
                        ECODE_STATE)
    if request.vm_capable is False:
        primary, secondary = cfg.node_instances(node.uuid)
        if primary or secondary:
            raise RoleError(f"Node {node.name} hosts instances, cannot unset the vm_capable flag",
                            ECODE_STATE)
    if node.master_candidate and might_demote and not lock_all:
        stats = candidate_stats(cfg.nodes(), cfg.candidate_pool_size, [node.uuid])
        if stats.now < stats.should:
            raise RoleError("Not enough master candidates, please pass auto promote option to allow"
                            " promotion (--auto-promote or RAPI auto_promote=True)", ECODE_STATE)

    old_flags = (node.master_candidate, node.drained, node.offline)
    if old_flags not in _ROLE_OF_FLAGS:
        raise RoleError(f"Node {node.name} has more than one of the flags master_candidate, drained and"
                        " offline set; fix the configuration", ECODE_STATE)
    old_role = _ROLE_OF_FLAGS[old_flags]
    for attr in _ROLE_FLAGS:
        if wanted[attr] is False and getattr(node, attr) is False:
            change.info.append(f"Ignoring request to unset flag {attr}, already unset")
            wanted[attr] = None

    if (wanted["drained"] is False or wanted["offline"] is False
            or (request.master_capable and not node.master_capable)):
        if should_self_promote(cfg):
            wanted["master_candidate"] = True
            change.info.append("Auto-promoting node to master candidate")
    if request.master_capable is False and node.master_candidate:
        if is_master:
            raise RoleError("Master must remain master capable", ECODE_STATE)
        change.info.append("Demoting from master candidate")
        wanted["master_candidate"] = False

    if wanted["master_candidate"]:
        new_role = NodeRole.CANDIDATE
    elif wanted["drained"]:
        new_role = NodeRole.DRAINED
    elif wanted["offline"]:
        new_role = NodeRole.OFFLINE
    elif False in wanted.values():
        new_role = NodeRole.REGULAR
    else:
        new_role = old_role
    change.old_role, change.new_role = old_role, new_role
    if old_role == NodeRole.OFFLINE and new_role != old_role:
        change.version_check = True
        change.warnings.append("Transitioning node from offline to online state without using re-add."
                               " Please make sure the node is healthy!")

    for attr in ("master_capable", "vm_capable"):
        value = getattr(request, attr)
        if value is not None:
            if getattr(node, attr) != value:
                change.flags[attr] = value
            change.result.append((attr, str(value)))
    if new_role != old_role:
        new_flags = _FLAGS_OF_ROLE[new_role]
        for old, new, attr in zip(old_flags, new_flags, _ROLE_FLAGS, strict=True):
            if old != new:
                change.result.append((attr, str(new)))
                change.flags[attr] = new
        change.demote_rpc = old_role == NodeRole.CANDIDATE and new_role != NodeRole.OFFLINE
        if lock_all:
            flags: dict[str, Any] = dict(change.flags)
            after = [replace(n, **flags) if n.uuid == node.uuid else n for n in cfg.nodes()]
            change.promoted = pool_promotions(after, cfg.candidate_pool_size, [node.uuid], rng)
            if change.promoted:
                names = ", ".join(cfg.node(uuid).name for uuid in change.promoted)
                change.info.append(f"Promoted nodes to master candidate role: {names}")
            final = [replace(n, master_candidate=True) if n.uuid in change.promoted else n for n in after]
            stats = candidate_stats(final, cfg.candidate_pool_size, [node.uuid])
            if stats.now > stats.should:
                change.info.append(f"Note: more nodes are candidates ({stats.now}) than desired"
                                   f" ({stats.should})")
            change.cert_add.extend(change.promoted)
        if new_role == NodeRole.CANDIDATE:
            change.cert_add.append(node.uuid)
        if old_role == NodeRole.CANDIDATE:
            change.cert_remove.append(node.uuid)
    return change


def apply_node_change(cfg: ConfigData, change: RoleChange, digests: Mapping[str, str]) -> None:
    """Apply `change` to `cfg`; `digests` maps node uuid -> client certificate digest for cert_add."""
    missing = [uuid for uuid in change.cert_add if uuid not in digests]
    if missing:
        names = ", ".join(cfg.node(uuid).name for uuid in missing)
        raise ConfigError(f"no client certificate digest for new master candidate(s) {names}"
                          " (ask the node with node_crypto_tokens)")
    if change.flags:
        cfg.set_node_flags(change.node_uuid, **change.flags)
    for uuid in change.promoted:
        cfg.set_node_flags(uuid, master_candidate=True)
    for uuid in change.cert_remove:
        cfg.set_candidate_cert(uuid, None)
    for uuid in change.cert_add:
        cfg.set_candidate_cert(uuid, digests[uuid])
