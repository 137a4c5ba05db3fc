"""Every LUXI method, its argument shape, and the handler interface they are dispatched to.

Facts: /work/shared/reference/luxi-protocol.md section 6 (and 7 for
WaitForJobChange). Interface offered to the master daemon:

* `METHODS`: name -> `MethodSpec(name, handler_attr, params)`, one entry per
  LUXI method of Ganeti 3.0 (constants.LUXI_REQ_ALL).
* `validate_args(method, args) -> list`: checks the positional arguments
  against the spec and returns them normalised (job ids as `int`, optional
  trailing arguments filled with their default, the WaitForJobChange
  timeout capped at `WFJC_TIMEOUT_MAX`). Raises
  `protocol.RequestParseError` naming the method and the argument (with the
  index of a bad list element) for an unknown method or a wrong shape.
* `LuxiHandler`: a `typing.Protocol` with one `async` method per LUXI
  method, snake_case, taking the validated arguments in order.
  `UnimplementedHandler` implements all of them by raising
  `GenericError("LUXI method X is not implemented by this server")`;
  subclass it to implement a few.
* `dispatch(handler, request) -> result`: validate, then await the handler
  method. Handlers signal failures by raising `protocol.LuxiError`
  subclasses; anything else they raise is a bug that the server reports as
  GenericError.

Only shapes are checked here (types, lists of ids, enumerations of the
protocol itself such as the tag kinds). Semantics (known opcodes, opcode
parameters, known query resources and fields, filter syntax) are the
handler's, which must raise a GanetiError naming the parameter at fault.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from masterd.luxi.protocol import GenericError, LuxiRequest, RequestParseError, json_type

#: luxid caps the WaitForJobChange timeout at this many seconds (LUXI_WFJC_TIMEOUT).
WFJC_TIMEOUT_MAX = 89

#: QueryTags kinds (constants.VALID_TAG_TYPES).
TAG_KINDS = ("cluster", "instance", "network", "node", "nodegroup")

_NUMERIC_ID = re.compile(r"[0-9]+")


class ArgError(Exception):
    """A value does not have the expected shape; `what` says what was expected."""

    def __init__(self, what: str, path: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.path = path  # e.g. "[2]" for the third element of a list argument


Check = Callable[[Any], Any]


# --------------------------------------------------------------------------
# Shape checks: each returns the normalised value or raises ArgError.


def _got(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"got {json_type(value)} {text}"


def job_id(value: Any) -> int:
    """A job id: a non-negative integer or a string of digits (what `gnt-job watch 14` sends)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _NUMERIC_ID.fullmatch(value):
        return int(value)
    raise ArgError(f"must be a job id (a non-negative integer or a numeric string), {_got(value)}")


def string(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ArgError(f"must be a string, {_got(value)}")


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ArgError(f"must be a boolean, {_got(value)}")


def integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ArgError(f"must be an integer, {_got(value)}")


def number(value: Any) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise ArgError(f"must be a number, {_got(value)}")


def json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise ArgError(f"must be a JSON object, {_got(value)}")


def json_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    raise ArgError(f"must be a list, {_got(value)}")


def any_value(value: Any) -> Any:
    return value


def list_of(item: Check, what: str) -> Check:
    """A list whose elements pass `item`; errors name the element index."""

    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ArgError(f"must be a list of {what}, {_got(value)}")
        out = []
        for index, element in enumerate(value):
            try:
                out.append(item(element))
            except ArgError as err:
                raise ArgError(err.what, f"[{index}]{err.path}") from None
        return out

    return check


def nullable(inner: Check) -> Check:
    def check(value: Any) -> Any:
        if value is None:
            return None
        try:
            return inner(value)
        except ArgError as err:
            if err.path:  # an element of the value is wrong, not the value itself
                raise
            raise ArgError(err.what.replace("must be ", "must be null or ", 1)) from None

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        raise ArgError(f"must be one of {', '.join(choices)}; {_got(value)}")

    return check


def non_negative_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ArgError(f"must be a non-negative integer, {_got(value)}")


def wfjc_timeout(value: Any) -> int | float:
    """Seconds to wait, >= 0, capped at WFJC_TIMEOUT_MAX like luxid."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return min(value, WFJC_TIMEOUT_MAX)
    raise ArgError(f"must be a non-negative number of seconds, {_got(value)}")


def tag_name(value: Any) -> str:
    """The tagged object's name; null is taken as "" (the cluster)."""
    if value is None:
        return ""
    return string(value)


def filter_action(value: Any) -> Any:
    """ACCEPT, PAUSE, REJECT, CONTINUE or ["RATE_LIMIT", n]."""
    if value in ("ACCEPT", "PAUSE", "REJECT", "CONTINUE"):
        return value
    if (isinstance(value, list) and len(value) == 2 and value[0] == "RATE_LIMIT"
            and isinstance(value[1], int) and not isinstance(value[1], bool)):
        return value
    raise ArgError(f'must be "ACCEPT", "PAUSE", "REJECT", "CONTINUE" or ["RATE_LIMIT", n], {_got(value)}')


opcodes = list_of(json_object, "opcode objects")
strings = list_of(string, "strings")
job_ids = list_of(job_id, "job ids")


# --------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Param:
    """One positional argument; `optional` ones may be left off the end and get `default`."""

    name: str
    check: Check
    optional: bool = False
    default: Any = None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    handler_attr: str
    params: tuple[Param, ...]

    @property
    def signature(self) -> str:
        parts = [f"{p.name}?" if p.optional else p.name for p in self.params]
        return f"{self.name}[{', '.join(parts)}]"


def _spec(name: str, attr: str, *params: Param) -> MethodSpec:
    return MethodSpec(name, attr, params)


_CLASSIC_QUERY = (Param("names", strings), Param("fields", strings), Param("use_locking", boolean))

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    # 6.1 job submission
    _spec("SubmitJob", "submit_job", Param("ops", opcodes)),
    _spec("SubmitJobToDrainedQueue", "submit_job_to_drained_queue", Param("ops", opcodes)),
    _spec("SubmitManyJobs", "submit_many_jobs",
          Param("jobs", list_of(opcodes, "jobs (each a list of opcode objects)"))),
    _spec("PickupJob", "pickup_job", Param("job_id", job_id)),
    # 6.2 job tracking and control
    _spec("WaitForJobChange", "wait_for_job_change",
          Param("job_id", job_id), Param("fields", strings), Param("prev_job_info", nullable(json_list)),
          Param("prev_log_serial", nullable(integer)), Param("timeout", wfjc_timeout)),
    _spec("QueryJobs", "query_jobs", Param("job_ids", nullable(job_ids)), Param("fields", strings)),
    _spec("CancelJob", "cancel_job", Param("job_id", job_id),
          Param("kill", boolean, optional=True, default=False)),
    _spec("ChangeJobPriority", "change_job_priority", Param("job_id", job_id), Param("priority", integer)),
    _spec("ArchiveJob", "archive_job", Param("job_id", job_id)),
    _spec("AutoArchiveJobs", "auto_archive_jobs", Param("age", number), Param("timeout", number)),
    _spec("SetDrainFlag", "set_drain_flag", Param("drain_flag", boolean)),
    _spec("SetWatcherPause", "set_watcher_pause", Param("until", nullable(number))),
    # 6.3 queries
    _spec("Query", "query", Param("what", string), Param("fields", strings),
          Param("qfilter", nullable(json_list))),
    _spec("QueryFields", "query_fields", Param("what", string), Param("fields", nullable(strings))),
    _spec("QueryNodes", "query_nodes", *_CLASSIC_QUERY),
    _spec("QueryInstances", "query_instances", *_CLASSIC_QUERY),
    _spec("QueryGroups", "query_groups", *_CLASSIC_QUERY),
    _spec("QueryNetworks", "query_networks", *_CLASSIC_QUERY),
    _spec("QueryExports", "query_exports", Param("nodes", strings), Param("use_locking", boolean)),
    _spec("QueryClusterInfo", "query_cluster_info"),
    _spec("QueryConfigValues", "query_config_values", Param("names", strings)),
    _spec("QueryTags", "query_tags", Param("kind", one_of(*TAG_KINDS)), Param("name", tag_name)),
    _spec("QueryFilters", "query_filters", Param("uuids", nullable(strings)), Param("fields", strings)),
    _spec("ReplaceFilter", "replace_filter", Param("uuid", nullable(string)),
          Param("priority", non_negative_int), Param("predicates", json_list),
          Param("action", filter_action), Param("reason", json_list)),
    _spec("DeleteFilter", "delete_filter", Param("uuid", string)),
)}


def method_spec(method: str) -> MethodSpec:
    """The spec of a method; RequestParseError (listing the known ones) if there is none."""
    spec = METHODS.get(method)
    if spec is None:
        raise RequestParseError(
            f"Unable to parse LUXI request method: unknown method {method!r} "
            f"(known: {', '.join(sorted(METHODS))})")
    return spec


def validate_args(method: str, args: list[Any]) -> list[Any]:
    """The normalised positional arguments of a call, or RequestParseError naming the culprit."""
    spec = method_spec(method)
    required = sum(1 for p in spec.params if not p.optional)
    if not required <= len(args) <= len(spec.params):
        count = str(required) if required == len(spec.params) else f"{required} to {len(spec.params)}"
        raise RequestParseError(
            f"{method} takes {count} argument(s) {spec.signature}, got {len(args)}")
    out = []
    for position, param in enumerate(spec.params):
        if position >= len(args):
            out.append(param.default)
            continue
        try:
            out.append(param.check(args[position]))
        except ArgError as err:
            raise RequestParseError(
                f"{method}: argument {position + 1} ({param.name}{err.path}) {err.what}") from None
    return out


# --------------------------------------------------------------------------
# The handler interface


class LuxiHandler(Protocol):
    """What the LUXI server calls, one coroutine per method, with validated arguments.

    Results are native JSON values, exactly the `result` of the response.
    Failures are raised as `masterd.luxi.protocol.LuxiError` subclasses.
    """

    async def submit_job(self, ops: list[dict[str, Any]]) -> int: ...
    async def submit_job_to_drained_queue(self, ops: list[dict[str, Any]]) -> int: ...
    async def submit_many_jobs(self, jobs: list[list[dict[str, Any]]]) -> list[list[Any]]: ...
    async def pickup_job(self, job_id: int) -> Any: ...
    async def wait_for_job_change(self, job_id: int, fields: list[str], prev_job_info: list[Any] | None,
                                  prev_log_serial: int | None, timeout: float) -> Any: ...
    async def query_jobs(self, job_ids: list[int] | None, fields: list[str]) -> list[list[Any]]: ...
    async def cancel_job(self, job_id: int, kill: bool) -> list[Any]: ...
    async def change_job_priority(self, job_id: int, priority: int) -> list[Any]: ...
    async def archive_job(self, job_id: int) -> bool: ...
    async def auto_archive_jobs(self, age: float, timeout: float) -> list[int]: ...
    async def set_drain_flag(self, drain_flag: bool) -> bool: ...
    async def set_watcher_pause(self, until: float | None) -> float | None: ...
    async def query(self, what: str, fields: list[str], qfilter: list[Any] | None) -> dict[str, Any]: ...
    async def query_fields(self, what: str, fields: list[str] | None) -> dict[str, Any]: ...
    async def query_nodes(self, names: list[str], fields: list[str],
                          use_locking: bool) -> list[list[Any]]: ...
    async def query_instances(self, names: list[str], fields: list[str],
                              use_locking: bool) -> list[list[Any]]: ...
    async def query_groups(self, names: list[str], fields: list[str],
                           use_locking: bool) -> list[list[Any]]: ...
    async def query_networks(self, names: list[str], fields: list[str],
                             use_locking: bool) -> list[list[Any]]: ...
    async def query_exports(self, nodes: list[str], use_locking: bool) -> Any: ...
    async def query_cluster_info(self) -> dict[str, Any]: ...
    async def query_config_values(self, names: list[str]) -> list[Any]: ...
    async def query_tags(self, kind: str, name: str) -> list[str]: ...
    async def query_filters(self, uuids: list[str] | None, fields: list[str]) -> list[list[Any]]: ...
    async def replace_filter(self, uuid: str | None, priority: int, predicates: list[Any], action: Any,
                             reason: list[Any]) -> str: ...
    async def delete_filter(self, uuid: str) -> None: ...


def _not_implemented(method: str) -> GenericError:
    return GenericError(f"LUXI method {method} is not implemented by this server")


class UnimplementedHandler:
    """A LuxiHandler whose every method fails with GenericError; subclass it to implement some."""

    async def submit_job(self, ops: list[dict[str, Any]]) -> int:
        raise _not_implemented("SubmitJob")

    async def submit_job_to_drained_queue(self, ops: list[dict[str, Any]]) -> int:
        raise _not_implemented("SubmitJobToDrainedQueue")

    async def submit_many_jobs(self, jobs: list[list[dict[str, Any]]]) -> list[list[Any]]:
        raise _not_implemented("SubmitManyJobs")

    async def pickup_job(self, job_id: int) -> Any:
        # luxid's answer to every PickupJob.
        raise GenericError("Luxi call 'PickupJob' is for internal use only")

    async def wait_for_job_change(self, job_id: int, fields: list[str], prev_job_info: list[Any] | None,
                                  prev_log_serial: int | None, timeout: float) -> Any:
        raise _not_implemented("WaitForJobChange")

    async def query_jobs(self, job_ids: list[int] | None, fields: list[str]) -> list[list[Any]]:
        raise _not_implemented("QueryJobs")

    async def cancel_job(self, job_id: int, kill: bool) -> list[Any]:
        raise _not_implemented("CancelJob")

    async def change_job_priority(self, job_id: int, priority: int) -> list[Any]:
        raise _not_implemented("ChangeJobPriority")

    async def archive_job(self, job_id: int) -> bool:
        raise _not_implemented("ArchiveJob")

    async def auto_archive_jobs(self, age: float, timeout: float) -> list[int]:
        raise _not_implemented("AutoArchiveJobs")

    async def set_drain_flag(self, drain_flag: bool) -> bool:
        raise _not_implemented("SetDrainFlag")

    async def set_watcher_pause(self, until: float | None) -> float | None:
        raise _not_implemented("SetWatcherPause")

    async def query(self, what: str, fields: list[str], qfilter: list[Any] | None) -> dict[str, Any]:
        raise _not_implemented("Query")

    async def query_fields(self, what: str, fields: list[str] | None) -> dict[str, Any]:
        raise _not_implemented("QueryFields")

    async def query_nodes(self, names: list[str], fields: list[str], use_locking: bool) -> list[list[Any]]:
        raise _not_implemented("QueryNodes")

    async def query_instances(self, names: list[str], fields: list[str],
                              use_locking: bool) -> list[list[Any]]:
        raise _not_implemented("QueryInstances")

    async def query_groups(self, names: list[str], fields: list[str], use_locking: bool) -> list[list[Any]]:
        raise _not_implemented("QueryGroups")

    async def query_networks(self, names: list[str], fields: list[str],
                             use_locking: bool) -> list[list[Any]]:
        raise _not_implemented("QueryNetworks")

    async def query_exports(self, nodes: list[str], use_locking: bool) -> Any:
        raise _not_implemented("QueryExports")

    async def query_cluster_info(self) -> dict[str, Any]:
        raise _not_implemented("QueryClusterInfo")

    async def query_config_values(self, names: list[str]) -> list[Any]:
        raise _not_implemented("QueryConfigValues")

    async def query_tags(self, kind: str, name: str) -> list[str]:
        raise _not_implemented("QueryTags")

    async def query_filters(self, uuids: list[str] | None, fields: list[str]) -> list[list[Any]]:
        raise _not_implemented("QueryFilters")

    async def replace_filter(self, uuid: str | None, priority: int, predicates: list[Any], action: Any,
                             reason: list[Any]) -> str:
        raise _not_implemented("ReplaceFilter")

    async def delete_filter(self, uuid: str) -> None:
        raise _not_implemented("DeleteFilter")


async def dispatch(handler: LuxiHandler, request: LuxiRequest) -> Any:
    """Validate the request's arguments and await the handler's method; its result is the answer."""
    spec = method_spec(request.method)
    args = validate_args(request.method, request.args)
    return await getattr(handler, spec.handler_attr)(*args)
