"""gnt-cluster master-failover (alias masterfailover): make this master candidate the master.

Ganeti's bootstrap.MasterFailover, with no LUXI at all (cli-needs.md): it
runs on the candidate that is to become the master, from that node's own
copy of config.data (replicated there because it is a candidate), and
works with the old master down:

1. This node must be in the configuration, a master candidate and not
   already the master (OpPrereqError, wrong_state).
2. Unless --no-voting: every node of the configuration is asked
   ``master_node_name`` (legacy node RPC); the most common answer must
   name the configuration's master ("Cluster inconsistent, most nodes did
   not respond." when most nodes gave no answer; "I have a wrong
   configuration, ..." when they name another node). --no-voting asks for
   confirmation, answered by --yes-do-it (without a terminal: no).
3. The master role moves in config.data (this node becomes the master and
   stays a candidate; serial bumped, written durably here), config.data
   goes to the other online candidates (``upload_file_single``) and the
   ssconf values to every online node, this one included
   (``write_ssconf_files``); an unreachable node is a warning.
4. On the old master, when reachable: ``node_deactivate_master_ip`` then
   ``node_stop_master``; failures are warnings ("please disable manually").
5. Here: the queue drain flag is cleared, the cluster IP added
   (``node_activate_master_ip``) and our ganeti-masterd started (with
   ``--no-voting --yes-do-it`` after --no-voting, as Ganeti passes
   no_voting to the daemons). The job queue continues from the job files
   replicated to this candidate.

Our options (not Ganeti's), because our node daemons may not use the default
ports: --noded-port (legacy port; default: services database, else 1811),
--noded-grpc-port (written to $DATA_DIR/node-grpc-ports for every node,
when not 1812, so that the new master reaches the nodes' gRPC doors) and
--master-grpc-port (the new master daemon's gRPC port, 0 disables).
Exit code 0, or 1 when the new master daemon could not be started.
"""

from __future__ import annotations

import base64
import os
import time
import zlib
from collections import Counter
from typing import Any

from masterd.config.model import ConfigData, ConfigError, Node
from masterd.config.ssconf import ssconf_values
from masterd.config.writer import ConfigWriter
from masterd.distribution import config_owner
from masterd.rpc import DEFAULT_GRPC_PORT
from masterd.ssconf import node_grpc_ports_file
from noded.backends.fileio import write_file_atomic
from noded.paths import Paths, RootError
from tools.gnt import node_daemon
from tools.gnt.cluster_init import ECODE_ENVIRON, ECODE_STATE, master_params
from tools.gnt.command import ARGS_NONE, EXIT_SUCCESS, Command, Context, ask_user, option
from tools.gnt.errors import GanetiError
from tools.gnt.output import to_stderr

#: Seconds one node RPC of the failover may take.
CALL_TIMEOUT = 30.0
#: Mode of config.data as the candidates receive it.
CONFIG_MODE = 0o640
#: Ganeti's ED_COMPRESS encoding for upload_file_single.
ED_COMPRESS = 1

NO_VOTING_QUESTION = ("This will perform the failover even if most other nodes are down, or if this node"
                      " is outdated. This is dangerous as it can lead to a non-consistent cluster. Check"
                      " the gnt-cluster(8) man page before proceeding. Continue?")


def state_error(text: str) -> GanetiError:
    return GanetiError("OpPrereqError", text, ECODE_STATE)


def check_new_master(cfg: ConfigData, hostname: str) -> Node:
    """This node, when it may become the master (step 1)."""
    prefix = "This commands must be run on the node where you want the new master to be."
    try:
        node = cfg.node_by_name(hostname)
    except ConfigError:
        raise state_error(f"{prefix} {hostname} is not a valid master candidate") from None
    if node.uuid == cfg.master_node_uuid:
        raise state_error(f"{prefix} {hostname} is already the master")
    if not node.master_candidate:
        raise state_error(f"{prefix} {hostname} is not a valid master candidate")
    return node


def tally(answers: dict[str, str | None]) -> list[tuple[str | None, int]]:
    """(answer, count) pairs, most common first, ties by name (no answer last)."""
    counts = Counter(answers.values())
    return sorted(counts.items(), key=lambda item: (-item[1], item[0] is None, item[0] or ""))


def check_votes(answers: dict[str, str | None], old_master: str) -> None:
    """Step 2's verdict on the gathered `master_node_name` answers."""
    votes = tally(answers)
    if not votes:
        return
    voted, _count = votes[0]
    if voted is None:
        raise state_error("Cluster inconsistent, most nodes did not respond.")
    if voted != old_master:
        raise state_error(f"I have a wrong configuration, I believe the master is {old_master} but the other"
                          f" nodes voted {voted}. Please resync the configuration of this node.")


class Failover:
    """One master failover from this node's configuration (module docstring)."""

    def __init__(self, paths: Paths, opts: Any) -> None:
        self.paths = paths
        self.port = node_daemon.noded_port(paths, opts.noded_port)
        self.opts = opts
        self.warnings: list[str] = []

    def call(self, node: Node, procedure: str, *args: Any) -> Any:
        return node_daemon.call_node(self.paths, node.primary_ip, self.port, procedure, *args,
                                     timeout=CALL_TIMEOUT)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        to_stderr(f"Warning: {text}")

    def gather_votes(self, cfg: ConfigData) -> dict[str, str | None]:
        answers: dict[str, str | None] = {}
        for node in cfg.nodes():
            try:
                answer = self.call(node, "master_node_name")
            except GanetiError:
                answer = None
            answers[node.name] = answer if isinstance(answer, str) else None
        return answers

    def write_grpc_ports(self, cfg: ConfigData) -> None:
        port = self.opts.noded_grpc_port
        if port is None or port == DEFAULT_GRPC_PORT:
            return
        text = "".join(f"{node.name} {port}\n" for node in cfg.nodes())
        write_file_atomic(node_grpc_ports_file(self.paths), text.encode(), mode=0o644)

    def distribute(self, cfg: ConfigData, data: bytes, me: Node) -> None:
        """config.data to the other online candidates, ssconf to every online node (step 3)."""
        user, group = config_owner()
        content = [ED_COMPRESS, base64.b64encode(zlib.compress(data)).decode("ascii")]
        now = time.time()
        values = {key: "\n".join(lines) for key, lines in ssconf_values(cfg).items()}
        for node in cfg.nodes():
            if node.offline:
                continue
            try:
                if node.master_candidate and node.uuid != me.uuid:
                    self.call(node, "upload_file_single", self.paths.virtualize(self.paths.config_file),
                              content, CONFIG_MODE, user, group, now, now)
                self.call(node, "write_ssconf_files", values)
            except GanetiError as err:
                self.warn(f"Could not distribute the configuration to node {node.name}: {_text(err)}")

    def stop_old_master(self, cfg: ConfigData, old: Node) -> None:
        """Step 4: the cluster IP and the master daemon off the old master, when it answers."""
        params = master_params(cfg)
        params["uuid"] = old.uuid
        for procedure, args in (("node_deactivate_master_ip", (params, False)), ("node_stop_master", ())):
            try:
                self.call(old, procedure, *args)
            except GanetiError as err:
                self.warn(f"Could not disable the master role on the old master {old.name}, please disable"
                          f" manually: {_text(err)}")

    def start_here(self, cfg: ConfigData, me: Node, no_voting: bool) -> int:
        """Step 5: drain flag cleared, cluster IP added, master daemon started."""
        drain = os.path.join(self.paths.queue_dir, "drain")
        if os.path.exists(drain):
            os.unlink(drain)
        try:
            self.call(me, "node_activate_master_ip", master_params(cfg), False)
        except GanetiError as err:
            self.warn(f"Could not activate the master IP on the new master {me.name}: {_text(err)}")
        extra = ["--no-voting", "--yes-do-it"] if no_voting else []
        try:
            node_daemon.start_masterd(self.paths, self.opts.master_grpc_port, extra)
        except GanetiError as err:
            self.warn(f"Could not start the master role on the new master {me.name}, please check:"
                      f" {_text(err)}")
            return 1
        return EXIT_SUCCESS

    def run(self) -> int:
        writer = ConfigWriter(self.paths)
        try:
            cfg = writer.load()
        except ConfigError as err:
            raise GanetiError("ConfigurationError", f"Cannot read this node's configuration: {err}") from None
        me = check_new_master(cfg, self.paths.hostname)
        old = cfg.master_node
        no_voting = bool(self.opts.no_voting)
        if not no_voting:
            check_votes(self.gather_votes(cfg), old.name)
        cfg.set_master_node(me.uuid)
        data = writer.commit(cfg)
        self.write_grpc_ports(cfg)
        self.distribute(cfg, data, me)
        self.stop_old_master(cfg, old)
        return self.start_here(cfg, me, no_voting)


def _text(err: GanetiError) -> str:
    return str(err.args[1]) if len(err.args) > 1 else str(err)


def master_failover(ctx: Context, opts: Any, args: list[str]) -> int:
    if opts.no_voting and not opts.yes_do_it and not ask_user(NO_VOTING_QUESTION):
        return 1
    try:
        paths = Paths.from_environ()
    except RootError as err:
        raise GanetiError("OpPrereqError", str(err), ECODE_ENVIRON) from None
    return Failover(paths, opts).run()


FAILOVER_OPTS = [
    option("--no-voting", dest="no_voting", action="store_true", default=False,
           help="Skip node agreement check (dangerous)"),
    option("--yes-do-it", "--ya-rly", dest="yes_do_it", action="store_true", default=False,
           help="Answer --no-voting's question with yes"),
    option("--noded-port", dest="noded_port", type="int", default=None,
           help="(ours) node daemon port (default: services database, else 1811)"),
    option("--noded-grpc-port", dest="noded_grpc_port", type="int", default=None,
           help="(ours) the nodes' gRPC port (default 1812)"),
    option("--master-grpc-port", dest="master_grpc_port", type="int", default=None,
           help="(ours) the new master daemon's gRPC port (default 1813, 0 disables)"),
]

COMMANDS: dict[str, Command] = {
    "master-failover": Command(master_failover, ARGS_NONE, FAILOVER_OPTS, "[--no-voting] [--yes-do-it]",
                               "Makes the current node the master"),
}
