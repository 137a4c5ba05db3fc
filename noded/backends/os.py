"""Procedures running OS definition scripts (ganeti-os-interface(7)).

- os_validate: the `verify` script checks OS parameters;
- instance_os_add: the `create` script installs the OS onto the instance's disks;
- instance_run_rename: the `rename` script follows an instance rename;
- os_export: the definition and the environment as an install package.

Behaviour and messages follow Ganeti's backend (ValidateOS, InstanceOsAdd,
RunRenameInstance, ExportOS). The instance's disks must be present on the
node; they are found through noded.disks.links.gather_and_link, which also
(re)links them as $RUN_DIR/instance-disks/<instance>:<n>, where Ganeti only
opens them: harmless, the next instance start links them again. os_diagnose
is in noded.backends.osdiag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from noded.backends.osdiag import OS_API_V20, SCRIPT_CREATE, SCRIPT_VERIFY, OsDefinition, OsError
from noded.context import NodeContext
from noded.disks.base import DeviceError, DiskConfigError
from noded.disks.links import gather_and_link
from noded.errors import RpcFail
from noded.hypervisor.base import AttachedDisk
from noded.osdefs.environment import core_env, instance_env
from noded.osdefs.lookup import check_parameters, check_variant, find_os, find_os_or_fail
from noded.osdefs.package import make_os_package
from noded.osdefs.scripts import log_file_name, run_captured, run_with_log
from noded.registry import procedure

#: The checks os_validate knows (constants.OS_VALIDATE_CALLS).
OS_VALIDATE_CALLS = frozenset({"parameters"})
OS_VALIDATE_PARAMETERS = "parameters"


def _instance(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise RpcFail(f"Invalid instance: a dict is needed, not {type(value).__name__}")
    if not isinstance(value.get("name"), str) or not isinstance(value.get("os"), str):
        raise RpcFail("Invalid instance: its 'name' and 'os' must be strings")
    return value


def _attached_disks(ctx: NodeContext, instance: Mapping[str, Any]) -> list[AttachedDisk]:
    """The instance's disks as found on this node; fails like Ganeti when one is not set up."""
    try:
        return gather_and_link(ctx.paths, instance)
    except DeviceError as err:
        # Ganeti's OSEnvironment words a missing disk without the final full stop.
        raise RpcFail(str(err).removesuffix(".") if "is not set up" in str(err) else str(err)) from err
    except DiskConfigError as err:
        raise RpcFail(str(err)) from err


def _script(osd: OsDefinition, name: str) -> str:
    path = osd.scripts.get(name)
    if path is None:
        if name == SCRIPT_CREATE:
            raise RpcFail(f"OS {osd.name} has no trusted create script in {osd.path} (only"
                          " create_untrusted, which runs in an install helper VM, not on the node)")
        raise RpcFail(f"OS {osd.name} has no {name} script in {osd.path}")
    return path


@procedure("os_validate", blocking=True)
def os_validate(ctx: NodeContext, required: bool, name: str, checks: list[str],
                params: dict[str, Any], force_variant: bool) -> bool:
    """Check OS parameters with the OS's verify script; False when the OS is missing and not required."""
    unknown = set(checks or []).difference(OS_VALIDATE_CALLS)
    if unknown:
        raise RpcFail(f"Unknown checks required for OS {name}: {unknown}")
    try:
        osd = find_os(ctx.paths, name)
    except OsError as err:
        if required:
            raise RpcFail(str(err)) from err
        return False
    if not force_variant:
        check_variant(osd, name)
    if max(osd.api_versions) < OS_API_V20:
        return True
    params = params or {}
    if OS_VALIDATE_PARAMETERS in (checks or []):
        check_parameters(osd, params)
    env = core_env(name, osd, params)
    result = run_captured([_script(osd, SCRIPT_VERIFY), *(checks or [])], env, osd.path)
    if result.failed:
        raise RpcFail(f"OS validation script failed ({result.fail_reason}), output: {result.output}")
    return True


@procedure("instance_os_add", blocking=True)
def instance_os_add(ctx: NodeContext, instance: dict[str, Any], reinstall: bool, debug: int) -> None:
    """Run the OS create script on the instance's disks; log in $LOG_DIR/os/add-<os>-<instance>-<time>.log."""
    inst = _instance(instance)
    osd = find_os_or_fail(ctx.paths, inst["os"])
    script = _script(osd, SCRIPT_CREATE)
    env = instance_env(inst, osd, _attached_disks(ctx, inst), debug or 0)
    if reinstall:
        env["INSTANCE_REINSTALL"] = "1"
    log_file = log_file_name(ctx.paths, "add", inst["os"], inst["name"])
    run_with_log("create", script, env, osd.path, log_file)


@procedure("instance_run_rename", blocking=True)
def instance_run_rename(ctx: NodeContext, instance: dict[str, Any], old_name: str, debug: int) -> None:
    """Run the OS rename script; log in $LOG_DIR/os/rename-<os>-<old>-<new>-<time>.log."""
    inst = _instance(instance)
    osd = find_os_or_fail(ctx.paths, inst["os"])
    script = _script(osd, "rename")
    env = instance_env(inst, osd, _attached_disks(ctx, inst), debug or 0)
    env["OLD_INSTANCE_NAME"] = str(old_name)
    log_file = log_file_name(ctx.paths, "rename", inst["os"], f"{old_name}-{inst['name']}")
    run_with_log("rename", script, env, osd.path, log_file)


@procedure("os_export", blocking=True)
def os_export(ctx: NodeContext, instance: dict[str, Any], override_env: dict[str, Any]) -> str:
    """Pack the instance's OS definition and script environment into a new .tgz; its path."""
    inst = _instance(instance)
    osd = find_os_or_fail(ctx.paths, inst["os"])
    env = instance_env(inst, osd, _attached_disks(ctx, inst))
    env.update({str(k): str(v) for k, v in (override_env or {}).items()})
    return make_os_package(ctx.paths, osd, env)
