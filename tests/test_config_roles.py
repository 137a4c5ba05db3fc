"""Node roles and OP_NODE_SET_PARAMS' flag rules, as ganeti(7) and LUNodeSetParams define them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from config_support import cluster, ganeti_oracle, needs_ganeti

from masterd.config.model import ConfigData, ConfigError
from masterd.config.roles import (
    FlagRequest,
    NodeRole,
    RoleError,
    accepts_new_instances,
    apply_node_change,
    candidate_stats,
    config_receivers,
    contactable,
    node_role,
    plan_node_change,
    pool_promotions,
)


def uuid(cfg: ConfigData, name: str) -> str:
    return cfg.node_by_name(name).uuid


def with_candidates(*names: str, pool_size: int = 10) -> ConfigData:
    """Cluster node1 (master) .. with node2.. as candidates when listed with a '*'."""
    cfg = cluster(*[name.rstrip("*") for name in names], pool_size=pool_size)
    for name in names[1:]:
        if name.endswith("*"):
            cfg.set_node_flags(uuid(cfg, name.rstrip("*")), master_candidate=True)
            cfg.set_candidate_cert(uuid(cfg, name.rstrip("*")), f"DIGEST-{name.rstrip('*')}")
    return cfg


def test_roles_follow_ganetis_precedence() -> None:
    cfg = cluster("node1", "node2", "node3", "node4", "node5")
    cfg.set_node_flags(uuid(cfg, "node2"), master_candidate=True)
    cfg.set_node_flags(uuid(cfg, "node3"), drained=True)
    cfg.set_node_flags(uuid(cfg, "node4"), offline=True)
    roles = {node.name: node_role(cfg, node) for node in cfg.nodes()}
    assert roles == {"node1": NodeRole.MASTER, "node2": NodeRole.CANDIDATE, "node3": NodeRole.DRAINED,
                     "node4": NodeRole.OFFLINE, "node5": NodeRole.REGULAR}
    assert "".join(role.letter for role in roles.values()) == "MCDOR"


def test_offline_nodes_are_contacted_only_to_vote() -> None:
    cfg = cluster("node1", "node2", "node3")
    cfg.set_node_flags(uuid(cfg, "node3"), offline=True)
    assert [node.name for node in contactable(cfg)] == ["node1", "node2"]
    assert [node.name for node in contactable(cfg, voting=True)] == ["node1", "node2", "node3"]


def test_drained_and_offline_nodes_take_no_new_instances() -> None:
    cfg = cluster("node1", "node2", "node3")
    cfg.set_node_flags(uuid(cfg, "node2"), drained=True)
    cfg.set_node_flags(uuid(cfg, "node3"), offline=True)
    assert [node.name for node in cfg.nodes() if accepts_new_instances(node)] == ["node1"]


def test_config_goes_to_online_candidates_other_than_the_master() -> None:
    cfg = with_candidates("node1", "node2*", "node3*", "node4")
    cfg.set_node_flags(uuid(cfg, "node3"), master_candidate=False, offline=True)
    assert [node.name for node in config_receivers(cfg)] == ["node2"]


def test_demoting_the_last_candidates_is_refused() -> None:
    cfg = with_candidates("node1", "node2*", "node3")
    serial = cfg.serial_no
    with pytest.raises(RoleError, match=r"^Not enough master candidates, please pass auto promote option"
                       r" to allow promotion \(--auto-promote or RAPI auto_promote=True\)$") as err:
        plan_node_change(cfg, uuid(cfg, "node2"), FlagRequest(master_candidate=False))
    assert err.value.code == "wrong_state"
    assert cfg.serial_no == serial


def test_auto_promote_replaces_a_demoted_candidate() -> None:
    cfg = with_candidates("node1", "node2*", "node3", pool_size=2)
    change = plan_node_change(cfg, uuid(cfg, "node2"), FlagRequest(master_candidate=False, auto_promote=True),
                              rng=random.Random(1))
    assert change.promoted == [uuid(cfg, "node3")]
    assert change.result == [("master_candidate", "False")]
    assert change.demote_rpc and change.cert_remove == [uuid(cfg, "node2")]
    assert "Promoted nodes to master candidate role: node3" in change.info
    apply_node_change(cfg, change, {uuid(cfg, "node3"): "DIGEST-node3"})
    assert not cfg.node_by_name("node2").master_candidate and cfg.node_by_name("node3").master_candidate
    assert cfg.candidate_certs == {uuid(cfg, "node3"): "DIGEST-node3"}


def test_offline_implies_not_a_candidate() -> None:
    cfg = with_candidates("node1", "node2*", "node3*", pool_size=2)
    change = plan_node_change(cfg, uuid(cfg, "node3"), FlagRequest(offline=True))
    assert (change.old_role, change.new_role) == (NodeRole.CANDIDATE, NodeRole.OFFLINE)
    assert change.result == [("master_candidate", "False"), ("offline", "True")]
    assert not change.demote_rpc  # an offline node is not contacted
    apply_node_change(cfg, change, {})
    node3 = cfg.node_by_name("node3")
    assert (node3.master_candidate, node3.offline) == (False, True)
    assert uuid(cfg, "node3") not in cfg.candidate_certs


def test_draining_a_candidate_demotes_it_and_tells_it() -> None:
    cfg = with_candidates("node1", "node2*", "node3*", pool_size=2)
    change = plan_node_change(cfg, uuid(cfg, "node2"), FlagRequest(drained=True))
    assert change.flags == {"master_candidate": False, "drained": True}
    assert change.demote_rpc


def test_master_flags_change_only_by_failover() -> None:
    cfg = cluster("node1", "node2")
    with pytest.raises(RoleError, match=r"^The master role can be changed only via master-failover$"):
        plan_node_change(cfg, cfg.master_node_uuid, FlagRequest(drained=True))


def test_node_not_master_capable_cannot_become_candidate() -> None:
    cfg = cluster("node1", "node2")
    cfg.set_node_flags(uuid(cfg, "node2"), master_capable=False)
    with pytest.raises(RoleError, match=r"^Node node2 is not master capable, cannot make it a master"
                       r" candidate$"):
        plan_node_change(cfg, uuid(cfg, "node2"), FlagRequest(master_candidate=True))


def test_vm_capable_cannot_be_unset_on_a_node_with_instances() -> None:
    cfg = cluster("node1", "node2")
    cfg.tree["instances"]["i-uuid"] = {"name": "inst1", "primary_node": uuid(cfg, "node2"), "disks": []}
    with pytest.raises(RoleError, match=r"^Node node2 hosts instances, cannot unset the vm_capable flag$"):
        plan_node_change(cfg, uuid(cfg, "node2"), FlagRequest(vm_capable=False))


def test_two_states_at_once_are_refused() -> None:
    cfg = cluster("node1", "node2")
    with pytest.raises(RoleError, match=r"^Can't set the node into more than one state at the same time$"):
        plan_node_change(cfg, uuid(cfg, "node2"), FlagRequest(drained=True, offline=True))


def test_a_change_needs_a_modification() -> None:
    cfg = cluster("node1", "node2")
    with pytest.raises(RoleError, match=r"^Please pass at least one modification$") as err:
        plan_node_change(cfg, uuid(cfg, "node2"), FlagRequest())
    assert err.value.code == "wrong_input"


def test_unsetting_an_unset_flag_is_ignored() -> None:
    cfg = cluster("node1", "node2")
    change = plan_node_change(cfg, uuid(cfg, "node2"), FlagRequest(drained=False))
    assert change.info == ["Ignoring request to unset flag drained, already unset"]
    assert (change.flags, change.result, change.new_role) == ({}, [], NodeRole.REGULAR)


def test_leaving_offline_promotes_when_the_pool_has_room_and_checks_the_node() -> None:
    cfg = cluster("node1", "node2")
    cfg.set_node_flags(uuid(cfg, "node2"), offline=True)
    change = plan_node_change(cfg, uuid(cfg, "node2"), FlagRequest(offline=False))
    assert "Auto-promoting node to master candidate" in change.info
    assert change.new_role == NodeRole.CANDIDATE and change.version_check
    assert change.flags == {"master_candidate": True, "offline": False}
    assert change.cert_add == [uuid(cfg, "node2")]
    with pytest.raises(ConfigError, match="no client certificate digest for new master candidate"):
        apply_node_change(cfg, change, {})


def test_leaving_offline_with_a_full_pool_makes_a_regular_node() -> None:
    cfg = cluster("node1", "node2", pool_size=1)
    cfg.set_node_flags(uuid(cfg, "node2"), offline=True)
    change = plan_node_change(cfg, uuid(cfg, "node2"), FlagRequest(offline=False))
    assert change.new_role == NodeRole.REGULAR and change.flags == {"offline": False}


def test_losing_master_capability_demotes_a_candidate() -> None:
    cfg = with_candidates("node1", "node2*", "node3*", pool_size=2)
    change = plan_node_change(cfg, uuid(cfg, "node3"), FlagRequest(master_capable=False))
    assert "Demoting from master candidate" in change.info
    assert change.result == [("master_capable", "False"), ("master_candidate", "False")]


def test_pool_promotion_fills_only_up_to_the_pool_size() -> None:
    cfg = cluster("node1", "node2", "node3", "node4", pool_size=3)
    cfg.set_node_flags(uuid(cfg, "node4"), drained=True)
    promoted = pool_promotions(cfg.nodes(), cfg.candidate_pool_size, rng=random.Random(0))
    assert sorted(promoted) == sorted([uuid(cfg, "node2"), uuid(cfg, "node3")])
    assert pool_promotions(cfg.nodes(), 1) == []


@needs_ganeti
def test_candidate_stats_match_ganetis(tmp_path: Path) -> None:
    cfg = with_candidates("node1", "node2*", "node3", "node4", "node5", pool_size=3)
    cfg.set_node_flags(uuid(cfg, "node4"), drained=True)
    cfg.set_node_flags(uuid(cfg, "node5"), master_capable=False)
    exception = uuid(cfg, "node2")
    theirs = ganeti_oracle(f"print(json.dumps([c.GetMasterCandidateStats(), "
                           f"c.GetMasterCandidateStats([{exception!r}])]))", cfg, tmp_path)
    ours = [candidate_stats(cfg.nodes(), 3), candidate_stats(cfg.nodes(), 3, [exception])]
    assert theirs == [[s.now, s.should, s.possible] for s in ours]
