"""LUXI wire format: framing, request parsing, response and error encoding.

Pure code, no sockets (the asyncio server is `masterd.luxi.server`). The
facts come from /work/shared/reference/luxi-protocol.md sections 2 to 5.

Framing
    Every message is a UTF-8 JSON document followed by the byte 0x03
    (`EOM`). `frame(payload)` adds the terminator and refuses a payload that
    contains one; `MessageSplitter(max_message_bytes).feed(chunk)` returns
    the complete messages (bytes, without terminator) found so far and an
    `Oversized` marker, once, for a message that grew past the limit. The
    splitter then drops bytes up to the next terminator, so memory stays
    bounded and the following message is parsed normally.

Requests
    `parse_request(message) -> LuxiRequest(method, args, version)`: the
    message must be a JSON object with a string `method` and an array
    `args` (Ganeti's rules; `version` is optional and ignored like luxid
    does). It does not check that the method exists: that is
    `masterd.luxi.methods`' job.

Responses
    `encode_success(result)` and `encode_failure(error)` give the framed
    bytes of `{"success":...,"result":...}`: compact JSON like luxid, no
    `version` key.

Errors
    Handlers raise `LuxiError` subclasses. Each one knows how it is put on
    the wire (`error.encode()`):

    * `GanetiError` and its subclasses (`OpPrereqError`, `OpExecError`,
      `JobLost`, ...) become Ganeti's encoded exception
      `[<Ganeti class name>, [args...]]`, which the real client re-raises as
      that `ganeti.errors` class. `GanetiError(name, *args)` encodes any
      other Ganeti class by name.
    * `RequestParseError` becomes the plain string
      `"Failed to parse request: <detail>"`, the form luxid uses for a
      request it cannot parse; the client raises `RequestError` with it.
      Our details always name the method and the argument or field at fault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

#: The message terminator (Ganeti's constants.LUXI_EOM).
EOM = b"\x03"

#: Ganeti's constants.LUXI_VERSION; clients send it, nobody checks it on requests.
LUXI_VERSION = 3000000

#: Default bound on one message (request) in bytes, terminator excluded.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: Prefix of the plain-string error for requests that cannot be parsed (luxid's wording).
PARSE_FAILURE_PREFIX = "Failed to parse request: "

#: Ganeti's error codes, the second argument of OpPrereqError (errors.ECODE_ALL).
ERROR_CODES = frozenset({
    "resolver_error", "insufficient_resources", "temp_insufficient_resources", "wrong_input",
    "wrong_state", "unknown_entity", "already_exists", "resource_not_unique", "internal_error",
    "environment_error",
})


class FramingError(ValueError):
    """A payload cannot be framed (it contains the terminator byte)."""


# --------------------------------------------------------------------------
# Errors that handlers raise


class LuxiError(Exception):
    """An error answered to the LUXI client as `{"success": false, "result": encode()}`."""

    def encode(self) -> Any:
        """The JSON value put in the response's `result`."""
        raise NotImplementedError


class RequestParseError(LuxiError):
    """The request cannot be understood: wrong JSON, unknown method, wrong argument shapes.

    Encoded as the plain string "Failed to parse request: <detail>", like
    luxid. The real client raises `ganeti.rpc.errors.RequestError` and the CLI
    prints "Unhandled protocol error while talking to the master daemon".
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def encode(self) -> str:
        return PARSE_FAILURE_PREFIX + self.detail


class GanetiError(LuxiError):
    """A Ganeti exception, encoded as `[class name, [args...]]` (errors.EncodeException).

    Subclasses fix the class name; `GanetiError("TagError", "msg")` names any
    other class of ganeti.errors. The args must be JSON values.
    """

    ganeti_class: ClassVar[str] = ""

    def __init__(self, *args: Any) -> None:
        if not self.ganeti_class:
            if not args or not isinstance(args[0], str) or not args[0]:
                raise TypeError("GanetiError(name, *args) needs the Ganeti class name first")
            self.name: str = args[0]
            args = args[1:]
        else:
            self.name = self.ganeti_class
        super().__init__(*args)

    def encode(self) -> list[Any]:
        return [self.name, list(self.args)]

    def __str__(self) -> str:
        return f"{self.name}: " + ", ".join(str(a) for a in self.args)


class GenericError(GanetiError):
    """`GenericError(msg)`; the CLI prints "Unhandled Ganeti error: <msg>"."""

    ganeti_class = "GenericError"


class OpPrereqError(GanetiError):
    """`OpPrereqError(msg[, ecode])`; ecode is one of `ERROR_CODES`."""

    ganeti_class = "OpPrereqError"

    def __init__(self, msg: str, ecode: str | None = None) -> None:
        if ecode is None:
            super().__init__(msg)
        else:
            if ecode not in ERROR_CODES:
                raise ValueError(f"unknown Ganeti error code {ecode!r}; use one of {sorted(ERROR_CODES)}")
            super().__init__(msg, ecode)


class OpExecError(GanetiError):
    ganeti_class = "OpExecError"


class JobLost(GanetiError):
    ganeti_class = "JobLost"


class JobQueueDrainError(GanetiError):
    ganeti_class = "JobQueueDrainError"


class JobQueueFull(GanetiError):
    """Encoded with no arguments, like luxid: `["JobQueueFull", []]`."""

    ganeti_class = "JobQueueFull"


class ConfigurationError(GanetiError):
    ganeti_class = "ConfigurationError"


class ParameterError(GanetiError):
    ganeti_class = "ParameterError"


class TypeEnforcementError(GanetiError):
    ganeti_class = "TypeEnforcementError"


class QueryFilterParseError(GanetiError):
    ganeti_class = "QueryFilterParseError"


class ProgrammerError(GanetiError):
    ganeti_class = "ProgrammerError"


# --------------------------------------------------------------------------
# Framing


def frame(payload: bytes) -> bytes:
    """The payload followed by the terminator; refuses a payload containing one."""
    if EOM in payload:
        raise FramingError(f"message terminator 0x03 found in payload at byte {payload.index(EOM)}")
    return payload + EOM


@dataclass(frozen=True)
class Oversized:
    """A message exceeded the limit; `seen` bytes of it had arrived when it was cut."""

    seen: int
    limit: int

    def describe(self) -> str:
        return (f"message too large: more than {self.limit} bytes without the 0x03 terminator "
                f"({self.seen} received); the rest of it up to the next terminator is discarded")


class MessageSplitter:
    """Splits a byte stream into messages ended by 0x03, each at most `max_message_bytes`.

    `feed(chunk)` returns, in stream order, each complete message (bytes,
    terminator removed) and one `Oversized` marker per message that exceeded
    the limit. An oversized message is reported as soon as it is known to be
    too big (terminator or not), then its remaining bytes up to the next
    terminator are dropped.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be at least 1")
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer known to hold no terminator
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message held in the buffer."""
        return len(self._buffer)

    @property
    def discarding(self) -> bool:
        """True while dropping the tail of an oversized message."""
        return self._discarding

    def feed(self, chunk: bytes) -> list[bytes | Oversized]:
        out: list[bytes | Oversized] = []
        data = memoryview(chunk)
        if self._discarding:
            end = chunk.find(EOM)
            if end < 0:
                return out
            self._discarding = False
            data = data[end + 1:]
        self._buffer += data
        while True:
            end = self._buffer.find(EOM, self._scanned)
            if end < 0:
                break
            message = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            self._scanned = 0
            if len(message) > self.max_message_bytes:
                out.append(Oversized(len(message), self.max_message_bytes))
            else:
                out.append(message)
        self._scanned = len(self._buffer)
        if len(self._buffer) > self.max_message_bytes:
            out.append(Oversized(len(self._buffer), self.max_message_bytes))
            self._buffer.clear()
            self._scanned = 0
            self._discarding = True
        return out


# --------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class LuxiRequest:
    """A parsed request; `args` are the positional arguments as JSON values."""

    method: str
    args: list[Any]
    version: Any = None


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def decode_json(message: bytes) -> Any:
    """The JSON value of one message; RequestParseError saying where it is broken."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestParseError(f"the request is not valid UTF-8 (byte {err.start}: {err.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestParseError(
            f"the request is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except RecursionError:
        raise RequestParseError("the request is not valid JSON: nested too deeply") from None


def parse_request(message: bytes) -> LuxiRequest:
    """Parse one framed message into a request (Ganeti's rpc.client.ParseRequest rules)."""
    data = decode_json(message)
    if not isinstance(data, dict):
        raise RequestParseError(
            f"the request must be a JSON object with 'method' and 'args', got {json_type(data)}")
    method = data.get("method")
    args = data.get("args")
    if method is None:
        raise RequestParseError("the request has no 'method' field")
    if not isinstance(method, str):
        raise RequestParseError(f"the request's 'method' must be a string, got {json_type(method)}")
    if args is None:
        raise RequestParseError(f"request {method}: the 'args' field is missing")
    if not isinstance(args, list):
        raise RequestParseError(
            f"request {method}: 'args' must be a JSON array of positional arguments, "
            f"got {json_type(args)}")
    return LuxiRequest(method=method, args=args, version=data.get("version"))


def encode_request(method: str, args: list[Any], version: int | None = LUXI_VERSION) -> bytes:
    """A framed request as our own tools send it (compact JSON)."""
    body: dict[str, Any] = {"method": method, "args": args}
    if version is not None:
        body["version"] = version
    return frame(json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8"))


# --------------------------------------------------------------------------
# Responses


def _encode_response(success: bool, result: Any) -> bytes:
    body = {"success": success, "result": result}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        payload = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (from a request's "\ud800"): send them escaped
        payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("ascii")
    return frame(payload)


def encode_success(result: Any) -> bytes:
    """The framed `{"success":true,"result":...}`; ValueError/TypeError if result is not JSON."""
    return _encode_response(True, result)


def encode_failure(error: LuxiError) -> bytes:
    """The framed `{"success":false,"result":<error.encode()>}`."""
    return _encode_response(False, error.encode())


def decode_response(message: bytes) -> tuple[bool, Any]:
    """(success, result) of one response message (for our tools and tests)."""
    data = json.loads(message.decode("utf-8"))
    if not isinstance(data, dict) or "success" not in data or "result" not in data:
        raise ValueError(f"invalid LUXI response: {data!r}")
    return bool(data["success"]), data["result"]
