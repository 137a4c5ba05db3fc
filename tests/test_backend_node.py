"""Node procedures: node_info, node_verify(_light), addresses, bridges, instance listings, hv params."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from real_ganeti import requires_real_ganeti
from real_noded_calls import our_call, real_call, real_snippet

from noded import certs
from noded.backends import node, osdiag
from noded.backends.osdiag import os_diagnose_list
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.hypervisor import HypervisorError
from noded.paths import VIRTUAL_PATH_PREFIX, Paths

REPO = Path(__file__).resolve().parent.parent
FAKE = {"migration_mode": "live"}


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    paths.ensure_dirs()
    return NodeContext(paths=paths, port=1811)


def _root(ctx: NodeContext) -> Path:
    return Path(ctx.paths.root)


def _mark_up(ctx: NodeContext, name: str, memory: int, vcpus: int) -> None:
    state = Path(ctx.paths.run_dir) / "fake-hypervisor"
    state.mkdir(parents=True, exist_ok=True)
    (state / name).write_text(f"0\n{memory}\n{vcpus}\n")


def _allow_storage(ctx: NodeContext, *dirs: str) -> None:
    Path(ctx.paths.file_storage_paths_file).write_text("".join(f"{d}\n" for d in dirs))


# -- node_info ---------------------------------------------------------------------

def test_node_info_starts_with_the_boot_id(ctx: NodeContext) -> None:
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot_id = f.read().strip()
    assert node.node_info(ctx, [], []) == [boot_id, [], []]


def test_node_info_with_null_arguments_answers_null_lists(ctx: NodeContext) -> None:
    assert node.node_info(ctx, None, None)[1:] == [None, None]


def test_node_info_reports_file_storage_space_in_mib(ctx: NodeContext) -> None:
    fs_dir = ctx.paths.file_storage_dir
    os.makedirs(fs_dir)
    st = os.statvfs(fs_dir)
    [entry] = node.node_info(ctx, [["file", fs_dir, []]], None)[1]
    assert entry["type"] == "file" and entry["name"] == fs_dir
    assert entry["storage_size"] == st.f_frsize * st.f_blocks // 2**20
    assert abs(entry["storage_free"] - st.f_frsize * st.f_bavail // 2**20) <= 64


def test_node_info_reports_sharedfile_storage_too(ctx: NodeContext) -> None:
    shared = ctx.paths.shared_file_storage_dir
    os.makedirs(shared)
    [entry] = node.node_info(ctx, [["sharedfile", shared, []]], None)[1]
    assert entry["type"] == "sharedfile" and entry["storage_size"] > 0


def test_node_info_maps_a_plain_master_path_below_the_root(ctx: NodeContext) -> None:
    os.makedirs(ctx.paths.file_storage_dir)
    [entry] = node.node_info(ctx, [["file", "/srv/ganeti/file-storage", []]], None)[1]
    assert entry["name"] == "/srv/ganeti/file-storage"


def test_node_info_for_a_missing_storage_path_fails(ctx: NodeContext) -> None:
    missing = os.path.join(ctx.paths.root, "nowhere")
    with pytest.raises(RpcFail, match=r"Failed to retrieve file system information about path: .*nowhere"
                                      r" - No such file or directory"):
        node.node_info(ctx, [["file", missing, []]], None)


def test_node_info_refuses_parameters_for_file_storage(ctx: NodeContext) -> None:
    with pytest.raises(ValueError, match="expected 0, received '1'"):
        node.node_info(ctx, [["file", ctx.paths.root, [True]]], None)


def test_node_info_includes_the_fake_hypervisor_facts(ctx: NodeContext) -> None:
    [hv] = node.node_info(ctx, None, [["fake", FAKE]])[2]
    assert hv["cpu_total"] >= 1 and hv["memory_total"] > 0


def test_node_info_for_an_unknown_hypervisor_fails(ctx: NodeContext) -> None:
    with pytest.raises(HypervisorError, match="Unknown hypervisor type 'kvm-x'"):
        node.node_info(ctx, None, [["kvm-x", {}]])


@requires_real_ganeti
def test_node_info_without_lvm_matches_ganeti(ctx: NodeContext) -> None:
    units = [["lvm-vg", "xenvg", [False]], ["lvm-pv", "xenvg", [False]], ["lvm-pv", "xenvg", [True]]]
    ours = our_call(node.node_info, ctx, units, None)
    theirs = real_call(_root(ctx), "node_info", units, None)
    assert ours == theirs


@requires_real_ganeti
def test_node_info_file_storage_matches_ganeti(ctx: NodeContext) -> None:
    fs_dir = ctx.paths.file_storage_dir
    os.makedirs(fs_dir)
    ours = our_call(node.node_info, ctx, [["file", fs_dir, []]], [["fake", FAKE]])
    theirs = real_call(_root(ctx), "node_info", [["file", fs_dir, []]], [["fake", FAKE]])
    assert ours[0] is theirs[0] is True
    assert ours[1][0] == theirs[1][0]
    for mine, real in zip(ours[1][1], theirs[1][1], strict=True):
        assert mine.keys() == real.keys()
        assert (mine["type"], mine["name"], mine["storage_size"]) == (
            real["type"], real["name"], real["storage_size"])
    assert ours[1][2][0].keys() == theirs[1][2][0].keys()
    assert ours[1][2][0]["memory_total"] == theirs[1][2][0]["memory_total"]


# -- node_verify ---------------------------------------------------------------------

def _deterministic_checks(ctx: NodeContext) -> dict[str, Any]:
    fs_dir = ctx.paths.file_storage_dir
    return {
        "filelist": [VIRTUAL_PATH_PREFIX + "/var/lib/ganeti/server.pem",
                     VIRTUAL_PATH_PREFIX + "/var/lib/ganeti/absent"],
        "hypervisor": ["fake"],
        "hvparms": [["cluster", "fake", FAKE], ["instance x", "fake", {"migration_mode": "bogus"}]],
        "instancelist": ["fake"], "version": None, "hvinfo": "fake", "nodesetup": None, "time": None,
        "oslist": None, "nonvmnodes": [], "user-scripts": ["/bin/true", "/nonexistent", "/etc/passwd"],
        "client-cert": None, "vglist": None, "lvlist": "xenvg", "pvlist": ["xenvg"], "exclusive-pvs": True,
        "drbd-version": None, "drbd-list": None, "drbd-helper": "/bin/true",
        "bridges": ["gnt-nosuchbr0"], "oob-paths": ["/bin/true", "/etc/passwd", "/nonexistent", "/tmp"],
        "allowed-file-storage-paths": "node1", "file-storage-path": fs_dir,
        "shared-file-storage-path": ctx.paths.shared_file_storage_dir,
        "node-net-test": [[["node1", "192.0.2.1", "192.0.2.1"], ["node2", "127.0.0.1", "127.0.0.1"]],
                          ["node1"]],
        "master-ip": ["node2", "127.0.0.1", ["node1"]],
        "ssh-setup": [[["uuid-1", "node1", True, True, True]], "rsa"],
    }


@requires_real_ganeti
def test_node_verify_answers_like_ganeti(ctx: NodeContext) -> None:
    certs.write_server_pem(ctx.paths.server_cert)
    certs.write_client_pem(ctx.paths.client_cert, ctx.paths.server_cert, "node1")
    os.makedirs(ctx.paths.file_storage_dir)
    _allow_storage(ctx, ctx.paths.file_storage_dir, "/etc/bad", "relative")
    _mark_up(ctx, "inst1.example.com", 128, 1)
    checks = _deterministic_checks(ctx)
    ours = our_call(node.node_verify, ctx, checks, "cluster", {"fake": FAKE})
    theirs = real_call(_root(ctx), "node_verify", checks, "cluster", {"fake": FAKE})
    assert ours[0] is theirs[0] is True
    mine, real = ours[1], theirs[1]
    assert sorted(mine) == sorted(real)
    # Live numbers differ from call to call; the OS list order is the directory's in Ganeti.
    assert abs(mine.pop("time")[0] - real.pop("time")[0]) <= 5
    assert mine.pop("hvinfo").keys() == real.pop("hvinfo").keys()
    assert sorted(mine.pop("oslist")) == sorted(real.pop("oslist"))
    assert mine == real


def test_node_verify_hashes_files_named_by_virtual_paths(ctx: NodeContext) -> None:
    Path(ctx.paths.config_file).write_text("{}\n")
    name = VIRTUAL_PATH_PREFIX + "/var/lib/ganeti/config.data"
    result = node.node_verify(ctx, {"filelist": [name]}, "cluster", {})
    assert result == {"filelist": {name: hashlib.sha1(b"{}\n").hexdigest()}}


def test_node_verify_light_runs_the_same_checks(ctx: NodeContext) -> None:
    checks = {"version": None, "hypervisor": ["fake"], "user-scripts": ["/nonexistent"],
              "instancelist": ["fake"], "bridges": ["gnt-nosuchbr0"]}
    assert node.node_verify_light(ctx, checks, "c", {"fake": FAKE}) == \
        node.node_verify(ctx, checks, "c", {"fake": FAKE})


def test_node_verify_skips_vm_checks_on_non_vm_nodes(ctx: NodeContext) -> None:
    checks = {"nonvmnodes": ["node1"], "hypervisor": ["fake"], "instancelist": ["fake"],
              "bridges": ["x"], "oslist": None, "version": None}
    assert node.node_verify(ctx, checks, "c", {"fake": FAKE}) == {"version": [3000000, "3.0.2"]}


def test_node_verify_reports_a_signed_client_certificate_by_fingerprint(ctx: NodeContext) -> None:
    certs.write_server_pem(ctx.paths.server_cert)
    digest = certs.write_client_pem(ctx.paths.client_cert, ctx.paths.server_cert, "node1")
    assert node.node_verify(ctx, {"client-cert": None}, "c", {}) == {"client-cert": [None, digest]}


def test_node_verify_warns_about_a_self_signed_client_certificate(ctx: NodeContext) -> None:
    certs.write_server_pem(ctx.paths.client_cert)
    [level, msg] = node.node_verify(ctx, {"client-cert": None}, "c", {})["client-cert"]
    assert level == "WARNING"
    assert msg.startswith(f"The certificate '{ctx.paths.client_cert}' is self-signed.")


def test_node_verify_nodelist_reports_that_ssh_is_not_checked(ctx: NodeContext) -> None:
    result = node.node_verify(ctx, {"nodelist": [["node1", "node2"], {"node1": ["node3"]}, ["node1"]]},
                              "c", {})["nodelist"]
    assert sorted(result) == ["node1", "node2", "node3"]
    assert result["node2"].startswith("ssh problem: ")
    assert "node2" in result["node2"]


def test_node_verify_nodelist_is_empty_on_non_candidates(ctx: NodeContext) -> None:
    checks = {"nodelist": [["node1", "node2"], {}, ["node2"]]}
    assert node.node_verify(ctx, checks, "c", {}) == {"nodelist": {}}


def test_node_verify_net_test_reaches_a_listening_node(ctx: NodeContext) -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        ctx.port = server.getsockname()[1]
        checks = {"node-net-test": [[["node1", "127.0.0.1", "127.0.0.1"]], ["node1"]],
                  "master-ip": ["node1", "127.0.0.1", ["node1"]]}
        assert node.node_verify(ctx, checks, "c", {}) == {"node-net-test": {}, "master-ip": True}


def _write_ssh_setup(ctx: NodeContext, own_key: str, listed_key: str, authorized: str) -> None:
    ssh = Path(ctx.paths.root_ssh_dir)
    ssh.mkdir(parents=True, exist_ok=True)
    (ssh / "id_rsa.pub").write_text(own_key + "\n")
    (ssh / "authorized_keys").write_text(authorized)
    Path(ctx.paths.data_dir, "ganeti_pub_keys").write_text(f"uuid-1 {listed_key}\n")


def test_node_verify_ssh_setup_accepts_a_consistent_setup(ctx: NodeContext) -> None:
    key = "ssh-rsa AAAAB3NzaKEY root@node1"
    _write_ssh_setup(ctx, key, key, key + "\n")
    checks = {"ssh-setup": [[["uuid-1", "node1", True, True, True]], "rsa"], "ssh-clutter": True}
    assert node.node_verify(ctx, checks, "c", {}) == {"ssh-setup": [], "ssh-clutter": []}


def test_node_verify_ssh_setup_reports_a_foreign_key(ctx: NodeContext) -> None:
    _write_ssh_setup(ctx, "ssh-rsa AAAAOWN root@node1", "ssh-rsa AAAAOTHER root@node1", "")
    result = node.node_verify(ctx, {"ssh-setup": [[["uuid-1", "node1", True, True, True]], "rsa"]},
                              "c", {})["ssh-setup"]
    assert result == [
        f"The key for node node1 in the cluster config does not match this node's key in the node"
        f" public key file node1:{ctx.paths.root_ssh_dir}/id_rsa.pub.",
        "A SSH key of master candidate 'node1' (UUID: 'uuid-1') is not in the 'authorized_keys' file"
        " of node 'node1'."]


def test_node_verify_ssh_clutter_finds_duplicate_host_keys(ctx: NodeContext) -> None:
    key = "ssh-rsa AAAAB3NzaKEY root@node1"
    _write_ssh_setup(ctx, key, key, f"{key}\nssh-rsa AAAAOLD root@node1\n")
    checks = {"ssh-setup": [[["uuid-1", "node1", True, True, True]], "rsa"], "ssh-clutter": True}
    [msg] = node.node_verify(ctx, checks, "c", {})["ssh-clutter"]
    assert msg.endswith("Entry for 'root@node1' in lines 1, 2. ")


def test_node_verify_file_storage_path_problems(ctx: NodeContext) -> None:
    fs_dir = ctx.paths.file_storage_dir
    checks = {"file-storage-path": fs_dir}
    assert node.node_verify(ctx, checks, "c", {}) == {"file-storage-path": (
        f"No paths are valid or path file '{ctx.paths.file_storage_paths_file}' was not accessible.")}
    _allow_storage(ctx, fs_dir)
    assert node.node_verify(ctx, checks, "c", {}) == {
        "file-storage-path": f"Path '{fs_dir}' is not existing or not a directory."}
    os.makedirs(fs_dir)
    assert node.node_verify(ctx, checks, "c", {}) == {}


def test_node_verify_flags_storage_paths_in_system_directories(ctx: NodeContext) -> None:
    root = ctx.paths.root
    _allow_storage(ctx, f"{root}/srv/ok", f"{root}/etc/ganeti/x", "/usr/lib/y", "relative/z")
    result = node.node_verify(ctx, {"allowed-file-storage-paths": "node1"}, "c", {})
    assert result == {"allowed-file-storage-paths": [f"{root}/etc/ganeti/x", "/usr/lib/y", "relative/z"]}


# -- small procedures ---------------------------------------------------------------

def test_node_has_ip_address_for_a_local_address(ctx: NodeContext) -> None:
    assert node.node_has_ip_address(ctx, "127.0.0.1") is True


def test_node_has_ip_address_for_a_foreign_or_bad_address(ctx: NodeContext) -> None:
    assert node.node_has_ip_address(ctx, "192.0.2.55") is False
    assert node.node_has_ip_address(ctx, "not-an-ip") is False


def test_bridges_exist_with_no_bridges(ctx: NodeContext) -> None:
    assert node.bridges_exist(ctx, []) is None


def test_bridges_exist_names_the_missing_ones(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=r"^Missing bridges gnt-nob0, gnt-nob1$"):
        node.bridges_exist(ctx, ["gnt-nob0", "gnt-nob1"])


@requires_real_ganeti
def test_bridges_exist_failure_matches_ganeti(ctx: NodeContext) -> None:
    args = [["gnt-nob0", "lo", "gnt-nob1"]]
    assert our_call(node.bridges_exist, ctx, *args) == real_call(_root(ctx), "bridges_exist", *args)


@pytest.fixture
def netns() -> Iterator[str]:
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2")
    name = f"gtest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _in_netns(netns: str, code: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code], cwd=REPO,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_bridges_exist_finds_a_real_bridge(ctx: NodeContext, netns: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "add", "gnt-br0", "type", "bridge"],
                   check=True)
    code = ("from noded.backends import node; from noded.context import NodeContext;"
            "from noded.paths import Paths;"
            "print(node.bridges_exist(NodeContext(paths=Paths(root='', hostname='n')), ['gnt-br0']))")
    assert _in_netns(netns, code) == "None"


def test_node_verify_net_test_names_unreachable_nodes(ctx: NodeContext, netns: str) -> None:
    # In a namespace with no route at all, 192.0.2.x cannot be reached (and lo is down).
    code = ("import json; from noded.backends import node; from noded.context import NodeContext;"
            "from noded.paths import Paths;"
            f"ctx = NodeContext(paths=Paths(root={ctx.paths.root!r}, hostname='node1'));"
            "checks = {'node-net-test': [[['node1', '192.0.2.1', '192.0.2.1'],"
            " ['node2', '192.0.2.2', '192.0.2.3']], ['node1']]};"
            "print(json.dumps(node.node_verify(ctx, checks, 'c', {})))")
    assert json.loads(_in_netns(netns, code)) == {"node-net-test": {
        "node1": "failure using the primary interface(s)",
        "node2": "failure using the primary and secondary interface(s)"}}


def test_instance_list_names_running_fake_instances(ctx: NodeContext) -> None:
    _mark_up(ctx, "inst1.example.com", 128, 1)
    assert node.instance_list(ctx, ["fake"], {"fake": FAKE}) == ["inst1.example.com"]


def test_instance_info_of_a_running_and_a_stopped_instance(ctx: NodeContext) -> None:
    _mark_up(ctx, "inst1.example.com", 128, 2)
    assert node.instance_info(ctx, "inst1.example.com", "fake", FAKE) == {
        "memory": 128, "vcpus": 2, "state": 0, "time": 0}
    assert node.instance_info(ctx, "inst2.example.com", "fake", FAKE) == {}


def test_all_instances_info_maps_names_to_facts(ctx: NodeContext) -> None:
    _mark_up(ctx, "a", 100, 1)
    _mark_up(ctx, "b", 200, 2)
    assert node.all_instances_info(ctx, ["fake"], {"fake": FAKE}) == {
        "a": {"memory": 100, "vcpus": 1, "state": 0, "time": 0},
        "b": {"memory": 200, "vcpus": 2, "state": 0, "time": 0}}


@requires_real_ganeti
def test_instance_procedures_match_ganeti(ctx: NodeContext) -> None:
    _mark_up(ctx, "inst1.example.com", 128, 2)
    calls: list[tuple[Any, str, list[Any]]] = [
        (node.instance_list, "instance_list", [["fake"], {"fake": FAKE}]),
        (node.instance_info, "instance_info", ["inst1.example.com", "fake", FAKE]),
        (node.instance_info, "instance_info", ["inst9.example.com", "fake", FAKE]),
        (node.all_instances_info, "all_instances_info", [["fake"], {"fake": FAKE}]),
        (node.all_instances_info, "all_instances_info", [["xen-foo"], {"xen-foo": {}}]),
    ]
    for func, name, args in calls:
        assert our_call(func, ctx, *args) == real_call(_root(ctx), name, *args), name


def test_hypervisor_validate_params_accepts_full_fake_params(ctx: NodeContext) -> None:
    assert node.hypervisor_validate_params(ctx, "fake", FAKE) is None


@requires_real_ganeti
def test_hypervisor_validate_params_failures_match_ganeti(ctx: NodeContext) -> None:
    for args in (["fake", {}], ["nosuch", FAKE], ["fake", FAKE]):
        assert our_call(node.hypervisor_validate_params, ctx, *args) == \
            real_call(_root(ctx), "hypervisor_validate_params", *args), args


# -- OS definitions (oslist / os_diagnose) -----------------------------------------

OS_SCRIPTS_V10 = ("create", "export", "import", "rename")


def _os_dir(base: Path, name: str, api: str, scripts: tuple[str, ...] = OS_SCRIPTS_V10,
            extra: dict[str, str] | None = None) -> Path:
    d = base / name
    d.mkdir(parents=True)
    (d / "ganeti_api_version").write_text(api)
    for script in scripts:
        (d / script).write_text("#!/bin/sh\nexit 0\n")
        (d / script).chmod(0o755)
    for fname, text in (extra or {}).items():
        (d / fname).write_text(text)
    return d


def _os_zoo(base: Path) -> Path:
    _os_dir(base, "good10", "10\n")
    _os_dir(base, "good20", "20\n15\n", scripts=("create", "export", "import", "rename", "verify"),
            extra={"variants.list": "# comment\nminimal\n\nfull\n",
                   "parameters.list": "size The disk size\nflag\n"})
    _os_dir(base, "untrusted", "15\n", scripts=("create_untrusted", "export", "import", "rename"))
    _os_dir(base, "noapi", "", scripts=())
    (base / "noapi" / "ganeti_api_version").unlink()
    _os_dir(base, "oldapi", "5\n")
    _os_dir(base, "badapi", "ten\n")
    _os_dir(base, "nocreate", "10\n", scripts=("export", "import", "rename"))
    _os_dir(base, "noexec", "10\n")
    (base / "noexec" / "rename").chmod(0o644)
    _os_dir(base, "noparams", "20\n", scripts=("create", "export", "import", "rename", "verify"))
    (base / "plainfile").write_text("not an OS")
    (base / "bad.name").mkdir()
    (base / ".hidden").mkdir()
    return base


def test_os_diagnose_list_validates_os_definitions(tmp_path: Path) -> None:
    base = _os_zoo(tmp_path / "os")
    result = {entry[0]: entry[1:] for entry in os_diagnose_list([str(base)])}
    assert sorted(result) == ["bad.name", "badapi", "good10", "good20", "noapi", "nocreate", "noexec",
                              "noparams", "oldapi", "plainfile", "untrusted"]
    assert result["good20"] == [str(base / "good20"), True, "", ["minimal", "full"],
                                [["size", "The disk size"], ["flag"]], [20, 15], True]
    assert result["untrusted"][1] is True and result["untrusted"][6] is False
    assert result["oldapi"][1:3] == [False, f"API version mismatch for path '{base}/oldapi': found [5],"
                                            " want frozenset({10, 20, 15})."]
    assert result["noexec"][2] == f"File 'rename' under path '{base}/noexec' is not executable"


def test_os_diagnose_searches_below_the_root_first(ctx: NodeContext) -> None:
    _os_dir(Path(ctx.paths.under_root("/srv/ganeti/os")), "mine", "20\n",
            scripts=("create", "export", "import", "rename", "verify"), extra={"parameters.list": ""})
    first = osdiag.os_diagnose(ctx)[0]
    assert first[:4] == ["mine", ctx.paths.under_root("/srv/ganeti/os/mine"), True, ""]


@requires_real_ganeti
def test_os_diagnose_list_matches_ganeti(tmp_path: Path) -> None:
    base = _os_zoo(tmp_path / "node1" / "os")
    theirs = real_snippet(tmp_path / "node1", f"""
from ganeti import backend
result = [list(e) for e in backend.DiagnoseOS(top_dirs=[{str(base)!r}])]
""")
    assert sorted(os_diagnose_list([str(base)])) == sorted(theirs)


def test_node_verify_reports_missing_hv_parameters_instead_of_failing(ctx: NodeContext) -> None:
    checks = {"hvparms": [["instance inst1", "fake", {}], ["cluster", "nosuch", {}]]}
    assert node.node_verify(ctx, checks, "c", {}) == {"hvparms": [
        ["instance inst1", "fake", "Parameter 'migration_mode' is missing"],
        ["cluster", "nosuch", "Unknown hypervisor type 'nosuch'"]]}
