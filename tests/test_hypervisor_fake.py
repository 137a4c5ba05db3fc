"""The fake hypervisor: instances as state files under $RUN_DIR/fake-hypervisor, real host facts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from real_ganeti import requires_real_ganeti
from real_noded_calls import real_snippet

from noded.hypervisor import FakeHypervisor, HypervisorError, get_hypervisor, get_hypervisor_class
from noded.hypervisor.base import InstanceState, linux_node_info
from noded.paths import Paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths(root=str(tmp_path / "node1"), hostname="node1")
    p.ensure_dirs()
    return p


def _mark_up(paths: Paths, name: str, memory: int, vcpus: int) -> None:
    state = Path(paths.run_dir) / "fake-hypervisor"
    state.mkdir(parents=True, exist_ok=True)
    (state / name).write_text(f"0\n{memory}\n{vcpus}\n")


def test_using_the_hypervisor_creates_its_state_directory(paths: Paths) -> None:
    hv = get_hypervisor("fake", paths)
    assert os.path.isdir(os.path.join(paths.run_dir, "fake-hypervisor"))
    assert hv.verify() is None


def test_verify_reports_a_missing_state_directory(paths: Paths) -> None:
    hv = get_hypervisor("fake", paths)
    os.rmdir(os.path.join(paths.run_dir, "fake-hypervisor"))
    assert hv.verify() == (f"The required directory '{paths.run_dir}/fake-hypervisor'"
                           " does not exist")


def test_unknown_hypervisor_names_are_refused_like_ganeti(paths: Paths) -> None:
    with pytest.raises(HypervisorError, match=r"^Unknown hypervisor type 'xen-pvm'$"):
        get_hypervisor("xen-pvm", paths)


def test_list_instances_reads_the_state_files(paths: Paths) -> None:
    _mark_up(paths, "inst2.example.com", 256, 2)
    _mark_up(paths, "inst1.example.com", 128, 1)
    assert get_hypervisor("fake", paths).list_instances() == ["inst1.example.com", "inst2.example.com"]


def test_instance_info_of_a_running_instance(paths: Paths) -> None:
    _mark_up(paths, "inst1.example.com", 128, 2)
    info = get_hypervisor("fake", paths).instance_info("inst1.example.com")
    assert info is not None
    assert (info.name, info.id, info.memory, info.vcpus, info.state, info.time) == (
        "inst1.example.com", "0", 128, 2, InstanceState.RUNNING, 0)
    assert info.to_legacy() == {"memory": 128, "vcpus": 2, "state": 0, "time": 0}


def test_instance_info_of_a_stopped_instance_is_none(paths: Paths) -> None:
    assert get_hypervisor("fake", paths).instance_info("inst1.example.com") is None


def test_all_instances_info_lists_every_state_file(paths: Paths) -> None:
    _mark_up(paths, "a", 100, 1)
    _mark_up(paths, "b", 200, 4)
    infos = get_hypervisor("fake", paths).all_instances_info()
    assert [(i.name, i.memory, i.vcpus) for i in infos] == [("a", 100, 1), ("b", 200, 4)]


def test_linux_node_info_parses_meminfo_and_cpuinfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684544 kB\nMemFree:         1048576 kB\n"
                       "Buffers:           10240 kB\nCached:          2097152 kB\n"
                       "Active:           512000 kB\nActive(anon):     1000 kB\n")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n\n"
                       "processor\t: 2\n")
    assert linux_node_info(str(meminfo), str(cpuinfo)) == {
        "memory_total": 24106, "memory_free": 1024 + 10 + 2048, "memory_dom0": 500,
        "cpu_total": 3, "cpu_dom0": 3, "cpu_nodes": 1, "cpu_sockets": 1}


def test_node_info_reports_this_machine(paths: Paths) -> None:
    info = get_hypervisor("fake", paths).node_info({"migration_mode": "live"})
    with open("/proc/meminfo") as f:
        total_kib = int(re.search(r"^MemTotal:\s+(\d+)", f.read(), re.M).group(1))  # type: ignore[union-attr]
    assert info["memory_total"] == total_kib // 1024
    assert info["cpu_total"] == os.cpu_count()
    assert set(info) == {"memory_total", "memory_free", "memory_dom0", "cpu_total", "cpu_dom0",
                         "cpu_nodes", "cpu_sockets"}


def test_node_info_takes_running_instances_off_free_memory(paths: Paths) -> None:
    _mark_up(paths, "huge", 10**9, 1)
    assert get_hypervisor("fake", paths).node_info()["memory_free"] == 0


def test_validate_parameters_accepts_the_default_set() -> None:
    FakeHypervisor.validate_parameters(dict(FakeHypervisor.DEFAULTS))
    assert FakeHypervisor.DEFAULTS == {"migration_mode": "live"}


def test_validate_parameters_without_migration_mode_raises_key_error() -> None:
    with pytest.raises(KeyError) as err:
        get_hypervisor_class("fake").validate_parameters({})
    assert str(err.value) == "'migration_mode'"


def test_syntax_check_refuses_an_unknown_migration_mode() -> None:
    with pytest.raises(HypervisorError) as err:
        FakeHypervisor.check_parameter_syntax({"migration_mode": "teleport"})
    assert str(err.value) == ("Parameter 'migration_mode' fails syntax check: invalid migration mode"
                              " (current value: 'teleport')")


def test_syntax_check_refuses_unsupported_parameters() -> None:
    with pytest.raises(HypervisorError, match=r"^Parameter 'kernel_path' is not supported$"):
        FakeHypervisor.check_parameter_syntax({"migration_mode": "live", "kernel_path": "/x"})


@requires_real_ganeti
def test_state_files_written_by_ganeti_read_the_same(paths: Paths) -> None:
    root = Path(paths.root)
    theirs = real_snippet(root, """
from ganeti import objects
from ganeti.hypervisor import hv_fake
hv = hv_fake.FakeHypervisor()
inst = objects.Instance(name="inst1.example.com", beparams={"vcpus": 3})
hv._MarkUp(inst, 384)
result = [hv.ListInstances(), list(hv.GetInstanceInfo("inst1.example.com")),
          [list(t) for t in hv.GetAllInstancesInfo()], hv.Verify()]
""")
    hv = get_hypervisor("fake", paths)
    info = hv.instance_info("inst1.example.com")
    assert info is not None
    as_tuple = [info.name, info.id, info.memory, info.vcpus, info.state, info.time]
    ours = [hv.list_instances(), as_tuple,
            [[i.name, i.id, i.memory, i.vcpus, i.state, i.time] for i in hv.all_instances_info()],
            hv.verify()]
    assert ours == theirs


@requires_real_ganeti
def test_node_facts_agree_with_ganeti(paths: Paths) -> None:
    theirs = real_snippet(Path(paths.root), """
from ganeti.hypervisor import hv_fake
result = hv_fake.FakeHypervisor().GetNodeInfo()
""")
    ours = get_hypervisor("fake", paths).node_info()
    assert set(ours) == set(theirs)
    for key in ("memory_total", "cpu_total", "cpu_dom0", "cpu_nodes", "cpu_sockets"):
        assert ours[key] == theirs[key], key


@requires_real_ganeti
def test_syntax_check_messages_match_ganeti(paths: Paths) -> None:
    theirs = real_snippet(Path(paths.root), """
from ganeti import errors
from ganeti.hypervisor import hv_fake
result = []
for params in ({"migration_mode": "teleport"}, {}, {"migration_mode": None},
               {"migration_mode": "live", "x": 1}):
    try:
        hv_fake.FakeHypervisor.CheckParameterSyntax(params)
        result.append(None)
    except errors.HypervisorError as err:
        result.append(str(err))
""")
    ours: list[str | None] = []
    for params in ({"migration_mode": "teleport"}, {}, {"migration_mode": None},
                   {"migration_mode": "live", "x": 1}):
        try:
            FakeHypervisor.check_parameter_syntax(params)
            ours.append(None)
        except HypervisorError as err:
            ours.append(str(err))
    assert ours == theirs


# -- life cycle ----------------------------------------------------------------------

def _inst(name: str = "inst1.example.com", maxmem: int = 128, minmem: int = 64,
          vcpus: int = 2) -> dict[str, object]:
    return {"name": name, "hypervisor": "fake", "hvparams": {"migration_mode": "live"},
            "beparams": {"maxmem": maxmem, "minmem": minmem, "vcpus": vcpus}}


def _state(paths: Paths, name: str = "inst1.example.com") -> Path:
    return Path(paths.run_dir) / "fake-hypervisor" / name


def test_start_writes_the_state_file_as_ganeti_does(paths: Paths) -> None:
    get_hypervisor("fake", paths).start_instance(_inst(), [], False)
    assert _state(paths).read_text() == "0\n128\n2\n"


def test_start_memory_never_goes_below_minmem(paths: Paths) -> None:
    _mark_up(paths, "huge", 10**9, 1)  # leaves no free memory
    get_hypervisor("fake", paths).start_instance(_inst(maxmem=512, minmem=64), [], False)
    assert _state(paths).read_text() == "0\n64\n2\n"


def test_starting_a_running_instance_fails(paths: Paths) -> None:
    hv = get_hypervisor("fake", paths)
    hv.start_instance(_inst(), [], False)
    with pytest.raises(HypervisorError,
                       match=r"^Failed to start instance inst1.example.com: already running$"):
        hv.start_instance(_inst(maxmem=256), [], False)
    assert _state(paths).read_text() == "0\n128\n2\n"


def test_stop_removes_the_state_file_and_is_idempotent(paths: Paths) -> None:
    hv = get_hypervisor("fake", paths)
    hv.start_instance(_inst(), [], False)
    hv.stop_instance(_inst())
    assert not _state(paths).exists()
    hv.stop_instance(_inst(), force=True)
    hv.stop_instance({}, name="inst1.example.com")


def test_balloon_of_a_stopped_instance_fails(paths: Paths) -> None:
    with pytest.raises(HypervisorError,
                       match=r"^Failed to balloon memory for inst1.example.com: not running$"):
        get_hypervisor("fake", paths).balloon_instance_memory(_inst(), 100)


def test_instance_names_that_are_not_file_names_are_refused(paths: Paths) -> None:
    with pytest.raises(HypervisorError, match=r"^Invalid instance name '\.\./escape'$"):
        get_hypervisor("fake", paths).start_instance(_inst(name="../escape"), [], False)
    assert not (Path(paths.run_dir) / "escape").exists()


def test_accept_records_the_incoming_instance_until_finalized(paths: Paths) -> None:
    hv = get_hypervisor("fake", paths)
    hv.accept_instance(_inst(), "0\n96\n2\n", "127.0.0.3")
    incoming = Path(paths.run_dir) / "fake-hypervisor-incoming" / "inst1.example.com"
    assert incoming.read_text() == "0\n96\n2\n"
    assert hv.list_instances() == []
    hv.finalize_migration_dst(_inst(), "0\n96\n2\n", True)
    assert not incoming.exists()
    assert _state(paths).read_text() == "0\n96\n2\n"


def test_migration_info_is_the_state_of_the_running_instance(paths: Paths) -> None:
    hv = get_hypervisor("fake", paths)
    assert hv.migration_info(_inst()) == ""
    hv.start_instance(_inst(), [], False)
    assert hv.migration_info(_inst()) == "0\n128\n2\n"
