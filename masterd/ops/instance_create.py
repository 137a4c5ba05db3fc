"""OP_INSTANCE_CREATE and OP_INSTANCE_REMOVE: an instance made on its primary node and recorded, or undone.

Create, in Ganeti's order (rpc-trace.md): the checks that need no node
(name resolution and the IP check, duplicate names, enabled hypervisor and
disk template, NICs, the instance policy of the node's group, the target
node online, not drained, vm_capable), then on the primary
hypervisor_validate_params, os_validate, bridges_exist (bridged NICs
only), node_info (free memory when the instance is to start, free space of
the file storage directory), the pre hooks, file_storage_dir_create and
blockdev_create for each disk, the instance added to the configuration
(admin state down), the disks' sync status, instance_os_add (unless
--no-install), and when starting: admin state up and instance_start; then
the post hooks. The result is the list of the instance's nodes.

A failure after the first disk was created undoes everything the job did
(disks, the storage directory, the configuration entry), so a failed
create leaves nothing behind; the error names the step and the node. A
node that cannot be reached during that clean-up (its node daemon killed
and restarting) is tried again for up to a minute.

Without a target node (no ``pnode``), the node is chosen by
masterd.instances.placement (the iallocator when one is given or the
cluster has a default, else the built-in policy).

Remove: pre hooks, instance_shutdown, blockdev_remove of every disk,
file_storage_dir_remove, the configuration entry, post hooks;
``ignore_failures`` turns node failures into warnings.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from masterd import nodecalls
from masterd.config.model import ConfigData
from masterd.instances import common, model
from masterd.instances.common import ECODE_EXISTS, ECODE_INVAL, ECODE_NORES, ECODE_STATE, node_name
from masterd.instances.placement import choose_node
from masterd.locking import ALL_SET, Level
from masterd.luxi.protocol import OpExecError, OpPrereqError
from masterd.ops.base import LockRequest, Operation
from masterd.rpc import RpcResult

ECODE_NOTUNIQUE = "resource_not_unique"
ECODE_RESOLVER = "resolver_error"
VALUE_AUTO = "auto"
VALUE_GENERATE = "generate"
VALUE_NONE = "none"
NIC_MODE_ROUTED = "routed"
NIC_MODE_BRIDGED = "bridged"
#: The port Ganeti's IP check pings (the node daemon's).
IP_CHECK_PORT = 1811
#: Seconds the undo of a failed create keeps trying a node that cannot be reached, and the pause between.
CLEANUP_PATIENCE = 60.0
CLEANUP_RETRY_INTERVAL = 1.0
#: Instance policy spec names (constants.ISPEC_*).
ISPECS = ("memory-size", "cpu-count", "disk-count", "disk-size", "nic-count", "spindle-use")


def format_unit(mib: int) -> str:
    """Ganeti's FormatUnit(value, 'h') for MiB values: 100M, 1.0G, 1.5T."""
    if mib < 1024:
        return f"{mib}M"
    if mib < 1024 * 1024:
        return f"{mib / 1024:0.1f}G"
    return f"{mib / 1024 / 1024:0.1f}T"


def group_ipolicy(cfg: ConfigData, node_uuid: str) -> dict[str, Any]:
    """The instance policy of the node's group: the cluster's, then the group's own values."""
    policy = dict(cfg.cluster.get("ipolicy") or {})
    group_uuid = cfg.node(node_uuid).group
    policy.update((cfg.tree["nodegroups"].get(group_uuid) or {}).get("ipolicy") or {})
    return policy


def _minmax_errors(minmax: dict[str, Any], tests: list[tuple[str, str, Any]]) -> list[str]:
    errors = []
    for name, qualifier, value in tests:
        if value is None:
            continue
        high = minmax.get("max", {}).get(name, value)
        low = minmax.get("min", {}).get(name, value)
        if value > high or low > value:
            full = f"{name}/{qualifier}" if qualifier else name
            errors.append(f"{full} value {value} is not in range [{low}, {high}]")
    return errors


def ipolicy_violations(policy: dict[str, Any], *, memory: int | None, vcpus: int | None,
                       disk_sizes: list[int], nic_count: int, spindle_use: int | None,
                       templates: list[str]) -> list[str]:
    """Ganeti's ComputeIPolicySpecViolation (messages as Ganeti words them)."""
    tests: list[tuple[str, str, Any]] = [("memory-size", "", memory), ("cpu-count", "", vcpus),
                                         ("nic-count", "", nic_count), ("spindle-use", "", spindle_use)]
    tests += [("disk-size", str(idx), size) for idx, size in enumerate(disk_sizes)]
    allowed = list(policy.get("disk-templates") or [])
    found: list[str] = []
    if disk_sizes:
        tests.append(("disk-count", "", len(disk_sizes)))
    elif model.DT_DISKLESS not in allowed:
        found.append(f"Disk template {model.DT_DISKLESS} is not allowed"
                     f" (allowed templates {', '.join(allowed)})")
    forbidden = sorted(set(templates) - set(allowed))
    if forbidden:
        found.append(f"Disk template {', '.join(forbidden)} is not allowed (allowed templates:"
                     f" {', '.join(allowed)})")
    best: list[str] | None = None
    for minmax in policy.get("minmax") or [{}]:
        errors = _minmax_errors(minmax, tests)
        if best is None or len(errors) < len(best):
            best = errors
    return found + (best or [])


class InstanceCreate(Operation):
    op_id = "OP_INSTANCE_CREATE"
    req_bgl = False

    def _config(self) -> ConfigData:
        if self.ctx.config is None:
            raise OpPrereqError("This master has no cluster configuration", ECODE_STATE)
        return self.ctx.config.current

    # --- names -------------------------------------------------------------------------------

    def _resolve_name(self) -> tuple[str, str | None]:
        """The instance name and the address it resolves to (name_check), as Ganeti's _CheckHostnameSane."""
        name = str(self.op.get("instance_name") or "")
        if not name:
            raise OpPrereqError("An instance name is required", ECODE_INVAL)
        if not self.op.get("name_check", True):
            return name, None
        try:
            address = nodecalls.resolve(self.ctx.paths, name)
        except nodecalls.ResolveError as err:
            raise OpPrereqError(str(err), ECODE_RESOLVER) from None
        return name, address

    def locks(self) -> list[LockRequest]:
        cfg = self._config()
        name, self.address = self._resolve_name()
        self.name = name
        if self.op.get("mode", "create") != "create":
            raise OpPrereqError(f"Instance {self.op.get('mode')} mode is not supported by this master"
                                " (only create)", ECODE_INVAL)
        pnode = self.op.get("pnode")
        nodes: Any
        if pnode:
            nodes = [cfg.node(common.node_uuid(cfg, str(pnode))).name]
            if self.op.get("snode"):
                nodes.append(cfg.node(common.node_uuid(cfg, str(self.op["snode"]))).name)
        else:
            nodes = ALL_SET
        return [(Level.INSTANCE, [name], False), (Level.NODE, nodes, False), (Level.NODE_RES, nodes, False)]

    # --- checks ------------------------------------------------------------------------------

    def _check_basics(self, cfg: ConfigData) -> None:
        if self.name in cfg.instance_names():
            raise OpPrereqError(f"Instance '{self.name}' is already in the cluster", ECODE_EXISTS)
        if self.address is not None and self.op.get("ip_check") and \
                nodecalls.tcp_ping(self.address, IP_CHECK_PORT, timeout=1.0):
            raise OpPrereqError(f"IP {self.address} of instance {self.name} already in use", ECODE_NOTUNIQUE)
        if self.op.get("ip_check") and not self.op.get("name_check", True):
            raise OpPrereqError("Cannot do IP address check without a name check", ECODE_INVAL)
        cluster = cfg.cluster
        hypervisor = self.op.get("hypervisor") or (cluster.get("enabled_hypervisors") or [""])[0]
        if hypervisor not in (cluster.get("enabled_hypervisors") or []):
            raise OpPrereqError(f"Selected hypervisor ({hypervisor}) not enabled in the cluster"
                                f" ({','.join(cluster.get('enabled_hypervisors') or [])})", ECODE_STATE)
        self.hypervisor = str(hypervisor)
        template = str(self.op.get("disk_template") or "")
        if not template:
            enabled = list(cluster.get("enabled_disk_templates") or [])
            template = enabled[0] if enabled else model.DT_DISKLESS
        if template not in (cluster.get("enabled_disk_templates") or []):
            raise OpPrereqError(f"Cannot create an instance with disk template '{template}', because it"
                                " is not enabled in the cluster. Enabled disk templates are:"
                                f" {','.join(cluster.get('enabled_disk_templates') or [])}.", ECODE_STATE)
        if template not in model.SUPPORTED_TEMPLATES:
            raise OpPrereqError(f"Disk template {template} is not supported by this cluster's nodes"
                                " (file, sharedfile and diskless are)", ECODE_STATE)
        self.template = template
        if template == model.DT_DISKLESS and self.op.get("disks"):
            raise OpPrereqError("Diskless instances cannot have disks", ECODE_INVAL)
        if template != model.DT_DISKLESS and not self.op.get("disks"):
            raise OpPrereqError(f"Disk template {template} needs at least one disk", ECODE_INVAL)
        if not self.op.get("os_type") and not self.op.get("no_install"):
            raise OpPrereqError("No guest OS or OS image specified", ECODE_INVAL)

    def _disks(self) -> list[dict[str, Any]]:
        disks = []
        for idx, disk in enumerate(self.op.get("disks") or []):
            if not isinstance(disk, dict):
                raise OpPrereqError(f"Invalid disk parameters for disk {idx}: not a dictionary", ECODE_INVAL)
            if "adopt" in disk:
                raise OpPrereqError("Disk adoption is not supported for the file templates", ECODE_INVAL)
            size = disk.get("size")
            try:
                size = int(size)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise OpPrereqError(f"Invalid disk size '{size}'", ECODE_INVAL) from None
            mode = disk.get("mode", "rw")
            if mode not in ("rw", "ro"):
                raise OpPrereqError(f"Invalid disk access mode '{mode}'", ECODE_INVAL)
            name = disk.get("name")
            disks.append({"size": size, "mode": mode,
                          "name": None if name is None or str(name).lower() == VALUE_NONE else str(name)})
        return disks

    def _nics(self, cfg: ConfigData) -> list[dict[str, Any]]:
        """Ganeti's ComputeNics (networks are not supported here)."""
        default_mode = str(model.fill_nic(cfg, None).get("mode", NIC_MODE_BRIDGED))
        nics: list[dict[str, Any]] = []
        reserved: set[str] = set()
        for nic in self.op.get("nics") or []:
            mode_req = nic.get("mode")
            mode = default_mode if mode_req in (None, VALUE_AUTO) else str(mode_req)
            network = nic.get("network")
            if network is not None and str(network).lower() != VALUE_NONE:
                raise OpPrereqError(f"Network '{network}' not found (this cluster has no networks)",
                                    ECODE_INVAL)
            ip = nic.get("ip")
            if ip is None or str(ip).lower() == VALUE_NONE:
                nic_ip = None
            elif str(ip).lower() == VALUE_AUTO:
                if not self.op.get("name_check", True):
                    raise OpPrereqError("IP address set to auto but name checks have been skipped",
                                        ECODE_INVAL)
                nic_ip = self.address
            else:
                if str(ip).lower() == "pool":
                    raise OpPrereqError("if ip=pool, parameter network must be passed too", ECODE_INVAL)
                if not nodecalls.is_ipv4(str(ip)):
                    raise OpPrereqError(f"Invalid IP address '{ip}'", ECODE_INVAL)
                nic_ip = str(ip)
            if mode == NIC_MODE_ROUTED and not nic_ip:
                raise OpPrereqError("Routed nic mode requires an ip address if not attached to a network",
                                    ECODE_INVAL)
            mac = str(nic.get("mac", VALUE_AUTO))
            if mac in (VALUE_AUTO, VALUE_GENERATE):
                mac = model.generate_mac(cfg, reserved)
            else:
                mac = mac.lower()
                if mac in model.used_macs(cfg) or mac in reserved:
                    raise OpPrereqError(f"MAC address {mac} already in use in cluster", "resource_not_unique")
            reserved.add(mac)
            nicparams: dict[str, Any] = {}
            if mode_req:
                nicparams["mode"] = mode
            if nic.get("link"):
                nicparams["link"] = nic["link"]
            if nic.get("vlan"):
                nicparams["vlan"] = nic["vlan"]
            name = nic.get("name")
            name = None if name is None or str(name).lower() == VALUE_NONE else str(name)
            nics.append(model.new_nic(mac=mac, ip=nic_ip, nicparams=nicparams, name=name))
        return nics

    def _check_node(self, cfg: ConfigData, uuid: str) -> None:
        common.check_node_online(cfg, uuid)
        common.check_node_not_drained(cfg, uuid)
        common.check_node_vm_capable(cfg, uuid)

    def _check_policy(self, cfg: ConfigData, pnode: str, be: dict[str, Any], disks: list[dict[str, Any]],
                      nics: list[dict[str, Any]]) -> None:
        violations = ipolicy_violations(
            group_ipolicy(cfg, pnode), memory=be.get("maxmem"), vcpus=be.get("vcpus"),
            disk_sizes=[d["size"] for d in disks], nic_count=len(nics), spindle_use=be.get("spindle_use"),
            templates=[self.template] * len(disks))
        if not violations:
            return
        group = cfg.tree["nodegroups"].get(cfg.node(pnode).group) or {}
        message = (f"Instance allocation to group {cfg.node(pnode).group} ({group.get('name', '')}) violates"
                   f" policy: {', '.join(violations)}")
        if self.op.get("ignore_ipolicy"):
            self.warnings.append(message)
        else:
            raise OpPrereqError(message, ECODE_INVAL)

    async def _check_on_node(self, cfg: ConfigData, pnode_name: str, hvfull: dict[str, Any],
                             be: dict[str, Any], nics: list[dict[str, Any]], disks: list[dict[str, Any]],
                             osparams: dict[str, Any]) -> None:
        result = await common.node_call(self.ctx, pnode_name, "hypervisor_validate_params",
                                        [self.hypervisor, hvfull])
        if result.fail_msg is not None:
            raise OpPrereqError(f"Hypervisor parameter validation failed on node {pnode_name}:"
                                f" {result.fail_msg}", ECODE_INVAL)
        os_name = str(self.op.get("os_type") or "")
        if os_name:
            result = await common.node_call(self.ctx, pnode_name, "os_validate",
                                            [True, os_name, ["parameters"], osparams,
                                             bool(self.op.get("force_variant"))])
            if result.fail_msg is not None:
                raise OpPrereqError(f"OS '{os_name}' not in supported OS list for node {pnode_name}:"
                                    f" {result.fail_msg}", "environment_error")
        await common.check_bridges(self.ctx, cfg, nics, pnode_name)
        want_memory = bool(self.op.get("start"))
        want_space = self.template in model.FILE_TEMPLATES
        if not (want_memory or want_space):
            return
        units = [model.storage_unit(cfg, self.template, self.ctx.paths.root)] if want_space else None
        hvparams = model.fill_hv(cfg, self.hypervisor, os_name, None)
        result = await common.node_call(self.ctx, pnode_name, "node_info",
                                        [units, [[self.hypervisor, hvparams]]])
        if result.fail_msg is not None:
            raise OpPrereqError(f"Can't get data from node {pnode_name}: {result.fail_msg}",
                                "environment_error")
        _, storage, hv_info = [*list(result.payload), None, None, None][:3]
        if want_memory and hv_info:
            free = (hv_info[0] or {}).get("memory_free")
            needed = int(be.get("maxmem") or 0)
            if isinstance(free, int) and needed > free:
                raise OpPrereqError(f"Not enough memory on node {pnode_name} for starting instance"
                                    f" {self.name}: needed {needed} MiB, available {free} MiB", ECODE_NORES)
        if want_space and storage:
            free = (storage[0] or {}).get("storage_free")
            needed = sum(d["size"] for d in disks)
            if isinstance(free, int) and needed > free:
                raise OpPrereqError(f"Not enough disk space on target node {pnode_name} for"
                                    f" {self.template} storage: required {needed} MiB, available {free} MiB",
                                    ECODE_NORES)

    # --- the work ----------------------------------------------------------------------------

    async def exec(self) -> Any:
        assert self.ctx.config is not None
        self.warnings: list[str] = []
        cfg = self._config()
        self._check_basics(cfg)
        disks_spec = self._disks()
        nics = self._nics(cfg)
        be = model.fill_be(cfg, self.op.get("beparams"))
        osparams = dict(self.op.get("osparams") or {})
        hvparams = dict(self.op.get("hvparams") or {})
        os_name = str(self.op.get("os_type") or "")
        hvfull = model.fill_hv(cfg, self.hypervisor, os_name, hvparams)
        if self.op.get("pnode"):
            pnode = common.node_uuid(cfg, str(self.op["pnode"]))
        else:
            pnode = await choose_node(self.ctx, cfg, self.op, name=self.name, template=self.template,
                                      hypervisor=self.hypervisor, be=be, disks=disks_spec, nics=nics)
        self._check_node(cfg, pnode)
        self._check_policy(cfg, pnode, be, disks_spec, nics)
        pname = node_name(cfg, pnode)
        await self._check_on_node(cfg, pname, hvfull, be, nics, disks_spec,
                                  model.fill_os(cfg, os_name, osparams))
        for warning in self.warnings:
            await self.ctx.log(f" - WARNING: {warning}")

        directory = ""
        if self.template in model.FILE_TEMPLATES:
            parts = [model.storage_dir(cfg, self.template)]
            if self.op.get("file_storage_dir"):
                parts.append(str(self.op["file_storage_dir"]).strip("/"))
            parts.append(self.name)
            directory = "/".join(p.rstrip("/") for p in parts)
        driver = str(self.op.get("file_driver") or "loop")
        disk_objects = []
        for idx, spec in enumerate(disks_spec):
            file_name = model.file_disk_path(directory, str(uuid.uuid4()), idx, self.template)
            disk_objects.append(model.new_disk(cfg, dev_type=self.template, logical_id=[driver, file_name],
                                               nodes=[pnode], index=idx, size=spec["size"], mode=spec["mode"],
                                               name=spec["name"]))
        inst_raw = model.new_instance(
            cfg, name=self.name, primary_node=pnode, os=os_name, hypervisor=self.hypervisor,
            hvparams=hvparams, beparams=model.upgrade_be(self.op.get("beparams")), osparams=osparams,
            osparams_private=dict(self.op.get("osparams_private") or {}), nics=nics,
            disks=[d["uuid"] for d in disk_objects], admin_state=model.ADMIN_DOWN,
            tags=self.op.get("tags") or [])
        # A snapshot of the instance-to-be, for the hooks and the node calls before it is in the config.
        preview = cfg.copy()
        model.add_instance(preview, inst_raw, disk_objects)
        inst = model.instance(preview, inst_raw["uuid"])

        for idx, spec in enumerate(disks_spec):
            await self.ctx.log(f"* disk {idx}, size {format_unit(spec['size'])}")
        hooks = common.instance_hooks(self.ctx, preview, inst, "instance-add", self.op_id)
        env = {"INSTANCE_ADD_MODE": "create",
               **common.instance_hook_env(preview, inst, status="up" if self.op.get("start") else "down")}
        await hooks.pre(env)

        created: list[dict[str, Any]] = []
        in_config = False
        try:
            if disk_objects:
                await self.ctx.log("* creating instance disks...")
                await self._create_disks(preview, inst, pname, directory, disk_objects, created)
            await self.ctx.log(f"adding instance {self.name} to cluster config")
            async with self.ctx.config.change() as new:
                if self.name in new.instance_names():
                    raise OpPrereqError(f"Instance '{self.name}' is already in the cluster", ECODE_EXISTS)
                if disk_objects:
                    await self.ctx.log("adding disks to cluster config")
                model.add_instance(new, inst_raw, disk_objects)
                model.set_instance(new, inst.uuid, disks_active=bool(disk_objects))
            in_config = True
            inst = model.instance(self.ctx.config.current, inst.uuid)
            if disk_objects and self.op.get("wait_for_sync", True):
                await common.wait_for_sync(self.ctx, inst)
            if os_name and not self.op.get("no_install") and disk_objects:
                await self.ctx.log("* running the instance OS create scripts...")
                cur = self.ctx.config.current
                result = await common.node_call(
                    self.ctx, pname, "instance_os_add",
                    [common.inst_dict(self.ctx, cur, inst, osp=self.op.get("osparams_secret") or None),
                     False, int(self.op.get("debug_level") or 0)])
                if result.fail_msg is not None:
                    raise OpExecError(f"Could not add os for instance {self.name} on node {pname}:"
                                      f" {result.fail_msg}")
            if self.op.get("start"):
                async with self.ctx.config.change() as new:
                    model.set_instance(new, inst.uuid, admin_state=model.ADMIN_UP, admin_state_source="admin")
                inst = model.instance(self.ctx.config.current, inst.uuid)
                await self.ctx.log("* starting instance...")
                await common.start_instance(self.ctx, inst, why=common.reason(self.op))
        except BaseException as err:
            await self._undo(pname, directory, preview, inst, created, in_config, err)
            raise
        await hooks.post(common.instance_hook_env(self.ctx.config.current,
                                                  model.instance(self.ctx.config.current, inst.uuid)))
        return [pname]

    async def _create_disks(self, cfg: ConfigData, inst: model.Instance, pname: str, directory: str,
                            disks: list[dict[str, Any]], created: list[dict[str, Any]]) -> None:
        if directory:
            result = await common.node_call(self.ctx, pname, "file_storage_dir_create",
                                            [model.virtual_path(self.ctx.paths.root, directory)])
            if result.fail_msg is not None:
                raise OpExecError(f"Failed to create directory '{directory}' on node {pname}:"
                                  f" {result.fail_msg}")
        for idx, disk in enumerate(disks):
            result = await common.node_call(
                self.ctx, pname, "blockdev_create",
                [common.disk_dict(self.ctx, cfg, disk, inst), disk["size"], self.name, True,
                 f"originstname+{self.name}", False])
            if result.fail_msg is not None:
                raise OpExecError(f"Can't create block device disk/{idx} on node {pname} for instance"
                                  f" {self.name}: {result.fail_msg}")
            created.append(disk)

    async def _undo(self, pname: str, directory: str, cfg: ConfigData, inst: model.Instance,
                    created: list[dict[str, Any]], in_config: bool, err: BaseException) -> None:
        """Take back what this job did; failures of the clean-up are reported, the first error stays."""
        assert self.ctx.config is not None
        if not (created or in_config):
            return
        await self.ctx.log(f" - WARNING: Instance creation failed ({err}); removing what was created")
        if in_config:
            with_shutdown = await common.node_call(
                self.ctx, pname, "instance_shutdown",
                [common.inst_dict(self.ctx, self.ctx.config.current, inst), 0, common.reason(self.op)])
            if with_shutdown.fail_msg is not None:
                await self.ctx.log(f" - WARNING: Could not shut down instance {self.name} on node {pname}:"
                                   f" {with_shutdown.fail_msg}")
        for disk in created:
            result = await self._cleanup_call(pname, "blockdev_remove",
                                              [common.disk_dict(self.ctx, cfg, disk, inst)])
            if result.fail_msg is not None:
                await self.ctx.log(f" - WARNING: Could not remove disk {disk.get('iv_name')} on node {pname}:"
                                   f" {result.fail_msg}")
        if directory and created:
            result = await self._cleanup_call(pname, "file_storage_dir_remove",
                                              [model.virtual_path(self.ctx.paths.root, directory)])
            if result.fail_msg is not None:
                await self.ctx.log(f" - WARNING: Could not remove directory '{directory}' on node {pname}:"
                                   f" {result.fail_msg}")
        if in_config:
            async with self.ctx.config.change() as new:
                if inst.uuid in new.tree["instances"]:
                    model.remove_instance(new, inst.uuid)


    async def _cleanup_call(self, node: str, procedure: str, args: list[Any]) -> RpcResult:
        """A clean-up call that waits for a node that is briefly unreachable (a node daemon restarting)."""
        deadline = asyncio.get_running_loop().time() + CLEANUP_PATIENCE
        while True:
            result = await common.node_call(self.ctx, node, procedure, args)
            if not result.unreachable or asyncio.get_running_loop().time() >= deadline:
                return result
            await asyncio.sleep(CLEANUP_RETRY_INTERVAL)


class InstanceRemove(Operation):
    op_id = "OP_INSTANCE_REMOVE"
    req_bgl = False

    def _instance(self) -> model.Instance:
        if self.ctx.config is None:
            raise OpPrereqError("This master has no cluster configuration", ECODE_STATE)
        return model.lookup_instance(self.ctx.config.current, str(self.op.get("instance_name") or ""))

    def locks(self) -> list[LockRequest]:
        inst = self._instance()
        cfg = self.ctx.config.current  # type: ignore[union-attr]
        nodes = [node_name(cfg, u) for u in model.instance_nodes(cfg, inst)]
        return [(Level.INSTANCE, [inst.name], False), (Level.NODE, nodes, False),
                (Level.NODE_RES, nodes, False)]

    async def exec(self) -> Any:
        assert self.ctx.config is not None
        inst = self._instance()
        cfg = self.ctx.config.current
        ignore = bool(self.op.get("ignore_failures"))
        pname = node_name(cfg, inst.primary_node)
        hooks = common.instance_hooks(self.ctx, cfg, inst, "instance-remove", self.op_id)
        await hooks.pre({**common.instance_hook_env(cfg, inst),
                         "SHUTDOWN_TIMEOUT": self.op.get("shutdown_timeout", 120)})
        if cfg.node(inst.primary_node).offline:
            if not ignore:
                raise OpPrereqError(f"Can't use offline node {pname}", ECODE_STATE)
        else:
            result = await common.node_call(
                self.ctx, pname, "instance_shutdown",
                [common.inst_dict(self.ctx, cfg, inst), int(self.op.get("shutdown_timeout", 120)),
                 common.reason(self.op)])
            if result.fail_msg is not None:
                message = f"Could not shutdown instance {inst.name} on node {pname}: {result.fail_msg}"
                if not ignore:
                    raise OpExecError(message)
                await self.ctx.log(f" - WARNING: {message}")
        if not await remove_disks(self.ctx, cfg, inst) and not ignore:
            raise OpExecError("Can't remove instance's disks")
        async with self.ctx.config.change() as new:
            model.remove_instance(new, inst.uuid)
        await hooks.post(common.instance_hook_env(cfg, inst))
        return None


async def remove_disks(ctx: Any, cfg: ConfigData, inst: model.Instance) -> bool:
    """Ganeti's RemoveDisks: blockdev_remove everywhere, then the file storage directory; False on failure."""
    all_ok = True
    directories: dict[str, set[str]] = {}
    for disk in model.instance_disks(cfg, inst):
        for node_uuid in disk.get("nodes") or [inst.primary_node]:
            node = cfg.node(node_uuid)
            if node.offline:
                continue
            result = await common.node_call(ctx, node.name, "blockdev_remove",
                                            [common.disk_dict(ctx, cfg, disk, inst)])
            if result.fail_msg is not None:
                await ctx.log(f" - WARNING: Could not remove disk {disk.get('iv_name')} on node {node.name}:"
                              f" {result.fail_msg}, continuing anyway")
                all_ok = False
            logical_id = disk.get("logical_id") or []
            if disk.get("dev_type") in model.FILE_TEMPLATES and len(logical_id) == 2:
                directories.setdefault(node.name, set()).add(str(logical_id[1]).rsplit("/", 1)[0])
    for holder, dirs in directories.items():
        for directory in sorted(dirs):
            result = await common.node_call(ctx, holder, "file_storage_dir_remove",
                                            [model.virtual_path(ctx.paths.root, directory)])
            if result.fail_msg is not None:
                await ctx.log(f" - WARNING: Could not remove directory '{directory}' on node {holder}:"
                              f" {result.fail_msg}")
                all_ok = False
    return all_ok

