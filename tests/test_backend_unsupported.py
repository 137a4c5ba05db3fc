"""DRBD, LVM, Open vSwitch and ExtStorage procedures answer as a Ganeti node without them.

Every answer is compared with the real Ganeti 3.0.2 node daemon code run
on this machine (which has no DRBD module, no LVM volume groups, no Open
vSwitch and no ExtStorage providers) on the same node root.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from real_ganeti import requires_real_ganeti
from real_noded_calls import our_call, real_call

from noded.backends import unsupported
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths

NO_DRBD = not os.path.exists("/proc/drbd")
requires_no_drbd = pytest.mark.skipif(not NO_DRBD, reason="the DRBD module is loaded on this machine")


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    paths.ensure_dirs()
    Path(paths.file_storage_paths_file).write_text(paths.file_storage_dir + "\n")
    os.makedirs(paths.file_storage_dir)
    return NodeContext(paths=paths)


def _disk(dev_type: str, logical_id: list[Any], iv_name: str, uuid: str,
          children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"dev_type": dev_type, "logical_id": logical_id, "children": children or [], "size": 100,
            "iv_name": iv_name, "uuid": uuid, "params": {}, "mode": "rw"}


def _plain(n: int = 1) -> dict[str, Any]:
    return _disk("plain", ["xenvg", f"lv{n}.data"], f"disk/{n}", f"uuid-plain-{n}")


def _drbd() -> dict[str, Any]:
    return _disk("drbd", ["node1", "node2", 11000, 0, 1, "secret"], "disk/0", "uuid-drbd",
                 [_plain(7), _plain(8)])


def _file(ctx: NodeContext, name: str, create: bool) -> dict[str, Any]:
    path = os.path.join(ctx.paths.file_storage_dir, name)
    if create:
        Path(path).write_bytes(b"\0" * 1024)
    return _disk("file", ["loop", path], f"disk/{name}", f"uuid-{name}")


def _compare(ctx: NodeContext, func: Callable[..., Any], name: str, *args: Any) -> list[Any]:
    ours = our_call(func, ctx, *args)
    theirs = real_call(Path(ctx.paths.root), name, *args)
    assert ours == theirs
    return ours


# -- plain answers, no Ganeti needed --------------------------------------------------

def test_vg_list_is_empty(ctx: NodeContext) -> None:
    assert unsupported.vg_list(ctx) == {}


def test_lv_list_of_no_group_is_empty(ctx: NodeContext) -> None:
    assert unsupported.lv_list(ctx, []) == {}


def test_lv_list_of_a_named_group_says_it_does_not_exist(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match='Volume group "xenvg" not found'):
        unsupported.lv_list(ctx, ["xenvg"])


def test_node_volumes_is_empty(ctx: NodeContext) -> None:
    assert unsupported.node_volumes(ctx) == []


def test_extstorage_diagnose_is_empty(ctx: NodeContext) -> None:
    assert unsupported.extstorage_diagnose(ctx) == []


@requires_no_drbd
def test_drbd_helper_fails_without_the_module(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail) as err:
        unsupported.drbd_helper(ctx)
    assert err.value.message.startswith("The file /sys/module/drbd/parameters/usermode_helper cannot be"
                                        " opened, check if the module is loaded ([Errno 2]")


def test_drbd_calls_on_no_disks_succeed(ctx: NodeContext) -> None:
    assert unsupported.drbd_disconnect_net(ctx, []) is None
    assert unsupported.drbd_attach_net(ctx, [], False) is None
    assert unsupported.drbd_wait_sync(ctx, []) == [True, 100]
    assert unsupported.drbd_needs_activation(ctx, []) == []


def test_pause_sync_of_a_file_disk_succeeds_and_of_a_missing_one_fails(ctx: NodeContext) -> None:
    disks = [_file(ctx, "there", True), _file(ctx, "gone", False), _plain()]
    assert unsupported.blockdev_pause_resume_sync(ctx, disks, True) == [
        [True, None], [False, "Cannot change sync for device disk/gone: device not found"],
        [False, "Cannot change sync for device disk/1: device not found"]]


def test_a_drbd_disk_fails_the_call(ctx: NodeContext) -> None:
    with pytest.raises(unsupported.DrbdNotAvailable):
        unsupported.blockdev_pause_resume_sync(ctx, [_drbd()], True)


def test_describe_disk_writes_disks_like_ganeti() -> None:
    assert unsupported.describe_disk(_plain()) == (
        "<LogicalVolume(/dev/xenvg/lv1.data, visible as /dev/disk/1, size=100m)>")
    assert unsupported.describe_disk(_drbd()).startswith(
        "<DRBD8(hosts=node1/0-node2/1, port=11000, backend=<LogicalVolume(/dev/xenvg/lv7.data")


# -- compared with the real Ganeti ------------------------------------------------------

@requires_real_ganeti
def test_lvm_answers_match_ganeti(ctx: NodeContext) -> None:
    _compare(ctx, unsupported.vg_list, "vg_list")
    _compare(ctx, unsupported.node_volumes, "node_volumes")
    _compare(ctx, unsupported.lv_list, "lv_list", [])
    _compare(ctx, unsupported.lv_list, "lv_list", None)


@requires_real_ganeti
@pytest.mark.skipif(shutil.which("lvs", path="/usr/sbin:/sbin:/usr/bin:/bin") is None,
                    reason="without lvm2 Ganeti's message is the missing lvs command")
def test_lv_list_of_missing_groups_matches_ganeti(ctx: NodeContext) -> None:
    _compare(ctx, unsupported.lv_list, "lv_list", ["xenvg", "other"])


@requires_real_ganeti
@requires_no_drbd
def test_drbd_helper_matches_ganeti(ctx: NodeContext) -> None:
    _compare(ctx, unsupported.drbd_helper, "drbd_helper")


@requires_real_ganeti
def test_extstorage_diagnose_matches_ganeti(ctx: NodeContext) -> None:
    _compare(ctx, unsupported.extstorage_diagnose, "extstorage_diagnose")


@requires_real_ganeti
@pytest.mark.skipif(shutil.which("ovs-vsctl") is not None, reason="Open vSwitch is installed here")
def test_configure_ovs_matches_ganeti(ctx: NodeContext) -> None:
    ours = _compare(ctx, unsupported.node_configure_ovs, "node_configure_ovs", "br-gtest", "eth9")
    assert "Can't execute 'ovs-vsctl --may-exist add-br br-gtest': not found" in ours[1]


@requires_real_ganeti
@requires_no_drbd
@pytest.mark.parametrize("name, args", [
    ("drbd_disconnect_net", lambda c: [[]]),
    ("drbd_disconnect_net", lambda c: [[_drbd()]]),
    ("drbd_disconnect_net", lambda c: [[_plain()]]),
    ("drbd_disconnect_net", lambda c: [[_file(c, "gone", False)]]),
    ("drbd_disconnect_net", lambda c: [[_file(c, "there", True)]]),
    ("drbd_attach_net", lambda c: [[], True]),
    ("drbd_attach_net", lambda c: [[_drbd()], False]),
    ("drbd_attach_net", lambda c: [[_file(c, "there", True)], False]),
    ("drbd_wait_sync", lambda c: [[]]),
    ("drbd_wait_sync", lambda c: [[_plain(), _drbd()]]),
    ("drbd_wait_sync", lambda c: [[_file(c, "there", True)]]),
    ("drbd_needs_activation", lambda c: [[]]),
    ("drbd_needs_activation", lambda c: [[_plain(1), _plain(2)]]),
    ("drbd_needs_activation", lambda c: [[_drbd()]]),
    ("drbd_needs_activation", lambda c: [[_file(c, "gone", False)]]),
    ("drbd_needs_activation", lambda c: [[_file(c, "there", True)]]),
    ("blockdev_pause_resume_sync", lambda c: [[_plain(), _file(c, "there", True), _file(c, "gone", False)],
                                              True]),
    ("blockdev_pause_resume_sync", lambda c: [[_plain(), _drbd()], False]),
    ("blockdev_pause_resume_sync", lambda c: [[_disk("diskless", [], "disk/9", "u9")], False]),
    ("blockdev_pause_resume_sync", lambda c: [[_disk("file", ["loop", c.paths.root + "/srv/elsewhere/x"],
                                                     "disk/9", "u9")], False]),
    ("blockdev_addchildren", lambda c: [_drbd(), [_plain()]]),
    ("blockdev_addchildren", lambda c: [_plain(), [_plain(2)]]),
    ("blockdev_addchildren", lambda c: [_file(c, "there", True), [_file(c, "there", True)]]),
    ("blockdev_removechildren", lambda c: [_drbd(), [_plain()]]),
    ("blockdev_removechildren", lambda c: [_file(c, "gone", False), [_plain()]]),
    ("blockdev_removechildren", lambda c: [_file(c, "there", True), [_plain()]]),
])
def test_disk_procedures_match_ganeti(ctx: NodeContext, name: str,
                                      args: Callable[[NodeContext], list[Any]]) -> None:
    _compare(ctx, getattr(unsupported, name), name, *args(ctx))
