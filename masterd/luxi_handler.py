"""The LUXI methods of ganeti-masterd, on top of the job engine (masterd.engine).

Implemented: SubmitJob, SubmitJobToDrainedQueue, SubmitManyJobs,
WaitForJobChange, QueryJobs, CancelJob, ArchiveJob, AutoArchiveJobs,
ChangeJobPriority, SetDrainFlag, SetWatcherPause, Query, QueryFields,
QueryNodes/Instances/Groups/Networks/Exports, QueryClusterInfo,
QueryConfigValues, QueryTags, ReplaceFilter, DeleteFilter, QueryFilters
(the job filter rules: masterd.filters, applied by the engine's scheduler).
The rest answer GenericError "not implemented"
(masterd.luxi.methods.UnimplementedHandler); PickupJob answers luxid's
"internal use only".

With a cluster configuration (masterd.confmgr: config.data loaded at the
master's start), Query/QueryFields of node and group, QueryNodes and
QueryGroups answer from it (masterd.query.config_query; node live fields
through node_info to the online nodes), Query of instance and
QueryInstances too (masterd.query.instances; live fields through
all_instances_info to the instances' online primary nodes), and QueryClusterInfo /
QueryConfigValues read the cluster from it.

Answers without a cluster configuration: Query and
QueryFields of node, instance, group, network, export answer with the real
field tables and no rows; asking for named objects fails as luxid does for
an unknown name (OpPrereqError "<Kind> name X not found", unknown_entity);
the classic queries answer [] (unknown fields are refused). cluster and os
get luxid's own refusals (masterd.query.engine.resource_definitions).

SetWatcherPause writes (or removes) $DATA_DIR/watcher.pause on this node,
"<until as integer>\\n" as Ganeti's node daemon does, and asks the other
online master candidates' node daemons to do the same (set_watcher_pause),
as luxid does; a candidate's failure is logged.

    handler = LuxiHandler(engine, paths, config=None)   # config: masterd.confmgr.ConfigManager
    LuxiServer.for_paths(handler, paths)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from typing import Any

from masterd import rpc, ssconf
from masterd.config.model import ConfigData
from masterd.confmgr import ConfigManager
from masterd.engine import JobEngine
from masterd.filters.query import query_filter_rules, query_filter_rules_classic
from masterd.jqueue.durable import write_durably
from masterd.luxi.methods import UnimplementedHandler
from masterd.luxi.protocol import GanetiError, OpPrereqError, RequestParseError
from masterd.ops.cluster import cluster_info
from masterd.ops.tags import object_tags, read_cluster_tags
from masterd.query.config_query import RESOURCES as CONFIG_RESOURCES
from masterd.query.config_query import classic_from_config, query_from_config, select
from masterd.query.engine import Resource, classic_rows, query_fields, resource_definitions, run_query
from masterd.query.errors import QueryError
from masterd.query.fields import UNAVAILABLE, FieldRegistry
from masterd.query.filter import requested_names
from masterd.query.instances import classic_instances, query_instances
from masterd.query.jobs import job_resource, query_jobs, query_jobs_classic
from noded.paths import Paths

log = logging.getLogger(__name__)

#: What luxid calls the objects of a resource in "<Kind> name X not found".
_KIND_NAMES = {"node": "Node", "instance": "Instance", "group": "Group", "network": "Network",
               "export": "Node"}


def as_luxi_error(err: QueryError) -> Exception:
    """A query module error as the LUXI error the server encodes."""
    encoded = err.encode()
    if isinstance(encoded, str):
        return RequestParseError(encoded.removeprefix("Failed to parse request: "))
    return GanetiError(encoded[0], *encoded[1])


@functools.cache
def _registry() -> FieldRegistry:
    return FieldRegistry.load()


@functools.cache
def _empty_resource(what: str) -> Resource[Any]:
    """A resource with its real field table and no objects."""
    definitions = _registry().fields(what)
    namefield = "node" if what == "export" else "name"
    getters = {name: (lambda _item: UNAVAILABLE) for name in definitions}
    return Resource.from_registry(what, _registry(), getters, namefield=namefield)


class LuxiHandler(UnimplementedHandler):
    def __init__(self, engine: JobEngine, paths: Paths, config: ConfigManager | None = None) -> None:
        self.engine = engine
        self.paths = paths
        self.config = config

    def _cfg(self) -> ConfigData | None:
        """The master's configuration, or None when it has none (ssconf-only behaviour)."""
        return self.config.current if self.config is not None and self.config.present else None

    # -- jobs --------------------------------------------------------------------------
    async def submit_job(self, ops: list[dict[str, Any]]) -> int:
        return await self.engine.submit(ops)

    async def submit_job_to_drained_queue(self, ops: list[dict[str, Any]]) -> int:
        return await self.engine.submit(ops, ignore_drain=True)

    async def submit_many_jobs(self, jobs: list[list[dict[str, Any]]]) -> list[list[Any]]:
        return await self.engine.submit_many(jobs)

    async def wait_for_job_change(self, job_id: int, fields: list[str], prev_job_info: list[Any] | None,
                                  prev_log_serial: int | None, timeout: float) -> Any:
        try:
            return await self.engine.wait_for_change(job_id, fields, prev_job_info, prev_log_serial, timeout)
        except QueryError as err:
            raise as_luxi_error(err) from None

    async def query_jobs(self, job_ids: list[int] | None, fields: list[str]) -> list[list[Any]]:
        try:
            return query_jobs_classic(self.engine.job_source, job_ids, fields)
        except QueryError as err:
            raise as_luxi_error(err) from None

    async def cancel_job(self, job_id: int, kill: bool) -> list[Any]:
        return list(await self.engine.cancel(job_id, kill))

    async def change_job_priority(self, job_id: int, priority: int) -> list[Any]:
        return list(await self.engine.change_priority(job_id, priority))

    async def archive_job(self, job_id: int) -> bool:
        return await self.engine.archive(job_id)

    async def auto_archive_jobs(self, age: float, timeout: float) -> list[int]:
        return list(await self.engine.autoarchive(age, timeout))

    async def set_drain_flag(self, drain_flag: bool) -> bool:
        await self.engine.set_drained(drain_flag)
        return True

    async def set_watcher_pause(self, until: float | None) -> float | None:
        path = self.paths.watcher_pause_file

        def apply() -> None:
            if until is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            else:
                write_durably(path, f"{int(until)}\n".encode(), 0o644)

        await asyncio.to_thread(apply)
        await self._pause_candidates(until)
        return until

    async def _pause_candidates(self, until: float | None) -> None:
        """The other online master candidates write or remove their pause file too (luxid's RPC)."""
        cfg = self._cfg()
        if cfg is None or self.engine.node_rpc is None:
            return
        master = cfg.master_node.name
        nodes = [n.name for n in cfg.nodes() if n.master_candidate and not n.offline and n.name != master]
        if not nodes:
            return
        results = await rpc.call(self.engine.node_rpc, nodes, "set_watcher_pause", [until])
        for result in results.values():
            if result.fail_msg:
                log.warning("Setting the watcher pause on node %s failed: %s", result.node, result.fail_msg)

    # -- queries ------------------------------------------------------------------------------
    async def query(self, what: str, fields: list[str], qfilter: list[Any] | None) -> dict[str, Any]:
        try:
            if what == "job":
                return query_jobs(self.engine.job_source, fields, qfilter, job_resource())
            if what == "filter":
                return query_filter_rules(self.engine.filter_rules(), fields, qfilter)
            resource_definitions(_registry(), what, "Query")
            cfg = self._cfg()
            if cfg is not None and what == "instance":
                return await query_instances(cfg, self.engine.node_rpc, fields, qfilter)
            if cfg is not None and what in CONFIG_RESOURCES:
                return await query_from_config(what, cfg, self.engine.node_rpc, fields, qfilter)
            resource = _empty_resource(what)
            names = requested_names(qfilter, resource.namefield)
            if names:
                raise OpPrereqError(f"{_KIND_NAMES.get(what, what.capitalize())} name {names[0]} not found",
                                    "unknown_entity")
            return run_query(resource, fields, qfilter, [])
        except QueryError as err:
            raise as_luxi_error(err) from None

    async def query_fields(self, what: str, fields: list[str] | None) -> dict[str, Any]:
        try:
            return query_fields(resource_definitions(_registry(), what, "QueryFields"), fields)
        except QueryError as err:
            raise as_luxi_error(err) from None

    def _classic_empty(self, what: str, names: list[str], fields: list[str]) -> list[list[Any]]:
        if names:
            raise OpPrereqError(f"{_KIND_NAMES[what]} name {names[0]} not found", "unknown_entity")
        try:
            return classic_rows(run_query(_empty_resource(what), fields, None, []))
        except QueryError as err:
            raise as_luxi_error(err) from None

    async def _classic(self, what: str, names: list[str], fields: list[str]) -> list[list[Any]]:
        cfg = self._cfg()
        if cfg is None:
            return self._classic_empty(what, names, fields)
        try:
            return await classic_from_config(what, cfg, self.engine.node_rpc, names, fields)
        except QueryError as err:
            raise as_luxi_error(err) from None

    async def query_nodes(self, names: list[str], fields: list[str], use_locking: bool) -> list[list[Any]]:
        return await self._classic("node", names, fields)

    async def query_instances(self, names: list[str], fields: list[str],
                              use_locking: bool) -> list[list[Any]]:
        cfg = self._cfg()
        if cfg is None:
            return self._classic_empty("instance", names, fields)
        try:
            return await classic_instances(cfg, self.engine.node_rpc, names, fields)
        except QueryError as err:
            raise as_luxi_error(err) from None

    async def query_groups(self, names: list[str], fields: list[str], use_locking: bool) -> list[list[Any]]:
        return await self._classic("group", names, fields)

    async def query_networks(self, names: list[str], fields: list[str],
                             use_locking: bool) -> list[list[Any]]:
        return self._classic_empty("network", names, fields)

    async def query_exports(self, nodes: list[str], use_locking: bool) -> Any:
        if nodes:
            raise OpPrereqError(f"Node name {nodes[0]} not found", "unknown_entity")
        return {}

    async def _cluster_info(self) -> dict[str, Any]:
        cfg = self._cfg()
        return await asyncio.to_thread(cluster_info, self.paths, cfg.tree if cfg is not None else None)

    async def query_cluster_info(self) -> dict[str, Any]:
        return await self._cluster_info()

    async def query_config_values(self, names: list[str]) -> list[Any]:
        info = await self._cluster_info()
        pause = await asyncio.to_thread(self._watcher_pause)
        cfg = self._cfg()
        values = {
            "cluster_name": info["name"],
            "master_node": cfg.master_node.name if cfg is not None else ssconf.master_node(self.paths),
            "drain_flag": self.engine.is_drained(),
            "watcher_pause": pause,
            "modify_ssh_setup": info["modify_ssh_setup"],
            "ssh_key_type": info["ssh_key_type"],
            "ssh_key_bits": info["ssh_key_bits"],
        }
        return [values.get(name) for name in names]

    def _watcher_pause(self) -> float | None:
        try:
            with open(self.paths.watcher_pause_file, encoding="ascii") as handle:
                return float(handle.read().strip())
        except (OSError, ValueError):
            return None

    async def query_tags(self, kind: str, name: str) -> list[str]:
        cfg = self._cfg()
        if cfg is not None and kind in ("node", "nodegroup"):
            what = "node" if kind == "node" else "group"
            section = cfg.tree["nodes"] if what == "node" else cfg.tree["nodegroups"]
            try:
                [uuid] = select(cfg, what, [name])
            except QueryError as err:
                raise as_luxi_error(err) from None
            return list(section[uuid].get("tags") or [])
        if cfg is not None and kind == "instance":
            return object_tags(cfg, kind, name)
        if kind != "cluster":
            raise OpPrereqError(f"{_KIND_NAMES.get(kind, kind.capitalize())} name {name} not found",
                                "unknown_entity")
        return await asyncio.to_thread(read_cluster_tags, self.paths)

    # -- job filter rules ------------------------------------------------------------------------
    async def query_filters(self, uuids: list[str] | None, fields: list[str]) -> list[list[Any]]:
        try:
            return query_filter_rules_classic(self.engine.filter_rules(), uuids, fields)
        except QueryError as err:
            raise as_luxi_error(err) from None

    async def replace_filter(self, uuid: str | None, priority: int, predicates: list[Any], action: Any,
                             reason: list[Any]) -> str:
        return await self.engine.replace_filter(uuid, priority, predicates, action, reason)

    async def delete_filter(self, uuid: str) -> None:
        await self.engine.delete_filter(uuid)
