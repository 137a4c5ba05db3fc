"""Exports kept on the node: export_list, export_info, export_remove, compared with the real Ganeti 3.0.2.

Each comparison runs the same call on two alike node roots, one with our
backend and one with Ganeti's own (tests/twin_nodes.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from real_ganeti import requires_real_ganeti
from twin_nodes import Twins, make_node, make_twins

from noded.backends import exports
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import VIRTUAL_PATH_PREFIX, Paths

INSTANCE = "inst1.example.com"
CONFIG = """# written by hand
[export]
Version = 0
timestamp=1700000000
source : node1

[instance]
name = inst1.example.com
disk_count = 1
multi = first
  second line

[hypervisor]
"""


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    return make_node(tmp_path)


@pytest.fixture
def twins(tmp_path: Path) -> Twins:
    return make_twins(tmp_path)


def _export(paths: Paths, name: str = INSTANCE) -> str:
    return os.path.join(paths.export_dir, name)


def _write_export(paths: Paths, config: str | None = CONFIG, name: str = INSTANCE) -> None:
    os.makedirs(_export(paths, name))
    Path(_export(paths, name), "disk0.snap").write_bytes(b"\0" * 4096)
    if config is not None:
        Path(_export(paths, name), "config.ini").write_text(config)


# -- export_list ------------------------------------------------------------------------

@requires_real_ganeti
def test_export_list_without_the_export_dir_fails_like_ganeti(twins: Twins) -> None:
    assert twins.compare(exports.export_list, "export_list", lambda p: []) == [False, "No exports directory"]


@requires_real_ganeti
def test_export_list_names_the_visible_exports_sorted_like_ganeti(twins: Twins) -> None:
    def fill(p: Paths) -> None:
        for name in ("inst-b", "inst-a", ".hidden", "lost+found"):
            os.makedirs(_export(p, name))
        Path(_export(p, "a-file")).write_text("")

    twins.setup(fill)
    assert twins.compare(exports.export_list, "export_list", lambda p: []) == [
        True, ["a-file", "inst-a", "inst-b", "lost+found"]]


@requires_real_ganeti
def test_export_list_when_the_export_dir_is_a_file_fails_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: Path(p.export_dir).write_text(""))
    assert twins.compare(exports.export_list, "export_list", lambda p: []) == [False, "No exports directory"]


def test_export_list_of_an_empty_export_dir_is_empty(ctx: NodeContext) -> None:
    os.makedirs(ctx.paths.export_dir)
    assert exports.export_list(ctx) == []


# -- export_info --------------------------------------------------------------------------

@requires_real_ganeti
def test_export_info_answers_the_description_rewritten_like_ganeti(twins: Twins) -> None:
    twins.setup(_write_export)
    ours = twins.compare(exports.export_info, "export_info", lambda p: [_export(p)])
    assert ours == [True, "[export]\nversion = 0\ntimestamp = 1700000000\nsource = node1\n\n"
                          "[instance]\nname = inst1.example.com\ndisk_count = 1\n"
                          "multi = first\n\tsecond line\n\n[hypervisor]\n\n"]


@requires_real_ganeti
def test_export_info_without_a_config_file_fails_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: _write_export(p, config=None))
    assert twins.compare(exports.export_info, "export_info", lambda p: [_export(p)]) == [
        False, "Export info file doesn't have the required fields"]


@requires_real_ganeti
def test_export_info_without_the_instance_section_fails_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: _write_export(p, config="[export]\nversion = 0\n"))
    assert twins.compare(exports.export_info, "export_info", lambda p: [_export(p)]) == [
        False, "Export info file doesn't have the required fields"]


@requires_real_ganeti
def test_export_info_of_a_file_that_is_no_ini_fails_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: _write_export(p, config="not an ini file\n"))
    ok, text = twins.compare(exports.export_info, "export_info", lambda p: [_export(p)])
    assert not ok and "File contains no section headers" in text


def test_export_info_maps_a_virtual_path_below_the_root(ctx: NodeContext) -> None:
    _write_export(ctx.paths)
    answer = exports.export_info(ctx, VIRTUAL_PATH_PREFIX + f"/var/lib/ganeti/export/{INSTANCE}")
    assert answer.startswith("[export]\nversion = 0\n")


def test_export_info_of_a_relative_path_is_refused(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="must be an absolute path"):
        exports.export_info(ctx, f"var/lib/ganeti/export/{INSTANCE}")


# -- export_remove ------------------------------------------------------------------------

@requires_real_ganeti
def test_export_remove_deletes_the_export_with_its_files_like_ganeti(twins: Twins) -> None:
    twins.setup(_write_export)
    twins.setup(lambda p: _write_export(p, name="other"))
    assert twins.compare(exports.export_remove, "export_remove", lambda p: [INSTANCE]) == [True, None]
    assert set(twins.same_files(lambda p: p.export_dir)) == {"other", "other/disk0.snap", "other/config.ini"}


@requires_real_ganeti
def test_export_remove_of_a_missing_export_fails_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: os.makedirs(p.export_dir))
    assert twins.compare(exports.export_remove, "export_remove", lambda p: ["nosuch"]) == [
        False, "Error while removing the export: [Errno 2] No such file or directory:"
               " '<ROOT>/var/lib/ganeti/export/nosuch'"]


@requires_real_ganeti
def test_export_remove_of_a_plain_file_fails_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: os.makedirs(p.export_dir))
    twins.setup(lambda p: Path(_export(p)).write_text("x"))
    ok, text = twins.compare(exports.export_remove, "export_remove", lambda p: [INSTANCE])
    assert not ok and text.startswith("Error while removing the export: [Errno 20] Not a directory")


@pytest.mark.parametrize("name", ["../queue", "sub/dir", "", ".", ".."])
def test_export_remove_refuses_anything_but_a_plain_name(ctx: NodeContext, name: str) -> None:
    os.makedirs(_export(ctx.paths, "sub/dir"))
    with pytest.raises(RpcFail, match="it must be the plain name of an entry of"):
        exports.export_remove(ctx, name)
    assert os.path.isdir(_export(ctx.paths, "sub/dir")) and os.path.isdir(ctx.paths.queue_dir)


def test_export_remove_does_not_follow_a_symlink(ctx: NodeContext) -> None:
    os.makedirs(ctx.paths.export_dir)
    os.symlink(ctx.paths.queue_dir, _export(ctx.paths, "link"))
    with pytest.raises(RpcFail, match=r"^Error while removing the export: Cannot call rmtree on a symbolic"):
        exports.export_remove(ctx, "link")
    assert os.path.isdir(ctx.paths.queue_dir)
