"""File storage directories and storage units, compared with the real Ganeti 3.0.2 backend.

Each comparison runs the same call on two alike node roots, one with our
backend and one with Ganeti's own (tests/twin_nodes.py). Where we
deliberately differ (the file-storage-paths check on create, messages for
operations Ganeti answers with an empty text) the test says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from real_ganeti import requires_real_ganeti
from real_noded_calls import our_call
from twin_nodes import Twins, make_node, make_twins

from noded.backends import storage
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import VIRTUAL_PATH_PREFIX, Paths

FIELDS = ["name", "size", "used", "free", "allocatable"]
MIB = 1024 * 1024
ABSENT_VG = "gnt-test-absent-vg"


def _lvm_tools_without_volumes() -> bool:
    """Whether lvm2 is installed and this machine has no volume group and no physical volume."""
    for tool in ("vgs", "pvs"):
        exe = shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
        if exe is None:
            return False
        res = subprocess.run([exe, "--noheadings"], capture_output=True, text=True, check=False,
                             stdin=subprocess.DEVNULL)
        if res.returncode != 0 or res.stdout.strip():
            return False
    return True


requires_lvm_without_volumes = pytest.mark.skipif(
    not _lvm_tools_without_volumes(),
    reason="Ganeti's answers come from lvm2 run on a machine without volume groups")


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    return make_node(tmp_path)


@pytest.fixture
def twins(tmp_path: Path) -> Twins:
    return make_twins(tmp_path)


def _fs(paths: Paths, name: str = "") -> str:
    return os.path.join(paths.file_storage_dir, name) if name else paths.file_storage_dir


def _instance_dir(paths: Paths) -> str:
    return _fs(paths, "inst1.example.com")


# -- file_storage_dir_create ---------------------------------------------------------

@requires_real_ganeti
def test_create_makes_the_directory_with_mode_0750_like_ganeti(twins: Twins) -> None:
    assert twins.compare(storage.file_storage_dir_create, "file_storage_dir_create",
                         lambda p: [_fs(p, "inst1/disks")]) == [True, None]
    assert twins.same_files(_fs)["inst1/disks"] == "dir 0o750"


@requires_real_ganeti
def test_create_of_an_existing_directory_succeeds_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: os.makedirs(_instance_dir(p)))
    assert twins.compare(storage.file_storage_dir_create, "file_storage_dir_create",
                         lambda p: [_instance_dir(p)]) == [True, None]


@requires_real_ganeti
def test_create_over_a_plain_file_fails_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: Path(_instance_dir(p)).write_text("x\n"))
    assert twins.compare(storage.file_storage_dir_create, "file_storage_dir_create",
                         lambda p: [_instance_dir(p)]) == [
        False, "Specified storage dir '<ROOT>/srv/ganeti/file-storage/inst1.example.com' is not a directory"]


def test_create_outside_the_allowed_paths_is_refused_naming_the_file(ctx: NodeContext) -> None:
    # Ganeti 3.0.2 ignores the result of this check and creates the directory anyway.
    elsewhere = ctx.paths.under_root("/srv/elsewhere/inst1")
    with pytest.raises(RpcFail) as err:
        storage.file_storage_dir_create(ctx, elsewhere)
    assert err.value.message == (
        f"Path '{elsewhere}' is not acceptable for file storage (the directories allowed for file"
        f" storage are listed in '{ctx.paths.file_storage_paths_file}')")
    assert not os.path.exists(elsewhere)


def test_create_without_a_file_storage_paths_file_is_refused(ctx: NodeContext) -> None:
    os.unlink(ctx.paths.file_storage_paths_file)
    with pytest.raises(RpcFail, match=r"No paths are valid or path file '.*/etc/ganeti/file-storage-paths'"
                                      r" was not accessible"):
        storage.file_storage_dir_create(ctx, _instance_dir(ctx.paths))
    assert not os.path.exists(_instance_dir(ctx.paths))


def test_create_in_a_system_directory_is_refused_even_when_listed(ctx: NodeContext) -> None:
    system = ctx.paths.under_root("/etc/ganeti")
    Path(ctx.paths.file_storage_paths_file).write_text(system + "\n")
    with pytest.raises(RpcFail, match="uses a forbidden prefix"):
        storage.file_storage_dir_create(ctx, system + "/inst1")


def test_create_of_a_listed_directory_itself_is_allowed(ctx: NodeContext) -> None:
    shutil.rmtree(ctx.paths.file_storage_dir)
    storage.file_storage_dir_create(ctx, ctx.paths.file_storage_dir)
    assert os.path.isdir(ctx.paths.file_storage_dir)


def test_create_maps_a_virtual_path_below_the_root(ctx: NodeContext) -> None:
    storage.file_storage_dir_create(ctx, VIRTUAL_PATH_PREFIX + "/srv/ganeti/file-storage/inst1")
    assert os.path.isdir(_fs(ctx.paths, "inst1"))


def test_create_maps_a_plain_node_path_below_the_root(ctx: NodeContext) -> None:
    storage.file_storage_dir_create(ctx, "/srv/ganeti/file-storage/inst2")
    assert os.path.isdir(_fs(ctx.paths, "inst2"))
    assert not os.path.exists("/srv/ganeti/file-storage/inst2")


# -- file_storage_dir_remove -----------------------------------------------------------

@requires_real_ganeti
def test_remove_deletes_an_empty_directory_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: os.makedirs(_instance_dir(p)))
    assert twins.compare(storage.file_storage_dir_remove, "file_storage_dir_remove",
                         lambda p: [_instance_dir(p)]) == [True, None]
    assert twins.same_files(_fs) == {}


@requires_real_ganeti
def test_remove_of_a_missing_directory_succeeds_like_ganeti(twins: Twins) -> None:
    assert twins.compare(storage.file_storage_dir_remove, "file_storage_dir_remove",
                         lambda p: [_instance_dir(p)]) == [True, None]


@requires_real_ganeti
def test_remove_of_a_directory_with_files_fails_like_ganeti(twins: Twins) -> None:
    def fill(p: Paths) -> None:
        os.makedirs(_instance_dir(p))
        Path(_instance_dir(p), "disk0").write_text("")

    twins.setup(fill)
    ok, text = twins.compare(storage.file_storage_dir_remove, "file_storage_dir_remove",
                             lambda p: [_instance_dir(p)])
    assert not ok and text.startswith("Cannot remove file storage directory '<ROOT>/srv/ganeti/file-storage/"
                                      "inst1.example.com': [Errno 39] Directory not empty")
    assert "inst1.example.com/disk0" in twins.same_files(_fs)


@requires_real_ganeti
def test_remove_of_a_plain_file_fails_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: Path(_instance_dir(p)).write_text("x\n"))
    ok, text = twins.compare(storage.file_storage_dir_remove, "file_storage_dir_remove",
                             lambda p: [_instance_dir(p)])
    assert not ok and "is not a directory" in text


def test_remove_outside_the_allowed_paths_is_refused(ctx: NodeContext) -> None:
    elsewhere = ctx.paths.under_root("/srv/elsewhere")
    os.makedirs(elsewhere)
    with pytest.raises(RpcFail, match="is not acceptable for file storage"):
        storage.file_storage_dir_remove(ctx, elsewhere)
    assert os.path.isdir(elsewhere)


# -- file_storage_dir_rename -------------------------------------------------------------

@requires_real_ganeti
def test_rename_moves_the_directory_like_ganeti(twins: Twins) -> None:
    def fill(p: Paths) -> None:
        os.makedirs(_fs(p, "old"))
        Path(_fs(p, "old"), "disk0").write_text("d")

    twins.setup(fill)
    assert twins.compare(storage.file_storage_dir_rename, "file_storage_dir_rename",
                         lambda p: [_fs(p, "old"), _fs(p, "new")]) == [True, None]
    assert set(twins.same_files(_fs)) == {"new", "new/disk0"}


@requires_real_ganeti
def test_rename_when_both_exist_fails_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: os.makedirs(_fs(p, "old")))
    twins.setup(lambda p: os.makedirs(_fs(p, "new")))
    assert twins.compare(storage.file_storage_dir_rename, "file_storage_dir_rename",
                         lambda p: [_fs(p, "old"), _fs(p, "new")]) == [
        False, "Cannot rename '<ROOT>/srv/ganeti/file-storage/old' to '<ROOT>/srv/ganeti/file-storage/new':"
               " both locations exist"]


@requires_real_ganeti
def test_rename_already_done_succeeds_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: os.makedirs(_fs(p, "new")))
    assert twins.compare(storage.file_storage_dir_rename, "file_storage_dir_rename",
                         lambda p: [_fs(p, "old"), _fs(p, "new")]) == [True, None]


@requires_real_ganeti
def test_rename_of_a_missing_directory_fails_like_ganeti(twins: Twins) -> None:
    assert twins.compare(storage.file_storage_dir_rename, "file_storage_dir_rename",
                         lambda p: [_fs(p, "old"), _fs(p, "new")]) == [
        False, "Specified storage dir '<ROOT>/srv/ganeti/file-storage/old' is not a directory"]


def test_rename_to_a_directory_outside_the_allowed_paths_is_refused(ctx: NodeContext) -> None:
    os.makedirs(_fs(ctx.paths, "old"))
    elsewhere = ctx.paths.under_root("/srv/elsewhere")
    with pytest.raises(RpcFail, match="is not acceptable for file storage"):
        storage.file_storage_dir_rename(ctx, _fs(ctx.paths, "old"), elsewhere)
    assert os.path.isdir(_fs(ctx.paths, "old")) and not os.path.exists(elsewhere)


# -- storage_list, file types -------------------------------------------------------------

def _rows_without_free(answer: list[Any]) -> list[Any]:
    ok, rows = answer
    return [ok, [[*row[:3], row[4]] for row in rows]]


@requires_real_ganeti
def test_storage_list_reports_a_file_storage_dir_in_mib_like_ganeti(twins: Twins) -> None:
    def fill(p: Paths) -> None:
        with open(_fs(p, "disk0"), "wb") as f:
            f.truncate(3 * MIB + 600 * 1024)  # rounds to 4 MiB, as Ganeti rounds

    twins.setup(fill)
    ours, real = twins.answers(storage.storage_list, "storage_list",
                               lambda p: ["file", [[_fs(p)]], None, FIELDS])
    assert _rows_without_free(ours) == _rows_without_free(real)
    [row] = ours[1]
    st = os.statvfs(twins.ours.paths.file_storage_dir)
    assert row[:3] == ["<ROOT>/srv/ganeti/file-storage", round(st.f_blocks * st.f_frsize / MIB), 4]
    assert abs(row[3] - real[1][0][3]) <= 64 and row[4] is True


@requires_real_ganeti
def test_storage_list_keeps_the_requested_field_order_like_ganeti(twins: Twins) -> None:
    ours = twins.compare(storage.storage_list, "storage_list",
                         lambda p: ["sharedfile", [[p.shared_file_storage_dir]], None,
                                    ["allocatable", "used", "name", "used"]])
    assert ours == [True, [[True, 0, "<ROOT>/srv/ganeti/shared-file-storage", 0]]]


@requires_real_ganeti
def test_storage_list_of_a_named_directory_lists_only_it_like_ganeti(twins: Twins) -> None:
    ours = twins.compare(storage.storage_list, "storage_list",
                         lambda p: ["file", [[_fs(p), p.shared_file_storage_dir]],
                                    p.shared_file_storage_dir, ["name", "used"]])
    assert ours == [True, [["<ROOT>/srv/ganeti/shared-file-storage", 0]]]


@requires_real_ganeti
def test_storage_list_of_a_missing_directory_fails_like_ganeti(twins: Twins) -> None:
    ours = twins.compare(storage.storage_list, "storage_list",
                         lambda p: ["file", [[_fs(p, "nothere")]], None, ["name", "size"]])
    assert ours == [False, "Error while executing backend function: [Errno 2] No such file or directory:"
                           " '<ROOT>/srv/ganeti/file-storage/nothere'"]


@requires_real_ganeti
def test_storage_list_of_an_unknown_field_fails_like_ganeti(twins: Twins) -> None:
    ours = twins.compare(storage.storage_list, "storage_list",
                         lambda p: ["file", [[_fs(p)]], None, ["name", "type"]])
    assert ours == [False, "Error while executing backend function: Unknown field: 'type'"]


@requires_real_ganeti
def test_storage_list_of_an_unknown_type_fails_like_ganeti(twins: Twins) -> None:
    ours = twins.compare(storage.storage_list, "storage_list", lambda p: ["nosuch", [], None, ["name"]])
    assert ours == [False, "Error while executing backend function: Unknown storage type: 'nosuch'"]


def test_storage_list_of_file_storage_without_its_directories_fails(ctx: NodeContext) -> None:
    ok, text = our_call(storage.storage_list, ctx, "file", [], None, ["name"])
    assert not ok and "takes one argument (the list of its directories), got 0" in text


# -- storage_list, LVM (none here) -------------------------------------------------------------

@requires_real_ganeti
@requires_lvm_without_volumes
@pytest.mark.parametrize("kind", ["lvm-vg", "lvm-pv"])
def test_storage_list_of_all_lvm_entities_is_empty_like_ganeti(twins: Twins, kind: str) -> None:
    assert twins.compare(storage.storage_list, "storage_list",
                         lambda p: [kind, [], None, FIELDS]) == [True, []]


@requires_real_ganeti
@requires_lvm_without_volumes
@pytest.mark.parametrize(("kind", "name", "fields"), [
    ("lvm-vg", ABSENT_VG, FIELDS), ("lvm-pv", "/dev/gnt-test-absent", FIELDS),
    ("lvm-pv", "/dev/gnt-test-absent", ["name"])])
def test_storage_list_of_a_named_lvm_entity_fails_like_ganeti(
        twins: Twins, kind: str, name: str, fields: list[str]) -> None:
    ok, text = twins.compare(storage.storage_list, "storage_list", lambda p: [kind, [], name, fields])
    assert not ok and "Failed to run" in text


def test_storage_list_of_an_unknown_lvm_field_names_it(ctx: NodeContext) -> None:
    # Ganeti answers only "'type'" here (a KeyError of its own).
    assert our_call(storage.storage_list, ctx, "lvm-vg", [], None, ["name", "type"]) == [
        False, "Error while executing backend function: Unknown field: 'type'"]


def test_storage_list_of_lvm_with_arguments_fails(ctx: NodeContext) -> None:
    ok, text = our_call(storage.storage_list, ctx, "lvm-pv", [["/x"]], None, ["name"])
    assert not ok and "takes no arguments, got 1" in text


# -- storage_modify / storage_execute ------------------------------------------------------------

@requires_real_ganeti
def test_storage_modify_of_file_storage_without_changes_succeeds_like_ganeti(twins: Twins) -> None:
    assert twins.compare(storage.storage_modify, "storage_modify",
                         lambda p: ["file", [[_fs(p)]], _fs(p), {}]) == [True, None]


@requires_real_ganeti
def test_storage_modify_of_file_storage_fails_like_ganeti(twins: Twins) -> None:
    assert twins.compare(storage.storage_modify, "storage_modify",
                         lambda p: ["file", [[_fs(p)]], _fs(p), {"allocatable": False}]) == [
        False, "Error while executing backend function: Unable to modify the followingfields:"
               " ['allocatable']"]


@requires_real_ganeti
@requires_lvm_without_volumes
def test_storage_modify_of_an_absent_physical_volume_fails_like_ganeti(twins: Twins) -> None:
    ok, text = twins.compare(storage.storage_modify, "storage_modify",
                             lambda p: ["lvm-pv", [], "/dev/gnt-test-absent", {"allocatable": False}])
    assert not ok and "pvchange output" in text


@requires_real_ganeti
@requires_lvm_without_volumes
def test_storage_execute_fix_consistency_of_an_absent_volume_group_fails_like_ganeti(twins: Twins) -> None:
    ok, text = twins.compare(storage.storage_execute, "storage_execute",
                             lambda p: ["lvm-vg", [], ABSENT_VG, "fix-consistency"])
    assert not ok and f"Volume group '{ABSENT_VG}' still not consistent" in text


@requires_real_ganeti
def test_storage_execute_on_file_storage_fails_naming_the_operation(twins: Twins) -> None:
    ours, real = twins.answers(storage.storage_execute, "storage_execute",
                               lambda p: ["file", [[_fs(p)]], _fs(p), "fix-consistency"])
    assert real == [False, "Error while executing backend function: "]  # Ganeti says nothing more
    assert ours == [False, "Error while executing backend function: Operation 'fix-consistency' is not"
                           " supported for storage type 'file'"]
