"""Certificates in Ganeti's scheme, and their SHA1 fingerprints.

The cluster certificate `server.pem` is a self-signed RSA-2048 certificate
(CN=ganeti.example.com) with its key in the same file, shared by all nodes.
Each node's `client.pem` is a fresh RSA-2048 key with a certificate for
CN=<node name>, signed by server.pem. Node daemons accept a client by the
SHA1 fingerprint of its certificate, written like OpenSSL's X509_digest
("AA:BB:...", upper-case, colon-separated).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

CLUSTER_CERT_CN = "ganeti.example.com"
RSA_KEY_BITS = 2048
DEFAULT_VALIDITY_DAYS = 1825


def fingerprint_der(der: bytes) -> str:
    """SHA1 fingerprint of a DER certificate, "AA:BB:..." style."""
    digest = hashlib.sha1(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def load_first_cert(pem: bytes) -> x509.Certificate:
    """The first certificate of a PEM bundle (key + cert files are fine)."""
    return x509.load_pem_x509_certificate(pem)


def fingerprint_pem(pem: bytes) -> str:
    """SHA1 fingerprint of the first certificate in a PEM text."""
    cert = load_first_cert(pem)
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))


def fingerprint_file(path: str) -> str:
    with open(path, "rb") as f:
        return fingerprint_pem(f.read())


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write_private(path: str, data: bytes, mode: int = 0o440) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def make_self_signed(cn: str = CLUSTER_CERT_CN, serial: int = 1,
                     validity_days: int = DEFAULT_VALIDITY_DAYS) -> tuple[bytes, bytes]:
    """A new RSA key and a self-signed certificate for `cn`: (key_pem, cert_pem)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def make_signed(signer_pem: bytes, cn: str, serial: int | None = None,
                validity_days: int = DEFAULT_VALIDITY_DAYS) -> tuple[bytes, bytes]:
    """A new RSA key and a certificate for `cn` signed by the key+cert in `signer_pem`."""
    signer_key = serialization.load_pem_private_key(signer_pem, password=None)
    assert isinstance(signer_key, rsa.RSAPrivateKey)
    signer = load_first_cert(signer_pem)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(signer.subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else int(time.time()))
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=validity_days))
        .sign(signer_key, hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def write_server_pem(path: str, cn: str = CLUSTER_CERT_CN, serial: int = 1) -> str:
    """Create a cluster certificate file (key + cert, mode 0440); returns its fingerprint."""
    key, cert = make_self_signed(cn, serial)
    _write_private(path, key + cert)
    return fingerprint_pem(cert)


def write_client_pem(path: str, server_pem_path: str, cn: str) -> str:
    """Create a node client certificate signed by server.pem; returns its fingerprint."""
    with open(server_pem_path, "rb") as f:
        signer = f.read()
    key, cert = make_signed(signer, cn)
    _write_private(path, key + cert)
    return fingerprint_pem(cert)


def make_x509_cert(cn: str, validity_seconds: int, serial: int) -> tuple[bytes, bytes]:
    """A new RSA key and a self-signed certificate valid from now for `validity_seconds`.

    Ganeti's GenerateSelfSignedX509Cert, used for the per-transfer
    certificates of instance import/export (x509_cert_create): no CA
    extension, no backdating. Returns (key_pem, cert_pem).
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(seconds=validity_seconds))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)
