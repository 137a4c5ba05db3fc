"""Cluster SSH keys: node_ssh_key_add, node_ssh_key_remove, node_ssh_keys_renew.

The master's node daemon receives these calls. Ganeti changes the
master's own files (root's authorized_keys, $DATA_DIR/ganeti_pub_keys,
root's key pairs) directly and the other nodes' files by running its
ssh-update tool over SSH. This daemon does the local part with Ganeti's
file formats and order, and applies an update meant for this very node
locally; an update for any other node would need SSH, which this daemon
does not do. Such calls are refused with an RpcFail before anything is
changed.

Results as in Ganeti 3.0.2: node_ssh_key_add and node_ssh_keys_renew
return a list of [node, message] pairs for nodes that could not be
updated (always empty here, since such calls are refused);
node_ssh_key_remove returns the same kind of list, or None when the
removed node's own files need no change.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

from noded.backends import ssconf_store
from noded.backends.fileio import remove_file
from noded.backends.ssh_files import (
    KEY_KINDS,
    MASTER_SUFFIX,
    KeyMap,
    SshFiles,
    SshUpdate,
    apply_update,
    authorized_keys_add,
    authorized_keys_remove,
    backup_file,
    public_key_add,
    public_key_remove,
    public_key_rename,
    query_public_keys,
)
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths
from noded.registry import procedure

NO_SSH = ("pushing keys to other nodes over SSH (Ganeti's ssh-update tool) is not supported by this"
          " node daemon")


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise RpcFail(f"Invalid {what} {value!r}: expected a non-empty string")
    return value


def _text_list(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RpcFail(f"Invalid {what} {value!r}: expected a list of strings")
    return list(value)


@dataclass(frozen=True)
class _ClusterView:
    """The node lists of ssconf that decide which nodes' SSH files a change reaches."""

    master: str
    nodes: list[str]
    online: frozenset[str]

    @classmethod
    def read(cls, paths: Paths) -> _ClusterView:
        return cls(master=ssconf_store.read_value(paths, "master_node"),
                   nodes=ssconf_store.read_lines(paths, "node_list"),
                   online=frozenset(ssconf_store.read_lines(paths, "online_nodes")))

    def other_online(self, exclude: Iterable[str] = ()) -> list[str]:
        """Online nodes other than the master (and `exclude`), in node-list order."""
        skip = set(exclude)
        return [n for n in self.nodes if n != self.master and n in self.online and n not in skip]


def _refuse_remote(ctx: NodeContext, nodes: Iterable[str], what: str) -> None:
    remote = [n for n in dict.fromkeys(nodes) if n != ctx.hostname]
    if remote:
        raise RpcFail(f"{what} needs to update the SSH key files of node(s) {', '.join(remote)};"
                      f" {NO_SSH}. Nothing was changed.")


def _push(ctx: NodeContext, files: SshFiles, node: str, update: SshUpdate) -> None:
    """Apply `update` to `node`'s SSH files: locally for this node, refused for others."""
    if not update.changes_anything():
        return
    _refuse_remote(ctx, [node], "This change")
    apply_update(files, update)


# -- adding ------------------------------------------------------------------

def _add_contacts(view: _ClusterView, name: str, pot_mcs: list[str], to_auth: bool, to_pub: bool,
                  get_pub: bool) -> list[str]:
    nodes = [name] if get_pub else []
    for node in view.other_online():
        if (node in pot_mcs and (to_auth or to_pub)) or (node not in pot_mcs and to_auth):
            nodes.append(node)
    return nodes


def _add_node_key(ctx: NodeContext, files: SshFiles, view: _ClusterView, uuid: str, name: str,
                  pot_mcs: list[str], to_auth: bool, to_pub: bool, get_pub: bool) -> None:
    """Ganeti's AddNodeSshKeyBulk for one node; remote updates must have been ruled out."""
    if to_pub:
        by_name = query_public_keys(files, [name])
        by_uuid = query_public_keys(files, [uuid])
        if name not in by_name and uuid not in by_uuid:
            raise RpcFail(f"No keys found for the new node '{name}' (UUID {uuid}) in the list of public"
                          " SSH keys, neither for the name or the UUID")
        if name in by_name:
            public_key_rename(files, uuid, name)
    keys = query_public_keys(files, [uuid])
    if to_auth:
        if uuid not in keys:
            raise RpcFail(f"No public SSH key of node '{name}' (UUID {uuid}) in {files.public_keys};"
                          " cannot add it to authorized_keys")
        authorized_keys_add(files, keys[uuid])
    if get_pub:
        _push(ctx, files, name, SshUpdate(public_keys=("override", query_public_keys(files, None))))
    auth_keys = query_public_keys(files, [uuid]) if to_auth else {}
    pub_keys = query_public_keys(files, [uuid]) if to_pub else {}
    for node in view.other_online():
        if node in pot_mcs:
            _push(ctx, files, node, SshUpdate(
                authorized_keys=("add", auth_keys) if to_auth else None,
                public_keys=("replace_or_add", pub_keys) if to_pub else None))
        elif to_auth:
            _push(ctx, files, node, SshUpdate(authorized_keys=("add", auth_keys)))


@procedure("node_ssh_key_add")
def node_ssh_key_add(ctx: NodeContext, node_uuid: object, node_name: object,
                     potential_master_candidates: object, to_authorized_keys: object,
                     to_public_keys: object, get_public_keys: object) -> list[list[str]]:
    """Authorize a node's SSH key on the cluster and/or file it in the public-key list.

    Locally: the key filed under the node's name in ganeti_pub_keys is
    re-filed under its UUID (to_public_keys) and added to root's
    authorized_keys (to_authorized_keys). Updating other online nodes
    (and giving the node the cluster's keys, get_public_keys) needs SSH
    and is refused. Returns the list of [node, error] pairs (empty).
    """
    uuid = _text(node_uuid, "node UUID")
    name = _text(node_name, "node name")
    pot_mcs = _text_list(potential_master_candidates, "potential master candidate list")
    to_auth, to_pub, get_pub = bool(to_authorized_keys), bool(to_public_keys), bool(get_public_keys)
    files = SshFiles(ctx.paths)
    view = _ClusterView.read(ctx.paths)
    _refuse_remote(ctx, _add_contacts(view, name, pot_mcs, to_auth, to_pub, get_pub),
                   f"Adding the SSH key of node {name}")
    _add_node_key(ctx, files, view, uuid, name, pot_mcs, to_auth, to_pub, get_pub)
    return []


# -- removing ------------------------------------------------------------------

def _remove_node_key(ctx: NodeContext, files: SshFiles, uuid: str, name: str, mc_uuids: list[str],
                     pot_mcs: list[str], *, from_auth: bool, from_pub: bool, clear_auth: bool,
                     clear_pub: bool, readd: bool, keys_to_remove: KeyMap | None = None
                     ) -> list[list[str]] | None:
    """Ganeti's RemoveNodeSshKeyBulk for one node; refuses before changing anything if SSH is needed."""
    if not (from_auth or from_pub or clear_auth or clear_pub):
        raise RpcFail("No removal from any key file was requested.")
    master = ssconf_store.read_value(ctx.paths, "master_node")
    all_keys: KeyMap = {}
    if from_auth or from_pub:
        if name == master and not keys_to_remove:
            raise RpcFail("Cannot remove the master node's keys.")
        if keys_to_remove:
            all_keys = dict(keys_to_remove)
        else:
            all_keys = query_public_keys(files, [uuid])
            if uuid not in all_keys and not readd:
                raise RpcFail(f"Node '{uuid}' not found in the list of public SSH keys. It seems someone"
                              " tries to remove a key from outside the cluster!")
    others: list[str] = []
    if all_keys:
        view = _ClusterView.read(ctx.paths)
        others = [n for n in view.other_online(exclude=[name]) if n in pot_mcs or from_auth]
    target = SshUpdate()
    if clear_auth:
        other_mcs = [u for u in mc_uuids if u != uuid]
        target.authorized_keys = ("remove", query_public_keys(files, other_mcs))
    if clear_pub:
        target.public_keys = ("clear", {})
    elif from_pub and all_keys:
        target.public_keys = ("remove", all_keys)
    _refuse_remote(ctx, others + ([name] if target.changes_anything() else []),
                   f"Removing the SSH keys of node {name}")

    if all_keys:
        auth_keys = {uuid: all_keys.get(uuid, [])} if from_auth else {}
        pub_keys = {uuid: all_keys.get(uuid, [])} if from_pub else {}
        if from_auth:
            authorized_keys_remove(files, auth_keys[uuid])
        for node in others:
            _push(ctx, files, node, SshUpdate(
                authorized_keys=("remove", auth_keys) if from_auth else None,
                public_keys=("remove", pub_keys) if from_pub else None))
    if clear_auth or from_pub or clear_pub:
        if not target.changes_anything():
            return None
        _push(ctx, files, name, target)
    if all_keys and from_pub:
        public_key_remove(files, uuid)
    return []


@procedure("node_ssh_key_remove")
def node_ssh_key_remove(ctx: NodeContext, node_uuid: object, node_name: object,
                        master_candidate_uuids: object, potential_master_candidates: object,
                        from_authorized_keys: object, from_public_keys: object,
                        clear_authorized_keys: object, clear_public_keys: object,
                        readd: object) -> list[list[str]] | None:
    """Withdraw a node's SSH keys from the cluster's files.

    Locally: its keys leave root's authorized_keys (from_authorized_keys)
    and ganeti_pub_keys (from_public_keys). Clearing the node's own files
    and updating other online nodes need SSH and are refused unless the
    node is this one. Returns the list of [node, error] pairs (empty), or
    None when the node's own files need no change (as Ganeti does).
    """
    uuid = _text(node_uuid, "node UUID")
    name = _text(node_name, "node name")
    mc_uuids = _text_list(master_candidate_uuids, "master candidate UUID list")
    pot_mcs = _text_list(potential_master_candidates, "potential master candidate list")
    return _remove_node_key(ctx, SshFiles(ctx.paths), uuid, name, mc_uuids, pot_mcs,
                            from_auth=bool(from_authorized_keys), from_pub=bool(from_public_keys),
                            clear_auth=bool(clear_authorized_keys), clear_pub=bool(clear_public_keys),
                            readd=bool(readd))


# -- renewing --------------------------------------------------------------------

def _new_master_keys(files: SshFiles) -> list[str]:
    keys = []
    for kind in KEY_KINDS:
        _, public = files.key_pair(kind, MASTER_SUFFIX)
        if os.path.exists(public):
            with open(public, encoding="utf-8") as f:
                keys.append(f.read().rstrip("\r\n"))
    if not keys:
        raise RpcFail("Cannot find any type of temporary SSH key.")
    return keys


def _install_new_master_keys(files: SshFiles) -> None:
    """Back up and replace root's key pairs by the "_master_tmp" ones (_ReplaceMasterKeyOnMaster)."""
    moved = 0
    for kind in KEY_KINDS:
        private, public = files.key_pair(kind)
        tmp_private, tmp_public = files.key_pair(kind, MASTER_SUFFIX)
        for path in (public, private):
            if os.path.isfile(path):
                backup_file(path)
                remove_file(path)
        if os.path.exists(tmp_public) and os.path.exists(tmp_private):
            shutil.move(tmp_public, public)
            shutil.move(tmp_private, private)
            moved += 1
    if not moved:
        raise RpcFail("Could not move at least one master SSH key.")


@procedure("node_ssh_keys_renew")
def node_ssh_keys_renew(ctx: NodeContext, node_uuids: object, node_names: object,
                        master_candidate_uuids: object, potential_master_candidates: object,
                        old_key_type: object, new_key_type: object, new_key_bits: object
                        ) -> list[list[str]]:
    """Replace root's SSH key pairs by new ones of `new_key_type` and redistribute the public keys.

    Only the master's own keys can be renewed here (a cluster whose other
    nodes are all offline, or a single-node cluster): a new pair is made
    with ssh-keygen, filed in ganeti_pub_keys and authorized_keys, moved
    into place (old files backed up), and the old key is de-authorized.
    Renewing other nodes' keys needs SSH and is refused before anything
    changes. Returns the list of [node, error] pairs (empty).
    """
    uuids = _text_list(node_uuids, "node UUID list")
    names = _text_list(node_names, "node name list")
    mc_uuids = _text_list(master_candidate_uuids, "master candidate UUID list")
    pot_mcs = _text_list(potential_master_candidates, "potential master candidate list")
    ssconf_store.read_value(ctx.paths, "cluster_name")
    if len(uuids) != len(names):
        raise RpcFail("List of nodes UUIDs and node names does not match in length.")
    files = SshFiles(ctx.paths)
    files.key_pair(_text(old_key_type, "old SSH key type"))
    new_kind = _text(new_key_type, "new SSH key type")
    files.key_pair(new_kind)
    if isinstance(new_key_bits, bool) or not isinstance(new_key_bits, int) or new_key_bits <= 0:
        raise RpcFail(f"Invalid SSH key length {new_key_bits!r}: expected a positive number of bits")
    view = _ClusterView.read(ctx.paths)
    master_uuids = [u for u, n in zip(uuids, names, strict=True) if n == view.master]
    if len(master_uuids) != 1:
        raise RpcFail(f"No (unique) master UUID found. Master node name: '{view.master}',"
                      f" Master UUID: '{master_uuids}'")
    master_uuid = master_uuids[0]
    _refuse_remote(ctx, [n for n in names if n != view.master] + view.other_online() + [view.master],
                   "Renewing the SSH keys")

    old_master_keys = query_public_keys(files, [master_uuid])
    if not old_master_keys:
        raise RpcFail(f"No public key of the master node (UUID '{master_uuid}') found, not generating"
                      " a new key.")
    _push(ctx, files, view.master, SshUpdate(generate=(new_kind, new_key_bits, MASTER_SUFFIX)))
    new_keys = _new_master_keys(files)
    public_key_remove(files, master_uuid)
    for key in new_keys:
        public_key_add(files, master_uuid, key)
    _add_node_key(ctx, files, view, master_uuid, view.master, pot_mcs, to_auth=True, to_pub=True,
                  get_pub=False)
    _install_new_master_keys(files)
    authorized_keys_remove(files, old_master_keys[master_uuid])
    _remove_node_key(ctx, files, master_uuid, view.master, mc_uuids, pot_mcs, from_auth=True,
                     from_pub=False, clear_auth=False, clear_pub=False, readd=False,
                     keys_to_remove=old_master_keys)
    return []
