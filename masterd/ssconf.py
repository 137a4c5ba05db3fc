"""Read-only access to the master's view of the cluster before config.data is managed (issue 5).

The ssconf files ($DATA_DIR/ssconf_<key>) and, when present, the
configuration file ($DATA_DIR/config.data) are the only sources, with one
file of ours beside them: $DATA_DIR/node-grpc-ports (see `node_grpc_ports`).
This module reads them fresh on every call (they are small) and never writes.

node-grpc-ports (our extension, not Ganeti's): the gRPC port of node
daemons that do not listen on the default 1812, one ``<node name> <port>``
per line (``#`` starts a comment). A real cluster has no such file: every
node daemon uses the same port, as in Ganeti. It exists for several node
daemons on one machine (tests, virtual clusters), where each node daemon
has its own 127.0.0.x address but not necessarily a free 1812. Malformed
lines are logged and skipped.

Interface::

    ssconf_value(paths, key) -> str | None        stripped content, None if missing
    ssconf_lines(paths, key) -> list[str]          non-empty lines
    master_node(paths) -> str | None
    cluster_name(paths) -> str | None
    node_addresses(paths) -> {node name: primary ip}   (ssconf_node_primary_ips)
    known_nodes(paths) -> [names]                  ssconf_node_list, else [this host]
    master_candidates(paths) -> [names]            ssconf_master_candidates (may include the master)
    node_grpc_ports(paths) -> {node name: port}    $DATA_DIR/node-grpc-ports, {} when absent
    load_config(paths) -> dict | None              config.data as JSON, None if absent/unreadable
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from noded.paths import Paths

log = logging.getLogger("masterd.ssconf")

#: Our per-node gRPC port map, in $DATA_DIR (see the module docstring).
NODE_GRPC_PORTS_FILE = "node-grpc-ports"


def ssconf_value(paths: Paths, key: str) -> str | None:
    try:
        with open(paths.ssconf_file(key), encoding="utf-8") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        log.warning("cannot read %s: %s", paths.ssconf_file(key), err)
        return None


def ssconf_lines(paths: Paths, key: str) -> list[str]:
    value = ssconf_value(paths, key)
    return [line.strip() for line in value.splitlines() if line.strip()] if value else []


def master_node(paths: Paths) -> str | None:
    return ssconf_value(paths, "master_node") or None


def cluster_name(paths: Paths) -> str | None:
    return ssconf_value(paths, "cluster_name") or None


def node_addresses(paths: Paths) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in ssconf_lines(paths, "node_primary_ips"):
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def known_nodes(paths: Paths) -> list[str]:
    nodes = ssconf_lines(paths, "node_list")
    return nodes or [paths.hostname]


def master_candidates(paths: Paths) -> list[str]:
    return ssconf_lines(paths, "master_candidates")


def node_grpc_ports_file(paths: Paths) -> str:
    return os.path.join(paths.data_dir, NODE_GRPC_PORTS_FILE)


def node_grpc_ports(paths: Paths) -> dict[str, int]:
    path = node_grpc_ports_file(paths)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return {}
    except OSError as err:
        log.warning("cannot read %s: %s; using the default node daemon port", path, err)
        return {}
    out: dict[str, int] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or not 0 < int(parts[1]) < 65536:
            log.warning("%s line %d: expected '<node name> <port>', got %r; ignoring it", path, number, raw)
            continue
        out[parts[0]] = int(parts[1])
    return out


def load_config(paths: Paths) -> dict[str, Any] | None:
    try:
        with open(paths.config_file, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("cannot read %s: %s", paths.config_file, err)
        return None
    return data if isinstance(data, dict) else None
