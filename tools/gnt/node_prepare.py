"""Preparing a node on this machine without SSH (ours): what Ganeti's SetupNodeDaemon does over SSH.

A virtual node is a GANETI_ROOTDIR of its own on this machine (its last
component is the node's name) whose node daemon listens on the node's own
127.0.0.x address. `prepare_local_node` makes it ready for OP_NODE_ADD:

1. the master root's etc/hosts and etc/services are copied to the node's
   root (the cluster's names and the node daemon port: every node of a
   cluster uses the same legacy port, on its own address);
2. the cluster certificate ($DATA_DIR/server.pem, key included, as Ganeti
   sends it) is copied, and the node's client.pem is generated, signed by
   it (Ganeti's scheme, noded.certs);
3. the master's ssconf files are copied, among them
   ssconf_master_candidates_certs: the node daemon then accepts the
   master's client certificate (the TLS rule), and knows its cluster;
4. the node gets the file storage directories of the cluster's enabled
   file-based templates (cluster.file_storage_dir and
   shared_file_storage_dir), as it sees them: a path the master sends is
   mapped below the node's root (noded.backends.storagepaths.node_path), so
   those mapped directories are created and listed in the node's
   $CONF_DIR/file-storage-paths. Ganeti leaves that file to the
   administrator of each node (it is an ancillary file that `gnt-cluster
   verify` checks but never redistributes); this is our node setup doing
   it, so that verify finds the path usable (no
   ENODEFILESTORAGEPATHUNUSABLE);
5. the node's gRPC port is recorded in the master's
   $DATA_DIR/node-grpc-ports when it is not 1812, so the master reaches it;
6. our ganeti-noded is started in the node's root, bound to its address,
   and must answer `version` to the master's client certificate.

Interface::

    prepare_local_node(master: Paths, node: Paths, address, port, grpc_port) -> int (the daemon's pid)
        GanetiError (OpPrereqError / OpExecError) when the node cannot be prepared; a daemon
        started before the failure is stopped again
    record_grpc_port(master: Paths, name, port | None)      add, replace (or, with None, drop) its line
    node_storage_dirs(master: Paths, node: Paths) -> [dirs]  step 4's directories (node files)
"""

from __future__ import annotations

import glob
import os
import shutil

from masterd.config.model import ConfigError, load
from masterd.instances.model import virtual_path
from masterd.ssconf import node_grpc_ports_file
from noded import certs
from noded.backends.fileio import write_file_atomic
from noded.backends.storagepaths import node_path
from noded.context import DEFAULT_GRPC_PORT
from noded.paths import Paths
from tools.gnt import node_daemon
from tools.gnt.cluster_init import add_file_storage_paths
from tools.gnt.errors import GanetiError

SSCONF_MODE = 0o444


def _prereq(text: str) -> GanetiError:
    return GanetiError("OpPrereqError", text, "wrong_state")


def _copy(src: str, dst: str, mode: int) -> None:
    with open(src, "rb") as f:
        data = f.read()
    write_file_atomic(dst, data, mode=mode)


def record_grpc_port(master: Paths, name: str, port: int | None) -> None:
    """Set (or drop, with None or 1812) `name`'s line in the master's node-grpc-ports."""
    path = node_grpc_ports_file(master)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    kept = [line for line in lines if line.split("#", 1)[0].split()[:1] != [name]]
    if port is not None and port != DEFAULT_GRPC_PORT:
        kept.append(f"{name} {port}")
    if kept != lines:
        write_file_atomic(path, "".join(line + "\n" for line in kept).encode(), mode=0o644)


#: The file-based disk templates and the cluster parameter naming their directory.
_FILE_TEMPLATES = (("file", "file_storage_dir"), ("sharedfile", "shared_file_storage_dir"))


def node_storage_dirs(master: Paths, node: Paths) -> list[str]:
    """The node's own files for the cluster's file storage directories (of enabled templates)."""
    try:
        cluster = load(master.config_file).cluster
    except (OSError, ConfigError) as err:
        raise _prereq(f"Cannot read the cluster configuration {master.config_file}: {err}") from None
    templates = cluster.get("enabled_disk_templates") or []
    # The master sends these paths as virtual paths (masterd.instances.model.virtual_path): below
    # its root they name the same place below every node's root.
    return [node_path(node, virtual_path(master.root, str(cluster[key]))) for template, key in _FILE_TEMPLATES
            if template in templates and cluster.get(key)]


def _storage_dirs(master: Paths, node: Paths) -> None:
    dirs = node_storage_dirs(master, node)
    for path in dirs:
        os.makedirs(path, 0o750, exist_ok=True)
    if dirs:
        os.makedirs(node.conf_dir, exist_ok=True)
        add_file_storage_paths(node, dirs)


def _write_files(master: Paths, node: Paths) -> None:
    for directory in (node.data_dir, os.path.dirname(node.etc_hosts), node.run_dir):
        os.makedirs(directory, exist_ok=True)
    if master.root:
        for src, dst in ((master.etc_hosts, node.etc_hosts), (master.services_file, node.services_file)):
            if os.path.exists(src):
                shutil.copyfile(src, dst)
    _copy(master.server_cert, node.server_cert, 0o440)
    certs.write_client_pem(node.client_cert, node.server_cert, node.hostname)
    for src in sorted(glob.glob(os.path.join(master.data_dir, "ssconf_*"))):
        _copy(src, os.path.join(node.data_dir, os.path.basename(src)), SSCONF_MODE)
    _storage_dirs(master, node)


def prepare_local_node(master: Paths, node: Paths, address: str, port: int, grpc_port: int) -> int:
    """Make `node` a prepared node on this machine and start its daemon (module docstring)."""
    if not os.path.exists(master.server_cert):
        raise _prereq(f"No cluster certificate in {master.data_dir}: run this on the master of an"
                      " initialised cluster")
    running = node_daemon.read_pid(node.noded_pid_file)
    if running is not None and not node_daemon.pid_gone(running, 0.0):
        raise _prereq(f"A node daemon (pid {running}) already runs in {node.root}")
    if os.path.exists(node.config_file):
        raise _prereq(f"{node.root} already holds a cluster configuration ({node.config_file})")
    try:
        _write_files(master, node)
    except OSError as err:
        raise GanetiError("OpExecError", f"Cannot prepare the node's root {node.root}: {err}") from None
    record_grpc_port(master, node.hostname, grpc_port)
    pid = node_daemon.start_noded(node, address, port, grpc_port)
    try:
        # the master's client certificate: the node trusts only the candidates' (its ssconf)
        node_daemon.wait_node_version(master, address, port)
    except GanetiError:
        node_daemon.stop_pid(pid)
        raise GanetiError("OpExecError", f"Node daemon on {node.hostname} ({address}:{port}) didn't answer"
                                         f" queries within {node_daemon.NODED_WAIT:g} seconds") from None
    except BaseException:
        node_daemon.stop_pid(pid)
        raise
    return pid
