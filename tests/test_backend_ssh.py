"""Cluster SSH keys: node_ssh_key_add / node_ssh_key_remove / node_ssh_keys_renew on local files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from real_ganeti import requires_real_ganeti, run_real_ganeti

from noded.backends import ssh, ssh_files
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths

KEY1 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCone root@node1"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCtwo root@node2"
KEY3 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIthree admin@laptop"
U1, U2 = "11111111-aaaa-4aaa-8aaa-111111111111", "22222222-bbbb-4bbb-8bbb-222222222222"

requires_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen missing")


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    paths.ensure_dirs()
    context = NodeContext(paths=paths)
    _cluster(context, nodes=["node1"], online=["node1"])
    return context


def _cluster(ctx: NodeContext, nodes: list[str], online: list[str]) -> None:
    for key, value in [("cluster_name", "cluster.example.com"), ("master_node", "node1"),
                       ("node_list", "\n".join(nodes)), ("online_nodes", "\n".join(online))]:
        Path(ctx.paths.ssconf_file(key)).write_text(value + "\n")


def _files(ctx: NodeContext) -> ssh_files.SshFiles:
    return ssh_files.SshFiles(ctx.paths)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_text(text)


def _read(path: str) -> str:
    return Path(path).read_text()


def _snapshot(ctx: NodeContext) -> dict[str, str]:
    root = Path(ctx.paths.root)
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def keys(ctx: NodeContext) -> ssh_files.SshFiles:
    """Master node1 registered under its UUID, node2's key filed under its name (being added)."""
    f = _files(ctx)
    _write(f.public_keys, f"{U1} {KEY1}\nnode2 {KEY2}\n")
    _write(f.authorized_keys, f"{KEY1}\n{KEY3}\n")
    return f


def test_root_ssh_files_live_below_the_node_root(ctx: NodeContext) -> None:
    f = _files(ctx)
    for path in (f.authorized_keys, f.public_keys, *f.key_pair("rsa")):
        assert path.startswith(ctx.paths.root + "/")


# -- node_ssh_key_add ----------------------------------------------------------------

def test_key_add_files_the_key_under_the_uuid_and_authorizes_it(ctx: NodeContext,
                                                                keys: ssh_files.SshFiles) -> None:
    result = ssh.node_ssh_key_add(ctx, U2, "node2", ["node1", "node2"], True, True, False)
    assert result == []
    assert _read(keys.public_keys) == f"{U1} {KEY1}\n{U2} {KEY2}\n"
    assert _read(keys.authorized_keys) == f"{KEY1}\n{KEY3}\n{KEY2}\n"


def test_key_add_twice_authorizes_the_key_once(ctx: NodeContext, keys: ssh_files.SshFiles) -> None:
    ssh.node_ssh_key_add(ctx, U2, "node2", ["node1", "node2"], True, True, False)
    ssh.node_ssh_key_add(ctx, U2, "node2", ["node1", "node2"], True, True, False)
    assert _read(keys.authorized_keys).count(KEY2) == 1
    assert _read(keys.public_keys).count(KEY2) == 1


def test_key_add_skips_offline_nodes(ctx: NodeContext, keys: ssh_files.SshFiles) -> None:
    _cluster(ctx, nodes=["node1", "node3"], online=["node1"])
    assert ssh.node_ssh_key_add(ctx, U2, "node2", ["node1", "node2", "node3"], True, True, False) == []
    assert KEY2 in _read(keys.authorized_keys)


def test_key_add_that_must_reach_other_online_nodes_is_refused_unchanged(
        ctx: NodeContext, keys: ssh_files.SshFiles) -> None:
    _cluster(ctx, nodes=["node1", "node3"], online=["node1", "node3"])
    before = _snapshot(ctx)
    with pytest.raises(RpcFail) as err:
        ssh.node_ssh_key_add(ctx, U2, "node2", ["node1", "node2", "node3"], True, True, False)
    assert "node3" in err.value.message
    assert "pushing keys to other nodes over SSH" in err.value.message
    assert "not supported by this node daemon" in err.value.message
    assert _snapshot(ctx) == before


def test_key_add_giving_the_new_node_the_cluster_keys_is_refused(ctx: NodeContext,
                                                                 keys: ssh_files.SshFiles) -> None:
    before = _snapshot(ctx)
    with pytest.raises(RpcFail, match=r"node2.*not supported by this node daemon"):
        ssh.node_ssh_key_add(ctx, U2, "node2", ["node1", "node2"], True, True, True)
    assert _snapshot(ctx) == before


def test_key_add_without_a_filed_key_fails_like_ganeti(ctx: NodeContext, keys: ssh_files.SshFiles) -> None:
    with pytest.raises(RpcFail, match="No keys found for the new node 'node9'"):
        ssh.node_ssh_key_add(ctx, "uuid-9", "node9", ["node1"], True, True, False)


def test_key_add_without_the_public_key_file_fails_clearly(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=r"Cannot read the public key file .*ganeti_pub_keys"):
        ssh.node_ssh_key_add(ctx, U2, "node2", ["node1"], True, False, False)


def test_key_add_without_ssconf_fails_like_ganeti(ctx: NodeContext, keys: ssh_files.SshFiles) -> None:
    os.unlink(ctx.paths.ssconf_file("node_list"))
    with pytest.raises(RpcFail, match="Cluster configuration incomplete: Can't read ssconf file"):
        ssh.node_ssh_key_add(ctx, U2, "node2", ["node1"], True, True, False)


# -- node_ssh_key_remove ---------------------------------------------------------------

def test_key_remove_from_authorized_keys(ctx: NodeContext, keys: ssh_files.SshFiles) -> None:
    ssh.node_ssh_key_add(ctx, U2, "node2", ["node1", "node2"], True, True, False)
    result = ssh.node_ssh_key_remove(ctx, U2, "node2", [U1, U2], ["node1", "node2"],
                                     True, False, False, False, False)
    assert result == []
    assert _read(keys.authorized_keys) == f"{KEY1}\n{KEY3}\n"
    assert _read(keys.public_keys) == f"{U1} {KEY1}\n{U2} {KEY2}\n"


def test_key_remove_that_must_clear_another_nodes_files_is_refused_unchanged(
        ctx: NodeContext, keys: ssh_files.SshFiles) -> None:
    ssh.node_ssh_key_add(ctx, U2, "node2", ["node1", "node2"], True, True, False)
    before = _snapshot(ctx)
    with pytest.raises(RpcFail, match=r"node2.*not supported by this node daemon"):
        ssh.node_ssh_key_remove(ctx, U2, "node2", [U1, U2], ["node1", "node2"], True, True, True, True, False)
    assert _snapshot(ctx) == before


def test_key_remove_of_the_master_is_refused(ctx: NodeContext, keys: ssh_files.SshFiles) -> None:
    with pytest.raises(RpcFail, match=r"^Cannot remove the master node's keys\.$"):
        ssh.node_ssh_key_remove(ctx, U1, "node1", [U1], ["node1"], True, False, False, False, False)


def test_key_remove_without_any_flag_is_refused(ctx: NodeContext, keys: ssh_files.SshFiles) -> None:
    with pytest.raises(RpcFail, match=r"^No removal from any key file was requested\.$"):
        ssh.node_ssh_key_remove(ctx, U2, "node2", [U1], ["node1"], False, False, False, False, False)


def test_key_remove_of_an_unknown_node_is_refused(ctx: NodeContext, keys: ssh_files.SshFiles) -> None:
    with pytest.raises(RpcFail, match="tries to remove a key from outside the cluster"):
        ssh.node_ssh_key_remove(ctx, "uuid-9", "node9", [U1], ["node1"], True, False, False, False, False)


def test_key_remove_on_readd_of_an_unknown_node_answers_none(ctx: NodeContext,
                                                            keys: ssh_files.SshFiles) -> None:
    before = _snapshot(ctx)
    assert ssh.node_ssh_key_remove(ctx, "uuid-9", "node9", [U1], ["node1"],
                                   True, True, False, False, True) is None
    assert _snapshot(ctx) == before


# -- Ganeti's file formats ----------------------------------------------------------------

AUTH_START = f"# managed by hand\ncommand=\"/bin/true\" {KEY3}\n{KEY1}   an old comment\n{KEY3}"


@requires_real_ganeti
def test_authorized_keys_editing_matches_ganeti(ctx: NodeContext, tmp_path: Path) -> None:
    f = _files(ctx)
    real_file = tmp_path / "real_authorized_keys"
    real_file.write_text(AUTH_START)
    _write(f.authorized_keys, AUTH_START)
    add = [KEY1 + " new comment", KEY2, KEY3 + "\n"]
    remove = [KEY1, KEY3]
    run_real_ganeti("import json\nfrom ganeti import ssh\n"
                    f"ssh.AddAuthorizedKeys({str(real_file)!r}, json.loads({json.dumps(json.dumps(add))}))")
    ssh_files.authorized_keys_add(f, add)
    assert _read(f.authorized_keys) == real_file.read_text()
    run_real_ganeti("import json\nfrom ganeti import ssh\n"
                    f"ssh.RemoveAuthorizedKeys({str(real_file)!r}, "
                    f"json.loads({json.dumps(json.dumps(remove))}))")
    ssh_files.authorized_keys_remove(f, remove)
    assert _read(f.authorized_keys) == real_file.read_text()


@requires_real_ganeti
def test_public_key_file_editing_matches_ganeti(ctx: NodeContext, tmp_path: Path) -> None:
    f = _files(ctx)
    start = f"{U1} {KEY1}\n\nnode2 {KEY2}\n{U1} {KEY3}\n"
    real_file = tmp_path / "real_pub_keys"
    real_file.write_text(start)
    _write(f.public_keys, start)
    run_real_ganeti("from ganeti import ssh\n"
                    f"k = {str(real_file)!r}\n"
                    f"ssh.ReplaceNameByUuid({U2!r}, 'node2', key_file=k)\n"
                    f"ssh.AddPublicKey('uuid-3', {KEY3!r}, key_file=k)\n"
                    f"ssh.AddPublicKey({U2!r}, {KEY2!r}, key_file=k)\n"
                    f"ssh.RemovePublicKey({U1!r}, key_file=k)\n")
    ssh_files.public_key_rename(f, U2, "node2")
    ssh_files.public_key_add(f, "uuid-3", KEY3)
    ssh_files.public_key_add(f, U2, KEY2)
    ssh_files.public_key_remove(f, U1)
    assert _read(f.public_keys) == real_file.read_text()
    query = run_real_ganeti(f"import json\nfrom ganeti import ssh\n"
                            f"print(json.dumps(ssh.QueryPubKeyFile(None, key_file={str(real_file)!r})))")
    assert ssh_files.query_public_keys(f, None) == json.loads(query)


# -- node_ssh_keys_renew -------------------------------------------------------------------

def _keygen(path: str, kind: str = "rsa") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", path, "-C", "root@node1"], check=True)
    return Path(path + ".pub").read_text().strip()


@requires_ssh_keygen
def test_keys_renew_replaces_the_master_key_on_a_single_node_cluster(ctx: NodeContext) -> None:
    f = _files(ctx)
    old_private, old_public = f.key_pair("ecdsa")
    old_key = _keygen(old_private, "ecdsa")
    _write(f.public_keys, f"{U1} {old_key}\n")
    _write(f.authorized_keys, f"{old_key}\n{KEY3}\n")

    result = ssh.node_ssh_keys_renew(ctx, [U1], ["node1"], [U1], ["node1"], "ecdsa", "ecdsa", 256)

    assert result == []
    new_key = _read(old_public).strip()
    assert new_key != old_key and new_key.startswith("ecdsa-sha2-nistp256 ")
    assert _read(f.public_keys) == f"{U1} {new_key}\n"
    assert _read(f.authorized_keys) == f"{KEY3}\n{new_key}\n"
    ssh_dir = os.listdir(f.ssh_dir)
    assert not any(ssh_files.MASTER_SUFFIX in name for name in ssh_dir)
    assert any(name.startswith("id_ecdsa.pub.backup-") for name in ssh_dir)
    assert any(name.startswith("id_ecdsa.backup-") for name in ssh_dir)


@requires_ssh_keygen
def test_keys_renew_with_other_nodes_is_refused_before_generating_anything(ctx: NodeContext) -> None:
    f = _files(ctx)
    _cluster(ctx, nodes=["node1", "node2"], online=["node1", "node2"])
    _write(f.public_keys, f"{U1} {KEY1}\n{U2} {KEY2}\n")
    _write(f.authorized_keys, f"{KEY1}\n{KEY2}\n")
    before = _snapshot(ctx)
    with pytest.raises(RpcFail, match=r"node2.*not supported by this node daemon"):
        ssh.node_ssh_keys_renew(ctx, [U1, U2], ["node1", "node2"], [U1, U2], ["node1", "node2"],
                                "rsa", "ecdsa", 256)
    assert _snapshot(ctx) == before


def test_keys_renew_needs_the_master_in_the_node_list(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="No \\(unique\\) master UUID found"):
        ssh.node_ssh_keys_renew(ctx, [U2], ["node2"], [U2], ["node2"], "rsa", "rsa", 2048)


def test_keys_renew_refuses_mismatched_lists(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="does not match in length"):
        ssh.node_ssh_keys_renew(ctx, [U1, U2], ["node1"], [U1], ["node1"], "rsa", "rsa", 2048)


def test_keys_renew_refuses_an_unknown_key_type(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="Unknown SSH key type 'ed448'"):
        ssh.node_ssh_keys_renew(ctx, [U1], ["node1"], [U1], ["node1"], "rsa", "ed448", 2048)
