"""Disk transfers between nodes (import_start, export_start, impexp_status/_abort/_cleanup) and
finalize_export, with Ganeti 3.0.2's arguments, results and messages.

Each transfer is a detached `python -m noded.impexp.daemon` process (ours;
Ganeti runs socat and openssl through its import-export daemon, and the
stream on the wire is the same). Its status directory is
`$RUN_DIR/import-export/<name>/` (`status`, `pid` locked while it runs, `ca`
with the peer's certificate, and for OS scripts their environment); its
log goes to `$LOG_DIR/os/<import|export>-<os>-<instance>-<component>-<time>.log`.
An import listens on the node daemon's bind address (all addresses when
the daemon binds all, as Ganeti's socat does); an export connects from it.

Where this differs from 3.0.2, it fails up front instead of starting a
daemon that dies at once: a magic string or compression tool name that is
not acceptable, a component with '/', a certificate name with '/'. The
`ca` file holds only the cluster certificate's certificate, not its key.
finalize_export skips disks given as false (3.0.2 crashes on them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import noded
from noded.backends.exports import EXPORT_CONF_FILE
from noded.backends.fileio import write_file_atomic
from noded.backends.storagepaths import node_path
from noded.backends.unsupported import describe_disk
from noded.context import NodeContext
from noded.disks.base import DeviceError, DiskConfigError
from noded.disks.devices import find_device
from noded.disks.links import gather_and_link
from noded.errors import RpcFail
from noded.impexp import common
from noded.impexp.exportconfig import ExportConfigError, build
from noded.osdefs.environment import instance_env
from noded.osdefs.lookup import find_os_or_fail
from noded.osdefs.scripts import log_file_name
from noded.paths import Paths
from noded.registry import procedure

IEIO_FILE = "file"
IEIO_RAW_DISK = "raw"
IEIO_SCRIPT = "script"
#: Seconds to wait for a transfer daemon to detach.
START_TIMEOUT = 30.0
#: Seconds impexp_cleanup waits after SIGTERM before SIGKILL.
KILL_WAIT = 5.0
_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.S)


def impexp_dir(paths: Paths) -> str:
    """$RUN_DIR/import-export, holding one status directory per transfer."""
    return os.path.join(paths.run_dir, "import-export")


def _status_dir(paths: Paths, name: object) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise RpcFail(f"Invalid import/export name {name!r}: expected a name returned by import_start"
                      " or export_start")
    return os.path.join(impexp_dir(paths), name)


# -- what the daemon reads or writes -------------------------------------------------------

class _Io:
    """The daemon arguments for one side of a transfer."""

    def __init__(self, args: list[str], expected_size: str | None = None,
                 script_env: dict[str, str] | None = None) -> None:
        self.args = args
        self.expected_size = expected_size
        self.script_env = script_env


def _open_disk(ctx: NodeContext, disk: Any) -> tuple[str, int]:
    """(device path, size in MiB) of a disk that is set up on this node (Ganeti's _OpenRealBD)."""
    if not isinstance(disk, Mapping):
        raise RpcFail(f"Invalid disk {disk!r}: a disk dict is needed")
    try:
        device = find_device(ctx.paths, disk)
        if device is None:
            raise RpcFail(f"Block device '{describe_disk(disk)}' is not set up")
        device.open()
    except (DeviceError, DiskConfigError) as err:
        raise RpcFail(str(err)) from err
    return device.dev_path, device.size_mib


def _file_io(ctx: NodeContext, mode: str, args: list[Any]) -> _Io:
    if len(args) != 1 or not isinstance(args[0], str):
        raise RpcFail(f"Invalid arguments for file I/O {args!r}: expected [file name]")
    filename = args[0]
    if not os.path.isabs(filename) or os.path.normpath(filename) != filename:
        raise RpcFail(f"Path '{filename}' is not normalized or absolute")
    real = os.path.realpath(node_path(ctx.paths, filename))
    export_dir = os.path.realpath(ctx.paths.export_dir)
    if not real.startswith(export_dir + "/"):
        raise RpcFail(f"File '{filename}' is not under exports directory '{ctx.paths.export_dir}': {real}")
    os.makedirs(os.path.dirname(real), mode=0o750, exist_ok=True)
    if mode == common.MODE_IMPORT:
        return _Io(["--file", real])
    try:
        size: str | None = str(common.bytes_to_mib(os.stat(real).st_size))
    except OSError:
        size = None
    return _Io(["--file", real], size)


def _raw_io(ctx: NodeContext, mode: str, args: list[Any]) -> _Io:
    if len(args) != 1:
        raise RpcFail(f"Invalid arguments for raw disk I/O: expected [disk], got {len(args)} values")
    path, size = _open_disk(ctx, args[0])
    io_args = ["--device", path, "--device-size", str(size)]
    return _Io(io_args, str(size) if mode == common.MODE_EXPORT else None)


def _script_io(ctx: NodeContext, mode: str, instance: Mapping[str, Any], args: list[Any]) -> _Io:
    if len(args) != 2 or isinstance(args[1], bool) or not isinstance(args[1], int):
        raise RpcFail(f"Invalid arguments for script I/O {args!r}: expected [disk, disk index]")
    disk, index = args
    osd = find_os_or_fail(ctx.paths, str(instance.get("os")))
    try:
        attached = gather_and_link(ctx.paths, instance)
    except (DeviceError, DiskConfigError) as err:
        raise RpcFail(str(err).removesuffix(".")) from err
    env = instance_env(instance, osd, attached)
    if mode == common.MODE_IMPORT:
        if f"DISK_{index}_PATH" in env:
            env["IMPORT_DEVICE"] = env["IMPORT_DISK_PATH"] = env[f"DISK_{index}_PATH"]
        if f"DISK_{index}_URI" in env:
            env["IMPORT_DISK_URI"] = env[f"DISK_{index}_URI"]
        env["IMPORT_INDEX"] = str(index)
    else:
        path, _ = _open_disk(ctx, disk)
        env["EXPORT_DEVICE"] = env["EXPORT_DISK_PATH"] = path
        uri = next((a.uri for a in attached if a.path == path and a.uri), None)
        if uri:
            env["EXPORT_DISK_URI"] = uri
        env["EXPORT_INDEX"] = str(index)
    script = osd.scripts.get(mode)
    if script is None:
        raise RpcFail(f"OS {osd.name} has no {mode} script in {osd.path}")
    return _Io(["--script", script, "--script-dir", osd.path], common.CUSTOM_SIZE, env)


def _io(ctx: NodeContext, mode: str, instance: Mapping[str, Any], spec: Any) -> _Io:
    if not isinstance(spec, list | tuple) or len(spec) != 2 or not isinstance(spec[1], list | tuple):
        raise RpcFail(f"Invalid {mode} I/O description {spec!r}: expected [ieio, ieioargs]")
    ieio, args = spec[0], list(spec[1])
    if ieio == IEIO_FILE:
        return _file_io(ctx, mode, args)
    if ieio == IEIO_RAW_DISK:
        return _raw_io(ctx, mode, args)
    if ieio == IEIO_SCRIPT:
        return _script_io(ctx, mode, instance, args)
    raise RpcFail(f"Invalid {mode} I/O mode {ieio!r}")


# -- starting a daemon ------------------------------------------------------------------------

def _options(opts: Any) -> dict[str, Any]:
    if opts is None:
        return {}
    if not isinstance(opts, Mapping):
        raise RpcFail(f"Invalid import/export options {opts!r}: a dict is needed")
    magic = opts.get("magic")
    if magic is not None and not (isinstance(magic, str) and common.MAGIC_RE.match(magic)):
        raise RpcFail(f"Magic must match regular expression {common.MAGIC_RE.pattern}")
    compress = opts.get("compress")
    if compress and not (isinstance(compress, str) and common.COMPRESS_TOOL_RE.match(compress)):
        raise RpcFail(f"Invalid compression method {compress!r}")
    return dict(opts)


def _key_and_cert(ctx: NodeContext, opts: Mapping[str, Any]) -> tuple[str, str, bytes]:
    """(key file, certificate file, CA PEM) for the daemon."""
    key_name, ca_pem = opts.get("key_name"), opts.get("ca_pem")
    if (key_name is None) != (ca_pem is None):
        raise RpcFail("Cluster certificate can only be used for both key and CA")
    if key_name is None:
        key_path = cert_path = ctx.paths.server_cert
    else:
        if not isinstance(key_name, str) or not key_name or "/" in key_name or key_name in (".", ".."):
            raise RpcFail(f"Invalid certificate name {key_name!r}: expected a name from x509_cert_create")
        cert_dir = os.path.join(ctx.paths.crypto_dir, key_name)
        key_path, cert_path = os.path.join(cert_dir, "key"), os.path.join(cert_dir, "cert")
    for path in (key_path, cert_path):
        if not os.path.exists(path):
            raise RpcFail(f"File '{path}' does not exist")
    if ca_pem is None:
        with open(ctx.paths.server_cert, "rb") as f:
            ca = b"".join(_PEM_CERT_RE.findall(f.read()))
    elif isinstance(ca_pem, str):
        ca = ca_pem.encode("ascii", errors="replace")
    else:
        raise RpcFail(f"Invalid CA certificate {ca_pem!r}: a PEM text is needed")
    return key_path, cert_path, ca


def _bind_address(ctx: NodeContext, ipv6: bool) -> str:
    addr = ctx.bind_address
    if ipv6 and addr and ":" not in addr:
        return f"::ffff:{addr}"
    return addr


def _daemon_env() -> dict[str, str]:
    env = dict(os.environ)
    top = os.path.dirname(os.path.dirname(os.path.abspath(noded.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (top, env.get("PYTHONPATH", "")) if p)
    return env


def _start(ctx: NodeContext, mode: str, opts_in: Any, host: Any, port: Any, instance: Any,
           component: Any, spec: Any) -> str:
    if not isinstance(instance, Mapping):
        raise RpcFail("Invalid instance: a dict is needed")
    if not isinstance(component, str) or not component or "/" in component or "\0" in component:
        raise RpcFail(f"Invalid component {component!r}: a name without '/' is needed, e.g. 'disk0'")
    opts = _options(opts_in)
    key_path, cert_path, ca = _key_and_cert(ctx, opts)
    io = _io(ctx, mode, instance, spec)

    os.makedirs(impexp_dir(ctx.paths), mode=0o755, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H_%M_%S")
    status_dir = tempfile.mkdtemp(dir=impexp_dir(ctx.paths), prefix=f"{mode}-{component}-{stamp}-")
    try:
        ca_file = os.path.join(status_dir, common.CA_FILE)
        write_file_atomic(ca_file, ca, mode=0o400)
        cmd = [sys.executable, "-m", "noded.impexp.daemon", os.path.join(status_dir, common.STATUS_FILE),
               mode, f"--key={key_path}", f"--cert={cert_path}", f"--ca={ca_file}"]
        bind = _bind_address(ctx, bool(opts.get("ipv6")))
        if bind:
            cmd.append(f"--bind={bind}")
        if mode == common.MODE_EXPORT:
            cmd += [f"--host={host}", f"--port={port}"]
        cmd.append("--ipv6" if opts.get("ipv6") else "--ipv4")
        if opts.get("compress"):
            cmd.append(f"--compress={opts['compress']}")
        if opts.get("magic"):
            cmd.append(f"--magic={opts['magic']}")
        if io.expected_size is not None:
            cmd.append(f"--expected-size={io.expected_size}")
        cmd += io.args
        if io.script_env is not None:
            env_file = os.path.join(status_dir, common.SCRIPT_ENV_FILE)
            write_file_atomic(env_file, json.dumps(io.script_env).encode("utf-8"), mode=0o400)
            cmd.append(f"--script-env={env_file}")
        if mode == common.MODE_EXPORT:
            cmd += [f"--connect-retries={common.CONNECT_RETRIES}",
                    f"--connect-timeout={common.CONNECT_ATTEMPT_TIMEOUT}"]
        elif opts.get("connect_timeout") is not None:
            cmd.append(f"--connect-timeout={opts['connect_timeout']}")
        log_file = log_file_name(ctx.paths, mode, str(instance.get("os")), str(instance.get("name")),
                                 component)
        cmd += ["--daemonize", f"--pid-file={os.path.join(status_dir, common.PID_FILE)}",
                f"--log-file={log_file}"]
        try:
            proc = subprocess.run(cmd, env=_daemon_env(), stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=START_TIMEOUT, check=False, cwd="/")
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RpcFail(f"Cannot start the {mode} daemon: {err}") from err
        if proc.returncode != 0:
            why = proc.stderr.decode("utf-8", errors="replace").strip()
            raise RpcFail(f"Cannot start the {mode} daemon (exit status {proc.returncode}): {why}")
        return os.path.basename(status_dir)
    except BaseException:
        shutil.rmtree(status_dir, ignore_errors=True)
        raise


@procedure("import_start", blocking=True)
def import_start(ctx: NodeContext, opts: Any, instance: Any, component: Any, dest: Any) -> str:
    """Start an import daemon listening for one stream to `dest`; returns the transfer's name."""
    return _start(ctx, common.MODE_IMPORT, opts, None, None, instance, component, dest)


@procedure("export_start", blocking=True)
def export_start(ctx: NodeContext, opts: Any, host: Any, port: Any, instance: Any, component: Any,
                 source: Any) -> str:
    """Start an export daemon sending `source` to the import daemon at host:port; returns its name."""
    if not host or not port:
        raise RpcFail("Host and port must be specified for an export")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise RpcFail(f"Invalid port {port!r}: a TCP port number is needed")
    if not isinstance(host, str) or not re.match(r"^[-.:a-zA-Z0-9]+$", host):
        raise RpcFail(f"Invalid host {host!r}: an address or host name is needed")
    return _start(ctx, common.MODE_EXPORT, opts, host, port, instance, component, source)


# -- watching and stopping ----------------------------------------------------------------------

@procedure("impexp_status", blocking=True)
def impexp_status(ctx: NodeContext, names: Any) -> list[Any]:
    """The status dict of each named transfer, or None where there is none (yet)."""
    if not isinstance(names, list):
        raise RpcFail("impexp_status expects a list of transfer names")
    result: list[Any] = []
    for name in names:
        path = os.path.join(_status_dir(ctx.paths, name), common.STATUS_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                data = f.read()
        except FileNotFoundError:
            data = ""
        except OSError as err:
            raise RpcFail(f"Cannot read the status of {name}: {err}") from err
        result.append(json.loads(data) if data else None)
    return result


@procedure("impexp_abort", blocking=True)
def impexp_abort(ctx: NodeContext, name: Any) -> None:
    """Send SIGTERM to the transfer daemon if it runs; its status directory stays."""
    pid = common.read_locked_pid(os.path.join(_status_dir(ctx.paths, name), common.PID_FILE))
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@procedure("impexp_cleanup", blocking=True)
def impexp_cleanup(ctx: NodeContext, name: Any) -> None:
    """Stop the transfer daemon if it still runs (SIGTERM, then SIGKILL) and remove its status directory."""
    status_dir = _status_dir(ctx.paths, name)
    pid_file = os.path.join(status_dir, common.PID_FILE)
    pid = common.read_locked_pid(pid_file)
    if pid:
        for sig, wait in ((signal.SIGTERM, KILL_WAIT), (signal.SIGKILL, KILL_WAIT)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and common.read_locked_pid(pid_file) == pid:
                time.sleep(0.05)
            if common.read_locked_pid(pid_file) != pid:
                break
    shutil.rmtree(status_dir, ignore_errors=True)


# -- finishing an export ---------------------------------------------------------------------------

@procedure("finalize_export", blocking=True)
def finalize_export(ctx: NodeContext, instance: Any, snap_disks: Any) -> None:
    """Write $EXPORT_DIR/<instance>.new/config.ini, then make that directory the export <instance>."""
    if not isinstance(instance, Mapping) or not isinstance(instance.get("name"), str):
        raise RpcFail("Invalid instance: a dict with a 'name' is needed")
    name = instance["name"]
    if not name or "/" in name or name in (".", ".."):
        raise RpcFail(f"Invalid instance name {name!r}")
    if not isinstance(snap_disks, list):
        raise RpcFail("snap_disks must be a list with a disk dict or false per instance disk")
    try:
        text = build(instance, snap_disks)
    except ExportConfigError as err:
        raise RpcFail(str(err)) from err
    new_dir = os.path.join(ctx.paths.export_dir, name + ".new")
    final_dir = os.path.join(ctx.paths.export_dir, name)
    os.makedirs(new_dir, mode=0o750, exist_ok=True)
    write_file_atomic(os.path.join(new_dir, EXPORT_CONF_FILE), text.encode("utf-8"))
    shutil.rmtree(final_dir, ignore_errors=True)
    try:
        shutil.move(new_dir, final_dir)
    except OSError as err:
        raise RpcFail(f"Cannot move the export {new_dir} to {final_dir}: {err}") from err
