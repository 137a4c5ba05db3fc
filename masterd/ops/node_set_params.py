"""OP_NODE_SET_PARAMS (`gnt-node modify`): a node's role flags and capabilities.

Supported parameters: master_candidate, drained, offline, master_capable,
vm_capable, auto_promote, secondary_ip, ndparams and force. The rules are
Ganeti's LUNodeSetParams: the role flags in masterd.config.roles
(plan_node_change refuses with Ganeti's messages; apply_node_change changes
the configuration); hv_state, disk_state and powered are refused
(OpPrereqError, "wrong_input") until this master supports them.

secondary_ip (`gnt-node modify -s`), Ganeti's checks in its order: an IPv4
address; on a single-homed cluster (the master's secondary equals its
primary) a different address only for the master with force (a warning:
every node will then need one), on a multi-homed cluster the primary address
only for the master with force; instances with internally mirrored (drbd)
disks on the node: refused while the node is offline, else each must be
marked down; an online node must have the address (node_has_ip_address) and,
unless it is the master, answer TCP on the node daemon port there from the
master's secondary address (Ganeti's TcpPing with source; our port is the
cluster's legacy port, masterd.nodecalls.noded_port). Ours in addition: an
address another node already uses is refused, with OP_NODE_ADD's message.
The result gains ``["secondary_ip", ip]`` after the capability flags.

ndparams (`--node-parameters`): merged into the node's own (a value
"default" removes the key: Ganeti's GetUpdatedParams), types forced as
Ganeti's ForceDictType does for NDS_PARAMETER_TYPES (TypeEnforcementError:
unknown key, not a number, not a boolean), exclusive_storage refused (global:
"cluster or group" level). Not in the result, as in Ganeti.

Locks: the node, exclusive (every node when auto_promote may promote others);
REQ_BGL false (instances are not locked for secondary_ip: no instance here
has mirrored disks). Steps, in order, before anything changes:

- a node leaving offline must answer `version` (else OpPrereqError
  "Node X is being de-offlined but fails to report its version: ...");
- each new master candidate (the node, auto-promoted nodes) is asked its
  client certificate digest with node_crypto_tokens (else OpExecError
  "Could not retrieve the node's (uuid U) SSL digest.: ...").

Then the configuration is changed (ConfigManager.change: written, config.data
sent to the online candidates and ssconf, with master_candidates_certs, to
every online node); each new master candidate (the node, auto-promoted
nodes) gets the whole job queue (masterd.ops.node_add.copy_job_queue), and a
node that stopped being a candidate without going offline is told
node_demote_from_mc (a failure is a warning, as in Ganeti).

Result: Ganeti's list of ``[parameter, str(new value)]``, e.g.
``[["master_candidate", "False"]]``, which gnt-node prints as
"Modified node X" and " - master_candidate -> False".
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any, ClassVar

from masterd import rpc as node_rpc
from masterd.config.model import ConfigData, ConfigError, Node
from masterd.config.roles import FlagRequest, RoleChange, RoleError, apply_node_change, plan_node_change
from masterd.confmgr import ConfigManager
from masterd.locking import ALL_SET, Level
from masterd.luxi.protocol import OpExecError, OpPrereqError, TypeEnforcementError
from masterd.nodecalls import noded_port
from masterd.ops.base import LockRequest, Operation
from masterd.ops.node_add import copy_job_queue
from masterd.rpc import NodeRpcClient

#: Ganeti's PROTOCOL_VERSION for 3.0.
PROTOCOL_VERSION = 3000000
#: Parameters this master does not change yet.
_UNSUPPORTED = ("hv_state", "disk_state", "powered")
#: constants.NDS_PARAMETER_TYPES of Ganeti 3.0.
ND_PARAMETER_TYPES = {"cpu_speed": "float", "exclusive_storage": "bool", "oob_program": "string",
                      "ovs": "bool", "ovs_link": "maybe-string", "ovs_name": "maybe-string",
                      "spindle_count": "int", "ssh_port": "int"}
#: constants.NDC_GLOBALS: node parameters only the cluster or a group may set.
ND_GLOBALS = frozenset({"exclusive_storage"})
#: constants.VALUE_DEFAULT: the value that removes a key from the node's own parameters.
VALUE_DEFAULT = "default"
#: constants.DTS_INT_MIRROR: disk types whose secondary traffic uses the secondary IP.
INT_MIRROR_TYPES = ("drbd",)


def force_nd_types(params: dict[str, Any]) -> dict[str, Any]:
    """Ganeti's ForceDictType for node parameters: converted values, or TypeEnforcementError."""
    forced: dict[str, Any] = {}
    for key, value in params.items():
        kind = ND_PARAMETER_TYPES.get(key)
        if kind is None:
            raise TypeEnforcementError(f"Unknown parameter '{key}'")
        if kind in ("string", "maybe-string"):
            if value is None and kind == "maybe-string":
                pass
            elif not isinstance(value, str):
                if value is False:
                    value = ""
                else:
                    raise TypeEnforcementError(f"'{key}' (value {value}) is not a valid string")
        elif kind == "bool":
            if isinstance(value, str) and value:
                if value.lower() not in ("true", "false"):
                    raise TypeEnforcementError(f"'{key}' (value {value}) is not a valid boolean")
                value = value.lower() == "true"
            else:
                value = bool(value)
        else:
            convert = int if kind == "int" else float
            try:
                value = convert(value)
            except (ValueError, TypeError):
                word = "integer" if kind == "int" else "float"
                raise TypeEnforcementError(f"'{key}' (value {value}) is not a valid {word}") from None
        forced[key] = value
    return forced


def updated_params(old: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Ganeti's GetUpdatedParams: `old` with `update` applied, VALUE_DEFAULT removing a key."""
    new = dict(old)
    for key, value in update.items():
        if value == VALUE_DEFAULT:
            new.pop(key, None)
        else:
            new[key] = value
    return new


def _tcp_ping(address: str, port: int, source: str | None, timeout: float = 5.0) -> bool:
    """Ganeti's TcpPing with a source address: whether address:port accepts a TCP connection."""
    try:
        with socket.create_connection((address, port), timeout=timeout,
                                      source_address=(source, 0) if source else None):
            return True
    except OSError:
        return False


class NodeSetParams(Operation):
    op_id: ClassVar[str] = "OP_NODE_SET_PARAMS"
    req_bgl: ClassVar[bool] = False

    def _config(self) -> ConfigManager:
        config = self.ctx.config
        if config is None or not config.present:
            raise OpPrereqError("This master has no cluster configuration (config.data): nodes cannot be"
                                " modified; initialise the cluster with gnt-cluster init", "wrong_state")
        return config

    def _rpc(self) -> NodeRpcClient:
        if self.ctx.node_rpc is None:
            raise OpExecError("This master has no node RPC client")
        return self.ctx.node_rpc

    def _node_name(self, cfg: ConfigData) -> str:
        wanted = self.op.get("node_uuid") or self.op.get("node_name")
        if not wanted:
            raise OpPrereqError("Node name or uuid must be given", "wrong_input")
        try:
            return cfg.lookup_node(str(wanted)).name
        except ConfigError:
            raise OpPrereqError(f"Node '{wanted}' not known", "unknown_entity") from None

    def _request(self) -> FlagRequest:
        for name in _UNSUPPORTED:
            if self.op.get(name) not in (None, {}):
                raise OpPrereqError(f"Changing {name} of a node is not supported by this master yet",
                                    "wrong_input")
        secondary = self.op.get("secondary_ip")
        if secondary:
            try:
                valid = isinstance(ipaddress.ip_address(str(secondary)), ipaddress.IPv4Address)
            except ValueError:
                valid = False
            if not valid:
                raise OpPrereqError(f"Secondary IP ({secondary}) needs to be a valid IPv4 address",
                                    "wrong_input")
        return FlagRequest(master_candidate=self.op.get("master_candidate"), drained=self.op.get("drained"),
                           offline=self.op.get("offline"), master_capable=self.op.get("master_capable"),
                           vm_capable=self.op.get("vm_capable"),
                           auto_promote=bool(self.op.get("auto_promote")),
                           other_changes=bool(secondary) or bool(self.op.get("ndparams")))

    def locks(self) -> list[LockRequest]:
        name = self._node_name(self._config().current)
        request = self._request()
        might_demote = (request.master_candidate is False or request.offline is True
                        or request.drained is True or request.master_capable is False)
        if request.auto_promote and might_demote:
            return [(Level.NODE, ALL_SET, False), (Level.NODE_RES, ALL_SET, False)]
        return [(Level.NODE, [name], False), (Level.NODE_RES, [name], False)]

    async def exec(self) -> Any:
        config = self._config()
        current = config.current
        node = current.node_by_name(self._node_name(current))
        try:
            change = plan_node_change(current, node.uuid, self._request())
        except RoleError as err:
            raise OpPrereqError(str(err), err.code) from None
        if change.version_check:
            await self._check_version(node.name)
        for message in change.warnings:
            await self.ctx.log(f" - WARNING: {message}")
        for message in change.info:
            await self.ctx.log_info(message)
        secondary = str(self.op.get("secondary_ip") or "") or None
        if secondary is not None:
            await self._check_secondary_ip(current, node, secondary)
        ndparams = self._new_ndparams(node) if self.op.get("ndparams") else None
        digests = await self._digests(current, change)
        async with config.change() as cfg:
            try:
                _set_node_params(cfg, node.uuid, secondary, ndparams)
                apply_node_change(cfg, change, digests)
            except ConfigError as err:
                raise OpExecError(str(err)) from None
        if secondary is not None:
            at = sum(1 for param, _ in change.result if param in ("master_capable", "vm_capable"))
            change.result.insert(at, ("secondary_ip", secondary))
        if change.cert_add:  # new master candidates get the whole job queue
            await copy_job_queue(self, [current.node(uuid).name for uuid in change.cert_add])
        if change.demote_rpc:
            failure = (await self._rpc().node_demote_from_mc([node.name]))[node.name]
            if failure is not None:
                await self.ctx.log(f" - WARNING: Node failed to demote itself: {failure}")
        report = config.last_report
        if report is not None:
            for name, messages in sorted(report.failures.items()):
                await self.ctx.log(f" - WARNING: the configuration did not reach node {name}:"
                                   f" {'; '.join(messages)}")
        return [[param, value] for param, value in change.result]

    def _new_ndparams(self, node: Node) -> dict[str, Any]:
        update = dict(self.op.get("ndparams") or {})
        new = force_nd_types(updated_params(node.ndparams, update))
        used_globals = sorted(ND_GLOBALS.intersection(update))
        if used_globals:
            raise OpPrereqError("The following node parameters are global and cannot be customized at"
                                " node level, please modify them at cluster or group level:"
                                f" {', '.join(used_globals)}", "wrong_input")
        return new

    async def _check_secondary_ip(self, cfg: ConfigData, node: Node, secondary: str) -> None:
        """Ganeti's secondary IP checks of LUNodeSetParams.CheckPrereq (module docstring)."""
        master = cfg.master_node
        force = bool(self.op.get("force"))
        single_homed = master.secondary_ip == master.primary_ip
        if single_homed and secondary != node.primary_ip:
            if not (force and node.uuid == master.uuid):
                raise OpPrereqError("Changing the secondary ip on a single-homed cluster requires the"
                                    " --force option to be passed, and the target node to be the master",
                                    "wrong_input")
            await self.ctx.log(" - WARNING: Transitioning from single-homed to multi-homed cluster; all nodes"
                               " will require a secondary IP address")
        elif not single_homed and secondary == node.primary_ip:
            if not (force and node.uuid == master.uuid):
                raise OpPrereqError("Cannot set the secondary IP to be the same as the primary IP on a"
                                    " multi-homed cluster, unless the --force option is passed, and the"
                                    " target node is the master", "wrong_input")
            await self.ctx.log(" - WARNING: Transitioning from multi-homed to single-homed cluster; secondary"
                               " IP addresses will have to be removed")
        for other in cfg.nodes():
            if other.uuid != node.uuid and secondary in (other.primary_ip, other.secondary_ip):
                raise OpPrereqError(f"New node ip address(es) conflict with existing node {other.name}",
                                    "resource_not_unique")
        affected = _mirrored_instances(cfg, node.uuid)
        if node.offline:
            if affected:
                raise OpPrereqError("Cannot change secondary IP address: offline node has instances"
                                    f" ({', '.join(name for name, _ in affected)}) configured to use it",
                                    "wrong_state")
            return
        for name, state in affected:
            if state != "down":
                raise OpPrereqError(f"Instance '{name}' is marked to be {state}, cannot change secondary ip",
                                    "wrong_state")
        has_ip = await node_rpc.call_one(self._rpc(), node.name, "node_has_ip_address", [secondary])
        if has_ip.fail_msg is not None:
            raise OpPrereqError(f"Failure checking secondary ip on node {node.name}: {has_ip.fail_msg}",
                                "environment_error")
        if not has_ip.payload:
            raise OpPrereqError(f"Node claims it doesn't have the secondary ip you gave ({secondary}),"
                                " please fix and re-run this command", "environment_error")
        if node.uuid != master.uuid:
            port = noded_port(self.ctx.paths)
            if not await asyncio.to_thread(_tcp_ping, secondary, port, master.secondary_ip):
                raise OpPrereqError("Node secondary ip not reachable by TCP based ping to node daemon port",
                                    "environment_error")

    async def _check_version(self, name: str) -> None:
        version, failure = (await self._rpc().version([name]))[name]
        if failure is not None:
            raise OpPrereqError(f"Node {name} is being de-offlined but fails to report its version:"
                                f" {failure}", "wrong_state")
        if version != PROTOCOL_VERSION:
            raise OpPrereqError(f"Version mismatch master version {PROTOCOL_VERSION}, node version {version}",
                                "environment_error")

    async def _digests(self, cfg: ConfigData, change: RoleChange) -> dict[str, str]:
        if not change.cert_add:
            return {}
        names = {uuid: cfg.node(uuid).name for uuid in change.cert_add}
        answers = await self._rpc().node_crypto_tokens(list(names.values()))
        digests: dict[str, str] = {}
        for uuid, name in names.items():
            digest, failure = answers[name]
            if digest is None:
                raise OpExecError(f"Could not retrieve the node's (uuid {uuid}) SSL digest.: {failure}")
            digests[uuid] = digest
        return digests


def _mirrored_instances(cfg: ConfigData, node_uuid: str) -> list[tuple[str, str]]:
    """(name, admin_state) of the instances on the node with internally mirrored disks (Ganeti's filter)."""
    disks = cfg.tree.get("disks") or {}
    found = []
    for raw in (cfg.tree.get("instances") or {}).values():
        own = [disks.get(uuid) or {} for uuid in raw.get("disks") or []]
        on_node = (raw.get("primary_node") == node_uuid
                   or any(node_uuid in (d.get("nodes") or []) for d in own))
        if on_node and any(d.get("dev_type") in INT_MIRROR_TYPES for d in own):
            found.append((str(raw.get("name", "")), str(raw.get("admin_state", ""))))
    return found


def _set_node_params(cfg: ConfigData, node_uuid: str, secondary: str | None,
                     ndparams: dict[str, Any] | None) -> None:
    """Set the node's secondary IP and own ndparams (what is given and differs), bumping serials."""
    raw = cfg.tree["nodes"].get(node_uuid)
    if raw is None:
        raise ConfigError(f"Node uuid {node_uuid} not found")
    changed = False
    if secondary is not None and raw.get("secondary_ip") != secondary:
        raw["secondary_ip"] = secondary
        changed = True
    if ndparams is not None and (raw.get("ndparams") or {}) != ndparams:
        raw["ndparams"] = ndparams
        changed = True
    if changed:
        raw["serial_no"] = int(raw.get("serial_no", 0)) + 1
        raw["mtime"] = cfg.now()
        cfg.bump()
