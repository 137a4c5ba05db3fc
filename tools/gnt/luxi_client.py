"""A LUXI client for our gnt-* tools, speaking to a master exactly like Ganeti 3.0's luxi.Client.

Facts: /work/shared/reference/luxi-protocol.md §1 to §5, §7.

Socket
    `$RUN_DIR/socket/ganeti-query` of `noded.paths.Paths.from_environ()`, so
    GANETI_ROOTDIR/GANETI_HOSTNAME select a virtual node like Ganeti's tools.

Connecting (Ganeti's transport rules)
    * ENOENT or ECONNREFUSED: read `ssconf_master_node`. Unreadable ->
      OpPrereqError "Cluster not initialized or this machine is not part of a
      cluster"; another node is the master -> OpPrereqError "This is not the
      master node, please connect to node 'X' and rerun the command"; this
      node is the master -> retry every second for `connect_timeout` (30 s)
      seconds, then TimeoutError "Connect timed out".
    * EPERM/EACCES -> PermissionError; EAGAIN -> retry.

Calls
    Each request is `{"method", "args", "version": 3000000}` serialised like
    Ganeti's serializer (json.dumps defaults, newline), then 0x03. A network
    error or a connection closed before the answer makes the client reconnect
    and resend the same request, up to 15 attempts, sleeping 5*n seconds,
    like Ganeti's RetryOnNetworkError. Answers: `{"success": true, "result"}`
    gives the result; a failure raises `errors.decode_error(result)`; a
    malformed answer ProtocolError; a `version` other than 3000000
    LuxiError "RPC version mismatch...".

Interface
    `LuxiClient(address=None, paths=None, connect_timeout=30, rw_timeout=180)`
    (connects at once, like Ganeti's), `client.call(method, args)`, one
    method per LUXI request our tools use (`submit_job`, `wait_for_job_change_once`,
    `query_jobs`, `cancel_job`, `archive_job`, `auto_archive_jobs`,
    `change_job_priority`, `query`, `query_fields`, `query_cluster_info`,
    `query_config_values`, `set_queue_drain_flag`), `client.close()`.
    `get_client(paths=None)`: the connected client for this node, or the
    OpPrereqError above (Ganeti's runtime.GetClient).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from typing import Any

from masterd.luxi.protocol import EOM, LUXI_VERSION
from noded.paths import Paths
from tools.gnt.errors import ECODE_INVAL, GanetiError, decode_error, protocol_error

#: Seconds to keep trying to connect to the master's socket (LUXI_DEF_CTMO).
CONNECT_TIMEOUT = 30.0
#: Seconds per read/write (LUXI_DEF_RWTO).
RW_TIMEOUT = 180.0
#: WaitForJobChange timeout cap (LUXI_WFJC_TIMEOUT) and the CLI's usual value (DEFAULT_WFJC_TIMEOUT).
WFJC_TIMEOUT_MAX = 89
DEFAULT_WFJC_TIMEOUT = 60
#: Attempts per request on network errors, and the sleep factor between them (RetryOnNetworkError).
NETWORK_RETRIES = 15
NETWORK_RETRY_WAIT = 5.0
#: The answer WaitForJobChange may give when nothing changed (constants.JOB_NOTCHANGED).
JOB_NOTCHANGED = "nochange"

QUERY_SOCKET_NAME = "ganeti-query"

log = logging.getLogger("gnt.luxi")


def query_socket(paths: Paths) -> str:
    """Where Ganeti 3.0's clients find the master: $RUN_DIR/socket/ganeti-query."""
    return os.path.join(paths.socket_dir, QUERY_SOCKET_NAME)


def read_master_node(paths: Paths) -> str:
    """The master's name from ssconf_master_node; GanetiError(ConfigurationError) if unreadable."""
    filename = paths.ssconf_file("master_node")
    try:
        with open(filename, encoding="utf-8") as handle:
            return handle.read().rstrip("\n")
    except OSError as err:
        raise GanetiError("ConfigurationError", f"Can't read ssconf file {filename}: {err}") from None


def my_name(paths: Paths) -> str:
    """This node's name as Ganeti compares it with the master's (normalised to lower case)."""
    return paths.hostname.lower()


def encode_request(method: str, args: list[Any] | tuple[Any, ...]) -> bytes:
    """A request's bytes exactly as Ganeti's client sends them (without the terminator)."""
    body = {"method": method, "args": list(args), "version": LUXI_VERSION}
    text = json.dumps(body)
    if not text.endswith("\n"):
        text += "\n"
    return text.encode("utf-8")


class _NotMaster(Exception):
    """Connecting failed and this node is not the master (Ganeti's NoMasterError)."""


class _Connection:
    """One connected socket with Ganeti's framing and timeouts."""

    def __init__(self, address: str, paths: Paths, connect_timeout: float, rw_timeout: float) -> None:
        self.address = address
        self.rw_timeout = rw_timeout
        self._buffer = b""
        self._messages: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._connect(paths, connect_timeout)
            self.sock.settimeout(rw_timeout)
        except BaseException:
            self.sock.close()
            raise

    def _connect(self, paths: Paths, connect_timeout: float) -> None:
        deadline = time.monotonic() + connect_timeout
        while True:
            self.sock.settimeout(connect_timeout)
            try:
                self.sock.connect(self.address)
                return
            except TimeoutError as err:
                raise protocol_error("TimeoutError", f"Connect timed out: {err}") from None
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ECONNREFUSED):
                    try:
                        master = read_master_node(paths)
                    except GanetiError:
                        raise _NotMaster() from None
                    if master != my_name(paths):
                        raise _NotMaster() from None
                elif err.errno in (errno.EPERM, errno.EACCES):
                    raise protocol_error("PermissionError", self.address) from None
                elif err.errno != errno.EAGAIN:
                    raise
            if time.monotonic() + 1.0 > deadline:
                raise protocol_error("TimeoutError", "Connect timed out")
            time.sleep(1.0)

    def call(self, payload: bytes) -> bytes:
        if EOM in payload:
            raise protocol_error("ProtocolError", "Message terminator found in payload")
        try:
            self.sock.sendall(payload + EOM)
        except TimeoutError as err:
            raise protocol_error("TimeoutError", f"Sending timeout: {err}") from None
        return self._receive()

    def _receive(self) -> bytes:
        deadline = time.monotonic() + self.rw_timeout
        while not self._messages:
            if time.monotonic() > deadline:
                raise protocol_error("TimeoutError", "Extended receive timeout")
            try:
                data = self.sock.recv(65536)
            except TimeoutError as err:
                raise protocol_error("TimeoutError", f"Receive timeout: {err}") from None
            if not data:
                raise _ConnectionClosed("Connection closed while reading")
            parts = (self._buffer + data).split(EOM)
            self._buffer = parts.pop()
            self._messages.extend(parts)
        return self._messages.pop(0)

    def close(self) -> None:
        self.sock.close()


class _ConnectionClosed(Exception):
    """The master closed the connection before answering (Ganeti's ConnectionClosedError)."""


def _not_master_error(paths: Paths) -> GanetiError:
    """Ganeti's runtime.GetClient wording for a node that cannot reach a master."""
    try:
        master = read_master_node(paths)
    except GanetiError:
        return GanetiError("OpPrereqError",
                           "Cluster not initialized or this machine is not part of a cluster", ECODE_INVAL)
    if master != my_name(paths):
        return GanetiError("OpPrereqError",
                           f"This is not the master node, please connect to node '{master}' and rerun "
                           "the command", ECODE_INVAL)
    return protocol_error("NoMasterError", query_socket(paths))


class LuxiClient:
    """A connection to the master's LUXI socket; see the module docstring."""

    def __init__(self, address: str | None = None, paths: Paths | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, rw_timeout: float = RW_TIMEOUT,
                 retries: int = NETWORK_RETRIES, retry_wait: float = NETWORK_RETRY_WAIT) -> None:
        self.paths = paths or Paths.from_environ()
        self.address = address or query_socket(self.paths)
        self.connect_timeout = connect_timeout
        self.rw_timeout = rw_timeout
        self.retries = retries
        self.retry_wait = retry_wait
        self._conn: _Connection | None = None
        self._open()

    def _open(self) -> _Connection:
        if self._conn is None:
            try:
                self._conn = _Connection(self.address, self.paths, self.connect_timeout, self.rw_timeout)
            except _NotMaster:
                raise _not_master_error(self.paths) from None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def __enter__(self) -> LuxiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, payload: bytes) -> bytes:
        for attempt in range(self.retries):
            try:
                return self._open().call(payload)
            except (OSError, _ConnectionClosed) as err:
                self.close()
                if attempt == self.retries - 1:
                    if isinstance(err, _ConnectionClosed):
                        raise protocol_error("ConnectionClosedError", str(err)) from None
                    raise
                log.error("Network error: %s, retrying (retry attempt number %d)", err, attempt + 1)
                time.sleep(self.retry_wait * attempt)
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def call(self, method: str, args: list[Any] | tuple[Any, ...]) -> Any:
        """The result of one request; raises the decoded error of a failed one."""
        log.debug("LUXI request %s %.500r", method, args)
        reply = self._send(encode_request(method, args))
        try:
            data = json.loads(reply.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise protocol_error("ProtocolError", f"Error while deserializing response: {err}") from None
        if not (isinstance(data, dict) and "success" in data and "result" in data):
            raise protocol_error("ProtocolError", f"Invalid response from server: {data!r}")
        version = data.get("version")
        if version is not None and version != LUXI_VERSION:
            raise GanetiError("LuxiError",
                              f"RPC version mismatch, client {LUXI_VERSION}, response {version}")
        if data["success"]:
            return data["result"]
        raise decode_error(data["result"])

    # -- the requests our tools make (luxi.Client's methods) -------------------

    @staticmethod
    def _job_id(method: str, job_id: Any) -> int:
        try:
            return int(job_id)
        except ValueError:
            raise protocol_error(
                "RequestError",
                f"Invalid parameter passed to {method} as job id:  expected integer, got value {job_id}",
            ) from None

    def submit_job(self, ops: list[dict[str, Any]]) -> Any:
        return self.call("SubmitJob", [ops])

    def wait_for_job_change_once(self, job_id: Any, fields: list[str], prev_job_info: Any,
                                 prev_log_serial: Any, timeout: float = DEFAULT_WFJC_TIMEOUT) -> Any:
        return self.call("WaitForJobChange",
                         [job_id, fields, prev_job_info, prev_log_serial, min(WFJC_TIMEOUT_MAX, timeout)])

    def query_jobs(self, job_ids: list[Any] | None, fields: list[str]) -> Any:
        return self.call("QueryJobs", [job_ids, fields])

    def cancel_job(self, job_id: Any, kill: bool = False) -> Any:
        return self.call("CancelJob", [self._job_id("CancelJob", job_id), kill])

    def archive_job(self, job_id: Any) -> Any:
        return self.call("ArchiveJob", [self._job_id("ArchiveJob", job_id)])

    def change_job_priority(self, job_id: Any, priority: int) -> Any:
        return self.call("ChangeJobPriority", [self._job_id("ChangeJobPriority", job_id), priority])

    def auto_archive_jobs(self, age: int) -> Any:
        return self.call("AutoArchiveJobs", [age, (int(RW_TIMEOUT) - 1) // 2])

    def query(self, what: str, fields: list[str], qfilter: Any) -> dict[str, Any]:
        result = self.call("Query", [what, fields, qfilter])
        return check_query_response(result, ("fields", "data"))

    def query_fields(self, what: str, fields: list[str] | None) -> dict[str, Any]:
        result = self.call("QueryFields", [what, fields])
        return check_query_response(result, ("fields",))

    def query_cluster_info(self) -> Any:
        return self.call("QueryClusterInfo", [])

    def query_config_values(self, names: list[str]) -> Any:
        return self.call("QueryConfigValues", [names])

    def set_queue_drain_flag(self, drain: bool) -> Any:
        return self.call("SetDrainFlag", [drain])


_FIELD_KEYS = frozenset({"name", "title", "kind", "doc"})


def check_query_response(result: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """A Query/QueryFields answer checked for the shape the tools rely on; ProtocolError otherwise."""
    if not isinstance(result, dict) or set(result) - set(keys) or "fields" not in result:
        raise protocol_error("ProtocolError", f"Invalid query response from server: {result!r}")
    for fdef in result["fields"]:
        if not isinstance(fdef, dict) or set(fdef) - _FIELD_KEYS or not fdef.get("name"):
            raise protocol_error("ProtocolError", f"Invalid field definition from server: {fdef!r}")
    if "data" in keys and not isinstance(result.get("data", []), list):
        raise protocol_error("ProtocolError", f"Invalid query data from server: {result['data']!r}")
    return result


def get_client(paths: Paths | None = None) -> LuxiClient:
    """The connected client for this node (runtime.GetClient), or Ganeti's not-the-master error."""
    return LuxiClient(paths=paths)
