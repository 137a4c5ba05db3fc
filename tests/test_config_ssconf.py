"""ssconf values derived from config.data, checked against the real cluster's files and Ganeti's code."""

from __future__ import annotations

from pathlib import Path

from config_support import SAMPLE_CONFIG, SAMPLES, cluster, ganeti_oracle, needs_ganeti

from masterd.config import model
from masterd.config.ssconf import file_contents, nice_sorted, ssconf_values

ORACLE = "print(json.dumps(c.GetSsconfValues()))"


def test_real_config_gives_exactly_the_real_ssconf_files() -> None:
    real = {path.name.removeprefix("ssconf_"): path.read_text() for path in (SAMPLES / "ssconf").iterdir()}
    ours = file_contents(ssconf_values(model.load(str(SAMPLE_CONFIG))))
    assert ours == real


@needs_ganeti
def test_real_config_gives_what_ganetis_python_computes(tmp_path: Path) -> None:
    cfg = model.load(str(SAMPLE_CONFIG))
    theirs = ganeti_oracle(ORACLE, cfg, tmp_path)
    ours = ssconf_values(cfg)
    assert set(theirs) == set(ours)
    for key, value in theirs.items():
        lines = value.splitlines()
        if key.startswith("hvparams_"):
            # Python keeps the dict's order; wconfd (the real files above) sorts the keys
            assert sorted(lines) == ours[key], key
        else:
            assert lines == ours[key], key


@needs_ganeti
def test_multi_node_cluster_has_ganetis_lines(tmp_path: Path) -> None:
    cfg = cluster("node1", "node10", "node2", "node3")
    cfg.set_node_flags(cfg.node_by_name("node2").uuid, master_candidate=True)
    cfg.set_node_flags(cfg.node_by_name("node3").uuid, offline=True)
    cfg.set_candidate_cert(cfg.node_by_name("node2").uuid, "AA:BB")
    cfg.tree["nodes"][cfg.node_by_name("node10").uuid]["ndparams"] = {"ssh_port": 2222}
    cfg.cluster["uid_pool"] = [[100, 100], [200, 300]]
    cfg.cluster["tags"] = ["zeta", "alpha"]
    theirs = ganeti_oracle(ORACLE, cfg, tmp_path)
    ours = ssconf_values(cfg)
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        # Ganeti's Python keeps dict/set order; wconfd's order is checked by the next tests
        assert sorted(ours[key]) == sorted(value.splitlines()), key


def test_nodes_are_listed_in_nice_name_order() -> None:
    cfg = cluster("node1", "node10", "node2")
    values = ssconf_values(cfg)
    assert values["node_list"] == ["node1", "node2", "node10"]
    assert values["node_primary_ips"] == ["node1 127.0.0.2", "node2 127.0.0.4", "node10 127.0.0.3"]
    assert values["ssh_ports"] == ["node1=22", "node2=22", "node10=22"]


def test_offline_nodes_are_split_from_online_ones() -> None:
    cfg = cluster("node1", "node2", "node3")
    cfg.set_node_flags(cfg.node_by_name("node3").uuid, offline=True)
    values = ssconf_values(cfg)
    assert (values["online_nodes"], values["offline_nodes"]) == (["node1", "node2"], ["node3"])


def test_master_counts_as_candidate_and_candidates_follow_uuid_order() -> None:
    cfg = cluster("node1", "node2", "node3")
    master = cfg.master_node
    cfg.tree["nodes"][master.uuid]["master_candidate"] = False
    cfg.set_node_flags(cfg.node_by_name("node3").uuid, master_candidate=True)
    expected = sorted([master, cfg.node_by_name("node3")], key=lambda node: node.uuid)
    values = ssconf_values(cfg)
    assert values["master_candidates"] == [node.name for node in expected]
    assert values["master_candidates_ips"] == [node.primary_ip for node in expected]


def test_candidate_certs_are_uuid_equals_digest_in_uuid_order() -> None:
    cfg = cluster("node1")
    cfg.cluster["candidate_certs"] = {"b-uuid": "BB:01", "a-uuid": "AA:02"}
    assert ssconf_values(cfg)["master_candidates_certs"] == ["a-uuid=AA:02", "b-uuid=BB:01"]


def test_ssh_port_comes_from_node_then_group_then_cluster() -> None:
    cfg = cluster("node1", "node2")
    group = cfg.default_group_uuid()
    cfg.tree["nodegroups"][group]["ndparams"] = {"ssh_port": 2200}
    cfg.tree["nodes"][cfg.node_by_name("node2").uuid]["ndparams"] = {"ssh_port": 2201}
    assert ssconf_values(cfg)["ssh_ports"] == ["node1=2200", "node2=2201"]


def test_hvparams_of_every_hypervisor_are_written() -> None:
    cfg = cluster("node1")
    cfg.cluster["hvparams"]["fake"] = {"migration_mode": "live", "b": True, "a": 1.5, "c": [1]}
    del cfg.cluster["hvparams"]["lxc"]
    values = ssconf_values(cfg)
    assert values["hvparams_fake"] == ["a=1.5", "b=True", "c=[1]", "migration_mode=live"]
    assert values["hvparams_lxc"] == []
    assert "hvparams_kvm" in values and "hvparams_chroot" in values


def test_empty_lists_give_empty_files() -> None:
    contents = file_contents(ssconf_values(cluster("node1")))
    assert contents["offline_nodes"] == contents["networks"] == contents["cluster_tags"] == ""
    assert contents["cluster_name"] == "cluster.example.com\n"


def test_nice_sort_compares_digit_runs_as_numbers() -> None:
    names = ["node10.b", "node9", "node1", "node1.a", "a2", "a10"]
    assert nice_sorted(names, key=str) == ["a2", "a10", "node1", "node1.a", "node9", "node10.b"]
