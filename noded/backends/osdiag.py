"""Finding OS definitions (ganeti-os-interface(7)) and saying what is wrong with them.

An OS definition is a directory named after the OS, in one of the OS search
directories, holding `ganeti_api_version` (one supported API version per
line), the scripts `create` (or `create_untrusted`), `export`, `import`,
`rename` (and `verify` from API 20 on), optionally `variants.list` (API 15+)
and `parameters.list` (required from API 20 on). The rules and messages are
Ganeti's (backend.DiagnoseOS / _TryOSFromDisk).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from noded.context import NodeContext
from noded.paths import Paths
from noded.registry import procedure

#: Ganeti's OS search path (constants.OS_SEARCH_PATH).
OS_SEARCH_PATH = ("/srv/ganeti/os", "/usr/local/lib/ganeti/os", "/usr/lib/ganeti/os", "/usr/share/ganeti/os")
#: OS API versions this node speaks (constants.OS_API_VERSIONS).
OS_API_VERSIONS = frozenset({10, 15, 20})
OS_API_V15 = 15
OS_API_V20 = 20

API_FILE = "ganeti_api_version"
VARIANTS_FILE = "variants.list"
PARAMETERS_FILE = "parameters.list"
SCRIPT_CREATE = "create"
SCRIPT_CREATE_UNTRUSTED = "create_untrusted"
SCRIPT_VERIFY = "verify"
OS_SCRIPTS = (SCRIPT_CREATE, SCRIPT_CREATE_UNTRUSTED, "export", "import", "rename", SCRIPT_VERIFY)

#: Valid names for external programs (OS names, hooks, iallocators): Ganeti's EXT_PLUGIN_MASK.
PLUGIN_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")


def os_search_path(paths: Paths) -> list[str]:
    """Where this node looks for OS definitions.

    Without a root it is Ganeti's OS_SEARCH_PATH. With a root, the same
    directories below the root come first, then the machine's own ones: OS
    definitions are programs installed on the machine, and Ganeti's virtual
    nodes see the machine's OS directories too.
    """
    dirs = [paths.under_root(d) for d in OS_SEARCH_PATH]
    if paths.root:
        dirs += list(OS_SEARCH_PATH)
    return dirs


def errno_name(err: OSError) -> str:
    """"ENOENT" for an OSError with an errno, else its text (Ganeti's ErrnoOrStr)."""
    if err.errno is not None:
        return errno.errorcode.get(err.errno, str(err.errno))
    return str(err)


def _api_set_text() -> str:
    # Written the way Ganeti prints its frozenset (CPython's order for these three ints).
    return "frozenset({10, 20, 15})"


@dataclass
class OsDefinition:
    """A valid OS definition as found on disk."""

    name: str
    path: str
    api_versions: list[int]
    variants: list[str] = field(default_factory=list)
    #: [name, documentation] pairs (a line with no documentation gives [name]).
    parameters: list[list[str]] = field(default_factory=list)
    #: Script name -> absolute path, for the scripts that exist.
    scripts: dict[str, str] = field(default_factory=dict)

    @property
    def trusted(self) -> bool:
        """False when the OS only has an untrusted create script."""
        return SCRIPT_CREATE_UNTRUSTED not in self.scripts


class OsError(Exception):
    """Why a directory is not a valid OS definition (Ganeti's diagnose text)."""


def read_api_versions(os_dir: str) -> list[int]:
    """The API versions listed in `<os_dir>/ganeti_api_version`."""
    api_file = os.path.join(os_dir, API_FILE)
    try:
        st = os.stat(api_file)
    except OSError as err:
        raise OsError(f"Required file '{API_FILE}' not found under path {os_dir}: {errno_name(err)}") from err
    if not stat.S_ISREG(st.st_mode):
        raise OsError(f"File '{API_FILE}' in {os_dir} is not a regular file")
    try:
        with open(api_file) as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise OsError(f"Error while reading the API version file at {api_file}: {errno_name(err)}") from err
    try:
        return [int(line.strip()) for line in lines]
    except ValueError as err:
        raise OsError(f"API version(s) can't be converted to integer: {err}") from err


def _filter_lines(text: str) -> list[str]:
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def load_os(name: str, base_dir: str) -> OsDefinition:
    """Read and check the OS definition `name` in `base_dir`; raises OsError."""
    os_dir = os.path.join(base_dir, name)
    if not PLUGIN_NAME.match(name) or not os.path.isdir(os_dir):
        raise OsError(f"Directory for OS {name} not found in search path")
    api_versions = read_api_versions(os_dir)
    if not OS_API_VERSIONS.intersection(api_versions):
        raise OsError(f"API version mismatch for path '{os_dir}': found {api_versions},"
                      f" want {_api_set_text()}.")
    top = max(api_versions)
    # file name -> required?
    wanted: dict[str, bool] = {script: True for script in OS_SCRIPTS}
    wanted[SCRIPT_CREATE] = False
    wanted[SCRIPT_CREATE_UNTRUSTED] = False
    if top >= OS_API_V15:
        wanted[VARIANTS_FILE] = False
    if top >= OS_API_V20:
        wanted[PARAMETERS_FILE] = True
    else:
        del wanted[SCRIPT_VERIFY]
    found: dict[str, str] = {}
    for filename, required in wanted.items():
        full = os.path.join(os_dir, filename)
        try:
            st = os.stat(full)
        except OSError as err:
            if err.errno == errno.ENOENT and not required:
                continue
            raise OsError(f"File '{filename}' under path '{os_dir}' is missing ({errno_name(err)})") from err
        if not stat.S_ISREG(st.st_mode):
            raise OsError(f"File '{filename}' under path '{os_dir}' is not a regular file")
        if filename in OS_SCRIPTS and not st.st_mode & stat.S_IXUSR:
            raise OsError(f"File '{filename}' under path '{os_dir}' is not executable")
        found[filename] = full
    if SCRIPT_CREATE not in found and SCRIPT_CREATE_UNTRUSTED not in found:
        raise OsError(f"A create script (trusted or untrusted) under path '{os_dir}' must exist")
    variants: list[str] = []
    if VARIANTS_FILE in found:
        try:
            with open(found[VARIANTS_FILE]) as f:
                variants = _filter_lines(f.read())
        except OSError as err:
            if err.errno != errno.ENOENT:
                raise OsError(f"Error while reading the OS variants file at {found[VARIANTS_FILE]}:"
                              f" {errno_name(err)}") from err
    parameters: list[list[str]] = []
    if PARAMETERS_FILE in found:
        try:
            with open(found[PARAMETERS_FILE]) as f:
                parameters = [line.split(None, 1) for line in f.read().splitlines()]
        except OSError as err:
            raise OsError(f"Error while reading the OS parameters file at {found[PARAMETERS_FILE]}:"
                          f" {errno_name(err)}") from err
    scripts = {k: v for k, v in found.items() if k in OS_SCRIPTS}
    return OsDefinition(name=name, path=os_dir, api_versions=api_versions, variants=variants,
                        parameters=parameters, scripts=scripts)


def _visible_entries(dir_name: str) -> list[str]:
    names = [n for n in os.listdir(dir_name) if not n.startswith(".")]
    if os.path.ismount(dir_name):
        names = [n for n in names if n != "lost+found"]
    return sorted(names)


def os_diagnose_list(search_path: Iterable[str]) -> list[list[Any]]:
    """Every entry of every existing directory of `search_path`, valid or not.

    Each is `[name, path, valid, diagnose, variants, parameters,
    api_versions, trusted]`; for an invalid one `diagnose` says why and the
    lists are empty. Entries are sorted by name within a directory (Ganeti
    keeps the directory order, which is arbitrary).
    """
    result: list[list[Any]] = []
    for dir_name in search_path:
        if not os.path.isdir(dir_name):
            continue
        try:
            names = _visible_entries(dir_name)
        except OSError:
            break  # as Ganeti: stop at an unreadable search directory
        for name in names:
            os_path = os.path.join(dir_name, name)
            try:
                osd = load_os(name, dir_name)
            except OsError as err:
                result.append([name, os_path, False, str(err), [], [], [], True])
            else:
                result.append([name, os_path, True, "", osd.variants, osd.parameters,
                               osd.api_versions, osd.trusted])
    return result


@procedure("os_diagnose", blocking=True)
def os_diagnose(ctx: NodeContext) -> list[list[Any]]:
    """All OS definitions of this node's OS search path, with their state."""
    return os_diagnose_list(os_search_path(ctx.paths))
