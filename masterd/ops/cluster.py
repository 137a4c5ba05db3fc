"""OP_CLUSTER_QUERY and QueryClusterInfo: the dict `gnt-cluster info` and `version` read.

Every key of luxid 3.0.2's answer is present (luxi-protocol.md §9; a missing
key is a traceback in the real CLI). Values, in order of precedence:

1. the cluster section of the master's configuration (masterd.confmgr, the
   copy in memory; without a ConfigManager, $DATA_DIR/config.data when the
   file exists) (its
   keys are the answer's keys, with cluster_name -> name and master_node (a
   node uuid) -> master through the nodes section);
2. ssconf: cluster_name, master_node, master_netdev, master_netmask,
   primary_ip_family, file/shared-file/gluster storage dirs,
   enabled_user_shutdown, maintain_node_health, hypervisor_list;
3. defaults (cluster_defaults.json: Ganeti 3.0.2's defaults as a freshly
   initialised cluster reports them), with the version constants and this
   machine's architecture.

Tags come from masterd.ops.tags (the cluster tags file) unless config.data
has them.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import platform
import struct
from importlib import resources as importlib_resources
from typing import Any, ClassVar

from masterd import ssconf
from masterd.ops.base import Operation
from masterd.ops.tags import read_cluster_tags
from noded.paths import Paths

SOFTWARE_VERSION = "3.0.2"
PROTOCOL_VERSION = 3000000
CONFIG_VERSION = 3000000
OS_API_VERSION = 20
EXPORT_VERSION = 0


@functools.cache
def _defaults() -> dict[str, Any]:
    text = importlib_resources.files("masterd.ops").joinpath("cluster_defaults.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def _architecture() -> list[str]:
    return [f"{struct.calcsize('P') * 8}bits", platform.machine()]


def _ssconf_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() == "true"


def _from_ssconf(paths: Paths, info: dict[str, Any]) -> None:
    simple = {"master_netdev": "master_netdev", "file_storage_dir": "file_storage_dir",
              "shared_file_storage_dir": "shared_file_storage_dir",
              "gluster_storage_dir": "gluster_storage_dir"}
    for key, name in simple.items():
        value = ssconf.ssconf_value(paths, name)
        if value:
            info[key] = value
    netmask = ssconf.ssconf_value(paths, "master_netmask")
    if netmask and netmask.isdigit():
        info["master_netmask"] = int(netmask)
    family = ssconf.ssconf_value(paths, "primary_ip_family")
    if family in ("2", "10"):
        info["primary_ip_version"] = 4 if family == "2" else 6
    for key in ("enabled_user_shutdown", "maintain_node_health"):
        flag = _ssconf_bool(ssconf.ssconf_value(paths, key))
        if flag is not None:
            info[key] = flag
    hypervisors = ssconf.ssconf_lines(paths, "hypervisor_list")
    if hypervisors:
        info["enabled_hypervisors"] = hypervisors
        info["default_hypervisor"] = hypervisors[0]


def _from_config(config: dict[str, Any], info: dict[str, Any]) -> None:
    cluster = config.get("cluster")
    if not isinstance(cluster, dict):
        return
    for key in info:
        if key in cluster:
            info[key] = copy.deepcopy(cluster[key])
    if "cluster_name" in cluster:
        info["name"] = cluster["cluster_name"]
    master_uuid = cluster.get("master_node")
    nodes = config.get("nodes")
    if isinstance(nodes, dict) and isinstance(nodes.get(master_uuid), dict):
        info["master"] = nodes[master_uuid].get("name", info["master"])
    hypervisors = cluster.get("enabled_hypervisors")
    if isinstance(hypervisors, list):
        info["default_hypervisor"] = hypervisors[0] if hypervisors else None


def cluster_info(paths: Paths, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The QueryClusterInfo answer (see the module docstring); `config`: the configuration tree."""
    info = copy.deepcopy(_defaults())
    info.update({
        "software_version": SOFTWARE_VERSION, "protocol_version": PROTOCOL_VERSION,
        "config_version": CONFIG_VERSION, "os_api_version": OS_API_VERSION,
        "export_version": EXPORT_VERSION, "architecture": _architecture(),
        "name": ssconf.cluster_name(paths) or paths.hostname,
        "master": ssconf.master_node(paths) or paths.hostname,
        "uuid": "", "tags": read_cluster_tags(paths),
    })
    stamp_source = paths.ssconf_file("cluster_name")
    try:
        stat = os.stat(stamp_source)
        info["ctime"], info["mtime"] = stat.st_ctime, stat.st_mtime
    except OSError:
        info["ctime"] = info["mtime"] = 0.0
    _from_ssconf(paths, info)
    if config is None:
        config = ssconf.load_config(paths)
    if config is not None:
        _from_config(config, info)
    return info


class ClusterQuery(Operation):
    """OP_CLUSTER_QUERY: the cluster's configuration (LUClusterQuery)."""

    op_id: ClassVar[str] = "OP_CLUSTER_QUERY"
    req_bgl: ClassVar[bool] = False

    async def exec(self) -> Any:
        manager = self.ctx.config
        tree = manager.current.tree if manager is not None and manager.present else None
        return cluster_info(self.ctx.paths, tree)
