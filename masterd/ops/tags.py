"""OP_TAGS_GET / OP_TAGS_SET / OP_TAGS_DEL: the tags of the cluster, nodes, instances and node groups.

The cluster's tags live in ``$DATA_DIR/ganeti-ng-cluster-tags.json`` (a
sorted JSON list of strings, written durably: temporary file, fsync, rename,
fsync of the directory). When config.data exists and has cluster tags they
are the starting point the first time the file is written.

Nodes, instances and node groups keep their tags in config.data (each
object's ``tags`` list); a change bumps the object's and the
configuration's serial and is distributed like any configuration change.
Names are looked up as Ganeti does (an unknown one is OpPrereqError
"unknown_entity": "Node 'x' not known", "Instance 'x' not known", "Node
group 'x' not found"); the object's lock is taken (shared for a read).
Networks do not exist on this master: "Network 'x' not found". Any other
kind is "Wrong tag type requested (x)".

Validation is Ganeti's (objects.TaggableObject.ValidateTag, MAX_TAGS_PER_OBJ):
a tag is 1..128 characters of ``[\\w.+*/:@-]``, at most 4096 per object;
errors are TagError. Deleting a tag that is not there is OpPrereqError
"Tag(s) 'x' not found" (unknown_entity). Sets and deletes of one master are
serialized by a process-wide lock around the read-modify-write.

    read_cluster_tags(paths) -> sorted list
    object_tags(cfg, kind, name) -> list     (node, instance, nodegroup; OpPrereqError when unknown)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from masterd import ssconf
from masterd.config.model import ConfigData, ConfigError
from masterd.instances import model
from masterd.jqueue.durable import write_durably
from masterd.locking import Level
from masterd.luxi.protocol import GanetiError, OpExecError, OpPrereqError
from masterd.ops.base import LockRequest, Operation
from noded.paths import Paths

TAGS_FILE_NAME = "ganeti-ng-cluster-tags.json"
MAX_TAG_LEN = 128
MAX_TAGS_PER_OBJ = 4096
_VALID_TAG = re.compile(r"^[\w.+*/:@-]+$")
_lock = threading.Lock()
#: The kinds kept in config.data: (section, lock level).
CONFIG_KINDS = {"node": ("nodes", Level.NODE), "instance": ("instances", Level.INSTANCE),
                "nodegroup": ("nodegroups", Level.NODEGROUP)}


def tags_file(paths: Paths) -> str:
    return os.path.join(paths.data_dir, TAGS_FILE_NAME)


def read_cluster_tags(paths: Paths) -> list[str]:
    try:
        with open(tags_file(paths), encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        config = ssconf.load_config(paths)
        cluster = config.get("cluster") if config else None
        tags = cluster.get("tags") if isinstance(cluster, dict) else None
        return sorted(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else []
    except (OSError, ValueError) as err:
        raise OpExecError(f"Cannot read the cluster tags from {tags_file(paths)}: {err}") from err
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
        raise OpExecError(f"{tags_file(paths)} does not hold a list of tags")
    return sorted(data)


def validate_tag(tag: Any) -> None:
    if not isinstance(tag, str):
        raise GanetiError("TagError", "Invalid tag type (not a string)")
    if len(tag) > MAX_TAG_LEN:
        raise GanetiError("TagError", f"Tag too long (>{MAX_TAG_LEN} characters)")
    if not tag:
        raise GanetiError("TagError", "Tags cannot be empty")
    if not _VALID_TAG.match(tag):
        raise GanetiError("TagError", "Tag contains invalid characters")


def _modify(paths: Paths, change: Callable[[set[str]], None]) -> None:
    with _lock:
        tags = set(read_cluster_tags(paths))
        change(tags)
        data = (json.dumps(sorted(tags)) + "\n").encode()
        write_durably(tags_file(paths), data, 0o640)


def find_object(cfg: ConfigData, kind: str, name: str) -> tuple[str, str]:
    """(uuid, name) of the tagged object in config.data; Ganeti's errors for an unknown one."""
    if kind == "instance":
        found = model.find_instance(cfg, name)
        if found is None:
            raise OpPrereqError(f"Instance '{name}' not known", "unknown_entity")
        return found.uuid, found.name
    if kind == "node":
        try:
            node = cfg.lookup_node(name)
        except ConfigError:
            matches = [n for n in cfg.nodes() if n.name.split(".", 1)[0] == name]
            if len(matches) != 1:
                raise OpPrereqError(f"Node '{name}' not known", "unknown_entity") from None
            node = matches[0]
        return node.uuid, node.name
    if kind == "nodegroup":
        for uuid, raw in cfg.tree["nodegroups"].items():
            if name in (uuid, raw.get("name")):
                return uuid, str(raw.get("name", ""))
        raise OpPrereqError(f"Node group '{name}' not found", "unknown_entity")
    if kind == "network":
        raise OpPrereqError(f"Network '{name}' not found", "unknown_entity")
    raise OpPrereqError(f"Wrong tag type requested ({kind})", "wrong_input")


def object_tags(cfg: ConfigData, kind: str, name: str) -> list[str]:
    """The tags of a node, instance or node group of config.data."""
    uuid, _ = find_object(cfg, kind, name)
    section = CONFIG_KINDS[kind][0]
    return list(cfg.tree[section][uuid].get("tags") or [])


class _TagsOp(Operation):
    req_bgl: ClassVar[bool] = False
    shared: ClassVar[bool] = False

    def _cfg(self) -> ConfigData:
        if self.ctx.config is None or not self.ctx.config.present:
            kind = str(self.op.get("kind")).capitalize()
            raise OpPrereqError(f"{kind} name {self.op.get('name')} not found (this master has no"
                                " configuration)", "unknown_entity")
        return self.ctx.config.current

    def locks(self) -> list[LockRequest]:
        kind = str(self.op.get("kind"))
        if kind == "cluster":
            return []
        _, name = find_object(self._cfg(), kind, str(self.op.get("name") or ""))
        if kind == "nodegroup":
            return []
        return [(CONFIG_KINDS[kind][1], [name], self.shared)]

    def _tags(self) -> list[str]:
        tags = self.op.get("tags") or []
        for tag in tags:
            validate_tag(tag)
        return list(tags)

    async def _change(self, change: Callable[[set[str]], None]) -> None:
        """Apply `change` to the object's tags in config.data (one configuration change)."""
        assert self.ctx.config is not None
        kind = str(self.op.get("kind"))
        section = CONFIG_KINDS[kind][0]
        cfg = self._cfg()
        uuid, _ = find_object(cfg, kind, str(self.op.get("name") or ""))
        current = list(cfg.tree[section][uuid].get("tags") or [])
        tags = set(current)
        change(tags)  # raises before anything is written
        async with self.ctx.config.change() as new:
            raw = new.tree[section][uuid]
            raw["tags"] = [t for t in current if t in tags] + sorted(tags - set(current))
            raw["serial_no"] = int(raw.get("serial_no", 0)) + 1
            raw["mtime"] = new.now()
            new.bump()


class TagsGet(_TagsOp):
    op_id: ClassVar[str] = "OP_TAGS_GET"
    shared: ClassVar[bool] = True

    async def exec(self) -> Any:
        kind = str(self.op.get("kind"))
        if kind == "cluster":
            return await asyncio.to_thread(read_cluster_tags, self.ctx.paths)
        return object_tags(self._cfg(), kind, str(self.op.get("name") or ""))


def _adder(wanted: list[str]) -> Callable[[set[str]], None]:
    def add(tags: set[str]) -> None:
        new = tags | set(wanted)
        if len(new) > MAX_TAGS_PER_OBJ:
            raise OpExecError("Error while setting tag: Too many tags")
        tags.update(wanted)
    return add


def _deleter(wanted: list[str]) -> Callable[[set[str]], None]:
    def delete(tags: set[str]) -> None:
        missing = sorted(set(wanted) - tags)
        if missing:
            names = ", ".join(f"'{t}'" for t in missing)
            raise OpPrereqError(f"Tag(s) {names} not found", "unknown_entity")
        tags.difference_update(wanted)
    return delete


class TagsSet(_TagsOp):
    op_id: ClassVar[str] = "OP_TAGS_SET"

    async def exec(self) -> Any:
        wanted = self._tags()
        if self.op.get("kind") == "cluster":
            await asyncio.to_thread(_modify, self.ctx.paths, _adder(wanted))
        else:
            await self._change(_adder(wanted))
        return None


class TagsDel(_TagsOp):
    op_id: ClassVar[str] = "OP_TAGS_DEL"

    async def exec(self) -> Any:
        wanted = self._tags()
        if self.op.get("kind") == "cluster":
            await asyncio.to_thread(_modify, self.ctx.paths, _deleter(wanted))
        else:
            await self._change(_deleter(wanted))
        return None
