"""The tiny OS definition installs a disk that boots: qemu prints its greeting on the serial port.

tools/os/tiny's create script (run by instance_os_add) writes the boot
sector made by tools/os/make_bootsector.py, with the instance name in it,
onto the instance's first disk. Booting that disk prints
"ganeti-ng tiny OS booted: <instance>" on COM1 and halts. KVM is used when
/dev/kvm can be opened, else TCG emulation.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_backend_os import INSTANCE, TINY, disk_file, file_disk, instance, link_os
from twin_nodes import make_node

from noded.backends import os as os_backend

REPO = Path(__file__).resolve().parent.parent
QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 20.0

requires_qemu = pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} is not installed")


def kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def read_serial_until(proc: subprocess.Popen[bytes], wanted: bytes, timeout: float) -> bytes:
    """qemu's serial output (its stdout) until `wanted` appears, qemu exits or `timeout` passes."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    return seen


@requires_qemu
def test_a_disk_installed_by_tiny_boots_and_greets_on_the_serial_port(tmp_path: Path) -> None:
    ctx = make_node(tmp_path)
    link_os(ctx.paths, TINY)
    disk = disk_file(ctx.paths)
    os_backend.instance_os_add(ctx, instance("tiny+default", [file_disk(disk)]), False, 0)
    accel = "kvm" if kvm_usable() else "tcg"
    proc = subprocess.Popen(
        [QEMU, "-m", "32", "-nographic", "-monitor", "none", "-nic", "none", "-no-reboot",
         "-accel", accel, "-drive", f"file={disk},format=raw", "-serial", "stdio"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        greeting = f"ganeti-ng tiny OS booted: {INSTANCE}\r\n".encode()
        output = read_serial_until(proc, greeting, BOOT_TIMEOUT)
        assert greeting in output, f"no greeting from the guest ({accel}) in: {output[-500:]!r}"
        assert proc.poll() is None  # halted, not crashed or rebooting
    finally:
        os.kill(proc.pid, 9)
        proc.wait(timeout=10)


def test_the_checked_in_boot_sector_is_what_make_bootsector_makes() -> None:
    result = subprocess.run([sys.executable, str(REPO / "tools" / "os" / "make_bootsector.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_tiny_export_then_import_copies_the_disk_and_reports_its_size(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.write_bytes((TINY / "bootsector.bin").read_bytes() + b"\x01" * 4096)
    target.write_bytes(b"\0" * (512 + 4096))
    size_r, size_w = os.pipe()
    env = {"PATH": "/usr/bin:/bin", "EXPORT_DEVICE": str(source), "EXPORT_DISK_PATH": str(source),
           "EXP_SIZE_FD": str(size_w)}
    exported = subprocess.run([str(TINY / "export")], env=env, pass_fds=[size_w], capture_output=True,
                              check=True).stdout
    os.close(size_w)
    with os.fdopen(size_r) as sizes:
        assert sizes.read() == f"{512 + 4096}\n"
    subprocess.run([str(TINY / "import")], env={"PATH": "/usr/bin:/bin", "IMPORT_DEVICE": str(target)},
                   input=exported, check=True)
    assert target.read_bytes() == source.read_bytes()
