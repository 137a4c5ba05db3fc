"""A real Ganeti 3.0 master runs an instance's whole life cycle on our node daemon.

The cluster is test_real_master.py's (fake hypervisor, file and diskless
templates, file storage below the root, listed in the root's
etc/ganeti/file-storage-paths), with an instance policy whose smallest disk
is 1 MiB instead of 1 GiB so that a 16 MiB disk is allowed. The real master
then runs, as an administrator would:

    gnt-instance add -t file -o noop -s 16M --no-ip-check --no-name-check \
        -n node1.example.com inst1.example.com
    gnt-instance list; shutdown; startup; reboot; remove -f

and the cluster is destroyed. After each command the node's root is checked:
the disk file (<file storage dir>/inst1.example.com/<uuid>.file.disk0, 16 MiB)
exists from add to remove, the fake hypervisor's state file
($RUN_DIR/fake-hypervisor/inst1.example.com) exists exactly while the instance
runs, and `gnt-instance list` shows what the node reports (all_instances_info).
Our daemon's -d log must show, for each command, the node procedures
../shared/reference/rpc-trace.md recorded for it on a real cluster, in order
(wconfd's configuration pushes aside).

When a command fails, the report names each node procedure our daemon
answered with a failure, with its request body and answer (our daemon runs
with -d, which logs both). The control test runs the same on Ganeti's own
node daemon: when it fails too, the machine or the harness is at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from real_master_harness import RealMaster, Step
from test_real_master import Checks, _check_all_stopped, _check_master_logs, _destroy, _wait_for

pytestmark = pytest.mark.real_master

INSTANCE = "inst1.example.com"
DISK_MIB = 16
MIB = 1024 * 1024
#: Ganeti's default instance policy, except that the smallest disk is 1 MiB (default 1024).
IPOLICY_BOUNDS = ("min:disk-size=1,memory-size=128,cpu-count=1,disk-count=1,nic-count=1,spindle-use=1"
                  "/max:disk-size=1048576,memory-size=32768,cpu-count=8,disk-count=16,nic-count=8,"
                  "spindle-use=12")
LIST_FIELDS = ("name", "status", "oper_state", "pnode")


#: The node procedures a real master calls for each command, in order (../shared/reference/rpc-trace.md),
#: leaving out the configuration pushes of wconfd that interleave with them.
TRACE = {
    "add": ("hypervisor_validate_params", "os_validate", "bridges_exist", "node_info", "hooks_runner",
            "file_storage_dir_create", "blockdev_create", "blockdev_getmirrorstatus",
            "blockdev_getmirrorstatus", "os_diagnose", "instance_os_add", "instance_metadata_modify",
            "instance_start", "hooks_runner"),
    "list": ("all_instances_info",),
    # luxid asks the nodes of the listed instances only
    "list of none": (),
    "shutdown": ("hooks_runner", "instance_shutdown", "blockdev_shutdown", "hooks_runner"),
    "startup": ("bridges_exist", "instance_info", "node_info", "hooks_runner", "blockdev_assemble",
                "blockdev_assemble", "instance_start", "hooks_runner"),
    "reboot": ("bridges_exist", "hooks_runner", "instance_info", "instance_reboot", "hooks_runner"),
    "remove": ("hooks_runner", "instance_shutdown", "blockdev_remove", "file_storage_dir_remove",
               "hooks_runner"),
}
#: Calls wconfd makes on its own when the configuration changes.
CONFIG_PUSHES = frozenset({"write_ssconf_files", "upload_file_single"})


class InstanceChecks(Checks):
    """Checks that also look at the node procedures each command made on our daemon."""

    def __init__(self, master: RealMaster) -> None:
        super().__init__(master)
        self.seen_calls = len(master.node_calls())

    def command(self, step: Step, what: str, trace: str) -> bool:
        """The command succeeded (else: which node procedures failed, and how) and, on our daemon,
        made the node procedures the trace recorded for it."""
        calls = self.master.node_calls()
        new, self.seen_calls = calls[self.seen_calls:], len(calls)
        if not step.ok:
            failed = "\n".join(c.describe() for c in new if c.failed) or (
                "(our node daemon answered no call with a failure)" if self.master.noded == "ours"
                else "(not known: Ganeti's own node daemon does not log its answers)")
            self.problems.append(f"{what} failed\n{step.describe()}\n"
                                 f"--- node procedures that failed ---\n{failed}")
            return False
        if self.master.noded == "ours":
            made = tuple(c.procedure for c in new if c.procedure not in CONFIG_PUSHES)
            self.expect(made == TRACE[trace], f"{what} made the node procedures {made}, the trace has "
                        f"{TRACE[trace]}", step)
        return True


def instance_dir(master: RealMaster) -> Path:
    return master.file_storage_dir / INSTANCE


def disk_files(master: RealMaster) -> dict[str, int]:
    """The instance's disk files and their sizes in bytes."""
    directory = instance_dir(master)
    if not directory.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in directory.iterdir()}


def fake_state_file(master: RealMaster) -> Path:
    return master.run_dir / "fake-hypervisor" / INSTANCE


def gnt_instance(master: RealMaster, checks: InstanceChecks, trace: str, *args: str) -> Step | None:
    """`gnt-instance <args>`; the step when it succeeded (see InstanceChecks.command)."""
    step = master.gnt("gnt-instance", *args)
    return step if checks.command(step, "gnt-instance " + " ".join(args), trace) else None


def listed(master: RealMaster, checks: InstanceChecks, trace: str = "list") -> list[list[str]] | None:
    step = gnt_instance(master, checks, trace, "list", "--no-headers", "--separator=|",
                        "-o", ",".join(LIST_FIELDS))
    return None if step is None else [line.split("|") for line in step.stdout.splitlines() if line.strip()]


def expect_listed(master: RealMaster, checks: InstanceChecks, status: str, running: str, when: str) -> None:
    rows = listed(master, checks)
    if rows is None:
        return
    wanted = [[INSTANCE, status, running, master.names.node]]
    checks.expect(rows == wanted, f"gnt-instance list {when}: expected {wanted}, got {rows}")


def expect_files(master: RealMaster, checks: InstanceChecks, disk: bool, running: bool, when: str) -> None:
    files = disk_files(master)
    if disk:
        checks.expect(len(files) == 1 and all(n.endswith(".file.disk0") for n in files)
                      and list(files.values()) == [DISK_MIB * MIB],
                      f"{when}: expected one {DISK_MIB} MiB disk file <uuid>.file.disk0 in "
                      f"{instance_dir(master)}, found {files}")
    else:
        checks.expect(not instance_dir(master).exists(),
                      f"{when}: the instance directory {instance_dir(master)} is still there ({files})")
    checks.expect(fake_state_file(master).exists() == running,
                  f"{when}: the fake hypervisor's state file {fake_state_file(master)} "
                  + ("is missing" if running else "is still there"))


def _life_cycle(master: RealMaster, checks: InstanceChecks) -> None:
    """add, list, shutdown, startup, reboot, remove -f, each followed by its checks; stops at a failed add."""
    if gnt_instance(master, checks, "add", "add", "-t", "file", "-o", "noop", "-s", f"{DISK_MIB}M",
                    "--no-ip-check", "--no-name-check", "-n", master.names.node, INSTANCE) is None:
        return
    expect_files(master, checks, disk=True, running=True, when="after add")
    expect_listed(master, checks, "running", "Y", "after add")

    if gnt_instance(master, checks, "shutdown", "shutdown", INSTANCE):
        expect_files(master, checks, disk=True, running=False, when="after shutdown")
        expect_listed(master, checks, "ADMIN_down", "N", "after shutdown")

    if gnt_instance(master, checks, "startup", "startup", INSTANCE):
        expect_files(master, checks, disk=True, running=True, when="after startup")
        expect_listed(master, checks, "running", "Y", "after startup")

    if gnt_instance(master, checks, "reboot", "reboot", INSTANCE):
        expect_files(master, checks, disk=True, running=True, when="after reboot")
        expect_listed(master, checks, "running", "Y", "after reboot")

    if gnt_instance(master, checks, "remove", "remove", "-f", INSTANCE):
        expect_files(master, checks, disk=False, running=False, when="after remove")
        rows = listed(master, checks, trace="list of none")
        checks.expect(rows == [], f"gnt-instance list after remove: expected no instance, got {rows}")


def _check_stopped_but_metad(master: RealMaster, checks: InstanceChecks) -> None:
    """Ganeti's own node daemon starts ganeti-metad for instance_metadata_modify and nothing stops it
    (node_leave_cluster does not): every other process of the cluster must be gone."""
    def others() -> list[int]:
        return [pid for pid in master.pids() if "ganeti-metad" not in master.describe_processes([pid])]

    checks.expect(_wait_for(lambda: not others(), timeout=20),
                  "processes of the destroyed cluster still run 20 s after destroy:\n"
                  + master.describe_processes(others()))


def _run(master: RealMaster) -> None:
    init = master.init_cluster(f"--ipolicy-bounds-specs={IPOLICY_BOUNDS}")
    assert init.ok and (master.data_dir / "config.data").is_file(), (
        "gnt-cluster init failed\n" + init.describe() + "\n" + master.diagnosis())
    checks = InstanceChecks(master)
    _life_cycle(master, checks)
    # Ganeti's own master-ip-setup never adds the master IP here, and destroy warns about it.
    _destroy(master, checks, expect_no_warning=master.noded == "ours")
    if master.noded == "ours":
        _check_all_stopped(master, checks)
    else:
        _check_stopped_but_metad(master, checks)
    _check_master_logs(master, checks)
    assert not checks.problems, checks.report()


def test_real_master_adds_runs_and_removes_an_instance_on_our_noded(
        real_master_factory: Callable[[str], RealMaster]) -> None:
    _run(real_master_factory("ours"))


def test_real_master_runs_the_same_instance_life_cycle_on_ganeti_own_noded_as_control(
        real_master_factory: Callable[[str], RealMaster]) -> None:
    _run(real_master_factory("real"))
