"""gnt-job: list, info, watch, wait, cancel, archive, autoarchive, change-priority, list-fields.

Syntax, LUXI requests, output and exit codes of Ganeti 3.0's gnt-job
(cli-needs.md §4). Deliberate differences: `-o ...,opstart --separator=X`
prints the per-opcode lists instead of crashing; a job status Ganeti does
not know is reported as Ganeti's ProgrammerError (not a traceback).
"""

from __future__ import annotations

import re
from typing import Any

from masterd.query.errors import QueryError, QueryFilterParseError
from masterd.query.qlang import make_filter
from tools.gnt.command import (
    EXIT_CONFIRMATION,
    EXIT_FAILURE,
    EXIT_SUCCESS,
    EXIT_UNKNOWN_FIELD,
    FIELDS_OPT,
    FORCE_FILTER_OPT,
    FORCE_OPT,
    NOHDR_OPT,
    PRIORITY_OPT,
    SEP_OPT,
    VERBOSE_OPT,
    Args,
    Command,
    Context,
    ask_user,
    generic_main,
    option,
    parse_fields,
)
from tools.gnt.errors import ECODE_INVAL, ECODE_STATE, GanetiError, format_error
from tools.gnt.jobs import SilentReporter, StdioReporter, format_log_message, poll_job
from tools.gnt.luxi_client import LuxiClient
from tools.gnt.output import (
    QR_UNKNOWN,
    field_listing,
    format_query_result,
    format_timestamp,
    parse_timespec,
    print_generic_info,
    to_stderr,
    to_stdout,
    unknown_fields,
)

#: Default fields of `gnt-job list`.
LIST_DEF_FIELDS = ["id", "status", "summary"]
#: The job statuses Ganeti's CLI knows (anything else is a ProgrammerError there).
JOB_STATUSES = ("queued", "waiting", "canceling", "running", "canceled", "success", "error")

#: Status filters of the list/cancel/change-priority options, in a fixed order.
PENDING = ("queued", "waiting", "canceling")
FINALIZED = ("canceled", "success", "error")


def format_status(value: Any) -> str:
    if value not in JOB_STATUSES:
        raise GanetiError("ProgrammerError", f"Unknown job status code '{value}'")
    return str(value)


def format_summary(value: Any) -> str:
    return ",".join(value)


def _format_op_timestamps(value: Any) -> Any:
    return [format_timestamp(v) for v in value]


JOB_LIST_FORMAT: dict[str, tuple[Any, bool]] = {
    "status": (format_status, False),
    "summary": (format_summary, False),
    "opstart": (_format_op_timestamps, False),
    "opexec": (_format_op_timestamps, False),
    "opend": (_format_op_timestamps, False),
}


def simple_filter(field: str, values: Any) -> list[Any] | None:
    """qlang.MakeSimpleFilter: an OR of == for each value, None for none."""
    if values:
        return ["|", *(["==", field, v] for v in values)]
    return None


def parse_job_ids(args: list[str]) -> list[int]:
    try:
        return [int(a) for a in args]
    except ValueError as err:
        raise GanetiError("OpPrereqError", f"Invalid job ID passed: {err}", ECODE_INVAL) from None


def generic_list(client: LuxiClient, resource: str, fields: list[str], names: list[str],
                 separator: str | None, header: bool, format_override: dict[str, tuple[Any, bool]],
                 verbose: bool, force_filter: bool, namefield: str, qfilter: Any,
                 isnumeric: bool, unit: str | None = None) -> int:
    """cli.GenericList: Query, warn about unknown fields, print the table; 14 for unknown fields."""
    namefilter = make_filter(names, force_filter, namefield=namefield, isnumeric=isnumeric) if (
        names or force_filter) else None
    if qfilter is None:
        qfilter = namefilter
    elif namefilter is not None:
        qfilter = ["&", namefilter, qfilter]
    response = client.query(resource, fields, qfilter)
    unknown = unknown_fields(response["fields"])
    if unknown:
        to_stderr(f"Warning: Queried for unknown fields {', '.join(unknown)}")
    status, lines = format_query_result(response, unit=unit, separator=separator, header=header,
                                        format_override=format_override, verbose=verbose)
    for line in lines:
        to_stdout(line)
    return EXIT_UNKNOWN_FIELD if status == QR_UNKNOWN else EXIT_SUCCESS


_AT_CHAR = re.compile(r"^(.*) \(at char (\d+)\)$", re.DOTALL)
_FOUND = re.compile(r", found (?!end of text$).*$", re.DOTALL)


def _word_char(char: str) -> bool:
    """A letter or digit of the scripts pyparsing quotes whole words of (Latin, Greek, Cyrillic)."""
    code = ord(char)
    return char.isalnum() and (code < 0x250 or 0x370 <= code < 0x500 or 0x1F00 <= code < 0x2000)


def found_text(text: str, pos: int) -> str:
    """What pyparsing says it found at `pos`: up to 16 word characters, or the one character."""
    end = pos
    while end < len(text) and end - pos < 16 and _word_char(text[end]):
        end += 1
    found = text[pos:end] if end > pos else text[pos:pos + 1]
    return (", found %r" % found).replace("\\\\", "\\")  # noqa: UP031 - pyparsing's own wording


def filter_parse_error(text: str, message: str) -> GanetiError:
    """Ganeti's QueryFilterParseError for a text filter, with pyparsing's position details.

    `message` is masterd.query.qlang's "Failed to parse query filter '<text>': <detail>
    (at char N)"; Ganeti words the position "(at char N), (line:L, col:C)" and shows
    the line with a caret under the position.
    """
    prefix = f"Failed to parse query filter '{text}': "
    match = _AT_CHAR.match(message[len(prefix):]) if message.startswith(prefix) else None
    if match is None:
        return GanetiError("QueryFilterParseError", message)
    detail, pos = match.group(1), int(match.group(2))
    if pos < len(text):
        detail = _FOUND.sub(lambda _m: found_text(text, pos), detail)
    line_no = text.count("\n", 0, pos) + 1
    col = pos - text.rfind("\n", 0, pos)
    line = text.splitlines()[line_no - 1] if text.splitlines() else ""
    inner = f"{detail}  (at char {pos}), (line:{line_no}, col:{col})"
    return GanetiError("QueryFilterParseError", prefix + inner, [line, " " * (col - 1) + "^", inner])


def query_errors(func: Any) -> Any:
    """Turn masterd.query errors (filter parsing, job ids) into our GanetiError."""

    def run(ctx: Context, opts: Any, args: list[str]) -> int:
        try:
            return func(ctx, opts, args)  # type: ignore[no-any-return]
        except QueryFilterParseError as err:
            raise filter_parse_error(args[0] if args else "", err.message) from None
        except QueryError as err:
            raise GanetiError(err.ganeti_class, *err.args) from None

    return run


@query_errors
def list_jobs(ctx: Context, opts: Any, args: list[str]) -> int:
    fields = parse_fields(opts.output, LIST_DEF_FIELDS)
    if opts.archived and "archived" not in fields:
        fields.append("archived")
    qfilter = simple_filter("status", opts.status_filter)
    return generic_list(ctx.client(), "job", fields, args, opts.separator, not opts.no_headers,
                        JOB_LIST_FORMAT, opts.verbose, opts.force_filter, "id", qfilter, True)


def list_job_fields(ctx: Context, opts: Any, args: list[str]) -> int:
    response = ctx.client().query_fields("job", args or None)
    lines, unknown = field_listing(response, not opts.no_headers, opts.separator)
    if unknown:
        to_stderr(f"Warning: Queried for unknown fields {', '.join(unknown)}")
    for line in lines:
        to_stdout(line)
    return EXIT_UNKNOWN_FIELD if unknown else EXIT_SUCCESS


def archive_jobs(ctx: Context, opts: Any, args: list[str]) -> int:
    client = ctx.client()
    code = EXIT_SUCCESS
    for job_id in args:
        if not client.archive_job(job_id):
            to_stderr(f"Failed to archive job with ID '{job_id}'")
            code = EXIT_FAILURE
    return code


def auto_archive_jobs(ctx: Context, opts: Any, args: list[str]) -> int:
    client = ctx.client()
    age = -1 if args[0] == "all" else parse_timespec(args[0])
    archived, left = client.auto_archive_jobs(age)
    to_stdout(f"Archived {archived} jobs, {left} unchecked left")
    return EXIT_SUCCESS


def _multi_job_action(ctx: Context, opts: Any, args: list[str], question: str, action: Any) -> int:
    client = ctx.client()
    if bool(args) ^ (opts.status_filter is None):
        raise GanetiError("OpPrereqError",
                          "Either a status filter or job ID(s) must be specified and never both", ECODE_INVAL)
    jobs: list[Any]
    if opts.status_filter is not None:
        qfilter = simple_filter("status", opts.status_filter)
        response = client.query("job", ["id", "status", "summary"], qfilter)
        jobs = [row[0][1] for row in response["data"]]
        if not jobs:
            raise GanetiError("OpPrereqError", "No jobs with the requested status have been found",
                              ECODE_STATE)
        if not opts.force:
            _, lines = format_query_result(response, header=True, format_override=JOB_LIST_FORMAT)
            for line in lines:
                to_stdout(line)
            if not ask_user(question):
                return EXIT_CONFIRMATION
    else:
        jobs = list(args)
    code = EXIT_SUCCESS
    for job_id in jobs:
        success, msg = action(client, job_id)
        if not success:
            code = EXIT_FAILURE
        to_stdout(str(msg))
    return code


def cancel_jobs(ctx: Context, opts: Any, args: list[str]) -> int:
    if opts.kill:
        if not opts.yes_do_it:
            raise GanetiError("OpPrereqError", "The --kill option must be confirmed with --yes-do-it",
                              ECODE_INVAL)
        action_name = "KILL"
    else:
        action_name = "Cancel"
    return _multi_job_action(ctx, opts, args, f"{action_name} job(s) listed above?",
                             lambda client, job_id: client.cancel_job(job_id, kill=opts.kill))


def change_priority(ctx: Context, opts: Any, args: list[str]) -> int:
    if opts.priority is None:
        to_stderr("--priority option must be given.")
        return EXIT_FAILURE
    return _multi_job_action(ctx, opts, args, "Change priority of job(s) listed above?",
                             lambda client, job_id: client.change_job_priority(job_id, opts.priority))


def _calc_delta(start: Any, end: Any) -> float:
    return float(end[0] - start[0] + (end[1] - start[1]) / 1000000.0)


def _job_timestamp(name: str, ts: Any, container: list[Any], prior: Any = None) -> None:
    if ts is not None:
        delta = f" (delta {_calc_delta(prior, ts):.6f}s)" if prior is not None else ""
        container.append((name, f"{format_timestamp(ts)}{delta}", "job_timestamp"))
    else:
        container.append((name, f"unknown ({ts})", "job_timestamp"))


def _op_timestamp(name: str, ts: Any, container: list[Any]) -> None:
    text = format_timestamp(ts) if isinstance(ts, list | tuple) else "N/A"
    container.append((name, text, "opcode_timestamp"))


INFO_FIELDS = ["id", "status", "ops", "opresult", "opstatus", "oplog", "opstart", "opexec", "opend",
               "received_ts", "start_ts", "end_ts"]


def show_jobs(ctx: Context, opts: Any, args: list[str]) -> int:
    qfilter = simple_filter("id", parse_job_ids(args))
    rows = ctx.client().query("job", INFO_FIELDS, qfilter)["data"]
    container: list[Any] = []
    for row in rows:
        if len(row) != len(INFO_FIELDS):
            raise GanetiError("ProgrammerError",
                              f"the master answered {len(row)} fields per job, {len(INFO_FIELDS)} were asked")
        (_, job_id), (rs_status, status) = row[0], row[1]
        (ops, opresult, opstatus, oplog, opstart, opexec, opend, recv_ts, start_ts, end_ts) = (
            entry[1] for entry in row[2:])
        if rs_status != 0:
            container.append(f"Job ID {job_id} not found")
            continue
        info: list[Any] = [("Job ID", job_id), ("Status", format_status(status))]
        _job_timestamp("Received", recv_ts, info)
        _job_timestamp("Processing start", start_ts, info, prior=recv_ts)
        _job_timestamp("Processing end", end_ts, info, prior=start_ts)
        if end_ts is not None and recv_ts is not None:
            info.append(("Total processing time", f"{_calc_delta(recv_ts, end_ts):.6f} seconds"))
        else:
            info.append(("Total processing time", "N/A"))
        opcodes = []
        for op, result, op_status, log, s_ts, x_ts, e_ts in zip(ops, opresult, opstatus, oplog, opstart,
                                                                 opexec, opend, strict=False):
            op_info: list[Any] = [("Opcode", op["OP_ID"]), ("Status", op_status)]
            _op_timestamp("Processing start", s_ts, op_info)
            _op_timestamp("Execution start", x_ts, op_info)
            _op_timestamp("Processing end", e_ts, op_info)
            op_info.append(("Input fields", op))
            op_info.append(("Result", result))
            log_info = [[("Time", format_timestamp(log_ts)),
                         ("Content", (serial, log_type, format_log_message(log_type, msg)))]
                        for serial, log_ts, log_type, msg in log]
            op_info.append(("Execution log", log_info))
            opcodes.append(op_info)
        info.append(("Opcodes", opcodes))
        container.append(info)
    print_generic_info(container)
    return EXIT_SUCCESS


def _follow(ctx: Context, job_id: str, reporter: Any) -> int:
    try:
        poll_job(ctx.client(), job_id, reporter)
    except GanetiError as err:
        code, text = format_error(err)
        to_stderr(f"Job {job_id} failed: {text}")
        return code
    return EXIT_SUCCESS


def watch_job(ctx: Context, opts: Any, args: list[str]) -> int:
    job_id = args[0]
    msg = f"Output from job {job_id} follows"
    to_stdout(msg)
    to_stdout("-" * len(msg))
    return _follow(ctx, job_id, StdioReporter())


def wait_job(ctx: Context, opts: Any, args: list[str]) -> int:
    return _follow(ctx, args[0], SilentReporter())


def _status_option(flag: str, statuses: tuple[str, ...], text: str) -> Any:
    return option(flag, default=None, action="store_const", dest="status_filter", const=statuses, help=text)


KILL_OPT = option("--kill", default=False, action="store_true", dest="kill",
                  help="Kill running jobs with SIGKILL")
YES_DOIT_OPT = option("--yes-do-it", "--ya-rly", dest="yes_do_it", action="store_true",
                      help="Really use --kill")
PENDING_OPT = _status_option("--pending", PENDING, "Select jobs pending execution or being cancelled")
RUNNING_OPT = _status_option("--running", ("running",), "Show jobs currently running only")
ERROR_OPT = _status_option("--error", ("error",), "Show failed jobs only")
FINISHED_OPT = _status_option("--finished", FINALIZED, "Show finished jobs only")
QUEUED_OPT = _status_option("--queued", ("queued",), "Select queued jobs only")
WAITING_OPT = _status_option("--waiting", ("waiting",), "Select waiting jobs only")
ARCHIVED_OPT = option("--archived", default=False, action="store_true", dest="archived",
                      help="Include archived jobs in list (slow and expensive)")

COMMANDS: dict[str, Command] = {
    "list": Command(list_jobs, [Args()],
                    [NOHDR_OPT, SEP_OPT, FIELDS_OPT, VERBOSE_OPT, FORCE_FILTER_OPT, PENDING_OPT, RUNNING_OPT,
                     ERROR_OPT, FINISHED_OPT, ARCHIVED_OPT],
                    "[<job-id>...]",
                    "Lists the jobs and their status. The available fields can be shown using the "
                    "\"list-fields\" command (see the man page for details). The default field list is "
                    f"(in order): {', '.join(LIST_DEF_FIELDS)}."),
    "list-fields": Command(list_job_fields, [Args()], [NOHDR_OPT, SEP_OPT], "[<fields>...]",
                           "Lists all available fields for jobs"),
    "archive": Command(archive_jobs, [Args(min=1)], [], "<job-id> [<job-id>...]", "Archive specified jobs"),
    "autoarchive": Command(auto_archive_jobs, [Args(min=1, max=1)], [], "<age>",
                           "Auto archive jobs older than the given age"),
    "cancel": Command(cancel_jobs, [Args()],
                      [FORCE_OPT, KILL_OPT, PENDING_OPT, QUEUED_OPT, WAITING_OPT, YES_DOIT_OPT],
                      "{[--force] [--kill --yes-do-it] {--pending | --queued | --waiting} | "
                      "<job-id> [<job-id>...]}", "Cancel jobs"),
    "info": Command(show_jobs, [Args(min=1)], [], "<job-id> [<job-id>...]",
                    "Show detailed information about the specified jobs"),
    "wait": Command(wait_job, [Args(min=1, max=1)], [], "<job-id>", "Wait for a job to finish"),
    "watch": Command(watch_job, [Args(min=1, max=1)], [], "<job-id>",
                     "Follows a job and prints its output as it arrives"),
    "change-priority": Command(change_priority, [Args()],
                               [PRIORITY_OPT, FORCE_OPT, PENDING_OPT, QUEUED_OPT, WAITING_OPT],
                               "--priority <priority> {[--force] {--pending | --queued | --waiting} | "
                               "<job-id> [<job-id>...]}", "Change the priority of jobs"),
}

ALIASES = {"show": "info"}


def main() -> int:
    return generic_main(COMMANDS, aliases=ALIASES)


if __name__ == "__main__":
    raise SystemExit(main())
