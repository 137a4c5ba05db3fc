"""gnt-node: add and remove (OP_NODE_ADD, OP_NODE_REMOVE) without SSH; migrate and tags.

`gnt-node add [-s SECONDARY_IP] [-g GROUP] [--master-capable=yes|no] [--vm-capable=yes|no]
[--node-root PATH [--noded-grpc-port PORT]] <node_name>`

Ganeti's gnt-node add prepares the node over SSH (bootstrap.SetupNodeDaemon
runs `prepare-node-join` and `node-daemon-setup` through ssh, whatever
--no-node-setup says: in 3.0 that option only prints a warning) and then
submits OP_NODE_ADD. Debian's real gnt-node add therefore cannot add a node
without SSH. Ours never uses SSH:

- without --node-root, the node must already be prepared (its node daemon
  runs, serving the cluster certificate and trusting the master's client
  certificate); ours submits OP_NODE_ADD, whose checks (masterd.ops.node_add)
  refuse a node that is not ready;
- (ours) with --node-root PATH, the node lives on this machine: PATH is its
  GANETI_ROOTDIR (its last component must be the node's name) and its
  address is the name's address in the master root's etc/hosts (a 127.0.0.x
  address of its own). tools.gnt.node_prepare copies the cluster
  certificate, makes the node's client.pem, copies the ssconf files and the
  root's etc/hosts and etc/services, and starts its ganeti-noded; then
  OP_NODE_ADD is submitted. If the opcode fails, that daemon is stopped.
  A name the master's config.data already lists is refused before anything
  is prepared (Ganeti's "already in the cluster" message).

Run it on the master, with the master's GANETI_ROOTDIR / GANETI_HOSTNAME for
a virtual cluster. `gnt-node remove <node_name>` submits OP_NODE_REMOVE (the
node leaves the cluster and its daemon stops) and drops the node's line from
$DATA_DIR/node-grpc-ports. `gnt-node migrate [-f] [--non-live|--migration-mode]
[-n target] <node>` (OP_NODE_MIGRATE, then the per-instance jobs it answers,
followed like Ganeti's JobExecutor) and list-tags/add-tags/remove-tags work
like Debian's (shared code in tools.gnt.gnt_instance). Ganeti's other
gnt-node commands (list, info, modify ... served by Debian's tools against
our master) answer "not implemented yet" here.
"""

from __future__ import annotations

import os
from typing import Any

from masterd.config.model import ConfigError, load
from masterd.query.fields import nice_sort_key
from masterd.ssconf import node_grpc_ports
from noded.context import DEFAULT_GRPC_PORT
from noded.paths import Paths, RootError
from tools.gnt import node_daemon, node_prepare
from tools.gnt.cluster_init import resolve
from tools.gnt.command import (
    DRY_RUN_OPT,
    EXIT_CONFIRMATION,
    EXIT_FAILURE,
    EXIT_SUCCESS,
    FORCE_OPT,
    PRIORITY_OPT,
    SUBMIT_OPTS,
    Args,
    Command,
    Context,
    ask_user,
    option,
)
from tools.gnt.errors import ECODE_INVAL, GanetiError, protocol_error
from tools.gnt.gnt_instance import (
    DST_NODE_OPT,
    IALLOCATOR_OPT,
    IGNORE_IPOLICY_OPT,
    MIGRATION_MODE_OPT,
    NONLIVE_OPT,
    NORUNTIME_CHGS_OPT,
    TAG_SRC_OPT,
    JobExecutor,
    migration_mode,
    query_nodes,
    run_main,
    tag_commands,
)
from tools.gnt.jobs import make_opcode, submit_or_send
from tools.gnt.output import to_stderr, to_stdout


def _paths(root: str | None = None, hostname: str = "") -> Paths:
    env = dict(os.environ) if root is None else {"GANETI_ROOTDIR": root, "GANETI_HOSTNAME": hostname}
    try:
        return Paths.from_environ(env)
    except RootError as err:
        raise GanetiError("OpPrereqError", str(err), ECODE_INVAL) from None


def _yes_no(value: str | None, what: str) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("yes", "true", "1"):
        return True
    if value.lower() in ("no", "false", "0"):
        return False
    raise GanetiError("OpPrereqError", f"{what} must be yes or no, not '{value}'", ECODE_INVAL)


def _known_node(master: Paths, name: str) -> bool:
    try:
        return any(node.name == name for node in load(master.config_file).nodes())
    except ConfigError:
        return False


def _grpc_port(master: Paths, override: int | None) -> int:
    if override is not None:
        return override
    return node_grpc_ports(master).get(master.hostname, DEFAULT_GRPC_PORT)


def add_node(ctx: Context, opts: Any, args: list[str]) -> int:
    name = args[0]
    op = make_opcode("OP_NODE_ADD", node_name=name, secondary_ip=opts.secondary_ip, group=opts.nodegroup,
                     master_capable=_yes_no(opts.master_capable, "--master-capable"),
                     vm_capable=_yes_no(opts.vm_capable, "--vm-capable"), node_setup=False)
    if not opts.node_root:
        submit_or_send(ctx.client(), op, opts, ctx.argv)
        return EXIT_SUCCESS
    master = _paths()
    if _known_node(master, name):
        to_stderr(f"Node {name} already in the cluster (as {name}) - please retry with '--readd'")
        return EXIT_FAILURE
    node = _paths(os.path.abspath(opts.node_root), name)
    address = resolve(master, name)
    port = node_daemon.noded_port(master)
    pid = node_prepare.prepare_local_node(master, node, address, port, _grpc_port(master, opts.grpc_port))
    try:
        submit_or_send(ctx.client(), op, opts, ctx.argv)
    except GanetiError:
        node_daemon.stop_pid(pid)
        node_prepare.record_grpc_port(master, name, None)
        raise
    return EXIT_SUCCESS


def remove_node(ctx: Context, opts: Any, args: list[str]) -> int:
    op = make_opcode("OP_NODE_REMOVE", node_name=args[0])
    submit_or_send(ctx.client(), op, opts, ctx.argv)
    node_prepare.record_grpc_port(_paths(), args[0], None)
    return EXIT_SUCCESS


def migrate_node(ctx: Context, opts: Any, args: list[str]) -> int:
    """gnt-node migrate: OP_NODE_MIGRATE, then follow the per-instance jobs it answers (cli.JobExecutor)."""
    client = ctx.client()
    result = query_nodes(client, args, ["name", "pinst_list"])
    if len(result) != 1:
        raise protocol_error("ProtocolError", f"QueryNodes answered {result!r} for one node")
    ((node, pinst),) = result
    if not pinst:
        to_stdout(f"No primary instances on node {node}, exiting.")
        return EXIT_SUCCESS
    pinst = sorted(pinst, key=nice_sort_key)
    if not (opts.force or ask_user(f"Migrate instance(s) {', '.join(pinst)}?")):
        return EXIT_CONFIRMATION
    op = make_opcode("OP_NODE_MIGRATE", node_name=args[0], mode=migration_mode(opts),
                     iallocator=opts.iallocator,
                     target_node=opts.dst_node, allow_runtime_changes=opts.allow_runtime_chgs,
                     ignore_ipolicy=opts.ignore_ipolicy)
    answer = submit_or_send(client, op, opts, ctx.argv)
    jex = JobExecutor(client, opts, ctx.argv)
    for status, job_id in answer["jobs"]:
        jex.add_job_id(None, status, job_id)
    bad = len([row for row in jex.get_results() if not row[0]])
    if bad == 0:
        to_stdout("All instances migrated successfully.")
        return EXIT_SUCCESS
    to_stdout(f"There were {bad} errors during the node migration.")
    return EXIT_FAILURE


_list_tags, _add_tags, _remove_tags = tag_commands("node")

ADD_OPTS = [
    option("-s", "--secondary-ip", dest="secondary_ip", default=None,
           help="Specify the secondary ip address"),
    option("-g", "--node-group", dest="nodegroup", default=None, help="Node group (name or uuid)"),
    option("--master-capable", dest="master_capable", default=None, metavar="yes|no",
           help="Set the master_capable flag on the node"),
    option("--vm-capable", dest="vm_capable", default=None, metavar="yes|no",
           help="Set the vm_capable flag on the node"),
    option("--node-root", dest="node_root", default=None,
           help="(ours) prepare the node on this machine in this GANETI_ROOTDIR (no SSH)"),
    option("--noded-grpc-port", dest="grpc_port", type="int", default=None,
           help="(ours) with --node-root: the node daemon's gRPC port (default: the master's)"),
    DRY_RUN_OPT, PRIORITY_OPT, *SUBMIT_OPTS,
]

COMMANDS: dict[str, Command] = {
    "add": Command(add_node, [Args(min=1, max=1)], ADD_OPTS, "[options...] <node_name>",
                   "Add a node to the cluster"),
    "remove": Command(remove_node, [Args(min=1, max=1)], [DRY_RUN_OPT, PRIORITY_OPT, *SUBMIT_OPTS],
                      "<node_name>", "Removes a node from the cluster"),
    "migrate": Command(migrate_node, [Args(min=1, max=1)],
                       [FORCE_OPT, NONLIVE_OPT, MIGRATION_MODE_OPT, DST_NODE_OPT, IALLOCATOR_OPT,
                        PRIORITY_OPT, IGNORE_IPOLICY_OPT, NORUNTIME_CHGS_OPT, *SUBMIT_OPTS],
                       "[-f] <node>", "Migrate all the primary instance on a node away from it (only for "
                                      "instances of type drbd)"),
    "list-tags": Command(_list_tags, [Args(min=1, max=1)], [], "<node-name>",
                         "List the tags of the given node"),
    "add-tags": Command(_add_tags, [Args(min=1, max=1), Args()], [TAG_SRC_OPT, PRIORITY_OPT, *SUBMIT_OPTS],
                        "<node-name> <tag>...", "Add tags to the given node"),
    "remove-tags": Command(_remove_tags, [Args(min=1, max=1), Args()],
                           [TAG_SRC_OPT, PRIORITY_OPT, *SUBMIT_OPTS], "<node-name> <tag>...",
                           "Remove tags from the given node"),
}

#: Ganeti's other gnt-node commands (list, info and modify are served by Debian's tools for now).
PLANNED = ("list", "info", "modify", "list-fields", "evacuate", "failover", "powercycle",
           "volumes", "list-storage", "modify-storage", "repair-storage", "physical-volumes",
           "restricted-command", "health", "repair-command")


def main() -> int:
    return run_main(COMMANDS, {"show": "info"}, PLANNED)


if __name__ == "__main__":
    raise SystemExit(main())
