"""Files the master replicates to nodes: uploads, ssconf, file info, /etc/hosts.

upload_file / upload_file_single only write the files Ganeti allows
(backend._BuildUploadFileList): the cluster configuration, SSH known
hosts, the RAPI/SPICE certificates, RAPI users, the confd HMAC key, the
cluster domain secret, the VNC password, /etc/hosts and the hypervisors'
ancillary files. With GANETI_ROOTDIR set every one of them, /etc/hosts
included, lies below the root (a documented deviation: Ganeti writes the
machine's own /etc/hosts even in virtual-cluster mode).
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import stat
from collections.abc import Callable
from typing import Any

from noded.backends import ssconf_store
from noded.backends.fileio import decode_payload, write_file_atomic
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths
from noded.registry import procedure

#: Node paths (before the root prefix) that uploads may write, besides the
#: data-directory files below. The hypervisor ancillary files are those of
#: Ganeti 3.0's kvm (kvm-vif-bridge) and xen-pvm/xen-hvm hypervisors.
_UPLOAD_NODE_PATHS = (
    "/etc/ganeti/vnc-cluster-password",
    "/etc/ganeti/kvm-vif-bridge",
    "/etc/xen/xend-config.sxp",
    "/etc/xen/xen/xl.conf",
    "/etc/xen/scripts/vif-bridge",
)
#: Files below $DATA_DIR that uploads may write.
_UPLOAD_DATA_FILES = (
    "config.data", "known_hosts", "rapi.pem", "spice.pem", "spice-ca.pem",
    "rapi/users", "hmac.key", "cluster-domain-secret",
)
#: Paths Ganeti never virtualises (V_CLUSTER_VPATH_WHITELIST); here they map below the root.
_UNVIRTUALISED = ("/etc/hosts",)
#: Default mode of an uploaded file when the master sends none (Ganeti's mkstemp default).
_DEFAULT_UPLOAD_MODE = 0o600
#: Mode of a missing parent directory of an upload target (e.g. $DATA_DIR/rapi, as ensure-dirs makes it).
_UPLOAD_DIR_MODE = 0o750
#: Mode of a newly created hosts file.
_ETC_HOSTS_MODE = 0o644


def allowed_upload_files(paths: Paths) -> frozenset[str]:
    """The files (real locations on this node) that upload_file may write."""
    files = {os.path.join(paths.data_dir, name) for name in _UPLOAD_DATA_FILES}
    files.update(paths.under_root(p) for p in _UPLOAD_NODE_PATHS)
    files.add(paths.etc_hosts)
    return frozenset(files)


def _localize_upload_target(paths: Paths, file_name: object) -> str:
    if not isinstance(file_name, str):
        raise RpcFail(f"Invalid file name {file_name!r}: expected a string")
    if file_name == "/etc/hosts":
        return paths.etc_hosts
    return paths.localize(file_name)


def _lookup_user(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise RpcFail(f"Unknown user '{name}': it does not exist on this node") from None


def _lookup_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise RpcFail(f"Unknown group '{name}': it does not exist on this node") from None


def _check_mode(mode: object) -> int:
    if mode is None:
        return _DEFAULT_UPLOAD_MODE
    if isinstance(mode, bool) or not isinstance(mode, int) or mode < 0:
        raise RpcFail(f"Invalid file mode {mode!r}: expected a non-negative integer")
    # Masters send the source file's whole st_mode (0o100640 = 33184 from wconfd);
    # only the permission bits apply, as with chmod(2).
    return mode & 0o7777


def _check_times(atime: object, mtime: object) -> tuple[float, float] | None:
    if atime is None and mtime is None:
        return None
    if atime is None or mtime is None:
        raise RpcFail("Both atime and mtime must be either set or None")
    for value in (atime, mtime):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RpcFail(f"Invalid file time {value!r}: expected seconds since the epoch")
    assert isinstance(atime, (int, float)) and isinstance(mtime, (int, float))
    return float(atime), float(mtime)


def _upload(ctx: NodeContext, file_name: object, data: object, mode: object, uid: object,
            gid: object, atime: object, mtime: object) -> None:
    path = _localize_upload_target(ctx.paths, file_name)
    if path not in allowed_upload_files(ctx.paths):
        raise RpcFail(f"Filename passed to UploadFile not in allowed upload targets: '{path}'")
    content = decode_payload(data)
    if not (isinstance(uid, str) and isinstance(gid, str)):
        raise RpcFail("Invalid username/groupname type")
    file_mode = _check_mode(mode)
    times = _check_times(atime, mtime)
    owner, group = _lookup_user(uid), _lookup_group(gid)
    os.makedirs(os.path.dirname(path), mode=_UPLOAD_DIR_MODE, exist_ok=True)
    write_file_atomic(path, content, mode=file_mode, uid=owner, gid=group, times=times)


@procedure("upload_file")
def upload_file(ctx: NodeContext, details: Any) -> None:
    """Write one allowed file; `details` is [name, [enc, data], mode, user, group, atime, mtime]."""
    if not isinstance(details, (list, tuple)) or len(details) != 7:
        raise RpcFail("upload_file expects one argument: [file_name, [encoding, data], mode, user,"
                      " group, atime, mtime]")
    _upload(ctx, *details)


@procedure("upload_file_single")
def upload_file_single(ctx: NodeContext, file_name: object, data: object, mode: object,
                       uid: object, gid: object, atime: object, mtime: object) -> None:
    """Write one allowed file (the same as upload_file with the seven fields as arguments)."""
    _upload(ctx, file_name, data, mode, uid, gid, atime, mtime)


@procedure("write_ssconf_files")
def write_ssconf_files(ctx: NodeContext, values: object) -> None:
    """Write the ssconf files for the given keys; keys not given are left alone."""
    if not isinstance(values, dict):
        raise RpcFail(f"write_ssconf_files expects an object of ssconf values, got {type(values).__name__}")
    ssconf_store.write_values(ctx.paths, values)


@procedure("get_file_info")
def get_file_info(ctx: NodeContext, file_path: object) -> list[Any]:
    """[True, {"size": bytes}] for an existing file, [False, {}] otherwise."""
    if not isinstance(file_path, str):
        raise RpcFail(f"Invalid file path {file_path!r}: expected a string")
    path = ctx.paths.localize(file_path)
    root = ctx.paths.root
    if root and not path.startswith(root + os.sep):
        raise RpcFail(f"Path '{file_path}' is outside the node root {root}")
    try:
        st = os.stat(path)
    except OSError:
        return [False, {}]
    return [True, {"size": st.st_size}]


# -- /etc/hosts ------------------------------------------------------------

def hosts_set_entry(text: str, ip: str, names: list[str]) -> str:
    """`text` with the entry for `ip` replaced by "<ip>\\t<names>" (added at the end if absent).

    Ganeti's SetEtcHostsEntry: every non-comment line for the same address
    is dropped, the first one being replaced in place.
    """
    entry = f"{ip}\t{' '.join(dict.fromkeys(names))}\n"
    out: list[str] = []
    written = False
    for line in text.splitlines(True):
        fields = line.split()
        if fields and not fields[0].startswith("#") and fields[0] == ip:
            if not written:
                out.append(entry)
                written = True
            continue
        out.append(line)
    if not written:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.append(entry)
    return "".join(out)


def hosts_remove_name(text: str, name: str) -> str:
    """`text` without `name`; address lines left without names are dropped (RemoveEtcHostsEntry)."""
    out: list[str] = []
    for line in text.splitlines(True):
        fields = line.split()
        if len(fields) > 1 and not fields[0].startswith("#") and name in fields[1:]:
            rest = [n for n in fields[1:] if n != name]
            if rest:
                out.append(f"{fields[0]} {' '.join(rest)}\n")
            continue
        out.append(line)
    return "".join(out)


def _check_host_name(name: object) -> str:
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) or name.startswith("#"):
        raise RpcFail(f"Invalid host name {name!r}")
    return name


def _check_ip(ip: object) -> str:
    if not isinstance(ip, str):
        raise RpcFail(f"Invalid IP address {ip!r}")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise RpcFail(f"Invalid IP address {ip!r}") from None
    return ip


def _rewrite_hosts(path: str, edit: Callable[[str], str]) -> None:
    """Apply `edit` to the hosts file, keeping its mode and owner; a missing file counts as empty."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        st = os.stat(path)
        mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    except FileNotFoundError:
        text, mode, uid, gid = "", _ETC_HOSTS_MODE, -1, -1
    except OSError as err:
        raise RpcFail(f"Cannot read the hosts file {path}: {err.strerror}") from err
    new = edit(text)
    if new != text:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_file_atomic(path, new.encode("utf-8"), mode=mode, uid=uid, gid=gid)


@procedure("etc_hosts_modify")
def etc_hosts_modify(ctx: NodeContext, mode: object, name: object, ip: object) -> bool:
    """Add ("add", name, ip) or remove ("remove", name, None) a host in the hosts file.

    Adding writes "<ip>\\t<name> <short name>", replacing the address's
    previous entry; removing drops the name and its short form from every
    line. Returns True.
    """
    host = _check_host_name(name)
    path = ctx.paths.etc_hosts
    if mode == "add":
        if not ip:
            raise RpcFail("Mode 'add' needs 'ip' parameter, but parameter not present")
        address = _check_ip(ip)
        _rewrite_hosts(path, lambda text: hosts_set_entry(text, address, [host, host.split(".")[0]]))
    elif mode == "remove":
        if ip:
            raise RpcFail("Mode 'remove' does not allow 'ip' parameter, but parameter is present")
        short = host.split(".")[0]
        _rewrite_hosts(path, lambda text: hosts_remove_name(hosts_remove_name(text, host), short))
    else:
        raise RpcFail(f"Mode not supported: {mode!r} (expected 'add' or 'remove')")
    return True
