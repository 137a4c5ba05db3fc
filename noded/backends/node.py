"""Node facts and checks: node info, node verification, bridges, addresses, instance listings.

The answers have Ganeti 3.0.2's shapes; hypervisor facts come from
noded.hypervisor (the fake hypervisor for now).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from noded.backends import netcheck
from noded.backends.nodeverify import InstanceListError, bridge_exists, list_instances, verify_node
from noded.backends.storagepaths import node_path
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.hypervisor import HypervisorError, get_hypervisor, get_hypervisor_class
from noded.paths import Paths
from noded.registry import procedure

#: The kernel's id of the current boot.
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"

#: Storage types whose space node_info reports by statvfs of the key path.
FILE_STORAGE_TYPES = ("file", "sharedfile")
#: Storage types Ganeti knows but cannot report space for (Ganeti answers NotImplementedError).
UNREPORTED_STORAGE_TYPES = ("blockdev", "diskless", "ext", "gluster", "rados")


def read_boot_id() -> str:
    """The boot id, which changes at every reboot (the master detects reboots with it)."""
    with open(BOOT_ID_FILE) as f:
        return f.read(128).rstrip("\n")


def _check_storage_params(params: Any, count: int) -> None:
    if params is None:
        raise ValueError("No storage parameters for storage reporting is provided.")
    if not isinstance(params, list):
        raise ValueError(f"The storage parameters are not of type list: '{params}'")
    if len(params) != count:
        raise ValueError(f"Did not receive the expected number of storage parameters: expected {count},"
                         f" received '{len(params)}'")


def _exclusive_storage_flag(params: Any) -> bool:
    _check_storage_params(params, 1)
    if not isinstance(params[0], bool):
        raise ValueError(f"Exclusive storage parameter is not boolean: '{params[0]}'.")
    return params[0]


def file_space_info(paths: Paths, storage_type: str, path: str) -> dict[str, Any]:
    """Size and free space (MiB) of the file system holding `path`."""
    local = node_path(paths, path)
    try:
        st = os.statvfs(local)
    except OSError as err:
        raise RpcFail(f"Failed to retrieve file system information about path: {local} - {err.strerror}"
                      ) from err
    return {"type": storage_type, "name": path,
            "storage_size": st.f_frsize * st.f_blocks // (1024 * 1024),
            "storage_free": st.f_frsize * st.f_bavail // (1024 * 1024)}


def storage_space_info(paths: Paths, storage_type: str, key: str, params: Any) -> dict[str, Any]:
    """One entry of node_info's storage list.

    file/sharedfile: statvfs of the key path. lvm-vg/lvm-pv: what a node
    without the volume group answers (unknown size for a VG, no spindles
    for PVs). Other types cannot be reported, as in Ganeti.
    """
    if storage_type in FILE_STORAGE_TYPES:
        _check_storage_params(params, 0)
        return file_space_info(paths, storage_type, key)
    if storage_type == "lvm-vg":
        _exclusive_storage_flag(params)
        return {"type": "lvm-vg", "name": key, "storage_free": None, "storage_size": None}
    if storage_type == "lvm-pv":
        _exclusive_storage_flag(params)
        return {"type": "lvm-pv", "name": key, "storage_free": 0, "storage_size": 0}
    if storage_type in UNREPORTED_STORAGE_TYPES:
        raise NotImplementedError(f"space reporting is not implemented for storage type '{storage_type}'")
    raise ValueError(f"unknown storage type '{storage_type}'")


# -- procedures -------------------------------------------------------------

@procedure("node_info", blocking=True)
def node_info(ctx: NodeContext, storage_units: list[list[Any]] | None,
              hv_specs: list[list[Any]] | None) -> list[Any]:
    """[boot_id, storage space per [type, key, params], hypervisor facts per [hv, hvparams]].

    Either list is null when the corresponding argument is null.
    """
    storage = None
    if storage_units is not None:
        storage = [storage_space_info(ctx.paths, str(t), str(k), p) for (t, k, p) in storage_units]
    hv_info = None
    if hv_specs is not None:
        hv_info = [get_hypervisor(name, ctx.paths).node_info(params) for (name, params) in hv_specs]
    return [read_boot_id(), storage, hv_info]


@procedure("node_verify", blocking=True)
def node_verify(ctx: NodeContext, checkdict: dict[str, Any], cluster_name: str,
                all_hvparams: dict[str, Any] | None) -> dict[str, Any]:
    """Run the checks the master asks for (gnt-cluster verify); one result per check."""
    return verify_node(ctx, checkdict, cluster_name, all_hvparams)


@procedure("node_verify_light", blocking=True)
def node_verify_light(ctx: NodeContext, checkdict: dict[str, Any], cluster_name: str,
                      all_hvparams: dict[str, Any] | None) -> dict[str, Any]:
    """node_verify before a node joins: the same checks, the same code (as in Ganeti)."""
    return verify_node(ctx, checkdict, cluster_name, all_hvparams)


@procedure("node_has_ip_address", blocking=True)
def node_has_ip_address(ctx: NodeContext, address: str) -> bool:
    """Whether this node has `address` (it can bind to it)."""
    return netcheck.owns_address(str(address))


@procedure("bridges_exist", blocking=True)
def bridges_exist(ctx: NodeContext, bridges_list: list[str]) -> None:
    """Fail with "Missing bridges a, b" unless every bridge exists on this node."""
    missing = [b for b in bridges_list if not bridge_exists(b)]
    if missing:
        raise RpcFail(f"Missing bridges {', '.join(missing)}")


@procedure("instance_list", blocking=True)
def instance_list(ctx: NodeContext, hypervisor_list: list[str], hvparams: dict[str, Any] | None) -> list[str]:
    """Names of the instances running here under the given hypervisors."""
    try:
        return list_instances(ctx.paths, hypervisor_list, hvparams)
    except InstanceListError as err:
        raise RpcFail(str(err)) from err


@procedure("instance_info", blocking=True)
def instance_info(ctx: NodeContext, instance: str, hname: str,
                  hvparams: dict[str, Any] | None) -> dict[str, Any]:
    """{"memory", "vcpus", "state", "time"} of a running instance, {} when it is not running here."""
    info = get_hypervisor(hname, ctx.paths).instance_info(instance, hvparams)
    return info.to_legacy() if info is not None else {}


@procedure("all_instances_info", blocking=True)
def all_instances_info(ctx: NodeContext, hypervisor_list: list[str],
                       all_hvparams: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{instance name: {"memory", "vcpus", "state", "time"}} over the given hypervisors."""
    output: dict[str, dict[str, Any]] = {}
    hvparams_of: Mapping[str, Any] = all_hvparams or {}
    for hname in hypervisor_list:
        for info in get_hypervisor(hname, ctx.paths).all_instances_info(hvparams_of.get(hname)):
            value = info.to_legacy()
            seen = output.get(info.name)
            if seen is not None and (seen["memory"], seen["vcpus"]) != (value["memory"], value["vcpus"]):
                raise RpcFail(f"Instance {info.name} is running twice with different parameters")
            output[info.name] = value
    return output


@procedure("hypervisor_validate_params", blocking=True)
def hypervisor_validate_params(ctx: NodeContext, hvname: str, hvfull: dict[str, Any]) -> None:
    """Check a full hvparams dict on this node; the failure says which parameter is wrong.

    A parameter missing from the dict is answered like Ganeti:
    "Error while executing backend function: '<name>'" (a KeyError).
    """
    try:
        get_hypervisor_class(hvname).validate_parameters(hvfull)
    except HypervisorError as err:
        raise RpcFail(str(err)) from err
