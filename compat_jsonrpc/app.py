"""The legacy door: Ganeti's JSON-over-HTTPS node protocol as a Starlette app.

`POST /<procedure>` (or `PUT`, which Ganeti 2.0-2.6 masters send) with a JSON
list of positional arguments; the answer is `[true, <result>]` or
`[false, "<message>"]` with HTTP 200, as reference/noded-protocol.md
describes. Unlike Ganeti 3.0.2, which drops the connection on protocol
errors, this door answers them: 404 for an unknown procedure, 405 for another
method, 400 for a body that is not JSON, 413 above the body limit, and 403 for
a client certificate the node does not accept. Error bodies are plain text,
which Ganeti's Python client shows as the failure message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, Router

from compat_jsonrpc import codec
from noded.api import Rpc, rpcs_by_procedure
from noded.errors import RpcFail
from noded.servicer import BACKEND_ERROR_PREFIX, BackendError, NodeServicer

#: Scope key set by the HTTP protocol when the client certificate is refused.
TLS_REJECT_SCOPE_KEY = "ganeti.tls_reject"
DEFAULT_BODY_LIMIT = 128 * 1024 * 1024

log = logging.getLogger("noded.legacy")


def _text(status: int, message: str, close: bool = False) -> Response:
    headers = {"Connection": "close"} if close else None
    return Response(message + "\n", status_code=status, media_type="text/plain; charset=utf-8",
                    headers=headers)


def _json(payload: Any) -> Response:
    # Ganeti's serializer: simplejson defaults (", " and ": " separators, ASCII
    # escapes) and a trailing newline; no Content-Type header.
    return Response(json.dumps(payload) + "\n")


async def _read_body(request: Request, limit: int) -> bytes | Response:
    """The whole body, or the error response when it is too large (read straight from ASGI)."""
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return _text(400, f"Bad Request: invalid Content-Length {value!r}", close=True)
            if declared > limit:
                return _text(413, f"Request Entity Too Large: the body ({declared} bytes) exceeds the "
                                  f"limit of {limit} bytes", close=True)
            break
    receive = request.receive
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else _text(
            413, f"Request Entity Too Large: the body exceeds the limit of {limit} bytes", close=True)
    parts = bytearray(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        parts += message.get("body", b"")
        if len(parts) > limit:
            return _text(413, f"Request Entity Too Large: the body exceeds the limit of {limit} bytes",
                         close=True)
        if not message.get("more_body", False):
            return bytes(parts)


def create_app(servicer: NodeServicer, body_limit: int = DEFAULT_BODY_LIMIT,
               access_log: Callable[[str], None] | None = None) -> Router:
    """The ASGI app of the legacy door, calling `servicer` in-process.

    `access_log` receives one line per request (default: the "noded.legacy" logger at INFO).
    """
    if access_log is None:
        def access_log(line: str) -> None:
            log.info("%s", line)
    table: dict[str, Rpc] = rpcs_by_procedure()
    debug = log.isEnabledFor(logging.DEBUG)

    async def call(request: Request) -> Response:
        response = await dispatch(request)
        scope = request.scope
        client = scope.get("client") or ("-", "-")
        # Ganeti's per-request line, e.g. "127.0.0.1:52154 POST /version HTTP/1.1 200".
        access_log(f"{client[0]}:{client[1]} {scope['method']} {scope['path']} "
                   f"HTTP/{scope.get('http_version', '1.1')} {response.status_code}")
        return response

    async def dispatch(request: Request) -> Response:
        reject = request.scope.get(TLS_REJECT_SCOPE_KEY)
        if reject is not None:
            return _text(403, f"Forbidden: {reject}", close=True)
        name = request.path_params["procedure"]
        rpc = table.get(name)
        if rpc is None or request.scope.get("query_string"):
            return _text(404, f"Not Found: this node daemon has no procedure {request.scope['path']!r}")
        try:
            body = await _read_body(request, body_limit)
        except ClientDisconnect:
            log.info("client disconnected while sending the body of %s", name)
            return _text(400, "client disconnected", close=True)
        if isinstance(body, Response):
            return body
        try:
            args = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            return _text(400, f"Bad Request: the body of {name} is not valid JSON: {err}")
        if debug:
            # Like Ganeti's noded with -d: bodies are logged (private parameters too).
            log.debug("Handling request %s: body=%s", name, body[:65536].decode("utf-8", "replace"))
        try:
            req = codec.request_from_args(rpc.request_cls, args, name)
            resp = await servicer.invoke(rpc, req)
            payload: list[Any] = [True, codec.result_from_response(resp)]
        except RpcFail as err:
            payload = [False, err.message]
        except BackendError as err:
            payload = [False, str(err)]
        except Exception as err:
            log.exception("internal error while serving %s", name)
            payload = [False, BACKEND_ERROR_PREFIX + str(err)]
        response = _json(payload)
        if debug:
            log.debug("Answer to %s: %s", name, bytes(response.body[:65536]).decode("utf-8", "replace"))
        return response

    endpoint: Callable[[Request], Awaitable[Response]] = call
    routes = [Route("/{procedure}", endpoint, methods=["POST", "PUT"])]
    # A bare Starlette Router: every failure is answered by `call` itself, so
    # Starlette's error-handling middleware would only cost time per call.
    return Router(routes=routes)
