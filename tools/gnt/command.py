"""The command framework of our gnt-* tools: Ganeti's GenericMain, argument checks and options.

A tool is a dict of subcommands::

    COMMANDS = {
        "list": Command(list_jobs, Args(0, None), [NOHDR_OPT, SEP_OPT, ...],
                        "[<job-id>...]", "Lists the jobs and their status."),
        ...
    }
    def main() -> int:
        return generic_main(COMMANDS, aliases={"show": "info"}, planned=("verify", ...))

`func(ctx, opts, args) -> exit code`, where `ctx.client()` connects to the
master on first use (so argument errors never need a master) and `ctx.argv`
is the command line (the reason trail uses it).

Behaviour of `generic_main` (Ganeti's GenericMain/_ParseArgs/_CheckArguments):
no command or an unknown one prints the usage (exit 1); `--help` prints it
(exit 0); `--version` prints "<tool> (ganeti-ng <version>) <Ganeti version>";
a command named in `planned` (a Ganeti subcommand we do not have yet) prints
"<tool> <command>: not implemented yet" on stderr (exit 1). Options are parsed
with optparse like Ganeti (no options after the first argument; bad options
print the usage and exit 2), plus the common `-d/--debug` and `--reason`.
Argument counts are checked with Ganeti's messages. Errors raised by the
command are printed as cli.FormatError words them (`errors.format_error`)
with its exit code; Ctrl-C prints Ganeti's "Aborted..." text (exit 1).
Like Ganeti, failures are also logged (with their traceback) to
$LOG_DIR/commands.log when that directory exists, and `-d` logs debug
messages (the LUXI requests) to stderr.
"""

from __future__ import annotations

import io
import logging
import optparse
import os
import shlex
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from noded.paths import Paths, RootError
from tools.gnt.errors import GanetiError, JobSubmitted, format_error
from tools.gnt.luxi_client import LuxiClient, get_client
from tools.gnt.output import to_stderr, to_stdout

log = logging.getLogger("gnt")

#: The Ganeti release whose tools ours follow.
GANETI_VERSION = "3.0.2"
EXIT_SUCCESS = 0
EXIT_FAILURE = 1
EXIT_CONFIRMATION = 13
EXIT_UNKNOWN_FIELD = 14


@dataclass(frozen=True)
class Args:
    """How many positional arguments a command takes (None: no upper bound)."""

    min: int = 0
    max: int | None = None


#: No arguments at all (Ganeti's ARGS_NONE).
ARGS_NONE: list[Args] = []


class Context:
    """What a command gets besides options and arguments."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._client: LuxiClient | None = None

    def client(self) -> LuxiClient:
        if self._client is None:
            self._client = get_client()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


CommandFunc = Callable[[Context, Any, list[str]], int]


@dataclass(frozen=True)
class Command:
    func: CommandFunc
    args: list[Args]
    options: list[optparse.Option]
    usage: str
    description: str
    extra: dict[str, Any] = field(default_factory=dict)


def option(*names: str, **kwargs: Any) -> optparse.Option:
    return optparse.make_option(*names, **kwargs)


# -- options shared by many commands (Ganeti's cli_opts) -------------------------------------

_PRIORITIES = {"low": 10, "normal": 0, "high": -10}


def _priority_callback(opt: optparse.Option, _name: str, value: str, parser: optparse.OptionParser) -> None:
    setattr(parser.values, opt.dest or "priority", _PRIORITIES[value])


DEBUG_OPT = option("-d", "--debug", default=0, action="count", help="Increase debugging level")
REASON_OPT = option("--reason", default=[], help="The reason for executing the command")
COMMON_OPTS = [DEBUG_OPT, REASON_OPT]

NOHDR_OPT = option("--no-headers", default=False, action="store_true", dest="no_headers",
                   help="Don't display column headers")
SEP_OPT = option("--separator", default=None, action="store", dest="separator",
                 help="Separator between output fields (defaults to one space)")
FIELDS_OPT = option("-o", "--output", dest="output", action="store", type="string", metavar="FIELDS",
                    help="Comma separated list of output fields")
FORCE_OPT = option("-f", "--force", dest="force", action="store_true", default=False,
                   help="Force the operation")
VERBOSE_OPT = option("-v", "--verbose", default=False, action="store_true",
                     help="Increase the verbosity of the operation")
FORCE_FILTER_OPT = option("-F", "--filter", dest="force_filter", action="store_true", default=False,
                          help="Whether command argument should be treated as filter")
DRY_RUN_OPT = option("--dry-run", default=False, action="store_true",
                     help="Do not execute the operation, just run the check steps and verify if it "
                          "could be executed")
PRIORITY_OPT = option("--priority", default=None, dest="priority", metavar="low|normal|high",
                      choices=list(_PRIORITIES), action="callback", type="choice",
                      callback=_priority_callback, help="Priority for opcode processing")
SUBMIT_OPT = option("--submit", dest="submit_only", default=False, action="store_true",
                    help="Submit the job and return the job ID, but don't wait for the job to finish")
PRINT_JOBID_OPT = option("--print-jobid", dest="print_jobid", default=False, action="store_true",
                         help="Additionally print the job as first line on stdout (for scripting).")
SUBMIT_OPTS = [SUBMIT_OPT, PRINT_JOBID_OPT]


def parse_fields(selected: str | None, default: Sequence[str]) -> list[str]:
    """The fields of -o: a list replacing the default, or "+a,b" appended to it."""
    if selected is None:
        return list(default)
    if selected.startswith("+"):
        return [*default, *selected[1:].split(",")]
    return selected.split(",")


def open_tty(device: str = "/dev/tty") -> io.TextIOWrapper:
    """The terminal for reading and writing (a tty is not seekable, so no plain open(..., "r+"))."""
    raw = io.FileIO(device, "r+")
    return io.TextIOWrapper(io.BufferedRWPair(raw, raw), encoding="utf-8", line_buffering=True)  # type: ignore[arg-type]


def ask_user(text: str, choices: list[tuple[str, Any, str]] | None = None) -> Any:
    """cli.AskUser: ask on /dev/tty (yes/no unless `choices`); no terminal: the last choice's value."""
    if choices is None:
        choices = [("y", True, "Perform the operation"), ("n", False, "Do not perform the operation")]
    answer = choices[-1][1]
    text = "\n".join(textwrap.fill(line, 70, replace_whitespace=False) for line in text.splitlines())
    try:
        tty = open_tty()
    except OSError:
        return answer
    with tty:
        chars = [entry[0] for entry in choices]
        chars[-1] = f"[{chars[-1]}]"
        chars.append("?")
        values = {entry[0]: entry[1] for entry in choices}
        while True:
            tty.write(f"{text}\n{'/'.join(chars)}: ")
            tty.flush()
            line = tty.readline(2).strip().lower()
            if line in values:
                return values[line]
            if line == "?":
                for entry in choices:
                    tty.write(f" {entry[0]} - {entry[2]}\n")
                tty.write("\n")


# -- the main loop ---------------------------------------------------------------------------


class _UsageExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _usage_lines(binary: str, commands: Mapping[str, Command]) -> list[str]:
    width = min(60, max(len(name) for name in commands))
    lines = [f"Usage: {binary} {{command}} [options...] [argument...]",
             f"{binary} <command> --help to see details, or man {binary}", "", "Commands:"]
    for name, cmd in sorted(commands.items()):
        wrapped = textwrap.wrap(cmd.description, 79 - 3 - width)
        first = wrapped.pop(0) if wrapped else ""
        lines.append(f" {name:<{width}} - {first}")
        lines.extend(f" {'':<{width}}   {rest}" for rest in wrapped)
    lines.append("")
    return lines


def check_arguments(name: str, specs: Sequence[Args], args: Sequence[str]) -> bool:
    """Ganeti's _CheckArguments: False (after printing why) if the count is wrong."""
    if args and not specs:
        to_stderr(f"Error: Command {name} expects no arguments")
        return False
    min_count = sum(spec.min for spec in specs) if specs else None
    max_count: int | None = None
    if specs:
        bounded = [spec.max for spec in specs if spec.max is not None]
        max_count = sum(bounded) if bounded else None
    check_max = bool(specs) and specs[-1].max is not None
    if check_max:
        if min_count is not None and max_count is not None and min_count == max_count \
                and len(args) != min_count:
            to_stderr(f"Error: Command {name} expects {min_count} argument(s)")
            return False
        if max_count is not None and len(args) > max_count:
            to_stderr(f"Error: Command {name} expects only {max_count} argument(s)")
            return False
    if min_count is not None and len(args) < min_count:
        to_stderr(f"Error: Command {name} expects at least {min_count} argument(s)")
        return False
    return True


def _our_version() -> str:
    try:
        return metadata.version("ganeti-ng")
    except metadata.PackageNotFoundError:
        return "unknown"


def generic_main(commands: Mapping[str, Command], aliases: Mapping[str, str] | None = None,
                 planned: Sequence[str] = (), argv: Sequence[str] | None = None) -> int:
    """Run the subcommand named on the command line; the process exit code."""
    argv = list(sys.argv if argv is None else argv)
    binary = os.path.basename(argv[0]) if argv else "<unknown program>"
    aliases = aliases or {}
    if len(argv) < 2:
        return _print_usage(binary, commands, EXIT_FAILURE)
    name = argv[1]
    if name == "--version":
        to_stdout(f"{binary} (ganeti-ng {_our_version()}) {GANETI_VERSION}")
        return EXIT_SUCCESS
    if name == "--help":
        return _print_usage(binary, commands, EXIT_SUCCESS)
    name = aliases.get(name, name)
    if name not in commands:
        if name in planned:
            to_stderr(f"{binary} {name}: not implemented yet (Ganeti has this command; this "
                      "implementation does not offer it so far)")
            return EXIT_FAILURE
        return _print_usage(binary, commands, EXIT_FAILURE)
    cmd = commands[name]
    parser = optparse.OptionParser(option_list=[*cmd.options, *COMMON_OPTS], description=cmd.description,
                                   formatter=optparse.TitledHelpFormatter(),
                                   usage=f"%prog {name} {cmd.usage}", prog=binary)
    parser.disable_interspersed_args()
    opts, args = parser.parse_args(args=argv[2:])  # exits 2 on a bad option, like Ganeti's
    if not check_arguments(name, cmd.args, args):
        return EXIT_FAILURE
    try:
        setup_command_log(Paths.from_environ(), shlex.join([binary, argv[1]]), opts.debug)
    except RootError as err:
        to_stderr(f"Error: {err}")
        return EXIT_FAILURE
    log.debug("Command line: %s", shlex.join([binary, *argv[1:]]))
    ctx = Context(argv)
    try:
        return cmd.func(ctx, opts, args)
    except (GanetiError, JobSubmitted) as err:
        code, text = format_error(err, ctx_hostname(ctx))
        log.exception("Error during command processing")
        to_stderr(text)
        return code
    except KeyboardInterrupt:
        to_stderr("Aborted. Note that if the operation created any jobs, they might have been submitted "
                  "and will continue to run in the background.")
        return EXIT_FAILURE
    finally:
        ctx.close()


def setup_command_log(paths: Paths, logname: str, debug: int) -> None:
    """Log like Ganeti's tools: $LOG_DIR/commands.log when that directory exists, stderr with -d.

    The file gets INFO and above (errors with their traceback), DEBUG too with
    -d; lines read "<time>: <tool> <command> pid=<pid> <LEVEL> <message>".
    """
    formatter = logging.Formatter(f"%(asctime)s: {logname} pid=%(process)d %(levelname)s %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.NOTSET)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stderr_handler = logging.StreamHandler()
    stderr_handler.setFormatter(formatter)
    stderr_handler.setLevel(logging.NOTSET if debug else logging.CRITICAL)
    root.addHandler(stderr_handler)
    if os.path.isdir(paths.log_dir):
        try:
            file_handler = logging.FileHandler(os.path.join(paths.log_dir, "commands.log"), encoding="utf-8")
        except OSError as err:
            log.debug("Not logging to commands.log: %s", err)
        else:
            file_handler.setFormatter(formatter)
            file_handler.setLevel(logging.DEBUG if debug else logging.INFO)
            root.addHandler(file_handler)


def ctx_hostname(ctx: Context) -> str:
    client = ctx._client
    return client.paths.hostname if client is not None else ""


def _print_usage(binary: str, commands: Mapping[str, Command], code: int) -> int:
    for line in _usage_lines(binary, commands):
        to_stdout(line)
    return code
