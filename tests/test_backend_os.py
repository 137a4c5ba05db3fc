"""OS definition procedures: os_validate, instance_os_add, instance_run_rename, os_export.

Where the outcome is deterministic, the same calls are made with the real
Ganeti 3.0.2 backend on a twin node root (tests/twin_nodes.py), with its OS
search path pointed at that root, and the answers, script environments and
log files are compared (roots written as <ROOT>).
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
from real_ganeti import requires_real_ganeti, run_real_ganeti
from real_noded_calls import our_call
from twin_nodes import Twins, make_node, make_twins, normalize

from noded.backends import os as os_backend
from noded.context import NodeContext
from noded.osdefs.environment import SCRIPT_PATH
from noded.paths import Paths

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tools" / "os" / "tiny"
NOOP = Path("/usr/share/ganeti/os/noop")
INSTANCE = "inst1.example.com"
BOOT_SIGNATURE_OFFSET = 510
NAME_OFFSET = 128

# A verify script per the manual's example: dhcp must be "", yes or no.
VERIFY_DHCP = """#!/bin/sh
case $OSP_DHCP in
  ""|yes|no) ;;
  *) echo "Invalid value '$OSP_DHCP' for the dhcp parameter" 1>&2; exit 1 ;;
esac
echo "checked $*"
exit 0
"""
# Writes its sorted environment to stdout (hence to the log file).
DUMP_ENV = "#!/bin/sh\nenv | LC_ALL=C sort\n"
TRUE = "#!/bin/sh\nexit 0\n"


def os_dir(paths: Paths) -> str:
    """The first OS directory of the node (below its root)."""
    return paths.under_root("/srv/ganeti/os")


def write_os(paths: Paths, name: str, api: str = "20\n", variants: str | None = None,
             parameters: str | None = "", **scripts: str) -> str:
    """An OS definition `name` in the node's OS directory, with `scripts` overriding no-op ones."""
    directory = os.path.join(os_dir(paths), name)
    os.makedirs(directory)
    Path(directory, "ganeti_api_version").write_text(api)
    if variants is not None:
        Path(directory, "variants.list").write_text(variants)
    if parameters is not None:
        Path(directory, "parameters.list").write_text(parameters)
    for script in ("create", "export", "import", "rename", "verify"):
        target = Path(directory, script)
        target.write_text(scripts.get(script, TRUE))
        target.chmod(0o755)
    return directory


def link_os(paths: Paths, source: Path) -> None:
    os.makedirs(os_dir(paths), exist_ok=True)
    os.symlink(source, os.path.join(os_dir(paths), source.name))


def disk_file(paths: Paths, name: str = "disk0", size_mib: int = 1, create: bool = True) -> str:
    path = os.path.join(paths.file_storage_dir, INSTANCE, name)
    if create:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size_mib * 1024 * 1024)
    return path


def file_disk(path: str, idx: int = 0, size: int = 1) -> dict[str, Any]:
    return {"dev_type": "file", "logical_id": ["loop", path], "children": [], "nodes": ["node1-uuid"],
            "iv_name": f"disk/{idx}", "size": size, "mode": "rw", "params": {}, "uuid": f"disk-uuid-{idx}",
            "name": f"data{idx}"}


def instance(os_name: str, disks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    inst: dict[str, Any] = {
        "name": INSTANCE, "primary_node": "node1-uuid", "secondary_nodes": [], "os": os_name,
        "hypervisor": "fake", "hvparams": {}, "beparams": {"maxmem": 128, "vcpus": 1},
        "osparams": {}, "osparams_private": {}, "admin_state": "down", "nics": [],
        "disks": [d["uuid"] for d in disks], "disks_info": disks, "disks_active": True,
        "uuid": "inst-uuid-1", "serial_no": 1, "ctime": 1700000000.5, "mtime": 1700000001.25,
        "tags": [],
    }
    inst.update(extra)
    return inst


def rich_instance(paths: Paths, os_name: str) -> dict[str, Any]:
    """An instance with one file disk, two NICs (one on a network) and all kinds of parameters."""
    nics = [
        {"mac": "aa:00:00:11:22:33", "uuid": "nic-uuid-0", "name": "front",
         "nicparams": {"mode": "bridged", "link": "br0", "vlan": ""}},
        {"mac": "aa:00:00:44:55:66", "uuid": "nic-uuid-1", "ip": "192.0.2.10",
         "nicparams": {"mode": "routed", "link": "rt100", "vlan": ""},
         "network": "net-uuid",
         "netinfo": {"name": "net1", "uuid": "net-uuid", "network": "192.0.2.0/24", "gateway": "192.0.2.1",
                     "mac_prefix": "aa:00:00", "tags": ["lab"], "serial_no": 1}},
    ]
    return instance(os_name, [file_disk(disk_file(paths))], nics=nics,
                    hvparams={"disk_type": "paravirtual", "nic_type": "e1000", "kernel_path": ""},
                    beparams={"maxmem": 128, "minmem": 64, "vcpus": 2, "auto_balance": True},
                    osparams={"dhcp": "yes", "root-size": "8"}, osparams_private={"secret": "s3cr3t"},
                    secondary_nodes=["node2-uuid"])


def log_files(paths: Paths) -> list[str]:
    directory = os.path.join(paths.log_dir, "os")
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


_REAL_CALLS = """
import json, logging, tempfile
logging.disable(logging.CRITICAL)
from ganeti import backend, errors, pathutils, serializer
from ganeti.server import noded
pathutils.OS_SEARCH_PATH = {search_path!r}
tempfile.tempdir = {tmp!r}
result = []
for name, args in json.loads({calls!r}):
    args = serializer.LoadJson(json.dumps(args))  # as noded decodes a request (private values wrapped)
    try:
        result.append([True, getattr(noded.NodeRequestHandler, "perspective_" + name)(args)])
    except backend.RPCFail as err:
        result.append([False, str(err)])
    except Exception as err:
        result.append([False, "Error while executing backend function: %s" % err])
print(json.dumps(result))
"""


def real_calls(paths: Paths, *calls: tuple[str, list[Any]]) -> list[list[Any]]:
    """The answers of the real Ganeti backend to `calls`, made in one process, OS search path in the root."""
    tmp = paths.under_root("/tmp")
    os.makedirs(tmp, exist_ok=True)
    script = _REAL_CALLS.format(search_path=[os_dir(paths)], tmp=tmp, calls=json.dumps(calls))
    out = run_real_ganeti(script, root=Path(paths.root), hostname=paths.hostname)
    return [normalize(r, paths.root) for r in json.loads(out.strip().splitlines()[-1])]


def our_calls(ctx: NodeContext, *calls: tuple[str, list[Any]]) -> list[list[Any]]:
    funcs = {"os_validate": os_backend.os_validate, "instance_os_add": os_backend.instance_os_add,
             "instance_run_rename": os_backend.instance_run_rename, "os_export": os_backend.os_export}
    return [normalize(our_call(funcs[name], ctx, *args), ctx.paths.root) for name, args in calls]


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    return make_node(tmp_path)


@pytest.fixture
def twins(tmp_path: Path) -> Twins:
    nodes = make_twins(tmp_path)
    # Ganeti's ensure-dirs makes $LOG_DIR/os on a real node; its backend needs it, ours makes it.
    nodes.setup(lambda p: os.makedirs(os.path.join(p.log_dir, "os")))
    return nodes


# -- os_validate ---------------------------------------------------------------------------

@requires_real_ganeti
def test_os_validate_checks_variants_parameters_and_runs_verify_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: write_os(p, "paramos", variants="alpha\n# a comment\n\nbeta\n",
                                   parameters="dhcp Whether to use DHCP\nroot-size Size of /\n",
                                   verify=VERIFY_DHCP))
    twins.setup(lambda p: write_os(p, "plain", parameters="dhcp DHCP or not\n", verify=VERIFY_DHCP))
    twins.setup(lambda p: write_os(p, "old10", api="10\n"))
    calls: list[tuple[str, list[Any]]] = [
        ("os_validate", [True, "paramos+alpha", ["parameters"], {"dhcp": "yes", "root-size": "3"}, False]),
        ("os_validate", [True, "paramos+beta", ["parameters"], {"dhcp": "maybe"}, False]),
        ("os_validate", [True, "paramos+alpha", ["parameters"], {"color": "red"}, False]),
        ("os_validate", [True, "paramos", ["parameters"], {}, False]),
        ("os_validate", [True, "paramos+gamma", ["parameters"], {}, False]),
        ("os_validate", [True, "paramos+gamma", ["parameters"], {}, True]),
        ("os_validate", [True, "plain+x", [], {}, False]),
        ("os_validate", [True, "plain", [], {"dhcp": "no"}, False]),
        ("os_validate", [True, "old10", ["parameters"], {"anything": "x"}, False]),
        ("os_validate", [True, "nosuch", ["parameters"], {}, False]),
        ("os_validate", [False, "nosuch", ["parameters"], {}, False]),
        ("os_validate", [True, "plain", ["sizes"], {}, False]),
    ]
    ours = our_calls(twins.ours, *calls)
    assert ours == real_calls(twins.real.paths, *calls)
    assert ours[0] == [True, True]
    assert ours[1] == [False, "OS validation script failed (exited with exit code 1), output:"
                       " Invalid value 'maybe' for the dhcp parameter\n"]
    assert ours[10] == [True, False]


def test_os_validate_gives_verify_only_the_os_environment(ctx: NodeContext, tmp_path: Path) -> None:
    dump = tmp_path / "verify.env"
    write_os(ctx.paths, "paramos", variants="alpha\n", parameters="dhcp x\n",
             verify=f"#!/bin/sh\nenv > {dump}\necho \"$@\" >> {dump}\n")
    assert os_backend.os_validate(ctx, True, "paramos", ["parameters"], {"dhcp": "no"}, True)
    lines = dump.read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines[:-1] if "=" in line)
    assert lines[-1] == "parameters"
    assert env["OS_API_VERSION"] == "20" and env["OS_NAME"] == "paramos"
    assert env["OS_VARIANT"] == "alpha"  # no variant given: the first of variants.list
    assert env["OSP_DHCP"] == "no" and env["PATH"] == SCRIPT_PATH and env["DEBUG_LEVEL"] == "0"
    assert not any(k.startswith("INSTANCE_") or k == "HOME" for k in env)


# -- instance_os_add -----------------------------------------------------------------------

@requires_real_ganeti
def test_instance_os_add_with_debians_noop_succeeds_and_logs_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: link_os(p, NOOP))
    calls = [("instance_os_add", [instance("noop", [file_disk(disk_file(p))]), False, 0])
             for p in (twins.ours.paths, twins.real.paths)]
    assert our_calls(twins.ours, calls[0]) == real_calls(twins.real.paths, calls[1]) == [[True, None]]
    ours, real = log_files(twins.ours.paths), log_files(twins.real.paths)
    pattern = re.compile(rf"add-noop-{re.escape(INSTANCE)}-\d{{4}}-\d\d-\d\d_\d\d_\d\d_\d\d\.log")
    assert len(ours) == len(real) == 1 and pattern.fullmatch(ours[0]) and pattern.fullmatch(real[0])


@requires_real_ganeti
def test_instance_os_add_gives_create_the_documented_environment_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: write_os(p, "dump", variants="alpha\nbeta\n",
                                   parameters="dhcp d\nroot-size r\nsecret s\n", create=DUMP_ENV))
    calls = [("instance_os_add", [rich_instance(p, "dump+beta"), True, 1])
             for p in (twins.ours.paths, twins.real.paths)]
    assert our_calls(twins.ours, calls[0]) == real_calls(twins.real.paths, calls[1]) == [[True, None]]
    ours_log, real_log = (Path(p.log_dir, "os", log_files(p)[0]).read_text().replace(p.root, "<ROOT>")
                          for p in (twins.ours.paths, twins.real.paths))
    assert ours_log == real_log
    env = dict(line.split("=", 1) for line in ours_log.splitlines())
    assert env["OS_API_VERSION"] == "20" and env["OS_NAME"] == "dump" and env["OS_VARIANT"] == "beta"
    assert env["INSTANCE_NAME"] == INSTANCE and env["INSTANCE_OS"] == "dump+beta"
    assert env["INSTANCE_REINSTALL"] == "1" and env["DEBUG_LEVEL"] == "1" and env["HYPERVISOR"] == "fake"
    assert env["OSP_DHCP"] == "yes" and env["OSP_ROOT_SIZE"] == "8" and env["OSP_SECRET"] == "s3cr3t"
    assert env["DISK_COUNT"] == "1" and env["DISK_0_ACCESS"] == "rw"
    assert env["DISK_0_PATH"] == f"<ROOT>/srv/ganeti/file-storage/{INSTANCE}/disk0"
    assert env["DISK_0_FRONTEND_TYPE"] == "paravirtual" and env["DISK_0_BACKEND_TYPE"] == "file:loop"
    assert env["NIC_COUNT"] == "2" and env["NIC_0_MAC"] == "aa:00:00:11:22:33"
    assert env["NIC_0_MODE"] == "bridged" and env["NIC_0_BRIDGE"] == env["NIC_0_LINK"] == "br0"
    assert env["NIC_1_IP"] == "192.0.2.10" and "NIC_1_BRIDGE" not in env
    assert env["NIC_1_NETWORK_SUBNET"] == "192.0.2.0/24" and env["NIC_1_FRONTEND_TYPE"] == "e1000"
    assert env["INSTANCE_BE_maxmem"] == "128" and env["INSTANCE_HV_disk_type"] == "paravirtual"


@requires_real_ganeti
def test_instance_os_add_failure_quotes_the_log_tail_like_ganeti(twins: Twins) -> None:
    noisy = "#!/bin/sh\nfor i in $(seq 1 30); do echo \"line $i\ttab\"; done\necho oops >&2\nexit 3\n"
    twins.setup(lambda p: write_os(p, "broken", create=noisy))
    calls = [("instance_os_add", [instance("broken", [file_disk(disk_file(p))]), False, 0])
             for p in (twins.ours.paths, twins.real.paths)]
    ours = our_calls(twins.ours, calls[0])
    assert ours == real_calls(twins.real.paths, calls[1])
    ok, message = ours[0]
    assert not ok
    assert message.startswith("OS create script failed (exited with exit code 3),"
                              " last lines in the log file:\n")
    assert message.splitlines()[1:] == [f"line {i}\\ttab" for i in range(12, 31)] + ["oops"]


@requires_real_ganeti
def test_instance_os_add_without_the_disk_or_the_os_fails_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: link_os(p, NOOP))
    calls = [[("instance_os_add", [instance("noop", [file_disk(disk_file(p, create=False))]), False, 0]),
              ("instance_os_add", [instance("nosuch", []), False, 0])]
             for p in (twins.ours.paths, twins.real.paths)]
    ours = our_calls(twins.ours, *calls[0])
    assert ours == real_calls(twins.real.paths, *calls[1])
    assert ours[0][1].startswith("Block device '<Disk(type=file") and ours[0][1].endswith("is not set up")
    assert ours[1] == [False, "Directory for OS nosuch not found in search path"]


def test_instance_os_add_with_tiny_writes_the_boot_sector_and_the_name(ctx: NodeContext) -> None:
    link_os(ctx.paths, TINY)
    disk = disk_file(ctx.paths)
    os_backend.instance_os_add(ctx, instance("tiny+default", [file_disk(disk)]), False, 0)
    data = Path(disk).read_bytes()
    sector = (TINY / "bootsector.bin").read_bytes()
    assert data[:NAME_OFFSET] == sector[:NAME_OFFSET]
    assert data[NAME_OFFSET:NAME_OFFSET + len(INSTANCE) + 1] == INSTANCE.encode() + b"\0"
    assert data[BOOT_SIGNATURE_OFFSET:512] == b"\x55\xaa"
    assert len(data) == 1024 * 1024  # the rest of the disk is untouched


def test_instance_os_add_with_tiny_and_no_disk_fails_with_the_scripts_reason(ctx: NodeContext) -> None:
    link_os(ctx.paths, TINY)
    ok, message = our_call(os_backend.instance_os_add, ctx, instance("tiny", []), False, 0)
    assert not ok
    assert "tiny: instance inst1.example.com has no disk with a path (DISK_COUNT=0)" in message


# -- instance_run_rename -------------------------------------------------------------------

@requires_real_ganeti
def test_instance_run_rename_gives_the_old_name_and_logs_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: write_os(p, "dump", rename=DUMP_ENV))
    calls = [("instance_run_rename", [instance("dump", [file_disk(disk_file(p))]), "old.example.com", 0])
             for p in (twins.ours.paths, twins.real.paths)]
    assert our_calls(twins.ours, calls[0]) == real_calls(twins.real.paths, calls[1]) == [[True, None]]
    names = [log_files(p) for p in (twins.ours.paths, twins.real.paths)]
    assert all(n[0].startswith(f"rename-dump-old.example.com-{INSTANCE}-") for n in names)
    ours_log, real_log = (Path(p.log_dir, "os", n[0]).read_text().replace(p.root, "<ROOT>")
                          for p, n in zip((twins.ours.paths, twins.real.paths), names, strict=True))
    assert ours_log == real_log
    assert "OLD_INSTANCE_NAME=old.example.com\n" in ours_log


def test_instance_run_rename_with_tiny_rewrites_the_name_in_the_boot_sector(ctx: NodeContext) -> None:
    link_os(ctx.paths, TINY)
    disk = disk_file(ctx.paths)
    old = "a-much-longer-name.example"
    os_backend.instance_os_add(ctx, instance("tiny", [file_disk(disk)], name=old), False, 0)
    os_backend.instance_run_rename(ctx, instance("tiny", [file_disk(disk)], name="b.ex"), old, 0)
    area = Path(disk).read_bytes()[NAME_OFFSET:NAME_OFFSET + 256]
    assert area == b"b.ex" + b"\0" * 252


# -- os_export -----------------------------------------------------------------------------

def _archive(path: str) -> tuple[list[str], str]:
    with tarfile.open(path) as tar:
        names = sorted(n.removeprefix("./") for n in tar.getnames() if n not in (".", "./"))
        member = tar.extractfile("./environment")
        assert member is not None
        return names, member.read().decode()


@requires_real_ganeti
def test_os_export_packs_the_definition_and_the_environment_like_ganeti(twins: Twins) -> None:
    twins.setup(lambda p: link_os(p, TINY))
    override = {"DISK_0_PATH": "/dev/vda", "EXTRA": "1"}
    calls = [("os_export", [rich_instance(p, "tiny+default"), override])
             for p in (twins.ours.paths, twins.real.paths)]
    [[ok, ours]] = our_calls(twins.ours, calls[0])
    [[real_ok, real]] = real_calls(twins.real.paths, calls[1])
    assert ok and real_ok and ours.endswith(".tgz") and real.endswith(".tgz")
    ours_names, ours_env = _archive(ours.replace("<ROOT>", twins.ours.paths.root))
    real_names, real_env = _archive(real.replace("<ROOT>", twins.real.paths.root))
    assert ours_names == real_names
    assert "os/create" in ours_names and "os/bootsector.bin" in ours_names and "environment" in ours_names
    assert (ours_env.replace(twins.ours.paths.root, "<ROOT>")
            == real_env.replace(twins.real.paths.root, "<ROOT>"))
    assert "DISK_0_PATH=/dev/vda\n" in ours_env and ours_env.endswith("EXTRA=1\n")
    assert ours.startswith("<ROOT>/tmp/")  # inside the node root


def test_os_export_of_a_missing_os_fails(ctx: NodeContext) -> None:
    assert our_call(os_backend.os_export, ctx, instance("nosuch", []), {}) == [
        False, "Directory for OS nosuch not found in search path"]
    assert not os.path.isdir(ctx.paths.under_root("/tmp")) or not os.listdir(ctx.paths.under_root("/tmp"))


def test_tiny_is_a_valid_os_definition(ctx: NodeContext) -> None:
    link_os(ctx.paths, TINY)
    assert os_backend.os_validate(ctx, True, "tiny+default", ["parameters"], {}, False) is True
