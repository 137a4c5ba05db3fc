"""A Node.js gRPC client (@grpc/grpc-js + @grpc/proto-loader) against our node daemon.

The client (tests/interop_nodejs/client.js) loads the protos straight from
proto/, so this checks that the typed API works from another language with
nothing but the .proto files, the cluster certificate and a client
certificate: mutual TLS, ClusterService/Version and NodeService/NodeInfo.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import RunningNoded

from noded import certs

CLIENT_DIR = Path(__file__).resolve().parent / "interop_nodejs"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None,
    reason="Node.js interop test needs `node` and `npm` on PATH (apt-get install nodejs npm)",
)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _modules_installed() -> bool:
    """node_modules holds what package-lock.json pins (npm writes its own copy of the lock there)."""
    lock, installed = CLIENT_DIR / "package-lock.json", CLIENT_DIR / "node_modules" / ".package-lock.json"
    return installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime and all(
        (CLIENT_DIR / "node_modules" / "@grpc" / pkg / "package.json").exists()
        for pkg in ("grpc-js", "proto-loader"))


@pytest.fixture(scope="session")
def nodejs_client() -> Path:
    """client.js with its npm dependencies installed (once; node_modules is kept, and gitignored)."""
    assert NPM is not None
    if not _modules_installed():
        res = subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=CLIENT_DIR,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"`npm ci` in {CLIENT_DIR} failed:\n{res.stdout}\n{res.stderr}"
    return CLIENT_DIR / "client.js"


def run_client(client: Path, noded: RunningNoded, client_cert: str,
               calls: str) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    cmd = [NODE, str(client), "--address", noded.address, "--port", str(noded.grpc_port),
           "--server-cert", noded.server_pem, "--client-cert", client_cert,
           "--file-storage-dir", noded.paths.file_storage_dir, "--timeout", "30", "--calls", calls]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def ok_result(client: Path, noded: RunningNoded, calls: str) -> dict[str, Any]:
    res = run_client(client, noded, noded.client_pem, calls)
    assert res.returncode == 0, f"client.js failed (exit {res.returncode}):\n{res.stderr}"
    result: dict[str, Any] = json.loads(res.stdout)
    return result


def test_nodejs_client_reads_the_protocol_version_over_mutual_tls(
        nodejs_client: Path, noded: RunningNoded) -> None:
    result = ok_result(nodejs_client, noded, "version")
    # int64 comes as a decimal string (proto3 JSON mapping; client.js loads with longs: String)
    assert int(result["version"]["protocol_version"]) == 3000000


def test_nodejs_client_reads_node_info_with_boot_id_and_memory(
        nodejs_client: Path, noded: RunningNoded) -> None:
    # the directory exists on a real cluster (gnt-cluster init makes it); statvfs needs it
    Path(noded.paths.file_storage_dir).mkdir(parents=True, exist_ok=True)
    result = ok_result(nodejs_client, noded, "node_info")
    assert result["node_info_rpc"] == "NodeInfo"
    info = result["node_info"]
    assert UUID_RE.match(info["boot_id"]), info["boot_id"]
    assert info["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert len(info["hv_info"]["items"]) == 1
    assert int(info["hv_info"]["items"][0]["memory_total"]) > 0
    assert [(s["type"], s["name"]) for s in info["storage_info"]["items"]] == \
        [("file", noded.paths.file_storage_dir)]
    assert info["storage_info"]["items"][0]["storage_size"] > 0  # a protobuf Value, printed as its number


def test_nodejs_client_with_a_certificate_the_node_does_not_accept_fails(
        nodejs_client: Path, noded: RunningNoded, tmp_path: Path) -> None:
    key, cert = certs.make_self_signed(cn="intruder.example.com")
    intruder = tmp_path / "intruder.pem"
    intruder.write_bytes(key + cert)
    os.chmod(intruder, 0o600)
    res = run_client(nodejs_client, noded, str(intruder), "version")
    assert res.returncode != 0
    assert res.stdout == ""
    # refused in the TLS handshake (UNAVAILABLE) or by the rpc layer, depending on where the check runs
    refused = re.search(r"Version failed: (UNAVAILABLE|UNAUTHENTICATED|PERMISSION_DENIED)", res.stderr)
    assert refused, res.stderr
    # the same daemon still answers the accepted certificate
    assert run_client(nodejs_client, noded, noded.client_pem, "version").returncode == 0
