"""Finding one OS definition by name, and checking a variant and parameters against it.

The directory checks themselves (API versions file, scripts, variants and
parameters lists) are those of os_diagnose (noded.backends.osdiag.load_os,
Ganeti's _TryOSFromDisk); this module adds the lookup through the search
path and the checks Ganeti's OSFromDisk callers make, with Ganeti's messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from noded.backends.osdiag import (
    OS_API_V15,
    OS_API_V20,
    OS_API_VERSIONS,
    OsDefinition,
    OsError,
    load_os,
    os_search_path,
)
from noded.errors import RpcFail
from noded.paths import Paths

__all__ = [
    "OS_API_V15",
    "OS_API_V20",
    "OsDefinition",
    "OsError",
    "api_version",
    "check_parameters",
    "check_variant",
    "find_os",
    "split_name",
]

#: Between an OS name and its variant ("debootstrap+bookworm"; objects.OS.VARIANT_DELIM).
VARIANT_DELIM = "+"


def split_name(full_name: str) -> tuple[str, str]:
    """("name", "variant") of "name+variant"; the variant is "" when there is none."""
    name, _, variant = full_name.partition(VARIANT_DELIM)
    return name, variant


def find_os(paths: Paths, full_name: str, search_path: Iterable[str] | None = None) -> OsDefinition:
    """The valid OS definition named by `full_name` (a variant is ignored here).

    The first directory of the search path holding a directory of that name
    wins, as in Ganeti; raises OsError saying why it is missing or invalid.
    """
    name, _ = split_name(full_name)
    dirs = os_search_path(paths) if search_path is None else list(search_path)
    for base in dirs:
        if os.path.isdir(os.path.join(base, name)):
            return load_os(name, base)
    raise OsError(f"Directory for OS {name} not found in search path")


def find_os_or_fail(paths: Paths, full_name: str) -> OsDefinition:
    """find_os, failing the call with Ganeti's message (OSFromDisk)."""
    try:
        return find_os(paths, full_name)
    except OsError as err:
        raise RpcFail(str(err)) from err


def api_version(osd: OsDefinition) -> int:
    """The highest OS API version both the definition and this node speak."""
    return max(OS_API_VERSIONS.intersection(osd.api_versions))


def check_variant(osd: OsDefinition, full_name: str) -> None:
    """Fail unless the variant in `full_name` fits the definition's variants.list (_CheckOSVariant)."""
    _, variant = split_name(full_name)
    if not osd.variants:
        if variant:
            raise RpcFail(f"OS '{osd.name}' does not support variants ('{variant}' passed)")
        return
    if not variant:
        raise RpcFail(f"OS name '{full_name}' must include a variant")
    if variant not in osd.variants:
        raise RpcFail(f"OS '{osd.name}' does not support variant '{variant}'")


def check_parameters(osd: OsDefinition, names: Iterable[str]) -> None:
    """Fail when a parameter is not in the definition's parameters.list (_CheckOSPList).

    The unsupported names are listed sorted (Ganeti lists them in set order).
    """
    supported = {entry[0] for entry in osd.parameters if entry}
    unknown = sorted(set(names) - supported)
    if unknown:
        raise RpcFail(f"The following parameters are not supported by the OS {osd.name}:"
                      f" {', '.join(unknown)}")
