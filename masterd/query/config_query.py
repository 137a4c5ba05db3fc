"""Query / QueryNodes / QueryGroups answered from the master's config.data.

Selection follows luxid: a filter that is an OR of name equalities (or the
classic calls' name list) selects those objects, in the order asked, and an
unknown name fails with ``OpPrereqError("<Kind> name X not found",
"unknown_entity")``; otherwise every object is a candidate, sorted by name
(Ganeti's natural order), and the filter decides. A name matches a node or
group whose name is equal, whose short name (before the first dot) is
equal, or whose uuid is equal. Node live data is gathered (in parallel, only
from online nodes) only when a live field is asked for and only for the
selected nodes (masterd.query.nodes).

Interface::

    await query_from_config(what, cfg, rpc, fields, qfilter) -> Query answer   (what: node, group)
    await classic_from_config(what, cfg, rpc, names, fields) -> [[value, ...], ...]
    RESOURCES: the resources answered here
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from masterd.config.model import ConfigData
from masterd.query.engine import classic_rows, run_query
from masterd.query.errors import OpPrereqError
from masterd.query.fields import nice_sort_key
from masterd.query.filter import requested_names
from masterd.query.groups import group_items, group_resource
from masterd.query.nodes import gather_live, needs_live, node_items, node_resource
from masterd.rpc import NodeRpcClient

RESOURCES = ("node", "group")
_KINDS = {"node": "Node", "group": "Group"}
ECODE_NOENT = "unknown_entity"


def _objects(cfg: ConfigData, what: str) -> list[tuple[str, str]]:
    """(uuid, name) of every object of the resource, in natural name order."""
    if what == "node":
        pairs = [(node.uuid, node.name) for node in cfg.nodes()]
    else:
        pairs = [(group.uuid, group.name) for group in cfg.groups()]
    return sorted(pairs, key=lambda pair: nice_sort_key(pair[1]))


def _match(pairs: Sequence[tuple[str, str]], wanted: Any) -> str | None:
    if not isinstance(wanted, str):
        return None
    for uuid, name in pairs:
        if wanted in (name, uuid):
            return uuid
    short = [uuid for uuid, name in pairs if name.split(".", 1)[0] == wanted]
    return short[0] if len(short) == 1 else None


def select(cfg: ConfigData, what: str, names: Sequence[Any]) -> list[str]:
    """uuids of the named objects in the order asked (all, by name, when `names` is empty)."""
    pairs = _objects(cfg, what)
    if not names:
        return [uuid for uuid, _ in pairs]
    out: list[str] = []
    for wanted in names:
        uuid = _match(pairs, wanted)
        if uuid is None:
            raise OpPrereqError(f"{_KINDS[what]} name {wanted} not found", ECODE_NOENT)
        if uuid not in out:
            out.append(uuid)
    return out


async def _answer(what: str, cfg: ConfigData, rpc: NodeRpcClient | None, uuids: list[str],
                  fields: Sequence[str], qfilter: Any) -> dict[str, Any]:
    if what == "node":
        nodes = [cfg.node(uuid) for uuid in uuids]
        live = await gather_live(cfg, rpc, nodes) if needs_live(fields, qfilter) else None
        return run_query(node_resource(), fields, qfilter, node_items(cfg, nodes, live))
    return run_query(group_resource(), fields, qfilter, group_items(cfg, uuids))


async def query_from_config(what: str, cfg: ConfigData, rpc: NodeRpcClient | None, fields: Sequence[str],
                            qfilter: Any) -> dict[str, Any]:
    """The Query answer for `what` (node or group)."""
    resource = node_resource() if what == "node" else group_resource()
    names = requested_names(qfilter, resource.namefield)
    uuids = select(cfg, what, names or [])
    return await _answer(what, cfg, rpc, uuids, fields, qfilter)


async def classic_from_config(what: str, cfg: ConfigData, rpc: NodeRpcClient | None, names: Sequence[str],
                              fields: Sequence[str]) -> list[list[Any]]:
    """The QueryNodes / QueryGroups answer: plain rows (unknown fields refused)."""
    uuids = select(cfg, what, list(names or []))
    return classic_rows(await _answer(what, cfg, rpc, uuids, fields, None))
