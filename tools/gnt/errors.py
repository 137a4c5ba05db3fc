"""Client-side errors of our gnt-* tools, and the text Ganeti's CLI prints for each.

Ganeti's clients re-raise an encoded exception `[<class name>, [args...]]`
(luxi-protocol.md §5) as the `ganeti.errors` class of that name. We keep one
exception type, `GanetiError(name, *args)`, and Ganeti's class tree as data
(`PARENTS`), so `err.is_a("OpPrereqError")` answers like `isinstance` would
for the real classes. `str(err)` is Python's text of the arguments, like the
real exception's (one argument: its text; several: the tuple).

Interface
    `GanetiError(name, *args)`, `err.is_a(name)`.
    `decode_error(result) -> GanetiError`: the exception for a failed LUXI
    answer: an encoded Ganeti exception (a known class name with a list of
    arguments), otherwise `RequestError(result)` (Ganeti's rpc.errors rule).
    Transport errors (rpc.errors): `protocol_error(name, *args)` for
    ProtocolError, ConnectionClosedError, TimeoutError, RequestError,
    NoMasterError, PermissionError.
    `JobSubmitted(job_id)`: `--submit` ends a command with it ("JobID: N", exit 0).
    `format_error(err, this_host) -> (exit code, text)`: cli.FormatError's
    wording and codes for every case it distinguishes.
"""

from __future__ import annotations

from typing import Any

#: Every exception class of ganeti.errors that clients re-raise by name -> its parent class.
PARENTS: dict[str, str] = {
    "GenericError": "",
    "LockError": "GenericError",
    "PidFileLockError": "LockError",
    "HypervisorError": "GenericError",
    "HotplugError": "HypervisorError",
    "ProgrammerError": "GenericError",
    "BlockDeviceError": "GenericError",
    "ConfigurationError": "GenericError",
    "ConfigVersionMismatch": "ConfigurationError",
    "ConfigVerifyError": "ConfigurationError",
    "AddressPoolError": "GenericError",
    "ReservationError": "GenericError",
    "RemoteError": "GenericError",
    "SignatureError": "GenericError",
    "ParameterError": "GenericError",
    "ResultValidationError": "GenericError",
    "OpPrereqError": "GenericError",
    "OpExecError": "GenericError",
    "OpResultError": "GenericError",
    "OpRetryNotSupportedError": "GenericError",
    "DeviceCreationError": "GenericError",
    "OpCodeUnknown": "GenericError",
    "JobLost": "GenericError",
    "JobCanceled": "GenericError",
    "JobFileCorrupted": "GenericError",
    "ResolverError": "GenericError",
    "HooksFailure": "GenericError",
    "HooksAbort": "HooksFailure",
    "UnitParseError": "GenericError",
    "ParseError": "GenericError",
    "TypeEnforcementError": "GenericError",
    "X509CertError": "GenericError",
    "TagError": "GenericError",
    "CommandError": "GenericError",
    "StorageError": "GenericError",
    "InotifyError": "GenericError",
    "JobQueueError": "GenericError",
    "JobQueueDrainError": "JobQueueError",
    "JobQueueFull": "JobQueueError",
    "ConfdMagicError": "GenericError",
    "ConfdClientError": "GenericError",
    "UdpDataSizeError": "GenericError",
    "NoCtypesError": "GenericError",
    "IPAddressError": "GenericError",
    "LuxiError": "GenericError",
    "QueryFilterParseError": "ParseError",
    "RapiTestResult": "GenericError",
    "FileStoragePathError": "GenericError",
    "SshUpdateError": "GenericError",
}

#: The transport errors of ganeti.rpc.errors (never decoded from the wire) -> parent.
PROTOCOL_PARENTS: dict[str, str] = {
    "ProtocolError": "LuxiError",
    "ConnectionClosedError": "ProtocolError",
    "TimeoutError": "ProtocolError",
    "RequestError": "ProtocolError",
    "NoMasterError": "ProtocolError",
    "PermissionError": "ProtocolError",
}

_ALL_PARENTS = {**PARENTS, **PROTOCOL_PARENTS}

#: Ganeti's error code for wrong input (errors.ECODE_INVAL).
ECODE_INVAL = "wrong_input"
#: errors.ECODE_STATE.
ECODE_STATE = "wrong_state"


class GanetiError(Exception):
    """An exception of Ganeti's class `name` with Ganeti's arguments."""

    def __init__(self, name: str, *args: Any) -> None:
        if name not in _ALL_PARENTS:
            raise ValueError(f"{name!r} is not a Ganeti error class")
        super().__init__(*args)
        self.name = name

    def is_a(self, name: str) -> bool:
        """True if this error's class is `name` or derives from it."""
        current = self.name
        while current:
            if current == name:
                return True
            current = _ALL_PARENTS[current]
        return False

    def __repr__(self) -> str:
        return f"GanetiError({self.name!r}, {', '.join(repr(a) for a in self.args)})"


def protocol_error(name: str, *args: Any) -> GanetiError:
    """A transport error of ganeti.rpc.errors (ProtocolError, TimeoutError, NoMasterError...)."""
    if name not in PROTOCOL_PARENTS:
        raise ValueError(f"{name!r} is not a Ganeti rpc error class")
    return GanetiError(name, *args)


def decode_error(result: Any) -> GanetiError:
    """The exception a failed answer stands for (errors.MaybeRaise, then RequestError)."""
    if (isinstance(result, list) and len(result) == 2 and isinstance(result[0], str)
            and result[0] in PARENTS and isinstance(result[1], list)):
        return GanetiError(result[0], *result[1])
    return GanetiError("RequestError", result)


class JobSubmitted(Exception):
    """A job was submitted with --submit; the command ends printing "JobID: <id>"."""

    def __init__(self, job_id: Any) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def _format_hooks_abort(err: GanetiError) -> str:
    lines = ["Failure: hooks execution failed:"]
    entries = err.args[0] if err.args and isinstance(err.args[0], list) else []
    for entry in entries:
        node, script, out = [*list(entry), None, None, None][:3]
        if out:
            lines.append(f"  node: {node}, script: {script}, output: {out}")
        else:
            lines.append(f"  node: {node}, script: {script} (no output)")
    return "\n".join(lines)


def _daemon_name(address: Any) -> str:
    text = str(address)
    if text.endswith("/socket/ganeti-master"):
        return "the master daemon"
    if text.endswith("/socket/ganeti-query"):
        return "the config daemon"
    return f"socket '{text}'"


def format_error(err: BaseException, this_host: str = "") -> tuple[int, str]:
    """(exit code, message) for an error, worded like Ganeti's cli.FormatError."""
    if isinstance(err, JobSubmitted):
        return 0, f"JobID: {err.job_id}"
    msg = str(err)
    if not isinstance(err, GanetiError):
        return 1, f"Unhandled exception: {msg}"
    first = err.args[0] if err.args else ""
    text: str
    code = 1
    if err.is_a("ConfigurationError"):
        text, code = f"Corrupt configuration file: {msg}\nAborting.", 2
    elif err.is_a("HooksAbort"):
        text = _format_hooks_abort(err)
    elif err.is_a("HooksFailure"):
        text = f"Failure: hooks general failure: {msg}"
    elif err.is_a("ResolverError"):
        if first == this_host:
            text = f"Failure: can't resolve my own hostname ('{first}')"
        else:
            text = f"Failure: can't resolve hostname '{first}'"
    elif err.is_a("OpPrereqError"):
        if len(err.args) == 2:
            text = ("Failure: prerequisites not met for this operation:\n"
                    f"error type: {err.args[1]}, error details:\n{err.args[0]}")
        else:
            text = f"Failure: prerequisites not met for this operation:\n{msg}"
    elif err.is_a("OpExecError"):
        text = f"Failure: command execution error:\n{msg}"
    elif err.is_a("TagError"):
        text = f"Failure: invalid tag(s) given:\n{msg}"
    elif err.is_a("JobQueueDrainError"):
        text = "Failure: the job queue is marked for drain and doesn't accept new requests"
    elif err.is_a("JobQueueFull"):
        text = ("Failure: the job queue is full and doesn't accept new job submissions until old jobs "
                "are archived")
    elif err.is_a("TypeEnforcementError"):
        text = f"Parameter Error: {msg}"
    elif err.is_a("ParameterError"):
        text = f"Failure: unknown/wrong parameter name '{msg}'"
    elif err.is_a("NoMasterError"):
        text = (f"Cannot communicate with {_daemon_name(first)}.\n"
                "Is the process running and listening for connections?")
    elif err.is_a("TimeoutError"):
        text = ("Timeout while talking to the master daemon. Jobs might have been submitted and will "
                "continue to run even if the call timed out. Useful commands in this situation are "
                "\"gnt-job list\", \"gnt-job cancel\" and \"gnt-job watch\". Error:\n" + msg)
    elif err.is_a("PermissionError"):
        text = ("It seems you don't have permissions to connect to the master daemon.\n"
                "Please retry as a different user.")
    elif err.is_a("ProtocolError"):
        text = f"Unhandled protocol error while talking to the master daemon:\n{msg}"
    elif err.is_a("JobLost"):
        text = f"Error checking job status: {msg}"
    elif err.is_a("QueryFilterParseError"):
        text = f"Error while parsing query filter: {first}"
        if len(err.args) == 2 and isinstance(err.args[1], list):  # the detail lines, if known
            text += "\n" + "\n".join(str(line) for line in err.args[1])
    else:
        text = f"Unhandled Ganeti error: {msg}"
    return code, text.rstrip("\n")
