"""OP_INSTANCE_FAILOVER, OP_INSTANCE_MIGRATE and OP_NODE_MIGRATE: an instance moved to another node.

Both instance opcodes follow Ganeti's TLMigrateInstance. The checks first
(CheckPrereq): the instance's disks must all be of a mirrored template
(sharedfile and diskless here; ``file`` is refused with Ganeti's "Instance's
disk layout 'file' does not allow failovers/migrations"); externally mirrored
templates need a target node, else an allocator picks one (the opcode's
iallocator or the cluster's default, else the built-in relocation policy:
the online, undrained, vm_capable node other than the primary with the most
free memory); the target must not be the primary, must be online (Ganeti
leaves this to the node calls; here it is refused up front) and not drained,
must meet its group's instance policy when it is in another group, must have
the memory (node_info, the instance's minmem) unless the instance will not
run there, and must have the bridged NICs' bridges. A migration also needs
``instance_migratable`` on the primary (``allow_failover`` switches to a
failover when it fails, or when the instance is down) and ``instance_info``
for the instance's current memory. Then the hooks (instance-migrate /
instance-failover).

Migration, in Ganeti's node call order: node_info on both nodes (hypervisor
versions), migration_info on the source, blockdev_close on the target,
blockdev_open (shared) on the source and the target, accept_instance on the
target, instance_migrate on the source, instance_get_migration_status on
the source once a second until the transfer is over ("* memory transfer
progress: 42.00 %" every ten seconds), instance_finalize_migration_src on
the source and instance_finalize_migration_dst on the target, then the
configuration (primary node), blockdev_close on the source and blockdev_open
(exclusive) on the target. A failure before the transfer completed aborts
it (finalize with success=false on the target, then the source; disks
closed on the target and opened exclusively on the source again) and fails
the opcode with Ganeti's "Could not migrate instance X: ..." message; the
configuration is not changed.

``cleanup`` (gnt-instance migrate --cleanup, Ganeti's _ExecCleanup) repairs
after a failed migration: instance_list on every online node finds where the
instance runs; on both nodes the migration is aborted; when it runs on the
target (or on one unexpected node) the configuration follows it; then the
disks are closed on the demoted node and opened exclusively on the primary.

Failover: instance_shutdown on the source, blockdev_close on the source,
blockdev_shutdown of the disks on the source, the configuration (primary
node), then, when the instance is marked up, blockdev_assemble on the target
and instance_start there.

The configuration change moves the primary node and, unlike Ganeti (which
leaves them), the ``nodes`` of the instance's externally mirrored disks from
the source to the target: this master derives an instance's disk nodes and
secondaries from them.

OP_NODE_MIGRATE submits one OP_INSTANCE_MIGRATE job per primary instance of
the node (Ganeti's LUNodeMigrate) and returns ``{"jobs": [[true, id], ...]}``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from masterd.config.model import ConfigData
from masterd.hooks import Hooks
from masterd.instances import common, model, placement
from masterd.instances.common import ECODE_ENVIRON, ECODE_INVAL, ECODE_NORES, ECODE_STATE, node_name
from masterd.instances.model import Instance
from masterd.locking import ALL_SET, Level
from masterd.luxi.protocol import OpExecError, OpPrereqError
from masterd.ops.base import LockRequest, Operation
from masterd.ops.instance_create import group_ipolicy, ipolicy_violations
from masterd.rpc import RpcResult

#: constants.DTS_EXT_MIRROR / DTS_INT_MIRROR / DTS_MIRRORED.
DTS_EXT_MIRROR = frozenset({"sharedfile", "diskless", "gluster", "rbd", "blockdev", "ext"})
DTS_INT_MIRROR = frozenset({"drbd"})
DTS_MIRRORED = DTS_EXT_MIRROR | DTS_INT_MIRROR
#: constants.HV_KVM_MIGRATION_ACTIVE_STATUSES, HV_MIGRATION_FAILED_STATUSES.
MIGRATION_ACTIVE = frozenset({"active", "postcopy-active"})
MIGRATION_FAILED = frozenset({"failed", "cancelled"})
POSTCOPY_ACTIVE = "postcopy-active"
MODE_LIVE = "live"
MODE_NONLIVE = "non-live"
#: Seconds between status polls and between progress lines (TLMigrateInstance's).
POLL_INTERVAL = 1.0
FEEDBACK_INTERVAL = 10.0
#: The hypervisors whose migrations Ganeti calls safe whatever the versions (VersionsSafeForMigration).
VERSION_TOLERANT = frozenset({"kvm", "fake"})
BUILTIN = "built-in"


def _all_of(disks: list[dict[str, Any]], types: frozenset[str]) -> bool:
    """Ganeti's utils.AllDiskOfType: no disks counts only when diskless is one of the types."""
    if not disks:
        return model.DT_DISKLESS in types
    return all(d.get("dev_type") in types for d in disks)


def _config(op: Operation) -> ConfigData:
    if op.ctx.config is None:
        raise OpPrereqError("This master has no cluster configuration", ECODE_STATE)
    return op.ctx.config.current


class _MoveInstance(Operation):
    """Ganeti's TLMigrateInstance inside LUInstanceFailover / LUInstanceMigrate."""

    req_bgl: ClassVar[bool] = False
    hpath: ClassVar[str] = ""
    #: True for OP_INSTANCE_FAILOVER.
    is_failover: ClassVar[bool] = False

    # --- locks -------------------------------------------------------------------------------

    def _target_from_op(self, cfg: ConfigData) -> str | None:
        wanted = self.op.get("target_node_uuid") or self.op.get("target_node")
        return common.node_uuid(cfg, str(wanted)) if wanted else None

    def locks(self) -> list[LockRequest]:
        cfg = _config(self)
        inst = model.lookup_instance(cfg, str(self.op.get("instance_name") or ""))
        target = self._target_from_op(cfg)
        disks = model.instance_disks(cfg, inst)
        nodes: Any
        if not disks or any(d.get("dev_type") in DTS_EXT_MIRROR for d in disks):
            nodes = ALL_SET if target is None else [node_name(cfg, inst.primary_node), node_name(cfg, target)]
        else:
            nodes = [node_name(cfg, u) for u in model.instance_nodes(cfg, inst)]
        return [(Level.INSTANCE, [inst.name], False), (Level.NODE, nodes, False),
                (Level.NODE_RES, nodes, False)]

    # --- checks (CheckPrereq) ----------------------------------------------------------------

    async def _prereq(self, cfg: ConfigData) -> None:
        op = self.op
        inst = model.lookup_instance(cfg, str(op.get("instance_name") or ""))
        self.inst = inst
        self.cleanup = bool(op.get("cleanup"))
        self.failover = self.is_failover
        fallback = bool(op.get("allow_failover")) if not self.is_failover else True
        self.ignore_consistency = bool(op.get("ignore_consistency")) if self.is_failover else False
        self.shutdown_timeout = int(op.get("shutdown_timeout", 120)) if self.is_failover else 120
        self.allow_runtime_changes = bool(op.get("allow_runtime_changes", True)) if not self.is_failover \
            else True
        self.live = False
        self.current_mem = 0
        self.tgt_free_mem = 0
        if self.cleanup and self.is_failover:
            raise OpPrereqError("Cleanup is only possible for migrations, not failovers", ECODE_INVAL)

        if not self.cleanup and inst.admin_state != model.ADMIN_UP and not self.failover and fallback:
            await self.ctx.log_info("Instance is marked down or offline, fallback allowed, switching to"
                                    " failover")
            self.failover = True

        disks = model.instance_disks(cfg, inst)
        self.disks = disks
        if not _all_of(disks, DTS_MIRRORED):
            invalid = sorted({str(d.get("dev_type")) for d in disks if d.get("dev_type") not in DTS_MIRRORED})
            raise OpPrereqError(f"Instance's disk layout '{', '.join(invalid)}' does not allow"
                                f" {'failovers' if self.failover else 'migrations'}", ECODE_STATE)
        if not _all_of(disks, DTS_EXT_MIRROR):
            # DRBD: the target is the secondary; this master cannot hold such instances
            types = ", ".join(sorted({str(d.get("dev_type")) for d in disks}))
            raise OpPrereqError(f"Disk template(s) {types} are not supported by this master", ECODE_STATE)

        target = self._target_from_op(cfg)
        iallocator = op.get("iallocator")
        if target is not None and iallocator:
            raise OpPrereqError("Do not specify both, iallocator and node", ECODE_INVAL)
        if target is None:
            target = await self._relocate(cfg, inst, str(iallocator or cfg.cluster.get("default_iallocator")
                                                         or BUILTIN))
        self.target = target
        self.source = inst.primary_node
        tname = node_name(cfg, target)
        if target == inst.primary_node:
            raise OpPrereqError(f"Cannot migrate instance {inst.name} to its primary"
                                f" ({node_name(cfg, inst.primary_node)})", ECODE_STATE)
        common.check_node_online(cfg, target)
        self._check_ipolicy(cfg, inst, target)

        be = model.fill_be(cfg, inst.beparams)
        cluster_hvp = dict((cfg.cluster.get("hvparams") or {}).get(inst.hypervisor) or {})
        if not self.cleanup and (not self.failover or inst.admin_state == model.ADMIN_UP):
            self.tgt_free_mem = await common.check_free_memory(
                self.ctx, cfg, target, f"migrating instance {inst.name}", int(be.get(model.BE_MINMEM) or 0),
                inst.hypervisor)
        else:
            await self.ctx.log_info("Not checking memory on the secondary node as instance will not be"
                                    " started")
        if not self.cleanup and not self.failover and be.get("always_failover"):
            await self.ctx.log_info("Instance configured to always failover; fallback to failover")
            self.failover = True

        await common.check_bridges(self.ctx, cfg, inst.nics, tname)

        if not self.cleanup:
            common.check_node_not_drained(cfg, target)
        if not self.cleanup and not self.failover:
            result = await common.node_call(self.ctx, node_name(cfg, inst.primary_node),
                                            "instance_migratable", [common.inst_dict(self.ctx, cfg, inst)])
            if result.fail_msg is not None:
                if fallback:
                    await self.ctx.log_info("Can't migrate, instance offline, fallback to failover")
                    self.failover = True
                else:
                    raise OpPrereqError(f"Can't migrate, please use failover: {result.fail_msg}", ECODE_STATE)

        if not self.failover:
            live, mode = op.get("live"), op.get("mode")
            if live is not None and mode is not None:
                raise OpPrereqError("Only one of the 'live' and 'mode' parameters are accepted", ECODE_INVAL)
            if live is not None:
                mode = MODE_LIVE if live else MODE_NONLIVE
            elif mode is None:
                mode = model.fill_hv(cfg, inst.hypervisor, inst.os, inst.hvparams).get("migration_mode",
                                                                                        MODE_LIVE)
            self.live = mode == MODE_LIVE
        if not (self.failover or self.cleanup):
            info = await common.node_call(self.ctx, node_name(cfg, inst.primary_node), "instance_info",
                                          [inst.name, inst.hypervisor, cluster_hvp])
            if info.fail_msg is not None:
                raise OpPrereqError(f"Error checking instance on node {node_name(cfg, inst.primary_node)}:"
                                    f" {info.fail_msg}", ECODE_ENVIRON)
            if info.payload:
                self.current_mem = int(info.payload.get("memory") or 0)

    def _check_ipolicy(self, cfg: ConfigData, inst: Instance, target: str) -> None:
        """Ganeti's CheckTargetNodeIPolicy: only a move to another group can violate it."""
        source_group = cfg.node(inst.primary_node).group
        target_group = cfg.node(target).group
        if source_group == target_group:
            return
        be = model.fill_be(cfg, inst.beparams)
        disks = model.instance_disks(cfg, inst)
        violations = ipolicy_violations(
            group_ipolicy(cfg, target), memory=be.get(model.BE_MAXMEM), vcpus=be.get("vcpus"),
            disk_sizes=[int(d.get("size", 0)) for d in disks], nic_count=len(inst.nics),
            spindle_use=be.get("spindle_use"), templates=[str(d.get("dev_type")) for d in disks])
        if not violations:
            return
        message = (f"Instance does not meet target node group's ({target_group}) instance policy:"
                   f" {', '.join(violations)}")
        if not self.op.get("ignore_ipolicy"):
            raise OpPrereqError(message, ECODE_INVAL)
        self.warnings.append(message)

    async def _relocate(self, cfg: ConfigData, inst: Instance, allocator: str) -> str:
        """A new node for the instance (Ganeti's relocation request), by the built-in policy."""
        be = model.fill_be(cfg, inst.beparams)
        needed = int(be.get(model.BE_MINMEM) or 0) if inst.admin_state == model.ADMIN_UP else 0
        uuids = [u for u in placement.candidates(cfg) if u != inst.primary_node]
        hvparams = dict((cfg.cluster.get("hvparams") or {}).get(inst.hypervisor) or {})
        best, reasons = await placement.most_free_memory(self.ctx, cfg, uuids, hypervisor=inst.hypervisor,
                                                         hvparams=hvparams, memory=needed)
        if best is None:
            detail = "; ".join(reasons) if reasons else "no other online, undrained, vm_capable node"
            raise OpPrereqError(f"Can't compute nodes using iallocator '{allocator}': {detail}", ECODE_NORES)
        await self.ctx.log_info("Selected nodes for instance %s via iallocator %s: %s", inst.name, allocator,
                                cfg.node(best).name)
        return best

    # --- hooks -------------------------------------------------------------------------------

    def _hooks_env(self, cfg: ConfigData) -> dict[str, Any]:
        raise NotImplementedError

    def _hooks_nodes(self, cfg: ConfigData) -> tuple[list[str], list[str]]:
        raise NotImplementedError

    # --- the work ----------------------------------------------------------------------------

    async def exec(self) -> Any:
        assert self.ctx.config is not None
        self.warnings: list[str] = []
        cfg = _config(self)
        await self._prereq(cfg)
        for warning in self.warnings:
            await self.ctx.log(f" - WARNING: {warning}")
        pre, post = self._hooks_nodes(cfg)
        hooks = Hooks(self.ctx, self.hpath, "INSTANCE", self.op_id, pre, post,
                      offline=common.offline_names(cfg))
        await hooks.pre(self._hooks_env(cfg))
        if self.failover:
            await self.ctx.log(f"Failover instance {self.inst.name}")
            await self._exec_failover()
        elif self.cleanup:
            await self.ctx.log(f"Migrating instance {self.inst.name}")
            await self._exec_cleanup()
        else:
            await self.ctx.log(f"Migrating instance {self.inst.name}")
            await self._exec_migration()
        cfg = self.ctx.config.current
        self.inst = model.instance(cfg, self.inst.uuid)
        await hooks.post(self._hooks_env(cfg))
        return None

    # node call helpers

    def _name(self, uuid: str) -> str:
        return node_name(_config(self), uuid)

    def _idict(self) -> dict[str, Any]:
        cfg = _config(self)
        return common.inst_dict(self.ctx, cfg, model.instance(cfg, self.inst.uuid))

    def _disks(self) -> list[dict[str, Any]]:
        cfg = _config(self)
        inst = model.instance(cfg, self.inst.uuid)
        return [common.disk_dict(self.ctx, cfg, d, inst) for d in model.instance_disks(cfg, inst)]

    async def _call(self, node_uuid: str, procedure: str, args: list[Any]) -> RpcResult:
        cfg = _config(self)
        node = cfg.node(node_uuid)
        results = await common.nodes_call(self.ctx, [node.name], procedure, args,
                                          offline=[node.name] if node.offline else [])
        return results[node.name]

    async def _close_disks(self, node_uuid: str) -> None:
        """Ganeti's _CloseInstanceDisks."""
        name = self._name(node_uuid)
        await self.ctx.log(f"* closing instance disks on node {name}")
        result = await self._call(node_uuid, "blockdev_close", [self.inst.name, self._disks()])
        if result.fail_msg is not None:
            if result.offline or self.ignore_consistency:
                await self.ctx.log(f" - WARNING: Could not close instance disks on node {name},"
                                   " proceeding anyway")
            else:
                raise OpExecError(f"Cannot close instance disks on node {name}: {result.fail_msg}")

    async def _open_disks(self, node_uuid: str, exclusive: bool) -> None:
        """Ganeti's _OpenInstanceDisks."""
        name = self._name(node_uuid)
        mode = "in exclusive mode" if exclusive else "in shared mode"
        await self.ctx.log(f"* opening instance disks on node {name} {mode}")
        result = await self._call(node_uuid, "blockdev_open", [self.inst.name, self._disks(), exclusive])
        result.raise_on_fail("Cannot open instance disks")

    async def _set_primary(self, target: str) -> None:
        """The instance's primary node (and its externally mirrored disks' nodes) becomes `target`."""
        assert self.ctx.config is not None
        source = self.inst.primary_node
        async with self.ctx.config.change() as cfg:
            inst = model.instance(cfg, self.inst.uuid)
            for disk in model.instance_disks(cfg, inst):
                nodes = list(disk.get("nodes") or [])
                if disk.get("dev_type") in DTS_EXT_MIRROR and source in nodes:
                    moved = list(dict.fromkeys(target if n == source else n for n in nodes))
                    model.set_disk(cfg, str(disk["uuid"]), nodes=moved)
            model.set_instance(cfg, inst.uuid, primary_node=target)
        self.inst = model.instance(self.ctx.config.current, self.inst.uuid)

    # migration

    async def _check_versions(self) -> None:
        cfg = _config(self)
        hvparams = dict((cfg.cluster.get("hvparams") or {}).get(self.inst.hypervisor) or {})
        names = [self._name(self.source), self._name(self.target)]
        results = await common.nodes_call(self.ctx, names, "node_info",
                                          [None, [[self.inst.hypervisor, hvparams]]])
        infos = []
        for name in names:
            payload = results[name].raise_on_fail("Unable to retrieve node information")
            infos.append(([*list(payload or []), None, None, None][2] or [{}])[0] or {})
        src, dst = (info.get("hv_version") for info in infos)
        if src is None or dst is None or list(src) == list(dst):
            return
        src_v, dst_v = tuple(src), tuple(dst)
        await self.ctx.log(f"* warning: hypervisor version mismatch between source ({src_v}) and"
                           f" target ({dst_v}) node")
        if self.inst.hypervisor in VERSION_TOLERANT:
            await self.ctx.log(f"  migrating from hypervisor version {src_v} to {dst_v} should be safe")
            return
        await self.ctx.log(f"  migrating from hypervisor version {src_v} to {dst_v} is likely unsupported")
        if self.op.get("ignore_hvversions"):
            await self.ctx.log("  continuing anyway (told to ignore version mismatch)")
            return
        raise OpExecError(f"Unsupported migration between hypervisor versions ({src_v} to {dst_v})")

    async def _abort_migration(self, info: Any) -> list[str]:
        """Ganeti's _AbortMigration: finalize with failure on the target, then the source; the failures."""
        failures = []
        dst = await self._call(self.target, "instance_finalize_migration_dst", [self._idict(), info, False])
        if dst.fail_msg is not None:
            failures.append(dst.fail_msg)
            await self.ctx.log(f" - WARNING: Aborting migration failed on target node"
                               f" {self._name(self.target)}: {dst.fail_msg}")
        src = await self._call(self.source, "instance_finalize_migration_src",
                               [self._idict(), False, self.live])
        if src.fail_msg is not None:
            failures.append(src.fail_msg)
            await self.ctx.log(f" - WARNING: Aborting migration failed on source node"
                               f" {self._name(self.source)}: {src.fail_msg}")
        return failures

    async def _revert_disk_status(self) -> None:
        """Ganeti's _RevertDiskStatus for externally mirrored disks (failures become warnings)."""
        try:
            await self._close_disks(self.target)
            await self._open_disks(self.source, True)
        except OpExecError as err:
            await self.ctx.log(f" - WARNING: Migration failed and I can't reconnect the drives, please try to"
                               f" recover the instance manually; error '{err}'")

    async def _fail_migration(self, info: Any, what: str, message: str) -> None:
        await self.ctx.log(f"{what} failed, aborting")
        await self._abort_migration(info)
        await self._revert_disk_status()
        raise OpExecError(message)

    async def _exec_migration(self) -> None:
        inst = self.inst
        tname = self._name(self.target)
        await self._check_versions()
        await self.ctx.log("* checking disk consistency between source and target")
        if self.current_mem > self.tgt_free_mem:
            if not self.allow_runtime_changes:
                raise OpExecError(f"Memory ballooning not allowed and not enough free memory to fit instance"
                                  f" {inst.name} on target node {tname} (have {self.tgt_free_mem}MB, need"
                                  f" {self.current_mem}MB)")
            await self.ctx.log(f"* setting instance memory to {self.tgt_free_mem}")
            result = await self._call(self.source, "instance_balloon_memory",
                                      [self._idict(), self.tgt_free_mem])
            result.raise_on_fail("Cannot modify instance runtime memory")

        result = await self._call(self.source, "migration_info", [self._idict()])
        if result.fail_msg is not None:
            raise OpExecError(f"Failed fetching source migration information from {self._name(self.source)}:"
                              f" {result.fail_msg}")
        info = result.payload
        await self._close_disks(self.target)
        await self._open_disks(self.source, False)
        await self._open_disks(self.target, False)

        cfg = _config(self)
        target_ip = cfg.node(self.target).secondary_ip
        await self.ctx.log(f"* preparing {tname} to accept the instance")
        result = await self._call(self.target, "accept_instance", [self._idict(), info, target_ip])
        if result.fail_msg is not None:
            await self._fail_migration(info, "Pre-migration",
                                       f"Could not pre-migrate instance {inst.name}: {result.fail_msg}")

        await self.ctx.log(f"* migrating instance to {tname}")
        result = await self._call(self.source, "instance_migrate",
                                  [cfg.cluster_name, self._idict(), target_ip, self.live])
        if result.fail_msg is not None:
            await self._fail_migration(info, "Migration",
                                       f"Could not migrate instance {inst.name}: {result.fail_msg}")

        await self.ctx.log("* starting memory transfer")
        last_feedback = time.monotonic()
        while True:
            result = await self._call(self.source, "instance_get_migration_status", [self._idict()])
            status = result.payload if isinstance(result.payload, dict) else {}
            if result.fail_msg is not None or status.get("status") in MIGRATION_FAILED:
                why = result.fail_msg or "hypervisor returned failure"
                await self._fail_migration(info, "Migration",
                                           f"Could not migrate instance {inst.name}: {why}")
            if status.get("postcopy_status") == POSTCOPY_ACTIVE:
                await self.ctx.log("* memory transfer has switched to postcopy")
            if status.get("status") not in MIGRATION_ACTIVE:
                await self.ctx.log("* memory transfer complete")
                break
            transferred, total = status.get("transferred_ram"), status.get("total_ram")
            if time.monotonic() - last_feedback > FEEDBACK_INTERVAL and transferred is not None and total:
                progress = 100.0 * float(transferred) / float(total)
                await self.ctx.log(f"* memory transfer progress: {progress:.2f} %")
                last_feedback = time.monotonic()
            await asyncio.sleep(POLL_INTERVAL)

        src = await self._call(self.source, "instance_finalize_migration_src",
                               [self._idict(), True, self.live])
        dst = await self._call(self.target, "instance_finalize_migration_dst", [self._idict(), info, True])
        errors = [f"{self._name(n)}: {r.fail_msg}" for n, r in ((self.source, src), (self.target, dst))
                  if r.fail_msg is not None]
        if errors:
            raise OpExecError(f"Could not finalize instance migration: {' '.join(errors)}")

        await self._set_primary(self.target)
        await self._close_disks(self.source)
        await self._open_disks(self.target, True)
        await self.ctx.log("* done")

    # cleanup after a failed migration

    async def _find_instance(self) -> list[str]:
        """Ganeti's _FindInstanceLocations: the online nodes whose hypervisor runs the instance."""
        await self.ctx.log("* checking where the instance actually runs (if this hangs, the hypervisor"
                           " might be in a bad state)")
        cfg = _config(self)
        online = {n.name: n.uuid for n in cfg.nodes() if not n.offline}
        results = await common.nodes_call(self.ctx, list(online), "instance_list",
                                          [[self.inst.hypervisor], dict(cfg.cluster.get("hvparams") or {})])
        name = self.inst.name
        variants = {name, f"migrating-{name}", f"{name}--incoming", f"{name}--migratedaway"}
        found = []
        for node, result in results.items():
            listed = result.raise_on_fail("Can't contact node")
            if variants & set(listed or []):
                found.append(online[node])
        await self.ctx.log(f"* instance running on: {','.join(self._name(u) for u in found)}")
        return found

    async def _exec_cleanup(self) -> None:
        """Ganeti's _ExecCleanup for externally mirrored disks."""
        locations = await self._find_instance()
        on_source, on_target = self.source in locations, self.target in locations
        if on_source and on_target:
            await self.ctx.log("Trying to cleanup after failed migration")
            result = await self._call(self.source, "migration_info", [self._idict()])
            if result.fail_msg is not None:
                raise OpExecError(f"Failed fetching source migration information from"
                                  f" {self._name(self.source)}: {result.fail_msg}")
            failures = await self._abort_migration(result.payload)
            if failures:
                raise OpExecError(f"Instance migration cleanup failed: {','.join(failures)}")
            locations = await self._find_instance()
            on_source, on_target = self.source in locations, self.target in locations
        if on_source and on_target:
            raise OpExecError("Instance seems to be running on two nodes, or the hypervisor is confused;"
                              " you will have to ensure manually that it runs only on one and restart this"
                              " operation")
        if not (on_source or on_target):
            if len(locations) != 1:
                raise OpExecError("Instance does not seem to be running at all; in this case it's safer to"
                                  " repair by running 'gnt-instance stop' to ensure disk shutdown, and then"
                                  " restarting it")
            self.target = locations[0]
            await self.ctx.log(f"* instance running on unexpected node ({self._name(self.target)}),"
                               " updating as the new secondary")
            on_target = True
        if on_target:
            await self.ctx.log(f"* instance running on secondary node ({self._name(self.target)}),"
                               " updating config")
            await self._set_primary(self.target)
            demoted = self.source
        else:
            await self.ctx.log(f"* instance confirmed to be running on its primary node"
                               f" ({self._name(self.source)})")
            demoted = self.target
        await self._close_disks(demoted)
        await self._open_disks(self.inst.primary_node, True)
        await self.ctx.log("* done")

    # failover

    async def _exec_failover(self) -> None:
        cfg = _config(self)
        inst = self.inst
        source = self.source
        primary = cfg.node(source)
        sname = primary.name
        tname = self._name(self.target)
        if inst.disks_active:
            # Ganeti's CheckDiskConsistency asks nothing of a secondary for non-DRBD disks
            await self.ctx.log("* checking disk consistency between source and target")
        else:
            await self.ctx.log("* not checking disk consistency as instance is not running")

        await self.ctx.log("* shutting down instance on source node")
        result = await self._call(source, "instance_shutdown",
                                  [self._idict(), self.shutdown_timeout, common.reason(self.op)])
        if result.fail_msg is not None:
            if self.ignore_consistency or primary.offline:
                await self.ctx.log(f" - WARNING: Could not shutdown instance {inst.name} on node {sname},"
                                   f" proceeding anyway; please make sure node {sname} is down;"
                                   f" error details: {result.fail_msg}")
            else:
                raise OpExecError(f"Could not shutdown instance {inst.name} on node {sname}:"
                                  f" {result.fail_msg}")

        if model.disk_template(cfg, inst) in DTS_EXT_MIRROR:
            await self._close_disks(source)

        await self.ctx.log("* deactivating the instance's disks on source node")
        if not await common.shutdown_disks(self.ctx, inst, ignore_primary=True):
            raise OpExecError("Can't shut down the instance's disks")

        await self._set_primary(self.target)
        if self.inst.admin_state != model.ADMIN_UP:
            return
        await self.ctx.log(f"* activating the instance's disks on target node {tname}")
        try:
            self.inst = await common.assemble_disks(self.ctx, self.inst)
        except OpExecError:
            raise OpExecError("Can't activate the instance's disks") from None
        await self.ctx.log(f"* starting the instance on the target node {tname}")
        cfg = _config(self)
        idict = common.inst_dict(self.ctx, cfg, self.inst)
        result = await common.node_call(self.ctx, tname, "instance_start",
                                        [idict, False, common.reason(self.op)])
        if result.fail_msg is not None:
            await common.shutdown_disks(self.ctx, self.inst)
            raise OpExecError(f"Could not start instance {self.inst.name} on node {tname}: {result.fail_msg}")


class InstanceFailover(_MoveInstance):
    op_id = "OP_INSTANCE_FAILOVER"
    hpath = "instance-failover"
    is_failover = True

    def _hooks_env(self, cfg: ConfigData) -> dict[str, Any]:
        env: dict[str, Any] = {
            "IGNORE_CONSISTENCY": bool(self.op.get("ignore_consistency")),
            "SHUTDOWN_TIMEOUT": self.op.get("shutdown_timeout", 120),
            "OLD_PRIMARY": node_name(cfg, self.source), "NEW_PRIMARY": node_name(cfg, self.target),
            "FAILOVER_CLEANUP": bool(self.op.get("cleanup")), "OLD_SECONDARY": "", "NEW_SECONDARY": ""}
        env.update(common.instance_hook_env(cfg, self.inst))
        return env

    def _hooks_nodes(self, cfg: ConfigData) -> tuple[list[str], list[str]]:
        nodes = [cfg.master_node.name]
        nodes += [node_name(cfg, u) for u in model.instance_secondaries(cfg, self.inst)]
        nodes.append(node_name(cfg, self.target))
        return nodes, [*nodes, node_name(cfg, self.source)]


class InstanceMigrate(_MoveInstance):
    op_id = "OP_INSTANCE_MIGRATE"
    hpath = "instance-migrate"
    is_failover = False

    def _hooks_env(self, cfg: ConfigData) -> dict[str, Any]:
        env = common.instance_hook_env(cfg, self.inst)
        env.update({"MIGRATE_LIVE": self.live, "MIGRATE_CLEANUP": self.cleanup,
                    "OLD_PRIMARY": node_name(cfg, self.source), "NEW_PRIMARY": node_name(cfg, self.target),
                    "ALLOW_RUNTIME_CHANGES": bool(self.op.get("allow_runtime_changes", True)),
                    "OLD_SECONDARY": "", "NEW_SECONDARY": ""})
        return env

    def _hooks_nodes(self, cfg: ConfigData) -> tuple[list[str], list[str]]:
        nodes = [cfg.master_node.name, node_name(cfg, self.source)]
        nodes += [node_name(cfg, u) for u in model.instance_secondaries(cfg, self.inst)]
        nodes.append(node_name(cfg, self.target))
        return nodes, nodes


class NodeMigrate(Operation):
    """OP_NODE_MIGRATE: one OP_INSTANCE_MIGRATE job per primary instance of the node (LUNodeMigrate)."""

    op_id: ClassVar[str] = "OP_NODE_MIGRATE"
    req_bgl: ClassVar[bool] = False

    def _node(self, cfg: ConfigData) -> str:
        return common.node_uuid(cfg, str(self.op.get("node_uuid") or self.op.get("node_name") or ""))

    def locks(self) -> list[LockRequest]:
        cfg = _config(self)
        return [(Level.NODE, [node_name(cfg, self._node(cfg))], True)]

    async def exec(self) -> Any:
        cfg = _config(self)
        uuid = self._node(cfg)
        name = node_name(cfg, uuid)
        if self.ctx.submit_jobs is None:
            raise OpExecError("This master's engine cannot submit jobs from an opcode")
        master = cfg.master_node.name
        hooks = Hooks(self.ctx, "node-migrate", "NODE", self.op_id, [master], [master],
                      offline=common.offline_names(cfg))
        env = {"NODE_NAME": name, "ALLOW_RUNTIME_CHANGES": bool(self.op.get("allow_runtime_changes", True))}
        await hooks.pre(env)
        instances = sorted(inst.name for inst in model.instances(cfg) if inst.primary_node == uuid)
        jobs = [[{"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": inst, "mode": self.op.get("mode"),
                  "live": self.op.get("live"), "iallocator": self.op.get("iallocator"),
                  "target_node": self.op.get("target_node"),
                  "allow_runtime_changes": bool(self.op.get("allow_runtime_changes", True)),
                  "ignore_ipolicy": bool(self.op.get("ignore_ipolicy")),
                  "reason": list(self.op.get("reason") or []), "priority": self.op.get("priority", 0)}]
                for inst in instances]
        submitted = await self.ctx.submit_jobs(jobs) if jobs else []
        await hooks.post(env)
        return {"jobs": submitted}
