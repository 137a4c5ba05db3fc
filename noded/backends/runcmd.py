"""Running external programs the way Ganeti's backend runs them.

Ganeti's `utils.RunCmd` conventions, which show up in the messages the
procedures answer: stdin is /dev/null, the working directory is `/`, stdout
and stderr are captured separately and `output` is stdout followed by
stderr; with a timeout the program gets SIGTERM, and SIGKILL if it is still
there 5 seconds later. Unlike Ganeti, the program runs in its own session
and the signals go to its whole process group, so a hook that started
children cannot keep the call hanging.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

#: Seconds a program may linger after SIGTERM before it gets SIGKILL (Ganeti's CHILD_LINGER_TIMEOUT).
LINGER_TIMEOUT = 5.0

_SHELL_UNQUOTED = re.compile(r"^[-.,=:/_+@A-Za-z0-9]+$")


def shell_quote(arg: str) -> str:
    """Quote one argument for a POSIX shell, leaving plain words as they are."""
    if _SHELL_UNQUOTED.match(arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def shell_join(args: Sequence[str]) -> str:
    """The command line as a shell would read it (Ganeti's ShellQuoteArgs)."""
    return " ".join(shell_quote(a) for a in args)


class CommandNotFound(Exception):
    """The program does not exist (Ganeti: "Can't execute '<cmd>': not found (...)")."""


@dataclass(frozen=True)
class RunResult:
    """What became of one program run."""

    cmd: str
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    #: None, or the timeout (seconds) after which the program was terminated.
    timed_out_after: float | None = None
    #: True when the program needed SIGKILL after the timeout.
    killed: bool = False

    @property
    def output(self) -> str:
        """stdout followed by stderr."""
        return self.stdout + self.stderr

    @property
    def failed(self) -> bool:
        return self.signal is not None or self.exit_code != 0

    @property
    def fail_reason(self) -> str | None:
        """Why the program failed, worded like Ganeti's RunResult.fail_reason."""
        if not self.failed:
            return None
        parts = []
        if self.signal is not None:
            parts.append(f"terminated by signal {self.signal}")
        elif self.exit_code is not None:
            parts.append(f"exited with exit code {self.exit_code}")
        else:
            parts.append("unable to determine termination reason")
        if self.timed_out_after is not None:
            if self.killed:
                parts.append(f"force termination after timeout of {self.timed_out_after:.2f} seconds"
                             f" and linger for another {LINGER_TIMEOUT:.2f} seconds")
            else:
                parts.append(f"terminated after timeout of {self.timed_out_after:.2f} seconds")
        return ", ".join(parts)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def run(args: Sequence[str], *, env: Mapping[str, str] | None = None, reset_env: bool = False,
        cwd: str = "/", timeout: float | None = None,
        after_start: Callable[[], None] | None = None) -> RunResult:
    """Run a program and wait for it.

    `env` is added to this process's environment, or is the whole
    environment with `reset_env`. `after_start` runs once the program has
    been started (Ganeti's postfork_fn, used to drop a lock early).
    Raises CommandNotFound when the program does not exist.
    """
    argv = [str(a) for a in args]
    cmd = shell_join(argv)
    if reset_env:
        cmd_env: dict[str, str] = {}
    else:
        cmd_env = dict(os.environ)
        cmd_env["LC_ALL"] = "C"
    if env:
        cmd_env.update(env)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=cwd, env=cmd_env,
                                start_new_session=True, close_fds=True)
    except FileNotFoundError as err:
        raise CommandNotFound(f"Can't execute '{cmd}': not found ({err})") from err
    if after_start is not None:
        after_start()
    timed_out: float | None = None
    killed = False
    try:
        out, err_out = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        assert timeout is not None
        timed_out = timeout
        _signal_group(proc, signal.SIGTERM)
        try:
            out, err_out = proc.communicate(timeout=LINGER_TIMEOUT)
        except subprocess.TimeoutExpired:
            killed = True
            _signal_group(proc, signal.SIGKILL)
            out, err_out = proc.communicate()
    status = proc.returncode
    return RunResult(cmd=cmd, exit_code=status if status >= 0 else None,
                     signal=-status if status < 0 else None,
                     stdout=_decode(out), stderr=_decode(err_out),
                     timed_out_after=timed_out, killed=killed)
