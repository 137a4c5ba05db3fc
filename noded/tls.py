"""Ganeti's client-certificate rule, and the TLS settings of both doors.

A client is accepted when the SHA1 fingerprint of its certificate is listed in
`$DATA_DIR/ssconf_master_candidates_certs` (`<node-uuid>=<digest>` lines), or,
while that file is missing or empty, when it equals the cluster certificate
`server.pem` ("bootstrap"). The file is checked for changes on every new
connection, so a `write_ssconf_files` that changes the list takes effect for
the next connection, without a restart.

The TLS layer itself verifies client certificates against server.pem (every
certificate Ganeti issues to a node is signed by it); the fingerprint rule is
then applied on top. A certificate listed in the map but not signed by the
cluster certificate is therefore refused, which Ganeti (which checks only the
fingerprint) would accept; Ganeti never issues such certificates.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import ssl
import threading
from dataclasses import dataclass

from noded.certs import fingerprint_der
from noded.paths import Paths

#: Ganeti's OPENSSL_CIPHERS.
OPENSSL_CIPHERS = "HIGH:-DES:-3DES:-EXPORT:-DH"

_PEM_CERT_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)
_PEM_KEY_RE = re.compile(
    rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S)

log = logging.getLogger(__name__)


def pem_cert_der(pem: bytes) -> bytes:
    """The DER bytes of the first certificate in a PEM text."""
    m = _PEM_CERT_RE.search(pem)
    if m is None:
        raise ValueError("no certificate in PEM data")
    return base64.b64decode(b"".join(m.group(1).split()))


def split_pem(pem: bytes) -> tuple[bytes, bytes]:
    """(private key PEM, certificate PEM) of a Ganeti key+cert file."""
    key = _PEM_KEY_RE.search(pem)
    cert = re.search(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    if key is None or cert is None:
        raise ValueError("the file must hold a private key and a certificate")
    return key.group(0) + b"\n", cert.group(0) + b"\n"


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True)
class _Allowed:
    fingerprints: frozenset[str]
    bootstrap: bool


class ClientCertPolicy:
    """Decides whether a client certificate may make RPCs on this node."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        self._key: tuple[object, object] | None = None
        self._allowed = _Allowed(frozenset(), True)
        self._fp_cache: dict[bytes, str] = {}
        self._der_cache: dict[bytes, bytes] = {}

    def _reload(self) -> _Allowed:
        fps: set[str] = set()
        try:
            with open(self.paths.master_candidates_certs_file, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if not line or "=" not in line:
                        continue
                    fps.add(line.split("=", 1)[1].strip().upper())
        except OSError:
            pass
        if fps:
            return _Allowed(frozenset(fps), False)
        try:
            with open(self.paths.server_cert, "rb") as f:
                server_fp = fingerprint_der(pem_cert_der(f.read()))
        except (OSError, ValueError):
            return _Allowed(frozenset(), True)
        return _Allowed(frozenset({server_fp}), True)

    def allowed(self) -> _Allowed:
        key = (_stat_key(self.paths.master_candidates_certs_file), _stat_key(self.paths.server_cert))
        if key != self._key:
            with self._lock:
                if key != self._key:
                    self._allowed = self._reload()
                    self._key = key
        return self._allowed

    def _fingerprint(self, der: bytes) -> str:
        fp = self._fp_cache.get(der)
        if fp is None:
            if len(self._fp_cache) > 256:
                self._fp_cache.clear()
            fp = fingerprint_der(der)
            self._fp_cache[der] = fp
        return fp

    def check_der(self, der: bytes | None) -> str | None:
        """None when the certificate is accepted, else the reason it is not."""
        if not der:
            return "no client certificate was presented"
        fp = self._fingerprint(der)
        allowed = self.allowed()
        if fp in allowed.fingerprints:
            return None
        if allowed.bootstrap:
            return (f"client certificate {fp} refused: this node has no master candidate "
                    f"certificate list ({self.paths.master_candidates_certs_file}) yet, so it "
                    f"accepts only the cluster certificate (server.pem)")
        return (f"client certificate {fp} refused: it is not the certificate of a master "
                f"candidate (not listed in {self.paths.master_candidates_certs_file})")

    def check_pem(self, pem: bytes | None) -> str | None:
        if not pem:
            return "no client certificate was presented"
        der = self._der_cache.get(pem)
        if der is None:
            try:
                der = pem_cert_der(pem)
            except ValueError:
                return "the client certificate could not be read"
            if len(self._der_cache) > 256:
                self._der_cache.clear()
            self._der_cache[pem] = der
        return self.check_der(der)


class ServerCredentials:
    """The node's key and certificate files, and contexts that follow their changes."""

    def __init__(self, paths: Paths, key_file: str, cert_file: str) -> None:
        self.paths = paths
        self.key_file = key_file
        self.cert_file = cert_file
        self._contexts: list[ssl.SSLContext] = []
        self._key = self.files_key()

    def files_key(self) -> tuple[object, ...]:
        return (_stat_key(self.key_file), _stat_key(self.cert_file), _stat_key(self.paths.server_cert))

    def check_readable(self) -> None:
        for path in {self.key_file, self.cert_file, self.paths.server_cert}:
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"SSL certificate {path} not found: initialise the node (gnt-cluster init or "
                    f"gnt-node add) or start the daemon with --no-ssl")

    def ssl_context(self) -> ssl.SSLContext:
        """A server context for the legacy door that requires a client certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(OPENSSL_CIPHERS)
        # TLS 1.3 session tickets stay on although masters never resume: the
        # ticket the server sends right after the handshake also acknowledges
        # the client's last flight. Without it, a client with Nagle's algorithm
        # (Python's ssl, curl) holds its request back for the delayed ACK: 40 ms a call.
        ctx.num_tickets = 1
        ctx.set_alpn_protocols(["http/1.1"])
        self._load(ctx)
        self._contexts.append(ctx)
        return ctx

    def _load(self, ctx: ssl.SSLContext) -> None:
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(self.paths.server_cert)

    def refresh(self) -> bool:
        """Reload the files into every context when they changed on disk; True if they did."""
        key = self.files_key()
        if key == self._key:
            return False
        self._key = key
        for ctx in self._contexts:
            try:
                self._load(ctx)
            except (OSError, ssl.SSLError) as err:
                log.error("cannot reload the node certificate: %s", err)
        return True

    def grpc_config(self) -> tuple[bytes, bytes, bytes]:
        """(private key, certificate chain, client CA) PEM bytes for the gRPC door."""
        with open(self.key_file, "rb") as f:
            key_pem = f.read()
        with open(self.cert_file, "rb") as f:
            cert_pem = f.read()
        with open(self.paths.server_cert, "rb") as f:
            ca_pem = f.read()
        key, _ = split_pem(key_pem)
        _, cert = split_pem(cert_pem) if b"PRIVATE KEY" in cert_pem else (b"", cert_pem)
        _, ca = split_pem(ca_pem) if b"PRIVATE KEY" in ca_pem else (b"", ca_pem)
        return key, cert, ca
