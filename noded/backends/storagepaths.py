"""Which paths a node accepts for file storage, and how master-sent paths map to node files.

Ganeti's rules (storage/filestorage.py): file storage directories must be
listed in `$CONF_DIR/file-storage-paths` (a disk file must lie below one of
them) and must not be in a system directory such as /etc or /usr/bin.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from noded.paths import VIRTUAL_PATH_PREFIX, Paths

# -- paths --------------------------------------------------------------------

def node_path(paths: Paths, path: str) -> str:
    """The file on this node for a path a master sent.

    Virtual-cluster paths (`/###-VIRTUAL-PATH-###,/x`) map below the root;
    with a root, a plain path that is not already below it is taken as a
    node path and mapped below it too (so a master that does not know about
    the root still names this node's files); otherwise the path is used as
    it is.
    """
    if path.startswith(VIRTUAL_PATH_PREFIX):
        return paths.localize(path)
    norm = os.path.normpath(path)
    if paths.root and os.path.isabs(norm) and not (norm == paths.root or norm.startswith(paths.root + "/")):
        return paths.under_root(norm)
    return norm


# -- file storage paths -------------------------------------------------------

class FileStoragePathError(Exception):
    """A path is not acceptable for file storage (message as Ganeti words it)."""


def _forbidden_storage_prefixes() -> frozenset[str]:
    prefixes = {"/boot", "/dev", "/etc", "/home", "/proc", "/root", "/sys"}
    for top in ("", "/usr", "/usr/local"):
        prefixes.update(f"{top}/{sub}" for sub in ("bin", "lib", "lib32", "lib64", "sbin"))
    return frozenset(os.path.normpath(p) for p in prefixes)


FORBIDDEN_STORAGE_PREFIXES = _forbidden_storage_prefixes()


def is_below_dir(root: str, other: str) -> bool:
    """Whether `other` lies strictly below directory `root`."""
    norm_other = os.path.normpath(other)
    if norm_other == os.sep:
        return False
    norm_root = os.path.normpath(root)
    prefix = norm_root if norm_root == os.sep else norm_root + os.sep
    return norm_other.startswith(prefix)


def load_allowed_storage_paths(paths: Paths) -> list[str]:
    """The entries of $CONF_DIR/file-storage-paths (empty when it cannot be read)."""
    try:
        with open(paths.file_storage_paths_file) as f:
            text = f.read()
    except OSError:
        return []
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def _natural_key(text: str) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def wrong_storage_paths(paths: Paths, candidates: Sequence[str]) -> list[str]:
    """The candidates that are relative or lie in a system directory (/etc, /usr/bin...).

    With a root, a path below the root is judged by where it is on the node
    (`<root>/etc/x` is `/etc/x`).
    """
    def bad(path: str) -> bool:
        if not os.path.isabs(path):
            return True
        view = path
        if paths.root and (path == paths.root or path.startswith(paths.root + "/")):
            view = path[len(paths.root):] or "/"
        return view in FORBIDDEN_STORAGE_PREFIXES or any(
            is_below_dir(p, view) for p in FORBIDDEN_STORAGE_PREFIXES)

    return sorted((p for p in map(os.path.normpath, candidates) if bad(p)), key=_natural_key)


def check_file_storage_acceptance(paths: Paths, path: str, exact_match_ok: bool = False) -> None:
    """Raise FileStoragePathError unless `path` is below (or, if allowed, equal to) an allowed path."""
    allowed = load_allowed_storage_paths(paths)
    if not allowed:
        raise FileStoragePathError(f"No paths are valid or path file '{paths.file_storage_paths_file}'"
                                   f" was not accessible.")
    if wrong_storage_paths(paths, [path]):
        raise FileStoragePathError(f"Path '{path}' uses a forbidden prefix")
    if not os.path.isabs(path):
        raise FileStoragePathError(f"File storage path must be absolute, got '{path}'")
    for entry in allowed:
        if not os.path.isabs(entry):
            continue
        if exact_match_ok and os.path.normpath(entry) == os.path.normpath(path):
            return
        if is_below_dir(entry, path):
            return
    raise FileStoragePathError(f"Path '{path}' is not acceptable for file storage")


def check_file_storage_path(paths: Paths, path: str) -> str | None:
    """Why `path` cannot be used as a (shared) file storage directory, or None."""
    try:
        check_file_storage_acceptance(paths, path, exact_match_ok=True)
    except FileStoragePathError as err:
        return str(err)
    if not os.path.isdir(path):
        return f"Path '{path}' is not existing or not a directory."
    if not os.access(path, os.W_OK):
        return f"Path '{path}' is not writable"
    return None
