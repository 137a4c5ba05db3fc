"""A real Ganeti 3.0 master runs a one-node cluster whose node daemon is ours.

Debian's gnt-cluster, luxid, wconfd (and confd, rapi, mond) run unmodified in
Ganeti's virtual-cluster mode (GANETI_ROOTDIR/GANETI_HOSTNAME), node
node1.example.com on 127.0.2.1:1811, cluster IP 127.0.2.100 on `lo`; `gnt-cluster
init` starts the node daemon through daemon-util, whose ganeti-noded is ours
(real_master_harness.py says how namespaces keep the machine untouched).

The sequence is the one an administrator runs: init (fake hypervisor, file and
diskless templates), verify, node list, destroy. `verify` ignores only
ENODESSH (no sshd for the node here) and ENODESETUP (this kernel has no
/proc/sysrq-trigger). After destroy the node's root holds no cluster state,
no daemon of the cluster runs, and the master daemons logged no error about
the node's answers. A failing init stops the test; every other check is
collected so that one run reports all of them.

The control test runs the same sequence on Ganeti's own node daemon: when it
fails too, the machine or the harness is at fault, not our daemon.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from real_master_harness import OUR_NODED, RealMaster, Step, root_leftovers

pytestmark = pytest.mark.real_master

#: The only verify error codes ignored: no sshd for the node, no /proc/sysrq-trigger in this kernel.
IGNORED_VERIFY_CODES = ("ENODESSH", "ENODESETUP")
VERIFY_MESSAGE = re.compile(r"- (ERROR|WARNING):([A-Z0-9_]+):")
#: gnt-node list's default fields (all but the name are live data from node_info).
NODE_LIST_FIELDS = ("name", "dtotal", "dfree", "mtotal", "mnode", "mfree", "pinst_cnt", "sinst_cnt")
#: Logs of the master side in which an ERROR line means a node answer was not accepted.
MASTER_LOGS = ("wconf-daemon.log", "luxi-daemon.log", "jobs.log", "commands.log")


class Checks:
    """Problems found along the sequence, reported together at the end."""

    def __init__(self, master: RealMaster) -> None:
        self.master = master
        self.problems: list[str] = []

    def expect(self, ok: bool, what: str, step: Step | None = None) -> bool:
        if not ok:
            self.problems.append(what + ("\n" + step.describe() if step is not None else ""))
        return ok

    def report(self) -> str:
        numbered = [f"[{i}] {p}" for i, p in enumerate(self.problems, 1)]
        return ("\n\n".join(numbered) + "\n\n=== logs of the cluster ===\n" + self.master.diagnosis())


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _master_ip_on_lo(master: RealMaster) -> bool:
    return f"inet {master.names.cluster_ip}/" in master.lo_addresses()


def _init(master: RealMaster) -> None:
    step = master.init_cluster()
    checks = Checks(master)
    checks.expect(step.ok, "gnt-cluster init failed", step)
    checks.expect((master.data_dir / "config.data").is_file(), "init wrote no config.data")
    assert not checks.problems, checks.report()


def _verify(master: RealMaster, checks: Checks) -> None:
    ignore = [arg for code in IGNORED_VERIFY_CODES for arg in ("-I", code)]
    step = master.gnt("gnt-cluster", "verify", "--error-codes", *ignore)
    if checks.expect(step.ok, "gnt-cluster verify reported errors", step):
        others = [line.strip() for line in step.stdout.splitlines()
                  if (m := VERIFY_MESSAGE.search(line)) and m.group(2) not in IGNORED_VERIFY_CODES]
        checks.expect(not others, "gnt-cluster verify reported more than the ignored codes:\n"
                      + "\n".join(others))


def _node_list(master: RealMaster, checks: Checks) -> None:
    step = master.gnt("gnt-node", "list", "--no-headers", "--separator=|", "-o", ",".join(NODE_LIST_FIELDS))
    if not checks.expect(step.ok, "gnt-node list failed", step):
        return
    rows = [line.split("|") for line in step.stdout.splitlines() if line.strip()]
    if not checks.expect([row[0] for row in rows] == [master.names.node],
                         f"gnt-node list does not list exactly {master.names.node}", step):
        return
    live = dict(zip(NODE_LIST_FIELDS, rows[0], strict=False))
    not_numbers = {k: v for k, v in live.items() if k != "name" and not re.fullmatch(r"\d+(\.\d+)?", v)}
    checks.expect(not not_numbers, f"gnt-node list shows no live data (node_info) for {not_numbers}", step)


def _destroy(master: RealMaster, checks: Checks, expect_no_warning: bool) -> None:
    step = master.gnt("gnt-cluster", "destroy", "--yes-do-it")
    if checks.expect(step.ok, "gnt-cluster destroy failed", step) and expect_no_warning:
        # FinalizeClusterDestroy warns for each of its last three RPCs that fails
        # (node_deactivate_master_ip, node_stop_master, node_leave_cluster).
        checks.expect("WARNING" not in step.stdout + step.stderr, "gnt-cluster destroy warned", step)


def _check_all_stopped(master: RealMaster, checks: Checks) -> None:
    stopped = _wait_for(lambda: not master.pids(), timeout=20)
    checks.expect(stopped, "processes of the destroyed cluster still run 20 s after destroy "
                  "(node_stop_master stops wconfd, rapi and luxid; node_leave_cluster confd, mond, kvmd "
                  "and the node daemon itself):\n" + master.describe_processes(master.pids()))


def _check_root_clean(master: RealMaster, checks: Checks) -> None:
    left = root_leftovers(master)
    checks.expect(not left, "cluster state left in the node's root after destroy (node_leave_cluster): "
                  + ", ".join(left))


def _check_master_logs(master: RealMaster, checks: Checks) -> None:
    for name in MASTER_LOGS:
        try:
            lines = (master.log_dir / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
        errors = [line for line in lines if " ERROR " in line]
        checks.expect(not errors, f"{name} logged errors:\n" + "\n".join(_shorten(line) for line in errors))


def _shorten(line: str, width: int = 600) -> str:
    """Long log lines keep their start and their end (where Haskell puts the error)."""
    if len(line) <= width:
        return line
    return line[:width // 3] + " [...] " + line[-(2 * width // 3):]


def test_real_master_inits_verifies_lists_and_destroys_a_cluster_on_our_noded(
        real_master_factory: Callable[[str], RealMaster]) -> None:
    master = real_master_factory("ours")
    _init(master)
    checks = Checks(master)
    noded_pid = master.daemon_pid("ganeti-noded")
    cmdline = master.describe_processes([noded_pid]) if noded_pid else "(no ganeti-noded.pid)"
    assert OUR_NODED in cmdline, f"the node daemon daemon-util started is not ours ({OUR_NODED}): {cmdline}"
    checks.expect(_wait_for(lambda: _master_ip_on_lo(master), timeout=15),
                  f"the master IP {master.names.cluster_ip} was not added to lo after init "
                  "(node_activate_master_ip):\n" + master.lo_addresses())
    _verify(master, checks)
    _node_list(master, checks)
    _destroy(master, checks, expect_no_warning=True)
    checks.expect(_wait_for(lambda: not _master_ip_on_lo(master), timeout=10),
                  f"the master IP {master.names.cluster_ip} is still on lo after destroy "
                  "(node_deactivate_master_ip):\n" + master.lo_addresses())
    _check_all_stopped(master, checks)
    _check_root_clean(master, checks)
    _check_master_logs(master, checks)
    assert not checks.problems, checks.report()


def test_real_master_runs_the_same_sequence_on_ganeti_own_noded_as_control(
        real_master_factory: Callable[[str], RealMaster]) -> None:
    # Ganeti's master-ip-setup sees every 127/8 address as up (fping), so it never adds
    # the master IP, and destroy warns that it cannot remove it: no master-IP checks here.
    master = real_master_factory("real")
    _init(master)
    checks = Checks(master)
    _verify(master, checks)
    _node_list(master, checks)
    _destroy(master, checks, expect_no_warning=False)
    _check_all_stopped(master, checks)
    _check_root_clean(master, checks)
    _check_master_logs(master, checks)
    assert not checks.problems, checks.report()
