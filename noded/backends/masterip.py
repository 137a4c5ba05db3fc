"""Adding and removing the cluster (master) IP address: our default master-ip-setup.

Ganeti runs `/usr/lib/ganeti/tools/master-ip-setup {start|stop}` with the
environment MASTER_IP, MASTER_NETMASK, MASTER_NETDEV and CLUSTER_IP_VERSION
(4 or 6). This module is the same contract in Python, used in-process as
the default script (and runnable as `python -m noded.backends.masterip
start|stop` with that environment). Differences from Ganeti's shell script:

- "is the address here already?" is answered from `ip addr show` instead of
  `fping -S 127.0.0.1`, so loopback addresses (127.x.y.z on "lo", which
  every host answers) work: the address is added, and removed again;
- the "is it up on another machine?" probe (fping) is skipped for loopback
  addresses, which no other machine can hold, and when fping is missing;
- no label is put on IPv6 addresses (Linux refuses labels for them).

Each action returns (exit_code, output) like the script's exit status and
its combined stdout/stderr.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from noded.backends import runcmd

log = logging.getLogger(__name__)

FPING_PACKET_COUNT = 5
FPING_PACKET_INTERVAL_MS = 200
#: Seconds any helper command (ip, fping, arping) may take.
COMMAND_TIMEOUT = 30.0

ACTIONS = ("start", "stop")


@dataclass(frozen=True)
class MasterIpSetup:
    """The parameters of one master-ip-setup run (its environment)."""

    ip: str
    netmask: int
    netdev: str
    version: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MasterIpSetup:
        """Read MASTER_IP, MASTER_NETMASK, MASTER_NETDEV, CLUSTER_IP_VERSION; ValueError if unusable."""
        try:
            return cls(ip=env["MASTER_IP"], netmask=int(env["MASTER_NETMASK"]),
                       netdev=env["MASTER_NETDEV"], version=int(env["CLUSTER_IP_VERSION"]))
        except KeyError as err:
            raise ValueError(f"{err.args[0]} is not set") from err

    def env(self) -> dict[str, str]:
        return {"MASTER_IP": self.ip, "MASTER_NETMASK": str(self.netmask), "MASTER_NETDEV": self.netdev,
                "CLUSTER_IP_VERSION": str(self.version)}


def ip_command() -> str:
    """The `ip` program (Ganeti's IP_COMMAND_PATH is /bin/ip)."""
    return shutil.which("ip") or shutil.which("ip", path="/sbin:/usr/sbin:/bin:/usr/bin") or "/bin/ip"


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def local_addresses() -> list[tuple[str, str, int]]:
    """(device, address, prefix length) of every address configured on this host."""
    res = runcmd.run([ip_command(), "-o", "addr", "show"], timeout=COMMAND_TIMEOUT)
    if res.failed:
        raise OSError(f"'{res.cmd}' failed: {res.fail_reason}; output: {res.output}")
    found = []
    for line in res.stdout.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] not in ("inet", "inet6"):
            continue
        dev = fields[1].split("@", 1)[0]
        addr, _, prefix = fields[3].partition("/")
        found.append((dev, addr, int(prefix or (128 if fields[2] == "inet6" else 32))))
    return found


def _devices_with(ip: str) -> list[tuple[str, int]]:
    return [(dev, prefix) for (dev, addr, prefix) in local_addresses() if _same_address(addr, ip)]


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _up_elsewhere(ip: str) -> bool:
    """Whether another machine answers pings for `ip` (False when fping is not installed)."""
    fping = shutil.which("fping") or shutil.which("fping", path="/usr/sbin:/sbin")
    if fping is None:
        log.warning("fping is not installed: not checking whether %s is up on another machine", ip)
        return False
    res = runcmd.run([fping, "-c", str(FPING_PACKET_COUNT), "-p", str(FPING_PACKET_INTERVAL_MS), ip],
                     timeout=COMMAND_TIMEOUT)
    return not res.failed


def _announce(setup: MasterIpSetup) -> None:
    """Gratuitous ARP / unsolicited neighbour advertisement, best effort."""
    if setup.netdev == "lo" or _is_loopback(setup.ip):
        return
    if setup.version == 4:
        cmd = ["arping", "-q", "-U", "-c", "3", "-I", setup.netdev, "-s", setup.ip, setup.ip]
    else:
        cmd = ["ndisc6", "-q", "r", "3", setup.ip, setup.netdev]
    try:
        runcmd.run(cmd, timeout=COMMAND_TIMEOUT)
    except runcmd.CommandNotFound:
        log.warning("%s is not installed: neighbours are not told about %s", cmd[0], setup.ip)


def start(setup: MasterIpSetup) -> tuple[int, str]:
    """Add the master IP to its device, unless this machine already has it."""
    if setup.version not in (4, 6):
        return 1, f"Invalid cluster IP version specified: {setup.version}\n"
    if _devices_with(setup.ip):
        return 0, "Master IP address already configured on this machine. Doing nothing.\n"
    if not _is_loopback(setup.ip) and _up_elsewhere(setup.ip):
        return 1, "Error: master IP address configured on another machine.\n"
    cmd = [ip_command(), "addr", "add", f"{setup.ip}/{setup.netmask}", "dev", setup.netdev]
    if setup.version == 4:
        cmd += ["label", f"{setup.netdev}:0"]
    res = runcmd.run(cmd, timeout=COMMAND_TIMEOUT)
    if res.failed:
        return 1, f"{res.output}Error during the activation of the master IP address\n"
    _announce(setup)
    return 0, ""


def stop(setup: MasterIpSetup) -> tuple[int, str]:
    """Remove the master IP from its device; nothing to do when it is not here."""
    where = _devices_with(setup.ip)
    if (setup.netdev, setup.netmask) not in where:
        if where:
            return 1, "Error: master IP address configured on wrong device, can't shut it down.\n"
        return 0, "Master IP address not configured on this machine. Doing nothing.\n"
    res = runcmd.run([ip_command(), "addr", "del", f"{setup.ip}/{setup.netmask}", "dev", setup.netdev],
                     timeout=COMMAND_TIMEOUT)
    if res.failed:
        return 1, f"{res.output}Error during the deactivation of the master IP address\n"
    return 0, ""


def run_action(action: str, setup: MasterIpSetup) -> tuple[int, str]:
    """start or stop; (exit code, output) as the shell script would give them."""
    if action == "start":
        return start(setup)
    if action == "stop":
        return stop(setup)
    return 1, "Usage: master-ip-setup {start|stop}\n"


def main(argv: list[str] | None = None) -> int:
    """`master-ip-setup start|stop` with the parameters in the environment."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 1:
        sys.stderr.write("Usage: master-ip-setup {start|stop}\n")
        return 1
    try:
        setup = MasterIpSetup.from_env(os.environ)
    except ValueError as err:
        sys.stderr.write(f"master-ip-setup: {err}\n")
        return 1
    code, output = run_action(args[0], setup)
    (sys.stdout if code == 0 else sys.stderr).write(output)
    return code


if __name__ == "__main__":
    sys.exit(main())
