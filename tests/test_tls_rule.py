"""Ganeti's client-certificate rule on both doors."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
import pytest
from support import NodeRoot, RunningNoded, make_root, start_noded

from generated.ganeti.node.v1 import cluster_pb2, cluster_pb2_grpc
from noded import certs
from noded.tls import split_pem


def _grpc_version(daemon: RunningNoded, cert: str | None) -> int:
    _, ca = split_pem(Path(daemon.server_pem).read_bytes())
    if cert is None:
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        key, chain = split_pem(Path(cert).read_bytes())
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
    target = f"{daemon.address}:{daemon.grpc_port}"
    with grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override",
                                                      certs.CLUSTER_CERT_CN)]) as ch:
        stub = cluster_pb2_grpc.ClusterServiceStub(ch)
        return int(stub.Version(cluster_pb2.VersionRequest(), timeout=10).protocol_version)


def _foreign_cert(tmp_path: Path) -> str:
    path = str(tmp_path / "foreign.pem")
    key, cert = certs.make_self_signed("intruder.example.com")
    Path(path).write_bytes(key + cert)
    return path


def _legacy_refused(daemon: RunningNoded, cert: str | None) -> bool:
    try:
        status, _ = daemon.post("version", cert=cert)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True
    return status == 403


def _grpc_refused(daemon: RunningNoded, cert: str | None) -> grpc.StatusCode | None:
    try:
        _grpc_version(daemon, cert)
    except grpc.RpcError as err:
        return err.code()
    return None


@pytest.fixture
def bootstrap(tmp_path: Path) -> NodeRoot:
    return make_root(tmp_path / "vc", "node1")  # no master_candidates_certs: bootstrap mode



@pytest.fixture(scope="module")
def noded(shared_noded: RunningNoded) -> RunningNoded:
    """These tests only read: they share one daemon."""
    return shared_noded

def test_candidate_certificate_is_accepted_on_both_doors(noded: RunningNoded) -> None:
    assert noded.call("version") == [True, 3000000]
    assert _grpc_version(noded, noded.client_pem) == 3000000


def test_no_client_certificate_is_refused_on_both_doors(noded: RunningNoded) -> None:
    assert _legacy_refused(noded, None)
    assert _grpc_refused(noded, None) == grpc.StatusCode.UNAVAILABLE


def test_foreign_certificate_is_refused_on_both_doors(noded: RunningNoded, tmp_path: Path) -> None:
    foreign = _foreign_cert(tmp_path)
    assert _legacy_refused(noded, foreign)
    assert _grpc_refused(noded, foreign) is not None


def test_non_candidate_node_certificate_is_refused(noded: RunningNoded, tmp_path: Path) -> None:
    # A regular node's client.pem: signed by the cluster certificate, but not listed.
    other = str(tmp_path / "node9-client.pem")
    certs.write_client_pem(other, noded.server_pem, "node9")
    status, body = noded.post("version", cert=other)
    assert status == 403 and b"not the certificate of a master candidate" in body
    assert _grpc_refused(noded, other) == grpc.StatusCode.PERMISSION_DENIED


def test_cluster_certificate_is_refused_once_candidates_are_listed(noded: RunningNoded) -> None:
    status, _ = noded.post("version", cert=noded.server_pem)
    assert status == 403
    assert _grpc_refused(noded, noded.server_pem) == grpc.StatusCode.PERMISSION_DENIED


def test_bootstrap_accepts_only_the_cluster_certificate(bootstrap: NodeRoot) -> None:
    daemon = start_noded(bootstrap, "127.0.0.2")
    try:
        assert daemon.call("version", cert=daemon.server_pem) == [True, 3000000]
        assert _grpc_version(daemon, daemon.server_pem) == 3000000
        status, body = daemon.post("version", cert=daemon.client_pem)
        assert status == 403 and b"accepts only the cluster certificate" in body
        assert _grpc_refused(daemon, daemon.client_pem) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        daemon.stop()


def test_candidate_list_change_applies_without_restart(bootstrap: NodeRoot) -> None:
    daemon = start_noded(bootstrap, "127.0.0.2")
    try:
        assert daemon.post("version", cert=daemon.client_pem)[0] == 403
        bootstrap.write_candidate_map(bootstrap.client_fp)
        assert daemon.call("version") == [True, 3000000]
        assert _grpc_version(daemon, daemon.client_pem) == 3000000
        assert daemon.post("version", cert=daemon.server_pem)[0] == 403
        Path(bootstrap.paths.master_candidates_certs_file).write_text("")
        assert daemon.call("version", cert=daemon.server_pem) == [True, 3000000]
    finally:
        daemon.stop()


def test_no_ssl_serves_plain_http(bootstrap: NodeRoot) -> None:
    import http.client
    daemon = start_noded(bootstrap, "127.0.0.2", "--no-ssl")
    try:
        conn = http.client.HTTPConnection(daemon.address, daemon.port, timeout=10)
        conn.request("POST", "/version", body=b"[]")
        assert conn.getresponse().read() == b"[true, 3000000]\n"
        conn.close()
        with grpc.insecure_channel(f"{daemon.address}:{daemon.grpc_port}") as ch:
            stub = cluster_pb2_grpc.ClusterServiceStub(ch)
            assert stub.Version(cluster_pb2.VersionRequest(), timeout=10).protocol_version == 3000000
    finally:
        daemon.stop()
