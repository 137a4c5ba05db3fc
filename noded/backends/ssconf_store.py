"""Reading and writing the ssconf files ($DATA_DIR/ssconf_<key>).

The ssconf files are the small per-node copy of cluster facts (master node,
node lists, candidate certificates ...) that the master pushes with
write_ssconf_files. Ganeti's format: one value per line, a trailing newline
after non-empty content, at most 128 KiB per file, mode 0444, written under
an exclusive lock on $LOCK_DIR/ganeti-ssconf.lock.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from noded.backends.fileio import exclusive_lock, write_file_atomic
from noded.errors import RpcFail
from noded.paths import Paths

#: Ganeti 3.0's constants.VALID_SS_KEYS.
VALID_SS_KEYS = frozenset([
    "cluster_name", "cluster_tags", "enabled_user_shutdown", "file_storage_dir",
    "gluster_storage_dir", "hvparams_chroot", "hvparams_fake", "hvparams_kvm",
    "hvparams_lxc", "hvparams_xen-hvm", "hvparams_xen-pvm", "hypervisor_list",
    "instance_list", "maintain_node_health", "master_candidates",
    "master_candidates_certs", "master_candidates_ips", "master_ip", "master_netdev",
    "master_netmask", "master_node", "networks", "node_list", "node_primary_ips",
    "node_secondary_ips", "node_vm_capable", "nodegroups", "offline_nodes",
    "online_nodes", "primary_ip_family", "release_version", "shared_file_storage_dir",
    "ssh_ports", "uid_pool",
])

#: Largest ssconf file, in bytes (ssconf._MAX_SIZE).
MAX_SIZE = 128 * 1024
#: File mode of ssconf files (constants.SS_FILE_PERMS).
FILE_MODE = 0o444
#: Seconds to wait for the ssconf lock (ssconf.SSCONF_LOCK_TIMEOUT).
LOCK_TIMEOUT = 10.0


def _check_key(key: str) -> None:
    if key not in VALID_SS_KEYS:
        raise RpcFail(f"Invalid key requested from SSConf: '{key}'")


def read_value(paths: Paths, key: str) -> str:
    """The content of ssconf_<key> without trailing newlines.

    A missing or unreadable file raises RpcFail with Ganeti's wording,
    "Cluster configuration incomplete: Can't read ssconf file <path>: <error>".
    """
    _check_key(key)
    path = paths.ssconf_file(key)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(MAX_SIZE)
    except OSError as err:
        raise RpcFail(f"Cluster configuration incomplete: Can't read ssconf file {path}: {err}") from err
    if size > MAX_SIZE:
        raise RpcFail(f"File '{path}' has a size of {size} bytes (up to {MAX_SIZE} allowed)")
    return data.decode("utf-8").rstrip("\n")


def read_lines(paths: Paths, key: str) -> list[str]:
    """The lines of ssconf_<key> (empty list for an empty file)."""
    return read_value(paths, key).splitlines()


def read_map(paths: Paths, key: str) -> dict[str, str]:
    """A `name=value` per line ssconf file as a dict."""
    result: dict[str, str] = {}
    for line in read_lines(paths, key):
        name, sep, value = line.partition("=")
        if not sep:
            raise RpcFail(f"Invalid line in ssconf file {paths.ssconf_file(key)}: {line!r}")
        result[name] = value
    return result


def format_value(key: str, value: object) -> bytes:
    """The file content for one value: a string, or a list of lines joined by newlines."""
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            raise RpcFail(f"Invalid value for ssconf key '{key}': list items must be strings")
        text = "\n".join(value)
    elif isinstance(value, str):
        text = value
    else:
        raise RpcFail(f"Invalid value for ssconf key '{key}': expected a string or a list of strings,"
                      f" got {type(value).__name__}")
    if text and not text.endswith("\n"):
        text += "\n"
    data = text.encode("utf-8")
    if len(data) > MAX_SIZE:
        raise RpcFail(f"Value '{key}' has a length of {len(data)} bytes, but only up to {MAX_SIZE} are"
                      " allowed")
    return data


def write_values(paths: Paths, values: Mapping[str, object]) -> None:
    """Write the given ssconf keys (others are left alone), all under the ssconf lock.

    Every key and value is checked before anything is written, so a bad
    request changes nothing.
    """
    contents: list[tuple[str, bytes]] = []
    for key, value in values.items():
        _check_key(key)
        contents.append((paths.ssconf_file(key), format_value(key, value)))
    os.makedirs(os.path.dirname(paths.ssconf_lock_file), exist_ok=True)
    with exclusive_lock(paths.ssconf_lock_file, LOCK_TIMEOUT, "ssconf"):
        for path, data in contents:
            write_file_atomic(path, data, mode=FILE_MODE)
