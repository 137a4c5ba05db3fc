"""The legacy door on a running daemon: framing, answers, and bad input."""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest
from support import RunningNoded


def _raw(daemon: RunningNoded, data: bytes, read: bool = True) -> bytes:
    ctx = daemon.ssl_context(daemon.client_pem)
    with socket.create_connection((daemon.address, daemon.port), timeout=20) as s:
        with ctx.wrap_socket(s) as ts:
            ts.sendall(data)
            if not read:
                return b""
            chunks = []
            while True:
                try:
                    d = ts.recv(65536)
                except (ssl.SSLError, ConnectionResetError):
                    break
                if not d:
                    break
                chunks.append(d)
                if b"\r\n\r\n" in b"".join(chunks):
                    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:") and \
                                len(body) >= int(line.split(b":")[1]):
                            return b"".join(chunks)
            return b"".join(chunks)



@pytest.fixture(scope="module")
def noded(shared_noded: RunningNoded) -> RunningNoded:
    """These tests only read: they share one daemon."""
    return shared_noded

def test_version_answers_like_ganeti(noded: RunningNoded) -> None:
    status, body = noded.post("version", b"[]\n")
    assert status == 200
    assert body == b"[true, 3000000]\n"


def test_put_is_accepted_as_old_masters_send_it(noded: RunningNoded) -> None:
    assert noded.post("version", b"[]", method="PUT") == (200, b"[true, 3000000]\n")


def test_compact_form_encoded_body_from_the_haskell_master(noded: RunningNoded) -> None:
    status, body = noded.post("test_delay", b"[0.01]",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body) == (200, b"[true, null]\n")


def test_response_has_byte_content_length_and_no_content_type(noded: RunningNoded) -> None:
    raw = _raw(noded, b"POST /version HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n[]\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"content-type" not in head.lower()
    assert f"content-length: {len(body)}".encode() in head.lower()


def test_application_failure_is_http_200_with_false(noded: RunningNoded) -> None:
    assert noded.post("test_delay", b"[-1]") == (200, b'[false, "Invalid sleep duration"]\n')


def test_wrong_argument_count_is_a_clear_failure(noded: RunningNoded) -> None:
    status, body = noded.post("test_delay", b"[]")
    assert status == 200
    assert json.loads(body) == [False, "test_delay takes 1 argument(s) (duration), got 0"]


def test_wrong_argument_type_is_a_clear_failure(noded: RunningNoded) -> None:
    status, body = noded.post("test_delay", b'["soon"]')
    assert status == 200
    ok, msg = json.loads(body)
    assert not ok and "argument 1 (duration) of test_delay: expected a number, got a string" == msg


def test_malformed_json_is_400(noded: RunningNoded) -> None:
    status, body = noded.post("test_delay", b"[1,")
    assert status == 400
    assert b"not valid JSON" in body


def test_body_that_is_not_utf8_is_400(noded: RunningNoded) -> None:
    status, _body = noded.post("test_delay", b'["\xff\xfe"]')
    assert status == 400


def test_non_ascii_body_is_read_by_bytes(noded: RunningNoded) -> None:
    # The real 3.0.2 daemon counts characters and hangs for 10 s on this body.
    started = time.monotonic()
    status, body = noded.post("test_delay", '["dür"]'.encode())
    assert status == 200 and time.monotonic() - started < 5
    assert json.loads(body)[0] is False


def test_unknown_procedure_is_404(noded: RunningNoded) -> None:
    status, body = noded.post("no_such_procedure", b"[]")
    assert status == 404 and b"no procedure '/no_such_procedure'" in body


def test_query_string_is_not_a_procedure(noded: RunningNoded) -> None:
    assert noded.post("version?x=1", b"[]")[0] == 404


def test_wrong_method_is_405(noded: RunningNoded) -> None:
    status, _ = noded.post("version", b"", method="GET")
    assert status == 405


def test_unparsable_http_is_400_and_the_daemon_keeps_serving(noded: RunningNoded) -> None:
    raw = _raw(noded, b"THIS IS NOT HTTP\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400")
    assert noded.post("version")[0] == 200


def test_client_disconnecting_mid_body_does_not_hurt(noded: RunningNoded) -> None:
    _raw(noded, b"POST /test_delay HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[0.", read=False)
    assert noded.post("version") == (200, b"[true, 3000000]\n")


def test_keep_alive_serves_many_calls_on_one_connection(noded: RunningNoded) -> None:
    import http.client
    conn = http.client.HTTPSConnection(noded.address, noded.port, context=noded.ssl_context(noded.client_pem))
    try:
        sockets = set()
        for _ in range(5):
            conn.request("POST", "/version", body=b"[]")
            resp = conn.getresponse()
            assert resp.read() == b"[true, 3000000]\n"
            sockets.add(id(conn.sock))
        assert len(sockets) == 1
    finally:
        conn.close()


@pytest.fixture
def small_limit_noded(noded_factory) -> RunningNoded:  # type: ignore[no-untyped-def]
    return noded_factory("node1", "127.0.0.2", "--body-limit", "1024")


def test_oversized_body_is_413(small_limit_noded: RunningNoded) -> None:
    status, body = small_limit_noded.post("test_delay", b"[" + b" " * 2000 + b"0]")
    assert status == 413 and b"exceeds the limit of 1024 bytes" in body
    assert small_limit_noded.post("version")[0] == 200


def test_oversized_chunked_body_is_413(small_limit_noded: RunningNoded) -> None:
    chunk = b" " * 1500
    data = (b"POST /test_delay HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
            f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n")
    raw = _raw(small_limit_noded, data)
    assert raw.startswith(b"HTTP/1.1 413")


def test_virtual_path_file_names_are_mapped_under_the_root(noded: RunningNoded) -> None:
    ok, info = noded.call("get_file_info", "/###-VIRTUAL-PATH-###,/var/lib/ganeti/server.pem")
    assert ok is True and info[0] is True and info[1]["size"] > 1000
