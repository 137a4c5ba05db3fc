"""Running an OS script: clean environment, the definition's directory as working directory, log files.

As in Ganeti, a script gets only the environment it is given, runs in the
OS definition's directory with stdin closed, and its combined stdout and
stderr go to a log file below `$LOG_DIR/os/` (create, rename) or are
captured (verify). A failure is reported with the last lines of that log.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence

from noded.backends.hooks import safe_encode
from noded.backends.runcmd import CommandNotFound, RunResult, run, shell_join
from noded.errors import RpcFail
from noded.paths import Paths

log = logging.getLogger(__name__)

#: How much of the log a failure message quotes (Ganeti's TailFile: the last 20 lines of the last 4 KiB).
TAIL_LINES = 20
TAIL_BYTES = 4096


def os_log_dir(paths: Paths) -> str:
    """$LOG_DIR/os, where OS script logs go."""
    return os.path.join(paths.log_dir, "os")


def _file_name_part(value: str, what: str) -> str:
    if not value or "/" in value or "\0" in value:
        raise RpcFail(f"Invalid {what} {value!r} for an OS log file name: it must be non-empty"
                      " and contain no '/'")
    return value


def log_file_name(paths: Paths, kind: str, os_name: str, instance: str, component: str | None = None) -> str:
    """`$LOG_DIR/os/<kind>-<os>-<instance>[-<component>]-<local time>.log` (Ganeti's _InstanceLogName).

    The time is local, as "2026-11-30_02_15_00". The directory is created
    when missing.
    """
    parts = [kind, _file_name_part(os_name, "OS name"), _file_name_part(instance, "instance name")]
    if component:
        parts.append(_file_name_part(component, "component"))
    parts.append(time.strftime("%Y-%m-%d_%H_%M_%S"))
    directory = os_log_dir(paths)
    os.makedirs(directory, mode=0o750, exist_ok=True)
    return os.path.join(directory, "-".join(parts) + ".log")


def tail_file(path: str, lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` lines of the last 4 KiB of `path`, made printable ASCII (Ganeti's TailFile)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            data = f.read()
    except OSError as err:
        return [f"(cannot read the log file {path}: {err.strerror})"]
    return [safe_encode(line) for line in data.decode("utf-8", errors="replace").splitlines()[-lines:]]


def run_logged(argv: Sequence[str], env: Mapping[str, str], cwd: str, log_file: str) -> RunResult:
    """Run a script with exactly `env`, appending its stdout and stderr to `log_file`."""
    cmd = shell_join(argv)
    with open(log_file, "a") as out:
        try:
            proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  env=dict(env), cwd=cwd, close_fds=True, check=False)
        except OSError as err:
            raise RpcFail(f"Can't execute '{cmd}': {err}") from err
    status = proc.returncode
    return RunResult(cmd=cmd, exit_code=status if status >= 0 else None,
                     signal=-status if status < 0 else None, stdout="", stderr="")


def run_with_log(kind: str, script: str, env: Mapping[str, str], cwd: str, log_file: str) -> None:
    """Run an OS script logging to `log_file`; on failure fail the call with the log's tail.

    The message is Ganeti's: "OS <kind> script failed (<reason>), last lines
    in the log file:\\n<lines>".
    """
    result = run_logged([script], env, cwd, log_file)
    if result.failed:
        log.error("OS %s script %s failed (%s); log file %s", kind, script, result.fail_reason, log_file)
        raise RpcFail(f"OS {kind} script failed ({result.fail_reason}), last lines in the log file:\n"
                      + "\n".join(tail_file(log_file)))


def run_captured(argv: Sequence[str], env: Mapping[str, str], cwd: str) -> RunResult:
    """Run a script with exactly `env`, capturing its output (stdout then stderr)."""
    try:
        return run(argv, env=env, reset_env=True, cwd=cwd)
    except CommandNotFound as err:
        raise RpcFail(str(err)) from err
    except OSError as err:
        raise RpcFail(f"Can't execute '{shell_join(argv)}': {err}") from err
