"""OP_CLUSTER_VERIFY and its child jobs, checked with Debian's real `gnt-cluster verify`.

One two-node cluster for the module: our gnt-cluster init on node1 (a short
/tmp root, 127.0.8.x addresses, cluster IP 127.0.8.100 on `lo`, removed in a
finally), then our `gnt-node add --node-root` for node2. Debian's
gnt-cluster verify submits OP_CLUSTER_VERIFY, waits for the child jobs and
prints their log lines. The tests run in file order; tampering comes last.
Every daemon is stopped by the pid of its root's pid file at the end. The
unit tests at the top judge node answers without a cluster.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from masterd.config.model import Node, new_config
from masterd.ops.cluster_verify import Verifier, check_config, check_files, check_node_result
from noded.context import PROTOCOL_VERSION, RELEASE_VERSION

from cluster_support import (  # isort: skip
    INIT_ARGS, OUR_GNT_CLUSTER, OUR_GNT_NODE, SBIN, ClusterRoots, alive, free_port, needs_cluster, remove_ip,
)

ADDRESSES = {"node1": "127.0.8.1", "node2": "127.0.8.2"}
CLUSTER = "cluster8"
CLUSTER_IP = "127.0.8.100"
IGNORED = ("-I", "ENODESETUP")
NODE = Node(uuid="u2", name="node2", primary_ip="127.0.8.2", secondary_ip="127.0.8.2", master_candidate=True,
            drained=False, offline=False, master_capable=True, vm_capable=True, group="g", ndparams={},
            serial_no=1)



def good_answer(now: float) -> dict[str, object]:
    return {"version": [PROTOCOL_VERSION, RELEASE_VERSION], "time": [int(now), 0],
            "hypervisor": {"fake": None}, "nodesetup": []}


# -- judging node answers ------------------------------------------------------------------------------

def test_a_good_answer_reports_nothing() -> None:
    verifier, now = Verifier(), time.time()
    assert check_node_result(verifier, NODE, good_answer(now), now, now)
    assert verifier.lines == [] and not verifier.bad


def test_a_protocol_mismatch_is_enodeversion() -> None:
    verifier, now = Verifier(), time.time()
    answer = dict(good_answer(now), version=[2020000, "2.2"])
    assert not check_node_result(verifier, NODE, answer, now, now)
    assert verifier.lines == [f"  - ERROR: node node2: incompatible protocol versions: master"
                              f" {PROTOCOL_VERSION}, node 2020000"]
    assert verifier.bad


def test_error_codes_give_the_parseable_format() -> None:
    verifier, now = Verifier(error_codes=True), float(int(time.time()))
    check_node_result(verifier, NODE, dict(good_answer(now), time=[int(now) - 1000, 0]), now, now)
    assert verifier.lines == ["  - ERROR:ENODETIME:node:node2:Node time diverges by at least 1000.0s"
                              " from master node time"]


def test_an_ignored_code_is_a_warning_and_not_bad() -> None:
    verifier, now = Verifier(ignore_errors=frozenset({"ENODESETUP"})), time.time()
    check_node_result(verifier, NODE, dict(good_answer(now), nodesetup=["no /proc"]), now, now)
    assert verifier.lines == ["  - WARNING: node node2: node setup error: no /proc"]
    assert not verifier.bad


def test_differing_checksums_are_eclusterfilecheck() -> None:
    verifier = Verifier(error_codes=True)
    check_files(verifier, {"/f": ["node1", "node2"]},
                {"node1": {"/f": "a" * 40}, "node2": {"/f": "b" * 40}})
    assert verifier.lines == ["  - ERROR:ECLUSTERFILECHECK:cluster::File /f found with 2 different"
                              " checksums (variant 1 on node1; variant 2 on node2)"]


def test_a_missing_file_is_reported() -> None:
    verifier = Verifier()
    check_files(verifier, {"/f": ["node1", "node2"]}, {"node1": {"/f": "a" * 40}, "node2": {"/g": "a" * 40}})
    assert "  - ERROR: cluster : File /f is missing from node(s) node2" in verifier.lines


def test_a_node_of_an_unknown_group_is_eclusterdanglingnodes() -> None:
    cfg = new_config(cluster_name="c", master_name="node1", master_ip="127.0.8.1", cluster_ip="127.0.8.100",
                     master_netdev="lo")
    cfg.tree["nodes"][cfg.master_node_uuid]["group"] = "no-such-group"
    verifier = Verifier(error_codes=True)
    check_config(verifier, cfg)
    assert verifier.lines == ["  - ERROR:ECLUSTERDANGLINGNODES:node::the following nodes (and their"
                              " instances) belong to a non existing group: node1"]


def test_a_fresh_configuration_has_a_missing_candidate_certificate_reported() -> None:
    cfg = new_config(cluster_name="c", master_name="node1", master_ip="127.0.8.1", cluster_ip="127.0.8.100",
                     master_netdev="lo")
    verifier = Verifier()
    check_config(verifier, cfg)
    assert verifier.lines == ["  - ERROR: cluster : master candidate node1 has no client certificate digest"
                              " in the configuration's candidate_certs"]


# -- the real CLI against our master -------------------------------------------------------------------




class Cluster(ClusterRoots):
    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, GANETI_ROOTDIR=str(self.root("node1")), GANETI_HOSTNAME="node1")
        env.pop("PYTHONPATH", None)
        return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=120)

    def verify(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """Debian's gnt-cluster verify; the codes that cannot pass in this sandbox are ignored.

        ENODESETUP: the container has no /proc/sys.
        """
        return self.run(f"{SBIN}/gnt-cluster", "verify", *IGNORED, *extra)

    def stop_all(self) -> None:
        pids = [pid for name in ADDRESSES for daemon in ("ganeti-noded", "ganeti-masterd")
                if (pid := self.pid_of(name, daemon)) is not None and alive(pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="gv", dir="/tmp"))
    made = Cluster(base, free_port(ADDRESSES["node1"]), free_port(ADDRESSES["node1"]))
    etc = made.root("node1") / "etc"
    etc.mkdir(parents=True)
    hosts = "".join(f"{ip} {name}\n" for name, ip in ADDRESSES.items())
    (etc / "hosts").write_text(f"{hosts}{CLUSTER_IP} {CLUSTER}\n")
    (etc / "services").write_text(f"ganeti-noded {made.port}/tcp\n")
    try:
        done = made.run(OUR_GNT_CLUSTER, "init", *INIT_ARGS, "--noded-grpc-port", str(made.grpc_port),
                        CLUSTER)
        assert done.returncode == 0, done.stderr
        done = made.run(OUR_GNT_NODE, "add", "--node-root", str(made.root("node2")), "node2")
        assert done.returncode == 0, done.stderr
        yield made
    finally:
        try:
            made.stop_all()
        finally:
            remove_ip(CLUSTER_IP)
            shutil.rmtree(base, ignore_errors=True)


@needs_cluster
def test_real_verify_passes_on_a_fresh_cluster(cluster: Cluster) -> None:
    done = cluster.verify()
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("Submitted jobs", "* Verifying cluster config", "* Verifying group 'default'",
                 "* Gathering data (2 nodes)", "* Verifying configuration file consistency",
                 "* Verifying node status", "* Hooks Results"):
        assert line in done.stdout, done.stdout


@needs_cluster
def test_real_verify_verbose_names_each_node(cluster: Cluster) -> None:
    done = cluster.verify("--verbose")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "* Verifying node node1 (master)" in done.stdout
    assert "* Verifying node node2 (master candidate)" in done.stdout


@needs_cluster
def test_real_verify_reports_a_tampered_ssconf_file(cluster: Cluster) -> None:
    ssconf = cluster.data("node2") / "ssconf_cluster_name"
    original = ssconf.read_bytes()
    ssconf.write_text("othercluster\n")
    try:
        done = cluster.verify("--error-codes")
    finally:
        ssconf.write_bytes(original)
    assert done.returncode != 0, done.stdout
    assert "ERROR:ECLUSTERFILECHECK:cluster::File /###-VIRTUAL-PATH-###,/var/lib/ganeti/ssconf_cluster_name" \
        " found with 2 different checksums (variant 1 on node" in done.stdout, done.stdout


@needs_cluster
def test_real_verify_finds_the_file_storage_path_usable_on_the_added_node(cluster: Cluster) -> None:
    """Our gnt-node add gave node2 the cluster's file storage directory (as node2 sees it) in its
    etc/ganeti/file-storage-paths, so verify passes without ignoring ENODEFILESTORAGEPATHUNUSABLE."""
    done = cluster.verify("--error-codes")
    assert done.returncode == 0, done.stdout
    assert "ENODEFILESTORAGEPATHUNUSABLE" not in done.stdout, done.stdout
    assert "file storage path" not in done.stdout, done.stdout


@needs_cluster
def test_real_verify_reports_an_unusable_file_storage_path(cluster: Cluster) -> None:
    listing = cluster.root("node2") / "etc/ganeti/file-storage-paths"
    original = listing.read_bytes()
    listing.write_text("# nothing allowed\n")
    try:
        done = cluster.verify("--error-codes")
    finally:
        listing.write_bytes(original)
    assert done.returncode == 1, done.stdout
    assert "ERROR:ENODEFILESTORAGEPATHUNUSABLE:node:node2:The configured file storage path is unusable" \
        in done.stdout, done.stdout


@needs_cluster
def test_real_verify_reports_ignored_codes_as_warnings(cluster: Cluster) -> None:
    """-I turns an error into a warning: node2's unusable file storage path, ignored, lets verify pass."""
    listing = cluster.root("node2") / "etc/ganeti/file-storage-paths"
    original = listing.read_bytes()
    listing.write_text("# nothing allowed\n")
    try:
        done = cluster.verify("-I", "ENODEFILESTORAGEPATHUNUSABLE")
    finally:
        listing.write_bytes(original)
    assert done.returncode == 0, done.stdout
    assert "  - WARNING: node node2: The configured file storage path is unusable" in done.stdout


@needs_cluster
def test_real_verify_reports_a_tampered_config_data_copy(cluster: Cluster) -> None:
    copy = cluster.data("node2") / "config.data"
    original = copy.read_bytes()
    copy.write_bytes(original + b"\n")
    try:
        done = cluster.verify()
    finally:
        copy.write_bytes(original)
    assert done.returncode == 1, done.stdout
    assert "  - ERROR: cluster : File /###-VIRTUAL-PATH-###,/var/lib/ganeti/config.data found with 2" \
        " different checksums" in done.stdout, done.stdout


def hook_dir(cluster: Cluster, name: str) -> Path:
    return cluster.root(name) / "etc/ganeti/hooks/cluster-verify-post.d"


def write_hook(cluster: Cluster, name: str, script: str, body: str) -> Path:
    directory = hook_dir(cluster, name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / script
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@needs_cluster
def test_real_verify_runs_the_post_hooks_with_ganetis_environment(cluster: Cluster) -> None:
    dump = cluster.base / "hook-env"
    hook = write_hook(cluster, "node1", "10-env", f"env > {dump}\n")
    try:
        done = cluster.verify()
    finally:
        hook.unlink()
    assert done.returncode == 0, done.stdout
    env = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert env["GANETI_HOOKS_PATH"] == "cluster-verify" and env["GANETI_HOOKS_PHASE"] == "post"
    assert env["GANETI_OP_CODE"] == "OP_CLUSTER_VERIFY_GROUP" and env["GANETI_OBJECT_TYPE"] == "CLUSTER"
    assert env["GANETI_CLUSTER"] == CLUSTER and env["GANETI_MASTER"] == "node1"
    assert "GANETI_CLUSTER_TAGS" in env and "GANETI_POST_CLUSTER_TAGS" in env
    assert "GANETI_NODE_TAGS_node1" in env and "GANETI_NODE_TAGS_node2" in env


@needs_cluster
def test_real_verify_reports_a_failing_post_hook(cluster: Cluster) -> None:
    hook = write_hook(cluster, "node2", "50-fail", "echo boom\necho again\nexit 1\n")
    try:
        done = cluster.verify("--error-codes")
        ignored = cluster.verify("-I", "ENODEHOOKS")
    finally:
        hook.unlink()
    assert done.returncode == 1, done.stdout
    lines = done.stdout.splitlines()  # each log line starts with its time stamp
    at = next(i for i, line in enumerate(lines)
              if line.endswith("  - ERROR:ENODEHOOKS:node:node2:Script cluster-verify-post.d/50-fail failed,"
                               " output:"))
    # the node sends the output escaped (Ganeti's SafeEncode); the master indents it by six spaces
    assert lines[at + 1].endswith(" " * 7 + "boom\\nagain"), done.stdout
    # ignored, the finding is a warning, but a failed hook still fails the group job (as in Ganeti)
    assert "  - WARNING: node node2: Script cluster-verify-post.d/50-fail failed, output:" in ignored.stdout
    assert ignored.returncode == 1, ignored.stdout


@needs_cluster
def test_real_verify_reports_an_os_only_one_node_has(cluster: Cluster) -> None:
    broken = cluster.root("node2") / "srv/ganeti/os/brokenos"
    broken.mkdir(parents=True)
    try:
        done = cluster.verify("--error-codes")
    finally:
        broken.rmdir()
    assert done.returncode == 1, done.stdout
    assert f"ERROR:ENODEOS:node:node2:Invalid OS brokenos (located at {broken}):" in done.stdout, done.stdout
    assert "ERROR:ENODEOS:node:node2:Extra OS brokenos not present on reference node (node1)" in done.stdout


@needs_cluster
def test_real_verify_reports_an_os_missing_on_a_node(cluster: Cluster) -> None:
    broken = cluster.root("node1") / "srv/ganeti/os/brokenos"
    broken.mkdir(parents=True)
    try:
        done = cluster.verify("--error-codes")
    finally:
        broken.rmdir()
    assert done.returncode == 1, done.stdout
    assert "ERROR:ENODEOS:node:node1:Invalid OS brokenos" in done.stdout, done.stdout
    assert "ERROR:ENODEOS:node:node2:OSes present on reference node node1 but missing on this node:" \
        " brokenos" in done.stdout, done.stdout
    done = cluster.verify()
    assert done.returncode == 0, done.stdout  # and gone again


@needs_cluster
def test_real_verify_disks_finds_nothing_to_activate(cluster: Cluster) -> None:
    """OP_CLUSTER_VERIFY_DISKS submits one OP_GROUP_VERIFY_DISKS per group; file disks have no volumes."""
    done = cluster.run(f"{SBIN}/gnt-cluster", "verify-disks")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Submitted jobs" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1] == "No disks need to be activated."


@needs_cluster
def test_real_verify_disks_of_an_unknown_group_fails_as_ganeti(cluster: Cluster) -> None:
    done = cluster.run(f"{SBIN}/gnt-cluster", "verify-disks", "--node-group", "nosuchgroup")
    assert done.returncode == 1
    assert "Group 'nosuchgroup' not found" in done.stderr
