"""Ganeti's layout under GANETI_ROOTDIR and the mapping of virtual-cluster file names."""

from __future__ import annotations

import pytest

from noded.errors import RpcFail
from noded.paths import Paths, RootError


def test_every_path_is_below_the_root() -> None:
    p = Paths(root="/r/node1", hostname="node1")
    for path in (p.data_dir, p.run_dir, p.log_dir, p.conf_dir, p.queue_dir, p.etc_hosts,
                 p.services_file, p.root_ssh_dir, p.file_storage_dir, p.noded_pid_file):
        assert path.startswith("/r/node1/")


def test_without_root_paths_are_ganetis() -> None:
    p = Paths(root="", hostname="n")
    assert p.data_dir == "/var/lib/ganeti" and p.etc_hosts == "/etc/hosts"


def test_virtual_path_is_mapped_under_the_root() -> None:
    p = Paths(root="/r/node1", hostname="node1")
    assert p.localize("/###-VIRTUAL-PATH-###,/var/lib/ganeti/config.data") == \
        "/r/node1/var/lib/ganeti/config.data"


@pytest.mark.parametrize("bad", ["/###-VIRTUAL-PATH-###,/../../etc/passwd",
                                 "/###-VIRTUAL-PATH-###,/var/../../../etc/passwd"])
def test_virtual_path_cannot_leave_the_root(bad: str) -> None:
    p = Paths(root="/r/node1", hostname="node1")
    with pytest.raises(RpcFail):
        p.localize(bad)


def test_plain_path_outside_the_root_is_refused() -> None:
    with pytest.raises(RpcFail, match="is not a virtual path"):
        Paths(root="/r/node1", hostname="node1").localize("/etc/passwd")


def test_root_must_end_with_the_hostname() -> None:
    with pytest.raises(RootError):
        Paths.from_environ({"GANETI_ROOTDIR": "/r/node1", "GANETI_HOSTNAME": "node2"})
