"""The `job` query resource: field getters over serialized jobs, and job selection as luxid does it.

A job is the dict of its file (job-queue.md §3: `id`, `ops` with `input`,
`status`, `result`, `log`, `priority` and the three op timestamps,
`received_timestamp`, `start_timestamp`, `end_timestamp`). Items of this
resource are `JobItem(job_id, job, archived)`; `job` is None for a job that
cannot be found or read, and then every field but `id` is RS_UNAVAIL.

Fields (all 16 of the real luxid): id, status (derived from the opcode
statuses), priority (lowest number among unfinished opcodes, else 0),
archived, ops, opresult, opstatus, oplog, opstart, opexec, opend (null
inside the lists when not set), oppriority, summary, received_ts,
start_ts, end_ts (RS_UNAVAIL when not set; they compare as float seconds in
filters). `ops` is the stored opcode input as is (luxid re-serializes it
through its typed model, dropping null optional parameters).

Selection (luxi-protocol.md §8.4, luxid's queryJobs): an "OR of ==" filter on
`id` asks for those jobs, in that order, deduplicated, archived ones included
and missing ones as rows `[[0, id], [3, null], ...]`; ids may be numbers or
numeric strings. Any other filter (or none) runs over every live job, plus
the archived ones when the field list names `archived`, sorted by id.

Interface
    `JobSource` protocol: `live_job_ids()`, `archived_job_ids()`,
    `load_job(job_id) -> (job dict, archived) | None`. `QueueDirJobSource(dir)`
    implements it read-only over a queue directory (`job-<id>`,
    `archive/<n>/job-<id>`); the job queue can offer its own implementation.
    `job_resource()`: the Resource of the job fields.
    `query_jobs(source, fields, qfilter)`: the Query answer.
    `query_jobs_classic(source, job_ids, fields)`: the QueryJobs answer.
    `job_field_values(job_id, job, fields, archived)`: plain values of one
    in-memory job (what WaitForJobChange reports); unknown fields refused.
    `job_status(job)`, `job_priority(job)`, `op_summary(op_input)`: the
    derived values, usable by the job queue too.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from masterd.opcodes.validate import default_definitions
from masterd.query.engine import Resource, classic_rows, run_query
from masterd.query.errors import ECODE_INVAL, OpPrereqError
from masterd.query.fields import FLAG_JOB_ID, FLAG_SPLIT_TIMESTAMP, UNAVAILABLE, Entry, FieldRegistry, normal
from masterd.query.filter import compile_filter, requested_names

JOB_FILE_RE = re.compile(r"^job-(\d+)$")
ARCHIVED_FIELD = "archived"
FINALIZED = frozenset({"success", "error", "canceled"})
OP_PRIO_DEFAULT = 0

class JobSource(Protocol):
    """Where the job query finds jobs."""

    def live_job_ids(self) -> list[int]: ...

    def archived_job_ids(self) -> list[int]: ...

    def load_job(self, job_id: int) -> tuple[dict[str, Any], bool] | None: ...


class QueueDirJobSource:
    """Read-only jobs of a queue directory: `job-<id>` and `archive/<id // 10000>/job-<id>`."""

    def __init__(self, queue_dir: str) -> None:
        self.queue_dir = queue_dir
        self.archive_dir = os.path.join(queue_dir, "archive")

    @staticmethod
    def _ids_in(directory: str) -> list[int]:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        return [int(m.group(1)) for m in map(JOB_FILE_RE.match, names) if m]

    def live_job_ids(self) -> list[int]:
        return sorted(self._ids_in(self.queue_dir))

    def archived_job_ids(self) -> list[int]:
        ids: list[int] = []
        try:
            subdirs = os.listdir(self.archive_dir)
        except FileNotFoundError:
            return []
        for sub in subdirs:
            if sub.isdigit():
                ids.extend(self._ids_in(os.path.join(self.archive_dir, sub)))
        return sorted(ids)

    @staticmethod
    def _read(path: str) -> dict[str, Any] | None:
        try:
            with open(path, encoding="utf-8") as handle:
                job = json.load(handle)
        except (OSError, ValueError):
            return None
        return job if isinstance(job, dict) and isinstance(job.get("ops"), list) else None

    def load_job(self, job_id: int) -> tuple[dict[str, Any], bool] | None:
        live = self._read(os.path.join(self.queue_dir, f"job-{job_id}"))
        if live is not None:
            return live, False
        archived = self._read(os.path.join(self.archive_dir, str(job_id // 10000), f"job-{job_id}"))
        return (archived, True) if archived is not None else None


class JobItem(NamedTuple):
    """One row's subject: the job id, its dict (None if missing) and whether it is archived."""

    job_id: int
    job: dict[str, Any] | None
    archived: bool


def _ops(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [op if isinstance(op, dict) else {} for op in job.get("ops") or []]


def job_status(job: dict[str, Any]) -> str:
    """The job status from its opcode statuses (job-queue.md §5, luxid's calcJobStatus)."""
    status = "queued"
    all_success = True
    for op in _ops(job):
        op_status = op.get("status")
        if op_status == "success":
            continue
        all_success = False
        if op_status in ("error", "canceling", "canceled"):
            return str(op_status)
        if op_status in ("waiting", "running"):
            status = str(op_status)
    return "success" if all_success else status


def _op_priority(op: dict[str, Any]) -> Any:
    if "priority" in op:
        return op["priority"]
    source = op.get("input")
    return source.get("priority", OP_PRIO_DEFAULT) if isinstance(source, dict) else OP_PRIO_DEFAULT


def job_priority(job: dict[str, Any]) -> Any:
    """The lowest priority number among unfinished opcodes, or 0 when all are finished."""
    pending = [_op_priority(op) for op in _ops(job) if op.get("status") not in FINALIZED]
    return min(pending) if pending else OP_PRIO_DEFAULT


def haskell_show_double(value: float) -> str:
    """A float as Haskell's `show` prints it (luxid formats TEST_DELAY's duration so).

    Fixed notation for 0.1 <= |x| < 10^7 ("1.0", "0.5", "12.25"), otherwise
    scientific with at least one decimal ("1.0e-3", "1.5e7"); the digits are
    the shortest that round-trip, as in Python's repr.
    """
    if value != value or value in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]
    if value == 0:
        return "-0.0" if str(value).startswith("-") else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_tuple.digits)
    exponent = len(digits) + int(digits_tuple.exponent)  # value = 0.d1d2... * 10^exponent
    if 0 < exponent <= 7:
        whole, frac = digits[:exponent], digits[exponent:]
        whole = whole + "0" * (exponent - len(whole))
        return f"{sign}{whole}.{frac or '0'}"
    if exponent == 0:  # 0.1 <= x < 1
        return f"{sign}0.{digits}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}e{exponent - 1}"


def _summary_value(op_id: str, value: Any) -> str:
    if op_id == "OP_TEST_DELAY" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return haskell_show_double(float(value))
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def op_summary(op_input: Any) -> str:
    """`OP_ID` without `OP_`, plus `(<key parameter>)` for opcodes that have one.

    The key parameter is Ganeti's OP_DSC_FIELD (opcodes.json's summary_field);
    luxid's list is the same. An input without a valid OP_ID is INVALID_OP.
    """
    if not isinstance(op_input, dict):
        return "INVALID_OP"
    op_id = op_input.get("OP_ID")
    if not isinstance(op_id, str) or not op_id.startswith("OP_"):
        return "INVALID_OP"
    text = op_id[3:]
    opdef = default_definitions().get(op_id)
    key = opdef.summary_field if opdef is not None else None
    if key is not None:
        text += "(" + _summary_value(op_id, op_input.get(key)) + ")"
    return text


def _job_field(fn: Callable[[dict[str, Any]], Any]) -> Callable[[JobItem], Entry]:
    def getter(item: JobItem) -> Entry:
        return UNAVAILABLE if item.job is None else normal(fn(item.job))
    return getter


def _ops_field(fn: Callable[[dict[str, Any]], Any]) -> Callable[[JobItem], Entry]:
    return _job_field(lambda job: [fn(op) for op in _ops(job)])


def _timestamp_field(key: str) -> Callable[[JobItem], Entry]:
    def getter(item: JobItem) -> Entry:
        if item.job is None or item.job.get(key) is None:
            return UNAVAILABLE
        return normal(item.job[key])
    return getter


def _archived(item: JobItem) -> Entry:
    return UNAVAILABLE if item.job is None else normal(item.archived)


JOB_GETTERS: dict[str, Callable[[JobItem], Entry]] = {
    "id": lambda item: normal(item.job_id),
    "status": _job_field(job_status),
    "priority": _job_field(job_priority),
    "archived": _archived,
    "ops": _ops_field(lambda op: op.get("input")),
    "opresult": _ops_field(lambda op: op.get("result")),
    "opstatus": _ops_field(lambda op: op.get("status")),
    "oplog": _ops_field(lambda op: op.get("log") or []),
    "opstart": _ops_field(lambda op: op.get("start_timestamp")),
    "opexec": _ops_field(lambda op: op.get("exec_timestamp")),
    "opend": _ops_field(lambda op: op.get("end_timestamp")),
    "oppriority": _ops_field(_op_priority),
    "summary": _ops_field(lambda op: op_summary(op.get("input"))),
    "received_ts": _timestamp_field("received_timestamp"),
    "start_ts": _timestamp_field("start_timestamp"),
    "end_ts": _timestamp_field("end_timestamp"),
}

_JOB_FLAGS = {name: frozenset({FLAG_SPLIT_TIMESTAMP}) for name in ("received_ts", "start_ts", "end_ts")}
_JOB_FLAGS["id"] = frozenset({FLAG_JOB_ID})


def job_resource(registry: FieldRegistry | None = None) -> Resource[JobItem]:
    """The job resource: the real luxid's 16 job fields with their getters (built once by default)."""
    if registry is None:
        return _default_job_resource()
    return Resource.from_registry("job", registry, JOB_GETTERS, namefield="id", flags=_JOB_FLAGS)


@functools.cache
def _default_job_resource() -> Resource[JobItem]:
    return job_resource(FieldRegistry.load())


def parse_job_id(value: Any) -> int:
    """A job id from an int or a numeric string (luxid accepts both)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise OpPrereqError(f"Invalid job ID '{value}': expected a non-negative integer or a numeric string",
                        ECODE_INVAL)


def _dedup(ids: Sequence[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for job_id in ids:
        if job_id not in seen:
            seen.add(job_id)
            out.append(job_id)
    return out


def _selected_ids(source: JobSource, fields: Sequence[str], qfilter: Any) -> list[int]:
    wanted = requested_names(qfilter, "id")
    if wanted:
        return _dedup([parse_job_id(v) for v in wanted])
    ids = list(source.live_job_ids())
    if ARCHIVED_FIELD in fields:
        ids.extend(source.archived_job_ids())
    return sorted(set(ids))


def _items(source: JobSource, ids: Sequence[int]) -> list[JobItem]:
    items = []
    for job_id in ids:
        loaded = source.load_job(job_id)
        if loaded is None:
            items.append(JobItem(job_id, None, False))
        else:
            items.append(JobItem(job_id, loaded[0], loaded[1]))
    return items


def query_jobs(source: JobSource, fields: Sequence[str], qfilter: Any,
               resource: Resource[JobItem] | None = None) -> dict[str, Any]:
    """Query(job, fields, qfilter): the Query answer, rows selected as luxid does."""
    resource = resource or job_resource()
    compile_filter(qfilter, resource.specs)  # refuse a bad filter before touching the disk
    ids = _selected_ids(source, fields, qfilter)
    return run_query(resource, fields, qfilter, _items(source, ids))


def query_jobs_classic(source: JobSource, job_ids: Sequence[Any] | None, fields: Sequence[str],
                       resource: Resource[JobItem] | None = None) -> list[list[Any]]:
    """QueryJobs(job_ids or null, fields): plain rows; a missing job gives its id and nulls."""
    qfilter = ["|", *(["==", "id", parse_job_id(j)] for j in job_ids)] if job_ids else None
    return classic_rows(query_jobs(source, fields, qfilter, resource))


def job_field_values(job_id: int, job: dict[str, Any] | None, fields: Sequence[str], archived: bool = False,
                     resource: Resource[JobItem] | None = None) -> list[Any]:
    """The plain values of `fields` for one job (None where a value is not available)."""
    resource = resource or job_resource()
    response = run_query(resource, fields, None, [JobItem(job_id, job, archived)])
    return classic_rows(response)[0]
