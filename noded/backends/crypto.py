"""Node certificates: per-transfer X509 certificates and the client-certificate token.

x509_cert_create makes the self-signed certificates instance import/export
uses ($RUN_DIR/crypto/<name>/{key,cert}); the private key never leaves the
node. node_crypto_tokens reports the SHA1 digest of the node's client.pem.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time

from noded import certs
from noded.backends.fileio import fsync_dir, write_file_atomic
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.registry import procedure

#: Longest validity of an x509_cert_create certificate, in seconds (Ganeti's one week).
MAX_X509_VALIDITY = 7 * 24 * 60 * 60
#: File names inside a certificate directory.
X509_KEY_FILE = "key"
X509_CERT_FILE = "cert"
#: Crypto token types and actions Ganeti 3.0 knows (constants.CRYPTO_TYPES / CRYPTO_ACTIONS).
CRYPTO_TYPES = frozenset(["ssl"])
CRYPTO_ACTIONS = frozenset(["create", "delete", "get"])


@procedure("x509_cert_create")
def x509_cert_create(ctx: NodeContext, validity: object) -> list[str]:
    """Create a key and self-signed certificate (CN = node name); returns [name, cert_pem].

    `validity` is in seconds, capped at one week. The name is the
    certificate's directory in $RUN_DIR/crypto, e.g.
    "x509-2026-11-22_02_11_29-csxt46u8".
    """
    if isinstance(validity, bool) or not isinstance(validity, (int, float)) or validity < 0:
        raise RpcFail(f"Invalid certificate validity {validity!r}: expected a number of seconds >= 0")
    seconds = int(min(validity, MAX_X509_VALIDITY))
    key_pem, cert_pem = certs.make_x509_cert(ctx.hostname, seconds, int(time.time()))
    crypto_dir = ctx.paths.crypto_dir
    os.makedirs(crypto_dir, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H_%M_%S")
    cert_dir = tempfile.mkdtemp(dir=crypto_dir, prefix=f"x509-{stamp}-")
    try:
        write_file_atomic(os.path.join(cert_dir, X509_KEY_FILE), key_pem, mode=0o400)
        write_file_atomic(os.path.join(cert_dir, X509_CERT_FILE), cert_pem, mode=0o400)
        fsync_dir(crypto_dir)
    except BaseException:
        shutil.rmtree(cert_dir, ignore_errors=True)
        raise
    return [os.path.basename(cert_dir), cert_pem.decode("ascii")]


def _cert_dir(crypto_dir: str, name: object) -> str:
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise RpcFail(f"Invalid certificate name {name!r}: expected the name of a directory in"
                      f" {crypto_dir}")
    return os.path.join(crypto_dir, name)


@procedure("x509_cert_remove")
def x509_cert_remove(ctx: NodeContext, name: object) -> None:
    """Remove a certificate made by x509_cert_create (its key, cert and directory)."""
    cert_dir = _cert_dir(ctx.paths.crypto_dir, name)
    try:
        st = os.lstat(cert_dir)
    except OSError as err:
        raise RpcFail(f"Cannot remove certificate directory '{cert_dir}': {err}") from err
    if not stat.S_ISDIR(st.st_mode):
        raise RpcFail(f"Cannot remove certificate directory '{cert_dir}': not a directory")
    for base in (X509_KEY_FILE, X509_CERT_FILE):
        try:
            os.unlink(os.path.join(cert_dir, base))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(cert_dir)
    except OSError as err:
        raise RpcFail(f"Cannot remove certificate directory '{cert_dir}': {err}") from err
    fsync_dir(ctx.paths.crypto_dir)


@procedure("node_crypto_tokens")
def node_crypto_tokens(ctx: NodeContext, token_requests: object) -> list[list[str]]:
    """[[type, action, options], ...] -> [["ssl", "<SHA1 digest of client.pem>"], ...].

    As in Ganeti 3.0.2 every action ("get", "create", "delete") only reports
    the digest of the existing client certificate: 3.0.2's GetCryptoTokens
    checks the action but never creates or deletes anything, and ignores
    the options.
    """
    if not isinstance(token_requests, list):
        raise RpcFail("node_crypto_tokens expects a list of [type, action, options] requests")
    tokens: list[list[str]] = []
    for request in token_requests:
        if not isinstance(request, (list, tuple)) or len(request) != 3:
            raise RpcFail(f"Invalid crypto token request {request!r}: expected [type, action, options]")
        token_type, action, _options = request
        if token_type not in CRYPTO_TYPES:
            raise RpcFail(f"Token type '{token_type}' not supported.")
        if action not in CRYPTO_ACTIONS:
            raise RpcFail(f"Action '{action}' is not supported.")
        tokens.append([token_type, _client_cert_digest(ctx)])
    return tokens


def _client_cert_digest(ctx: NodeContext) -> str:
    path = ctx.paths.client_cert
    try:
        return certs.fingerprint_file(path)
    except OSError as err:
        raise RpcFail(f"Cannot read the node's client certificate {path}: {err.strerror}") from err
    except ValueError as err:
        raise RpcFail(f"The node's client certificate {path} is not a valid PEM certificate: {err}") from err
