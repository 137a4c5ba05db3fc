"""Block device procedures for file disks, compared with the real Ganeti 3.0.2 backend.

The comparisons make the same call on two alike node roots, one with our
backend and one with Ganeti's own (tests/twin_nodes.py), and compare the
answers and the files left behind. Where Ganeti answers an unexpected
exception ("Error while executing backend function: <text>") and ours
answers the same text as a plain failure, the two count as equal. Where we
deliberately differ (stricter checks on bad input, the link removal on
shutdown), the test says so and checks ours alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from real_ganeti import requires_real_ganeti
from real_noded_calls import BACKEND_ERROR_PREFIX, our_call
from twin_nodes import Twins, make_node, make_twins

from noded.backends import blockdev
from noded.context import NodeContext
from noded.disks import links
from noded.disks.base import DeviceError, DiskConfigError
from noded.errors import RpcFail
from noded.paths import VIRTUAL_PATH_PREFIX, Paths

MIB = 1024 * 1024
INSTANCE = "inst1.example.com"


# -- helpers ------------------------------------------------------------------------------

def _prepare(paths: Paths) -> None:
    """What Ganeti's ensure-dirs and file_storage_dir_create leave: the run dirs and inst1's directory."""
    for d in ("instance-disks", "bdev-cache"):
        os.makedirs(os.path.join(paths.run_dir, d), exist_ok=True)
    os.makedirs(os.path.join(paths.file_storage_dir, "inst1"), exist_ok=True)
    os.makedirs(os.path.join(paths.shared_file_storage_dir, "inst1"), exist_ok=True)


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    node = make_node(tmp_path)
    _prepare(node.paths)
    return node


@pytest.fixture
def twins(tmp_path: Path) -> Twins:
    pair = make_twins(tmp_path)
    pair.setup(_prepare)
    return pair


def disk_path(paths: Paths, name: str = "inst1/disk0", shared: bool = False) -> str:
    base = paths.shared_file_storage_dir if shared else paths.file_storage_dir
    return os.path.join(base, name)


def file_disk(paths: Paths, name: str = "inst1/disk0", size: int = 10, dev_type: str = "file",
              path: str | None = None, **extra: Any) -> dict[str, Any]:
    """A file disk dict as a master sends it (objects.Disk.ToDict with params filled in)."""
    return {"dev_type": dev_type,
            "logical_id": ["loop", path or disk_path(paths, name, shared=dev_type == "sharedfile")],
            "children": [], "iv_name": "disk/0", "size": size, "mode": "rw", "params": {},
            "uuid": "5e1e1e1e-0000-4000-8000-000000000001", "name": None, **extra}


def instance(paths: Paths, *disks: dict[str, Any]) -> dict[str, Any]:
    return {"name": INSTANCE, "hypervisor": "fake", "disks_info": list(disks), "disk_template": "file"}


def make_file(path: str, size_mib: int = 10, content: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.write(content)
        f.truncate(size_mib * MIB)


def text(answer: list[Any]) -> list[Any]:
    """An answer with Ganeti's unexpected-exception prefix taken off a failure text."""
    ok, value = answer
    if not ok and isinstance(value, str) and value.startswith(BACKEND_ERROR_PREFIX):
        value = value[len(BACKEND_ERROR_PREFIX):]
    return [ok, value]


def same(twins: Twins, func: Callable[..., Any], name: str, args: Callable[[Paths], list[Any]]) -> list[Any]:
    """Make the call on both nodes; the answers (prefix aside) must be equal. Returns ours."""
    ours, real = twins.answers(func, name, args)
    assert text(ours) == text(real)
    return text(ours)


def both_files(twins: Twins, action: Callable[[Paths], object]) -> None:
    twins.setup(action)


def _storage(paths: Paths) -> str:
    return paths.file_storage_dir


def _links(paths: Paths) -> str:
    return os.path.join(paths.run_dir, "instance-disks")


# -- blockdev_create ------------------------------------------------------------------------

@requires_real_ganeti
def test_create_makes_a_sparse_file_of_the_disk_size_like_ganeti(twins: Twins) -> None:
    answer = same(twins, blockdev.blockdev_create, "blockdev_create",
                  lambda p: [file_disk(p), 10, INSTANCE, True, "originstname+inst1", False])
    assert answer == [True, ["loop", "<ROOT>/srv/ganeti/file-storage/inst1/disk0"]]
    assert "inst1/disk0" in twins.same_files(_storage)
    st = os.stat(disk_path(twins.ours.paths))
    assert st.st_size == 10 * MIB
    assert st.st_blocks * 512 < MIB


@requires_real_ganeti
def test_create_on_the_primary_records_the_device_cache_like_ganeti(twins: Twins) -> None:
    same(twins, blockdev.blockdev_create, "blockdev_create",
         lambda p: [file_disk(p), 10, INSTANCE, True, "", False])
    ours, real = ([n.replace(p.root.replace("/", "_"), "<ROOT>")
                   for n in os.listdir(os.path.join(p.run_dir, "bdev-cache"))] for p in twins.both)
    assert ours == real == ["bdev_<ROOT>_srv_ganeti_file-storage_inst1_disk0"]
    ours_file, real_file = (next(Path(p.run_dir, "bdev-cache").iterdir()) for p in twins.both)
    content = ours_file.read_text()
    assert content == real_file.read_text()
    assert content == f"{INSTANCE} primary disk/0\n"


@requires_real_ganeti
def test_create_of_an_existing_file_fails_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p), 1, b"keep"))
    answer = same(twins, blockdev.blockdev_create, "blockdev_create",
                  lambda p: [file_disk(p), 10, INSTANCE, True, "", False])
    assert answer == [False, "Can't create block device: <ROOT>/srv/ganeti/file-storage/inst1/disk0: can't"
                             " create: [Errno 17] File exists: '<ROOT>/srv/ganeti/file-storage/inst1/disk0'"]
    assert Path(disk_path(twins.ours.paths)).read_bytes()[:4] == b"keep"
    assert os.path.getsize(disk_path(twins.ours.paths)) == MIB


@requires_real_ganeti
def test_create_in_a_missing_directory_fails_like_ganeti(twins: Twins) -> None:
    ok, message = same(twins, blockdev.blockdev_create, "blockdev_create",
                       lambda p: [file_disk(p, "inst2/disk0"), 10, INSTANCE, True, "", False])
    assert not ok and "[Errno 2] No such file or directory" in message


@requires_real_ganeti
def test_create_of_a_sharedfile_disk_like_ganeti(twins: Twins) -> None:
    answer = same(twins, blockdev.blockdev_create, "blockdev_create",
                  lambda p: [file_disk(p, dev_type="sharedfile"), 4, INSTANCE, False, "", False])
    assert answer == [True, ["loop", "<ROOT>/srv/ganeti/shared-file-storage/inst1/disk0"]]
    assert os.path.getsize(disk_path(twins.ours.paths, shared=True)) == 10 * MIB


@requires_real_ganeti
def test_create_outside_the_allowed_paths_fails_like_ganeti_and_creates_nothing(twins: Twins) -> None:
    both_files(twins, lambda p: os.makedirs(p.under_root("/srv/elsewhere")))
    ours, real = twins.answers(blockdev.blockdev_create, "blockdev_create",
                               lambda p: [file_disk(p, path=p.under_root("/srv/elsewhere/disk0")), 10,
                                          INSTANCE, True, "", False])
    assert text(real) == [False, "Path '<ROOT>/srv/elsewhere/disk0' is not acceptable for file storage"]
    assert ours == [False, "Path '<ROOT>/srv/elsewhere/disk0' is not acceptable for file storage (the"
                           " directories allowed for file storage are listed in"
                           " '<ROOT>/etc/ganeti/file-storage-paths')"]
    assert not os.path.exists(twins.ours.paths.under_root("/srv/elsewhere/disk0"))


def test_create_with_dotdot_in_the_path_is_refused(ctx: NodeContext) -> None:
    sneaky = os.path.join(ctx.paths.file_storage_dir, "inst1/../../file-storage/inst1/disk0")
    with pytest.raises(RpcFail, match=r"must not contain '\.\.'"):
        blockdev.blockdev_create(ctx, file_disk(ctx.paths, path=sneaky), 10, INSTANCE, True, "", False)
    assert not os.path.exists(disk_path(ctx.paths))


@pytest.mark.parametrize("size", [-1, 1.5, "10", None, True])
def test_create_with_a_size_that_is_not_a_whole_number_of_mib_is_refused(ctx: NodeContext, size: Any) -> None:
    with pytest.raises(RpcFail, match="Invalid disk size"):
        blockdev.blockdev_create(ctx, file_disk(ctx.paths, size=size), 10, INSTANCE, True, "", False)
    assert not os.path.exists(disk_path(ctx.paths))


def test_create_larger_than_the_free_space_is_refused_with_ganetis_words(ctx: NodeContext) -> None:
    st = os.statvfs(ctx.paths.file_storage_dir)
    too_big = (st.f_bavail * st.f_frsize) // MIB + 1024
    with pytest.raises(RpcFail) as err:
        blockdev.blockdev_create(ctx, file_disk(ctx.paths, size=too_big), too_big, INSTANCE, True, "", False)
    assert err.value.message.startswith(f"Can't create block device: {disk_path(ctx.paths)}: can't create:"
                                        f" Not enough free space: required {too_big}, available ")
    assert not os.path.exists(disk_path(ctx.paths))


@pytest.mark.parametrize("dev_type", ["floppy", "diskless"])
def test_create_of_an_unknown_or_diskless_type_is_refused(ctx: NodeContext, dev_type: str) -> None:
    with pytest.raises(RpcFail, match=f"Invalid block device type '{dev_type}'"):
        blockdev.blockdev_create(ctx, file_disk(ctx.paths, dev_type=dev_type), 10, INSTANCE, True, "", False)
    assert not os.path.exists(disk_path(ctx.paths))


def test_create_of_an_lvm_disk_says_the_template_is_not_supported(ctx: NodeContext) -> None:
    disk = {**file_disk(ctx.paths), "dev_type": "plain", "logical_id": ["xenvg", "disk0"]}
    with pytest.raises(RpcFail, match=r"Disk template 'plain' is not supported on this node.*no LVM"):
        blockdev.blockdev_create(ctx, disk, 10, INSTANCE, True, "", False)


def test_create_with_exclusive_storage_is_refused(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="FileStorage device requested with exclusive_storage"):
        blockdev.blockdev_create(ctx, file_disk(ctx.paths), 10, INSTANCE, True, "", True)
    assert not os.path.exists(disk_path(ctx.paths))


def test_create_maps_a_virtual_path_below_the_root(ctx: NodeContext) -> None:
    virtual = VIRTUAL_PATH_PREFIX + "/srv/ganeti/file-storage/inst1/disk0"
    answer = blockdev.blockdev_create(ctx, file_disk(ctx.paths, path=virtual), 10, INSTANCE, True, "", False)
    assert answer == ["loop", virtual]
    assert os.path.getsize(disk_path(ctx.paths)) == 10 * MIB


def test_create_maps_a_plain_node_path_below_the_root(ctx: NodeContext) -> None:
    blockdev.blockdev_create(ctx, file_disk(ctx.paths, path="/srv/ganeti/file-storage/inst1/disk0"), 10,
                             INSTANCE, True, "", False)
    assert os.path.getsize(disk_path(ctx.paths)) == 10 * MIB


# -- blockdev_find, getdimensions, mirror status ------------------------------------------------------

@requires_real_ganeti
def test_find_reports_an_existing_file_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    assert same(twins, blockdev.blockdev_find, "blockdev_find", lambda p: [file_disk(p)]) == [
        True, {"dev_path": "<ROOT>/srv/ganeti/file-storage/inst1/disk0", "is_degraded": False,
               "ldisk_status": 1}]


@requires_real_ganeti
def test_find_of_a_missing_file_is_null_like_ganeti(twins: Twins) -> None:
    assert same(twins, blockdev.blockdev_find, "blockdev_find", lambda p: [file_disk(p)]) == [True, None]


@requires_real_ganeti
def test_find_outside_the_allowed_paths_fails_like_ganeti(twins: Twins) -> None:
    ours, real = twins.answers(blockdev.blockdev_find, "blockdev_find",
                               lambda p: [file_disk(p, path=p.under_root("/srv/other/disk0"))])
    assert not ours[0] and text(real)[1] in ours[1]


@requires_real_ganeti
def test_find_of_a_file_disk_with_children_fails_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    ok, message = same(twins, blockdev.blockdev_find, "blockdev_find",
                       lambda p: [file_disk(p, children=[file_disk(p, "inst1/disk1")])])
    assert (ok, message) == (False, "Failed to find device: Invalid setup for file device")


@requires_real_ganeti
def test_find_of_an_unknown_disk_type_fails_like_ganeti(twins: Twins) -> None:
    assert same(twins, blockdev.blockdev_find, "blockdev_find",
                lambda p: [file_disk(p, dev_type="floppy")]) == [False, "Invalid block device type 'floppy'"]


@requires_real_ganeti
def test_find_of_a_drbd_disk_fails_like_ganeti_without_drbd(twins: Twins) -> None:
    def drbd(p: Paths) -> list[Any]:
        return [{**file_disk(p), "dev_type": "drbd",
                 "logical_id": ["node1-uuid", "node2-uuid", 11000, 0, 0, "secret"]}]

    assert same(twins, blockdev.blockdev_find, "blockdev_find", drbd) == [
        False, "argument of type 'NoneType' is not iterable"]


@requires_real_ganeti
def test_getdimensions_reports_bytes_and_null_for_a_missing_disk_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p), 3))
    assert same(twins, blockdev.blockdev_getdimensions, "blockdev_getdimensions",
                lambda p: [[file_disk(p), file_disk(p, "inst1/disk9")]]) == [True, [[3 * MIB, None], None]]


@requires_real_ganeti
def test_getmirrorstatus_of_present_disks_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    ok, statuses = same(twins, blockdev.blockdev_getmirrorstatus, "blockdev_getmirrorstatus",
                        lambda p: [[file_disk(p)]])
    assert ok and statuses[0]["ldisk_status"] == 1


@requires_real_ganeti
def test_getmirrorstatus_fails_for_a_missing_disk_like_ganeti(twins: Twins) -> None:
    ok, message = same(twins, blockdev.blockdev_getmirrorstatus, "blockdev_getmirrorstatus",
                       lambda p: [[file_disk(p)]])
    assert not ok and message.startswith("Can't find device <Disk(type=file, logical_id=('loop',")


@requires_real_ganeti
def test_getmirrorstatus_multi_answers_per_disk_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    ok, results = same(twins, blockdev.blockdev_getmirrorstatus_multi, "blockdev_getmirrorstatus_multi",
                       lambda p: [[file_disk(p), file_disk(p, "inst1/disk1")]])
    assert ok and [r[0] for r in results] == [True, False]


# -- blockdev_assemble, open, close, shutdown ---------------------------------------------------------

@requires_real_ganeti
def test_assemble_on_the_primary_links_the_disk_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    answer = same(twins, blockdev.blockdev_assemble, "blockdev_assemble",
                  lambda p: [file_disk(p), instance(p), True, 0])
    assert answer == [True, ["<ROOT>/srv/ganeti/file-storage/inst1/disk0",
                             f"<ROOT>/var/run/ganeti/instance-disks/{INSTANCE}:0", None]]
    link = os.path.join(_links(twins.ours.paths), f"{INSTANCE}:0")
    assert os.readlink(link) == disk_path(twins.ours.paths)


@requires_real_ganeti
def test_assemble_on_a_secondary_answers_true_true_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    assert same(twins, blockdev.blockdev_assemble, "blockdev_assemble",
                lambda p: [file_disk(p), instance(p), False, 0]) == [True, [True, True]]
    assert os.listdir(_links(twins.ours.paths)) == []


@requires_real_ganeti
def test_assemble_of_a_missing_file_fails_like_ganeti(twins: Twins) -> None:
    assert same(twins, blockdev.blockdev_assemble, "blockdev_assemble",
                lambda p: [file_disk(p), instance(p), True, 0]) == [
        False, "Error while assembling disk: <ROOT>/srv/ganeti/file-storage/inst1/disk0: No such file"]


@requires_real_ganeti
def test_assemble_repoints_a_stale_link_like_ganeti(twins: Twins) -> None:
    def stale(p: Paths) -> None:
        make_file(disk_path(p))
        os.symlink("/nonexistent/old", os.path.join(_links(p), f"{INSTANCE}:0"))

    both_files(twins, stale)
    same(twins, blockdev.blockdev_assemble, "blockdev_assemble",
         lambda p: [file_disk(p), instance(p), True, 0])
    for p in twins.both:
        assert os.readlink(os.path.join(_links(p), f"{INSTANCE}:0")) == disk_path(p)


@requires_real_ganeti
def test_assemble_with_userspace_access_fails_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    assert same(twins, blockdev.blockdev_assemble, "blockdev_assemble",
                lambda p: [file_disk(p, params={"access": "userspace"}), instance(p), True, 0]) == [
        False, "Error while assembling disk: Userspace access with FileStorage block device and fake"
               " hypervisor is not supported."]


def test_assemble_on_a_secondary_still_refuses_a_path_outside_the_allowed_ones(ctx: NodeContext) -> None:
    # Ganeti does not look at the disk at all there and answers [true, true].
    with pytest.raises(RpcFail, match="is not acceptable for file storage"):
        blockdev.blockdev_assemble(ctx, file_disk(ctx.paths, path=ctx.paths.under_root("/srv/x/d")),
                                   instance(ctx.paths), False, 0)


def test_assemble_is_idempotent(ctx: NodeContext) -> None:
    make_file(disk_path(ctx.paths))
    first = blockdev.blockdev_assemble(ctx, file_disk(ctx.paths), instance(ctx.paths), True, 1)
    assert blockdev.blockdev_assemble(ctx, file_disk(ctx.paths), instance(ctx.paths), True, 1) == first
    assert first[1].endswith(f"{INSTANCE}:1")


@requires_real_ganeti
def test_shutdown_answers_null_like_ganeti_and_drops_the_link(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    for p, ctx in ((twins.ours.paths, twins.ours), (twins.real.paths, twins.real)):
        blockdev.blockdev_assemble(ctx, file_disk(p), instance(p), True, 0)
    assert same(twins, blockdev.blockdev_shutdown, "blockdev_shutdown",
                lambda p: [file_disk(p)]) == [True, None]
    # Ganeti leaves the link to instance_shutdown; ours removes the links to the device here.
    assert os.listdir(_links(twins.ours.paths)) == []
    assert os.path.exists(disk_path(twins.ours.paths))


@requires_real_ganeti
def test_shutdown_of_a_missing_disk_succeeds_like_ganeti(twins: Twins) -> None:
    assert same(twins, blockdev.blockdev_shutdown, "blockdev_shutdown",
                lambda p: [file_disk(p)]) == [True, None]


@requires_real_ganeti
def test_open_links_every_disk_by_index_like_ganeti(twins: Twins) -> None:
    def two(p: Paths) -> None:
        make_file(disk_path(p))
        make_file(disk_path(p, "inst1/disk1"))

    both_files(twins, two)
    assert same(twins, blockdev.blockdev_open, "blockdev_open",
                lambda p: [INSTANCE, [file_disk(p), file_disk(p, "inst1/disk1")], True]) == [True, None]
    assert twins.same_files(_links) == {f"{INSTANCE}:0": "file 0o777", f"{INSTANCE}:1": "file 0o777"}


@requires_real_ganeti
def test_close_removes_the_instance_links_like_ganeti(twins: Twins) -> None:
    def linked(p: Paths) -> None:
        make_file(disk_path(p))
        os.symlink(disk_path(p), os.path.join(_links(p), f"{INSTANCE}:0"))

    both_files(twins, linked)
    assert same(twins, blockdev.blockdev_close, "blockdev_close",
                lambda p: [INSTANCE, [file_disk(p)]]) == [True, None]
    assert twins.same_files(_links) == {}


@requires_real_ganeti
def test_close_of_a_missing_disk_fails_like_ganeti(twins: Twins) -> None:
    ok, message = same(twins, blockdev.blockdev_close, "blockdev_close", lambda p: [INSTANCE, [file_disk(p)]])
    assert not ok and message.startswith("Can't find device <Disk(type=file")


# -- blockdev_grow ----------------------------------------------------------------------------------

@requires_real_ganeti
def test_grow_extends_the_file_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p), 10, b"data"))
    assert same(twins, blockdev.blockdev_grow, "blockdev_grow",
                lambda p: [file_disk(p), 6, False, True, False]) == [True, None]
    for p in twins.both:
        assert os.path.getsize(disk_path(p)) == 16 * MIB
    assert Path(disk_path(twins.ours.paths)).read_bytes()[:4] == b"data"


@requires_real_ganeti
@pytest.mark.parametrize(("dryrun", "backingstore"), [(True, True), (False, False)])
def test_grow_in_dry_run_or_not_on_backing_storage_changes_nothing_like_ganeti(
        twins: Twins, dryrun: bool, backingstore: bool) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    assert same(twins, blockdev.blockdev_grow, "blockdev_grow",
                lambda p: [file_disk(p), 6, dryrun, backingstore, False]) == [True, None]
    for p in twins.both:
        assert os.path.getsize(disk_path(p)) == 10 * MIB


@requires_real_ganeti
def test_grow_by_a_negative_amount_fails_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    assert same(twins, blockdev.blockdev_grow, "blockdev_grow",
                lambda p: [file_disk(p), -1, False, True, False]) == [
        False, "Failed to grow block device: <ROOT>/srv/ganeti/file-storage/inst1/disk0: can't grow by"
               " negative amount"]
    assert os.path.getsize(disk_path(twins.ours.paths)) == 10 * MIB


def test_grow_by_a_negative_amount_fails_in_a_dry_run_too(ctx: NodeContext) -> None:
    # Ganeti's dry run returns before its checks; ours checks what the real run would refuse.
    make_file(disk_path(ctx.paths))
    with pytest.raises(RpcFail, match="can't grow by negative amount"):
        blockdev.blockdev_grow(ctx, file_disk(ctx.paths), -1, True, True, False)


@requires_real_ganeti
def test_grow_of_a_missing_disk_fails_like_ganeti(twins: Twins) -> None:
    ok, message = same(twins, blockdev.blockdev_grow, "blockdev_grow",
                       lambda p: [file_disk(p), 1, False, True, False])
    assert not ok and message.startswith("Cannot find block device <Disk(type=file")


def test_grow_beyond_the_free_space_is_refused(ctx: NodeContext) -> None:
    make_file(disk_path(ctx.paths))
    st = os.statvfs(ctx.paths.file_storage_dir)
    too_much = (st.f_bavail * st.f_frsize) // MIB + 1024
    with pytest.raises(RpcFail, match=f"Not enough free space to grow {disk_path(ctx.paths)}: {too_much} MiB"
                                      " required"):
        blockdev.blockdev_grow(ctx, file_disk(ctx.paths), too_much, False, True, False)
    assert os.path.getsize(disk_path(ctx.paths)) == 10 * MIB


# -- blockdev_rename ------------------------------------------------------------------------------

def _rename_to(name: str) -> Callable[[Paths], list[Any]]:
    return lambda p: [[[file_disk(p), ["loop", disk_path(p, name)]]]]


@requires_real_ganeti
def test_rename_moves_the_file_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p), 1, b"mine"))
    assert same(twins, blockdev.blockdev_rename, "blockdev_rename", _rename_to("inst1/disk1")) == [True, None]
    assert set(twins.same_files(_storage)) == {"inst1", "inst1/disk1"}
    assert Path(disk_path(twins.ours.paths, "inst1/disk1")).read_bytes()[:4] == b"mine"


@requires_real_ganeti
def test_rename_of_a_missing_disk_fails_like_ganeti(twins: Twins) -> None:
    ok, message = same(twins, blockdev.blockdev_rename, "blockdev_rename", _rename_to("inst1/disk1"))
    assert not ok and message.endswith(" in rename") and message.startswith("Can't find device <Disk(")


def test_rename_onto_an_existing_file_is_refused_and_keeps_both(ctx: NodeContext) -> None:
    # Ganeti's os.rename would silently replace the other disk.
    make_file(disk_path(ctx.paths), 1, b"one")
    make_file(disk_path(ctx.paths, "inst1/disk1"), 1, b"two")
    with pytest.raises(RpcFail, match="File exists"):
        blockdev.blockdev_rename(ctx, *_rename_to("inst1/disk1")(ctx.paths))
    assert Path(disk_path(ctx.paths)).read_bytes()[:3] == b"one"
    assert Path(disk_path(ctx.paths, "inst1/disk1")).read_bytes()[:3] == b"two"


def test_rename_outside_the_allowed_paths_renames_nothing(ctx: NodeContext) -> None:
    make_file(disk_path(ctx.paths))
    make_file(disk_path(ctx.paths, "inst1/diskB"))
    outside = ctx.paths.under_root("/srv/other/disk0")
    devlist = [[file_disk(ctx.paths, "inst1/diskB"), ["loop", disk_path(ctx.paths, "inst1/diskC")]],
               [file_disk(ctx.paths), ["loop", outside]]]
    with pytest.raises(RpcFail, match="is not acceptable for file storage"):
        blockdev.blockdev_rename(ctx, devlist)
    assert os.path.exists(disk_path(ctx.paths, "inst1/diskB"))
    assert not os.path.exists(disk_path(ctx.paths, "inst1/diskC"))


# -- blockdev_remove --------------------------------------------------------------------------------

@requires_real_ganeti
def test_remove_deletes_the_file_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    assert same(twins, blockdev.blockdev_remove, "blockdev_remove", lambda p: [file_disk(p)]) == [True, None]
    assert "inst1/disk0" not in twins.same_files(_storage)


@requires_real_ganeti
def test_remove_of_a_missing_disk_succeeds_like_ganeti(twins: Twins) -> None:
    assert same(twins, blockdev.blockdev_remove, "blockdev_remove", lambda p: [file_disk(p)]) == [True, None]


def test_remove_outside_the_allowed_paths_is_refused_and_keeps_the_file(ctx: NodeContext) -> None:
    outside = ctx.paths.under_root("/srv/other/disk0")
    os.makedirs(os.path.dirname(outside))
    make_file(outside)
    with pytest.raises(RpcFail, match="is not acceptable for file storage"):
        blockdev.blockdev_remove(ctx, file_disk(ctx.paths, path=outside))
    assert os.path.exists(outside)


# -- snapshot, setinfo --------------------------------------------------------------------------------

@requires_real_ganeti
def test_snapshot_of_a_file_disk_fails_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    assert same(twins, blockdev.blockdev_snapshot, "blockdev_snapshot",
                lambda p: [file_disk(p), "snap", 10]) == [
        False, "Cannot snapshot block device '('loop', '<ROOT>/srv/ganeti/file-storage/inst1/disk0')' of type"
               " 'file'"]


@requires_real_ganeti
def test_setinfo_succeeds_for_a_present_disk_and_fails_for_a_missing_one_like_ganeti(twins: Twins) -> None:
    assert same(twins, blockdev.blockdev_setinfo, "blockdev_setinfo",
                lambda p: [file_disk(p), "x"])[1].startswith("Cannot find block device <Disk(")
    both_files(twins, lambda p: make_file(disk_path(p)))
    assert same(twins, blockdev.blockdev_setinfo, "blockdev_setinfo",
                lambda p: [file_disk(p), "x"]) == [True, None]


# -- wipe, image, convert ---------------------------------------------------------------------------------

@requires_real_ganeti
def test_wipe_zeroes_the_whole_disk_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: Path(disk_path(p)).write_bytes(b"\xff" * 2 * MIB))
    assert same(twins, blockdev.blockdev_wipe, "blockdev_wipe",
                lambda p: [file_disk(p, size=2), 0, 2]) == [True, None]
    for p in twins.both:
        assert Path(disk_path(p)).read_bytes() == bytes(2 * MIB)


def test_wipe_zeroes_only_the_range(ctx: NodeContext) -> None:
    Path(disk_path(ctx.paths)).write_bytes(b"\xff" * 4 * MIB)
    blockdev.blockdev_wipe(ctx, file_disk(ctx.paths, size=4), 1, 2)
    content = Path(disk_path(ctx.paths)).read_bytes()
    assert content == b"\xff" * MIB + bytes(2 * MIB) + b"\xff" * MIB


@requires_real_ganeti
@pytest.mark.parametrize(("offset", "size", "message"), [
    (-1, 1, "Negative offset"), (0, -1, "Negative size"), (11, 0, "Wipe offset is bigger than device size"),
    (5, 6, "Wipe offset and size are bigger than device size")])
def test_wipe_out_of_range_fails_like_ganeti(twins: Twins, offset: int, size: int, message: str) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    assert same(twins, blockdev.blockdev_wipe, "blockdev_wipe",
                lambda p: [file_disk(p), offset, size]) == [False, message]


@requires_real_ganeti
def test_wipe_of_a_missing_disk_fails_like_ganeti(twins: Twins) -> None:
    assert same(twins, blockdev.blockdev_wipe, "blockdev_wipe", lambda p: [file_disk(p), 0, 1]) == [
        False, "Cannot wipe device disk/0: device not found"]


@requires_real_ganeti
def test_image_writes_the_image_onto_the_disk_like_ganeti(twins: Twins) -> None:
    def setup(p: Paths) -> None:
        make_file(disk_path(p), 4)
        Path(p.under_root("/srv/image.img")).write_bytes(b"boot" * 1000)

    both_files(twins, setup)
    assert same(twins, blockdev.blockdev_image, "blockdev_image",
                lambda p: [file_disk(p, size=4), p.under_root("/srv/image.img"), 1]) == [True, None]
    for p in twins.both:
        content = Path(disk_path(p)).read_bytes()
        assert content[:4000] == b"boot" * 1000 and len(content) == 4 * MIB


@requires_real_ganeti
def test_image_failures_like_ganeti(twins: Twins) -> None:
    def setup(p: Paths) -> None:
        make_file(disk_path(p), 4)
        Path(p.under_root("/srv/i.img")).write_bytes(b"x")

    both_files(twins, setup)
    assert same(twins, blockdev.blockdev_image, "blockdev_image",
                lambda p: [file_disk(p, size=4), p.under_root("/srv/none.img"), 1])[1].startswith("Image '")
    assert same(twins, blockdev.blockdev_image, "blockdev_image",
                lambda p: [file_disk(p, size=4), p.under_root("/srv/i.img"), 5]) == [
        False, "Image size is bigger than device size"]
    assert same(twins, blockdev.blockdev_image, "blockdev_image",
                lambda p: [file_disk(p, "inst1/nope", size=4), p.under_root("/srv/i.img"), 1]) == [
        False, "Cannot image device disk/0: device not found"]


def test_image_from_a_url_is_refused_clearly(ctx: NodeContext) -> None:
    make_file(disk_path(ctx.paths), 4)
    with pytest.raises(RpcFail, match="does not download images; copy the image onto the node"):
        blockdev.blockdev_image(ctx, file_disk(ctx.paths, size=4), "http://127.0.0.1:1/image.img", 1)
    assert Path(disk_path(ctx.paths)).read_bytes() == bytes(4 * MIB)


def test_convert_copies_the_source_disk_onto_the_destination(ctx: NodeContext) -> None:
    Path(disk_path(ctx.paths)).write_bytes(b"\x01" * 2 * MIB)
    make_file(disk_path(ctx.paths, "inst1/disk1"), 3)
    blockdev.blockdev_convert(ctx, file_disk(ctx.paths, size=2), file_disk(ctx.paths, "inst1/disk1", size=3))
    content = Path(disk_path(ctx.paths, "inst1/disk1")).read_bytes()
    assert content == b"\x01" * 2 * MIB + bytes(MIB)


@requires_real_ganeti
def test_convert_from_a_missing_disk_fails_like_ganeti(twins: Twins) -> None:
    assert same(twins, blockdev.blockdev_convert, "blockdev_convert",
                lambda p: [file_disk(p), file_disk(p, "inst1/disk1")]) == [
        False, "Cannot copy from device '5e1e1e1e-0000-4000-8000-000000000001': device not found"]


# -- bdev_sizes ----------------------------------------------------------------------------------

def _a_block_device() -> tuple[str, int] | None:
    """A block device of this machine and its size in bytes (from sysfs), if there is one."""
    for name in sorted(os.listdir("/sys/block")) if os.path.isdir("/sys/block") else []:
        path = f"/dev/{name}"
        try:
            size = int(Path(f"/sys/block/{name}/size").read_text()) * 512
        except (OSError, ValueError):
            continue
        if os.path.exists(path) and size > 0:
            return path, size
    return None


@requires_real_ganeti
def test_bdev_sizes_leaves_out_what_is_not_a_block_device_below_dev_like_ganeti(twins: Twins) -> None:
    both_files(twins, lambda p: make_file(disk_path(p)))
    def not_devices(p: Paths) -> list[Any]:
        return [["/dev/null", "/dev/nonexistent", disk_path(p), "/dev/../etc/passwd"]]

    assert same(twins, blockdev.bdev_sizes, "bdev_sizes", not_devices) == [True, {}]


@pytest.mark.skipif(_a_block_device() is None, reason="this machine shows no block device with a size")
def test_bdev_sizes_reports_a_real_block_device_in_mib(ctx: NodeContext) -> None:
    found = _a_block_device()
    assert found is not None
    path, size = found
    assert blockdev.bdev_sizes(ctx, [path, "/dev/null"]) == {path: size // MIB}


# -- links: the interface for the hypervisors ------------------------------------------------------------

def test_gather_and_link_links_every_disk_in_order(ctx: NodeContext) -> None:
    make_file(disk_path(ctx.paths))
    make_file(disk_path(ctx.paths, "inst1/disk1"))
    disks = [file_disk(ctx.paths), file_disk(ctx.paths, "inst1/disk1")]
    attached = links.gather_and_link(ctx.paths, instance(ctx.paths, *disks))
    assert [a.path for a in attached] == [disk_path(ctx.paths), disk_path(ctx.paths, "inst1/disk1")]
    assert [os.readlink(a.link) for a in attached] == [a.path for a in attached]
    assert [a.link.rsplit("/", 1)[1] for a in attached] == [f"{INSTANCE}:0", f"{INSTANCE}:1"]
    assert [a.disk for a in attached] == disks and all(a.uri is None for a in attached)


def test_gather_and_link_fails_for_a_disk_that_is_not_there(ctx: NodeContext) -> None:
    with pytest.raises(DeviceError, match=r"Block device '<Disk\(type=file.*' is not set up\."):
        links.gather_and_link(ctx.paths, instance(ctx.paths, file_disk(ctx.paths)))


def test_gather_and_link_refuses_a_disk_outside_the_allowed_paths(ctx: NodeContext) -> None:
    with pytest.raises(DiskConfigError, match="is not acceptable for file storage"):
        links.gather_and_link(ctx.paths, instance(ctx.paths, file_disk(ctx.paths, path="/srv/other/disk0")))


def test_unlink_removes_only_that_instances_links_and_is_idempotent(ctx: NodeContext) -> None:
    make_file(disk_path(ctx.paths))
    for name in (INSTANCE, "inst10.example.com"):
        links.symlink_device(ctx.paths, name, disk_path(ctx.paths), 0)
    links.unlink(ctx.paths, INSTANCE)
    links.unlink(ctx.paths, INSTANCE)
    assert os.listdir(_links(ctx.paths)) == ["inst10.example.com:0"]


def test_our_answers_are_json_like_the_wire(ctx: NodeContext) -> None:
    make_file(disk_path(ctx.paths))
    answer = our_call(blockdev.blockdev_getdimensions, ctx, [file_disk(ctx.paths)])
    assert answer == [True, [[10 * MIB, None]]]

