"""`gnt-node modify` (OP_NODE_SET_PARAMS): node roles changed by the master, driven by Debian's real CLI.

The cluster of tests/test_masterd_config.py (its helpers are reused): three
of our node daemons (node1, the master, node2 a master candidate, node3
regular) and our ganeti-masterd on node1. The tests run in file order on one
cluster, each starting from the roles the previous one left:
demoting node2 is refused (the pool wants it); node3 becomes a candidate;
node2 is drained; node3 goes offline with its daemon replaced by a silent
listener (an RPC of the opcode to it would hang; the job file itself is
still replicated to node3 in the background, as Ganeti does, since node3 was
a candidate when the job was submitted: connections are not counted); the
roles are listed as node1 M, node2 D, node3 O. Then node2 is undrained
(auto-promoted back), and node3 brought online: refused while its daemon is
down (no version), accepted and auto-promoted once it is back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import make_root, start_noded
from test_masterd_config import MASTERD, NODES, QUICK, SBIN, Cluster, SilentListener, build_config

from masterd.config.model import load
from masterd.config.ssconf import file_contents, ssconf_values

pytestmark = pytest.mark.skipif(not os.path.exists(f"{SBIN}/gnt-node") or not os.path.exists(MASTERD),
                                reason="needs Debian's ganeti package and our ganeti-masterd console script")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("modify")
    master = make_root(base, "node1")
    roots = {"node1": master}
    roots.update({name: make_root(base, name, cluster_pem=master.server_pem) for name in NODES
                  if name != "node1"})
    cfg = build_config(master, roots["node2"])
    Path(master.paths.config_file).write_text(cfg.dumps())
    for root in roots.values():
        root.write_candidate_map(master.client_fp)
        for key, value in {"master_node": "node1", "cluster_name": "cluster.example.com",
                           "node_list": "\n".join(NODES),
                           "node_primary_ips": "\n".join(f"{n} {a}" for n, a in NODES.items())}.items():
            Path(root.paths.ssconf_file(key)).write_text(value + "\n")
    c = Cluster(roots)
    try:
        for name, address in NODES.items():
            c.nodeds[name] = start_noded(roots[name], address)
        c.write_ports()
        c.start_masterd()
        yield c
    finally:
        c.stop_masterd()
        for noded in c.nodeds.values():
            noded.stop()


def candidate_certs(cluster: Cluster, name: str) -> str:
    return Path(cluster.roots[name].paths.master_candidates_certs_file).read_text()


def assert_ssconf_everywhere(cluster: Cluster, names: list[str]) -> None:
    expected = file_contents(ssconf_values(load(str(cluster.config_file))))
    for name in names:
        root = cluster.roots[name]
        found = {key: Path(root.paths.ssconf_file(key)).read_text() for key in expected}
        assert found == expected, name


def test_demoting_a_candidate_the_pool_needs_is_refused_and_nothing_changes(cluster: Cluster) -> None:
    before = cluster.config_file.read_bytes()
    done = cluster.gnt("node", "modify", "--master-candidate=no", "node2")
    assert done.returncode == 1
    assert ("Not enough master candidates, please pass auto promote option to allow promotion"
            " (--auto-promote or RAPI auto_promote=True)") in done.stderr
    assert cluster.config_file.read_bytes() == before   # same serial, nothing written


def test_making_node3_a_candidate_sends_it_config_and_its_certificate_to_every_node(
        cluster: Cluster) -> None:
    serial = load(str(cluster.config_file)).serial_no
    done = cluster.gnt("node", "modify", "--master-candidate=yes", "node3")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Modified node node3\n - master_candidate -> True\n"
    cfg = load(str(cluster.config_file))
    assert cfg.serial_no > serial and cfg.node_by_name("node3").master_candidate
    node3_fp = cluster.roots["node3"].client_fp
    assert cfg.candidate_certs[cfg.node_by_name("node3").uuid] == node3_fp
    for name in NODES:
        assert node3_fp in candidate_certs(cluster, name), name
    assert Path(cluster.roots["node3"].paths.config_file).read_bytes() == cluster.config_file.read_bytes()
    assert_ssconf_everywhere(cluster, list(NODES))


def test_draining_node2_demotes_it_and_removes_its_config_and_certificate(cluster: Cluster) -> None:
    done = cluster.gnt("node", "modify", "--drained=yes", "node2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Modified node node2\n - master_candidate -> False\n - drained -> True\n"
    cfg = load(str(cluster.config_file))
    node2 = cfg.node_by_name("node2")
    assert node2.drained and not node2.master_candidate and node2.uuid not in cfg.candidate_certs
    assert not Path(cluster.roots["node2"].paths.config_file).exists()   # node_demote_from_mc
    for name in NODES:
        assert cluster.roots["node2"].client_fp not in candidate_certs(cluster, name), name
    assert_ssconf_everywhere(cluster, list(NODES))


def test_setting_node3_offline_with_its_daemon_stopped_waits_on_nothing(cluster: Cluster) -> None:
    cluster.nodeds["node3"].stop()
    listener = SilentListener(NODES["node3"])
    cluster.write_ports(node3=listener.port)
    try:
        done, seconds = cluster.timed("node", "modify", "--offline=yes", "node3")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "Modified node node3\n - master_candidate -> False\n - offline -> True\n"
        assert seconds < QUICK   # a demote, token or distribution call to node3 would hang for a minute
    finally:
        listener.close()
    cfg = load(str(cluster.config_file))
    assert cfg.node_by_name("node3").offline
    assert ssconf_values(cfg)["offline_nodes"] == ["node3"]
    assert_ssconf_everywhere(cluster, ["node1", "node2"])
    assert cluster.roots["node3"].client_fp not in candidate_certs(cluster, "node1")


def test_gnt_node_list_shows_the_new_roles(cluster: Cluster) -> None:
    done = cluster.gnt("node", "list", "--no-headers", "-o", "name,role,master_candidate,drained,offline")
    assert done.returncode == 0, done.stderr
    assert [line.split() for line in done.stdout.splitlines()] == [
        ["node1", "M", "Y", "N", "N"], ["node2", "D", "N", "Y", "N"], ["node3", "O", "N", "N", "Y"]]


def test_undraining_node2_promotes_it_back_to_candidate(cluster: Cluster) -> None:
    done = cluster.gnt("node", "modify", "--drained=no", "node2")
    assert done.returncode == 0, done.stderr
    assert "Auto-promoting node to master candidate" in done.stdout
    assert done.stdout.endswith("Modified node node2\n - master_candidate -> True\n - drained -> False\n")
    cfg = load(str(cluster.config_file))
    assert cfg.candidate_certs[cfg.node_by_name("node2").uuid] == cluster.roots["node2"].client_fp
    assert Path(cluster.roots["node2"].paths.config_file).read_bytes() == cluster.config_file.read_bytes()
    assert cluster.roots["node2"].client_fp in candidate_certs(cluster, "node1")


def test_the_masters_role_cannot_be_changed_by_modify(cluster: Cluster) -> None:
    done = cluster.gnt("node", "modify", "--master-candidate=no", "node1")
    assert done.returncode == 1
    assert "The master role can be changed only via master-failover" in done.stderr


def test_bringing_node3_online_while_its_daemon_is_down_is_refused(cluster: Cluster) -> None:
    before = cluster.config_file.read_bytes()
    done = cluster.gnt("node", "modify", "--force", "--offline=no", "node3")
    assert done.returncode == 1
    assert "Node node3 is being de-offlined but fails to report its version" in done.stderr
    assert cluster.config_file.read_bytes() == before


def test_bringing_node3_online_with_its_daemon_back_promotes_it(cluster: Cluster) -> None:
    cluster.nodeds["node3"] = start_noded(cluster.roots["node3"], NODES["node3"])
    cluster.write_ports()
    done = cluster.gnt("node", "modify", "--force", "--offline=no", "node3")
    assert done.returncode == 0, done.stderr
    assert "Transitioning node from offline to online state without using re-add" in done.stdout
    assert done.stdout.endswith("Modified node node3\n - master_candidate -> True\n - offline -> False\n")
    assert Path(cluster.roots["node3"].paths.config_file).read_bytes() == cluster.config_file.read_bytes()
    assert_ssconf_everywhere(cluster, list(NODES))
