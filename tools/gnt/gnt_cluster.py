"""gnt-cluster: init, destroy, info, version and queue drain|undrain|info, as Ganeti 3.0 does them.

`init` and `destroy` (Ganeti's bootstrap, with our daemons) live in
tools.gnt.cluster_init.

LUXI use (cli-needs.md §1): `info` and `version` send QueryClusterInfo;
`queue drain|undrain` SetDrainFlag [bool]; `queue info` QueryConfigValues
[["drain_flag"]]; `watcher pause <timespec>` SetWatcherPause [now + seconds],
`watcher continue` SetWatcherPause [null], `watcher info` QueryConfigValues
[["watcher_pause"]]. Ganeti's other gnt-cluster commands (init, destroy,
verify, ...) answer "not implemented yet" with exit code 1 until they are
added: write `def cmd(ctx, opts, args) -> int`, add it to `COMMANDS` (and
remove its name from `PLANNED`).

Where Ganeti's output depends on Python's hash seed (the order of the
"max/0"/"min/0" bounds and of "spindle-ratio"/"vcpu-ratio" in `info`, which
iterate frozensets), we print them sorted.
"""

from __future__ import annotations

import time
from typing import Any

from masterd.query.fields import nice_sort_key
from tools.gnt import cluster_init, failover
from tools.gnt.command import ARGS_NONE, EXIT_SUCCESS, Args, Command, Context, generic_main, option
from tools.gnt.errors import ECODE_INVAL, GanetiError, protocol_error
from tools.gnt.output import format_time, parse_timespec, print_generic_info, to_roman, to_stdout

#: Where Ganeti looks for OS and ExtStorage definitions (pathutils; not under GANETI_ROOTDIR).
OS_SEARCH_PATH = ["/srv/ganeti/os", "/usr/local/lib/ganeti/os", "/usr/lib/ganeti/os", "/usr/share/ganeti/os"]
ES_SEARCH_PATH = ["/srv/ganeti/extstorage", "/usr/local/lib/ganeti/extstorage",
                  "/usr/lib/ganeti/extstorage", "/usr/share/ganeti/extstorage"]
#: constants.ISPECS_MINMAX_KEYS and IPOLICY_PARAMETERS, in a fixed (sorted) order.
ISPECS_MINMAX_KEYS = ("max", "min")
IPOLICY_PARAMETERS = ("spindle-ratio", "vcpu-ratio")


def comma_join(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def cluster_info(ctx: Context) -> Any:
    """The master's QueryClusterInfo answer, checked to be a dict."""
    result = ctx.client().query_cluster_info()
    if not isinstance(result, dict):
        raise protocol_error("ProtocolError", f"QueryClusterInfo answered {result!r}, not a dict")
    return result


def _shape_errors(func: Any) -> Any:
    """A QueryClusterInfo answer lacking a key (Ganeti: a traceback) becomes a ProtocolError naming it."""

    def run(ctx: Context, opts: Any, args: list[str]) -> int:
        try:
            return func(ctx, opts, args)  # type: ignore[no-any-return]
        except KeyError as err:
            raise protocol_error("ProtocolError",
                                 f"the master's QueryClusterInfo answer lacks the key {err}") from None
        except (TypeError, IndexError, ValueError) as err:
            text = f"the master's QueryClusterInfo answer has an unexpected shape: {err}"
            raise protocol_error("ProtocolError", text) from None

    return run


@_shape_errors
def show_cluster_version(ctx: Context, opts: Any, args: list[str]) -> int:
    result = cluster_info(ctx)
    to_stdout(f"Software version: {result['software_version']}")
    to_stdout(f"Internode protocol: {result['protocol_version']}")
    to_stdout(f"Configuration format: {result['config_version']}")
    to_stdout(f"OS api version: {result['os_api_version']}")
    to_stdout(f"Export interface: {result['export_version']}")
    to_stdout(f"VCS version: {result['vcs_version']}")
    return EXIT_SUCCESS


def _roman(value: Any, convert: bool) -> Any:
    return to_roman(value) if convert else value


def format_grouped_params(params: dict[str, Any], roman: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out[key] = format_grouped_params(value, roman)
        elif roman and isinstance(value, int):
            out[key] = to_roman(value)
        else:
            out[key] = str(value)
    return out


def format_params_dict_info(own: dict[str, Any], actual: dict[str, Any], roman: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, data in actual.items():
        if isinstance(data, dict) and data:
            out[key] = format_params_dict_info(own.get(key, {}), data, roman)
        else:
            default = f"default ({_roman(data, roman)})"
            out[key] = str(_roman(own.get(key, default), roman))
    return out


def format_policy_info(policy: dict[str, Any], roman: bool) -> list[Any]:
    """cli.FormatPolicyInfo for the cluster-level policy."""
    minmax_out = [[(f"{key}/{index}", format_params_dict_info(minmax[key], minmax[key], roman))
                   for key in ISPECS_MINMAX_KEYS]
                  for index, minmax in enumerate(policy.get("minmax") or [])]
    out: list[Any] = [("bounds specs", minmax_out)]
    std = policy["std"]
    out.append(("std", format_params_dict_info(std, std, roman)))
    templates = policy.get("disk-templates")
    out.append(("allowed disk templates", comma_join(templates) if templates is not None
                else f"default ({comma_join(policy['disk-templates'])})"))
    out.extend((key, str(_roman(policy.get(key, f"default ({policy[key]})"), roman)))
               for key in IPOLICY_PARAMETERS)
    return out


def format_data_collectors(info: dict[str, Any]) -> dict[str, Any]:
    enabled = info["enabled_data_collectors"]
    interval = info["data_collector_interval"]
    return {name: {"active": enabled[name], "interval": "%.3fs" % (interval[name] / 1e6)} for name in enabled}


def format_uid_pool(pool: list[Any]) -> str:
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in pool)


@_shape_errors
def show_cluster_config(ctx: Context, opts: Any, args: list[str]) -> int:
    r = cluster_info(ctx)
    roman = bool(opts.roman_integers)
    tags = comma_join(sorted(r["tags"], key=nice_sort_key)) if r["tags"] else "(none)"
    reserved_lvs = comma_join(r["reserved_lvs"]) if r["reserved_lvs"] else "(none)"
    enabled_hv = r["enabled_hypervisors"]
    hvparams = {k: v for k, v in r["hvparams"].items() if k in enabled_hv}
    info: list[Any] = [
        ("Cluster name", r["name"]),
        ("Cluster UUID", r["uuid"]),
        ("Creation time", format_time(r["ctime"])),
        ("Modification time", format_time(r["mtime"])),
        ("Master node", r["master"]),
        ("Architecture (this node)", f"{r['architecture'][0]} ({r['architecture'][1]})"),
        ("Tags", tags),
        ("Default hypervisor", r["default_hypervisor"]),
        ("Enabled hypervisors", comma_join(enabled_hv)),
        ("Hypervisor parameters", format_grouped_params(hvparams, roman)),
        ("OS-specific hypervisor parameters", format_grouped_params(r["os_hvp"], roman)),
        ("OS parameters", format_grouped_params(r["osparams"], roman)),
        ("Hidden OSes", comma_join(r["hidden_os"])),
        ("Blacklisted OSes", comma_join(r["blacklisted_os"])),
        ("Cluster parameters", [
            ("candidate pool size", _roman(r["candidate_pool_size"], roman)),
            ("maximal number of jobs running simultaneously", _roman(r["max_running_jobs"], roman)),
            ("maximal number of jobs simultaneously tracked by the scheduler",
             _roman(r["max_tracked_jobs"], roman)),
            ("mac prefix", r["mac_prefix"]),
            ("master netdev", r["master_netdev"]),
            ("master netmask", _roman(r["master_netmask"], roman)),
            ("use external master IP address setup script", r["use_external_mip_script"]),
            ("lvm volume group", r["volume_group_name"]),
            ("lvm reserved volumes", reserved_lvs),
            ("drbd usermode helper", r["drbd_usermode_helper"]),
            ("file storage path", r["file_storage_dir"]),
            ("shared file storage path", r["shared_file_storage_dir"]),
            ("gluster storage path", r["gluster_storage_dir"]),
            ("maintenance of node health", r["maintain_node_health"]),
            ("uid pool", format_uid_pool(r["uid_pool"])),
            ("default instance allocator", r["default_iallocator"]),
            ("default instance allocator parameters", r["default_iallocator_params"]),
            ("primary ip version", _roman(r["primary_ip_version"], roman)),
            ("preallocation wipe disks", r["prealloc_wipe_disks"]),
            ("OS search path", comma_join(OS_SEARCH_PATH)),
            ("ExtStorage Providers search path", comma_join(ES_SEARCH_PATH)),
            ("enabled disk templates", comma_join(r["enabled_disk_templates"])),
            ("install image", r["install_image"]),
            ("instance communication network", r["instance_communication_network"]),
            ("zeroing image", r["zeroing_image"]),
            ("compression tools", r["compression_tools"]),
            ("enabled user shutdown", r["enabled_user_shutdown"]),
            ("modify ssh setup", r["modify_ssh_setup"]),
            ("ssh_key_type", r["ssh_key_type"]),
            ("ssh_key_bits", r["ssh_key_bits"]),
        ]),
        ("Default node parameters", format_grouped_params(r["ndparams"], roman)),
        ("Default instance parameters", format_grouped_params(r["beparams"], roman)),
        ("Default nic parameters", format_grouped_params(r["nicparams"], roman)),
        ("Default disk parameters", format_grouped_params(r["diskparams"], roman)),
        ("Instance policy - limits for instances", format_policy_info(r["ipolicy"], roman)),
        ("Data collectors", format_data_collectors(r)),
    ]
    print_generic_info(info)
    return EXIT_SUCCESS


def queue_ops(ctx: Context, opts: Any, args: list[str]) -> int:
    command = args[0]
    client = ctx.client()
    if command in ("drain", "undrain"):
        client.set_queue_drain_flag(command == "drain")
    elif command == "info":
        result = client.query_config_values(["drain_flag"])
        to_stdout(f"The drain flag is {'set' if result[0] else 'unset'}")
    else:
        raise GanetiError("OpPrereqError", f"Command '{command}' is not valid.", ECODE_INVAL)
    return EXIT_SUCCESS


def _show_watcher_pause(until: Any) -> None:
    if until is None or until < time.time():
        to_stdout("The watcher is not paused.")
    else:
        to_stdout(f"The watcher is paused until {time.ctime(until)}.")


def watcher_ops(ctx: Context, opts: Any, args: list[str]) -> int:
    """`watcher pause <timespec>|continue|info`: SetWatcherPause / QueryConfigValues [["watcher_pause"]]."""
    command = args[0]
    client = ctx.client()
    if command == "continue":
        client.call("SetWatcherPause", [None])
        to_stdout("The watcher is no longer paused.")
    elif command == "pause":
        if len(args) < 2:
            raise GanetiError("OpPrereqError", "Missing pause duration", ECODE_INVAL)
        _show_watcher_pause(client.call("SetWatcherPause", [time.time() + parse_timespec(args[1])]))
    elif command == "info":
        _show_watcher_pause(client.query_config_values(["watcher_pause"])[0])
    else:
        raise GanetiError("OpPrereqError", f"Command '{command}' is not valid.", ECODE_INVAL)
    return EXIT_SUCCESS


ROMAN_OPT = option("--roman", dest="roman_integers", default=False, action="store_true",
                   help="Use roman numbers for positive integers")

COMMANDS: dict[str, Command] = {
    "info": Command(show_cluster_config, ARGS_NONE, [ROMAN_OPT], "[--roman]", "Show cluster configuration"),
    "version": Command(show_cluster_version, ARGS_NONE, [], "", "Shows the cluster version"),
    "queue": Command(queue_ops, [Args(min=1, max=1)], [], "drain|undrain|info", "Change queue properties"),
    "watcher": Command(watcher_ops, [Args(min=1, max=1), Args(min=0, max=1)], [],
                       "{pause <timespec>|continue|info}", "Change watcher properties"),
    **cluster_init.COMMANDS,
    **failover.COMMANDS,
}

ALIASES = {"show": "info", "masterfailover": "master-failover"}

#: Ganeti's other gnt-cluster commands, to come (issue 5 and later).
PLANNED = ("rename", "redist-conf", "verify", "verify-disks", "repair-disk-sizes",
           "master-ping", "getmaster", "copyfile", "command", "list-tags", "add-tags",
           "remove-tags", "search-tags", "modify", "renew-crypto", "epo", "activate-master-ip",
           "deactivate-master-ip", "show-ispecs-cmd", "upgrade")


def main() -> int:
    return generic_main(COMMANDS, aliases=ALIASES, planned=PLANNED)


if __name__ == "__main__":
    raise SystemExit(main())
