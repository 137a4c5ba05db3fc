"""Read-only access to the master's view of the cluster before config.data is managed (issue 5).

The ssconf files ($DATA_DIR/ssconf_<key>) and, when present, the
configuration file ($DATA_DIR/config.data) are the only sources: this module
reads them fresh on every call (they are small) and never writes.

Interface::

    ssconf_value(paths, key) -> str | None        stripped content, None if missing
    ssconf_lines(paths, key) -> list[str]          non-empty lines
    master_node(paths) -> str | None
    cluster_name(paths) -> str | None
    node_addresses(paths) -> {node name: primary ip}   (ssconf_node_primary_ips)
    known_nodes(paths) -> [names]                  ssconf_node_list, else [this host]
    load_config(paths) -> dict | None              config.data as JSON, None if absent/unreadable
"""

from __future__ import annotations

import json
import logging
from typing import Any

from noded.paths import Paths

log = logging.getLogger("masterd.ssconf")


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
