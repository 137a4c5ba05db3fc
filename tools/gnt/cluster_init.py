"""`gnt-cluster init` and `gnt-cluster destroy`: Ganeti 3.0's bootstrap sequence with our daemons.

init (bootstrap.InitCluster's order and messages):

1. checks: no config.data yet ("Cluster is already initialised"), no
   left-over files in $DATA_DIR / the queue (its lock file excepted);
   hypervisors and disk templates known and not empty; this node's name
   resolves to an address this host owns; the cluster name resolves to an
   address no one answers on (the node daemon port) and that no interface
   here carries ("Cluster IP already active"); the secondary IP is IPv4 and
   ours; the netmask fits; the master netdev exists (`ip link show dev`);
   the MAC prefix is well formed; the file storage directories are
   absolute (created when their template is enabled);
2. the cluster certificate $DATA_DIR/server.pem and this node's client.pem
   (signed by it), Ganeti's scheme (noded.certs);
3. config.data (masterd.config.model.new_config, the master's client
   certificate digest in candidate_certs), written durably, then every
   ssconf file (masterd.config.ssconf), and the file storage directories
   added to $CONF_DIR/file-storage-paths;
4. our ganeti-noded for this node, bound to the node's primary address, on
   the port of the services database (below the root when set) or 1811;
   init waits for its `version` answer;
5. the cluster IP through it (node_activate_master_ip);
6. our ganeti-masterd (it holds the start-up voting: one node wins it),
   then LUXI must answer QueryClusterInfo with the new cluster's name.
   A failure after the checks undoes what was done (daemons stopped by pid,
   IP removed, certificates, config.data, ssconf and the queue's files
   removed) and is reported; the root is then ready for another init.

destroy --yes-do-it (gnt_cluster.DestroyCluster + FinalizeClusterDestroy):
LUClusterDestroy's checks (no other node, no instance; read from
config.data here, since our master has no OP_CLUSTER_DESTROY yet), then
node_deactivate_master_ip, node_stop_master (stops our ganeti-masterd) and
node_leave_cluster (removes config.data, ssconf, certificates, the queue's
files and stops the node daemon) on this node's daemon. A step that fails
is a warning, as in Ganeti; the node daemon, if still there, is stopped by
its pid. Without --yes-do-it destroy refuses with Ganeti's message (exit 1).

Documented deviations:
- names: with GANETI_ROOTDIR set, this node is GANETI_HOSTNAME and names
  resolve through the root's etc/hosts only (loopback addresses are then
  allowed: a virtual node lives on 127/8); without a root, the resolver.
- SSH: we never create or touch SSH keys (--no-ssh-init is accepted and
  changes nothing); /etc/hosts is never modified (--no-etc-hosts is
  accepted and recorded in the config).
- LVM is not supported: --vg-name, and the plain and drbd templates, are
  refused; the default templates are file, sharedfile and diskless.
- ours, for test clusters: --noded-port, --noded-grpc-port (the node
  daemon's gRPC port, written to $DATA_DIR/node-grpc-ports when not 1812)
  and --master-grpc-port (ganeti-masterd's gRPC door; 0 disables it).
- no OP_CLUSTER_POST_INIT job and no cluster-init hooks are run.
- $CONF_DIR/file-storage-paths is configuration, not cluster state: destroy
  leaves it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

from masterd import nodecalls
from masterd.config import defaults
from masterd.config.model import ConfigData, ConfigError, load, new_config
from masterd.config.ssconf import file_contents, ssconf_values
from masterd.config.writer import ConfigWriter
from masterd.ssconf import node_grpc_ports_file
from noded import certs
from noded.backends import masterip
from noded.backends.fileio import write_file_atomic
from noded.context import DEFAULT_GRPC_PORT
from noded.paths import Paths, RootError
from tools.gnt import node_daemon
from tools.gnt.command import ARGS_NONE, EXIT_FAILURE, EXIT_SUCCESS, Args, Command, Context, option
from tools.gnt.errors import ECODE_INVAL, ECODE_STATE, GanetiError
from tools.gnt.luxi_client import LuxiClient
from tools.gnt.output import to_stderr

ECODE_ENVIRON = "environment_error"
ECODE_NOTUNIQUE = "resource_not_unique"
ECODE_RESOLVER = "resolver_error"
#: Our default disk templates (Ganeti's drbd, plain need LVM, which we do not have).
DEFAULT_DISK_TEMPLATES = "file,sharedfile,diskless"
LVM_TEMPLATES = ("plain", "drbd")
DEFAULT_HYPERVISOR = "kvm"
#: constants.DEFAULT_BRIDGE, the master netdev when none is given.
DEFAULT_BRIDGE = "xen-br0"
SSCONF_FILE_MODE = 0o444
DESTROY_REFUSAL = ("Destroying a cluster is irreversible. If you really want destroy this cluster,"
                   " supply the --yes-do-it option.")


def prereq(text: str, code: str = ECODE_INVAL) -> GanetiError:
    return GanetiError("OpPrereqError", text, code)


# -- name resolution ------------------------------------------------------------------------

def resolve(paths: Paths, name: str) -> str:
    """`name`'s IPv4 address: the root's etc/hosts when a root is set, else the resolver."""
    try:
        return nodecalls.resolve(paths, name)
    except nodecalls.ResolveError as err:
        raise prereq(str(err), ECODE_RESOLVER) from None


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def owns_address(address: str) -> bool:
    """Whether this host can bind `address` (Ganeti's IPAddress.Own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


tcp_ping = nodecalls.tcp_ping


def cluster_ip_active(address: str, port: int) -> bool:
    return tcp_ping(address, port) or any(ip == address for _dev, ip, _mask in masterip.local_addresses())


# -- option values ----------------------------------------------------------------------------

def _convert(key: str, text: str, default: Any, what: str) -> Any:
    if isinstance(default, bool):
        if text.lower() in ("true", "yes", "1"):
            return True
        if text.lower() in ("false", "no", "0"):
            return False
        raise prereq(f"{what}: '{key}' must be a boolean, not '{text}'")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise prereq(f"{what}: '{key}' must be an integer, not '{text}'") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise prereq(f"{what}: '{key}' must be a number, not '{text}'") from None
    return text


def parse_params(text: str, known: dict[str, Any], what: str) -> dict[str, Any]:
    """"key=value,key=value" checked against `known` (a defaults dict giving the types)."""
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise prereq(f"{what}: '{item}' is not of the form key=value")
        if key not in known:
            raise prereq(f"{what}: unknown parameter '{key}' (known: {', '.join(sorted(known))})")
        out[key] = _convert(key, value, known[key], what)
    return out


def parse_hv_params(specs: list[str]) -> dict[str, dict[str, Any]]:
    """-H "hv:key=value,..." (repeatable)."""
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        hv, _, params = spec.partition(":")
        if hv not in defaults.HYPERVISOR_TYPES:
            raise prereq(f"Hypervisor parameters given for unknown hypervisor '{hv}'")
        known = defaults.CLUSTER_DEFAULTS["hvparams"].get(hv, {})
        out.setdefault(hv, {}).update(parse_params(params, known, f"hypervisor parameters of {hv}"))
    return out


def split_list(text: str | None, default: str) -> list[str]:
    return [item for item in (text if text is not None else default).split(",") if item]


# -- init ---------------------------------------------------------------------------------------

@dataclass
class InitPlan:
    """Everything init decided before it changes anything."""

    paths: Paths
    cluster_name: str
    node_name: str
    node_ip: str
    secondary_ip: str
    cluster_ip: str
    netdev: str
    netmask: int
    hypervisors: list[str]
    templates: list[str]
    file_dirs: dict[str, str]
    noded_port: int
    noded_grpc_port: int | None
    master_grpc_port: int | None
    nicparams: dict[str, Any]
    beparams: dict[str, Any]
    hvparams: dict[str, dict[str, Any]]

    @property
    def storage_dirs(self) -> list[str]:
        """The file storage directories of the enabled file-based templates (created by init)."""
        return [path for template, path in self.file_dirs.items() if template in self.templates]


def _paths() -> Paths:
    try:
        return Paths.from_environ()
    except RootError as err:
        raise prereq(str(err), ECODE_ENVIRON) from None


def check_no_cluster(paths: Paths) -> None:
    if os.path.exists(paths.config_file):
        raise prereq("Cluster is already initialised", ECODE_STATE)
    queue_lock = os.path.join(paths.queue_dir, "lock")
    for ddir in (paths.queue_dir, paths.data_dir, paths.queue_archive_dir):
        if not os.path.isdir(ddir):
            continue
        for entry in sorted(os.listdir(ddir)):
            full = os.path.join(ddir, entry)
            if not os.path.isdir(full) and full != queue_lock:
                raise prereq(f"{ddir} contains non-directory entries like {entry}. Remove left-overs of an"
                             " old cluster before initialising a new one", ECODE_STATE)


def _file_dirs(opts: Any, paths: Paths) -> dict[str, str]:
    dirs: dict[str, str] = {}
    for template, given, default in (("file", opts.file_storage_dir, paths.file_storage_dir),
                                     ("sharedfile", opts.shared_file_storage_dir,
                                      paths.shared_file_storage_dir)):
        path = os.path.normpath(given or default)
        if not os.path.isabs(path):
            raise prereq(f"File storage directory '{path}' is not an absolute path")
        dirs[template] = path
    return dirs


def plan_init(opts: Any, cluster_name: str) -> InitPlan:
    paths = _paths()
    if opts.vg_name:
        raise prereq("LVM is not supported by this implementation: --vg-name cannot be used (enable file,"
                     " sharedfile or diskless disk templates instead)")
    check_no_cluster(paths)
    hypervisors = split_list(opts.enabled_hypervisors, DEFAULT_HYPERVISOR)
    if not hypervisors:
        raise prereq("Enabled hypervisors list must contain at least one member")
    invalid = sorted(set(hypervisors) - set(defaults.HYPERVISOR_TYPES))
    if invalid:
        raise prereq(f"Enabled hypervisors contains invalid entries: {{{', '.join(map(repr, invalid))}}}")
    templates = split_list(opts.enabled_disk_templates, DEFAULT_DISK_TEMPLATES)
    if not templates:
        raise prereq("Enabled disk templates list must contain at least one member")
    invalid = sorted(set(templates) - set(defaults.DISK_TEMPLATES))
    if invalid:
        raise prereq(f"Enabled disk templates list contains invalid entries: "
                     f"{{{', '.join(map(repr, invalid))}}}")
    lvm = [t for t in templates if t in LVM_TEMPLATES]
    if lvm:
        raise prereq(f"Disk templates {', '.join(lvm)} need LVM, which this implementation does not support")
    node_name = paths.hostname if paths.root else socket.getfqdn()
    node_ip = resolve(paths, node_name)
    if ipaddress.ip_address(node_ip).is_loopback and not paths.root:
        raise prereq(f"This host's IP ({node_ip}) resolves to a loopback address. Please fix DNS or"
                     f" {paths.etc_hosts}.", ECODE_ENVIRON)
    if not owns_address(node_ip):
        raise prereq(f"Inconsistency: this host's name resolves to {node_ip},\nbut this ip address does not"
                     " belong to this host", ECODE_ENVIRON)
    port = node_daemon.noded_port(paths, opts.noded_port)
    cluster_ip = resolve(paths, cluster_name)
    if cluster_ip_active(cluster_ip, port):
        raise prereq("Cluster IP already active", ECODE_NOTUNIQUE)
    secondary_ip = opts.secondary_ip or node_ip
    if not _is_ipv4(secondary_ip):
        raise prereq(f"Secondary IP address ({secondary_ip}) has to be a valid IPv4 address.")
    if not owns_address(secondary_ip):
        raise prereq(f"You gave {secondary_ip} as secondary IP, but it does not belong to this host.",
                     ECODE_ENVIRON)
    netmask = 32 if opts.master_netmask is None else opts.master_netmask
    if not 0 < netmask <= 32:
        raise prereq(f"CIDR netmask ({netmask}) not valid for IPv4 ")
    if not re.match(r"^[0-9a-z]{2}:[0-9a-z]{2}:[0-9a-z]{2}$", opts.mac_prefix or "aa:00:00"):
        raise prereq(f"Invalid mac prefix given '{opts.mac_prefix}'")
    netdev = opts.master_netdev or DEFAULT_BRIDGE
    link = subprocess.run(["ip", "link", "show", "dev", netdev], capture_output=True, text=True)
    if link.returncode != 0:
        raise prereq(f"Invalid master netdev given ({netdev}): '{(link.stdout + link.stderr).strip()}'")
    nicparams = parse_params(opts.nicparams or "", defaults.CLUSTER_DEFAULTS["nicparams"]["default"],
                             "NIC parameters")
    beparams = parse_params(opts.beparams or "", defaults.CLUSTER_DEFAULTS["beparams"]["default"],
                            "backend parameters")
    hvparams = parse_hv_params(opts.hvparams or [])
    return InitPlan(paths=paths, cluster_name=cluster_name, node_name=node_name, node_ip=node_ip,
                    secondary_ip=secondary_ip, cluster_ip=cluster_ip, netdev=netdev, netmask=netmask,
                    hypervisors=hypervisors, templates=templates, file_dirs=_file_dirs(opts, paths),
                    noded_port=port, noded_grpc_port=opts.noded_grpc_port,
                    master_grpc_port=opts.master_grpc_port, nicparams=nicparams, beparams=beparams,
                    hvparams=hvparams)


def build_config(plan: InitPlan, opts: Any, client_digest: str) -> ConfigData:
    try:
        cfg = new_config(cluster_name=plan.cluster_name, master_name=plan.node_name, master_ip=plan.node_ip,
                         cluster_ip=plan.cluster_ip, master_netdev=plan.netdev, master_netmask=plan.netmask,
                         secondary_ip=plan.secondary_ip, enabled_hypervisors=plan.hypervisors,
                         enabled_disk_templates=plan.templates,
                         file_storage_dir=plan.file_dirs["file"],
                         shared_file_storage_dir=plan.file_dirs["sharedfile"],
                         nicparams=plan.nicparams, modify_etc_hosts=not opts.no_etc_hosts,
                         modify_ssh_setup=False, mac_prefix=opts.mac_prefix)
    except ConfigError as err:
        raise prereq(str(err)) from None
    cluster = cfg.cluster
    cluster["beparams"]["default"].update(plan.beparams)
    for hv, params in plan.hvparams.items():
        cluster["hvparams"].setdefault(hv, {}).update(params)
    cfg.set_candidate_cert(cfg.master_node_uuid, client_digest)
    return cfg


def master_params(cfg: ConfigData) -> dict[str, Any]:
    """MasterNetworkParameters as the node_*_master_ip RPCs take them."""
    cluster = cfg.cluster
    family = socket.AF_INET6 if cluster.get("primary_ip_family") == socket.AF_INET6 else socket.AF_INET
    return {"uuid": cfg.master_node_uuid, "ip": cluster["master_ip"],
            "netmask": int(cluster.get("master_netmask", 32)), "netdev": cluster["master_netdev"],
            "ip_family": int(family)}


def write_ssconf(paths: Paths, cfg: ConfigData) -> None:
    for key, text in file_contents(ssconf_values(cfg)).items():
        write_file_atomic(paths.ssconf_file(key), text.encode("utf-8"), mode=SSCONF_FILE_MODE)


def add_file_storage_paths(paths: Paths, dirs: list[str]) -> None:
    """Make sure each of `dirs` is listed in $CONF_DIR/file-storage-paths (other lines kept)."""
    try:
        with open(paths.file_storage_paths_file, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    listed = {line.strip() for line in text.splitlines()}
    missing = [d for d in dirs if d not in listed]
    if missing:
        if text and not text.endswith("\n"):
            text += "\n"
        write_file_atomic(paths.file_storage_paths_file, (text + "".join(d + "\n" for d in missing)).encode(),
                          mode=0o644)


class Rollback:
    """What init did, undone in reverse order when a later step fails."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.files: list[str] = []
        self.pids: list[int] = []
        self.ip: tuple[str, int, dict[str, Any]] | None = None

    def undo(self) -> None:
        if self.ip is not None:
            address, port, params = self.ip
            try:
                node_daemon.call_node(self.paths, address, port, "node_deactivate_master_ip", params, False)
            except GanetiError as err:
                to_stderr(f"Warning: could not remove the cluster IP again: {err.args[1]}")
        for pid in reversed(self.pids):
            node_daemon.stop_pid(pid)
        for path in reversed(self.files):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        # init began with an empty queue (check_no_cluster): what is there now, the master wrote
        queue_lock = os.path.join(self.paths.queue_dir, "lock")
        for ddir in (self.paths.queue_dir, self.paths.queue_archive_dir):
            for name in os.listdir(ddir) if os.path.isdir(ddir) else []:
                full = os.path.join(ddir, name)
                if full != queue_lock and os.path.isfile(full) and not os.path.islink(full):
                    os.unlink(full)


def _ssconf_files(paths: Paths, cfg: ConfigData) -> list[str]:
    return [paths.ssconf_file(key) for key in ssconf_values(cfg)]


def run_init(plan: InitPlan, opts: Any) -> None:
    paths = plan.paths
    paths.ensure_dirs()
    undo = Rollback(paths)
    try:
        for path in plan.storage_dirs:
            try:
                os.makedirs(path, 0o750, exist_ok=True)
            except OSError as err:
                raise prereq(f"Cannot create file storage directory '{path}': {err}", ECODE_ENVIRON) from None
            if not os.path.isdir(path):
                raise prereq(f"The file storage directory '{path}' is not a directory.", ECODE_ENVIRON)
        undo.files += [paths.server_cert, paths.client_cert]
        certs.write_server_pem(paths.server_cert)
        digest = certs.write_client_pem(paths.client_cert, paths.server_cert, plan.node_name)
        cfg = build_config(plan, opts, digest)
        undo.files.append(paths.config_file)
        ConfigWriter(paths).write(cfg)
        undo.files += _ssconf_files(paths, cfg)
        write_ssconf(paths, cfg)
        add_file_storage_paths(paths, plan.storage_dirs)
        if plan.noded_grpc_port is not None and plan.noded_grpc_port != DEFAULT_GRPC_PORT:
            undo.files.append(node_grpc_ports_file(paths))
            line = f"{plan.node_name} {plan.noded_grpc_port}\n"
            write_file_atomic(node_grpc_ports_file(paths), line.encode(), mode=0o644)
        undo.pids.append(node_daemon.start_noded(paths, plan.node_ip, plan.noded_port, plan.noded_grpc_port))
        node_daemon.wait_node_version(paths, plan.node_ip, plan.noded_port)
        params = master_params(cfg)
        node_daemon.call_node(paths, plan.node_ip, plan.noded_port, "node_activate_master_ip", params, False)
        undo.ip = (plan.node_ip, plan.noded_port, params)
        undo.pids.append(node_daemon.start_masterd(paths, plan.master_grpc_port))
        check_luxi(paths, plan.cluster_name)
    except BaseException:
        undo.undo()
        raise


def check_luxi(paths: Paths, cluster_name: str) -> None:
    """The new master answers QueryClusterInfo with this cluster's name (Ganeti's _WaitForMasterDaemon)."""
    try:
        with LuxiClient(paths=paths) as client:
            info = client.query_cluster_info()
    except GanetiError as err:
        raise GanetiError("OpExecError", f"Master daemon didn't answer queries: {err.args}") from None
    if not isinstance(info, dict) or info.get("name") != cluster_name:
        raise GanetiError("OpExecError", f"The master daemon answered QueryClusterInfo with {info!r},"
                                         f" not cluster {cluster_name}")


def init_cluster(ctx: Context, opts: Any, args: list[str]) -> int:
    plan = plan_init(opts, args[0])
    run_init(plan, opts)
    return EXIT_SUCCESS


# -- destroy ----------------------------------------------------------------------------------

def destroy_cluster(ctx: Context, opts: Any, args: list[str]) -> int:
    if not opts.yes_do_it:
        to_stderr(DESTROY_REFUSAL)
        return EXIT_FAILURE
    paths = _paths()
    try:
        cfg = load(paths.config_file)
    except ConfigError as err:
        raise GanetiError("OpPrereqError", f"Cluster not initialized or this machine is not part of a"
                                           f" cluster: {err}", ECODE_STATE) from None
    master = cfg.master_node
    me = paths.hostname if paths.root else socket.getfqdn()
    if master.name != me:
        raise prereq(f"This command must be run on the master node {master.name} (this is {me})")
    others = [node for node in cfg.nodes() if node.uuid != master.uuid]
    if others:
        raise prereq(f"There are still {len(others)} node(s) in this cluster.")
    instances = cfg.instance_names()
    if instances:
        raise prereq(f"There are still {len(instances)} instance(s) in this cluster.")
    port = node_daemon.noded_port(paths, opts.noded_port)
    noded_pid = node_daemon.read_pid(paths.noded_pid_file)
    steps: list[tuple[str, tuple[Any, ...], str]] = [
        ("node_deactivate_master_ip", (master_params(cfg), False), "Could not disable the master IP"),
        ("node_stop_master", (), "Could not disable the master role"),
        ("node_leave_cluster", (False,), "Could not shutdown the node daemon and cleanup the node"),
    ]
    for procedure, call_args, warning in steps:
        try:
            node_daemon.call_node(paths, master.primary_ip, port, procedure, *call_args)
        except GanetiError as err:
            to_stderr(f"Warning: {warning}: {err.args[1] if len(err.args) > 1 else err}")
    masterd_pid = node_daemon.read_pid(node_daemon.masterd_pid_file(paths))
    for pid in (masterd_pid, noded_pid):
        if pid is not None and not node_daemon.pid_gone(pid, 10.0):
            node_daemon.stop_pid(pid)
    return EXIT_SUCCESS


# -- options and commands ----------------------------------------------------------------------

INIT_OPTS = [
    option("--enabled-hypervisors", dest="enabled_hypervisors", default=None,
           help="Comma-separated list of hypervisors (default kvm)"),
    option("--enabled-disk-templates", dest="enabled_disk_templates", default=None,
           help=f"Comma-separated list of disk templates (default {DEFAULT_DISK_TEMPLATES})"),
    option("--file-storage-dir", dest="file_storage_dir", default=None,
           help="Directory of file-based instances"),
    option("--shared-file-storage-dir", dest="shared_file_storage_dir", default=None,
           help="Directory of shared-file-based instances"),
    option("--master-netdev", dest="master_netdev", default=None,
           help=f"Device carrying the cluster IP (default {DEFAULT_BRIDGE})"),
    option("--master-netmask", dest="master_netmask", type="int", default=None,
           help="CIDR netmask of the cluster IP (default 32)"),
    option("-s", "--secondary-ip", dest="secondary_ip", default=None, help="This node's secondary IP"),
    option("--nic-parameters", "-N", dest="nicparams", default=None, help="Default NIC parameters"),
    option("-H", "--hypervisor-parameters", dest="hvparams", action="append", default=[],
           help="Hypervisor parameters, hv:key=value,..."),
    option("-B", "--backend-parameters", dest="beparams", default=None, help="Default backend parameters"),
    option("--mac-prefix", dest="mac_prefix", default=None, help="MAC prefix of new instances' NICs"),
    option("--no-etc-hosts", dest="no_etc_hosts", action="store_true", default=False,
           help="Don't modify /etc/hosts (we never do; recorded in the config)"),
    option("--no-ssh-init", dest="no_ssh_init", action="store_true", default=False,
           help="Don't initialise SSH keys (we never touch SSH keys: no effect)"),
    option("-g", "--vg-name", dest="vg_name", default=None, help="Refused: LVM is not supported"),
    option("--noded-port", dest="noded_port", type="int", default=None,
           help="(ours) node daemon port (default: services database, else 1811)"),
    option("--noded-grpc-port", dest="noded_grpc_port", type="int", default=None,
           help="(ours) node daemon gRPC port (default 1812)"),
    option("--master-grpc-port", dest="master_grpc_port", type="int", default=None,
           help="(ours) master daemon gRPC port (default 1813, 0 disables)"),
]
DESTROY_OPTS = [
    option("--yes-do-it", dest="yes_do_it", action="store_true", default=False,
           help="Destroy cluster"),
    option("--noded-port", dest="noded_port", type="int", default=None,
           help="(ours) node daemon port (default: services database, else 1811)"),
]

COMMANDS: dict[str, Command] = {
    "init": Command(init_cluster, [Args(min=1, max=1)], INIT_OPTS, "[opts...] <cluster_name>",
                    "Initialises a new cluster configuration"),
    "destroy": Command(destroy_cluster, ARGS_NONE, DESTROY_OPTS, "", "Destroy cluster"),
}
