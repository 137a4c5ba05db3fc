"""X509 certificates for import/export and the node's crypto tokens."""

from __future__ import annotations

import datetime
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from real_ganeti import requires_real_ganeti, run_real_ganeti

from noded import certs
from noded.backends import crypto
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths

NAME_RE = re.compile(r"^x509-\d{4}-\d\d-\d\d_\d\d_\d\d_\d\d-[a-z0-9_]{8}$")


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    paths.ensure_dirs()
    return NodeContext(paths=paths)


@pytest.fixture
def client_pem(ctx: NodeContext) -> str:
    certs.write_server_pem(ctx.paths.server_cert)
    return certs.write_client_pem(ctx.paths.client_cert, ctx.paths.server_cert, "node1")


def _validity(cert: x509.Certificate) -> datetime.timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def test_x509_cert_create_returns_a_name_and_the_certificate(ctx: NodeContext) -> None:
    name, cert_pem = crypto.x509_cert_create(ctx, 3600)
    assert NAME_RE.match(name), name
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "node1"
    assert cert.issuer == cert.subject
    assert _validity(cert) == datetime.timedelta(seconds=3600)


def test_x509_cert_create_keeps_key_and_cert_in_the_crypto_dir(ctx: NodeContext) -> None:
    name, cert_pem = crypto.x509_cert_create(ctx, 60)
    cert_dir = Path(ctx.paths.crypto_dir, name)
    assert sorted(os.listdir(cert_dir)) == ["cert", "key"]
    assert (cert_dir / "cert").read_text() == cert_pem
    for f in ("cert", "key"):
        assert stat.S_IMODE((cert_dir / f).stat().st_mode) == 0o400
    key = serialization.load_pem_private_key((cert_dir / "key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert "PRIVATE KEY" not in cert_pem


def test_x509_cert_create_caps_the_validity_at_one_week(ctx: NodeContext) -> None:
    _, cert_pem = crypto.x509_cert_create(ctx, 365 * 24 * 3600)
    assert _validity(x509.load_pem_x509_certificate(cert_pem.encode())) == datetime.timedelta(days=7)


def test_x509_cert_create_refuses_a_negative_validity(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="Invalid certificate validity"):
        crypto.x509_cert_create(ctx, -5)
    assert os.listdir(ctx.paths.crypto_dir) == []


def test_x509_cert_remove_removes_the_certificate(ctx: NodeContext) -> None:
    name, _ = crypto.x509_cert_create(ctx, 60)
    assert crypto.x509_cert_remove(ctx, name) is None
    assert os.listdir(ctx.paths.crypto_dir) == []


def test_x509_cert_remove_of_an_unknown_name_fails_like_ganeti(ctx: NodeContext) -> None:
    path = os.path.join(ctx.paths.crypto_dir, "x509-nothing")
    with pytest.raises(RpcFail) as err:
        crypto.x509_cert_remove(ctx, "x509-nothing")
    assert err.value.message.startswith(f"Cannot remove certificate directory '{path}': ")


@pytest.mark.parametrize("name", ["..", ".", "", "../outside", "a/b", "/tmp/outside", "x\0y"])
def test_x509_cert_remove_refuses_names_that_are_not_a_plain_directory_name(
        ctx: NodeContext, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "node1" / "var" / "run" / "ganeti" / "outside"
    outside.mkdir()
    (outside / "key").write_text("precious")
    with pytest.raises(RpcFail, match="Invalid certificate name"):
        crypto.x509_cert_remove(ctx, name)
    assert (outside / "key").read_text() == "precious"


def test_x509_cert_remove_does_not_follow_a_symlink(ctx: NodeContext, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "key").write_text("precious")
    Path(ctx.paths.crypto_dir, "x509-link").symlink_to(target)
    with pytest.raises(RpcFail, match="not a directory"):
        crypto.x509_cert_remove(ctx, "x509-link")
    assert (target / "key").read_text() == "precious"


def test_node_crypto_tokens_get_returns_the_client_certificate_digest(ctx: NodeContext,
                                                                      client_pem: str) -> None:
    assert crypto.node_crypto_tokens(ctx, [["ssl", "get", {}]]) == [["ssl", client_pem]]


@requires_real_ganeti
def test_node_crypto_tokens_digest_is_ganetis(ctx: NodeContext, client_pem: str) -> None:
    real = run_real_ganeti("from ganeti.utils import security\n"
                           f"print(security.GetCertificateDigest(cert_filename={ctx.paths.client_cert!r}))")
    assert crypto.node_crypto_tokens(ctx, [["ssl", "get", {}]]) == [["ssl", real.strip()]]


def test_node_crypto_tokens_create_only_reports_the_digest_as_3_0_2_does(ctx: NodeContext,
                                                                         client_pem: str) -> None:
    before = Path(ctx.paths.client_cert).read_bytes()
    result = crypto.node_crypto_tokens(ctx, [["ssl", "create", {"filename": "/tmp/x"}],
                                             ["ssl", "delete", {}]])
    assert result == [["ssl", client_pem], ["ssl", client_pem]]
    assert Path(ctx.paths.client_cert).read_bytes() == before


def test_node_crypto_tokens_refuses_unknown_types_and_actions(ctx: NodeContext, client_pem: str) -> None:
    with pytest.raises(RpcFail, match=re.escape("Token type 'ssh' not supported.")):
        crypto.node_crypto_tokens(ctx, [["ssh", "get", {}]])
    with pytest.raises(RpcFail, match=re.escape("Action 'renew' is not supported.")):
        crypto.node_crypto_tokens(ctx, [["ssl", "renew", {}]])


def test_node_crypto_tokens_without_client_certificate_fails_clearly(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=r"Cannot read the node's client certificate .*client\.pem"):
        crypto.node_crypto_tokens(ctx, [["ssl", "get", {}]])
