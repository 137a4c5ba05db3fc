"""One legacy-door call at a time, timed: `POST /<procedure>` on a new TLS connection, as a master calls.

The same client is used for our daemon and the real ganeti-noded, so both
latencies include the same client work: TCP connect, the TLS handshake with
the client certificate, the request and the whole answer. The body is the
JSON array of positional arguments, in the form the master's encoders give
(see ../shared/reference/noded-protocol.md, section 4).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Per-call read timeout; Ganeti's RPC_TMO_NORMAL is 900 s, a benchmark gives up sooner.
CALL_TIMEOUT = 120.0


@dataclass
class Answer:
    """What a call returned and how long it took, from connecting to the end of the answer."""

    seconds: float
    ok: bool  # HTTP 200 with [true, payload]
    payload: Any  # the payload, or the failure message
    started: float  # time.perf_counter() at the start of the call

    @property
    def error(self) -> str | None:
        return None if self.ok else str(self.payload)


class LegacyClient:
    """Calls one daemon's legacy door (`address`:`port`), trusting `ca`, presenting `cert`."""

    def __init__(self, address: str, port: int, ca: Path, cert: Path) -> None:
        self.address = address
        self.port = port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False  # Ganeti checks the certificate, not the name
        self.context.load_verify_locations(str(ca))
        self.context.load_cert_chain(str(cert))

    def call(self, procedure: str, args: list[Any]) -> Answer:
        body = json.dumps(args).encode()
        started = time.perf_counter()
        conn = http.client.HTTPSConnection(self.address, self.port, timeout=CALL_TIMEOUT,
                                           context=self.context)
        try:
            conn.request("POST", "/" + procedure, body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as err:
            return Answer(time.perf_counter() - started, False, f"{procedure}: {err}", started)
        finally:
            conn.close()
        seconds = time.perf_counter() - started
        if resp.status != 200:
            return Answer(seconds, False, f"{procedure}: HTTP {resp.status}: {data[:300]!r}", started)
        try:
            decoded = json.loads(data)
            ok, payload = decoded
        except (ValueError, TypeError):
            return Answer(seconds, False, f"{procedure}: not [ok, payload]: {data[:300]!r}", started)
        if ok is not True:
            return Answer(seconds, False, f"{procedure}: {payload}", started)
        return Answer(seconds, True, payload, started)
