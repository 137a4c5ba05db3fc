"""File storage directories and Ganeti's generic storage-unit procedures.

`file_storage_dir_create/_remove/_rename` manage the per-instance
directories that hold file disks. They are confined to the directories
listed in `$CONF_DIR/file-storage-paths`: Ganeti 3.0.2 computes that check
but ignores its result (so its masters may create a directory anywhere);
this node refuses, naming the file to edit. Paths arrive as plain node
paths (mapped below the node root when there is one) or virtual-cluster
paths; messages name the directory on this node.

`storage_list/_modify/_execute` work on the storage units of
noded.backends.storageunits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from noded.backends.storagepaths import FileStoragePathError, check_file_storage_acceptance, node_path
from noded.backends.storageunits import open_unit
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.registry import procedure

#: Mode of a new file storage directory (Ganeti asks for it; the umask does not reduce it here).
FILE_STORAGE_DIR_MODE = 0o750


def allowed_storage_dir(ctx: NodeContext, file_storage_dir: str) -> str:
    """The directory on this node for `file_storage_dir`; RpcFail unless file-storage-paths allows it.

    A directory listed in the file is allowed as well as any below one.
    """
    if not isinstance(file_storage_dir, str):
        raise RpcFail(f"A file storage directory must be a path, not {file_storage_dir!r}")
    local = node_path(ctx.paths, file_storage_dir)
    try:
        check_file_storage_acceptance(ctx.paths, local, exact_match_ok=True)
    except FileStoragePathError as err:
        listing = ctx.paths.file_storage_paths_file
        text = str(err)
        if listing not in text:
            text += f" (the directories allowed for file storage are listed in '{listing}')"
        raise RpcFail(text) from err
    return local


@procedure("file_storage_dir_create", blocking=True)
def file_storage_dir_create(ctx: NodeContext, file_storage_dir: str) -> None:
    """Create `file_storage_dir` with its parents (mode 0750); an existing directory is fine."""
    path = allowed_storage_dir(ctx, file_storage_dir)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise RpcFail(f"Specified storage dir '{path}' is not a directory")
        return
    try:
        os.makedirs(path, FILE_STORAGE_DIR_MODE)
        # The daemon's umask (077) would leave 0700; the directory is documented as 0750.
        os.chmod(path, FILE_STORAGE_DIR_MODE)
    except OSError as err:
        raise RpcFail(f"Cannot create file storage directory '{path}': {err}") from err


@procedure("file_storage_dir_remove", blocking=True)
def file_storage_dir_remove(ctx: NodeContext, file_storage_dir: str) -> None:
    """Remove `file_storage_dir` if it is empty; a missing directory is fine."""
    path = allowed_storage_dir(ctx, file_storage_dir)
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise RpcFail(f"Specified Storage directory '{path}' is not a directory")
    try:
        os.rmdir(path)
    except OSError as err:
        raise RpcFail(f"Cannot remove file storage directory '{path}': {err}") from err


@procedure("file_storage_dir_rename", blocking=True)
def file_storage_dir_rename(ctx: NodeContext, old_file_storage_dir: str, new_file_storage_dir: str) -> None:
    """Rename a file storage directory; done already (only the new one exists) is fine."""
    old = allowed_storage_dir(ctx, old_file_storage_dir)
    new = allowed_storage_dir(ctx, new_file_storage_dir)
    if os.path.exists(new):
        if os.path.exists(old):
            raise RpcFail(f"Cannot rename '{old}' to '{new}': both locations exist")
        return
    if not os.path.isdir(old):
        raise RpcFail(f"Specified storage dir '{old}' is not a directory")
    try:
        os.rename(old, new)
    except OSError as err:
        raise RpcFail(f"Cannot rename '{old}' to '{new}': {err}") from err


@procedure("storage_list", blocking=True)
def storage_list(ctx: NodeContext, su_name: str, su_args: list[Any], name: str | None,
                 fields: list[str]) -> list[list[Any]]:
    """The rows of the storage unit's entities (or of entity `name`), with `fields` in order."""
    return open_unit(ctx.paths, su_name, su_args).rows(name, fields)


@procedure("storage_modify", blocking=True)
def storage_modify(ctx: NodeContext, su_name: str, su_args: list[Any], name: str,
                   changes: Mapping[str, Any] | None) -> None:
    """Change fields of one entity; no change is always fine."""
    open_unit(ctx.paths, su_name, su_args).modify(name, dict(changes or {}))


@procedure("storage_execute", blocking=True)
def storage_execute(ctx: NodeContext, su_name: str, su_args: list[Any], name: str, op: str) -> Any:
    """Run operation `op` on one entity."""
    return open_unit(ctx.paths, su_name, su_args).execute(name, op)
