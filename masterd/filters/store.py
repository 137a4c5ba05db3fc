"""Durable storage of the job filter rules until the cluster configuration exists (issue 5).

The rules live in ``$DATA_DIR/job-filters.json`` (Paths.data_dir, so
GANETI_ROOTDIR-aware), a JSON object ``{uuid: rule}`` whose values have the
shape of the ``filters`` entries of Ganeti's config.data (uuid, watermark,
priority, predicates, action, reason_trail), so the move into config.data is
a copy. Every change rewrites the whole file with masterd.jqueue.durable
(temporary file, fsync, rename, fsync of the directory) before it is visible
in memory: a rule the client was told about survives any crash.

A missing file means no rules. An unreadable or malformed file stops
`load()` with `FilterStoreError` naming the file, rather than silently
dropping rules someone relies on (e.g. a REJECT during a maintenance).

Interface::

    store = FilterStore.for_paths(paths)      # or FilterStore(path)
    store.load()                              # at start (blocking I/O)
    store.ordered() -> tuple[FilterRule, ...] # by (priority, watermark, uuid); cheap, cached
    store.get(uuid) -> FilterRule | None
    store.replace(rule)                       # blocking I/O; durable before it returns
    store.delete(uuid) -> bool                # False when there was no such rule
Thread-safe: changes are serialized by a lock (call them from worker threads).
"""

from __future__ import annotations

import json
import os
import threading

from masterd.filters.rules import FilterRule, RuleError, order_rules
from masterd.jqueue.durable import write_durably
from noded.paths import Paths

FILE_NAME = "job-filters.json"
FILE_MODE = 0o640


class FilterStoreError(Exception):
    """The rules file cannot be read or is malformed."""


class FilterStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._rules: dict[str, FilterRule] = {}
        self._ordered: tuple[FilterRule, ...] = ()

    @classmethod
    def for_paths(cls, paths: Paths) -> FilterStore:
        return cls(os.path.join(paths.data_dir, FILE_NAME))

    def load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                document = json.load(handle)
        except FileNotFoundError:
            document = {}
        except (OSError, ValueError) as err:
            raise FilterStoreError(f"cannot read the job filter rules in {self.path}: {err}") from None
        if not isinstance(document, dict):
            raise FilterStoreError(f"{self.path} must hold a JSON object {{uuid: rule}}")
        rules: dict[str, FilterRule] = {}
        for uuid, data in document.items():
            try:
                rule = FilterRule.from_dict(data)
            except RuleError as err:
                raise FilterStoreError(f"{self.path}: rule {uuid}: {err}") from None
            if rule.uuid != uuid:
                raise FilterStoreError(f"{self.path}: rule stored under {uuid} says uuid {rule.uuid}")
            rules[uuid] = rule
        with self._lock:
            self._set(rules)

    def _set(self, rules: dict[str, FilterRule]) -> None:
        self._rules = rules
        self._ordered = tuple(order_rules(rules.values()))

    def _write(self, rules: dict[str, FilterRule]) -> None:
        data = json.dumps({u: r.to_dict() for u, r in sorted(rules.items())}, indent=1, sort_keys=True)
        write_durably(self.path, (data + "\n").encode(), FILE_MODE)

    def ordered(self) -> tuple[FilterRule, ...]:
        return self._ordered

    def get(self, uuid: str) -> FilterRule | None:
        return self._rules.get(uuid)

    def replace(self, rule: FilterRule) -> None:
        with self._lock:
            rules = dict(self._rules)
            rules[rule.uuid] = rule
            self._write(rules)
            self._set(rules)

    def delete(self, uuid: str) -> bool:
        with self._lock:
            if uuid not in self._rules:
                return False
            rules = {u: r for u, r in self._rules.items() if u != uuid}
            self._write(rules)
            self._set(rules)
            return True
