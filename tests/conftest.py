"""Shared fixtures: node roots and running node daemons on loopback addresses."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import NodeRoot, RunningNoded, make_root, start_noded


@pytest.fixture
def node_root(tmp_path: Path) -> NodeRoot:
    """A root for node1 with its certificates, in candidate mode (client.pem listed)."""
    node = make_root(tmp_path / "vcluster", "node1")
    node.write_candidate_map()
    return node


@pytest.fixture
def noded(node_root: NodeRoot) -> Iterator[RunningNoded]:
    """Our node daemon on 127.0.0.2 (detached, as a real start), accepting client.pem."""
    daemon = start_noded(node_root, "127.0.0.2")
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def noded_factory(tmp_path: Path) -> Iterator[Callable[..., RunningNoded]]:
    """Start more daemons: factory(hostname, address, *args, candidate=True, cluster_pem=None)."""
    started: list[RunningNoded] = []

    def factory(hostname: str = "node1", address: str = "127.0.0.2", *args: str,
                candidate: bool = True, cluster_pem: str | None = None,
                foreground: bool = False) -> RunningNoded:
        node = make_root(tmp_path / "vcluster", hostname, cluster_pem=cluster_pem)
        if candidate:
            node.write_candidate_map()
        daemon = start_noded(node, address, *args, foreground=foreground)
        started.append(daemon)
        return daemon

    try:
        yield factory
    finally:
        for d in started:
            d.stop()


@pytest.fixture(scope="module")
def shared_noded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNoded]:
    """One daemon for a whole module of tests that only read (faster than one per test)."""
    node = make_root(tmp_path_factory.mktemp("shared") / "vcluster", "node1")
    node.write_candidate_map()
    daemon = start_noded(node, "127.0.0.2")
    try:
        yield daemon
    finally:
        daemon.stop()
