"""OP_NODE_ADD and OP_NODE_REMOVE (`gnt-node add`, `gnt-node remove`): Ganeti's LUNodeAdd / LUNodeRemove.

OP_NODE_ADD expects a node that is already prepared: its node daemon serves
the cluster certificate ($DATA_DIR/server.pem) and accepts the master's
client certificate (its ssconf_master_candidates_certs). Ganeti prepares it
over SSH (bootstrap.SetupNodeDaemon); we never use SSH: our `gnt-node add
--node-root` prepares a node living on this machine (tools/gnt/gnt_node.py).
Checks, in Ganeti's order and with its messages:

- the name resolves (the master root's etc/hosts when a root is set, else
  the resolver), unless `primary_ip` is given;
- the secondary IP (default: the primary) is IPv4;
- the name is not in the configuration (no --readd: `readd` is refused),
  and neither address is any existing node's primary or secondary address;
- the master and the new node are both single- or both dual-homed;
- the node daemon answers TCP on its port (the master's services port:
  every node of a cluster uses the same legacy port) and `version` answers
  3000000 over TLS with the cluster certificate (a node with a different
  certificate fails here). No node_verify_light call: Ganeti asks one at add
  time only for the LVM volume group, which we do not support.

Exec: the node joins the group `group` (default: the default group), flags
master_capable / vm_capable (default true); it becomes a master candidate
when the pool wants one more (masterd.config.roles.should_self_promote),
and then the digest of its client.pem (node_crypto_tokens) goes into
cluster.candidate_certs. The ConfigManager writes and distributes the new
configuration (config.data to the candidates, ssconf to every online node,
the new one included). A new candidate then gets the whole job queue
(`copy_job_queue`: masterd.replication.upload_queue; failures are
warnings, as Ganeti only logs them). Ganeti's NV_NODELIST check from the master (an SSH
test) is not made. Result: None.

OP_NODE_REMOVE: refuses an unknown node, the master ("failover to another
node is required") and a node holding instances; removes the node from the
configuration (and its certificate digest), promotes candidates to keep the
pool size (their digests fetched as above; they get the job queue), then asks the removed node to
leave (node_leave_cluster: it removes its cluster files and stops its node
daemon); a failure there is a warning, as in Ganeti. Result: None.

Node calls made here use the legacy JSON door (as Ganeti's DnsOnlyRunner),
through masterd.nodecalls.call_node in a thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any, ClassVar

from masterd.config.model import ConfigData, ConfigError, Node
from masterd.config.roles import pool_promotions, should_self_promote
from masterd.confmgr import ConfigManager
from masterd.locking import ALL_SET, Level
from masterd.luxi.protocol import OpExecError, OpPrereqError
from masterd.nodecalls import NodeCallError, ResolveError, call_node, noded_port, resolve, tcp_ping
from masterd.ops.base import LockRequest, Operation
from masterd.replication import upload_queue

#: constants.PROTOCOL_VERSION of Ganeti 3.0.
PROTOCOL_VERSION = 3000000
ECODE_INVAL = "wrong_input"
ECODE_STATE = "wrong_state"
ECODE_ENVIRON = "environment_error"
ECODE_EXISTS = "already_exists"
ECODE_NOENT = "unknown_entity"
ECODE_NOTUNIQUE = "resource_not_unique"
ECODE_RESOLVER = "resolver_error"


def _config(op: Operation) -> ConfigManager:
    config = op.ctx.config
    if config is None or not config.present:
        raise OpPrereqError("This master has no cluster configuration (config.data): initialise the"
                            " cluster with gnt-cluster init", ECODE_STATE)
    return config


async def call_legacy(op: Operation, address: str, procedure: str, *args: Any) -> Any:
    """One legacy call to the node daemon at `address` (NodeCallError when it fails)."""
    paths = op.ctx.paths
    return await asyncio.to_thread(call_node, paths, address, noded_port(paths), procedure, *args,
                                   timeout=30.0)


async def client_cert_digest(op: Operation, address: str, name: str) -> str:
    """The SHA1 digest of the node's client.pem (node_crypto_tokens, Ganeti's GetClientCertDigest)."""
    try:
        tokens = await call_legacy(op, address, "node_crypto_tokens", [["ssl", "get", {}]])
    except NodeCallError as err:
        raise OpExecError(f"Could not retrieve the client certificate digest of node {name}:"
                          f" {err}") from None
    for token in tokens if isinstance(tokens, list) else []:
        if isinstance(token, list) and len(token) == 2 and token[0] == "ssl" and isinstance(token[1], str):
            return token[1]
    raise OpExecError(f"Node {name} answered node_crypto_tokens with {tokens!r}: no ssl digest")


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


class NodeAdd(Operation):
    op_id: ClassVar[str] = "OP_NODE_ADD"
    req_bgl: ClassVar[bool] = True

    def locks(self) -> list[LockRequest]:
        return [(Level.NODE_ALLOC, ALL_SET, False), (Level.NODE, ALL_SET, False)]

    def _address(self, name: str) -> str:
        given = self.op.get("primary_ip")
        if given:
            return str(given)
        try:
            return resolve(self.ctx.paths, name)
        except ResolveError as err:
            raise OpPrereqError(str(err), ECODE_RESOLVER) from None

    def _check_unique(self, cfg: ConfigData, name: str, primary: str, secondary: str) -> None:
        if any(node.name == name for node in cfg.nodes()):
            raise OpPrereqError(f"Node {name} is already in the configuration", ECODE_EXISTS)
        for node in cfg.nodes():
            if {node.primary_ip, node.secondary_ip} & {primary, secondary}:
                raise OpPrereqError(f"New node ip address(es) conflict with existing node {node.name}",
                                    ECODE_NOTUNIQUE)
        master = cfg.master_node
        if (master.secondary_ip == master.primary_ip) != (secondary == primary):
            if master.secondary_ip == master.primary_ip:
                raise OpPrereqError("The master has no secondary ip but the new node has one", ECODE_INVAL)
            raise OpPrereqError("The master has a secondary ip but the new node doesn't have one",
                                ECODE_INVAL)

    def _group(self, cfg: ConfigData) -> str:
        wanted = self.op.get("group")
        if not wanted:
            return cfg.default_group_uuid()
        for group in cfg.groups():
            if wanted in (group.name, group.uuid):
                return group.uuid
        raise OpPrereqError(f"Node group '{wanted}' not found", ECODE_NOENT)

    async def _check_daemon(self, name: str, address: str) -> None:
        port = noded_port(self.ctx.paths)
        if not await asyncio.to_thread(tcp_ping, address, port):
            raise OpPrereqError("Node not reachable by ping", ECODE_ENVIRON)
        try:
            version = await call_legacy(self, address, "version")
        except NodeCallError as err:
            raise OpPrereqError(f"Can't get version information from node {name}: {err}",
                                ECODE_ENVIRON) from None
        if version != PROTOCOL_VERSION:
            raise OpPrereqError(f"Version mismatch master version {PROTOCOL_VERSION}, node version {version}",
                                ECODE_ENVIRON)

    async def exec(self) -> Any:
        config = _config(self)
        if self.op.get("readd"):
            raise OpPrereqError("Re-adding a node (--readd) is not supported by this master yet", ECODE_INVAL)
        name = str(self.op["node_name"])
        primary = self._address(name)
        secondary = str(self.op.get("secondary_ip") or primary)
        if not _is_ipv4(secondary):
            raise OpPrereqError(f"Secondary IP ({secondary}) needs to be a valid IPv4 address", ECODE_INVAL)
        cfg = config.current
        self._check_unique(cfg, name, primary, secondary)
        group = self._group(cfg)
        master_capable = self.op.get("master_capable") is not False
        vm_capable = self.op.get("vm_capable") is not False
        await self._check_daemon(name, primary)
        candidate = master_capable and should_self_promote(cfg)
        digest = await client_cert_digest(self, primary, name) if candidate else None
        if candidate:
            await self.ctx.log_info("Node will be a master candidate")
        try:
            async with config.change() as new:
                node = new.add_node(name, primary, secondary_ip=secondary, group_uuid=group,
                                    master_candidate=candidate, master_capable=master_capable,
                                    vm_capable=vm_capable)
                if digest is not None:
                    new.set_candidate_cert(node.uuid, digest)
        except ConfigError as err:
            raise OpExecError(str(err)) from None
        await _report_distribution(self)
        if candidate:
            await copy_job_queue(self, [name])
        return None


async def copy_job_queue(op: Operation, names: list[str]) -> None:
    """Give new master candidates the whole job queue (masterd.replication.upload_queue); warn on failure."""
    rpc = op.ctx.node_rpc
    if rpc is None:
        await op.ctx.log(f"Warning: this master has no node RPC client: the job queue was not copied to"
                         f" {', '.join(names)}")
        return
    for report in await asyncio.gather(*(upload_queue(op.ctx.paths, rpc, name) for name in names)):
        if not report.complete:
            await op.ctx.log(f"Warning: copying the job queue to node {report.node} did not finish in time;"
                             " it goes on in the background")
        elif report.failed:
            await op.ctx.log(f"Warning: copying the job queue to node {report.node}: {report.failed}"
                             " operation(s) failed (see the master's log); its copy of the queue is"
                             " incomplete")


async def _report_distribution(op: Operation) -> None:
    config = op.ctx.config
    report = config.last_report if config is not None else None
    if report is not None:
        for node, messages in sorted(report.failures.items()):
            await op.ctx.log(f"Warning: the configuration did not reach node {node}: {'; '.join(messages)}")


class NodeRemove(Operation):
    op_id: ClassVar[str] = "OP_NODE_REMOVE"
    req_bgl: ClassVar[bool] = True

    def locks(self) -> list[LockRequest]:
        return [(Level.NODE_ALLOC, ALL_SET, False), (Level.NODE, ALL_SET, False)]

    def _node(self, cfg: ConfigData) -> Node:
        wanted = self.op.get("node_uuid") or self.op["node_name"]
        try:
            return cfg.lookup_node(str(wanted))
        except ConfigError:
            raise OpPrereqError(f"Node '{wanted}' not known", ECODE_NOENT) from None

    async def exec(self) -> Any:
        config = _config(self)
        cfg = config.current
        node = self._node(cfg)
        if node.uuid == cfg.master_node_uuid:
            raise OpPrereqError("Node is the master node, failover to another node is required", ECODE_INVAL)
        primary, secondary = cfg.node_instances(node.uuid)
        if primary or secondary:
            raise OpPrereqError(f"Instance {(primary + secondary)[0]} is still running on the node,"
                                " please remove first", ECODE_INVAL)
        remaining = [n for n in cfg.nodes() if n.uuid != node.uuid]
        promote = pool_promotions(remaining, cfg.candidate_pool_size) if node.master_candidate else []
        digests = {uuid: await client_cert_digest(self, cfg.node(uuid).primary_ip, cfg.node(uuid).name)
                   for uuid in promote}
        try:
            async with config.change() as new:
                new.remove_node(node.uuid)
                for uuid, digest in digests.items():
                    new.set_node_flags(uuid, master_candidate=True)
                    new.set_candidate_cert(uuid, digest)
        except ConfigError as err:
            raise OpExecError(str(err)) from None
        for uuid in promote:
            await self.ctx.log_info("Promoted node %s to master candidate", cfg.node(uuid).name)
        await _report_distribution(self)
        if promote:
            await copy_job_queue(self, [cfg.node(uuid).name for uuid in promote])
        try:
            await call_legacy(self, node.primary_ip, "node_leave_cluster", False)
        except NodeCallError as err:
            await self.ctx.log(f"Warning: Errors encountered on the remote node while leaving the cluster:"
                               f" {err}")
        return None
