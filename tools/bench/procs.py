"""Processes started by the benchmark: started in one place, stopped by PID at the end, even on errors."""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any


class BenchError(Exception):
    """The benchmark cannot go on; the message says why and where to look."""


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat after the command name: fields[0] is the state, [1] the ppid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """The live processes below `pid` (children, grandchildren...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of `pid` and every process below it (live ones, and those reaped)."""
    total = 0
    fields = _stat_fields(pid)
    if fields is None:
        return None
    for p in [pid, *descendants(pid)]:
        fields = _stat_fields(p)
        if fields is not None:
            total += sum(int(x) for x in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU seconds all processors have spent busy since boot (user, nice, system, irq, softirq, steal)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU of this process's children (and their descendants) that have ended and been reaped."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


class Processes:
    """Every process the benchmark starts; `stop_all` (also on leaving the `with`) ends them by PID."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen[Any]]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              pipes: bool = False, cwd: str | None = None) -> subprocess.Popen[Any]:
        """Start `argv`; stderr (and stdout unless `pipes`) go to <log_dir>/<name>.log."""
        log = open(self.log_path(name), "ab")  # the child keeps its own copy
        try:
            proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log, stderr=log, start_new_session=True,
                text=pipes, bufsize=1 if pipes else -1)
        except OSError as err:
            raise BenchError(f"cannot start {name} ({argv[0]}): {err}") from err
        finally:
            log.close()
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def stop_all(self) -> None:
        while self.started:
            _, proc = self.started.pop()
            try:
                self.stop(proc)
            except (OSError, subprocess.TimeoutExpired):
                pass

    def forget(self, proc: subprocess.Popen[Any]) -> None:
        """`proc` has ended and was reaped by the caller."""
        self.started = [(n, p) for n, p in self.started if p is not proc]

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


def wait_listening(name: str, proc: subprocess.Popen[Any], address: str, ports: list[int],
                   procs: Processes, timeout: float = 30.0) -> None:
    """Return once every port accepts connections; BenchError if `proc` died or time ran out."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with status {proc.returncode} before listening on "
                                 f"{address}:{port}; its log ({procs.log_path(name)}) ends with:\n"
                                 f"{procs.tail(name)}")
            try:
                with socket.create_connection((address, port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"{name} is not listening on {address}:{port} after {timeout:.0f} s; "
                                     f"see {procs.log_path(name)}") from None
                time.sleep(0.05)


def read_line(name: str, stream: IO[str], proc: subprocess.Popen[Any], procs: Processes,
              timeout: float) -> str:
    """One line from a child's stdout, or BenchError if it ends or stays silent for `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"{name} said nothing for {timeout:.0f} s; see {procs.log_path(name)}")
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            line = stream.readline()
            if line:
                return line.rstrip("\n")
            proc.wait(5)
            raise BenchError(f"{name} exited with status {proc.returncode}; its log "
                             f"({procs.log_path(name)}) ends with:\n{procs.tail(name)}")


def ip_on_lo(address: str) -> bool:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "lo"], capture_output=True, text=True).stdout
    return any(line.split()[3].split("/")[0] == address for line in out.splitlines())


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie counts as gone)."""
    fields = _stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] != "Z"


def stop_cluster(roots: list[Path], cluster_ip: str) -> None:
    """Stop the master and node daemons of `roots` by their pid files (SIGTERM, SIGKILL after 15 s),
    then take the cluster IP off lo."""
    pids: list[int] = []
    for root in roots:
        for daemon in ("ganeti-masterd", "ganeti-noded"):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int((root / "var/run/ganeti" / f"{daemon}.pid").read_text().strip()))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if ip_on_lo(cluster_ip):
        subprocess.run(["ip", "addr", "del", f"{cluster_ip}/32", "dev", "lo"], capture_output=True)
