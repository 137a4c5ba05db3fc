"""gnt-instance: Ganeti 3.0's instance commands, with Debian's options, LUXI requests and output.

Commands: add, batch-create, list, list-fields, info, startup/start,
shutdown/stop, reboot, remove, activate-disks, deactivate-disks,
recreate-disks, replace-disks, grow-disk, migrate, failover, move,
change-group, modify, rename, reinstall, console, list-tags, add-tags,
remove-tags -- every command of Ganeti 3.0's gnt-instance. Each sends the
requests Debian's gnt-instance sends (cli-needs.md §3): the same opcodes with
the same parameters (our `make_opcode` fills every parameter like the real
CLI's serialisation), the same Query/QueryInstances/QueryNodes calls,
SubmitManyJobs for the multi-instance commands (startup, shutdown, reboot,
reinstall) with Ganeti's JobExecutor output ("Submitted jobs ...", "Waiting
for job N for NAME ..."), the same confirmations on /dev/tty (without a
terminal the answer is "no"), and prints what it prints; $GNT_INSTANCE_LIST
adds default options to `list` like Ganeti's env_override.

Option values are parsed like Ganeti's cli_opts: `key=val,...` (keyval),
`ident:key=val,...` (identkeyval; `no_x` -> False, `-x` -> None), sizes
with units (rounded up to 4 MiB), yes/no booleans; -B/-H/--net values are
type-converted with Ganeti's parameter type tables (utils.ForceDictType).
Malformed values give Ganeti's errors (ParameterError, TypeEnforcementError,
OpPrereqError, UnitParseError) before anything is sent.

`console`: with --show-cmd prints the command Debian prints (for a kvm
serial console the ssh command running the console command on the node;
in a virtual cluster it exports the node's GANETI_ROOTDIR/GANETI_HOSTNAME
like Ganeti's vcluster). Without it the command is run: a node whose root
lives on this machine (GANETI_ROOTDIR's parent holds it) gets the inner
command run locally with that node's environment (what the ssh would do
there, without SSH); any other node gets the ssh command, like Debian.

Deliberate differences: `--help` texts are ours (Debian lists some choices
in a hash-seed dependent order); `--roman` converts integers (Debian's
python3 lacks the `roman` module, so it prints plain numbers); a
non-numeric recreate-disks --disk index is an OpPrereqError, not a
traceback.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import optparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from masterd.opcodes.types import check as check_type
from masterd.opcodes.validate import default_definitions
from noded.paths import Paths
from tools.gnt.command import (
    DRY_RUN_OPT,
    EXIT_FAILURE,
    EXIT_SUCCESS,
    EXIT_UNKNOWN_FIELD,
    FIELDS_OPT,
    FORCE_FILTER_OPT,
    FORCE_OPT,
    NOHDR_OPT,
    PRIORITY_OPT,
    SEP_OPT,
    SUBMIT_OPTS,
    VERBOSE_OPT,
    Args,
    Command,
    Context,
    ask_user,
    generic_main,
    parse_fields,
)
from tools.gnt.errors import ECODE_INVAL, GanetiError, JobSubmitted, format_error
from tools.gnt.gnt_cluster import format_params_dict_info
from tools.gnt.gnt_job import generic_list, query_errors
from tools.gnt.jobs import make_opcode, poll_job, set_generic_opcode_opts, submit_opcode, submit_or_send
from tools.gnt.luxi_client import LuxiClient
from tools.gnt.output import (
    field_listing,
    format_time,
    format_unit,
    print_generic_info,
    to_roman,
    to_stderr,
    to_stdout,
)

log = logging.getLogger("gnt")

ECODE_NOENT = "unknown_entity"
#: Default fields of `gnt-instance list`.
LIST_DEF_FIELDS = ["name", "hypervisor", "os", "pnode", "status", "oper_ram"]
#: Jobs whose status QueryJobs asks for at once when choosing the next job to follow (cli._CHOOSE_BATCH).
CHOOSE_BATCH = 25
VALUE_DEFAULT = "default"
TAG_INSTANCE = "instance"
DISK_TEMPLATES = ["diskless", "plain", "file", "rbd", "sharedfile", "blockdev", "drbd", "ext", "gluster"]
FILE_DRIVERS = ["loop", "blktap2", "blktap"]
FILE_TEMPLATES = ("file", "sharedfile", "gluster")

# -- Ganeti's parameter type tables (constants.*_TYPES), for utils.ForceDictType -----------------

_S, _MS, _B, _I, _Z = "string", "maybe-string", "bool", "int", "size"
BE_TYPES = {"always_failover": _B, "auto_balance": _B, "maxmem": _Z, "memory": _Z, "minmem": _Z,
            "spindle_use": _I, "vcpus": _I}
NIC_TYPES = {"bridge": _MS, "ip": _MS, "link": _S, "mac": _S, "mode": _S, "name": _MS, "network": _MS,
             "vlan": _MS}
_HV_BOOL = ("acpi", "pae", "serial_console", "spice_playback_compression", "spice_use_tls",
            "spice_use_vdagent", "use_bootloader", "use_chroot", "use_guest_agent", "use_localtime",
            "user_shutdown", "vhost_net", "viridian", "vnc_tls", "vnc_x509_verify", "vnet_hdr")
_HV_INT = ("cpu_cap", "cpu_cores", "cpu_sockets", "cpu_threads", "cpu_weight", "kvm_pci_reservations",
           "migration_bandwidth", "migration_downtime", "migration_port", "num_ttys", "serial_speed",
           "spice_ip_version", "startup_timeout", "virtio_net_queues")
_HV_STRING = ("blockdev_prefix", "boot_order", "bootloader_args", "bootloader_path", "cdrom2_image_path",
              "cdrom_disk_type", "cdrom_image_path", "cpu_mask", "cpu_type", "cpuid", "device_model",
              "devices", "disk_aio", "disk_cache", "disk_discard", "disk_type", "drop_capabilities",
              "extra_cgroups", "extra_config", "floppy_image_path", "init_script", "initrd_path",
              "kernel_args", "kernel_path", "keymap", "kvm_extra", "kvm_flag", "kvm_path", "machine_version",
              "mem_path", "migration_caps", "migration_mode", "nic_type", "pci_pass", "reboot_behavior",
              "scsi_controller_type", "security_domain", "security_model", "soundhw", "spice_bind",
              "spice_image_compression", "spice_jpeg_wan_compression", "spice_password_file",
              "spice_streaming_video", "spice_tls_ciphers", "spice_zlib_glz_wan_compression",
              "usb_devices", "usb_mouse", "vga", "vif_script", "vif_type", "vnc_bind_address",
              "vnc_password_file", "vnc_x509_path", "xen_cmd")
HV_TYPES: dict[str, str] = {**dict.fromkeys(_HV_BOOL, _B), **dict.fromkeys(_HV_INT, _I),
                            **dict.fromkeys(_HV_STRING, _S), "root_path": _MS}

_PARSEUNIT = re.compile(r"^([.\d]+)\s*([a-zA-Z]+)?$")


def parse_unit(text: Any) -> int:
    """utils.ParseUnit: MiB from "512", "1.5G", "2t"..., rounded up to a multiple of 4."""
    match = _PARSEUNIT.match(str(text))
    if not match:
        raise GanetiError("UnitParseError", "Invalid format")
    try:
        value = float(match.group(1))
    except ValueError:
        raise GanetiError("UnitParseError", "Invalid format") from None
    unit = (match.group(2) or "m").lower()
    if unit in ("g", "gb", "gib"):
        value *= 1024
    elif unit in ("t", "tb", "tib"):
        value *= 1024 * 1024
    elif unit not in ("m", "mb", "mib"):
        raise GanetiError("UnitParseError", f"Unknown unit: {match.group(2)}")
    if int(value) < value:
        value += 1
    result = int(value)
    if result % 4:
        result += 4 - result % 4
    return result


def force_dict_type(target: Any, key_types: dict[str, str], allowed_values: Sequence[Any] = ()) -> None:
    """utils.ForceDictType: convert the values of `target` in place to their parameter types."""
    if not isinstance(target, dict):
        raise GanetiError("TypeEnforcementError", f"Expected dictionary, got '{_py_str(target)}'")
    for key in target:
        if key not in key_types:
            raise GanetiError("TypeEnforcementError", f"Unknown parameter '{key}'")
        value = target[key]
        if value in allowed_values:
            continue
        ktype = key_types[key]
        if ktype in (_S, _MS):
            if value is None and ktype == _MS:
                pass
            elif not isinstance(value, str):
                if isinstance(value, bool) and not value:
                    target[key] = ""
                else:
                    raise GanetiError("TypeEnforcementError",
                                      f"'{key}' (value {_py_str(value)}) is not a valid string")
        elif ktype == _B:
            if isinstance(value, str) and value:
                if value.lower() == "false":
                    target[key] = False
                elif value.lower() == "true":
                    target[key] = True
                else:
                    raise GanetiError("TypeEnforcementError",
                                      f"'{key}' (value {value}) is not a valid boolean")
            else:
                target[key] = bool(value)
        elif ktype == _Z:
            try:
                target[key] = parse_unit(value)
            except GanetiError as err:
                raise GanetiError("TypeEnforcementError", f"'{key}' (value {_py_str(value)}) is not a valid "
                                  f"size. error: {err}") from None
        elif ktype == _I:
            try:
                target[key] = _py_int(value)
            except (ValueError, TypeError):
                raise GanetiError("TypeEnforcementError",
                                  f"'{key}' (value {_py_str(value)}) is not a valid integer") from None


def _py_str(value: Any) -> str:
    return str(value)


def _py_int(value: Any) -> int:
    if value is None:
        raise TypeError("None")
    return int(value)


def _int_error(text: Any) -> str:
    """Python's message for int() of a bad string."""
    return f"invalid literal for int() with base 10: {text!r}"


# -- option value parsing (cli_opts' custom types) ----------------------------------------------


def unescape_and_split(text: str, sep: str = ",") -> list[str]:
    """utils.UnescapeAndSplit: split at `sep`, where a backslash escapes the separator."""
    pieces = text.split(sep)
    out: list[str] = []
    while pieces:
        first = pieces.pop(0)
        if first.endswith("\\"):
            count = len(first) - len(first.rstrip("\\"))
            if count % 2 == 1 and pieces:
                pieces.insert(0, first + sep + pieces.pop(0))
                continue
        out.append(first)
    return [re.sub(r"\\(.)", r"\1", piece) for piece in out]


def split_key_val(opt: str, data: str, parse_prefixes: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if not data:
        return result
    for elem in unescape_and_split(data):
        value: Any
        if "=" in elem:
            key, value = elem.split("=", 1)
        elif parse_prefixes:
            if elem.startswith("no_"):
                key, value = elem[3:], False
            elif elem.startswith("-"):
                key, value = elem[1:], None
            else:
                key, value = elem, True
        else:
            raise GanetiError("ParameterError", f"Missing value for key '{elem}' in option {opt}")
        if key in result:
            raise GanetiError("ParameterError", f"Duplicate key '{key}' in option {opt}")
        result[key] = value
    return result


def split_ident_key_val(opt: str, value: str) -> tuple[str, Any]:
    ident, rest = value.split(":", 1) if ":" in value else (value, "")
    removing = f"Cannot pass options when removing parameter groups: {value}"
    if ident.startswith("no_"):
        if rest:
            raise GanetiError("ParameterError", removing)
        return ident[3:], False
    if ident.startswith("-") and (len(ident) <= 1 or not ident[1].isdigit()):
        if rest:
            raise GanetiError("ParameterError", removing)
        return ident[1:], None
    return ident, split_key_val(opt, rest, True)


def _check_unit(_option: optparse.Option, opt: str, value: str) -> int:
    try:
        return parse_unit(value)
    except GanetiError as err:
        raise optparse.OptionValueError(f"option {opt}: {err}") from None


def _check_bool(_option: optparse.Option, _opt: str, value: str) -> bool:
    value = value.lower()
    if value in ("false", "no"):
        return False
    if value in ("true", "yes"):
        return True
    raise GanetiError("ParameterError", f"Invalid boolean value '{value}'")


class CliOption(optparse.Option):
    """optparse options with Ganeti's value types (keyval, identkeyval, keyprivateval, unit, bool)."""

    TYPES = (*optparse.Option.TYPES, "identkeyval", "keyval", "keyprivateval", "unit", "bool")
    TYPE_CHECKER = dict(optparse.Option.TYPE_CHECKER)  # noqa: RUF012 - optparse's own attribute
    TYPE_CHECKER["identkeyval"] = lambda _o, opt, value: split_ident_key_val(opt, value)
    TYPE_CHECKER["keyval"] = lambda _o, opt, value: split_key_val(opt, value, True)
    TYPE_CHECKER["keyprivateval"] = lambda _o, opt, value: split_key_val(opt, value, True)
    TYPE_CHECKER["unit"] = _check_unit
    TYPE_CHECKER["bool"] = _check_bool


def opt(*names: str, **kwargs: Any) -> optparse.Option:
    return CliOption(*names, **kwargs)


# -- options (cli_opts) ---------------------------------------------------------------------------

BACKEND_OPT = opt("-B", "--backend-parameters", dest="beparams", type="keyval", default={},
                  help="Backend parameters")
HVOPTS_OPT = opt("-H", "--hypervisor-parameters", type="keyval", default={}, dest="hvparams",
                 help="Hypervisor parameters")
HYPERVISOR_OPT = opt("-H", "--hypervisor-parameters", dest="hypervisor", type="identkeyval", default=None,
                     help="Hypervisor and hypervisor options, in the format hypervisor:option=value,...")
DISK_OPT = opt("--disk", help="Disk parameters", default=[], dest="disks", action="append",
               type="identkeyval")
NET_OPT = opt("--net", help="NIC parameters", default=[], dest="nics", action="append", type="identkeyval")
DISK_TEMPLATE_OPT = opt("-t", "--disk-template", dest="disk_template", help="Custom disk setup ({})".format(
                        ", ".join(DISK_TEMPLATES)), default=None, metavar="TEMPL", choices=DISK_TEMPLATES)
FILESTORE_DIR_OPT = opt("--file-storage-dir", dest="file_storage_dir",
                        help="Relative path under default cluster-wide file storage dir to store "
                             "file-based disks", default=None, metavar="<DIR>")
FILESTORE_DRIVER_OPT = opt("--file-driver", dest="file_driver", help="Driver to use for image files",
                           default=None, metavar="<DRIVER>", choices=FILE_DRIVERS)
IALLOCATOR_OPT = opt("-I", "--iallocator", metavar="<NAME>", help="Select nodes for the instance "
                     "automatically using the <NAME> iallocator plugin", default=None, type="string")
NODE_PLACEMENT_OPT = opt("-n", "--node", dest="node", help="Target node and optional secondary node",
                         metavar="<pnode>[:<snode>]")
NODEGROUP_OPT = opt("-g", "--node-group", dest="nodegroup", help="Node group (name or uuid)",
                    metavar="<nodegroup>", default=None, type="string")
NOIPCHECK_OPT = opt("--no-ip-check", dest="ip_check", default=True, action="store_false",
                    help="Don't check that the instance's IP is alive")
NOCONFLICTSCHECK_OPT = opt("--no-conflicts-check", dest="conflicts_check", default=True,
                           action="store_false", help="Don't check for conflicting IPs")
NONAMECHECK_OPT = opt("--no-name-check", dest="name_check", default=True, action="store_false",
                      help="Don't check that the instance's name is resolvable")
NONICS_OPT = opt("--no-nics", default=False, action="store_true", help="Do not create any network cards "
                 "for the instance")
NWSYNC_OPT = opt("--no-wait-for-sync", dest="wait_for_sync", default=True, action="store_false",
                 help="Don't wait for sync (DANGEROUS!)")
WFSYNC_OPT = opt("--wait-for-sync", dest="wait_for_sync", default=False, action="store_true",
                 help="Wait for disks to sync")
OSPARAMS_OPT = opt("-O", "--os-parameters", dest="osparams", type="keyval", default={},
                   help="OS parameters")
OSPARAMS_PRIVATE_OPT = opt("--os-parameters-private", dest="osparams_private", type="keyprivateval",
                           default={}, help="Private OS parameters (won't be logged)")
OSPARAMS_SECRET_OPT = opt("--os-parameters-secret", dest="osparams_secret", type="keyprivateval",
                          default={}, help="Secret OS parameters (won't be logged or saved; you must "
                                           "supply these for every operation.)")
OS_SIZE_OPT = opt("-s", "--os-size", dest="sd_size", help="Disk size for a single-disk instance",
                  default=None, type="unit", metavar="<size>")
OPPORTUNISTIC_OPT = opt("--opportunistic-locking", dest="opportunistic_locking", action="store_true",
                        default=False, help="Opportunistically acquire locks")
TAG_ADD_OPT = opt("--tags", dest="tags", default=None, help="Comma-separated list of instance tags")
FORTHCOMING_OPT = opt("--forthcoming", dest="forthcoming", action="store_true", default=False,
                      help="Only reserve resources, but do not create the instance yet")
COMMIT_OPT = opt("--commit", dest="commit", action="store_true", default=False,
                 help="The instance is already reserved and should be committed now")
NOSTART_OPT = opt("--no-start", dest="start", default=True, action="store_false",
                  help="Don't start the instance after creation")
OS_OPT = opt("-o", "--os-type", dest="os", help="What OS to run", metavar="<os>")
FORCE_VARIANT_OPT = opt("--force-variant", dest="force_variant", action="store_true", default=False,
                        help="Force an unknown variant")
NO_INSTALL_OPT = opt("--no-install", dest="no_install", action="store_true", default=False,
                     help="Do not install the OS (will enable no-start)")
IGNORE_IPOLICY_OPT = opt("--ignore-ipolicy", dest="ignore_ipolicy", action="store_true", default=False,
                         help="Ignore instance policy violations")
INSTANCE_COMMUNICATION_OPT = opt("-c", "--communication", dest="instance_communication",
                                 help="Enable or disable the communication mechanism for an instance",
                                 type="bool")
HELPER_STARTUP_TIMEOUT_OPT = opt("--helper-startup-timeout", dest="helper_startup_timeout",
                                 help="Startup timeout for the helper VM", type="int")
HELPER_SHUTDOWN_TIMEOUT_OPT = opt("--helper-shutdown-timeout", dest="helper_shutdown_timeout",
                                  help="Shutdown timeout for the helper VM", type="int")
USEUNITS_OPT = opt("--units", default=None, dest="units", choices=("h", "m", "g", "t"),
                   help="Specify units for output (one of h/m/g/t)")
SHOWCMD_OPT = opt("--show-cmd", dest="show_command", action="store_true", default=False,
                  help="Show command instead of executing it")
STATIC_OPT = opt("-s", "--static", dest="static", action="store_true", default=False,
                 help="Only show configuration data, not runtime data")
ALL_OPT = opt("--all", dest="show_all", default=False, action="store_true",
              help="Show info on all instances on the cluster. This can take a long time to run, use "
                   "wisely")
ROMAN_OPT = opt("--roman", dest="roman_integers", default=False, action="store_true",
                help="Use roman numbers for positive integers")
SHUTDOWN_TIMEOUT_OPT = opt("--shutdown-timeout", dest="shutdown_timeout", type="int", default=120,
                           help="Maximum time to wait for instance shutdown")
TIMEOUT_OPT = opt("--timeout", dest="timeout", type="int", default=120,
                  help="Maximum time to wait")
IGNORE_FAILURES_OPT = opt("--ignore-failures", dest="ignore_failures", action="store_true", default=False,
                          help="Remove the instance from the cluster configuration even if there are "
                               "failures during the removal process")
IGNORE_CONSIST_OPT = opt("--ignore-consistency", dest="ignore_consistency", action="store_true",
                         default=False, help="Ignore the consistency of the disks on the secondary")
DST_NODE_OPT = opt("-n", "--target-node", dest="dst_node", help="Target node for the operation",
                   metavar="NODE", default=None)
CLEANUP_OPT = opt("--cleanup", dest="cleanup", default=False, action="store_true",
                  help="Instead of performing the migration/failover, try to recover from a failed "
                       "cleanup. This is safe to run even if the instance is healthy, but it will create "
                       "extra replication traffic and  disrupt briefly the replication (like during the "
                       "migration/failover")
NONLIVE_OPT = opt("--non-live", dest="live", default=True, action="store_false",
                  help="Do a non-live migration (this usually means freeze the instance, save the state, "
                       "transfer and only then resume running on the secondary node)")
MIGRATION_MODE_OPT = opt("--migration-mode", dest="migration_mode", default=None,
                         choices=["live", "non-live"], help="Override default migration mode (choose "
                         "either live or non-live")
ALLOW_FAILOVER_OPT = opt("--allow-failover", dest="allow_failover", action="store_true", default=False,
                         help="If migration is not possible fallback to failover")
IGNORE_HVVERSIONS_OPT = opt("--ignore-hvversions", dest="ignore_hvversions", action="store_true",
                            default=False, help="Ignore imcompatible hypervisor versions between source "
                                                "and target")
NORUNTIME_CHGS_OPT = opt("--no-runtime-changes", dest="allow_runtime_chgs", default=True,
                         action="store_false", help="Don't allow runtime changes")
SINGLE_NODE_OPT = opt("-n", "--node", dest="node", help="Target node", metavar="<node>")
OFFLINE_INST_OPT = opt("--offline", dest="offline_inst", help="Turn off the instance", default=False,
                       action="store_true")
ONLINE_INST_OPT = opt("--online", dest="online_inst", help="Turn on the instance", default=False,
                      action="store_true")
RUNTIME_MEM_OPT = opt("-m", "--runtime-memory", dest="runtime_mem", default=None, type="unit",
                      metavar="<size>", help="Set the instance's runtime memory, ballooning it up or down "
                                             "to the new value")
NEW_PRIMARY_OPT = opt("--new-primary", dest="new_primary_node", default=None, metavar="<node>",
                      help="The new primary node")
HOTPLUG_OPT = opt("--hotplug", dest="hotplug", action="store_true", default=False,
                  help="Hotplug supported devices (NICs and Disks)")
HOTPLUG_IF_POSSIBLE_OPT = opt("--hotplug-if-possible", dest="hotplug_if_possible", action="store_true",
                              default=False, help="Hotplug devices in case hotplug is supported")
EXT_PARAMS_OPT = opt("-e", "--ext-params", dest="ext_params", default={}, type="keyval",
                     help="ExtStorage parameters")
ABSOLUTE_OPT = opt("--absolute", dest="absolute", action="store_true", default=False,
                   help="Marks the grow as absolute instead of the (default) relative mode")
IGNORE_SIZE_OPT = opt("--ignore-size", dest="ignore_size", default=False, action="store_true",
                      help="Ignore current recorded size (useful for forcing activation when the "
                           "recorded size is wrong)")
IGNORE_OFFLINE_OPT = opt("--ignore-offline", dest="ignore_offline", action="store_true", default=False,
                         help="Ignore offline nodes and do as much as possible")
NO_REMEMBER_OPT = opt("--no-remember", dest="no_remember", action="store_true", default=False,
                      help="Perform but do not record the change in the configuration")
STARTUP_PAUSED_OPT = opt("--paused", dest="startup_paused", action="store_true", default=False,
                         help="Pause instance at startup")
REBOOT_TYPE_OPT = opt("-t", "--type", dest="reboot_type", help="Type of reboot: soft/hard/full",
                      default="hard", metavar="<REBOOT>", choices=["soft", "full", "hard"])
IGNORE_SECONDARIES_OPT = opt("--ignore-secondaries", dest="ignore_secondaries", default=False,
                             action="store_true", help="Ignore errors from secondaries")
SELECT_OS_OPT = opt("--select-os", dest="select_os", action="store_true", default=False,
                    help="Interactive OS reinstall, lists available OS templates for selection")
COMPRESS_OPT = opt("--compress", dest="compress", type="string", default="none",
                   help="The compression mode to use")
TO_GROUP_OPT = opt("--to", dest="to", metavar="<group>", action="append",
                   help="Destination node group (name or uuid)")
EARLY_RELEASE_OPT = opt("--early-release", dest="early_release", default=False, action="store_true",
                        help="Release the locks on the secondary node(s) early")
AUTO_REPLACE_OPT = opt("-a", "--auto", dest="auto", default=False, action="store_true",
                       help="Automatically replace faulty disks (applies only to internally mirrored disk "
                            "templates, e.g. drbd)")
DISKIDX_OPT = opt("--disks", dest="disks", default=None,
                  help="Comma-separated list of disks indices to act on (e.g. 0,2) (optional, defaults to "
                       "all disks)")
NEW_SECONDARY_OPT = opt("-n", "--new-secondary", dest="dst_node", help="Specifies the new secondary node",
                        metavar="NODE", default=None)
ON_PRIMARY_OPT = opt("-p", "--on-primary", dest="on_primary", default=False, action="store_true",
                     help="Replace the disk(s) on the primary node (applies only to internally mirrored disk "
                          "templates, e.g. drbd)")
ON_SECONDARY_OPT = opt("-s", "--on-secondary", dest="on_secondary", default=False, action="store_true",
                       help="Replace the disk(s) on the secondary node (applies only to internally mirrored "
                            "disk templates, e.g. drbd)")
TAG_SRC_OPT = opt("--from", dest="tags_source", default=None, help="File with tag names")

_MULTI = (("--node", "nodes", "Filter by nodes (primary and secondary)"),
          ("--primary", "nodes-pri", "Filter by nodes (primary only)"),
          ("--secondary", "nodes-sec", "Filter by nodes (secondary only)"),
          ("--all", "cluster", "Select all instances in the cluster"),
          ("--instance", "instances", "Filter by instance name [default]"),
          ("--node-tags", "nodes-by-tags", "Filter by node tag"),
          ("--pri-node-tags", "nodes-pri-by-tags", "Filter by primary node tag"),
          ("--sec-node-tags", "nodes-sec-by-tags", "Filter by secondary node tag"),
          ("--tags", "instances-by-tags", "Filter by instance tag"))
M_OPTS = {flag: opt(flag, dest="multi_mode", help=text, const=mode, action="store_const")
          for flag, mode, text in _MULTI}
M_FORCE_MULTI = opt("--force-multiple", dest="force_multi", action="store_true", default=False,
                    help="Do not ask for confirmation when more than one instance is affected")


def _m(*flags: str) -> list[optparse.Option]:
    return [M_OPTS[flag] for flag in flags]


# -- asking the user ------------------------------------------------------------------------------


def confirm_operation(names: list[str], list_type: str, text: str, extra: str = "") -> Any:
    """cli.ConfirmOperation."""
    msg = f"The {text} will operate on {len(names)} {list_type}.\n{extra}Do you want to continue?"
    affected = f"\nAffected {list_type}:\n" + "\n".join(f"  {name}" for name in names)
    choices: list[tuple[str, Any, str]] = [("y", True, f"Yes, execute the {text}"),
                                           ("n", False, f"No, abort the {text}")]
    if len(names) > 20:
        choices.insert(1, ("v", "v", f"View the list of affected {list_type}"))
        question = msg
    else:
        question = msg + affected
    choice = ask_user(question, choices)
    if choice == "v":
        choices.pop(1)
        choice = ask_user(msg + affected, choices)
    return choice


# -- LUXI helpers ----------------------------------------------------------------------------------


def query_instances(client: LuxiClient, names: list[str], fields: list[str]) -> list[list[Any]]:
    return client.call("QueryInstances", [names, fields, False])  # type: ignore[no-any-return]


def query_nodes(client: LuxiClient, names: list[str], fields: list[str]) -> list[list[Any]]:
    return client.call("QueryNodes", [names, fields, False])  # type: ignore[no-any-return]


def _fmt_error(err: BaseException) -> str:
    return format_error(err)[1]


class JobExecutor:
    """cli.JobExecutor: submit several jobs (SubmitManyJobs) and follow each, printing Ganeti's lines."""

    def __init__(self, client: LuxiClient, opts: Any, argv: Sequence[str], verbose: bool = True) -> None:
        self.client = client
        self.opts = opts
        self.argv = argv
        self.verbose = verbose
        self.queue: list[tuple[int, str | None, list[dict[str, Any]]]] = []
        self.jobs: list[tuple[int, Any, Any, str | None]] = []
        self._counter = itertools.count()

    def queue_job(self, name: str | None, *ops: dict[str, Any]) -> None:
        for op in ops:
            set_generic_opcode_opts(op, self.opts, self.argv)
        self.queue.append((next(self._counter), name, list(ops)))

    def add_job_id(self, name: str | None, status: Any, job_id: Any) -> None:
        self.jobs.append((next(self._counter), status, job_id, name))

    def submit_pending(self) -> None:
        results = self.client.call("SubmitManyJobs", [[ops for (_, _, ops) in self.queue]])
        for (status, data), (idx, name, _) in zip(results, self.queue, strict=False):
            self.jobs.append((idx, status, data, name))

    @staticmethod
    def _if_name(name: str | None, fmt: str) -> str:
        return fmt % name if name else ""

    def _choose_job(self) -> tuple[int, Any, Any, str | None]:
        result = self.client.query_jobs([job[2] for job in self.jobs[:CHOOSE_BATCH]], ["status"])
        for job, status in zip(self.jobs, result, strict=False):
            if isinstance(status, list) and status and status[0] in ("queued", "waiting", "canceling"):
                continue
            self.jobs.remove(job)
            return job
        return self.jobs.pop(0)

    def get_results(self) -> list[tuple[bool, Any]]:
        if not self.jobs:
            self.submit_pending()
        results: list[tuple[int, bool, Any]] = []
        if self.verbose:
            ok_jobs = [row[2] for row in self.jobs if row[1]]
            if ok_jobs:
                to_stdout("Submitted jobs " + ", ".join(str(job) for job in ok_jobs))
        failures = [row for row in self.jobs if not row[1]]
        self.jobs = [row for row in self.jobs if row[1]]
        for idx, _, jid, name in failures:
            to_stderr(f"Failed to submit job{self._if_name(name, ' for %s')}: {jid}")
            results.append((idx, False, jid))
        while self.jobs:
            idx, _, jid, name = self._choose_job()
            to_stdout(f"Waiting for job {jid}{self._if_name(name, ' for %s')} ...")
            try:
                job_result: Any = poll_job(self.client, jid)
                success = True
            except GanetiError as err:
                job_result = _fmt_error(err)
                success = False
                if err.is_a("JobLost"):
                    to_stderr(f"Job {jid}{self._if_name(name, ' for %s')} has been archived, cannot check "
                              "its result")
                else:
                    to_stderr(f"Job {jid}{self._if_name(name, ' for %s')} has failed: {job_result}")
            results.append((idx, success, job_result))
        results.sort(key=lambda row: row[0])
        return [(row[1], row[2]) for row in results]

    def wait_or_show(self, wait: bool) -> list[tuple[bool, Any]]:
        if wait:
            return self.get_results()
        if not self.jobs:
            self.submit_pending()
        for _, status, result, name in self.jobs:
            if status:
                to_stdout(f"{result}: {name}")
            else:
                to_stderr(f"Failure for {name}: {result}")
        return [(row[1], row[2]) for row in self.jobs]


# -- selecting instances (_ExpandMultiNames) ------------------------------------------------------

_NODE_TAG_MODES = ("nodes-by-tags", "nodes-pri-by-tags", "nodes-sec-by-tags")


def expand_names(client: LuxiClient, mode: str, names: list[str]) -> list[str]:
    if mode == "cluster":
        if names:
            raise GanetiError("OpPrereqError", "Cluster filter mode takes no arguments", ECODE_INVAL)
        return [row[0] for row in query_instances(client, [], ["name"])]
    if mode in _NODE_TAG_MODES or mode in ("nodes", "nodes-pri", "nodes-sec"):
        if mode in _NODE_TAG_MODES:
            if not names:
                raise GanetiError("OpPrereqError", "No node tags passed", ECODE_INVAL)
            ndata = query_nodes(client, [], ["name", "pinst_list", "sinst_list", "tags"])
            ndata = [row for row in ndata if set(row[3]) & set(names)]
        else:
            if not names:
                raise GanetiError("OpPrereqError", "No node names passed", ECODE_INVAL)
            ndata = query_nodes(client, names, ["name", "pinst_list", "sinst_list"])
        primaries = [name for row in ndata for name in row[1]]
        secondaries = [name for row in ndata for name in row[2]]
        if mode in ("nodes", "nodes-by-tags"):
            return primaries + secondaries
        if mode in ("nodes-pri", "nodes-pri-by-tags"):
            return primaries
        return secondaries
    if mode == "instances":
        if not names:
            raise GanetiError("OpPrereqError", "No instance names passed", ECODE_INVAL)
        return [row[0] for row in query_instances(client, names, ["name"])]
    if mode == "instances-by-tags":
        if not names:
            raise GanetiError("OpPrereqError", "No instance tags passed", ECODE_INVAL)
        rows = query_instances(client, [], ["name", "tags"])
        return [row[0] for row in rows if set(row[1]) & set(names)]
    raise GanetiError("OpPrereqError", f"Unknown mode '{mode}'", ECODE_INVAL)


def ensure_instances_exist(client: LuxiClient, names: list[str]) -> None:
    result = query_instances(client, names, ["name"])
    for orig_name, row in zip(names, result, strict=False):
        if row[0] is None:
            raise GanetiError("OpPrereqError", f"Instance '{orig_name}' does not exist", ECODE_NOENT)


def generic_many_ops(operation: str, build: Callable[[str, Any], dict[str, Any]]) -> Callable[..., int]:
    """cli's GenericManyOps: expand the selection, confirm if several, one job per instance."""

    def run(ctx: Context, opts: Any, args: list[str]) -> int:
        if opts.multi_mode is None:
            opts.multi_mode = "instances"
        client = ctx.client()
        names = expand_names(client, opts.multi_mode, args)
        if not names:
            if opts.multi_mode == "cluster":
                to_stdout("Cluster is empty, no instances to shutdown")
                return EXIT_SUCCESS
            raise GanetiError("OpPrereqError", "Selection filter does not match any instances", ECODE_INVAL)
        multi_on = opts.multi_mode != "instances" or len(names) > 1
        if not (opts.force_multi or not multi_on or confirm_operation(names, "instances", operation)):
            return EXIT_FAILURE
        jex = JobExecutor(client, opts, ctx.argv, verbose=multi_on)
        for name in names:
            jex.queue_job(name, build(name, opts))
        results = jex.wait_or_show(not opts.submit_only)
        return EXIT_SUCCESS if all(row[0] for row in results) else EXIT_FAILURE

    return run


# -- list / list-fields ----------------------------------------------------------------------------


def _comma_list(value: Any) -> str:
    return ",".join(str(item) for item in value)


LIST_FORMAT: dict[str, tuple[Any, bool]] = dict.fromkeys(
    ["tags", "disk.sizes", "nic.macs", "nic.ips", "nic.modes", "nic.links", "nic.bridges", "nic.networks",
     "snodes", "snodes.group", "snodes.group.uuid"], (_comma_list, False))


@query_errors
def list_instances(ctx: Context, opts: Any, args: list[str]) -> int:
    fields = parse_fields(opts.output, LIST_DEF_FIELDS)
    return generic_list(ctx.client(), "instance", fields, args, opts.separator, not opts.no_headers,
                        LIST_FORMAT, opts.verbose, opts.force_filter, "name", None, False, unit=opts.units)


def list_fields(ctx: Context, opts: Any, args: list[str]) -> int:
    response = ctx.client().query_fields("instance", args or None)
    lines, unknown = field_listing(response, not opts.no_headers, opts.separator)
    if unknown:
        to_stderr(f"Warning: Queried for unknown fields {', '.join(unknown)}")
    for line in lines:
        to_stdout(line)
    return EXIT_UNKNOWN_FIELD if unknown else EXIT_SUCCESS


# -- add ------------------------------------------------------------------------------------------


def split_node_option(value: str | None) -> tuple[str | None, str | None]:
    if value and ":" in value:
        pnode, snode = value.split(":", 1)
        return pnode, snode
    return value, None


def _index(text: Any) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(_int_error(text)) from None


def parse_nic_option(values: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """cli.ParseNicOption: the NIC list of --net options (missing indices get default NICs)."""
    try:
        nic_max = max(_index(ident) + 1 for ident, _ in values)
    except ValueError as err:
        raise GanetiError("OpPrereqError", f"Invalid NIC index passed: {err}", ECODE_INVAL) from None
    nics: list[dict[str, Any]] = [{}] * nic_max
    for ident, params in values:
        idx = int(ident)
        if not isinstance(params, dict):
            raise GanetiError("OpPrereqError", f"Invalid nic/{idx} value: expected dict, got {params}",
                              ECODE_INVAL)
        force_dict_type(params, NIC_TYPES)
        nics[idx] = params
    return nics


def _parse_create_disks(opts: Any) -> list[dict[str, Any]]:
    if opts.disk_template == "diskless":
        if opts.disks or opts.sd_size is not None:
            raise GanetiError("OpPrereqError", "Diskless instance but disk information passed", ECODE_INVAL)
        return []
    if not opts.disks and not opts.sd_size:
        raise GanetiError("OpPrereqError", "No disk information specified", ECODE_INVAL)
    if opts.disks and opts.sd_size is not None:
        raise GanetiError("OpPrereqError", "Please use either the '--disk' or '-s' option", ECODE_INVAL)
    if opts.sd_size is not None:
        opts.disks = [(0, {"size": opts.sd_size})]
    try:
        disk_max = max(_index(ident) + 1 for ident, _ in opts.disks)
    except ValueError as err:
        raise GanetiError("OpPrereqError", f"Invalid disk index passed: {err}", ECODE_INVAL) from None
    disks: list[dict[str, Any]] = [{}] * disk_max
    for ident, params in opts.disks:
        idx = int(ident)
        if not isinstance(params, dict):
            raise GanetiError("OpPrereqError", f"Invalid disk/{idx} value: expected dict, got {params}",
                              ECODE_INVAL)
        if "size" in params:
            if "adopt" in params:
                raise GanetiError("OpPrereqError", f"Only one of 'size' and 'adopt' allowed (disk {idx})",
                                  ECODE_INVAL)
            params["size"] = parse_unit(params["size"])
        elif "adopt" in params:
            if "spindles" in params:
                raise GanetiError("OpPrereqError", "spindles is not a valid option when adopting a disk",
                                  ECODE_INVAL)
            params["size"] = 0
        else:
            raise GanetiError("OpPrereqError", f"Missing size or adoption source for disk {idx}", ECODE_INVAL)
        if "spindles" in params:
            params["spindles"] = _spindles(params["spindles"])
        disks[idx] = params
    return disks


def _spindles(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise GanetiError("OpPrereqError", f"Invalid spindles value: {_int_error(value)}",
                          ECODE_INVAL) from None


def fix_hv_params(hvparams: dict[str, Any]) -> None:
    """cli.FixHvParams: spaces in usb_devices stand for commas."""
    if isinstance(hvparams.get("usb_devices"), str):
        hvparams["usb_devices"] = hvparams["usb_devices"].replace(" ", ",")


def add_instance(ctx: Context, opts: Any, args: list[str]) -> int:
    """cli.GenericInstanceCreate in create mode: OP_INSTANCE_CREATE."""
    name = args[0]
    if opts.forthcoming and opts.commit:
        raise GanetiError("OpPrereqError", "Creating an instance only forthcoming and commiting it are "
                          "mutally exclusive", ECODE_INVAL)
    pnode, snode = split_node_option(opts.node)
    hypervisor, hvparams = None, {}
    if opts.hypervisor:
        hypervisor, hvparams = opts.hypervisor
    if opts.nics:
        nics = parse_nic_option(opts.nics)
    elif opts.no_nics:
        nics = []
    else:
        nics = [{}]
    disks = _parse_create_disks(opts)
    tags = opts.tags.split(",") if opts.tags is not None else []
    force_dict_type(opts.beparams, BE_TYPES)
    force_dict_type(hvparams, HV_TYPES)
    fix_hv_params(hvparams)
    op = make_opcode(
        "OP_INSTANCE_CREATE", forthcoming=opts.forthcoming, commit=opts.commit, instance_name=name,
        disks=disks, disk_template=opts.disk_template, group_name=opts.nodegroup, nics=nics,
        conflicts_check=opts.conflicts_check, pnode=pnode, snode=snode, ip_check=opts.ip_check,
        name_check=opts.name_check, wait_for_sync=opts.wait_for_sync, file_storage_dir=opts.file_storage_dir,
        file_driver=opts.file_driver, iallocator=opts.iallocator, hypervisor=hypervisor, hvparams=hvparams,
        beparams=opts.beparams, osparams=opts.osparams, osparams_private=opts.osparams_private or {},
        osparams_secret=opts.osparams_secret or {}, mode="create",
        opportunistic_locking=opts.opportunistic_locking, start=opts.start, os_type=opts.os,
        force_variant=opts.force_variant, src_node=None, src_path=None, compress="none", tags=tags,
        no_install=opts.no_install, identify_defaults=False, ignore_ipolicy=opts.ignore_ipolicy,
        instance_communication=bool(opts.instance_communication),
        helper_startup_timeout=opts.helper_startup_timeout,
        helper_shutdown_timeout=opts.helper_shutdown_timeout)
    submit_or_send(ctx.client(), op, opts, ctx.argv)
    return EXIT_SUCCESS


# -- info -----------------------------------------------------------------------------------------

LDS_UNKNOWN, LDS_FAULTY = 3, 4


def _roman(value: Any, roman: bool) -> Any:
    return to_roman(value) if roman else value


def _format_unit_roman(value: Any, roman: bool) -> str:
    if roman and isinstance(value, int) and value < 1024:
        return f"{to_roman(value)}M"
    return format_unit(value, "h")


def _disk_details(dev_type: str, dev: dict[str, Any], roman: bool) -> list[Any]:
    if dev_type == "drbd":
        drbd = dev["drbd_info"]
        return [("nodeA", f"{drbd['primary_node']}, minor={_roman(drbd['primary_minor'], roman)}"),
                ("nodeB", f"{drbd['secondary_node']}, minor={_roman(drbd['secondary_minor'], roman)}"),
                ("port", str(_roman(drbd["port"], roman)))]
    if dev_type == "plain":
        vg_name, lv_name = dev["logical_id"]
        return [f"{vg_name}/{lv_name}"]
    return [str(dev["logical_id"])]


def _dev_status(dtype: str, status: Any, roman: bool) -> str:
    if not status:
        return "not active"
    path, major, minor, syncp, estt, degr, ldisk_status = status
    major_text = "N/A" if major is None else str(_roman(major, roman))
    minor_text = "N/A" if minor is None else str(_roman(minor, roman))
    text = f"{path} ({major_text}:{minor_text})"
    if dtype == "drbd":
        if syncp is not None:
            sync_text = "*RECOVERING* %5.2f%%," % syncp  # noqa: UP031 - Ganeti's format
            sync_text += f" ETA {_roman(estt, roman)}s" if estt else " ETA unknown"
        else:
            sync_text = "in sync"
        degr_text = "*DEGRADED*" if degr else "ok"
        if ldisk_status == LDS_FAULTY:
            ldisk_text = " *MISSING DISK*"
        elif ldisk_status == LDS_UNKNOWN:
            ldisk_text = " *UNCERTAIN STATE*"
        else:
            ldisk_text = ""
        text += f" {sync_text}, status {degr_text}{ldisk_text}"
    elif dtype == "plain" and ldisk_status == LDS_FAULTY:
        text += " *FAILED* (failed drive?)"
    return text


def _block_dev_info(idx: int, top_level: bool, dev: dict[str, Any], roman: bool) -> list[Any]:
    if top_level:
        title = dev["iv_name"] if dev["iv_name"] is not None else f"disk {_roman(idx, roman)}"
    else:
        title = f"child {_roman(idx, roman)}"
    size = dev["size"]
    nice_size = _format_unit_roman(size, roman) if isinstance(size, int) else str(size)
    data: list[Any] = [(title, f"{dev['dev_type']}, size {nice_size}")]
    if top_level:
        if dev["spindles"] is not None:
            data.append(("spindles", dev["spindles"]))
        data.append(("access mode", dev["mode"]))
    if dev["logical_id"] is not None:
        try:
            l_id = _disk_details(dev["dev_type"], dev, roman)
        except ValueError:
            l_id = [str(dev["logical_id"])]
        if len(l_id) == 1:
            data.append(("logical_id", l_id[0]))
        else:
            data.extend(l_id)
    if dev["pstatus"]:
        data.append(("on primary", _dev_status(dev["dev_type"], dev["pstatus"], roman)))
    if dev["sstatus"]:
        data.append(("on secondary", _dev_status(dev["dev_type"], dev["sstatus"], roman)))
    data.append(("name", dev["name"]))
    data.append(("UUID", dev["uuid"]))
    if dev["children"]:
        data.append(("child devices", [_block_dev_info(c_idx, False, child, roman)
                                       for c_idx, child in enumerate(dev["children"])]))
    return data


def _nic_info(idx: int, nic: Sequence[Any], roman: bool) -> list[Any]:
    name, uuid, ip, mac, mode, link, vlan, _, netinfo = nic
    network_name = netinfo["name"] if netinfo else None
    return [(f"nic/{_roman(idx, roman)}", ""), ("MAC", str(mac)), ("IP", str(ip)), ("mode", str(mode)),
            ("link", str(link)), ("vlan", str(_roman(vlan, roman))), ("network", str(network_name)),
            ("UUID", str(uuid)), ("name", str(name))]


def _nodes_info(inst: dict[str, Any]) -> list[Any]:
    pgroup = f"{inst['pnode_group_name']} (UUID {inst['pnode_group_uuid']})"
    secs = ", ".join(f"{name} (group {group_name}, group UUID {group_uuid})"
                     for name, group_name, group_uuid in zip(inst["snodes"], inst["snodes_group_names"],
                                                             inst["snodes_group_uuids"], strict=False))
    return [[("primary", inst["pnode"]), ("group", pgroup)], [("secondaries", secs)]]


_IPV4 = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


def _is_ipv4(text: str) -> bool:
    match = _IPV4.match(text)
    return bool(match) and all(int(part) <= 255 for part in match.groups())  # type: ignore[union-attr]


def _vnc_console_info(inst: dict[str, Any]) -> str | None:
    bind = inst["hv_actual"].get("vnc_bind_address")
    if not bind:
        return None
    port = inst["network_port"]
    display = int(port) - 5900
    if display > 0 and bind == "0.0.0.0":
        where = f"{inst['pnode']}:{port} (display {display})"
    elif display > 0 and _is_ipv4(bind):
        where = f"{bind}:{port} (node {inst['pnode']}) (display {display})"
    else:
        where = f"{inst['pnode']}:{bind}"
    return f"vnc to {where}"


def format_instance_info(inst: dict[str, Any], roman: bool) -> list[Any]:
    state = f"configured to be {inst['config_state']}"
    if inst["run_state"]:
        state += f", actual state is {inst['run_state']}"
    info: list[Any] = [
        ("Instance name", inst["name"]), ("UUID", inst["uuid"]),
        ("Serial number", str(_roman(inst["serial_no"], roman))),
        ("Creation time", format_time(inst["ctime"])), ("Modification time", format_time(inst["mtime"])),
        ("State", state), ("Nodes", _nodes_info(inst)), ("Operating system", inst["os"]),
        ("Operating system parameters",
         format_params_dict_info(inst["os_instance"], inst["os_actual"], roman)),
    ]
    if "network_port" in inst:
        info.append(("Allocated network port", str(_roman(inst["network_port"], roman))))
    info.append(("Hypervisor", inst["hypervisor"]))
    console = _vnc_console_info(inst)
    if console:
        info.append(("console connection", console))
    be_actual = copy.deepcopy(inst["be_actual"])
    be_actual["memory"] = be_actual["maxmem"]
    info.extend([
        ("Hypervisor parameters", format_params_dict_info(inst["hv_instance"], inst["hv_actual"], roman)),
        ("Back-end parameters", format_params_dict_info(inst["be_instance"], be_actual, roman)),
        ("NICs", [_nic_info(idx, nic, roman) for idx, nic in enumerate(inst["nics"])]),
        ("Disk template", inst["disk_template"]),
        ("Disks", [_block_dev_info(idx, True, dev, roman) for idx, dev in enumerate(inst["disks"])]),
    ])
    return info


def show_instance_config(ctx: Context, opts: Any, args: list[str]) -> int:
    if not args and not opts.show_all:
        to_stderr("No instance selected. Please pass in --all if you want to query all instances.\n"
                  "Note that this can take a long time on a big cluster.")
        return EXIT_FAILURE
    if args and opts.show_all:
        to_stderr("Cannot use --all if you specify instance names.")
        return EXIT_FAILURE
    op = make_opcode("OP_INSTANCE_QUERY_DATA", instances=args, static=opts.static,
                     use_locking=not opts.static)
    result = submit_opcode(ctx.client(), op, opts, ctx.argv)
    if not result:
        to_stdout("No instances.")
        return EXIT_FAILURE
    try:
        data = [format_instance_info(inst, opts.roman_integers) for inst in result.values()]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise GanetiError("ProtocolError", f"the master's OP_INSTANCE_QUERY_DATA answer has an unexpected "
                          f"shape: {err!r}") from None
    print_generic_info(data)
    return EXIT_SUCCESS


# -- startup / shutdown / reboot / remove ---------------------------------------------------------


def _startup_op(name: str, opts: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if opts.hvparams:
        params["hvparams"] = opts.hvparams
    if opts.beparams:
        params["beparams"] = opts.beparams
    return make_opcode("OP_INSTANCE_STARTUP", instance_name=name, force=opts.force,
                       ignore_offline_nodes=opts.ignore_offline, no_remember=opts.no_remember,
                       startup_paused=opts.startup_paused, **params)


def _shutdown_op(name: str, opts: Any) -> dict[str, Any]:
    return make_opcode("OP_INSTANCE_SHUTDOWN", instance_name=name, force=opts.force, timeout=opts.timeout,
                       ignore_offline_nodes=opts.ignore_offline, no_remember=opts.no_remember)


def _reboot_op(name: str, opts: Any) -> dict[str, Any]:
    return make_opcode("OP_INSTANCE_REBOOT", instance_name=name, reboot_type=opts.reboot_type,
                       ignore_secondaries=opts.ignore_secondaries, shutdown_timeout=opts.shutdown_timeout)


def remove_instance(ctx: Context, opts: Any, args: list[str]) -> int:
    name = args[0]
    client = ctx.client()
    if not opts.force:
        ensure_instances_exist(client, [name])
        if not ask_user(f"This will remove the volumes of the instance {name} (including mirrors), thus "
                        "removing all the data of the instance. Continue?"):
            return EXIT_FAILURE
    op = make_opcode("OP_INSTANCE_REMOVE", instance_name=name, ignore_failures=opts.ignore_failures,
                     shutdown_timeout=opts.shutdown_timeout)
    submit_or_send(client, op, opts, ctx.argv)
    return EXIT_SUCCESS


# -- disks ----------------------------------------------------------------------------------------


def activate_disks(ctx: Context, opts: Any, args: list[str]) -> int:
    op = make_opcode("OP_INSTANCE_ACTIVATE_DISKS", instance_name=args[0], ignore_size=opts.ignore_size,
                     wait_for_sync=opts.wait_for_sync)
    disks_info = submit_or_send(ctx.client(), op, opts, ctx.argv)
    for host, iname, nname in disks_info:
        to_stdout(f"{host}:{iname}:{nname}")
    return EXIT_SUCCESS


def deactivate_disks(ctx: Context, opts: Any, args: list[str]) -> int:
    op = make_opcode("OP_INSTANCE_DEACTIVATE_DISKS", instance_name=args[0], force=opts.force)
    submit_or_send(ctx.client(), op, opts, ctx.argv)
    return EXIT_SUCCESS


def grow_disk(ctx: Context, opts: Any, args: list[str]) -> int:
    try:
        disk = int(args[1])
    except ValueError:
        raise GanetiError("OpPrereqError", f"Invalid disk index: {_int_error(args[1])}",
                          ECODE_INVAL) from None
    try:
        amount = parse_unit(args[2])
    except GanetiError:
        raise GanetiError("OpPrereqError", f"Can't parse the given amount '{args[2]}'", ECODE_INVAL) from None
    op = make_opcode("OP_INSTANCE_GROW_DISK", instance_name=args[0], disk=disk, amount=amount,
                     wait_for_sync=opts.wait_for_sync, absolute=opts.absolute,
                     ignore_ipolicy=opts.ignore_ipolicy)
    submit_or_send(ctx.client(), op, opts, ctx.argv)
    return EXIT_SUCCESS


# -- migrate / failover ---------------------------------------------------------------------------


def check_one_target(opts: Any) -> None:
    if opts.iallocator and opts.dst_node:
        raise GanetiError("OpPrereqError", "Specify either an iallocator (-I), or a target node (-n) but not "
                          "both", ECODE_INVAL)


def failover_instance(ctx: Context, opts: Any, args: list[str]) -> int:
    client = ctx.client()
    name = args[0]
    check_one_target(opts)
    if not opts.force:
        ensure_instances_exist(client, [name])
        if not ask_user(f"Failover will happen to image {name}. This requires a shutdown of the instance. "
                        "Continue?"):
            return EXIT_FAILURE
    if opts.ignore_consistency and not ask_user(
            f"To failover instance {name}, the source node must be marked offline first. Is this already "
            "the case?"):
        return EXIT_FAILURE
    op = make_opcode("OP_INSTANCE_FAILOVER", instance_name=name, ignore_consistency=opts.ignore_consistency,
                     shutdown_timeout=opts.shutdown_timeout, iallocator=opts.iallocator,
                     target_node=opts.dst_node, ignore_ipolicy=opts.ignore_ipolicy)
    submit_or_send(client, op, opts, ctx.argv)
    return EXIT_SUCCESS


def migration_mode(opts: Any) -> str | None:
    if not opts.live and opts.migration_mode is not None:
        raise GanetiError("OpPrereqError", "Only one of the --non-live and --migration-mode options can be "
                          "passed", ECODE_INVAL)
    return "non-live" if not opts.live else opts.migration_mode  # type: ignore[no-any-return]


def migrate_instance(ctx: Context, opts: Any, args: list[str]) -> int:
    client = ctx.client()
    name = args[0]
    check_one_target(opts)
    if not opts.force:
        ensure_instances_exist(client, [name])
        if opts.cleanup:
            text = (f"Instance {name} will be recovered from a failed migration. Note that the migration "
                    "procedure (including cleanup)")
        else:
            text = f"Instance {name} will be migrated. Note that migration"
        text += (" might impact the instance if anything goes wrong (e.g. due to bugs in the hypervisor). "
                 "Continue?")
        if not ask_user(text):
            return EXIT_FAILURE
    op = make_opcode("OP_INSTANCE_MIGRATE", instance_name=name, mode=migration_mode(opts),
                     cleanup=opts.cleanup, iallocator=opts.iallocator, target_node=opts.dst_node,
                     allow_failover=opts.allow_failover,
                     allow_runtime_changes=opts.allow_runtime_chgs, ignore_ipolicy=opts.ignore_ipolicy,
                     ignore_hvversions=opts.ignore_hvversions)
    submit_or_send(client, op, opts, ctx.argv)
    return EXIT_SUCCESS


# -- modify ---------------------------------------------------------------------------------------

_DDM_ACTIONS = ("add", "attach", "remove", "detach", "modify")


def convert_nic_disk_modifications(mods: list[tuple[str, Any]]) -> list[list[Any]]:
    """_ConvertNicDiskModifications: legacy add/remove and N:action forms to [action, id, params]."""
    result: list[list[Any]] = []
    for identifier, params in mods:
        ident: Any = identifier
        if identifier in ("add", "attach", "remove", "detach"):
            action, ident = identifier, -1
        else:
            action = "modify"
            found = [name for name in _DDM_ACTIONS if isinstance(params, dict) and name in params]
            if isinstance(params, dict):
                for name in found:
                    params.pop(name)
            if len(found) > 1:
                raise GanetiError("OpPrereqError", "Cannot do more than one of the following operations at "
                                  "the same time: " + ", ".join(_DDM_ACTIONS), ECODE_INVAL)
            if found:
                action = found[0]
        if action in ("remove", "detach") and params:
            raise GanetiError("OpPrereqError", "Not accepting parameters on removal/detach", ECODE_INVAL)
        result.append([action, ident, params])
    return result


def _parse_disk_sizes(mods: list[list[Any]]) -> list[list[Any]]:
    for action, _, params in mods:
        if params and "spindles" in params:
            params["spindles"] = int(params["spindles"])
        if params and "size" in params:
            params["size"] = parse_unit(params["size"])
        elif action == "add":
            raise GanetiError("OpPrereqError", "Missing required parameter 'size'", ECODE_INVAL)
    return mods


_IDISK_PARAMS = ("size", "spindles", "mode", "adopt", "vg", "metavg", "provider", "name", "access")


def _ext_params(params: dict[str, Any]) -> dict[str, Any]:
    if params:
        if "provider" not in params:
            raise GanetiError("OpPrereqError", "Missing required parameter 'provider' when converting to an "
                              "ExtStorage disk template", ECODE_INVAL)
        for param in params:
            if param != "provider" and param in _IDISK_PARAMS:
                raise GanetiError("OpPrereqError", f"Invalid parameter '{param}' when converting to an "
                                  "ExtStorage template (it is not allowed modifying existing disk "
                                  "parameters)",
                                  ECODE_INVAL)
    return params


def _defaults(params: dict[str, Any]) -> None:
    for key, value in params.items():
        if isinstance(value, str) and value.lower() == VALUE_DEFAULT:
            params[key] = VALUE_DEFAULT


def set_instance_params(ctx: Context, opts: Any, args: list[str]) -> int:
    if not (opts.nics or opts.disks or opts.disk_template or opts.hvparams or opts.beparams or opts.os
            or opts.osparams or opts.osparams_private or opts.offline_inst or opts.online_inst
            or opts.runtime_mem or opts.new_primary_node or opts.instance_communication is not None):
        to_stderr("Please give at least one of the parameters.")
        return EXIT_FAILURE
    _defaults(opts.beparams)
    force_dict_type(opts.beparams, BE_TYPES, allowed_values=[VALUE_DEFAULT])
    _defaults(opts.hvparams)
    force_dict_type(opts.hvparams, HV_TYPES, allowed_values=[VALUE_DEFAULT])
    fix_hv_params(opts.hvparams)
    nics = convert_nic_disk_modifications(opts.nics)
    for action, _, _ in nics:
        if action == "modify" and opts.hotplug and not opts.force and not ask_user(
                "You are about to hot-modify a NIC. This will be done by removing the existing NIC and then "
                "adding a new one. Network connection might be lost. Continue?"):
            return EXIT_FAILURE
    disks = _parse_disk_sizes(convert_nic_disk_modifications(opts.disks))
    if opts.disk_template:
        if opts.ext_params and opts.disk_template != "ext":
            to_stderr("Specifying ExtStorage parameters requires converting to the 'ext' disk template")
            return EXIT_FAILURE
        if not opts.ext_params and opts.disk_template == "ext":
            to_stderr("Provider option is missing, use either the '--ext-params' or '-e' option")
            return EXIT_FAILURE
    if (opts.file_driver or opts.file_storage_dir) and opts.disk_template not in FILE_TEMPLATES:
        to_stderr("Specifying file-based configuration arguments requires converting to a file-based disk "
                  "template")
        return EXIT_FAILURE
    ext_params = _ext_params(opts.ext_params)
    offline = True if opts.offline_inst else (False if opts.online_inst else None)
    op = make_opcode(
        "OP_INSTANCE_SET_PARAMS", instance_name=args[0], nics=nics, disks=disks, hotplug=opts.hotplug,
        hotplug_if_possible=opts.hotplug_if_possible, disk_template=opts.disk_template, ext_params=ext_params,
        file_driver=opts.file_driver, file_storage_dir=opts.file_storage_dir, remote_node=opts.node,
        iallocator=opts.iallocator, pnode=opts.new_primary_node, hvparams=opts.hvparams,
        beparams=opts.beparams, runtime_mem=opts.runtime_mem, os_name=opts.os, osparams=opts.osparams,
        osparams_private=opts.osparams_private, force_variant=opts.force_variant, force=opts.force,
        wait_for_sync=opts.wait_for_sync, offline=offline, conflicts_check=opts.conflicts_check,
        ignore_ipolicy=opts.ignore_ipolicy, instance_communication=opts.instance_communication)
    result = submit_or_send(ctx.client(), op, opts, ctx.argv)
    if result:
        to_stdout(f"Modified instance {args[0]}")
        for param, data in result:
            to_stdout(" - %-5s -> %s" % (param, data))  # noqa: UP031 - Ganeti's format
        to_stdout("Please don't forget that most parameters take effect only at the next (re)start of the "
                  "instance initiated by ganeti; restarting from within the instance will not be enough.")
        if opts.hvparams:
            to_stdout("Note that changing hypervisor parameters without performing a restart might lead to a "
                      "crash while performing a live migration. This will be addressed in future Ganeti "
                      "versions.")
    return EXIT_SUCCESS


# -- rename / reinstall ---------------------------------------------------------------------------


def rename_instance(ctx: Context, opts: Any, args: list[str]) -> int:
    if not opts.force and not opts.name_check and not ask_user(
            f"As you disabled the check of the DNS entry, please verify that '{args[1]}' is a FQDN. "
            "Continue?"):
        return EXIT_FAILURE
    op = make_opcode("OP_INSTANCE_RENAME", instance_name=args[0], new_name=args[1], ip_check=opts.ip_check,
                     name_check=opts.name_check)
    result = submit_or_send(ctx.client(), op, opts, ctx.argv)
    if result:
        to_stdout(f"Instance '{args[0]}' renamed to '{result}'")
    return EXIT_SUCCESS


def reinstall_instance(ctx: Context, opts: Any, args: list[str]) -> int:
    if opts.multi_mode is None:
        opts.multi_mode = "instances"
    client = ctx.client()
    names = expand_names(client, opts.multi_mode, args)
    if not names:
        raise GanetiError("OpPrereqError", "Selection filter does not match any instances", ECODE_INVAL)
    if opts.select_os is True:
        op = make_opcode("OP_OS_DIAGNOSE", output_fields=["name", "variants"], names=[])
        result = submit_opcode(client, op, opts, ctx.argv)
        if not result:
            to_stdout("Can't get the OS list")
            return EXIT_FAILURE
        to_stdout("Available OS templates:")
        choices: list[tuple[str, Any, str]] = []
        number = 0
        for os_name_, variants in result:
            for entry in ([f"{os_name_}+{v}" for v in variants] if variants else [os_name_]):
                to_stdout("%3s: %s" % (number, entry))  # noqa: UP031 - Ganeti's format
                choices.append((str(number), entry, entry))
                number += 1
        choices.append(("x", "exit", "Exit gnt-instance reinstall"))
        selected = ask_user("Enter OS template number (or x to abort):", choices)
        if selected == "exit":
            to_stderr("User aborted reinstall, exiting")
            return EXIT_FAILURE
        os_name: str | None = selected
        os_msg = f"change the OS to '{selected}'"
    else:
        os_name = opts.os
        os_msg = f"change the OS to '{os_name}'" if opts.os is not None else "keep the same OS"
    multi_on = opts.multi_mode != "instances" or len(names) > 1
    if multi_on:
        warn = f"Note: this will remove *all* data for the below instances! It will {os_msg}.\n"
        if not (opts.force_multi or confirm_operation(names, "instances", "reinstall", extra=warn)):
            return EXIT_FAILURE
    elif not (opts.force or opts.force_multi) and not ask_user(
            f"This will reinstall the instance '{names[0]}' (and {os_msg}) which removes all data. "
            "Continue?"):
        return EXIT_FAILURE
    jex = JobExecutor(client, opts, ctx.argv, verbose=multi_on)
    for name in names:
        jex.queue_job(name, make_opcode("OP_INSTANCE_REINSTALL", instance_name=name, os_type=os_name,
                                        force_variant=opts.force_variant, osparams=opts.osparams,
                                        osparams_private=opts.osparams_private,
                                        osparams_secret=opts.osparams_secret))
    results = jex.wait_or_show(not opts.submit_only)
    return EXIT_SUCCESS if all(row[0] for row in results) else EXIT_FAILURE


# -- recreate-disks / replace-disks / move / change-group / batch-create --------------------------


def recreate_disks(ctx: Context, opts: Any, args: list[str]) -> int:
    disks: list[list[Any]] = []
    for ident, params in opts.disks:
        idx = _index_or_crash(ident)
        if not isinstance(params, dict):
            raise GanetiError("OpPrereqError", f"Invalid disk/{idx} value: expected dict, got {params}",
                              ECODE_INVAL)
        if "size" in params:
            params["size"] = parse_unit(params["size"])
        if "spindles" in params:
            try:
                params["spindles"] = int(params["spindles"])
            except (TypeError, ValueError):
                raise GanetiError("OpPrereqError", f"Invalid spindles for disk {idx}: "
                                  f"{_int_error(params['spindles'])}", ECODE_INVAL) from None
        disks.append([idx, params])
    nodes: list[str] = []
    if opts.node:
        if opts.iallocator:
            raise GanetiError("OpPrereqError", "At most one of either --nodes or --iallocator can be passed",
                              ECODE_INVAL)
        pnode, snode = split_node_option(opts.node)
        nodes = [str(pnode)] + ([snode] if snode is not None else [])
    op = make_opcode("OP_INSTANCE_RECREATE_DISKS", instance_name=args[0], disks=disks, nodes=nodes,
                     iallocator=opts.iallocator)
    submit_or_send(ctx.client(), op, opts, ctx.argv)
    return EXIT_SUCCESS


def _index_or_crash(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise GanetiError("OpPrereqError", f"Invalid disk index passed: {_int_error(text)}",
                          ECODE_INVAL) from None


def replace_disks(ctx: Context, opts: Any, args: list[str]) -> int:
    disks: list[int] = []
    if opts.disks is not None:
        try:
            disks = [int(item) for item in opts.disks.split(",")]
        except ValueError as err:
            raise GanetiError("OpPrereqError", f"Invalid disk index passed: {err}", ECODE_INVAL) from None
    count = [opts.on_primary, opts.on_secondary, opts.auto, opts.dst_node is not None,
             opts.iallocator is not None].count(True)
    if count != 1:
        raise GanetiError("OpPrereqError", "One and only one of the -p, -s, -a, -n and -I options must be "
                          "passed", ECODE_INVAL)
    if opts.on_primary:
        mode = "replace_on_primary"
    elif opts.on_secondary:
        mode = "replace_on_secondary"
    elif opts.auto:
        mode = "replace_auto"
        if disks:
            raise GanetiError("OpPrereqError", "Cannot specify disks when using automatic mode", ECODE_INVAL)
    else:
        mode = "replace_new_secondary"
    op = make_opcode("OP_INSTANCE_REPLACE_DISKS", instance_name=args[0], disks=disks,
                     remote_node=opts.dst_node, mode=mode, iallocator=opts.iallocator,
                     early_release=opts.early_release, ignore_ipolicy=opts.ignore_ipolicy)
    submit_or_send(ctx.client(), op, opts, ctx.argv)
    return EXIT_SUCCESS


def move_instance(ctx: Context, opts: Any, args: list[str]) -> int:
    client = ctx.client()
    name = args[0]
    if not opts.force and not ask_user(f"Instance {name} will be moved. This requires a shutdown of the "
                                       "instance. Continue?"):
        return EXIT_FAILURE
    op = make_opcode("OP_INSTANCE_MOVE", instance_name=name, target_node=opts.node, compress=opts.compress,
                     shutdown_timeout=opts.shutdown_timeout, ignore_consistency=opts.ignore_consistency,
                     ignore_ipolicy=opts.ignore_ipolicy)
    submit_or_send(client, op, opts, ctx.argv)
    return EXIT_SUCCESS


def _follow_job_ids(client: LuxiClient, opts: Any, argv: Sequence[str], result: Any) -> int:
    """The number of failed jobs among the [status, job id] pairs of a result's "jobs"."""
    jex = JobExecutor(client, opts, argv)
    for status, job_id in result["jobs"]:
        jex.add_job_id(None, status, job_id)
    return len([row for row in jex.get_results() if not row[0]])


def change_group(ctx: Context, opts: Any, args: list[str]) -> int:
    client = ctx.client()
    name = args[0]
    op = make_opcode("OP_INSTANCE_CHANGE_GROUP", instance_name=name, iallocator=opts.iallocator,
                     target_groups=opts.to, early_release=opts.early_release)
    bad = _follow_job_ids(client, opts, ctx.argv, submit_or_send(client, op, opts, ctx.argv))
    if bad == 0:
        to_stdout(f"Instance '{name}' changed group successfully.")
        return EXIT_SUCCESS
    to_stdout(f"There were {bad} errors while changing group of instance '{name}'.")
    return EXIT_FAILURE


def batch_create(ctx: Context, opts: Any, args: list[str]) -> int:
    """OP_INSTANCE_MULTI_ALLOC of the OP_INSTANCE_CREATE definitions in a JSON file, then follow the jobs."""
    client = ctx.client()
    try:
        with open(args[0], encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise GanetiError("OpPrereqError", f"Can't read the instance definition file: {err}",
                          ECODE_INVAL) from None
    try:
        data = json.loads(text)
    except ValueError as err:
        to_stderr(f"Can't parse the instance definition file: {err}")
        return EXIT_FAILURE
    if not (isinstance(data, list) and all(isinstance(item, dict) for item in data)):
        to_stderr("The instance definition file is not List of Dictionary")
        return EXIT_FAILURE
    params = default_definitions().params_of("OP_INSTANCE_CREATE")
    known = {param.name for param in params}
    instances = []
    for idx, inst in enumerate(data):
        unknown = sorted(set(inst) - known)
        if unknown:
            raise GanetiError("OpPrereqError", f"Unknown fields in definition {idx}: {', '.join(unknown)}",
                              ECODE_INVAL)
        for param in params:  # OpCode.Validate(False): every value (given or default) must fit its type
            if check_type(param.type, inst.get(param.name, param.default)) is not None:
                raise GanetiError("OpPrereqError", f"Parameter 'OP_INSTANCE_CREATE.{param.name}' fails "
                                  "validation", ECODE_INVAL)
        instances.append(make_opcode("OP_INSTANCE_CREATE", **inst))
    op = make_opcode("OP_INSTANCE_MULTI_ALLOC", iallocator=opts.iallocator, instances=instances)
    bad = _follow_job_ids(client, opts, ctx.argv, submit_or_send(client, op, opts, ctx.argv))
    if bad == 0:
        to_stdout("All instances created successfully.")
        return EXIT_SUCCESS
    to_stdout(f"There were {bad} errors during the creation.")
    return EXIT_FAILURE


# -- console --------------------------------------------------------------------------------------

_SHELL_UNQUOTED = re.compile(r"^[-.,=:/_+@A-Za-z0-9]+$")


def shell_quote(value: str) -> str:
    """utils.ShellQuote."""
    if _SHELL_UNQUOTED.match(value):
        return value
    return "'%s'" % value.replace("'", "'\\''")  # noqa: UP031


def shell_quote_args(args: Sequence[str]) -> str:
    return " ".join(shell_quote(arg) for arg in args)


def _node_environment(paths: Paths, host: str) -> dict[str, str]:
    """vcluster.EnvironmentForHost: a virtual cluster's node root and name for `host`."""
    if not os.environ.get("GANETI_ROOTDIR"):
        return {}
    base = os.path.dirname(paths.root)
    return {"GANETI_ROOTDIR": os.path.normpath(f"{base}/{host}"), "GANETI_HOSTNAME": host}


def ssh_console_command(paths: Paths, console: dict[str, Any], cluster_name: str) -> list[str]:
    """The ssh command line Ganeti's SshRunner.BuildCmd makes for a console (batch, tty, not quiet)."""
    command = console["command"]
    if not isinstance(command, str):
        command = shell_quote_args(command)
    argv = ["ssh", "-oEscapeChar=none", "-oHashKnownHosts=no",
            f"-oGlobalKnownHostsFile={os.path.join(paths.data_dir, 'known_hosts')}",
            "-oUserKnownHostsFile=/dev/null", "-oCheckHostIp=no", "-oConnectTimeout=10",
            f"-oHostKeyAlias={cluster_name}"]
    if console.get("port"):
        argv.append(f"-oPort={int(console['port'])}")
    argv += ["-oBatchMode=yes", "-oStrictHostKeyChecking=yes", "-4", "-t", "-t",
             f"{console.get('user')}@{console.get('host')}"]
    argv += [f"export {shell_quote(name)}={shell_quote(value)};"
             for name, value in _node_environment(paths, str(console.get("host"))).items()]
    argv.append(command)
    return argv


def _run_console(paths: Paths, console: dict[str, Any], ssh_cmd: list[str]) -> int:
    env = _node_environment(paths, str(console.get("host")))
    if env and os.path.isdir(env["GANETI_ROOTDIR"]):
        # The node lives on this machine: run what the ssh would run there, with its environment.
        command = console["command"]
        argv = ["/bin/sh", "-c", command if isinstance(command, str) else shell_quote_args(command)]
        return subprocess.call(argv, env={**os.environ, **env})
    return subprocess.call(ssh_cmd)


def connect_to_console(ctx: Context, opts: Any, args: list[str]) -> int:
    name = args[0]
    client = ctx.client()
    try:
        cluster_name = client.query_config_values(["cluster_name"])[0]
        idata = query_instances(client, [name], ["console", "oper_state"])
        if not idata:
            raise GanetiError("OpPrereqError", f"Instance '{name}' does not exist", ECODE_NOENT)
        paths = client.paths
    finally:
        ctx.close()
    console, oper_state = idata[0]
    if not console:
        if oper_state:
            raise GanetiError("OpExecError", f"Console information for instance {name} is unavailable")
        raise GanetiError("OpExecError", f"Instance {name} is not running, can't get console")
    kind = console.get("kind")
    if kind == "msg":
        to_stdout(str(console.get("message")))
    elif kind == "vnc":
        host, port = console.get("host"), console.get("port")
        to_stdout(f"Instance {console.get('instance')} has VNC listening on {host}:{port} "
                  f"(display {console.get('display')}), URL <vnc://{host}:{port}/>")
    elif kind == "spice":
        to_stdout(f"Instance {console.get('instance')} has SPICE listening on {console.get('host')}:"
                  f"{console.get('port')}")
    elif kind == "ssh":
        ssh_cmd = ssh_console_command(paths, console, cluster_name)
        if opts.show_command:
            to_stdout(shell_quote_args(ssh_cmd))
        elif _run_console(paths, console, ssh_cmd) != 0:
            log.error("Console command \"%s\" failed", shell_quote_args(ssh_cmd))
            raise GanetiError("OpExecError", f"Connection to console of instance {console.get('instance')} "
                              "failed, please check cluster configuration")
    else:
        raise GanetiError("GenericError", f"Unknown console type '{kind}'")
    return EXIT_SUCCESS


# -- tags (cli.ListTags/AddTags/RemoveTags) -------------------------------------------------------


def _read_tags_source(opts: Any, args: list[str]) -> None:
    if opts.tags_source is None:
        return
    if opts.tags_source == "-":
        lines = sys.stdin.readlines()
    else:
        try:
            with open(opts.tags_source, encoding="utf-8") as handle:
                lines = handle.readlines()
        except OSError as err:
            raise GanetiError("OpPrereqError", f"Can't read tags file {opts.tags_source}: {err}",
                              ECODE_INVAL) from None
    args.extend(line.strip() for line in lines)


def tag_commands(kind: str) -> tuple[Callable[..., int], Callable[..., int], Callable[..., int]]:
    """list-tags, add-tags and remove-tags for objects of this tag kind."""

    def list_tags(ctx: Context, opts: Any, args: list[str]) -> int:
        result = ctx.client().call("QueryTags", [kind, args[0]])
        for tag in sorted(result):
            to_stdout(tag)
        return EXIT_SUCCESS

    def change(op_id: str, empty: str) -> Callable[..., int]:
        def run(ctx: Context, opts: Any, args: list[str]) -> int:
            args = list(args)
            name = args.pop(0)
            _read_tags_source(opts, args)
            if not args:
                raise GanetiError("OpPrereqError", empty, ECODE_INVAL)
            op = make_opcode(op_id, kind=kind, name=name, tags=args)
            submit_or_send(ctx.client(), op, opts, ctx.argv)
            return EXIT_SUCCESS

        return run

    return (list_tags, change("OP_TAGS_SET", "No tags to be added"),
            change("OP_TAGS_DEL", "No tags to be removed"))


_list_tags, _add_tags, _remove_tags = tag_commands(TAG_INSTANCE)

# -- the command table ----------------------------------------------------------------------------

ARGS_ONE = [Args(1, 1)]
ARGS_MANY = [Args(0, None)]

ADD_OPTS = [BACKEND_OPT, DISK_OPT, DISK_TEMPLATE_OPT, FILESTORE_DIR_OPT, FILESTORE_DRIVER_OPT, HYPERVISOR_OPT,
            IALLOCATOR_OPT, NET_OPT, NODE_PLACEMENT_OPT, NODEGROUP_OPT, NOIPCHECK_OPT, NOCONFLICTSCHECK_OPT,
            NONAMECHECK_OPT, NONICS_OPT, NWSYNC_OPT, OSPARAMS_OPT, OSPARAMS_PRIVATE_OPT, OSPARAMS_SECRET_OPT,
            OS_SIZE_OPT, OPPORTUNISTIC_OPT, *SUBMIT_OPTS, TAG_ADD_OPT, DRY_RUN_OPT, PRIORITY_OPT,
            FORTHCOMING_OPT, COMMIT_OPT, NOSTART_OPT, OS_OPT, FORCE_VARIANT_OPT, NO_INSTALL_OPT,
            IGNORE_IPOLICY_OPT, INSTANCE_COMMUNICATION_OPT, HELPER_STARTUP_TIMEOUT_OPT,
            HELPER_SHUTDOWN_TIMEOUT_OPT]

_ALL_MULTI = ("--node", "--primary", "--secondary", "--all", "--instance", "--node-tags", "--pri-node-tags",
              "--sec-node-tags", "--tags")

COMMANDS: dict[str, Command] = {
    "add": Command(add_instance, ARGS_ONE, ADD_OPTS,
                   "[...] -t disk-type -n node[:secondary-node] -o os-type <instance-name>",
                   "Creates and adds a new instance to the cluster"),
    "console": Command(connect_to_console, ARGS_ONE, [SHOWCMD_OPT, PRIORITY_OPT],
                       "[--show-cmd] <instance-name>", "Opens a console on the specified instance"),
    "failover": Command(failover_instance, ARGS_ONE,
                        [FORCE_OPT, IGNORE_CONSIST_OPT, *SUBMIT_OPTS, SHUTDOWN_TIMEOUT_OPT, DRY_RUN_OPT,
                         PRIORITY_OPT, DST_NODE_OPT, IALLOCATOR_OPT, IGNORE_IPOLICY_OPT, CLEANUP_OPT],
                        "[-f] <instance-name>",
                        "Stops the instance, changes its primary node and (if it was originally running) "
                        "starts it on the new node (the secondary for mirrored instances or any node for "
                        "shared storage)."),
    "migrate": Command(migrate_instance, ARGS_ONE,
                       [FORCE_OPT, NONLIVE_OPT, MIGRATION_MODE_OPT, CLEANUP_OPT, DRY_RUN_OPT, PRIORITY_OPT,
                        DST_NODE_OPT, IALLOCATOR_OPT, ALLOW_FAILOVER_OPT, IGNORE_IPOLICY_OPT,
                        IGNORE_HVVERSIONS_OPT, NORUNTIME_CHGS_OPT, *SUBMIT_OPTS],
                       "[-f] <instance-name>", "Migrate instance to its secondary node (only for mirrored "
                                               "instances)"),
    "info": Command(show_instance_config, ARGS_MANY, [STATIC_OPT, ALL_OPT, ROMAN_OPT, PRIORITY_OPT],
                    "[-s] {--all | <instance-name>...}", "Show information on the specified instance(s)"),
    "list": Command(list_instances, ARGS_MANY,
                    [NOHDR_OPT, SEP_OPT, USEUNITS_OPT, FIELDS_OPT, VERBOSE_OPT, FORCE_FILTER_OPT],
                    "[<instance-name>...]",
                    "Lists the instances and their status. The available fields can be shown using the "
                    "\"list-fields\" command (see the man page for details). The default field list is (in "
                    "order): " + ", ".join(LIST_DEF_FIELDS) + "."),
    "list-fields": Command(list_fields, ARGS_MANY, [NOHDR_OPT, SEP_OPT], "[fields...]",
                           "Lists all available fields for instances"),
    "reinstall": Command(reinstall_instance, ARGS_MANY,
                         [FORCE_OPT, OS_OPT, FORCE_VARIANT_OPT, M_FORCE_MULTI,
                          *_m("--node", "--primary", "--secondary", "--all", "--instance", "--node-tags",
                              "--pri-node-tags", "--sec-node-tags", "--tags"),
                          SELECT_OS_OPT, *SUBMIT_OPTS, DRY_RUN_OPT, PRIORITY_OPT, OSPARAMS_OPT,
                          OSPARAMS_PRIVATE_OPT, OSPARAMS_SECRET_OPT],
                         "[-f] <instance>", "Reinstall a stopped instance"),
    "remove": Command(remove_instance, ARGS_ONE,
                      [FORCE_OPT, SHUTDOWN_TIMEOUT_OPT, IGNORE_FAILURES_OPT, *SUBMIT_OPTS, DRY_RUN_OPT,
                       PRIORITY_OPT],
                      "[-f] <instance-name>", "Shuts down the instance and removes it"),
    "rename": Command(rename_instance, [Args(1, 1), Args(1, 1)],
                      [FORCE_OPT, NOIPCHECK_OPT, NONAMECHECK_OPT, *SUBMIT_OPTS, DRY_RUN_OPT, PRIORITY_OPT],
                      "<old-name> <new-name>", "Rename the instance"),
    "modify": Command(set_instance_params, ARGS_ONE,
                      [BACKEND_OPT, DISK_OPT, FORCE_OPT, HVOPTS_OPT, NET_OPT, *SUBMIT_OPTS, DISK_TEMPLATE_OPT,
                       SINGLE_NODE_OPT, IALLOCATOR_OPT, OS_OPT, FORCE_VARIANT_OPT, OSPARAMS_OPT,
                       OSPARAMS_PRIVATE_OPT, DRY_RUN_OPT, PRIORITY_OPT, NWSYNC_OPT, OFFLINE_INST_OPT,
                       ONLINE_INST_OPT, IGNORE_IPOLICY_OPT, RUNTIME_MEM_OPT, NOCONFLICTSCHECK_OPT,
                       NEW_PRIMARY_OPT, HOTPLUG_OPT, HOTPLUG_IF_POSSIBLE_OPT, INSTANCE_COMMUNICATION_OPT,
                       EXT_PARAMS_OPT, FILESTORE_DRIVER_OPT, FILESTORE_DIR_OPT],
                      "<instance-name>", "Alters the parameters of an instance"),
    "shutdown": Command(generic_many_ops("shutdown", _shutdown_op), ARGS_MANY,
                        [FORCE_OPT, *_m("--node", "--primary", "--secondary", "--all", "--node-tags",
                                        "--pri-node-tags", "--sec-node-tags", "--tags", "--instance"),
                         M_FORCE_MULTI, TIMEOUT_OPT, *SUBMIT_OPTS, DRY_RUN_OPT, PRIORITY_OPT,
                         IGNORE_OFFLINE_OPT, NO_REMEMBER_OPT],
                        "<instance>", "Stops an instance"),
    "startup": Command(generic_many_ops("startup", _startup_op), ARGS_MANY,
                       [FORCE_OPT, M_FORCE_MULTI, *_m("--node", "--primary", "--secondary", "--node-tags",
                                                      "--pri-node-tags", "--sec-node-tags", "--tags", "--all",
                                                      "--instance"),
                        *SUBMIT_OPTS, HVOPTS_OPT, BACKEND_OPT, DRY_RUN_OPT, PRIORITY_OPT, IGNORE_OFFLINE_OPT,
                        NO_REMEMBER_OPT, STARTUP_PAUSED_OPT],
                       "<instance>", "Starts an instance"),
    "reboot": Command(generic_many_ops("reboot", _reboot_op), ARGS_MANY,
                      [M_FORCE_MULTI, REBOOT_TYPE_OPT, IGNORE_SECONDARIES_OPT,
                       *_m("--node", "--primary", "--secondary", "--all", "--instance"), *SUBMIT_OPTS,
                       *_m("--node-tags", "--pri-node-tags", "--sec-node-tags", "--tags"),
                       SHUTDOWN_TIMEOUT_OPT, DRY_RUN_OPT, PRIORITY_OPT],
                      "<instance>", "Reboots an instance"),
    "activate-disks": Command(activate_disks, ARGS_ONE,
                              [*SUBMIT_OPTS, IGNORE_SIZE_OPT, PRIORITY_OPT, WFSYNC_OPT],
                              "<instance-name>", "Activate an instance's disks"),
    "deactivate-disks": Command(deactivate_disks, ARGS_ONE,
                                [FORCE_OPT, *SUBMIT_OPTS, DRY_RUN_OPT, PRIORITY_OPT],
                                "[-f] <instance-name>", "Deactivate an instance's disks"),
    "grow-disk": Command(grow_disk, [Args(1, 1), Args(1, 1), Args(1, 1)],
                         [*SUBMIT_OPTS, NWSYNC_OPT, DRY_RUN_OPT, PRIORITY_OPT, ABSOLUTE_OPT,
                          IGNORE_IPOLICY_OPT],
                         "<instance-name> <disk> <size>", "Grow an instance's disk"),
    "batch-create": Command(batch_create, ARGS_ONE, [DRY_RUN_OPT, PRIORITY_OPT, IALLOCATOR_OPT, *SUBMIT_OPTS],
                            "<instances.json>", "Create a bunch of instances based on specs in the file."),
    "move": Command(move_instance, ARGS_ONE,
                    [FORCE_OPT, *SUBMIT_OPTS, SINGLE_NODE_OPT, COMPRESS_OPT, SHUTDOWN_TIMEOUT_OPT,
                     DRY_RUN_OPT, PRIORITY_OPT, IGNORE_CONSIST_OPT, IGNORE_IPOLICY_OPT],
                    "[-f] <instance-name>",
                    "Move instance to an arbitrary node (only for instances of type file and lv)"),
    "replace-disks": Command(replace_disks, ARGS_ONE,
                             [AUTO_REPLACE_OPT, DISKIDX_OPT, IALLOCATOR_OPT, EARLY_RELEASE_OPT,
                              NEW_SECONDARY_OPT, ON_PRIMARY_OPT, ON_SECONDARY_OPT, *SUBMIT_OPTS, DRY_RUN_OPT,
                              PRIORITY_OPT, IGNORE_IPOLICY_OPT],
                             "[-s|-p|-a|-n NODE|-I NAME] <instance-name>", "Replaces disks for the instance"),
    "recreate-disks": Command(recreate_disks, ARGS_ONE,
                              [*SUBMIT_OPTS, DISK_OPT, NODE_PLACEMENT_OPT, DRY_RUN_OPT, PRIORITY_OPT,
                               IALLOCATOR_OPT],
                              "<instance-name>", "Recreate an instance's disks"),
    "change-group": Command(change_group, ARGS_ONE,
                            [TO_GROUP_OPT, IALLOCATOR_OPT, EARLY_RELEASE_OPT, PRIORITY_OPT, *SUBMIT_OPTS],
                            "[-I <iallocator>] [--to <group>] <instance-name>", "Change group of instance"),
    "list-tags": Command(_list_tags, ARGS_ONE, [], "<instance-name>", "List the tags of the given instance"),
    "add-tags": Command(_add_tags, [Args(1, 1), Args(0, None)], [TAG_SRC_OPT, PRIORITY_OPT, *SUBMIT_OPTS],
                        "<instance-name> <tag>...", "Add tags to the given instance"),
    "remove-tags": Command(_remove_tags, [Args(1, 1), Args(0, None)],
                           [TAG_SRC_OPT, PRIORITY_OPT, *SUBMIT_OPTS],
                           "<instance-name> <tag>...", "Remove tags from given instance"),
}

ALIASES = {"start": "startup", "stop": "shutdown", "show": "info"}
#: Ganeti's other gnt-instance commands (none left).
PLANNED: tuple[str, ...] = ()


def run_main(commands: dict[str, Command], aliases: dict[str, str], planned: Sequence[str],
             env_override: Sequence[str] = ()) -> int:
    """generic_main, plus Ganeti's handling of option values it cannot parse (ParameterError & co.).

    For a command in `env_override`, the options in $<TOOL>_<COMMAND> (e.g.
    GNT_INSTANCE_LIST) come before the command line's, like Ganeti's _ParseArgs.
    """
    argv = list(sys.argv)
    if len(argv) > 1 and aliases.get(argv[1], argv[1]) in env_override:
        binary = os.path.basename(argv[0])
        name = f"{binary.replace('-', '_')}_{aliases.get(argv[1], argv[1])}".upper()
        if os.environ.get(name):
            argv[2:2] = shlex.split(os.environ[name])
    try:
        return generic_main(commands, aliases=aliases, planned=planned, argv=argv)
    except (GanetiError, JobSubmitted) as err:
        to_stderr(format_error(err)[1])
        return EXIT_FAILURE


def main() -> int:
    return run_main(COMMANDS, ALIASES, PLANNED, env_override=("list",))


if __name__ == "__main__":
    raise SystemExit(main())
