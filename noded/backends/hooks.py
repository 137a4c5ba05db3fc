"""Programs the master asks a node to run: hooks, iallocators, OOB helpers, restricted commands.

Each procedure follows Ganeti's rules for which program may run, with which
environment, and how its failure is reported. Programs run with `/` as the
working directory and /dev/null as stdin (see noded.backends.runcmd).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noded.backends import runcmd
from noded.backends.osdiag import PLUGIN_NAME
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths
from noded.registry import procedure

log = logging.getLogger(__name__)

# -- hooks ----------------------------------------------------------------

#: The PATH masters give hooks (Ganeti's HOOKS_PATH).
HOOKS_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"
#: Seconds one hook script may run before it is terminated (Ganeti has no limit;
#: the master gives up on the whole hooks_runner call after 900 s).
HOOK_TIMEOUT = 300.0

#: Result status of one hook script (Ganeti's HKR_*).
HKR_SKIP = 0
HKR_FAIL = 1
HKR_SUCCESS = 2

HOOKS_PHASES = ("pre", "post")


@dataclass(frozen=True)
class HookResult:
    """One entry of a hooks run: `[relative_name, status, output]` on the wire."""

    name: str
    status: int
    output: str

    def to_legacy(self) -> list[Any]:
        return [self.name, self.status, self.output]


def safe_encode(text: str) -> str:
    """Make output printable ASCII the way Ganeti does (SafeEncode): \\n, \\t, \\xNN escapes."""
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    out = []
    for char in text:
        code = ord(char)
        if char == "\t":
            out.append(r"\t")
        elif char == "\n":
            out.append(r"\n")
        elif char == "\r":
            out.append(r"\'r")  # sic: Ganeti's escape for a carriage return
        elif code < 32 or code >= 127:
            out.append(f"\\x{code & 0xff:02x}")
        else:
            out.append(char)
    return "".join(out)


def _is_executable_file(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def run_parts(dir_name: str, subdir: str, env: Mapping[str, str],
              timeout: float = HOOK_TIMEOUT) -> list[HookResult]:
    """Run the programs of one hooks directory, run-parts style.

    In name order; a name that is not `[a-zA-Z0-9_-]+` or not an executable
    regular file is skipped (status 0). Each program gets exactly `env`.
    """
    try:
        names = sorted(n for n in os.listdir(dir_name) if not n.startswith("."))
    except OSError as err:
        log.warning("hooks: skipping %s (cannot list: %s)", dir_name, err)
        return []
    results = []
    for name in names:
        rel = f"{subdir}/{name}"
        path = os.path.join(dir_name, name)
        if not PLUGIN_NAME.match(name) or not _is_executable_file(path):
            results.append(HookResult(rel, HKR_SKIP, ""))
            continue
        try:
            res = runcmd.run([path], env=env, reset_env=True, timeout=timeout)
        except (OSError, runcmd.CommandNotFound) as err:
            results.append(HookResult(rel, HKR_FAIL, f"Hook script execution error: {err}"))
            continue
        output = safe_encode(res.output.strip())
        if res.timed_out_after is not None:
            note = f"(hook {res.fail_reason})"
            output = f"{output}\\n{note}" if output else note
        results.append(HookResult(rel, HKR_FAIL if res.failed else HKR_SUCCESS, output))
    return results


def run_hooks(paths: Paths, hpath: str, phase: str, env: Mapping[str, Any],
              timeout: float = HOOK_TIMEOUT) -> list[HookResult]:
    """Run `$CONF_DIR/hooks/<hpath>-<phase>.d/*` with exactly the environment `env`, as Ganeti does.

    Masters send PATH (Ganeti's HOOKS_PATH) with the rest of the environment.
    """
    if phase not in HOOKS_PHASES:
        raise RpcFail(f"Unknown hooks phase '{phase}'")
    if not isinstance(hpath, str) or not PLUGIN_NAME.match(hpath):
        raise RpcFail(f"Invalid hooks path {hpath!r}: it must be a plain name such as 'instance-add'")
    subdir = f"{hpath}-{phase}.d"
    dir_name = os.path.join(paths.hooks_dir, subdir)
    if not os.path.isdir(dir_name):
        return []
    hook_env = {str(k): str(v) for k, v in env.items()}
    return run_parts(dir_name, subdir, hook_env, timeout=timeout)


@procedure("hooks_runner", blocking=True)
def hooks_runner(ctx: NodeContext, hpath: str, phase: str, env: dict[str, Any]) -> list[list[Any]]:
    """Run the hook scripts of `hpath` for `phase`; `[name, status, output]` per script."""
    return [r.to_legacy() for r in run_hooks(ctx.paths, hpath, phase, env)]


# -- iallocators ----------------------------------------------------------

#: Ganeti's iallocator search path (constants.IALLOCATOR_SEARCH_PATH).
IALLOCATOR_SEARCH_PATH = ("/usr/local/lib/ganeti/iallocators", "/usr/lib/ganeti/iallocators")
#: Seconds an iallocator may run (the master's own limit for the call is 900 s).
IALLOCATOR_TIMEOUT = 900.0


def iallocator_search_path(paths: Paths) -> list[str]:
    """Where iallocators are looked for: below the root first (if any), then the machine's."""
    dirs = [paths.under_root(d) for d in IALLOCATOR_SEARCH_PATH]
    if paths.root:
        dirs += list(IALLOCATOR_SEARCH_PATH)
    return dirs


def find_iallocator(paths: Paths, name: str) -> str | None:
    """The iallocator program called `name`, or None."""
    if not isinstance(name, str) or not PLUGIN_NAME.match(name):
        return None
    for d in iallocator_search_path(paths):
        candidate = os.path.join(d, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def iallocator_args(params: Mapping[str, str | None]) -> list[str]:
    """`--key=value` (or `--key` for None) per default iallocator parameter."""
    return [f"--{k}" if v is None else f"--{k}={v}" for k, v in params.items()]


def run_iallocator(paths: Paths, name: str, idata: str, params: Mapping[str, str | None],
                   timeout: float = IALLOCATOR_TIMEOUT) -> str:
    """Run iallocator `name` on the input text `idata`; its standard output."""
    script = find_iallocator(paths, name)
    if script is None:
        raise RpcFail(f"iallocator module '{name}' not found in the search path")
    fd, input_name = tempfile.mkstemp(prefix="ganeti-iallocator.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(idata.encode("utf-8"))
        res = runcmd.run([script, input_name, *iallocator_args(params)], timeout=timeout)
    finally:
        os.unlink(input_name)
    if res.failed:
        raise RpcFail(f"iallocator module '{name}' failed: {res.fail_reason}, output '{res.output}'")
    return res.stdout


@procedure("iallocator_runner", blocking=True)
def iallocator_runner(ctx: NodeContext, name: str, idata: str,
                      default_iallocator_params: dict[str, str | None]) -> str:
    """Run an iallocator (e.g. hail) on the master's request text; its JSON answer as text."""
    return run_iallocator(ctx.paths, name, idata, default_iallocator_params or {})


# -- out-of-band helpers --------------------------------------------------

def run_oob_program(program: str, command: str, node: str, timeout: float) -> Any:
    """Run `program command node` and parse its standard output as JSON (None when empty)."""
    # A missing program raises CommandNotFound, answered as Ganeti answers it:
    # "Error while executing backend function: Can't execute '...': not found (...)".
    res = runcmd.run([program, command, node], timeout=timeout)
    if res.failed:
        raise RpcFail(f"'{res.cmd}' failed with reason '{res.fail_reason}'; output: {res.output}")
    if not res.stdout:
        return None
    try:
        return json.loads(res.stdout)
    except ValueError as err:
        raise RpcFail(f"'{res.cmd}' did not print valid JSON ({err}); output: {res.stdout!r}") from err


@procedure("run_oob", blocking=True)
def run_oob(ctx: NodeContext, oob_program: str, command: str, remote_node: str, timeout: float) -> Any:
    """Run an out-of-band management helper and return what it printed (JSON)."""
    return run_oob_program(oob_program, command, remote_node, timeout)


# -- restricted commands --------------------------------------------------

#: Most permissive mode allowed on the restricted-commands directory and files (0755).
RCMD_MAX_MODE = stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
#: Seconds to wait before answering a refused restricted command (Ganeti's _RCMD_INVALID_DELAY).
RCMD_INVALID_DELAY = 10.0
#: Seconds to wait for the restricted-commands lock.
RCMD_LOCK_TIMEOUT = RCMD_INVALID_DELAY * 0.8


def restricted_commands_dir(paths: Paths) -> str:
    return os.path.join(paths.conf_dir, "restricted-commands")


def restricted_commands_lock(paths: Paths) -> str:
    return os.path.join(paths.lock_dir, "ganeti-restricted-commands.lock")


def _check_owner_and_mode(path: str, owner: tuple[int, int]) -> os.stat_result:
    """stat(path), refusing group/world-writable paths and other owners; raises ValueError."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise ValueError(f"Can't stat(2) '{path}': {err}") from err
    if stat.S_IMODE(st.st_mode) & ~RCMD_MAX_MODE:
        raise ValueError(f"Permissions on '{path}' are too permissive")
    if (st.st_uid, st.st_gid) != owner:
        raise ValueError(f"'{path}' is not owned by {owner[0]}:{owner[1]}")
    return st


def check_restricted_command(directory: str, cmd: str, owner: tuple[int, int] = (0, 0)) -> str:
    """The executable for restricted command `cmd`, after Ganeti's checks; raises ValueError.

    The directory must be a directory owned by root:root (`owner`) and not
    writable by group or others; `cmd` must be a plain name of
    `[a-zA-Z0-9_-]`; the file must pass the same ownership and mode test
    and be executable.
    """
    st = _check_owner_and_mode(directory, owner)
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"Path '{directory}' is not a directory")
    if not cmd.strip():
        raise ValueError("Missing command name")
    if os.path.basename(cmd) != cmd:
        raise ValueError("Invalid command name")
    if not PLUGIN_NAME.match(cmd):
        raise ValueError("Command name contains forbidden characters")
    executable = os.path.join(directory, cmd)
    _check_owner_and_mode(executable, owner)
    if not _is_executable_file(executable):
        raise ValueError(f"access(2) thinks '{executable}' can't be executed")
    return executable


def _lock_exclusive(fd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                raise
        time.sleep(0.05)


def run_restricted_command(paths: Paths, cmd: str, *, delay: float = RCMD_INVALID_DELAY,
                           lock_timeout: float = RCMD_LOCK_TIMEOUT,
                           owner: tuple[int, int] = (0, 0)) -> str:
    """Run `$CONF_DIR/restricted-commands/<cmd>` with an empty environment; its output.

    The checks and the start of the program happen under an exclusive lock
    on `$LOCK_DIR/ganeti-restricted-commands.lock`, released as soon as the
    program runs. When anything is wrong the caller waits `delay` seconds
    and gets only "Executing command '<cmd>' failed" (the reason is logged),
    so the interface cannot be used to probe the node.
    """
    log.info("Preparing to run restricted command %r", cmd)
    lock_fd: int | None = None
    result: runcmd.RunResult | None = None

    def unlock() -> None:
        nonlocal lock_fd
        if lock_fd is not None:
            os.close(lock_fd)
            lock_fd = None

    try:
        try:
            os.makedirs(paths.lock_dir, exist_ok=True)
            lock_fd = os.open(restricted_commands_lock(paths), os.O_RDWR | os.O_CREAT, 0o664)
            _lock_exclusive(lock_fd, lock_timeout)
            executable = check_restricted_command(restricted_commands_dir(paths), str(cmd), owner)
            result = runcmd.run([executable], env={}, reset_env=True, after_start=unlock)
        except Exception as err:  # every failure looks the same to the caller
            log.error("restricted command %r refused: %s", cmd, err)
        if result is None:
            unlock()
            time.sleep(delay)
            raise RpcFail(f"Executing command '{cmd}' failed")
        if result.failed:
            raise RpcFail(f"Restricted command '{cmd}' failed: {result.fail_reason};"
                          f" output: {result.output}")
        return result.output
    finally:
        unlock()


@procedure("restricted_command", blocking=True)
def restricted_command(ctx: NodeContext, cmd: str) -> str:
    """Run one of the administrator's restricted commands; its output."""
    return run_restricted_command(ctx.paths, cmd)
