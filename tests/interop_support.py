"""Our node daemon and the real Ganeti 3.0 ganeti-noded side by side, called by the real RPC client.

Both daemons run in their own virtual-cluster root whose node is called
"node1" (GANETI_ROOTDIR=<tmp>/ours/node1 and <tmp>/real/node1), so their
answers differ only where the root path, the time or the machine state
enters them. tests/interop_client.py (the real ganeti.rpc client code,
run with the system Python) makes the calls from a master root of its own
(<tmp>/ours-master/node1, <tmp>/real-master/node1) holding copies of the
node's server.pem and client.pem, like the master of a virtual cluster:
files it uploads come from there, and virtual paths are made relative to it.
`normalize` and `shape` turn answers into comparable values.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from real_ganeti import GANETI_TREE, SYSTEM_PYTHON, run_real_ganeti
from support import RunningNoded, free_port, make_root, start_noded

CLIENT = str(Path(__file__).resolve().parent / "interop_client.py")
REAL_NODED = os.path.join(GANETI_TREE, "ganeti-noded")
HOSTNAME = "node1"
CANDIDATE_UUID = "0b7fa5ab-0000-4000-8000-000000000001"
ROOT_MARK = "<ROOT>"
BACKEND_ERROR = "Error while executing backend function: "
NOT_IMPLEMENTED = "not implemented yet on this node"
MASTER_MARK = "<MASTER>"

#: Directories both roots get besides their daemon's own (Ganeti's ensure-dirs has more).
COMMON_DIRS = ("srv/ganeti/file-storage", "srv/ganeti/shared-file-storage", "srv/ganeti/os",
               "etc/ganeti/hooks", "var/lib/ganeti/rapi", "root/.ssh", "etc")

Call = dict[str, Any]
Result = dict[str, Any]


def call(proc: str, *args: Any, cert: str = "client") -> Call:
    """One call for interop_client.py (see its docstring for the argument markers)."""
    return {"proc": proc, "args": list(args), "cert": cert}


def node_path(path: str) -> dict[str, str]:
    """Marker: `path` (e.g. /var/lib/ganeti/x) on the called node, as a local path below its root."""
    return {"$path": path}


def master_path(path: str) -> dict[str, str]:
    """Marker: `path` on the master (the client), as a local path below its root."""
    return {"$master_path": path}


def virtual_path(path: str) -> dict[str, Any]:
    """Marker: the virtual-cluster name (/###-VIRTUAL-PATH-###,<path>) of a path, as a master sends it."""
    return {"$vpath": {"$master_path": path}}


def ganeti_path(name: str) -> dict[str, str]:
    """Marker: ganeti.pathutils.<name> as the client (master) sees it."""
    return {"$pathutils": name}


def as_bytes(text: str) -> dict[str, str]:
    """Marker: `text` passed to the encoders as bytes."""
    return {"$bytes": text}


class ClientError(Exception):
    """interop_client.py itself failed (not a failed RPC)."""


@dataclass
class Target:
    """A node daemon (ours or the real one) as seen by the real client."""

    name: str
    address: str
    port: int
    root: Path
    master_root: Path
    pid: int
    server_fp: str
    client_fp: str
    stop_fn: Callable[[], None]
    alive_fn: Callable[[], bool]
    log_file: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self, node_path: str) -> Path:
        """The file of node path `node_path` (e.g. /var/lib/ganeti/x) on this node."""
        return Path(str(self.root) + node_path)

    def master_file(self, node_path: str) -> Path:
        """The file of node path `node_path` on the master that calls this node."""
        return Path(str(self.master_root) + node_path)

    @property
    def data_dir(self) -> Path:
        return self.path("/var/lib/ganeti")

    @property
    def candidate_map(self) -> Path:
        return self.data_dir / "ssconf_master_candidates_certs"

    @property
    def client_pem(self) -> str:
        return str(self.data_dir / "client.pem")

    @property
    def server_pem(self) -> str:
        return str(self.data_dir / "server.pem")

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": GANETI_TREE, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LANG": "C.UTF-8", "GANETI_ROOTDIR": str(self.master_root), "GANETI_HOSTNAME": HOSTNAME,
                "INTEROP_NODE_ROOT": str(self.root)}

    def alive(self) -> bool:
        return self.alive_fn()

    def stop(self) -> None:
        self.stop_fn()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError as err:
            return f"(no log: {err})"


def _client_process(target: Target, calls: list[Call]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([SYSTEM_PYTHON, CLIENT, target.address, str(target.port)],
                            env=target.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"node": HOSTNAME, "calls": calls}))
    proc.stdin.close()
    return proc


def _client_results(target: Target, proc: subprocess.Popen[str], timeout: float) -> list[Result]:
    assert proc.stdout is not None and proc.stderr is not None
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise ClientError(f"interop_client.py against {target.name} timed out after {timeout} s") from None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    if proc.returncode != 0:
        raise ClientError(f"interop_client.py against {target.name} exited {proc.returncode}:\n{err}")
    results: list[Result] = json.loads(out)
    return results


def run_client(target: Target, calls: list[Call], timeout: float = 120.0) -> list[Result]:
    """Make `calls` on `target` with the real client; one result dict per call."""
    return _client_results(target, _client_process(target, calls), timeout)


CallsFor = list[Call] | Callable[[Target], list[Call]]


def run_pair(targets: Iterable[Target], calls: CallsFor, timeout: float = 120.0) -> list[list[Result]]:
    """The same calls on several targets at once (calls may depend on the target)."""
    targets = list(targets)
    procs = [(t, _client_process(t, calls(t) if callable(calls) else calls)) for t in targets]
    return [_client_results(t, p, timeout) for t, p in procs]


# -- the real ganeti-noded ---------------------------------------------------------

_SETUP_REAL_ROOT = """
import json, os
from ganeti import pathutils, utils
from ganeti.tools import ensure_dirs
root = os.environ["GANETI_ROOTDIR"]
for path in ensure_dirs.GetPaths():
    if not path[0].startswith(root + "/"):
        raise SystemExit("ensure-dirs path outside the root: %r" % (path[0],))
    ensure_dirs.ProcessPath(path)
utils.GenerateNewSslCert(True, pathutils.NODED_CERT_FILE, 1, "server cert")
utils.GenerateNewClientSslCert(pathutils.NODED_CLIENT_CERT_FILE, pathutils.NODED_CERT_FILE,
                               os.environ["GANETI_HOSTNAME"])
print(json.dumps({
    "server_fp": utils.GetCertificateDigest(cert_filename=pathutils.NODED_CERT_FILE),
    "client_fp": utils.GetCertificateDigest(cert_filename=pathutils.NODED_CLIENT_CERT_FILE)}))
"""


def _make_common_dirs(root: Path) -> None:
    for d in (*COMMON_DIRS, "var/lib/ganeti", "var/run/ganeti", "var/log/ganeti", "var/lock", "etc/ganeti"):
        (root / d).mkdir(parents=True, exist_ok=True)


def make_master_root(base: Path, node_root: Path) -> Path:
    """A master's root below `base` with copies of the node's server.pem and client.pem."""
    root = base / HOSTNAME
    _make_common_dirs(root)
    for name in ("server.pem", "client.pem"):
        dst = root / "var/lib/ganeti" / name
        shutil.copyfile(node_root / "var/lib/ganeti" / name, dst)
        os.chmod(dst, 0o400)
    return root


def _wait_listening(address: str, port: int, alive: Callable[[], bool], what: str,
                    wait: float = 30.0) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited before listening on {address}:{port}")
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {address}:{port} within {wait} s")


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stop_pid(pid: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15.0) -> None:
    if _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=timeout)


def start_real_noded(base: Path, master_base: Path, address: str) -> Target:
    """The real ganeti-noded (-f --no-mlock) in a fresh virtual-cluster root below `base`."""
    root = base / HOSTNAME
    _make_common_dirs(root)
    fps = json.loads(run_real_ganeti(_SETUP_REAL_ROOT, root=root, hostname=HOSTNAME))
    port = free_port(address)
    log_file = root / "var/log/ganeti/node-daemon.log"
    out = open(base / "noded.stdout", "wb")  # handed to the daemon, closed here after the start
    env = {"PYTHONPATH": GANETI_TREE, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "LANG": "C.UTF-8", "GANETI_ROOTDIR": str(root), "GANETI_HOSTNAME": HOSTNAME}
    proc = subprocess.Popen([SYSTEM_PYTHON, REAL_NODED, "-f", "--no-mlock", "-b", address, "-p", str(port)],
                            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out.close()

    def alive() -> bool:
        return proc.poll() is None

    def stop() -> None:
        _stop_pid(proc.pid, proc)

    try:
        _wait_listening(address, port, alive, "the real ganeti-noded")
    except RuntimeError as err:
        stop()
        raise RuntimeError(f"{err}\n{(base / 'noded.stdout').read_text(errors='replace')}") from None
    return Target(name="real", address=address, port=port, root=root,
                  master_root=make_master_root(master_base, root), pid=proc.pid,
                  server_fp=fps["server_fp"], client_fp=fps["client_fp"], stop_fn=stop,
                  alive_fn=alive, log_file=log_file)


def start_our_noded(base: Path, master_base: Path, address: str) -> Target:
    """Our ganeti-noded (detached, as a real start) in a fresh root below `base`."""
    node = make_root(base, HOSTNAME)
    _make_common_dirs(node.root)
    daemon: RunningNoded = start_noded(node, address)
    return Target(name="ours", address=address, port=daemon.port, root=node.root,
                  master_root=make_master_root(master_base, node.root), pid=daemon.pid,
                  server_fp=node.server_fp, client_fp=node.client_fp, stop_fn=daemon.stop,
                  alive_fn=daemon.alive, log_file=Path(node.paths.noded_log_file),
                  extra={"daemon": daemon})


# -- the pair and its TLS mode -----------------------------------------------------

BOOTSTRAP = "bootstrap"
CANDIDATE = "candidate"
#: The client certificate Ganeti's master presents in each TLS mode.
MODE_CERT = {BOOTSTRAP: "server", CANDIDATE: "client"}


def ssconf_for(target: Target) -> dict[str, Any]:
    """What phase A of rpc_client_demo.py writes: the cluster's ssconf incl. the candidate map."""
    return {
        "cluster_name": "cluster.example.com",
        "master_node": "node1",
        "node_list": ["node1"],
        "release_version": "3.0.2",
        "master_candidates_certs": [f"{CANDIDATE_UUID}={target.client_fp}"],
    }


@dataclass
class Pair:
    """Our daemon and the real one, in the same TLS mode."""

    ours: Target
    real: Target
    mode: str = BOOTSTRAP

    @property
    def targets(self) -> tuple[Target, Target]:
        return (self.ours, self.real)

    def ensure_mode(self, mode: str) -> None:
        """Bootstrap: no candidate map (written by hand, like `rpc_client_demo.py --reset`).
        Candidate: Ganeti's phase A -> B, a write_ssconf_files call listing client.pem."""
        if mode == BOOTSTRAP:
            for t in self.targets:
                t.candidate_map.unlink(missing_ok=True)
        elif mode == CANDIDATE:
            missing = [t for t in self.targets if not t.candidate_map.exists()]
            for t in missing:
                (res,) = run_client(t, [call("write_ssconf_files", ssconf_for(t), cert="server")])
                if res["fail_msg"]:
                    raise AssertionError(f"write_ssconf_files on {t.name} failed: {res['fail_msg']}")
        else:
            raise ValueError(f"unknown TLS mode {mode!r}")
        self.mode = mode

    def run(self, calls: CallsFor, mode: str | None = None) -> tuple[list[Result], list[Result]]:
        """The calls on (ours, real) in `mode` (default: the current one); cert "mode" is that mode's."""
        self.ensure_mode(mode or self.mode)
        cert = MODE_CERT[self.mode]

        def fill(t: Target) -> list[Call]:
            cs = calls(t) if callable(calls) else calls
            return [{**c, "cert": cert} if c.get("cert") == "mode" else c for c in cs]

        ours, real = run_pair(self.targets, fill)
        return ours, real

    def run_one(self, c: Call, mode: str | None = None) -> tuple[Result, Result]:
        ours, real = self.run([c], mode)
        return ours[0], real[0]


# -- comparing answers -------------------------------------------------------------

def normalize(value: Any, target: Target) -> Any:
    """The answer with the node's root replaced by <ROOT> and the master's by <MASTER>."""
    if isinstance(value, str):
        return value.replace(str(target.master_root), MASTER_MARK).replace(str(target.root), ROOT_MARK)
    if isinstance(value, list):
        return [normalize(v, target) for v in value]
    if isinstance(value, dict):
        return {normalize(k, target): normalize(v, target) for k, v in value.items()}
    return value


def shape(value: Any) -> Any:
    """The structure and JSON types of a value, without the values (dict keys kept)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if value is None:
        return "null"
    return type(value).__name__


def outcome(result: Result, target: Target) -> tuple[bool, Any]:
    """(ok, payload) or (False, failure text), with the roots replaced by <ROOT>/<MASTER>.

    A call refused at the TLS or HTTP level is a failure whose result has data None.
    """
    if result["fail_msg"]:
        return (False, normalize(result["fail_msg"], target))
    return (True, normalize(result["payload"], target))


def failure_text(message: Any) -> Any:
    """A failure text without Ganeti's "Error while executing backend function: " prefix.

    Ganeti adds it when a backend raised an unexpected exception instead of an
    RPC failure; ours may answer the same text as a plain failure. The master
    only shows the text, so both count as the same answer.
    """
    if isinstance(message, str) and message.startswith(BACKEND_ERROR):
        return message[len(BACKEND_ERROR):]
    return message


def comparable(result: Result, target: Target) -> tuple[bool, Any]:
    ok, value = outcome(result, target)
    return (ok, value) if ok else (False, failure_text(value))


def describe(c: Call, ours: Any, real: Any) -> str:
    """A precise difference report: procedure, input, ours, real."""
    return (f"{c['proc']} differs\n  input: {json.dumps(c['args'])}\n"
            f"  ours:  {json.dumps(ours, sort_keys=True)}\n  real:  {json.dumps(real, sort_keys=True)}")


def with_cert(c: Call) -> Call:
    """The call made with the certificate of the pair's TLS mode."""
    return {**c, "cert": "mode"}


def both(pair: Pair, calls: CallsFor, mode: str) -> list[tuple[Result, Result]]:
    """The calls on (ours, real) in `mode`, as (ours, real) result pairs."""
    ours, real = pair.run(calls, mode)
    return list(zip(ours, real, strict=True))


def assert_same(pair: Pair, c: Call, mode: str,
                transform: Callable[[Any], Any] = lambda v: v) -> tuple[Any, Any]:
    """Make the call on both daemons; the normalised (and transformed) outcomes must be equal."""
    ((o, r),) = both(pair, [with_cert(c)], mode)
    ours = transform(comparable(o, pair.ours))
    real = transform(comparable(r, pair.real))
    assert ours == real, describe(c, ours, real)
    return ours, real


def assert_same_all(pair: Pair, calls: list[Call], mode: str) -> list[Any]:
    """Several independent calls in one client run per daemon; each pair of outcomes must be equal."""
    results = both(pair, [with_cert(c) for c in calls], mode)
    outcomes = []
    for c, (o, r) in zip(calls, results, strict=True):
        ours, real = comparable(o, pair.ours), comparable(r, pair.real)
        assert ours == real, describe(c, ours, real)
        outcomes.append(ours)
    return outcomes


def assert_both_succeed(pair: Pair, c: Call, mode: str) -> tuple[Any, Any]:
    """Both daemons answer the call (with answers that legitimately differ); returns the payloads."""
    ((o, r),) = both(pair, [with_cert(c)], mode)
    ours, real = outcome(o, pair.ours), outcome(r, pair.real)
    assert real[0], f"the real noded failed {c['proc']}: {real[1]}"
    assert ours[0], describe(c, ours, real)
    return ours[1], real[1]


def assert_both_fail(pair: Pair, c: Call, mode: str) -> tuple[str, str]:
    """Both daemons refuse the call (with texts that legitimately differ); returns the texts."""
    ((o, r),) = both(pair, [with_cert(c)], mode)
    ours, real = outcome(o, pair.ours), outcome(r, pair.real)
    assert not real[0], f"the real noded accepted {c['proc']}: {real[1]}"
    assert not ours[0], describe(c, ours, real)
    assert not str(ours[1]).startswith(NOT_IMPLEMENTED), describe(c, ours, real)
    return ours[1], real[1]


def same_failure(pair: Pair, c: Call, mode: str) -> str:
    """Both daemons refuse the call with the same text (roots and Ganeti's exception prefix aside)."""
    ours, _real = assert_same(pair, c, mode)
    assert not ours[0], f"{c['proc']} was expected to fail: {ours}"
    text: str = ours[1]
    return text


# -- files on the nodes ------------------------------------------------------------

def file_facts(path: Path) -> dict[str, Any]:
    """What a written file looks like: content, permission bits, owner and group names."""
    st = path.stat()
    return {"content": path.read_bytes(), "mode": oct(stat.S_IMODE(st.st_mode)),
            "owner": pwd.getpwuid(st.st_uid).pw_name, "group": grp.getgrgid(st.st_gid).gr_name}


def file_times(path: Path) -> tuple[float, float]:
    """(atime, mtime); take them before reading the file (a read may update the atime)."""
    st = path.stat()
    return (st.st_atime, st.st_mtime)


def write_in_both(pair: Pair, node_file: str, text: str, mode: int = 0o644) -> None:
    """The same file on both nodes (replacing what was there)."""
    for t in pair.targets:
        p = t.path(node_file)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.unlink(missing_ok=True)
        p.write_text(text)
        os.chmod(p, mode)


def remove_in_both(pair: Pair, node_file: str) -> None:
    for t in pair.targets:
        t.path(node_file).unlink(missing_ok=True)
