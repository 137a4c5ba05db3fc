"""Our gnt-instance (and gnt-node migrate/tags) against Debian's real tools.

Part 1 (no master needed): each command line runs through Debian's
gnt-instance/gnt-node and ours against the recording LUXI test server of
test_gnt_tools (canned answers); both must send byte-identical requests
(reason timestamps aside, so the opcodes are equal) and print the same
stdout, stderr and exit code -- for every command and its options, bad
input (refused before anything is sent), --submit, failing jobs, the
multi-instance selections and JobExecutor output, and the confirmations
(on a pseudo-terminal as the controlling terminal, answered y or n).

Part 2 (needs root, `ip` and Debian's ganeti): end to end on a cluster of
ours (tests/instance_cluster.py, 127.0.17.x, cluster IP 127.0.17.100), our
gnt-instance against our master: add (the config equals that of the same
add by Debian's tool), list/info (output equal to Debian's for the same
master state), startup/shutdown/reboot, tags, modify, disks, reinstall,
rename, migrate/failover and gnt-node migrate of a sharedfile instance,
remove, and the kvm serial console run by our tool showing the guest boot.
These tests run in file order and share the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster_support import needs_cluster  # isort: skip
from test_gnt_tools import (  # isort: skip
    ServerThread,
    base,
    compare,
    requests_of,
    run_ours,
    sample_path,
    server,
)

__all__ = ["base", "server"]

LOG_TS = [1795312878, 773661]
BIN_DIR = Path(__file__).resolve().parent.parent / ".venv" / "bin"


def job_script(job_id: int, result: Any, log: list[str] | None = None) -> dict[str, list[Any]]:
    """Answers for one job that logs `log` and ends with `result`."""
    entries = [[i + 1, LOG_TS, "message", text] for i, text in enumerate(log or [])]
    return {
        "SubmitJob": [job_id],
        "WaitForJobChange": [[["running"], entries], [["success"], []]] if entries else [[["success"], []]],
        "QueryJobs": [[["success", ["success"], [result]]]],
    }


def ops_of(requests: list[bytes]) -> list[dict[str, Any]]:
    """The opcodes of the SubmitJob/SubmitManyJobs requests."""
    out = []
    for method, args in requests_of(requests):
        if method == "SubmitJob":
            out.extend(args[0])
        elif method == "SubmitManyJobs":
            out.extend(op for job in args[0] for op in job)
    return out


# -- add ------------------------------------------------------------------------------------------

ADD_LOG = ["* creating instance disks...", "adding instance inst1.example.com to cluster config",
           "* running the instance OS create scripts...", "* starting instance..."]


@pytest.mark.parametrize("args", [
    ["-t", "file", "-o", "noop", "-n", "node2", "--disk", "0:size=1G", "inst1"],
    ["-t", "plain", "-o", "debootstrap+default", "-s", "10G", "-n", "node1.example.com", "inst2.example.com"],
    ["-t", "drbd", "-o", "noop", "-n", "node1:node2", "--disk", "0:size=1G,mode=ro,name=d0",
     "--disk", "2:size=512,spindles=2", "--net", "0:mode=routed,ip=192.0.2.10", "--net", "1:link=br1",
     "-H", "kvm:kernel_path=,acpi=false,cpu_cores=2,no_use_chroot",
     "-B", "memory=128M,vcpus=2,auto_balance=false",
     "-O", "a=b,c=d", "--no-start", "--no-install", "--no-ip-check", "--no-name-check", "--ignore-ipolicy",
     "--tags", "t1,t2", "--no-wait-for-sync", "--no-conflicts-check", "-g", "default", "inst1"],
    ["-t", "file", "-o", "noop", "-I", "hail", "--disk", "0:size=1G", "--file-storage-dir", "sub/dir",
     "--file-driver", "loop", "--no-nics", "-H", "fake", "--os-parameters-private", "p=1",
     "--os-parameters-secret", "s=2", "--force-variant", "--opportunistic-locking", "-c", "yes",
     "--helper-startup-timeout", "30", "--helper-shutdown-timeout", "40", "--dry-run", "--priority", "low",
     "--reason", "why", "inst1"],
    ["-t", "diskless", "-o", "noop", "-n", "node2", "--forthcoming", "inst1"],
    ["-t", "sharedfile", "-o", "noop", "-n", "node2", "--disk", "0:adopt=/x", "--commit", "inst1"],
])
def test_add_sends_debians_opcode_and_prints_the_job_log(server: ServerThread, args: list[str]) -> None:
    script = job_script(5, ["node2.example.com"], ADD_LOG)
    ours, requests = compare(server, "gnt-instance", ["add", *args], script)
    assert ours.code == 0, ours.stderr
    (op,) = ops_of(requests)
    assert op["OP_ID"] == "OP_INSTANCE_CREATE" and op["instance_name"] == args[-1]
    assert "* creating instance disks..." in ours.stdout


def test_add_converts_sizes_and_parameter_types_like_ganeti(server: ServerThread) -> None:
    args = ["add", "-t", "file", "-o", "noop", "-n", "n2", "--disk", "0:size=1.5G", "--disk", "1:size=3",
            "-B", "memory=1G,vcpus=2", "-H", "kvm:acpi=false,kernel_path=", "--net", "0:mode=routed", "inst1"]
    _, requests = compare(server, "gnt-instance", args, job_script(5, []))
    (op,) = ops_of(requests)
    assert op["disks"] == [{"size": 1536}, {"size": 4}]
    assert op["beparams"] == {"memory": 1024, "vcpus": 2}
    assert (op["hypervisor"], op["hvparams"]) == ("kvm", {"acpi": False, "kernel_path": ""})
    assert op["nics"] == [{"mode": "routed"}]


@pytest.mark.parametrize("args", [
    ["-t", "file", "-o", "noop", "inst1"],                                      # no disk information
    ["-t", "diskless", "-o", "noop", "-s", "1G", "inst1"],                      # diskless with a disk
    ["-t", "file", "-o", "noop", "-s", "1G", "--disk", "0:size=1G", "inst1"],   # both -s and --disk
    ["-t", "file", "-o", "noop", "--disk", "x:size=1G", "inst1"],               # bad disk index
    ["-t", "file", "-o", "noop", "--disk", "0:mode=rw", "inst1"],               # no size
    ["-t", "file", "-o", "noop", "--disk", "0:size=1G,adopt=x", "inst1"],       # size and adopt
    ["-t", "file", "-o", "noop", "--disk", "0:size=1Q", "inst1"],               # bad unit
    ["-t", "file", "-o", "noop", "--disk", "0:size=1G", "-B", "memory=lots", "inst1"],
    ["-t", "file", "-o", "noop", "--disk", "0:size=1G", "-B", "nosuch=1", "inst1"],
    ["-t", "file", "-o", "noop", "--disk", "0:size=1G", "-H", "kvm:acpi=maybe", "inst1"],
    ["-t", "file", "-o", "noop", "--disk", "0:size=1G", "--net", "y:mode=routed", "inst1"],
    ["-t", "file", "-o", "noop", "--disk", "0:size=1G", "--net", "0:nosuch=1", "inst1"],
    ["-t", "file", "-o", "noop", "--disk", "0:size=1G", "-B", "a=1,a=2", "inst1"],   # duplicate key
    ["-t", "file", "-o", "noop", "--disk", "0:size=1G", "-c", "perhaps", "inst1"],  # bad boolean
    ["-t", "file", "-o", "noop", "--disk", "no_x:size=1", "inst1"],
    ["-t", "file", "-o", "noop", "-s", "lots", "inst1"],                        # bad -s unit: usage error
    ["-t", "file", "-o", "noop", "-s", "1G", "--forthcoming", "--commit", "inst1"],
    ["-t", "file", "-o", "noop", "-s", "1G"],                                   # no name
])
def test_add_bad_input_is_refused_before_anything_is_sent(server: ServerThread, args: list[str]) -> None:
    ours, requests = compare(server, "gnt-instance", ["add", *args], job_script(5, []))
    assert ours.code != 0
    assert requests == []


def test_add_submit_only_prints_the_job_id(server: ServerThread) -> None:
    ours, requests = compare(server, "gnt-instance", ["add", "--submit", "-t", "diskless", "-o", "noop",
                                                      "-n", "node2", "inst1"], job_script(5, []))
    assert (ours.code, ours.stderr) == (0, "JobID: 5\n")
    assert [m for m, _ in requests_of(requests)] == ["SubmitJob"]


def test_add_failing_job_prints_the_masters_error(server: ServerThread) -> None:
    script: dict[str, list[Any]] = {"SubmitJob": [7], "WaitForJobChange": [[["error"], []]],
              "QueryJobs": [[["error", ["error"], [["OpPrereqError", ["Instance 'inst1' is already in the "
                                                                      "cluster", "wrong_input"]]]]]]}
    ours, _ = compare(server, "gnt-instance", ["add", "-t", "diskless", "-o", "noop", "-n", "n2", "inst1"],
                      script)
    assert ours.code == 1 and "already in the cluster" in ours.stderr


def test_add_unknown_disk_template_is_a_usage_error(server: ServerThread) -> None:
    # Debian lists the choices in its frozenset's (hash seed dependent) order; ours in Ganeti's list order.
    server.reset({})
    ours = run_ours("gnt-instance", ["add", "-t", "nosuch", "-o", "noop", "-s", "1G", "inst1"],
                    server.paths.root)
    assert ours.code == 2 and "option -t: invalid choice: 'nosuch'" in ours.stderr
    assert server.server.recorded == []


# -- list / list-fields ---------------------------------------------------------------------------


def field_defs(names: list[str]) -> list[dict[str, Any]]:
    known = {f["name"]: f for f in json.loads(sample_path("real_query_fields.json").read_text())["instance"]}
    return [known.get(name, {"name": name, "title": name, "kind": "unknown",
                             "doc": f"Unknown field '{name}'"}) for name in names]


def instance_query(names: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"fields": field_defs(names), "data": rows}


DEFAULT_FIELDS = ["name", "hypervisor", "os", "pnode", "status", "oper_ram"]
LIST_ROWS = [
    [[0, "inst1.example.com"], [0, "kvm"], [0, "tiny"], [0, "node2.example.com"], [0, "running"], [0, 128]],
    [[0, "inst10.example.com"], [0, "fake"], [0, "noop"], [0, "node1.example.com"], [0, "ADMIN_down"],
     [2, None]],
    [[0, "inst2.example.com"], [0, "kvm"], [0, "tiny"], [0, "node3.example.com"], [0, "ERROR_nodeoffline"],
     [4, None]],
    [[0, "big.example.com"], [0, "fake"], [0, "noop"], [0, "node3.example.com"], [0, "running"], [0, 4096]],
]


@pytest.mark.parametrize("args", [[], ["--no-headers"], ["--separator", "|"], ["--units", "g"], ["-v"],
                                  ["--units", "m", "--separator", ","], ["inst1", "inst2"], ["inst*"],
                                  ["-F", "status == \"running\""], ["name =~ /inst/"]])
def test_list_default_fields_like_debian(server: ServerThread, args: list[str]) -> None:
    ours, requests = compare(server, "gnt-instance", ["list", *args],
                             {"Query": [instance_query(DEFAULT_FIELDS, LIST_ROWS)]})
    assert ours.code == 0
    ((method, qargs),) = requests_of(requests)
    assert method == "Query" and qargs[:2] == ["instance", DEFAULT_FIELDS]


def test_list_selected_fields_with_list_values_are_comma_joined(server: ServerThread) -> None:
    fields = ["name", "tags", "disk.sizes", "nic.ips", "snodes", "admin_up", "ctime", "be/vcpus"]
    rows = [[[0, "inst1"], [0, ["b", "a"]], [0, [1024, 512]], [0, ["192.0.2.1", None]], [0, []], [0, True],
             [0, 1795312878.5], [0, 2]]]
    ours, requests = compare(server, "gnt-instance", ["list", "-o", ",".join(fields)],
                             {"Query": [instance_query(fields, rows)]})
    assert "b,a" in ours.stdout and "1024,512" in ours.stdout
    assert requests_of(requests)[0][1][1] == fields


def test_list_added_fields_and_unknown_fields(server: ServerThread) -> None:
    fields = [*DEFAULT_FIELDS, "nosuch"]
    rows = [[*row, [1, None]] for row in LIST_ROWS]
    ours, _ = compare(server, "gnt-instance", ["list", "-o", "+nosuch"],
                      {"Query": [instance_query(fields, rows)]})
    assert ours.code == 14 and "Warning: Queried for unknown fields nosuch" in ours.stderr


def test_list_bad_filter_is_refused_like_debian(server: ServerThread) -> None:
    ours, requests = compare(server, "gnt-instance", ["list", "-F", "name == "], {})
    assert ours.code == 1 and requests == []


def test_list_fields_like_debian(server: ServerThread) -> None:
    defs = field_defs(["name", "status", "oper_ram", "nosuch"])
    ours, requests = compare(server, "gnt-instance", ["list-fields", "name", "status", "oper_ram", "nosuch"],
                             {"QueryFields": [{"fields": defs}]})
    assert ours.code == 14
    assert requests_of(requests) == [("QueryFields", ["instance", ["name", "status", "oper_ram", "nosuch"]])]
    compare(server, "gnt-instance", ["list-fields", "--separator=:", "--no-headers"],
            {"QueryFields": [{"fields": field_defs(["name", "os"])}]})


# -- info -----------------------------------------------------------------------------------------


def info_answer(name: str = "inst1.example.com", **changes: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": name, "uuid": "3b1d4e0c-0000-4000-8000-000000000001", "os": "tiny", "hypervisor": "kvm",
        "disk_template": "file", "pnode": "node2.example.com", "config_state": "up", "run_state": "up",
        "serial_no": 3, "ctime": 1795312878.25, "mtime": 1795312999.5, "pnode_group_name": "default",
        "pnode_group_uuid": "g-uuid", "snodes": [], "snodes_group_names": [], "snodes_group_uuids": [],
        "os_instance": {}, "os_actual": {"a": "b"}, "network_port": None,
        "hv_instance": {"kernel_path": ""},
        "hv_actual": {"kernel_path": "", "acpi": True, "vnc_bind_address": "", "cpu_cores": 0},
        "be_instance": {"maxmem": 128}, "be_actual": {"maxmem": 128, "minmem": 128, "vcpus": 1,
                                                      "auto_balance": True},
        "nics": [["nic0", "nic-uuid", "192.0.2.10", "aa:00:00:11:22:33", "routed", "", "", None, None]],
        "disks": [{"iv_name": "disk/0", "dev_type": "file", "size": 1024, "mode": "rw", "spindles": None,
                   "logical_id": ["loop", "/srv/ganeti/file-storage/inst1/disk0"], "drbd_info": None,
                   "pstatus": ["/srv/ganeti/file-storage/inst1/disk0", None, None, None, None, False, 1],
                   "sstatus": None, "children": [], "name": None, "uuid": "disk-uuid"}],
    }
    info.update(changes)
    return info


def test_info_prints_the_instance_like_debian(server: ServerThread) -> None:
    script = job_script(9, {"inst1.example.com": info_answer()})
    ours, requests = compare(server, "gnt-instance", ["info", "inst1"], script)
    assert ours.code == 0
    assert "Instance name: inst1.example.com" in ours.stdout
    (op,) = ops_of(requests)
    assert (op["OP_ID"], op["instances"], op["static"], op["use_locking"]) == (
        "OP_INSTANCE_QUERY_DATA", ["inst1"], False, True)


def test_info_of_several_instances_with_drbd_vnc_and_static(server: ServerThread) -> None:
    drbd_child = {"iv_name": None, "dev_type": "plain", "size": 1024, "mode": "rw", "spindles": None,
                  "logical_id": ["xenvg", "lv0"], "drbd_info": None, "pstatus": None, "sstatus": None,
                  "children": [], "name": None, "uuid": "c-uuid"}
    drbd = {"iv_name": "disk/0", "dev_type": "drbd", "size": 2048, "mode": "rw", "spindles": 2,
            "logical_id": ["node2", "node3", 11000, 0, 0, "secret"],
            "drbd_info": {"primary_node": "node2", "primary_minor": 0, "secondary_node": "node3",
                          "secondary_minor": 1, "port": 11000},
            "pstatus": ["/dev/drbd0", 147, 0, 45.5, 120, True, 3],
            "sstatus": ["/dev/drbd1", 147, 1, None, None, False, 4],
            "children": [drbd_child, drbd_child], "name": "data", "uuid": "d-uuid"}
    second = info_answer("inst2.example.com", disk_template="drbd", disks=[drbd], run_state=None,
                         snodes=["node3.example.com"], snodes_group_names=["default"],
                         snodes_group_uuids=["g-uuid"], network_port=11005,
                         hv_actual={"vnc_bind_address": "0.0.0.0"}, hv_instance={},
                         nics=[[None, "n-uuid", None, "aa:00:00:00:00:01", "bridged", "br0", "", "net-uuid",
                                {"name": "net1"}]])
    script = job_script(9, {"inst1.example.com": info_answer(), "inst2.example.com": second})
    ours, requests = compare(server, "gnt-instance", ["info", "-s", "inst1", "inst2"], script)
    assert "*RECOVERING* 45.50%, ETA 120s, status *DEGRADED* *UNCERTAIN STATE*" in ours.stdout
    (op,) = ops_of(requests)
    assert (op["static"], op["use_locking"]) == (True, False)
    third = info_answer(hv_actual={"vnc_bind_address": "127.0.0.1"}, network_port=5901)
    compare(server, "gnt-instance", ["info", "--all"], job_script(9, {"x": third}))


@pytest.mark.parametrize("args", [["info"], ["info", "--all", "inst1"]])
def test_info_without_a_selection_is_refused(server: ServerThread, args: list[str]) -> None:
    ours, requests = compare(server, "gnt-instance", args, {})
    assert ours.code == 1 and requests == []


def test_info_with_no_answer_says_no_instances(server: ServerThread) -> None:
    ours, _ = compare(server, "gnt-instance", ["info", "--all"], job_script(9, {}))
    assert (ours.code, ours.stdout) == (1, "No instances.\n")


# -- startup / shutdown / reboot (GenericManyOps) -------------------------------------------------


def _single_flow(job_id: int, result: Any = None, status: str = "success") -> dict[str, list[Any]]:
    return {
        "SubmitManyJobs": [[[True, job_id]]],
        "QueryJobs": [[["running"]], [[status, [status], [result]]]],
        "WaitForJobChange": [[[status], []]],
    }


@pytest.mark.parametrize(("command", "extra", "op_id"), [
    ("startup", [], "OP_INSTANCE_STARTUP"),
    ("start", ["--force", "--paused", "--no-remember", "--ignore-offline", "-H", "kernel_args=x",
               "-B", "memory=256", "--priority", "high"], "OP_INSTANCE_STARTUP"),
    ("shutdown", [], "OP_INSTANCE_SHUTDOWN"),
    ("stop", ["--timeout", "5", "--no-remember", "--force", "--dry-run"], "OP_INSTANCE_SHUTDOWN"),
    ("reboot", [], "OP_INSTANCE_REBOOT"),
    ("reboot", ["-t", "soft", "--shutdown-timeout", "7", "--ignore-secondaries"], "OP_INSTANCE_REBOOT"),
    ("reboot", ["--type", "full"], "OP_INSTANCE_REBOOT"),
])
def test_single_instance_operation_like_debian(server: ServerThread, command: str, extra: list[str],
                                               op_id: str) -> None:
    script = {"QueryInstances": [[["inst1.example.com"]]], **_single_flow(21)}
    ours, requests = compare(server, "gnt-instance", [command, *extra, "inst1"], script)
    assert ours.code == 0, ours.stderr
    assert ours.stdout == "Waiting for job 21 for inst1.example.com ...\n"
    methods = [m for m, _ in requests_of(requests)]
    assert methods[:2] == ["QueryInstances", "SubmitManyJobs"]
    assert requests_of(requests)[0][1] == [["inst1"], ["name"], False]
    (op,) = ops_of(requests)
    assert op["OP_ID"] == op_id and op["instance_name"] == "inst1.example.com"


def test_startup_of_several_instances_needs_force_multiple(server: ServerThread) -> None:
    script = {"QueryInstances": [[["inst1.example.com"], ["inst2.example.com"]]]}
    ours, requests = compare(server, "gnt-instance", ["startup", "inst1", "inst2"], script)
    assert ours.code == 1 and [m for m, _ in requests_of(requests)] == ["QueryInstances"]


def test_startup_all_with_force_multiple_follows_each_job(server: ServerThread) -> None:
    script: dict[str, list[Any]] = {
        "QueryInstances": [[["inst1.example.com"], ["inst2.example.com"]]],
        "SubmitManyJobs": [[[True, 30], [False, "Queue full"]]],
        "QueryJobs": [[["running"]], [["success", ["success"], [None]]]],
        "WaitForJobChange": [[["running"], [[1, LOG_TS, "message", "Starting"]]], [["success"], []]],
    }
    ours, requests = compare(server, "gnt-instance", ["startup", "--all", "--force-multiple"], script)
    assert ours.code == 1
    assert "Submitted jobs 30" in ours.stdout and "Failed to submit job for inst2.example.com" in ours.stderr
    assert requests_of(requests)[0] == ("QueryInstances", [[], ["name"], False])


def test_shutdown_failing_job_is_reported_like_debian(server: ServerThread) -> None:
    script = {"QueryInstances": [[["inst1.example.com"]]],
              **_single_flow(22, ["OpExecError", ["Could not shutdown instance"]], "error")}
    ours, _ = compare(server, "gnt-instance", ["shutdown", "inst1"], script)
    assert ours.code == 1 and "Job 22 for inst1.example.com has failed" in ours.stderr


@pytest.mark.parametrize("args", [["--node", "node2"], ["--primary", "node2"], ["--secondary", "node2"],
                                  ["--node-tags", "t"], ["--tags", "t"], ["--pri-node-tags", "t"]])
def test_selection_by_node_and_tags_like_debian(server: ServerThread, args: list[str]) -> None:
    script = {"QueryNodes": [[["node2.example.com", ["inst1.example.com"], ["inst3.example.com"], ["t"]]]],
              "QueryInstances": [[["inst1.example.com", ["t"]], ["inst2.example.com", []]]],
              **_single_flow(23)}
    ours, _ = compare(server, "gnt-instance", ["reboot", "--force-multiple", *args], script)
    assert ours.code == 0


def test_shutdown_submit_prints_the_job_ids(server: ServerThread) -> None:
    script = {"QueryInstances": [[["inst1.example.com"]]], **_single_flow(24)}
    ours, requests = compare(server, "gnt-instance", ["shutdown", "--submit", "inst1"], script)
    assert ours.stdout == "24: inst1.example.com\n"
    assert [m for m, _ in requests_of(requests)] == ["QueryInstances", "SubmitManyJobs"]


@pytest.mark.parametrize("args", [["startup", "nosuch"], ["shutdown", "--all"], ["reboot"],
                                  ["startup", "--all", "x"]])
def test_selection_matching_nothing(server: ServerThread, args: list[str]) -> None:
    _, requests = compare(server, "gnt-instance", args, {"QueryInstances": [[]]})
    assert [m for m, _ in requests_of(requests)] in (["QueryInstances"], [])


# -- remove ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["-f", "inst1"], ["-f", "--ignore-failures", "--shutdown-timeout", "9",
                                                    "inst1"], ["inst1"], ["--submit", "-f", "inst1"]])
def test_remove_like_debian(server: ServerThread, args: list[str]) -> None:
    script = {"QueryInstances": [[["inst1.example.com"]]], **job_script(25, None)}
    ours, requests = compare(server, "gnt-instance", ["remove", *args], script)
    if "-f" in args:
        assert ours.code == 0
        (op,) = ops_of(requests)
        assert op["OP_ID"] == "OP_INSTANCE_REMOVE"
    else:  # no terminal to confirm on: nothing is submitted
        assert ours.code == 1 and [m for m, _ in requests_of(requests)] == ["QueryInstances"]


def test_remove_unknown_instance_without_force(server: ServerThread) -> None:
    ours, _ = compare(server, "gnt-instance", ["remove", "nosuch"], {"QueryInstances": [[[None]]]})
    assert ours.code == 1 and "Instance 'nosuch' does not exist" in ours.stderr


# -- other single-opcode commands -----------------------------------------------------------------


@pytest.mark.parametrize(("args", "op_id", "result"), [
    (["activate-disks", "inst1"], "OP_INSTANCE_ACTIVATE_DISKS",
     [["node2.example.com", "disk/0", "/srv/x/disk0"]]),
    (["activate-disks", "--ignore-size", "--wait-for-sync", "inst1"], "OP_INSTANCE_ACTIVATE_DISKS", []),
    (["deactivate-disks", "inst1"], "OP_INSTANCE_DEACTIVATE_DISKS", None),
    (["deactivate-disks", "-f", "--dry-run", "inst1"], "OP_INSTANCE_DEACTIVATE_DISKS", None),
    (["migrate", "-f", "inst1"], "OP_INSTANCE_MIGRATE", None),
    (["migrate", "-f", "--non-live", "-n", "node3", "--cleanup", "--allow-failover", "--ignore-ipolicy",
      "--ignore-hvversions", "--no-runtime-changes", "inst1"], "OP_INSTANCE_MIGRATE", None),
    (["migrate", "-f", "--migration-mode", "live", "-I", "hail", "inst1"], "OP_INSTANCE_MIGRATE", None),
    (["failover", "-f", "inst1"], "OP_INSTANCE_FAILOVER", None),
    (["failover", "-f", "-n", "node3", "--shutdown-timeout", "30", "--ignore-ipolicy", "--cleanup", "inst1"],
     "OP_INSTANCE_FAILOVER", None),
    (["grow-disk", "inst1", "0", "1G"], "OP_INSTANCE_GROW_DISK", None),
    (["grow-disk", "--absolute", "--no-wait-for-sync", "--ignore-ipolicy", "inst1", "1", "2.5g"],
     "OP_INSTANCE_GROW_DISK", None),
    (["rename", "inst1", "inst9"], "OP_INSTANCE_RENAME", "inst9.example.com"),
    (["rename", "--no-ip-check", "--force", "--no-name-check", "inst1", "inst9"], "OP_INSTANCE_RENAME",
     "inst9"),
    (["reinstall", "-f", "inst1"], "OP_INSTANCE_REINSTALL", None),
    (["reinstall", "-f", "-o", "tiny", "-O", "x=1", "--os-parameters-private", "y=2", "--force-variant",
      "inst1"], "OP_INSTANCE_REINSTALL", None),
    (["add-tags", "inst1", "a", "b"], "OP_TAGS_SET", None),
    (["move", "-f", "-n", "node3", "--compress", "gzip", "--shutdown-timeout", "3", "--ignore-consistency",
      "inst1"], "OP_INSTANCE_MOVE", None),
    (["replace-disks", "-p", "--disks", "0,2", "inst1"], "OP_INSTANCE_REPLACE_DISKS", None),
    (["replace-disks", "-s", "--early-release", "inst1"], "OP_INSTANCE_REPLACE_DISKS", None),
    (["replace-disks", "-a", "inst1"], "OP_INSTANCE_REPLACE_DISKS", None),
    (["replace-disks", "-n", "node3", "--ignore-ipolicy", "inst1"], "OP_INSTANCE_REPLACE_DISKS", None),
    (["replace-disks", "-I", "hail", "inst1"], "OP_INSTANCE_REPLACE_DISKS", None),
    (["recreate-disks", "inst1"], "OP_INSTANCE_RECREATE_DISKS", None),
    (["recreate-disks", "--disk", "0:size=2G,spindles=1", "--disk", "1:mode=ro", "-n", "node2:node3",
      "inst1"],
     "OP_INSTANCE_RECREATE_DISKS", None),
    (["remove-tags", "--priority", "low", "inst1", "a"], "OP_TAGS_DEL", None),
])
def test_opcode_commands_like_debian(server: ServerThread, args: list[str], op_id: str, result: Any) -> None:
    script = {"QueryInstances": [[["inst1.example.com"]]], **job_script(26, result)}
    if args[0] == "reinstall":  # one job per instance, chosen with QueryJobs (cli.JobExecutor)
        script.update(_single_flow(26, result))
    ours, requests = compare(server, "gnt-instance", args, script)
    assert ours.code == 0, ours.stderr
    (op,) = ops_of(requests)
    assert op["OP_ID"] == op_id


@pytest.mark.parametrize("args", [
    ["migrate", "inst1"], ["failover", "inst1"], ["reinstall", "inst1"],
    ["rename", "--no-name-check", "a", "b"],
    ["migrate", "-f", "-n", "node3", "-I", "hail", "inst1"], ["migrate", "-f", "--non-live",
                                                               "--migration-mode", "live", "inst1"],
    ["failover", "-f", "-n", "node3", "-I", "hail", "inst1"], ["grow-disk", "inst1", "x", "1G"],
    ["grow-disk", "inst1", "0", "lots"], ["add-tags", "inst1"], ["remove-tags", "inst1"],
    ["reinstall", "-f", "inst1", "inst2"], ["move", "-n", "node3", "inst1"],
    ["replace-disks", "inst1"], ["replace-disks", "-p", "-s", "inst1"],
    ["replace-disks", "-a", "--disks", "0", "inst1"],
    ["replace-disks", "-p", "--disks", "0,x", "inst1"],
    ["recreate-disks", "-n", "node2", "-I", "hail", "inst1"],
    ["recreate-disks", "--disk", "0:spindles=x", "inst1"],
])
def test_confirmations_and_bad_input_like_debian(server: ServerThread, args: list[str]) -> None:
    script = {"QueryInstances": [[["inst1.example.com"], ["inst2.example.com"]]]}
    ours, requests = compare(server, "gnt-instance", args, script)
    assert ours.code == 1
    assert [m for m, _ in requests_of(requests)] in ([], ["QueryInstances"])


def test_list_tags_prints_them_sorted(server: ServerThread) -> None:
    ours, requests = compare(server, "gnt-instance", ["list-tags", "inst1"], {"QueryTags": [["b", "a", "c"]]})
    assert ours.stdout == "a\nb\nc\n"
    assert requests_of(requests) == [("QueryTags", ["instance", "inst1"])]


def test_add_tags_from_a_file(server: ServerThread, base: str) -> None:
    path = f"{base}/tags"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("x\n y \n")
    _, requests = compare(server, "gnt-instance", ["add-tags", "--from", path, "inst1", "a"],
                          job_script(3, None))
    (op,) = ops_of(requests)
    assert op["tags"] == ["a", "x", "y"]


# -- modify ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["-B", "memory=256M,vcpus=2"],
    ["-B", "vcpus=default"],
    ["-H", "kernel_args=ro console=ttyS0,acpi=false"],
    ["-H", "usb_devices=a b", "--hotplug-if-possible"],
    ["-O", "a=b", "-o", "tiny", "--force-variant"],
    ["--disk", "add:size=1G,mode=rw"],
    ["--disk", "1:add,size=2G", "--no-wait-for-sync"],
    ["--disk", "remove"],
    ["--disk", "0:remove", "--hotplug", "-f"],
    ["--disk", "0:mode=ro,name=x"],
    ["--net", "add:mode=routed,ip=192.0.2.9"],
    ["--net", "0:ip=none", "--hotplug", "--force"],
    ["--net", "remove"],
    ["--offline"], ["--online"],
    ["-m", "512"],
    ["--new-primary", "node3"],
    ["-t", "plain", "-n", "node3"],
    ["-t", "file", "--file-driver", "loop", "--file-storage-dir", "d"],
    ["-t", "ext", "-e", "provider=p"],
    ["-c", "no"],
    ["--ignore-ipolicy", "--no-conflicts-check", "-B", "minmem=64"],
])
def test_modify_like_debian(server: ServerThread, args: list[str]) -> None:
    result = [["be/memory", 256], ["hv/kernel_args", "ro"]]
    ours, requests = compare(server, "gnt-instance", ["modify", *args, "inst1"], job_script(31, result))
    assert ours.code == 0, ours.stderr
    assert "Modified instance inst1" in ours.stdout
    (op,) = ops_of(requests)
    assert op["OP_ID"] == "OP_INSTANCE_SET_PARAMS"


@pytest.mark.parametrize("args", [
    [],
    ["--disk", "add:mode=rw"],
    ["--disk", "0:add,remove"],
    ["--disk", "remove:size=1G"],
    ["--net", "0:modify", "--hotplug"],          # asks for confirmation: no terminal
    ["-t", "plain", "-e", "provider=p"],
    ["-t", "ext"],
    ["--file-driver", "loop", "-B", "vcpus=1"],
    ["-t", "ext", "-e", "size=3"],
    ["-B", "vcpus=x"],
    ["-H", "nosuch=1"],
])
def test_modify_bad_input_like_debian(server: ServerThread, args: list[str]) -> None:
    ours, requests = compare(server, "gnt-instance", ["modify", *args, "inst1"], job_script(31, []))
    assert ours.code == 1 and requests == []


def test_modify_with_an_empty_result_prints_nothing(server: ServerThread) -> None:
    ours, _ = compare(server, "gnt-instance", ["modify", "-B", "vcpus=2", "inst1"], job_script(31, []))
    assert (ours.code, ours.stdout) == (0, "")


# -- console --------------------------------------------------------------------------------------

SSH_CONSOLE = {"instance": "inst1.example.com", "kind": "ssh", "host": "node2.example.com", "user": "root",
               "command": ["/usr/bin/socat", "STDIO,raw,echo=0,escape=0x1d",
                           "UNIX-CONNECT:/var/run/ganeti/kvm-hypervisor/ctrl/inst1.example.com.serial"]}


@pytest.mark.parametrize("console", [
    SSH_CONSOLE,
    {**SSH_CONSOLE, "port": 2222, "command": "xm console inst1"},
    {"instance": "inst1.example.com", "kind": "vnc", "host": "node2", "port": 5901, "display": 1},
    {"instance": "inst1.example.com", "kind": "spice", "host": "node2", "port": 6000},
    {"instance": "inst1.example.com", "kind": "msg", "message": "No console here"},
])
def test_console_show_cmd_like_debian(server: ServerThread, console: dict[str, Any]) -> None:
    script: dict[str, list[Any]] = {"QueryConfigValues": [["cluster.example.com"]],
                                    "QueryInstances": [[[console, "running"]]]}
    ours, requests = compare(server, "gnt-instance", ["console", "--show-cmd", "inst1"], script)
    assert ours.code == 0 and ours.stdout
    assert requests_of(requests) == [("QueryConfigValues", [["cluster_name"]]),
                                     ("QueryInstances", [["inst1"], ["console", "oper_state"], False])]


@pytest.mark.parametrize("answer", [[], [[None, False]], [[None, True]]])
def test_console_of_a_stopped_or_unknown_instance(server: ServerThread, answer: list[Any]) -> None:
    script = {"QueryConfigValues": [["cluster.example.com"]], "QueryInstances": [answer]}
    ours, _ = compare(server, "gnt-instance", ["console", "inst1"], script)
    assert ours.code == 1


# -- command line handling ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["remove"], ["rename", "a"], ["grow-disk", "a", "0"], ["list", "--nosuch"],
                                  ["info", "-s", "--all", "x"]])
def test_usage_errors_like_debian(server: ServerThread, args: list[str]) -> None:
    _, requests = compare(server, "gnt-instance", args, {})
    assert requests == []


@pytest.mark.parametrize("args", [[], ["--help"], ["nosuch"]])
def test_usage_lists_the_commands_like_debian(server: ServerThread, args: list[str]) -> None:
    ours, requests = compare(server, "gnt-instance", args, {})
    assert ours.stdout.startswith("Usage: gnt-instance {command} [options...] [argument...]\n")
    assert requests == []


# -- gnt-node migrate and tags --------------------------------------------------------------------


def test_node_migrate_like_debian(server: ServerThread) -> None:
    pinst = ["inst2.example.com", "inst10.example.com"]
    script: dict[str, list[Any]] = {"QueryNodes": [[["node2.example.com", pinst]]],
              "SubmitJob": [40], "WaitForJobChange": [[["success"], []]],
              "QueryJobs": [[["success", ["success"], [{"jobs": [[True, 41], [True, 42]]}]]],
                            [["running"], ["running"]], [["success", ["success"], [None]]],
                            [["running"]], [["success", ["success"], [None]]]]}
    ours, requests = compare(server, "gnt-node", ["migrate", "-f", "--non-live", "-n", "node3", "node2"],
                             script)
    assert ours.code == 0, ours.stderr
    assert "All instances migrated successfully." in ours.stdout
    (op,) = ops_of(requests)
    assert (op["OP_ID"], op["mode"], op["target_node"]) == ("OP_NODE_MIGRATE", "non-live", "node3")


@pytest.mark.parametrize("args", [["migrate", "node2"], ["migrate", "-f", "node3"]])
def test_node_migrate_confirmation_and_empty_node(server: ServerThread, args: list[str]) -> None:
    rows = ([["node2.example.com", ["inst1.example.com"]]] if args[-1] == "node2"
            else [["node3.example.com", []]])
    ours, _ = compare(server, "gnt-node", args, {"QueryNodes": [rows]})
    assert ours.code in (0, 13)


def test_node_tags_like_debian(server: ServerThread) -> None:
    ours, _ = compare(server, "gnt-node", ["list-tags", "node2"], {"QueryTags": [["z", "a"]]})
    assert ours.stdout == "a\nz\n"
    _, requests = compare(server, "gnt-node", ["add-tags", "node2", "t1"], job_script(3, None))
    assert ops_of(requests)[0]["kind"] == "node"
    _, requests = compare(server, "gnt-node", ["remove-tags", "node2", "t1"], job_script(3, None))
    assert ops_of(requests)[0]["OP_ID"] == "OP_TAGS_DEL"


# =================================================================================================
# Part 2: our gnt-instance against our master, on a cluster of ours
# =================================================================================================

ADDRESSES = {"node1": "127.0.17.1", "node2": "127.0.17.2", "node3": "127.0.17.3"}
CLUSTER_IP = "127.0.17.100"
FAKE, FAKE_IP = "ifake", "127.0.17.50"
TWIN, TWIN_IP = "itwin", "127.0.17.51"          # added by Debian's tool with the same options
KVM, KVM_IP = "ikvm", "127.0.17.52"
SPARE, SPARE_IP = "ispare", "127.0.17.53"
QEMU = "/usr/bin/qemu-system-x86_64"


@pytest.fixture(scope="module")
def c() -> Iterator[Any]:
    from instance_cluster import build_cluster  # isort: skip

    with build_cluster("gq", ADDRESSES, CLUSTER_IP, instances={FAKE: FAKE_IP, TWIN: TWIN_IP, KVM: KVM_IP,
                                                               SPARE: SPARE_IP}) as made:
        yield made


def ok(done: Any) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return str(done.stdout)


def raw_instance(c: Any, name: str) -> dict[str, Any] | None:
    found = [raw for raw in c.config().tree["instances"].values() if raw["name"] == name]
    return found[0] if found else None


def add_args(name: str, ip: str) -> list[str]:
    return ["add", "-n", "node2", "-t", "file", "-o", "noop", "--no-ip-check", "--no-start", "-H", "fake",
            "-B", "memory=128M,vcpus=1", "--disk", "0:size=1G", "--net", f"0:mode=routed,ip={ip}",
            "--tags", "a,b", name]


def _comparable(raw: dict[str, Any]) -> dict[str, Any]:
    out = {key: value for key, value in raw.items()
           if key not in ("name", "uuid", "ctime", "mtime", "serial_no", "nics", "disks", "network_port")}
    out["nics"] = [{k: v for k, v in nic.items() if k not in ("mac", "uuid", "ip")} for nic in raw["nics"]]
    out["disk_count"] = len(raw["disks"])
    return out


def _strip_times(text: str) -> list[str]:
    """Job log lines without their ctime prefix."""
    return [line[25:] for line in text.splitlines()]


@needs_cluster
def test_e2e_our_add_creates_the_instance_like_debians(c: Any) -> None:
    serial = c.serial()
    ours = ok(c.ours("gnt-instance", *add_args(FAKE, FAKE_IP)))
    assert c.serial() > serial
    real = ok(c.gnt("gnt-instance", *add_args(TWIN, TWIN_IP)))
    mine, twin = raw_instance(c, FAKE), raw_instance(c, TWIN)
    assert mine is not None and twin is not None
    assert mine["nics"][0]["ip"] == FAKE_IP
    assert (mine["beparams"], mine["hypervisor"], mine["tags"], mine["admin_state"]) == (
        {"maxmem": 128, "minmem": 128, "vcpus": 1}, "fake", ["a", "b"], "down")
    assert _comparable(mine) == _comparable(twin)
    assert [line.replace(FAKE, "X") for line in _strip_times(ours)] == \
        [line.replace(TWIN, "X") for line in _strip_times(real)]


@needs_cluster
def test_e2e_add_with_bad_input_changes_nothing(c: Any) -> None:
    serial = c.serial()
    done = c.ours("gnt-instance", "add", "-n", "node2", "-t", "file", "-o", "noop", "--disk", "0:size=huge",
                  SPARE)
    assert done.returncode == 1 and "Invalid format" in done.stderr
    done = c.ours("gnt-instance", *add_args(FAKE, FAKE_IP))  # already there: the master refuses
    assert done.returncode == 1 and FAKE in done.stderr
    assert c.serial() == serial and raw_instance(c, SPARE) is None


@needs_cluster
@pytest.mark.parametrize("args", [["list"],
                                  ["list", "--no-headers", "-o", "name,status,tags,disk.sizes,be/vcpus"],
                                  ["list", "--separator=|", "--units=m", FAKE],
                                  ["list", "-F", "pnode == \"node2\""],
                                  ["list", "-o", "+nic.ips,nosuch"], ["list-fields", "name", "oper_ram"]])
def test_e2e_list_prints_what_debian_prints(c: Any, args: list[str]) -> None:
    ours, real = c.ours("gnt-instance", *args), c.gnt("gnt-instance", *args)
    assert (ours.returncode, ours.stdout, ours.stderr) == (real.returncode, real.stdout, real.stderr)
    if args == ["list"]:
        assert ours.stdout.splitlines()[0].split() == ["Instance", "Hypervisor", "OS", "Primary_node",
                                                       "Status", "Memory"]
        assert FAKE in ours.stdout and "ADMIN_down" in ours.stdout


@needs_cluster
@pytest.mark.parametrize("args", [[FAKE], ["-s", FAKE], ["--all"]])
def test_e2e_info_prints_what_debian_prints(c: Any, args: list[str]) -> None:
    ours, real = c.ours("gnt-instance", "info", *args), c.gnt("gnt-instance", "info", *args)
    assert (ours.returncode, ours.stdout, ours.stderr) == (real.returncode, real.stdout, real.stderr)
    assert f"Instance name: {FAKE}" in ours.stdout and "Disk template: file" in ours.stdout


def _status(c: Any, name: str) -> str:
    return ok(c.ours("gnt-instance", "list", "--no-headers", "-o", "status", name)).strip()


@needs_cluster
def test_e2e_startup_and_shutdown(c: Any) -> None:
    out = ok(c.ours("gnt-instance", "startup", FAKE))
    first = out.splitlines()[0]
    assert first.startswith("Waiting for job ") and first.endswith(f" for {FAKE} ...")
    assert raw_instance(c, FAKE)["admin_state"] == "up"  # type: ignore[index]
    assert (c.root("node2") / "var/run/ganeti/fake-hypervisor" / FAKE).exists()
    assert _status(c, FAKE) == "running"
    ok(c.ours("gnt-instance", "shutdown", "--timeout", "10", FAKE))
    assert raw_instance(c, FAKE)["admin_state"] == "down"  # type: ignore[index]
    assert not (c.root("node2") / "var/run/ganeti/fake-hypervisor" / FAKE).exists()
    assert _status(c, FAKE) == "ADMIN_down"


@needs_cluster
def test_e2e_startup_of_an_unknown_instance_is_refused(c: Any) -> None:
    serial = c.serial()
    ours, real = c.ours("gnt-instance", "startup", "nosuch"), c.gnt("gnt-instance", "startup", "nosuch")
    assert (ours.returncode, ours.stdout, ours.stderr) == (real.returncode, real.stdout, real.stderr)
    assert ours.returncode == 1 and c.serial() == serial


@needs_cluster
def test_e2e_reboot_and_no_remember(c: Any) -> None:
    ok(c.ours("gnt-instance", "startup", "--no-remember", FAKE))
    assert raw_instance(c, FAKE)["admin_state"] == "down"  # type: ignore[index]
    assert _status(c, FAKE) == "ERROR_up"
    ok(c.ours("gnt-instance", "shutdown", "--no-remember", FAKE))
    assert _status(c, FAKE) == "ADMIN_down"
    ok(c.ours("gnt-instance", "startup", FAKE))
    try:
        state = c.root("node2") / "var/run/ganeti/fake-hypervisor" / FAKE
        before = state.stat().st_mtime_ns
        time.sleep(0.05)
        ok(c.ours("gnt-instance", "reboot", "-t", "hard", "--shutdown-timeout", "5", FAKE))
        assert state.stat().st_mtime_ns != before  # stopped and started again
        assert _status(c, FAKE) == "running"
    finally:
        ok(c.ours("gnt-instance", "shutdown", FAKE))
    assert _status(c, FAKE) == "ADMIN_down"


@needs_cluster
def test_e2e_tags(c: Any) -> None:
    ok(c.ours("gnt-instance", "add-tags", FAKE, "zz", "c"))
    assert ok(c.ours("gnt-instance", "list-tags", FAKE)) == "a\nb\nc\nzz\n"
    ok(c.ours("gnt-instance", "remove-tags", FAKE, "zz"))
    assert raw_instance(c, FAKE)["tags"] == ["a", "b", "c"]  # type: ignore[index]
    ok(c.ours("gnt-node", "add-tags", "node2", "rack1"))
    assert ok(c.ours("gnt-node", "list-tags", "node2")) == "rack1\n"
    ok(c.ours("gnt-node", "remove-tags", "node2", "rack1"))
    assert ok(c.ours("gnt-node", "list-tags", "node2")) == ""


@needs_cluster
def test_e2e_modify_backend_parameters(c: Any) -> None:
    out = ok(c.ours("gnt-instance", "modify", "-B", "vcpus=2", FAKE))
    assert out.splitlines()[:2] == [f"Modified instance {FAKE}", " - be/vcpus -> 2"]
    assert raw_instance(c, FAKE)["beparams"]["vcpus"] == 2  # type: ignore[index]


@needs_cluster
def test_e2e_remove_asks_without_force_and_removes_with_it(c: Any) -> None:
    serial = c.serial()
    done = c.ours("gnt-instance", "remove", TWIN)
    assert done.returncode == 1 and c.serial() == serial and raw_instance(c, TWIN) is not None
    ok(c.ours("gnt-instance", "remove", "-f", TWIN))
    assert raw_instance(c, TWIN) is None
    assert not (c.file_dir("node2") / TWIN).exists()
    done = c.ours("gnt-instance", "remove", "-f", TWIN)
    assert done.returncode == 1 and TWIN in done.stderr


@pytest.mark.skipif(not os.path.exists(QEMU), reason="needs qemu-system-x86_64")
@needs_cluster
def test_e2e_kvm_console_shows_the_booting_guest(c: Any) -> None:
    ok(c.ours("gnt-instance", "add", "-n", "node3", "-t", "file", "-o", "tiny+default", "--no-ip-check",
              "--no-start", "-H", "kvm", "-B", "memory=64M", "--ignore-ipolicy", "--disk", "0:size=1G",
              "--net", f"0:mode=routed,ip={KVM_IP}", KVM))
    ok(c.ours("gnt-instance", "startup", "--paused", KVM))
    for args in (["info", KVM], ["list", "-o", "+oper_vcpus,network_port,console"], ["list-tags", KVM]):
        ours, real = c.ours("gnt-instance", *args), c.gnt("gnt-instance", *args)
        assert (ours.returncode, ours.stdout, ours.stderr) == (real.returncode, real.stdout, real.stderr)
    ours, real = c.ours("gnt-instance", "console", "--show-cmd", KVM), c.gnt("gnt-instance", "console",
                                                                              "--show-cmd", KVM)
    assert (ours.returncode, ours.stdout, ours.stderr) == (real.returncode, real.stdout, real.stderr)
    assert "socat" in ours.stdout or "console-wrapper" in ours.stdout
    main, side = pty.openpty()
    proc = subprocess.Popen([str(BIN_DIR / "gnt-instance"), "console", KVM], stdin=side, stdout=side,
                            stderr=side, env=c.env, start_new_session=True)
    os.close(side)
    seen = b""
    try:
        deadline = time.monotonic() + 90
        expected = f"ganeti-ng tiny OS booted: {KVM}".encode()
        while expected not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1)
            if ready:
                try:
                    seen += os.read(main, 4096)
                except OSError:
                    break
        assert expected in seen, seen
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        os.close(main)
    ok(c.ours("gnt-instance", "shutdown", "--timeout", "5", KVM))
    ok(c.ours("gnt-instance", "remove", "-f", KVM))


def _primary(c: Any, name: str) -> str:
    raw = raw_instance(c, name)
    assert raw is not None
    return str(c.config().tree["nodes"][raw["primary_node"]]["name"])


@needs_cluster
def test_e2e_disks_grow_activate_and_deactivate(c: Any) -> None:
    out = ok(c.ours("gnt-instance", "activate-disks", FAKE))
    (line,) = out.splitlines()
    host, iv_name, dev = line.split(":", 2)
    assert (host, iv_name) == ("node2", "disk/0") and dev
    ok(c.ours("gnt-instance", "deactivate-disks", FAKE))
    ok(c.ours("gnt-instance", "grow-disk", FAKE, "0", "1G"))
    disk_uuid = raw_instance(c, FAKE)["disks"][0]  # type: ignore[index]
    assert c.config().tree["disks"][disk_uuid]["size"] == 2048
    serial = c.serial()
    done = c.ours("gnt-instance", "grow-disk", FAKE, "0", "1.5.G")
    assert done.returncode == 1 and "Can't parse the given amount" in done.stderr and c.serial() == serial


@needs_cluster
def test_e2e_modify_adds_a_disk_and_a_nic(c: Any) -> None:
    ok(c.ours("gnt-instance", "modify", "--disk", "add:size=1G", "--net", "add:mode=routed,ip=127.0.17.60",
              FAKE))
    raw = raw_instance(c, FAKE)
    assert raw is not None and len(raw["disks"]) == 2 and len(raw["nics"]) == 2
    ok(c.ours("gnt-instance", "modify", "--disk", "remove", "--net", "remove", FAKE))
    raw = raw_instance(c, FAKE)
    assert raw is not None and len(raw["disks"]) == 1 and len(raw["nics"]) == 1


@needs_cluster
def test_e2e_reinstall_and_rename(c: Any) -> None:
    ok(c.ours("gnt-instance", "reinstall", "-f", FAKE))
    out = ok(c.ours("gnt-instance", "rename", "--no-ip-check", FAKE, SPARE))
    assert f"Instance '{FAKE}' renamed to '{SPARE}'" in out
    assert raw_instance(c, SPARE) is not None and raw_instance(c, FAKE) is None
    ok(c.ours("gnt-instance", "rename", "--no-ip-check", SPARE, FAKE))
    assert raw_instance(c, FAKE) is not None


@needs_cluster
def test_e2e_failover_and_migrate_of_a_sharedfile_instance(c: Any) -> None:
    ok(c.ours("gnt-instance", "add", "-n", "node2", "-t", "sharedfile", "-o", "noop", "--no-ip-check",
              "-H", "fake",
              "-B", "memory=128M", "--disk", "0:size=1G", "--net", f"0:mode=routed,ip={TWIN_IP}", TWIN))
    assert _primary(c, TWIN) == "node2"
    ok(c.ours("gnt-instance", "migrate", "-f", "-n", "node3", TWIN))
    assert _primary(c, TWIN) == "node3" and _status(c, TWIN) == "running"
    ok(c.ours("gnt-instance", "failover", "-f", "-n", "node2", "--shutdown-timeout", "5", TWIN))
    assert _primary(c, TWIN) == "node2" and _status(c, TWIN) == "running"
    ok(c.ours("gnt-instance", "migrate", "-f", "--non-live", "-n", "node3", TWIN))
    assert _primary(c, TWIN) == "node3"
    out = ok(c.ours("gnt-node", "migrate", "-f", "-n", "node2", "node3"))
    assert out.startswith("Submitted jobs ") and "All instances migrated successfully." in out
    assert _primary(c, TWIN) == "node2"
    empty = ok(c.ours("gnt-node", "migrate", "-f", "node1"))
    assert empty == "No primary instances on node node1, exiting.\n"
    ok(c.ours("gnt-instance", "remove", "-f", TWIN))


def test_list_takes_default_options_from_gnt_instance_list(server: ServerThread) -> None:
    """Ganeti's env_override: $GNT_INSTANCE_LIST options come before the command line's."""
    from test_gnt_tools import REAL_TREE, SYSTEM_PYTHON, real_hash_seed, tool_env  # isort: skip

    outputs = []
    for argv, extra in (([SYSTEM_PYTHON, f"{REAL_TREE}/gnt-instance"],
                         {"PYTHONPATH": REAL_TREE, "PYTHONHASHSEED": str(real_hash_seed())}),
                        ([str(BIN_DIR / "gnt-instance")], {})):
        server.reset({"Query": [instance_query(["name", "os"], [r[:1] + r[2:3] for r in LIST_ROWS])]})
        env = {**tool_env(server.paths.root), **extra, "GNT_INSTANCE_LIST": "--no-headers -o name,os"}
        proc = subprocess.run([*argv, "list", "--separator=:"], env=env, capture_output=True, text=True,
                              timeout=60, check=False, stdin=subprocess.DEVNULL)
        outputs.append((proc.returncode, proc.stdout, proc.stderr, requests_of(server.server.recorded)))
    assert outputs[0] == outputs[1]
    assert outputs[1][1].splitlines()[0] == "inst1.example.com:tiny"


# -- confirmations on a terminal ------------------------------------------------------------------


def _run_on_terminal(argv: list[str], env: dict[str, str], answer: bytes) -> tuple[int, bytes]:
    """Run a tool with a pseudo-terminal as its controlling terminal, answering its question."""
    import fcntl  # isort: skip
    import termios  # isort: skip

    main, side = pty.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, env=env, stdin=side, stdout=side, stderr=side, start_new_session=True,
                            preexec_fn=take_terminal)
    os.close(side)
    seen = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    data = os.read(main, 4096)
                except OSError:
                    break
                if not data:
                    break
                seen += data
            if not answered and b"[n]/?: " in seen:
                os.write(main, answer)
                answered = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=30), seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)


@pytest.mark.parametrize(("answer", "submitted"), [(b"y\n", True), (b"n\n", False)])
def test_remove_asks_on_the_terminal_like_debian(server: ServerThread, answer: bytes,
                                                submitted: bool) -> None:
    from test_gnt_tools import REAL_TREE, SYSTEM_PYTHON, normalise, real_hash_seed, tool_env  # isort: skip

    runs = []
    for argv, extra in (([SYSTEM_PYTHON, f"{REAL_TREE}/gnt-instance"],
                         {"PYTHONPATH": REAL_TREE, "PYTHONHASHSEED": str(real_hash_seed())}),
                        ([str(BIN_DIR / "gnt-instance")], {})):
        server.reset({"QueryInstances": [[["inst1.example.com"]]], **job_script(25, None)})
        code, seen = _run_on_terminal([*argv, "remove", "inst1"], {**tool_env(server.paths.root), **extra},
                                      answer)
        runs.append((code, seen, normalise(server.server.recorded)))
    assert runs[0] == runs[1]
    code, seen, requests = runs[1]
    assert b"This will remove the volumes of the instance inst1 (including\r\nmirrors)" in seen
    assert (code == 0) == submitted
    assert [op["OP_ID"] for op in ops_of(requests)] == (["OP_INSTANCE_REMOVE"] if submitted else [])


def test_startup_of_several_instances_asks_with_the_list_like_debian(server: ServerThread) -> None:
    from test_gnt_tools import REAL_TREE, SYSTEM_PYTHON, normalise, real_hash_seed, tool_env  # isort: skip

    script: dict[str, list[Any]] = {
        "QueryInstances": [[["inst1.example.com"], ["inst2.example.com"]]],
        "SubmitManyJobs": [[[True, 50], [True, 51]]],
        "QueryJobs": [[["running"], ["running"]], [["success", ["success"], [None]]],
                      [["running"]], [["success", ["success"], [None]]]],
        "WaitForJobChange": [[["success"], []]],
    }
    runs = []
    for argv, extra in (([SYSTEM_PYTHON, f"{REAL_TREE}/gnt-instance"],
                         {"PYTHONPATH": REAL_TREE, "PYTHONHASHSEED": str(real_hash_seed())}),
                        ([str(BIN_DIR / "gnt-instance")], {})):
        server.reset(script)
        code, seen = _run_on_terminal([*argv, "startup", "inst1", "inst2"],
                                      {**tool_env(server.paths.root), **extra}, b"y\n")
        runs.append((code, seen, normalise(server.server.recorded)))
    assert runs[0] == runs[1]
    code, seen, requests = runs[1]
    assert b"The startup will operate on 2 instances." in seen and b"  inst2.example.com" in seen
    assert b"Submitted jobs 50, 51" in seen and code == 0
    assert len(ops_of(requests)) == 2



# -- change-group and batch-create (jobs answered by the opcode) ----------------------------------


def _jobs_flow(first: int, result: Any, statuses: list[str]) -> dict[str, list[Any]]:
    ids = list(range(first + 1, first + 1 + len(statuses)))
    finals: list[Any] = []
    for status in statuses:
        answer = [None] if status == "success" else [["OpExecError", ["it failed"]]]
        finals += [[["running"]], [[status, [status], answer]]]
    return {"SubmitJob": [first], "WaitForJobChange": [[["success"], []]],
            "QueryJobs": [[["success", ["success"], [{**result, "jobs": [[True, i] for i in ids]}]]],
                          *finals]}


@pytest.mark.parametrize("statuses", [["success"], ["error"]])
def test_change_group_follows_the_jobs_like_debian(server: ServerThread, statuses: list[str]) -> None:
    args = ["change-group", "--to", "g2", "--to", "g3", "--early-release", "inst1"]
    ours, requests = compare(server, "gnt-instance", args, _jobs_flow(60, {}, statuses))
    assert ours.code == (0 if statuses == ["success"] else 1)
    (op,) = ops_of(requests)
    assert (op["OP_ID"], op["target_groups"]) == ("OP_INSTANCE_CHANGE_GROUP", ["g2", "g3"])


def test_batch_create_submits_the_definitions_like_debian(server: ServerThread, base: str) -> None:
    path = f"{base}/instances.json"
    definitions = [{"instance_name": "inst1", "disk_template": "file", "disks": [{"size": 1024}],
                    "os_type": "noop", "pnode": "node2", "nics": [], "mode": "create"},
                   {"instance_name": "inst2", "disk_template": "diskless", "disks": [], "os_type": "noop",
                    "iallocator": "hail", "start": False, "mode": "create", "nics": []}]
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(definitions, handle)
    script = _jobs_flow(70, {"allocatable": ["inst1", "inst2"], "failed": []}, ["success", "success"])
    ours, requests = compare(server, "gnt-instance", ["batch-create", "-I", "hail", path], script)
    assert ours.code == 0 and "All instances created successfully." in ours.stdout
    (op,) = ops_of(requests)
    assert op["OP_ID"] == "OP_INSTANCE_MULTI_ALLOC"
    assert [inst["instance_name"] for inst in op["instances"]] == ["inst1", "inst2"]


@pytest.mark.parametrize("content", ["not json", "{}", '[{"instance_name": "x", "nosuch": 1}]',
                                     '[{"instance_name": "x", "disk_template": "file", "disks": []}]',
                                     '[{"instance_name": "x", "disk_template": "file", "disks": [], '
                                     '"mode": "create", "start": "yes"}]'])
def test_batch_create_bad_definitions_like_debian(server: ServerThread, base: str, content: str) -> None:
    path = f"{base}/instances.json"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)
    ours, requests = compare(server, "gnt-instance", ["batch-create", path], {})
    assert ours.code == 1 and requests == []


def test_reinstall_select_os_lists_the_oses_and_stops_without_a_terminal(server: ServerThread) -> None:
    script: dict[str, list[Any]] = {"QueryInstances": [[["inst1.example.com"]]],
                                    **job_script(80, [["noop", []], ["tiny", ["default", "big"]]])}
    ours, requests = compare(server, "gnt-instance", ["reinstall", "--select-os", "inst1"], script)
    assert ours.code == 1
    assert ours.stdout.endswith("Available OS templates:\n  0: noop\n  1: tiny+default\n  2: tiny+big\n")
    assert ours.stderr == "User aborted reinstall, exiting\n"
    assert [op["OP_ID"] for op in ops_of(requests)] == ["OP_OS_DIAGNOSE"]
