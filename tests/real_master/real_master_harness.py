"""A real Ganeti 3.0 master (Debian's gnt-*, luxid, wconfd) in virtual-cluster mode, on loopback.

Everything the cluster writes lives below a fresh GANETI_ROOTDIR
(`<base>/node1.example.com`); every Ganeti process runs with that root and
GANETI_HOSTNAME, inside private namespaces held by one small process:

- mount: a private hosts file is bind-mounted over /etc/hosts (the real tools
  resolve node and cluster names), and, when the node daemon under test is
  ours, a wrapper is bind-mounted over the program daemon-util starts as
  ganeti-noded (`/usr/sbin/ganeti-noded`, a symlink into
  /usr/share/ganeti/3.0: daemon-util's path is not below the root);
- network: a private copy of `lo` (all of 127/8 is local there) plus an inert
  bridge for the default NIC link, so daemons binding 0.0.0.0 (confd, mond,
  rapi) clash with nothing on the machine and the master IP added to `lo`
  disappears with the namespace; sysfs is remounted so /sys/class/net shows
  this namespace;
- UTS: the hostname is the node's name.

Nothing of the machine is changed: not /etc/hosts, not /etc/default/ganeti
(daemon-util reads `$GANETI_ROOTDIR/etc/default/ganeti`), not /var/lib/ganeti,
not root's SSH keys (`--no-ssh-init`), not its interfaces.

Ganeti's `gnt-cluster init` refuses a node IP in 127/8 and counts every
loopback address as an active cluster IP, so `init` (and only it) runs through
a small launcher that relaxes those two checks in its own process, as
../shared/anchors/real-cluster does.

Every process of the cluster is found by PID (its environment names our
root, or it lives in our network namespace) and stopped at the end; if the
test process dies, the namespace holder sees its stdin close and stops them.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

GANETI_TREE = "/usr/share/ganeti/3.0"
SYSTEM_PYTHON = "/usr/bin/python3"
DAEMON_UTIL = "/usr/lib/ganeti/daemon-util"
#: The program daemon-util starts for ganeti-noded (it runs /usr/sbin/<daemon>).
GANETI_NODED_PROGRAM = "/usr/sbin/ganeti-noded"
#: Our node daemon's console script.
OUR_NODED = str(Path(sys.executable).parent / "ganeti-noded")
#: Tools a run needs besides Ganeti itself.
REQUIRED_PROGRAMS = ("unshare", "nsenter", "ip", "mount", "start-stop-daemon", "hostname")

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Names:
    """The cluster's names and loopback addresses."""

    node: str = "node1.example.com"
    node_ip: str = "127.0.2.1"
    cluster: str = "cluster.example.com"
    cluster_ip: str = "127.0.2.100"
    #: Inert bridge (DOWN, no ports) in the private network namespace, the default NIC link.
    bridge: str = "gnt-br0"


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a real master (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (namespaces, daemon users, bind mounts)")
    if not os.path.isdir(os.path.join(GANETI_TREE, "ganeti")):
        missing.append(f"the Ganeti 3.0 tree {GANETI_TREE}")
    for path in (DAEMON_UTIL, GANETI_NODED_PROGRAM, "/usr/sbin/ganeti-luxid", "/usr/sbin/ganeti-wconfd",
                 SYSTEM_PYTHON, OUR_NODED):
        if not os.path.exists(path):
            missing.append(path)
    missing += [p for p in REQUIRED_PROGRAMS if shutil.which(p, path=PATH) is None]
    if not missing:
        probe = subprocess.run(["unshare", "--mount", "--uts", "--net", "--", "true"], env={"PATH": PATH},
                               capture_output=True, text=True, timeout=10, check=False)
        if probe.returncode != 0:
            missing.append(f"mount/UTS/network namespaces (unshare: {probe.stderr.strip()})")
    return missing


# -- files written before the namespace starts ------------------------------------

HOSTS_TEMPLATE = """\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
{node_ip}\t{node} {node_short}
{cluster_ip}\t{cluster} {cluster_short}
"""

#: `gnt-cluster` with two checks relaxed for this process only (used for `init`).
INIT_LAUNCHER = f"""\
import sys
sys.path.insert(0, {GANETI_TREE!r})
from ganeti import netutils

# The node's address is in 127/8 on purpose: do not reject it as loopback.
netutils.IP4Address.IsLoopback = classmethod(lambda cls, address: False)

# Every 127/8 address refuses connections, which TcpPing counts as "in use"
# unless a listening port is required: require one.
_tcp_ping = netutils.TcpPing


def _tcp_ping_needing_listener(target, port, timeout=10, live_port_needed=False, source=None):
    return _tcp_ping(target, port, timeout=timeout, live_port_needed=True, source=source)


netutils.TcpPing = _tcp_ping_needing_listener

import ganeti.client.gnt_cluster as gnt_cluster

sys.argv[0] = "gnt-cluster"
sys.exit(gnt_cluster.Main())
"""

NODED_WRAPPER = """\
#!/bin/sh
# Started by daemon-util as ganeti-noded: run the node daemon under test instead.
exec {program} "$@"
"""

#: Runs inside the new namespaces; the holder then waits on stdin. When stdin
#: closes (normal end, or the test process died) it stops, by PID, every
#: process still in its network namespace.
HOLDER_SCRIPT = """\
set -e
ip link set lo up
mount -t sysfs sysfs /sys
ip link add "$BRIDGE" type bridge
hostname "$NODE_NAME"
mount --bind "$HOSTS_FILE" /etc/hosts
if [ -n "$NODED_WRAPPER" ]; then mount --bind "$NODED_WRAPPER" "$NODED_PROGRAM"; fi
echo ready
set +e
read -r _ || true
me=$(readlink /proc/$$/ns/net)
found=
reap() {
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$me" ] && kill "-$1" "$pid" 2>/dev/null && found=1
  done
}
reap TERM
if [ -n "$found" ]; then sleep 2; reap KILL; fi
exit 0
"""


#: Our node daemon's -d log lines for a legacy call's body and its answer.
_REQUEST_LINE = re.compile(r"Handling request (\S+): body=(.*)$")
_ANSWER_LINE = re.compile(r"Answer to (\S+): (.*)$")


@dataclass(frozen=True)
class NodeCall:
    """One call our node daemon logged: procedure, request body and answer (both JSON text)."""

    procedure: str
    body: str
    answer: str

    @property
    def failed(self) -> bool:
        return self.answer.startswith("[false")

    def describe(self, width: int = 1500) -> str:
        body = self.body if len(self.body) <= width else self.body[:width] + " [...]"
        return f"{self.procedure}\n  request: {body}\n  answer:  {self.answer}"


@dataclass
class Step:
    """One command run in the cluster's namespaces."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        return (f"$ {' '.join(self.args)}\n-> rc={self.returncode} in {self.seconds:.1f} s\n"
                f"--- stdout ---\n{self.stdout.rstrip()}\n--- stderr ---\n{self.stderr.rstrip()}")


class RealMaster:
    """A one-node real Ganeti master whose node daemon is ours (or Ganeti's own, as a control)."""

    def __init__(self, noded: str = "ours", names: Names | None = None, noded_args: str = "-d --no-mlock",
                 base: Path | None = None) -> None:
        if noded not in ("ours", "real"):
            raise ValueError("noded must be 'ours' or 'real'")
        self.noded = noded
        self.names = names or Names()
        self.noded_args = noded_args
        node = self.names.node
        # Not below pytest's tmp_path: that is 0700, and wconfd/luxid/confd run as gnt-* users.
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="gnt-real-master-"))
        self.base.chmod(0o755)
        self.root = self.base / node
        self.holder: subprocess.Popen[str] | None = None
        self._netns: str | None = None
        self.steps: list[Step] = []

    # -- paths ----------------------------------------------------------------------
    def path(self, node_path: str) -> Path:
        """A node path (e.g. /var/lib/ganeti) below the root."""
        return Path(str(self.root) + node_path)

    @property
    def data_dir(self) -> Path:
        return self.path("/var/lib/ganeti")

    @property
    def run_dir(self) -> Path:
        return self.path("/var/run/ganeti")

    @property
    def log_dir(self) -> Path:
        return self.path("/var/log/ganeti")

    @property
    def file_storage_dir(self) -> Path:
        return self.path("/srv/ganeti/file-storage")

    @property
    def env(self) -> dict[str, str]:
        return {"GANETI_ROOTDIR": str(self.root), "GANETI_HOSTNAME": self.names.node,
                "PATH": PATH, "LANG": "C.UTF-8", "HOME": str(self.base), "TMPDIR": "/tmp"}

    # -- set-up -----------------------------------------------------------------------
    def prepare(self) -> None:
        """The root's own files: daemon arguments, allowed file storage, hosts, launchers."""
        n = self.names
        for parent in ("/var/run", "/var/lib/ganeti", "/var/log/ganeti", "/var/lock", "/etc/ganeti"):
            self.path(parent).mkdir(parents=True, exist_ok=True)
        (self.base / "hosts").write_text(HOSTS_TEMPLATE.format(
            node=n.node, node_short=n.node.split(".")[0], node_ip=n.node_ip,
            cluster=n.cluster, cluster_short=n.cluster.split(".")[0], cluster_ip=n.cluster_ip))
        (self.base / "gnt-cluster-loopback").write_text(INIT_LAUNCHER)
        wrapper = self.base / "ganeti-noded-wrapper"
        wrapper.write_text(NODED_WRAPPER.format(program=OUR_NODED))
        wrapper.chmod(0o755)
        default = self.path("/etc/default/ganeti")
        default.parent.mkdir(parents=True, exist_ok=True)
        # daemon-util sources $GANETI_ROOTDIR/etc/default/ganeti.
        default.write_text(
            f'NODED_ARGS="-b {n.node_ip} {self.noded_args}"\n'
            f'CONFD_ARGS="-b {n.node_ip}"\n'
            f'MOND_ARGS="-b {n.node_ip}"\n'
            f'RAPI_ARGS="-b {n.node_ip} --require-authentication"\n'
            f'METAD_ARGS="-b {n.node_ip}"\n'
            'WCONFD_ARGS=""\nLUXID_ARGS=""\nKVMD_ARGS=""\n')
        conf = self.path("/etc/ganeti")
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "file-storage-paths").write_text(f"{self.file_storage_dir}\n")
        self.file_storage_dir.mkdir(parents=True, exist_ok=True)

    def start_namespaces(self, timeout: float = 20.0) -> None:
        env = dict(self.env, BRIDGE=self.names.bridge, NODE_NAME=self.names.node,
                   HOSTS_FILE=str(self.base / "hosts"), NODED_PROGRAM=GANETI_NODED_PROGRAM,
                   NODED_WRAPPER=str(self.base / "ganeti-noded-wrapper") if self.noded == "ours" else "")
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--net", "--propagation", "private", "--",
             "/bin/sh", "-c", HOLDER_SCRIPT],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        assert self.holder.stdout is not None
        ready, _, _ = select.select([self.holder.stdout], [], [], timeout)
        line = self.holder.stdout.readline().strip() if ready else ""
        if line != "ready":
            err = ""
            if self.holder.poll() is not None and self.holder.stderr is not None:
                err = self.holder.stderr.read().strip()
            raise RuntimeError("the namespace holder did not get ready: "
                               + (err or f"no answer within {timeout} s"))
        self._netns = os.readlink(f"/proc/{self.holder.pid}/ns/net")

    # -- running things inside ----------------------------------------------------------
    def run(self, *args: str, timeout: float = 90.0, record: bool = True) -> Step:
        """Run a command in the cluster's namespaces with the root's environment."""
        assert self.holder is not None, "namespaces not started"
        cmd = ["nsenter", f"--target={self.holder.pid}", "--mount", "--uts", "--net", "--", *args]
        t0 = time.monotonic()
        try:
            res = subprocess.run(cmd, env=self.env, cwd=self.base, capture_output=True, text=True,
                                 timeout=timeout, stdin=subprocess.DEVNULL)
            step = Step(list(args), res.returncode, res.stdout, res.stderr, time.monotonic() - t0)
        except subprocess.TimeoutExpired as err:
            stderr = _text(err.stderr) + f"\n(timed out after {timeout} s)"
            step = Step(list(args), -1, _text(err.stdout), stderr, time.monotonic() - t0)
        if record:
            self.steps.append(step)
        return step

    def gnt(self, tool: str, *args: str, timeout: float = 90.0) -> Step:
        return self.run(f"/usr/sbin/{tool}", *args, timeout=timeout)

    def init_cluster(self, *extra_args: str) -> Step:
        """`gnt-cluster init` (fake hypervisor, file and diskless templates); `extra_args` before the name."""
        n = self.names
        return self.run(
            SYSTEM_PYTHON, str(self.base / "gnt-cluster-loopback"), "init",
            "--enabled-hypervisors=fake", "--enabled-disk-templates=file,diskless",
            f"--file-storage-dir={self.file_storage_dir}", "--master-netdev=lo",
            f"--nic-parameters=link={n.bridge}", "--no-etc-hosts", "--no-ssh-init", *extra_args, n.cluster,
            timeout=90)

    def lo_addresses(self) -> str:
        return self.run("ip", "-4", "addr", "show", "dev", "lo", record=False).stdout

    # -- what runs ------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Every process of this cluster: its environment names our root, or it is in our netns."""
        marker = f"GANETI_ROOTDIR={self.root}".encode()
        holder = self.holder.pid if self.holder else -1
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in (holder, os.getpid()):
                continue
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                ours = marker in env
                if not ours and self._netns is not None:
                    ours = os.readlink(f"/proc/{entry}/ns/net") == self._netns
            except OSError:
                continue
            if ours and _alive(int(entry)):
                found.append(int(entry))
        return sorted(found)

    def describe_processes(self, pids: Iterable[int]) -> str:
        lines = []
        for pid in pids:
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                args = "?"
            lines.append(f"  {pid}: {args}")
        return "\n".join(lines)

    def daemon_pid(self, daemon: str) -> int | None:
        try:
            return int((self.run_dir / f"{daemon}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    # -- tear-down ----------------------------------------------------------------------
    def stop_everything(self, grace: float = 10.0) -> list[int]:
        """Stop (by PID) every process of the cluster; returns the ones that were still running."""
        if self.holder is not None and self.holder.poll() is None:
            # The master IP goes with the namespace anyway; remove it explicitly all the same.
            self.run("ip", "addr", "del", f"{self.names.cluster_ip}/32", "dev", "lo",
                     timeout=10, record=False)
        leftovers = self.pids()
        _signal_all(leftovers, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in leftovers):
            time.sleep(0.1)
        _signal_all([p for p in leftovers if _alive(p)], signal.SIGKILL)
        for late in self.pids():  # children forked while we were stopping the others
            _signal_all([late], signal.SIGKILL)
        if self.holder is not None:
            try:
                assert self.holder.stdin is not None
                self.holder.stdin.close()
            except OSError:
                pass
            try:
                self.holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait()
        return leftovers

    def keep_logs(self, dest: Path) -> None:
        """Copy the root's logs (and the holder's files) somewhere that outlives the root."""
        if self.log_dir.is_dir():
            shutil.copytree(self.log_dir, dest / "log", dirs_exist_ok=True)
        for name in ("hosts",):
            if (self.base / name).exists():
                shutil.copy(self.base / name, dest / name)
        with open(dest / "steps.txt", "w", encoding="utf-8") as f:
            for step in self.steps:
                f.write(step.describe() + "\n\n")

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    # -- diagnosis ------------------------------------------------------------------------
    def log_tail(self, name: str, lines: int = 30, width: int = 400) -> str:
        """The last lines of a log of the root (grpc's per-loop debug chatter left out)."""
        try:
            text = (self.log_dir / name).read_text(errors="replace").splitlines()
        except OSError:
            return f"(no {name})"
        kept = [line[:width] for line in text if "[_cygrpc]" not in line]
        return "\n".join(kept[-lines:])

    def node_calls(self) -> list[NodeCall]:
        """Every legacy call our node daemon (run with -d) logged, in order, with its answer.

        Our daemon logs "Handling request <procedure>: body=<JSON>" and
        "Answer to <procedure>: <JSON>" for every legacy call when started
        with -d (the harness's default arguments); Ganeti's own logs neither
        the same way, so for it this is empty.
        """
        try:
            lines = (self.log_dir / "node-daemon.log").read_text(errors="replace").splitlines()
        except OSError:
            return []
        bodies: dict[str, str] = {}
        calls: list[NodeCall] = []
        for line in lines:
            if (m := _REQUEST_LINE.search(line)) is not None:
                bodies[m.group(1)] = m.group(2)
            elif (m := _ANSWER_LINE.search(line)) is not None:
                calls.append(NodeCall(m.group(1), bodies.get(m.group(1), "?"), m.group(2)))
        return calls

    def node_call_failures(self) -> list[NodeCall]:
        """The calls our node daemon answered with a failure, in order (see node_calls)."""
        return [c for c in self.node_calls() if c.failed]

    def diagnosis(self) -> str:
        parts = []
        for name in ("node-daemon.log", "luxi-daemon.log", "wconf-daemon.log", "commands.log"):
            parts.append(f"--- tail of {name} ---\n{self.log_tail(name)}")
        return "\n".join(parts)


def root_leftovers(master: RealMaster) -> list[str]:
    """Cluster state left in the node's root: what node_leave_cluster must have removed."""
    left: list[str] = []

    def files(directory: Path, keep: Sequence[str] = ()) -> None:
        if directory.is_dir():
            for entry in sorted(directory.iterdir()):
                if entry.is_file() and not entry.is_symlink() and entry.name not in keep:
                    left.append(str(entry.relative_to(master.root)))

    files(master.data_dir)
    files(master.data_dir / "queue", keep=("lock",))
    files(master.data_dir / "queue" / "archive")
    files(master.run_dir / "crypto")
    return left


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
