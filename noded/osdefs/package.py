"""OS install packages: an OS definition and its environment in one gzipped tarball (Ganeti's ExportOS).

The archive holds `./os/` (the definition's files, symlinks followed) and
`./environment` (one `KEY=value` line per variable, in the order of
noded.osdefs.environment). Ganeti makes it for untrusted OS definitions,
whose create script then runs inside a helper VM instead of on the node.

Ganeti writes the archive with mkstemp into the system temporary directory
and leaves its staging directory behind; here the staging directory is
removed, and on a node with a root (GANETI_ROOTDIR) the archive is made in
`<root>/tmp` so that nothing is written outside the root.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping

from noded.backends.osdiag import OsDefinition
from noded.errors import RpcFail
from noded.paths import Paths

ARCHIVE_SUFFIX = ".tgz"


def archive_dir(paths: Paths) -> str | None:
    """Where archives go: None (the system temporary directory) or `<root>/tmp`."""
    if not paths.root:
        return None
    directory = paths.under_root("/tmp")
    os.makedirs(directory, mode=0o1777, exist_ok=True)
    return directory


def environment_text(env: Mapping[str, str]) -> str:
    """`KEY=value` lines, in the mapping's order."""
    return "".join(f"{key}={value}\n" for key, value in env.items())


def make_os_package(paths: Paths, osd: OsDefinition, env: Mapping[str, str]) -> str:
    """Write a new archive of `osd` and `env`; its path. The archive is readable by root only."""
    base = archive_dir(paths)
    staging = tempfile.mkdtemp(dir=base)
    try:
        try:
            os.symlink(osd.path, os.path.join(staging, "os"))
        except OSError as err:
            raise RpcFail(f"Failed to copy OS package '{osd.name}' ({osd.path}) to '{staging}':"
                          f" {err}") from err
        with open(os.path.join(staging, "environment"), "w") as f:
            f.write(environment_text(env))
        fd, archive = tempfile.mkstemp(suffix=ARCHIVE_SUFFIX, dir=base)
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", dereference=True) as tar:
                tar.add(staging, arcname=".")
        except (OSError, tarfile.TarError) as err:
            os.unlink(archive)
            raise RpcFail(f"Failed to create OS archive '{archive}': {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return archive
