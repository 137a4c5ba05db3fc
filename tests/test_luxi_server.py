"""masterd.luxi.server: the LUXI door, driven by Debian's real Ganeti 3.0 client and by raw sockets."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from masterd.luxi.methods import UnimplementedHandler
from masterd.luxi.protocol import (
    EOM,
    JobLost,
    OpPrereqError,
    decode_response,
    encode_request,
)
from masterd.luxi.server import LuxiServer, LuxiServerError, master_socket_path, query_socket_path
from noded.paths import Paths

GANETI_PY = "/usr/share/ganeti/3.0"
HOST = "node1"
MAX_MESSAGE = 64 * 1024
FINAL = ("success", "error", "canceled")
JOB_FIELDS = ("id", "status", "opstatus", "opresult")

T = TypeVar("T")

# -- a small handler: jobs of OP_TEST_DELAY that finish after their duration -------------------


@dataclass
class DemoJob:
    job_id: int
    ops: list[dict[str, Any]]
    status: str = "queued"
    log: list[list[Any]] = field(default_factory=list)
    opresult: list[Any] = field(default_factory=list)

    def field(self, name: str) -> Any:
        values = {"id": self.job_id, "status": self.status, "opstatus": [self.status] * len(self.ops),
                  "opresult": self.opresult or [None] * len(self.ops)}
        return values[name]


class DemoHandler(UnimplementedHandler):
    """Runs each submitted job in the loop: running, one log line, success after its duration."""

    def __init__(self) -> None:
        self.jobs: dict[int, DemoJob] = {}
        self.next_id = 1
        self.changed = asyncio.Condition()

    async def query_config_values(self, names: list[str]) -> list[Any]:
        known = {"cluster_name": "cluster.example.com", "master_node": HOST, "drain_flag": False}
        return [known.get(name) for name in names]

    async def submit_job(self, ops: list[dict[str, Any]]) -> int:
        job = DemoJob(self.next_id, ops)
        self.next_id += 1
        self.jobs[job.job_id] = job
        asyncio.get_running_loop().create_task(self._run(job))
        return job.job_id

    async def _run(self, job: DemoJob) -> None:
        await self._set(job, "running")
        await asyncio.sleep(float(job.ops[0].get("duration", 0)))
        job.log.append([1, [int(time.time()), 0], "message", "delay done"])
        job.opresult = [None] * len(job.ops)
        await self._set(job, "success")

    async def _set(self, job: DemoJob, status: str) -> None:
        async with self.changed:
            job.status = status
            self.changed.notify_all()

    async def query_jobs(self, job_ids: list[int] | None, fields: list[str]) -> list[list[Any]]:
        unknown = [f for f in fields if f not in JOB_FIELDS]
        if unknown:
            raise OpPrereqError(f"Unknown output fields selected: {', '.join(unknown)}", "wrong_input")
        ids = job_ids or sorted(self.jobs)
        return [[self.jobs[j].field(f) for f in fields] if j in self.jobs
                else [j if f == "id" else None for f in fields] for j in ids]

    async def wait_for_job_change(self, job_id: int, fields: list[str], prev_job_info: list[Any] | None,
                                  prev_log_serial: int | None, timeout: float) -> Any:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobLost("Can't load job file")
        deadline = asyncio.get_running_loop().time() + timeout

        def current() -> list[Any]:
            logs = [e for e in job.log if prev_log_serial is None or e[0] > prev_log_serial]
            return [[job.field(f) for f in fields], logs]

        async with self.changed:
            while True:
                now = current()
                remaining = deadline - asyncio.get_running_loop().time()
                if job.status in FINAL or now != [prev_job_info, []] or remaining <= 0:
                    return now
                try:
                    await asyncio.wait_for(self.changed.wait(), remaining)
                except TimeoutError:
                    pass

    async def query_cluster_info(self) -> dict[str, Any]:
        return {"bad": {1, 2}}  # not JSON: a handler bug the server must survive

    async def query_tags(self, kind: str, name: str) -> list[str]:
        raise RuntimeError("tag store exploded")


# -- the server in a background event loop ---------------------------------------------------------


class ServerThread:
    def __init__(self, root: str) -> None:
        self.paths = Paths(root=root, hostname=HOST)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.handler: DemoHandler = self.run(self._make_handler())
        self.server = LuxiServer.for_paths(self.handler, self.paths, max_message_bytes=MAX_MESSAGE)
        try:
            self.run(self.server.start())
        except BaseException:
            self._stop_loop()
            raise

    async def _make_handler(self) -> DemoHandler:
        return DemoHandler()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def socket_path(self) -> str:
        return query_socket_path(self.paths)

    def close(self) -> None:
        try:
            self.run(self.server.stop(grace=1))
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def root() -> Iterator[str]:
    # Short, because AF_UNIX paths are limited to 107 bytes.
    base = tempfile.mkdtemp(prefix="luxi", dir="/tmp")
    try:
        yield os.path.join(base, HOST)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def server(root: str) -> Iterator[ServerThread]:
    running = ServerThread(root)
    try:
        yield running
    finally:
        running.close()


# -- raw socket helpers --------------------------------------------------------------------------


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def receive(sock: socket.socket) -> tuple[bool, Any]:
    data = b""
    while not data.endswith(EOM):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed without an answer (got {data!r})")
        data += chunk
    assert data.count(EOM) == 1, data
    return decode_response(data[:-1])


def call(sock: socket.socket, method: str, args: list[Any]) -> tuple[bool, Any]:
    sock.sendall(encode_request(method, args))
    return receive(sock)


def assert_still_serving(sock: socket.socket) -> None:
    assert call(sock, "QueryConfigValues", [["cluster_name"]]) == (True, ["cluster.example.com"])


# -- Debian's real client ------------------------------------------------------------------------

REAL_CLIENT = r"""
import json, sys
from ganeti import cli, luxi, opcodes
client = luxi.Client()
for name, args in json.load(sys.stdin):
    try:
        if name == "SubmitJob":
            value = client.SubmitJob([opcodes.OpCode.LoadOpCode(op) for op in args[0]])
        elif name == "PollJob":
            value = cli.PollJob(args[0], cl=client, feedback_fn=lambda msg: None)
        elif hasattr(client, name):
            value = getattr(client, name)(*args)
        else:
            value = client.CallMethod(name, args)
        print(json.dumps({"ok": value}))
    except Exception as err:
        print(json.dumps({"error": type(err).__module__ + "." + type(err).__name__,
                          "args": [str(a) for a in err.args]}))
"""

needs_real_client = pytest.mark.skipif(not Path(GANETI_PY, "ganeti", "luxi.py").exists(),
                                       reason="Debian's ganeti 3.0 is not installed")


def real_client(root: str, calls: list[list[Any]], timeout: float = 60) -> list[dict[str, Any]]:
    """Run the calls with ganeti.luxi.Client() on one connection; one answer per call."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": GANETI_PY, "GANETI_ROOTDIR": root, "GANETI_HOSTNAME": HOST}
    proc = subprocess.run(["/usr/bin/python3", "-c", REAL_CLIENT], input=json.dumps(calls), env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@needs_real_client
def test_real_client_reads_config_values(server: ServerThread, root: str) -> None:
    [answer] = real_client(root, [["QueryConfigValues", [["cluster_name", "master_node", "no_such"]]]])
    assert answer == {"ok": ["cluster.example.com", HOST, None]}


@needs_real_client
def test_real_client_submits_jobs_and_gets_increasing_ids(server: ServerThread, root: str) -> None:
    op = {"OP_ID": "OP_TEST_DELAY", "duration": 0}
    answers = real_client(root, [["SubmitJob", [[op]]], ["SubmitJob", [[op, op]]]])
    assert answers == [{"ok": 1}, {"ok": 2}]
    assert [len(server.handler.jobs[i].ops) for i in (1, 2)] == [1, 2]
    assert server.handler.jobs[1].ops[0]["OP_ID"] == "OP_TEST_DELAY"


@needs_real_client
def test_real_client_polls_a_job_to_success_through_wait_for_job_change(server: ServerThread,
                                                                        root: str) -> None:
    answers = real_client(root, [["SubmitJob", [[{"OP_ID": "OP_TEST_DELAY", "duration": 0.3}]]],
                                 ["PollJob", ["1"]],
                                 ["QueryJobs", [["1", 99], ["id", "status"]]]])
    assert answers == [{"ok": 1}, {"ok": [None]}, {"ok": [[1, "success"], [99, None]]}]


@needs_real_client
def test_real_client_wait_for_job_change_returns_the_change(server: ServerThread, root: str) -> None:
    answers = real_client(root, [["SubmitJob", [[{"OP_ID": "OP_TEST_DELAY", "duration": 0.2}]]],
                                 ["WaitForJobChangeOnce", [1, ["status"], ["running"], None, 10]]])
    assert answers[1]["ok"][0] == ["success"]
    assert [entry[3] for entry in answers[1]["ok"][1]] == ["delay done"]


@needs_real_client
def test_real_client_raises_joblost_for_a_missing_job(server: ServerThread, root: str) -> None:
    [answer] = real_client(root, [["WaitForJobChangeOnce", [42, ["status"], None, None, 1]]])
    assert answer == {"error": "ganeti.errors.JobLost", "args": ["Can't load job file"]}


@needs_real_client
def test_real_client_raises_opprereqerror_with_its_ecode(server: ServerThread, root: str) -> None:
    [answer] = real_client(root, [["QueryJobs", [None, ["nosuchfield"]]]])
    assert answer == {"error": "ganeti.errors.OpPrereqError",
                      "args": ["Unknown output fields selected: nosuchfield", "wrong_input"]}


@needs_real_client
def test_real_client_gets_request_error_for_unknown_method_and_goes_on(server: ServerThread,
                                                                      root: str) -> None:
    answers = real_client(root, [["NoSuchMethod", []], ["QueryConfigValues", [["cluster_name"]]]])
    assert answers[0]["error"] == "ganeti.rpc.errors.RequestError"
    assert "unknown method 'NoSuchMethod'" in answers[0]["args"][0]
    assert answers[1] == {"ok": ["cluster.example.com"]}


@needs_real_client
def test_real_client_gets_an_error_naming_the_wrong_argument(server: ServerThread, root: str) -> None:
    [answer] = real_client(root, [["QueryJobs", [["x"], ["id"]]]])
    assert answer["error"] == "ganeti.rpc.errors.RequestError"
    assert answer["args"][0].startswith("Failed to parse request: QueryJobs: argument 1 (job_ids[0]) must be")


@needs_real_client
def test_real_client_gets_an_answer_for_a_huge_job_and_submits_nothing(server: ServerThread,
                                                                       root: str) -> None:
    op = {"OP_ID": "OP_TEST_DELAY", "duration": 0, "comment": "x" * (4 * MAX_MESSAGE)}
    started = time.monotonic()
    answers = real_client(root, [["SubmitJob", [[op]]], ["QueryConfigValues", [["cluster_name"]]]])
    assert answers[0]["error"] == "ganeti.rpc.errors.RequestError"
    assert "message too large" in answers[0]["args"][0]
    assert answers[1] == {"ok": ["cluster.example.com"]}
    assert server.handler.jobs == {}
    assert time.monotonic() - started < 5  # answered at once: the client did not retry


# -- raw socket: bad input gets an answer, and the server keeps serving ----------------------------


def test_garbage_bytes_are_answered_and_the_connection_keeps_serving(server: ServerThread) -> None:
    with connect(server.socket_path) as sock:
        sock.sendall(b"\xff\xfe\x00garbage\x03")
        ok, result = receive(sock)
        assert not ok
        assert result.startswith("Failed to parse request: the request is not valid UTF-8")
        assert_still_serving(sock)


def test_invalid_json_is_answered_with_its_position(server: ServerThread) -> None:
    with connect(server.socket_path) as sock:
        sock.sendall(b'{"method": "QueryJobs", "args": [\x03')
        ok, result = receive(sock)
        assert not ok
        assert result.startswith("Failed to parse request: the request is not valid JSON")
        assert "line 1 column" in result
        assert_still_serving(sock)


def test_message_without_terminator_then_half_close_is_answered(server: ServerThread) -> None:
    with connect(server.socket_path) as sock:
        partial = b'{"method": "QueryClusterInfo", "args": []}'
        sock.sendall(partial)
        sock.shutdown(socket.SHUT_WR)
        ok, result = receive(sock)
        assert (ok, result) == (False, "Failed to parse request: connection closed in the middle of a "
                                       f"message: {len(partial)} bytes without the 0x03 terminator")
        assert sock.recv(10) == b""
    with connect(server.socket_path) as other:
        assert_still_serving(other)


def test_message_without_terminator_then_close_does_not_stop_the_server(server: ServerThread) -> None:
    with connect(server.socket_path) as sock:
        sock.sendall(b'{"method": "SubmitJob", "args": [[')
    with connect(server.socket_path) as other:
        assert_still_serving(other)
    assert server.handler.jobs == {}


def test_huge_message_is_answered_and_its_tail_dropped(server: ServerThread) -> None:
    huge = encode_request("SubmitJob", [[{"OP_ID": "OP_TEST_DELAY", "comment": "x" * (4 * MAX_MESSAGE)}]])
    with connect(server.socket_path) as sock:
        sock.sendall(huge)
        ok, result = receive(sock)
        assert not ok
        assert result.startswith(f"Failed to parse request: message too large: more than {MAX_MESSAGE} bytes")
        assert_still_serving(sock)
    assert server.handler.jobs == {}


def test_huge_message_without_terminator_is_answered_before_it_ends(server: ServerThread) -> None:
    with connect(server.socket_path) as sock:
        sock.sendall(b'"' + b"x" * (MAX_MESSAGE + 10))
        ok, result = receive(sock)
        assert not ok and "message too large" in result
        sock.sendall(b'yyy"' + EOM)  # the end of the refused message: dropped, not answered
        assert_still_serving(sock)


@pytest.mark.parametrize(("method", "args", "detail"), [
    ("SubmitJob", ["not a list"], "SubmitJob: argument 1 (ops) must be a list of opcode objects"),
    ("SubmitJob", [], "SubmitJob takes 1 argument(s) SubmitJob[ops], got 0"),
    ("WaitForJobChange", ["x", ["status"], None, None, 5], "WaitForJobChange: argument 1 (job_id) must be"),
    ("QueryConfigValues", [["cluster_name", 3]], "QueryConfigValues: argument 1 (names[1]) must be a string"),
    ("NoSuchMethod", [], "Unable to parse LUXI request method: unknown method 'NoSuchMethod'"),
])
def test_wrong_requests_are_answered_with_a_parse_error(server: ServerThread, method: str, args: list[Any],
                                                        detail: str) -> None:
    with connect(server.socket_path) as sock:
        ok, result = call(sock, method, args)
        assert not ok
        assert result.startswith("Failed to parse request: " + detail)
        assert_still_serving(sock)
    assert server.handler.jobs == {}


def test_method_name_with_a_lone_surrogate_is_answered(server: ServerThread) -> None:
    with connect(server.socket_path) as sock:
        sock.sendall(b'{"method": "X\\ud800", "args": {}}\x03')
        assert receive(sock) == (
            False, "Failed to parse request: request X\ud800: 'args' must be a JSON array of positional "
                   "arguments, got object")
        assert_still_serving(sock)


def test_request_that_is_not_an_object_is_answered(server: ServerThread) -> None:
    with connect(server.socket_path) as sock:
        sock.sendall(b'["QueryJobs", []]\x03')
        assert receive(sock) == (False, "Failed to parse request: the request must be a JSON object with "
                                        "'method' and 'args', got array")
        assert_still_serving(sock)


def test_handler_exception_is_answered_as_generic_error(server: ServerThread) -> None:
    with connect(server.socket_path) as sock:
        assert call(sock, "QueryTags", ["cluster", ""]) == (
            False,
            ["GenericError", ["Internal error in LUXI method QueryTags: RuntimeError: tag store exploded"]])
        assert_still_serving(sock)


def test_result_that_is_not_json_is_answered_as_generic_error(server: ServerThread) -> None:
    with connect(server.socket_path) as sock:
        ok, result = call(sock, "QueryClusterInfo", [])
        assert not ok and result[0] == "GenericError"
        assert result[1][0].startswith(
            "Internal error in LUXI method QueryClusterInfo: the result cannot be sent")
        assert_still_serving(sock)


def test_unimplemented_method_is_answered_as_generic_error(server: ServerThread) -> None:
    with connect(server.socket_path) as sock:
        assert call(sock, "SetDrainFlag", [True]) == (
            False, ["GenericError", ["LUXI method SetDrainFlag is not implemented by this server"]])


def test_pipelined_requests_are_answered_in_order(server: ServerThread) -> None:
    with connect(server.socket_path) as sock:
        sock.sendall(encode_request("QueryConfigValues", [["cluster_name"]]) + b"{}\x03"
                     + encode_request("QueryConfigValues", [["master_node"]]))
        data = b""
        while data.count(EOM) < 3:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert [decode_response(m) for m in data.split(EOM)[:3]] == [
            (True, ["cluster.example.com"]),
            (False, "Failed to parse request: the request has no 'method' field"),
            (True, [HOST])]
        assert data.endswith(EOM) and data.count(EOM) == 3


# -- sockets, concurrency, lifecycle -----------------------------------------------------------------


def test_sockets_have_mode_0660(server: ServerThread) -> None:
    for path in (query_socket_path(server.paths), master_socket_path(server.paths)):
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660


def test_query_socket_is_where_ganeti_finds_it(server: ServerThread, root: str) -> None:
    assert server.socket_path == os.path.join(root, "var/run/ganeti/socket/ganeti-query")


def test_master_alias_socket_serves_the_same_handler(server: ServerThread) -> None:
    with connect(master_socket_path(server.paths)) as sock:
        assert_still_serving(sock)


def test_long_poll_does_not_block_another_client(server: ServerThread) -> None:
    with connect(server.socket_path) as poller, connect(server.socket_path) as other:
        assert call(poller, "SubmitJob", [[{"OP_ID": "OP_TEST_DELAY", "duration": 30}]]) == (True, 1)
        time.sleep(0.05)  # let the job start running
        started = time.monotonic()
        poller.sendall(encode_request("WaitForJobChange", [1, ["status"], ["running"], None, 1.5]))
        with ThreadPoolExecutor(1) as pool:
            polled = pool.submit(receive, poller)
            assert_still_serving(other)
            assert time.monotonic() - started < 1.0
            assert not polled.done()
            assert polled.result(10) == (True, [["running"], []])
        assert time.monotonic() - started >= 1.4


def test_stop_removes_the_socket_files(root: str) -> None:
    running = ServerThread(root)
    paths = [query_socket_path(running.paths), master_socket_path(running.paths)]
    assert all(os.path.exists(p) for p in paths)
    running.close()
    assert not any(os.path.exists(p) for p in paths)


def test_stop_answers_a_request_still_running_after_the_grace(root: str) -> None:
    running = ServerThread(root)
    try:
        with connect(running.socket_path) as sock:
            assert call(sock, "SubmitJob", [[{"OP_ID": "OP_TEST_DELAY", "duration": 30}]]) == (True, 1)
            time.sleep(0.05)
            sock.sendall(encode_request("WaitForJobChange", [1, ["status"], ["running"], None, 30]))
            time.sleep(0.1)
            running.run(running.server.stop(grace=0.2))
            ok, result = receive(sock)
            assert not ok and result[0] == "GenericError" and "shutting down" in result[1][0]
    finally:
        running.close()


def test_stale_socket_file_is_replaced(root: str) -> None:
    path = query_socket_path(Paths(root=root, hostname=HOST))
    os.makedirs(os.path.dirname(path))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    running = ServerThread(root)
    try:
        with connect(path) as sock:
            assert_still_serving(sock)
    finally:
        running.close()


def test_second_server_on_a_live_socket_is_refused(server: ServerThread, root: str) -> None:
    with pytest.raises(LuxiServerError, match="already listening"):
        ServerThread(root)
    with connect(server.socket_path) as sock:
        assert_still_serving(sock)


def test_file_that_is_not_a_socket_is_not_replaced(root: str) -> None:
    path = query_socket_path(Paths(root=root, hostname=HOST))
    os.makedirs(os.path.dirname(path))
    Path(path).write_text("precious")
    with pytest.raises(LuxiServerError, match="is not a socket"):
        ServerThread(root)
    assert Path(path).read_text() == "precious"


def test_too_long_socket_path_is_refused_clearly(tmp_path: Path) -> None:
    server = LuxiServer(UnimplementedHandler(), str(tmp_path / ("x" * 120) / "ganeti-query"))
    with pytest.raises(LuxiServerError, match="AF_UNIX allows at most 107"):
        asyncio.run(server.start())
