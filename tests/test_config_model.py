"""config.data: exact load/dump of Ganeti's file, typed access, serials, fresh init config, durable writer."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from config_support import SAMPLE_CONFIG, cluster, ganeti_oracle, needs_ganeti

from masterd.config import model
from masterd.config.model import ConfigData, ConfigError, haskell_float, new_config
from masterd.config.writer import ConfigWriter, WriteCallback
from noded.paths import Paths


def sample() -> ConfigData:
    return model.load(str(SAMPLE_CONFIG))


def test_real_config_dumps_to_the_same_bytes() -> None:
    assert sample().dumps() == SAMPLE_CONFIG.read_text()


@pytest.mark.parametrize(("value", "text"), [
    (1795313909.211783, "1.795313909211783e9"), (0.5, "0.5"), (0.05, "5.0e-2"), (1.5, "1.5"),
    (1234567.5, "1234567.5"), (12345678.5, "1.23456785e7"), (-2.25, "-2.25"), (32.0, "32"), (0.0, "0"),
])
def test_floats_are_written_as_haskell_shows_them(value: float, text: str) -> None:
    assert haskell_float(value) == text


def test_corrupt_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "config.data"
    path.write_text('{"version": 3000000, "cluster": {')
    with pytest.raises(ConfigError, match=rf"{path} is not valid JSON .*corrupt"):
        model.load(str(path))


def test_other_config_version_is_refused(tmp_path: Path) -> None:
    tree = json.loads(SAMPLE_CONFIG.read_text())
    tree["version"] = 2160000
    path = tmp_path / "config.data"
    path.write_text(json.dumps(tree))
    with pytest.raises(ConfigError, match="version 2160000 is not supported"):
        model.load(str(path))


def test_missing_section_is_named() -> None:
    tree = json.loads(SAMPLE_CONFIG.read_text())
    del tree["nodegroups"]
    with pytest.raises(ConfigError, match="has no 'nodegroups'"):
        ConfigData.from_dict(tree)


def test_node_flag_of_wrong_type_is_named() -> None:
    tree = json.loads(SAMPLE_CONFIG.read_text())
    next(iter(tree["nodes"].values()))["offline"] = "no"
    with pytest.raises(ConfigError, match="'offline' should be bool"):
        ConfigData.from_dict(tree)


def test_missing_file_says_the_node_is_not_in_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not part of a cluster"):
        model.load(str(tmp_path / "config.data"))


def test_accessors_read_the_real_config() -> None:
    cfg = sample()
    master = cfg.master_node
    assert (cfg.cluster_name, master.name, master.primary_ip) == ("cluster.example.com",
                                                                  "node1.example.com", "127.0.1.1")
    assert (master.master_candidate, master.drained, master.offline) == (True, False, False)
    assert master.group == cfg.default_group_uuid() == "c8b93471-2cdf-4006-bba9-d6228925727a"
    assert cfg.node_by_name("node1.example.com") == master
    assert cfg.instance_names() == ["inst1.example.com"]
    assert cfg.node_instances(master.uuid) == (["inst1.example.com"], [])
    assert cfg.node_ndparams(master)["ssh_port"] == 22


def test_changing_a_node_bumps_its_serial_and_the_configs() -> None:
    cfg = cluster("node1", "node2")
    node2 = cfg.node_by_name("node2")
    before_cfg, before_mtime = cfg.serial_no, cfg.tree["mtime"]
    changed = cfg.set_node_flags(node2.uuid, drained=True)
    assert changed.drained and changed.serial_no == node2.serial_no + 1
    assert cfg.serial_no == before_cfg + 1
    assert cfg.tree["mtime"] >= before_mtime
    assert cfg.tree["nodes"][node2.uuid]["mtime"] >= cfg.tree["nodes"][node2.uuid]["ctime"]


def test_setting_a_flag_to_its_value_changes_nothing() -> None:
    cfg = cluster("node1", "node2")
    serial = cfg.serial_no
    cfg.set_node_flags(cfg.node_by_name("node2").uuid, drained=False)
    assert cfg.serial_no == serial


def test_adding_a_node_twice_is_refused_and_changes_nothing() -> None:
    cfg = cluster("node1", "node2")
    serial = cfg.serial_no
    with pytest.raises(ConfigError, match="node2 is already in the configuration"):
        cfg.add_node("node2", "127.0.0.9")
    assert cfg.serial_no == serial


def test_new_config_is_what_gnt_cluster_init_wrote() -> None:
    real = json.loads(SAMPLE_CONFIG.read_text())
    rc = real["cluster"]
    node_uuid = rc["master_node"]
    group_uuid = next(iter(real["nodegroups"]))
    cfg = new_config(cluster_name="cluster.example.com", master_name="node1.example.com",
                     master_ip="127.0.1.1", cluster_ip="127.0.1.100", master_netdev="lo",
                     enabled_hypervisors=["fake"], enabled_disk_templates=["file", "diskless"],
                     nicparams={"link": "gnt-br0"}, modify_etc_hosts=False, default_iallocator="hail",
                     rsahostkeypub=rc["rsahostkeypub"], now=rc["ctime"],
                     uuids=(rc["uuid"], node_uuid, group_uuid))
    fresh = json.loads(cfg.dumps())
    # what the real cluster changed after init: the master's certificate digest, serials, times
    for key in ("candidate_certs", "serial_no", "mtime"):
        fresh["cluster"][key], rc[key] = None, None
    assert list(fresh) == list(real)
    assert fresh["cluster"] == rc
    assert fresh["nodes"] == real["nodes"]
    group, real_group = fresh["nodegroups"][group_uuid], real["nodegroups"][group_uuid]
    assert {**group, "mtime": None} == {**real_group, "mtime": None}


@needs_ganeti
def test_new_config_passes_ganetis_own_verification(tmp_path: Path) -> None:
    cfg = cluster("node1.example.com")
    assert ganeti_oracle("print(json.dumps(c.VerifyConfig()))", cfg, tmp_path) == []


def test_unknown_hypervisor_is_refused_at_init() -> None:
    with pytest.raises(ConfigError, match="Unknown hypervisor 'vmware'"):
        new_config(cluster_name="c", master_name="n", master_ip="127.0.0.2", cluster_ip="127.0.0.100",
                   master_netdev="lo", enabled_hypervisors=["vmware"])


# --- ConfigWriter ----------------------------------------------------------------------------------

def writer_for(tmp_path: Path, callbacks: list[WriteCallback] | None = None) -> ConfigWriter:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    os.makedirs(paths.data_dir)
    return ConfigWriter(paths, callbacks or [])


def test_writer_writes_ganetis_bytes_with_mode_0640_and_no_leftovers(tmp_path: Path) -> None:
    writer = writer_for(tmp_path)
    cfg = cluster("node1")
    writer.write(cfg)
    with open(writer.path) as handle:
        assert handle.read() == cfg.dumps()
    assert stat.S_IMODE(os.stat(writer.path).st_mode) == 0o640
    assert os.listdir(os.path.dirname(writer.path)) == ["config.data"]


def test_writer_refuses_a_serial_that_does_not_grow(tmp_path: Path) -> None:
    writer = writer_for(tmp_path)
    cfg = cluster("node1")
    writer.write(cfg)
    written = Path(writer.path).read_text()
    cfg.set_node_flags(cfg.master_node_uuid, vm_capable=False)
    cfg.tree["serial_no"] = 1
    with pytest.raises(ConfigError, match="serial 1 was already written"):
        writer.write(cfg)
    assert Path(writer.path).read_text() == written


def test_writer_respects_the_serial_of_the_file_it_finds(tmp_path: Path) -> None:
    first = writer_for(tmp_path)
    cfg = cluster("node1")
    cfg.tree["serial_no"] = 7
    first.write(cfg)
    second = ConfigWriter(first.paths)
    stale = cluster("node1")
    stale.tree["serial_no"] = 5
    with pytest.raises(ConfigError, match="serial 7 was already written"):
        second.write(stale)


def test_commit_bumps_the_serial_once_per_change(tmp_path: Path) -> None:
    writer = writer_for(tmp_path)
    cfg = cluster("node1")
    writer.write(cfg)
    writer.commit(cfg)
    writer.commit(cfg)
    assert model.load(writer.path).serial_no == cfg.serial_no == writer.last_serial == 3


def test_callback_runs_after_the_file_is_durable(tmp_path: Path) -> None:
    seen: list[tuple[int, bytes, bytes]] = []
    writer = writer_for(tmp_path)
    writer.add_callback(lambda cfg, data: seen.append((cfg.serial_no, data, Path(writer.path).read_bytes())))
    cfg = cluster("node1")
    writer.write(cfg)
    assert seen == [(1, cfg.dumps().encode(), cfg.dumps().encode())]


def test_failing_callback_does_not_undo_the_write(tmp_path: Path) -> None:
    def broken(cfg: ConfigData, data: bytes) -> None:
        raise RuntimeError("candidate unreachable")

    writer = writer_for(tmp_path, [broken])
    cfg = cluster("node1")
    writer.write(cfg)
    assert model.load(writer.path).serial_no == 1
