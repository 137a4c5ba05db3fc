"""Uploads, ssconf files, file info and the hosts file."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import stat
import threading
import time
import zlib
from pathlib import Path

import pytest
from real_ganeti import requires_real_ganeti, run_real_ganeti

from noded.backends import files
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import VIRTUAL_PATH_PREFIX, Paths

V = VIRTUAL_PATH_PREFIX


def _node(tmp_path: Path, name: str) -> NodeContext:
    paths = Paths(root=str(tmp_path / name), hostname=name)
    paths.ensure_dirs()
    return NodeContext(paths=paths)


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    return _node(tmp_path, "node1")


def _all_files(root: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


def _upload_args(name: str, text: str, **kw: object) -> list[object]:
    return [name, [0, text], kw.get("mode", 0o640), kw.get("user", "root"), kw.get("group", "root"),
            kw.get("atime"), kw.get("mtime")]


# -- upload_file / upload_file_single -------------------------------------------

def test_upload_file_writes_an_allowed_target_with_mode_owner_and_times(ctx: NodeContext) -> None:
    args = _upload_args(V + "/var/lib/ganeti/known_hosts", "cluster ssh-rsa AAAA\n", mode=0o644,
                        atime=1700000000.0, mtime=1700000100.0)
    assert files.upload_file(ctx, args) is None
    path = os.path.join(ctx.paths.data_dir, "known_hosts")
    st = os.stat(path)
    assert Path(path).read_text() == "cluster ssh-rsa AAAA\n"
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert (st.st_atime, st.st_mtime) == (1700000000.0, 1700000100.0)


def test_upload_file_single_decodes_zlib_base64_content(ctx: NodeContext) -> None:
    data = b"x" * 1900
    payload = [1, base64.b64encode(zlib.compress(data)).decode()]
    files.upload_file_single(ctx, V + "/var/lib/ganeti/config.data", payload, 0o640, "root", "root",
                             None, None)
    assert Path(ctx.paths.config_file).read_bytes() == data


def test_upload_without_mode_and_times_uses_0600_and_now(ctx: NodeContext) -> None:
    before = time.time()
    files.upload_file_single(ctx, V + "/var/lib/ganeti/hmac.key", [0, "secret"], None, "root", "root",
                             None, None)
    st = os.stat(os.path.join(ctx.paths.data_dir, "hmac.key"))
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_mtime >= before - 1


def test_upload_replaces_the_file_atomically_without_leftovers(ctx: NodeContext) -> None:
    for text in ("one", "two"):
        files.upload_file_single(ctx, V + "/var/lib/ganeti/rapi.pem", [0, text], 0o440, "root", "root",
                                 None, None)
    assert Path(ctx.paths.data_dir, "rapi.pem").read_text() == "two"
    assert [n for n in os.listdir(ctx.paths.data_dir) if n.startswith(".")] == []


def test_upload_to_a_target_outside_the_allowed_list_is_refused(ctx: NodeContext) -> None:
    target = os.path.join(ctx.paths.data_dir, "not-allowed")
    with pytest.raises(RpcFail) as err:
        files.upload_file_single(ctx, V + "/var/lib/ganeti/not-allowed", [0, "x"], None, "root", "root",
                                 None, None)
    assert err.value.message == f"Filename passed to UploadFile not in allowed upload targets: '{target}'"
    assert not os.path.exists(target)


def test_upload_of_the_file_storage_paths_file_is_refused(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="not in allowed upload targets"):
        files.upload_file_single(ctx, V + "/etc/ganeti/file-storage-paths", [0, "/"], None, "root", "root",
                                 None, None)
    assert not os.path.exists(ctx.paths.file_storage_paths_file)


def test_upload_dotdot_trick_is_refused_and_writes_nothing(ctx: NodeContext, tmp_path: Path) -> None:
    before = _all_files(str(tmp_path))
    for name in (V + "/var/lib/ganeti/../../../etc/passwd", V + "/../../outside",
                 V + "/var/lib/ganeti/rapi/../../../../../tmp/known_hosts"):
        with pytest.raises(RpcFail, match=r"not in allowed upload targets|outside the node root"):
            files.upload_file_single(ctx, name, [0, "x"], None, "root", "root", None, None)
    assert _all_files(str(tmp_path)) == before


def test_upload_of_a_non_virtual_path_outside_the_root_is_refused(ctx: NodeContext, tmp_path: Path) -> None:
    before = _all_files(str(tmp_path))
    with pytest.raises(RpcFail, match="is not a virtual path"):
        files.upload_file_single(ctx, "/var/lib/ganeti/known_hosts", [0, "x"], None, "root", "root",
                                 None, None)
    assert _all_files(str(tmp_path)) == before


def test_upload_of_etc_hosts_lands_below_the_root(ctx: NodeContext) -> None:
    os.makedirs(os.path.dirname(ctx.paths.etc_hosts), exist_ok=True)
    files.upload_file_single(ctx, "/etc/hosts", [0, "127.0.0.1\tlocalhost\n"], 0o644, "root", "root",
                             None, None)
    assert ctx.paths.etc_hosts.startswith(ctx.paths.root + "/")
    assert Path(ctx.paths.etc_hosts).read_text() == "127.0.0.1\tlocalhost\n"


def test_upload_creates_a_missing_rapi_directory(ctx: NodeContext) -> None:
    files.upload_file(ctx, _upload_args(V + "/var/lib/ganeti/rapi/users", "admin pw write\n"))
    rapi = Path(ctx.paths.data_dir, "rapi")
    assert (rapi / "users").read_text() == "admin pw write\n"
    assert stat.S_IMODE(rapi.stat().st_mode) == 0o750


def test_upload_with_an_unknown_user_is_refused(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="Unknown user 'no-such-user-here'"):
        files.upload_file_single(ctx, V + "/var/lib/ganeti/known_hosts", [0, "x"], None, "no-such-user-here",
                                 "root", None, None)
    assert not os.path.exists(os.path.join(ctx.paths.data_dir, "known_hosts"))


def test_upload_with_an_unknown_group_is_refused(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="Unknown group 'no-such-group-here'"):
        files.upload_file_single(ctx, V + "/var/lib/ganeti/known_hosts", [0, "x"], None, "root",
                                 "no-such-group-here", None, None)


def test_upload_with_numeric_owner_is_refused_like_ganeti(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=r"^Invalid username/groupname type$"):
        files.upload_file_single(ctx, V + "/var/lib/ganeti/known_hosts", [0, "x"], None, 0, 0, None, None)


def test_upload_with_only_one_of_atime_and_mtime_is_refused(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="Both atime and mtime"):
        files.upload_file_single(ctx, V + "/var/lib/ganeti/known_hosts", [0, "x"], None, "root", "root",
                                 1.0, None)


def test_upload_file_takes_its_seven_fields_as_one_list(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="upload_file expects one argument"):
        files.upload_file(ctx, V + "/var/lib/ganeti/known_hosts")


def test_upload_with_an_unknown_encoding_is_refused(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="Unknown data encoding 7"):
        files.upload_file_single(ctx, V + "/var/lib/ganeti/known_hosts", [7, "x"], None, "root", "root",
                                 None, None)


@requires_real_ganeti
def test_allowed_upload_targets_are_ganetis(ctx: NodeContext) -> None:
    out = run_real_ganeti("from ganeti import backend\n"
                          "print('\\n'.join(sorted(backend._ALLOWED_UPLOAD_FILES)))",
                          root=Path(ctx.paths.root), hostname=ctx.hostname)
    real = set(out.split())
    # Ganeti never virtualises /etc/hosts; this daemon keeps it below the root too.
    real.discard("/etc/hosts")
    real.add(ctx.paths.etc_hosts)
    assert files.allowed_upload_files(ctx.paths) == real


# -- write_ssconf_files ------------------------------------------------------------

SSCONF_VALUES = {
    "cluster_name": "cluster.example.com",
    "master_node": "node1.example.com\n",
    "node_list": ["node1.example.com", "node2.example.com"],
    "offline_nodes": [],
    "cluster_tags": "",
    "master_candidates_certs": ["2523accb-2e74-49d6-84bd-85f1f8adc7aa=CD:D4:30:C8"],
    "hvparams_fake": "migration_mode=live",
}


def _ssconf_contents(paths: Paths) -> dict[str, bytes]:
    return {key: Path(paths.ssconf_file(key)).read_bytes() for key in SSCONF_VALUES}


def test_write_ssconf_files_writes_strings_and_lists_of_lines(ctx: NodeContext) -> None:
    assert files.write_ssconf_files(ctx, SSCONF_VALUES) is None
    contents = _ssconf_contents(ctx.paths)
    assert contents["cluster_name"] == b"cluster.example.com\n"
    assert contents["master_node"] == b"node1.example.com\n"
    assert contents["node_list"] == b"node1.example.com\nnode2.example.com\n"
    assert contents["offline_nodes"] == b""
    assert contents["cluster_tags"] == b""
    for key in SSCONF_VALUES:
        assert stat.S_IMODE(os.stat(ctx.paths.ssconf_file(key)).st_mode) == 0o444


@requires_real_ganeti
def test_write_ssconf_files_matches_ganetis_files(ctx: NodeContext, tmp_path: Path) -> None:
    real = _node(tmp_path, "real1")
    run_real_ganeti("import json\nfrom ganeti import ssconf\n"
                    f"ssconf.WriteSsconfFiles(json.loads({json.dumps(json.dumps(SSCONF_VALUES))}))",
                    root=Path(real.paths.root), hostname="real1")
    files.write_ssconf_files(ctx, SSCONF_VALUES)
    assert _ssconf_contents(ctx.paths) == _ssconf_contents(real.paths)
    for key in SSCONF_VALUES:
        assert os.stat(ctx.paths.ssconf_file(key)).st_mode == os.stat(real.paths.ssconf_file(key)).st_mode


def test_write_ssconf_files_leaves_other_keys_alone(ctx: NodeContext) -> None:
    Path(ctx.paths.ssconf_file("release_version")).write_text("3.0.2\n")
    files.write_ssconf_files(ctx, {"cluster_name": "c"})
    assert Path(ctx.paths.ssconf_file("release_version")).read_text() == "3.0.2\n"


def test_write_ssconf_files_with_an_invalid_key_writes_nothing(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=re.escape("Invalid key requested from SSConf: 'evil/../../x'")):
        files.write_ssconf_files(ctx, {"cluster_name": "c", "evil/../../x": "y"})
    assert not os.path.exists(ctx.paths.ssconf_file("cluster_name"))


def test_write_ssconf_files_refuses_values_over_128_kib(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="only up to 131072 are allowed"):
        files.write_ssconf_files(ctx, {"instance_list": ["i" * 1000] * 200})
    assert not os.path.exists(ctx.paths.ssconf_file("instance_list"))


def test_write_ssconf_files_waits_for_the_ssconf_lock(ctx: NodeContext) -> None:
    fd = os.open(ctx.paths.ssconf_lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    writer = threading.Thread(target=files.write_ssconf_files, args=(ctx, {"cluster_name": "c"}))
    writer.start()
    try:
        time.sleep(0.3)
        assert not os.path.exists(ctx.paths.ssconf_file("cluster_name"))
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    writer.join(5)
    assert Path(ctx.paths.ssconf_file("cluster_name")).read_text() == "c\n"


# -- get_file_info -------------------------------------------------------------------

def test_get_file_info_reports_the_size_of_an_existing_file(ctx: NodeContext) -> None:
    Path(ctx.paths.server_cert).write_bytes(b"x" * 2693)
    assert files.get_file_info(ctx, ctx.paths.server_cert) == [True, {"size": 2693}]


def test_get_file_info_maps_virtual_paths(ctx: NodeContext) -> None:
    Path(ctx.paths.server_cert).write_bytes(b"abc")
    assert files.get_file_info(ctx, V + "/var/lib/ganeti/server.pem") == [True, {"size": 3}]


def test_get_file_info_of_a_missing_file(ctx: NodeContext) -> None:
    assert files.get_file_info(ctx, V + "/var/lib/ganeti/nothing") == [False, {}]


def test_get_file_info_refuses_paths_outside_the_root(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="is not a virtual path"):
        files.get_file_info(ctx, "/etc/passwd")
    with pytest.raises(RpcFail, match="outside the node root"):
        files.get_file_info(ctx, V + "/../../../etc/passwd")


# -- etc_hosts_modify ----------------------------------------------------------------

HOSTS = ("# The hosts file\n"
         "127.0.0.1\tlocalhost\n"
         "192.0.2.10\told.example.com old\n"
         "  # 192.0.2.11 commented.example.com\n"
         "192.0.2.12 node2.example.com node2 extra\n"
         "192.0.2.10 duplicate.example.com\n"
         "::1 ip6-localhost ip6-loopback\n")


@pytest.fixture
def hosts(ctx: NodeContext) -> Path:
    path = Path(ctx.paths.etc_hosts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HOSTS)
    path.chmod(0o644)
    return path


def _real_hosts_edit(tmp_path: Path, text: str, call: str) -> str:
    path = tmp_path / "real-hosts"
    path.write_text(text)
    run_real_ganeti(f"from ganeti.utils import nodesetup\nnodesetup.{call.format(path=str(path))}")
    return path.read_text()


def test_etc_hosts_add_writes_name_and_short_name(ctx: NodeContext, hosts: Path) -> None:
    assert files.etc_hosts_modify(ctx, "add", "node3.example.com", "192.0.2.13") is True
    assert hosts.read_text() == HOSTS + "192.0.2.13\tnode3.example.com node3\n"


def test_etc_hosts_add_replaces_every_entry_of_the_address(ctx: NodeContext, hosts: Path) -> None:
    files.etc_hosts_modify(ctx, "add", "new.example.com", "192.0.2.10")
    lines = hosts.read_text().splitlines()
    assert lines[2] == "192.0.2.10\tnew.example.com new"
    assert not any("old.example.com" in line or "duplicate" in line for line in lines)


@requires_real_ganeti
@pytest.mark.parametrize("name,ip", [("node3.example.com", "192.0.2.13"), ("new.example.com", "192.0.2.10"),
                                     ("plainname", "192.0.2.12")])
def test_etc_hosts_add_matches_ganeti(ctx: NodeContext, hosts: Path, tmp_path: Path, name: str,
                                      ip: str) -> None:
    short = name.split(".")[0]
    expected = _real_hosts_edit(tmp_path, HOSTS,
                                f"SetEtcHostsEntry('{{path}}', '{ip}', '{name}', ['{short}'])")
    files.etc_hosts_modify(ctx, "add", name, ip)
    assert hosts.read_text() == expected


@requires_real_ganeti
@pytest.mark.parametrize("name", ["node2.example.com", "old.example.com", "localhost", "absent.example.com"])
def test_etc_hosts_remove_matches_ganeti(ctx: NodeContext, hosts: Path, tmp_path: Path, name: str) -> None:
    short = name.split(".")[0]
    once = _real_hosts_edit(tmp_path, HOSTS, f"RemoveEtcHostsEntry('{{path}}', '{name}')")
    expected = _real_hosts_edit(tmp_path, once, f"RemoveEtcHostsEntry('{{path}}', '{short}')")
    files.etc_hosts_modify(ctx, "remove", name, None)
    assert hosts.read_text() == expected


def test_etc_hosts_remove_drops_names_and_keeps_comments(ctx: NodeContext, hosts: Path) -> None:
    files.etc_hosts_modify(ctx, "remove", "node2.example.com", None)
    text = hosts.read_text()
    assert "192.0.2.12 extra\n" in text
    assert "  # 192.0.2.11 commented.example.com\n" in text


def test_etc_hosts_add_to_a_file_without_final_newline(ctx: NodeContext, hosts: Path) -> None:
    hosts.write_text("127.0.0.1 localhost")
    files.etc_hosts_modify(ctx, "add", "n.example.com", "192.0.2.1")
    assert hosts.read_text() == "127.0.0.1 localhost\n192.0.2.1\tn.example.com n\n"


def test_etc_hosts_modify_keeps_the_file_mode(ctx: NodeContext, hosts: Path) -> None:
    hosts.chmod(0o600)
    files.etc_hosts_modify(ctx, "add", "n.example.com", "192.0.2.1")
    assert stat.S_IMODE(hosts.stat().st_mode) == 0o600


def test_etc_hosts_add_needs_an_ip(ctx: NodeContext, hosts: Path) -> None:
    with pytest.raises(RpcFail, match="Mode 'add' needs 'ip' parameter"):
        files.etc_hosts_modify(ctx, "add", "n.example.com", None)
    assert hosts.read_text() == HOSTS


def test_etc_hosts_add_refuses_an_invalid_ip(ctx: NodeContext, hosts: Path) -> None:
    with pytest.raises(RpcFail, match="Invalid IP address"):
        files.etc_hosts_modify(ctx, "add", "n.example.com", "1.2.3.4\n6.6.6.6 evil")
    assert hosts.read_text() == HOSTS


def test_etc_hosts_remove_refuses_an_ip(ctx: NodeContext, hosts: Path) -> None:
    with pytest.raises(RpcFail, match="Mode 'remove' does not allow 'ip' parameter"):
        files.etc_hosts_modify(ctx, "remove", "node2.example.com", "192.0.2.12")
    assert hosts.read_text() == HOSTS


def test_etc_hosts_modify_refuses_other_modes(ctx: NodeContext, hosts: Path) -> None:
    with pytest.raises(RpcFail, match="Mode not supported"):
        files.etc_hosts_modify(ctx, "replace", "node2.example.com", "192.0.2.12")


def test_etc_hosts_add_creates_a_missing_hosts_file(ctx: NodeContext) -> None:
    files.etc_hosts_modify(ctx, "add", "n.example.com", "192.0.2.1")
    path = Path(ctx.paths.etc_hosts)
    assert path.read_text() == "192.0.2.1\tn.example.com n\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_etc_hosts_remove_without_a_hosts_file_changes_nothing(ctx: NodeContext) -> None:
    assert files.etc_hosts_modify(ctx, "remove", "n.example.com", None) is True
    assert not os.path.exists(ctx.paths.etc_hosts)


def test_etc_hosts_modify_works_on_the_hosts_file_below_the_root(ctx: NodeContext, hosts: Path) -> None:
    assert str(hosts) == os.path.join(ctx.paths.root, "etc/hosts")
