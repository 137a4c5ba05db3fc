"""gnt-node: add and remove (OP_NODE_ADD, OP_NODE_REMOVE), without SSH.

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
$DATA_DIR/node-grpc-ports. Ganeti's other gnt-node commands (list, info,
modify ... served by Debian's tools against our master) answer "not
implemented yet" here.
"""

from __future__ import annotations

import os
from typing import Any

from masterd.config.model import ConfigError, load
from masterd.ssconf import node_grpc_ports
from noded.context import DEFAULT_GRPC_PORT
from noded.paths import Paths, RootError
from tools.gnt import node_daemon, node_prepare
from tools.gnt.cluster_init import resolve
from tools.gnt.command import (
    DRY_RUN_OPT,
    EXIT_FAILURE,
    EXIT_SUCCESS,
    PRIORITY_OPT,
    SUBMIT_OPTS,
    Args,
    Command,
    Context,
    generic_main,
    option,
)
from tools.gnt.errors import ECODE_INVAL, GanetiError
from tools.gnt.jobs import make_opcode, submit_or_send
from tools.gnt.output import to_stderr


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
}

#: Ganeti's other gnt-node commands (list, info and modify are served by Debian's tools for now).
PLANNED = ("list", "info", "modify", "list-fields", "evacuate", "failover", "migrate", "powercycle",
           "volumes", "list-storage", "modify-storage", "repair-storage", "list-tags", "add-tags",
           "remove-tags", "physical-volumes", "restricted-command", "health", "repair-command")


def main() -> int:
    return generic_main(COMMANDS, aliases={"show": "info"}, planned=PLANNED)


if __name__ == "__main__":
    raise SystemExit(main())
