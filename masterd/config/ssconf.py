"""Every ssconf key Ganeti writes, derived from the configuration.

`ssconf_values(cfg)` returns {key: [lines]}: the argument of the
write_ssconf_files node RPC in the form Ganeti 3.0's Haskell master sends it
(keys without the "ssconf_" prefix, each value a list of lines; the node
daemon joins them with newlines and ends a non-empty file with one). The
derivation follows wconfd's (Ganeti.WConfd.Ssconf.mkSSConf), including its
orders:

- nodes (node_list, *_ips, node_vm_capable, online/offline_nodes,
  ssh_ports) in "nice" name order (digit runs compared as numbers);
- master_candidates and master_candidates_ips: the master and the
  candidates, in node-uuid order (the config's node map);
- master_candidates_certs: cluster.candidate_certs as uuid=digest, uuid order;
- instance_list: nice name order; nodegroups: "uuid name", nice order of
  the names; networks: "uuid name", uuid order;
- cluster_tags: sorted; uid_pool: "lo" or "lo-hi" per range;
- hvparams_<hv> for every hypervisor Ganeti knows (not only the enabled
  ones): the cluster's hvparams of it as key=value in key order, strings
  bare, booleans True/False, numbers as Haskell writes them, anything else
  as JSON; empty when the cluster has none;
- booleans as Python's str (True/False), numbers as decimal strings;
- ssh_ports: the node's effective ndparams ssh_port (cluster, group,
  node), empty when its group is unknown;
- release_version: Ganeti's release this master speaks (3.0.2).

Every key of constants.VALID_SS_KEYS is derived from config.data alone; no
key depends on another file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from masterd.config import defaults
from masterd.config.model import ConfigData, Node, dumps, haskell_float

T = TypeVar("T")

#: Ganeti's constants.RELEASE_VERSION.
RELEASE_VERSION = defaults.RELEASE_VERSION

_GROUPS_RE = re.compile(r"\d+|\D+")


def nice_key(name: str) -> list[tuple[int, int | str]]:
    """Ganeti's nice-sort key: digit runs compare as numbers and before text runs."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in _GROUPS_RE.findall(name)]


def nice_sorted(items: Iterable[T], key: Callable[[T], str]) -> list[T]:
    return sorted(items, key=lambda item: nice_key(key(item)))


def _show_bool(value: object) -> str:
    return "True" if value else "False"


def hvparam_text(value: Any) -> str:
    """One hypervisor parameter as ssconf_hvparams_* shows it."""
    if isinstance(value, bool):
        return _show_bool(value)
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return haskell_float(value)
    return dumps(value)


def _uid_range(entry: Any) -> str:
    low, high = (entry[0], entry[1]) if isinstance(entry, (list, tuple)) else (entry, entry)
    return str(low) if low == high else f"{low}-{high}"


def ssconf_values(cfg: ConfigData) -> dict[str, list[str]]:
    """{ssconf key: [lines]} for every key Ganeti writes (see the module docstring)."""
    cluster = cfg.cluster
    tree = cfg.tree
    master_uuid = cfg.master_node_uuid
    nodes = nice_sorted(cfg.nodes(), key=lambda node: node.name)
    candidates = [node for node in cfg.nodes() if node.uuid == master_uuid or node.master_candidate]
    candidates.sort(key=lambda node: node.uuid)
    master = tree["nodes"].get(master_uuid)
    groups = nice_sorted(tree["nodegroups"].items(), key=lambda item: str(item[1].get("name", "")))

    def ssh_port(node: Node) -> str:
        if node.group not in tree["nodegroups"]:
            return ""
        return str(cfg.node_ndparams(node).get("ssh_port", ""))

    values: dict[str, list[str]] = {
        "cluster_name": [cfg.cluster_name],
        "cluster_tags": sorted(str(tag) for tag in cluster.get("tags") or []),
        "file_storage_dir": [str(cluster.get("file_storage_dir", ""))],
        "shared_file_storage_dir": [str(cluster.get("shared_file_storage_dir", ""))],
        "gluster_storage_dir": [str(cluster.get("gluster_storage_dir", ""))],
        "master_candidates": [node.name for node in candidates],
        "master_candidates_ips": [node.primary_ip for node in candidates],
        "master_candidates_certs": [f"{uuid}={digest}"
                                    for uuid, digest in sorted(cfg.candidate_certs.items())],
        "master_ip": [str(cluster["master_ip"])],
        "master_netdev": [str(cluster["master_netdev"])],
        "master_netmask": [str(cluster.get("master_netmask", 32))],
        "master_node": [str(master["name"]) if master else "NO MASTER"],
        "node_list": [node.name for node in nodes],
        "node_primary_ips": [f"{node.name} {node.primary_ip}" for node in nodes],
        "node_secondary_ips": [f"{node.name} {node.secondary_ip}" for node in nodes],
        "node_vm_capable": [f"{node.name}={_show_bool(node.vm_capable)}" for node in nodes],
        "offline_nodes": [node.name for node in nodes if node.offline],
        "online_nodes": [node.name for node in nodes if not node.offline],
        "primary_ip_family": [str(cluster.get("primary_ip_family", 2))],
        "instance_list": nice_sorted(cfg.instance_names(), key=str),
        "release_version": [RELEASE_VERSION],
        "hypervisor_list": [str(hv) for hv in cluster.get("enabled_hypervisors") or []],
        "maintain_node_health": [_show_bool(cluster.get("maintain_node_health", False))],
        "uid_pool": [_uid_range(entry) for entry in cluster.get("uid_pool") or []],
        "nodegroups": [f"{uuid} {raw.get('name', '')}" for uuid, raw in groups],
        "networks": [f"{uuid} {raw.get('name', '')}" for uuid, raw in sorted(tree["networks"].items())],
        "enabled_user_shutdown": [_show_bool(cluster.get("enabled_user_shutdown", False))],
        "ssh_ports": [f"{node.name}={ssh_port(node)}" for node in nodes],
    }
    hvparams = cluster.get("hvparams") or {}
    for hv in defaults.HYPERVISOR_TYPES:
        params = hvparams.get(hv) or {}
        values[f"hvparams_{hv}"] = [f"{key}={hvparam_text(params[key])}" for key in sorted(params)]
    return values


def file_contents(values: dict[str, list[str]]) -> dict[str, str]:
    """The text of each ssconf_<key> file the node daemon writes from `values`."""
    return {key: "".join(line + "\n" for line in lines) for key, lines in values.items()}

