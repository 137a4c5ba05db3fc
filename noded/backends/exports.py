"""Instance exports kept on this node, below the export directory `$DATA_DIR/export`.

Each export is a directory `$EXPORT_DIR/<instance name>` holding the disk
images and `config.ini`, the export's description (INI text with at least
the sections "export" and "instance"). These procedures list, describe and
delete exports, with Ganeti 3.0.2's answers.
"""

from __future__ import annotations

import configparser
import io
import os
import shutil

from noded.backends.storagepaths import node_path
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.registry import procedure

#: The description file of an export.
EXPORT_CONF_FILE = "config.ini"
#: Sections every description has.
REQUIRED_SECTIONS = ("export", "instance")
#: Hidden at the top of a file system, as Ganeti hides it.
LOST_AND_FOUND = "lost+found"


def visible_entries(directory: str) -> list[str]:
    """The entries of `directory` that are not hidden (dot files; lost+found of a mount point), sorted."""
    mountpoint = os.path.ismount(directory)
    return sorted(name for name in os.listdir(directory)
                  if not (name.startswith(".") or (mountpoint and name == LOST_AND_FOUND)))


@procedure("export_list", blocking=True)
def export_list(ctx: NodeContext) -> list[str]:
    """The names of the exports on this node, sorted; fails when the export directory is missing."""
    if not os.path.isdir(ctx.paths.export_dir):
        raise RpcFail("No exports directory")
    return visible_entries(ctx.paths.export_dir)


@procedure("export_info", blocking=True)
def export_info(ctx: NodeContext, path: str) -> str:
    """The description (config.ini) of the export in directory `path`, normalised as INI text.

    A missing or unreadable file reads as empty, so it fails like an
    incomplete one. The text is rewritten the way Python's configparser
    writes it (as Ganeti does): comments dropped, option names lower-cased,
    `key = value` lines.
    """
    if not isinstance(path, str) or not os.path.isabs(path):
        raise RpcFail(f"The export directory must be an absolute path, not {path!r}")
    config = configparser.ConfigParser()
    config.read(os.path.join(node_path(ctx.paths, path), EXPORT_CONF_FILE), encoding="utf-8")
    if not all(config.has_section(s) for s in REQUIRED_SECTIONS):
        raise RpcFail("Export info file doesn't have the required fields")
    out = io.StringIO()
    config.write(out)
    return out.getvalue()


@procedure("export_remove", blocking=True)
def export_remove(ctx: NodeContext, export: str) -> None:
    """Delete the export `export` (a plain name in the export directory) with all its files."""
    if (not isinstance(export, str) or not export or export in (".", "..") or "/" in export
            or "\0" in export):
        raise RpcFail(f"Invalid export name {export!r}: it must be the plain name of an entry of"
                      f" {ctx.paths.export_dir}")
    try:
        shutil.rmtree(os.path.join(ctx.paths.export_dir, export))
    except OSError as err:
        raise RpcFail(f"Error while removing the export: {err}") from err
