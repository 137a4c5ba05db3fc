"""OP_TAGS_GET / OP_TAGS_SET / OP_TAGS_DEL for the cluster, and the cluster tags file.

Until the master owns config.data (issue 5) the cluster's tags live in
``$DATA_DIR/ganeti-ng-cluster-tags.json`` (a sorted JSON list of strings,
written durably: temporary file, fsync, rename, fsync of the directory).
When config.data exists and has cluster tags they are the starting point the
first time the file is written. Other kinds (node, instance, nodegroup,
network) have no objects yet: they fail as Ganeti does for an unknown object
(OpPrereqError, "unknown_entity").

Validation is Ganeti's (objects.TaggableObject.ValidateTag, MAX_TAGS_PER_OBJ):
a tag is 1..128 characters of ``[\\w.+*/:@-]``, at most 4096 per object;
errors are TagError. Deleting a tag that is not there is OpPrereqError
"Tag(s) 'x' not found" (unknown_entity). Sets and deletes of one master are
serialized by a process-wide lock around the read-modify-write.

    read_cluster_tags(paths) -> sorted list
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
from masterd.jqueue.durable import write_durably
from masterd.luxi.protocol import GanetiError, OpExecError, OpPrereqError
from masterd.ops.base import Operation
from noded.paths import Paths

TAGS_FILE_NAME = "ganeti-ng-cluster-tags.json"
MAX_TAG_LEN = 128
MAX_TAGS_PER_OBJ = 4096
_VALID_TAG = re.compile(r"^[\w.+*/:@-]+$")
_lock = threading.Lock()


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


class _TagsOp(Operation):
    req_bgl: ClassVar[bool] = False

    def locks(self) -> list[Any]:
        kind = self.op.get("kind")
        if kind != "cluster":
            name = self.op.get("name")
            raise OpPrereqError(f"{str(kind).capitalize()} name {name} not found"
                                f" (this master has no {kind} objects yet)", "unknown_entity")
        return []

    def _tags(self) -> list[str]:
        tags = self.op.get("tags") or []
        for tag in tags:
            validate_tag(tag)
        return list(tags)


class TagsGet(_TagsOp):
    op_id: ClassVar[str] = "OP_TAGS_GET"

    async def exec(self) -> Any:
        return await asyncio.to_thread(read_cluster_tags, self.ctx.paths)


class TagsSet(_TagsOp):
    op_id: ClassVar[str] = "OP_TAGS_SET"

    async def exec(self) -> Any:
        wanted = self._tags()

        def add(tags: set[str]) -> None:
            new = tags | set(wanted)
            if len(new) > MAX_TAGS_PER_OBJ:
                raise OpExecError("Error while setting tag: Too many tags")
            tags.update(wanted)

        await asyncio.to_thread(_modify, self.ctx.paths, add)
        return None


class TagsDel(_TagsOp):
    op_id: ClassVar[str] = "OP_TAGS_DEL"

    async def exec(self) -> Any:
        wanted = self._tags()

        def delete(tags: set[str]) -> None:
            missing = sorted(set(wanted) - tags)
            if missing:
                names = ", ".join(f"'{t}'" for t in missing)
                raise OpPrereqError(f"Tag(s) {names} not found", "unknown_entity")
            tags.difference_update(wanted)

        await asyncio.to_thread(_modify, self.ctx.paths, delete)
        return None
