"""Ganeti's on-disk layout, prefixed by GANETI_ROOTDIR when it is set.

DESIGN.md contract 1: with `GANETI_ROOTDIR` (whose last component equals
`GANETI_HOSTNAME`) every path is below that root and the node's name is
`GANETI_HOSTNAME`, like Ganeti's virtual-cluster mode. Unlike Ganeti, the
root also covers /etc/hosts, root's SSH directory and the services database,
so a test never touches the machine's own files.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from noded.errors import RpcFail

#: Prefix Ganeti's virtual-cluster masters put in front of file names.
VIRTUAL_PATH_PREFIX = "/###-VIRTUAL-PATH-###,"


class RootError(Exception):
    """GANETI_ROOTDIR / GANETI_HOSTNAME are inconsistent."""


@dataclass(frozen=True)
class Paths:
    """All paths of one node. `root` is "" for a real (non-virtual) node."""

    root: str = ""
    hostname: str = field(default_factory=socket.gethostname)

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        root = env.get("GANETI_ROOTDIR", "")
        hostname = env.get("GANETI_HOSTNAME", "")
        if root:
            root = os.path.normpath(root)
            if not os.path.isabs(root):
                raise RootError(f"GANETI_ROOTDIR must be an absolute path, not {root!r}")
            if not hostname:
                raise RootError("GANETI_ROOTDIR is set but GANETI_HOSTNAME is not")
            if os.path.basename(root) != hostname:
                raise RootError(
                    f"the last component of GANETI_ROOTDIR ({root}) must equal "
                    f"GANETI_HOSTNAME ({hostname})")
            return cls(root=root, hostname=hostname)
        return cls(root="", hostname=hostname or socket.getfqdn())

    # -- helpers --------------------------------------------------------
    def under_root(self, path: str) -> str:
        """The real location of an absolute node path such as /var/lib/ganeti."""
        return self.root + path if self.root else path

    def localize(self, path: str) -> str:
        """Map a file name sent by a master to the file on this node.

        Virtual-cluster masters send `/###-VIRTUAL-PATH-###,<path>`; it is
        mapped below the root. A plain absolute path is accepted as it is when
        there is no root, or when it already lies below the root; otherwise it
        is refused, as Ganeti refuses it.
        """
        if path.startswith(VIRTUAL_PATH_PREFIX):
            rest = path[len(VIRTUAL_PATH_PREFIX):]
            if not rest.startswith("/"):
                raise RpcFail(f"Path '{path}' is not a valid virtual path")
            local = os.path.normpath(self.under_root(rest))
            if self.root and not (local == self.root or local.startswith(self.root + "/")):
                raise RpcFail(f"Path '{path}' is outside the node root directory {self.root}")
            return local
        if not os.path.isabs(path):
            raise RpcFail(f"Path '{path}' is not absolute")
        norm = os.path.normpath(path)
        if self.root and not (norm == self.root or norm.startswith(self.root + "/")):
            raise RpcFail(f"Path '{path}' is not a virtual path")
        return norm

    def virtualize(self, path: str) -> str:
        """The inverse of localize for paths below the root (for answers)."""
        if self.root and path.startswith(self.root + "/"):
            return VIRTUAL_PATH_PREFIX + path[len(self.root):]
        return path

    # -- Ganeti's directories ------------------------------------------
    @property
    def data_dir(self) -> str:
        return self.under_root("/var/lib/ganeti")

    @property
    def run_dir(self) -> str:
        return self.under_root("/var/run/ganeti")

    @property
    def log_dir(self) -> str:
        return self.under_root("/var/log/ganeti")

    @property
    def conf_dir(self) -> str:
        return self.under_root("/etc/ganeti")

    @property
    def lock_dir(self) -> str:
        return self.under_root("/var/lock")

    @property
    def queue_dir(self) -> str:
        return os.path.join(self.data_dir, "queue")

    @property
    def queue_archive_dir(self) -> str:
        return os.path.join(self.queue_dir, "archive")

    @property
    def export_dir(self) -> str:
        return os.path.join(self.data_dir, "export")

    @property
    def crypto_dir(self) -> str:
        return os.path.join(self.run_dir, "crypto")

    @property
    def socket_dir(self) -> str:
        return os.path.join(self.run_dir, "socket")

    @property
    def hooks_dir(self) -> str:
        return os.path.join(self.conf_dir, "hooks")

    @property
    def file_storage_dir(self) -> str:
        return self.under_root("/srv/ganeti/file-storage")

    @property
    def shared_file_storage_dir(self) -> str:
        return self.under_root("/srv/ganeti/shared-file-storage")

    @property
    def file_storage_paths_file(self) -> str:
        return os.path.join(self.conf_dir, "file-storage-paths")

    # -- files -----------------------------------------------------------
    @property
    def server_cert(self) -> str:
        return os.path.join(self.data_dir, "server.pem")

    @property
    def client_cert(self) -> str:
        return os.path.join(self.data_dir, "client.pem")

    @property
    def config_file(self) -> str:
        return os.path.join(self.data_dir, "config.data")

    @property
    def watcher_pause_file(self) -> str:
        return os.path.join(self.data_dir, "watcher.pause")

    @property
    def ssconf_lock_file(self) -> str:
        return os.path.join(self.lock_dir, "ganeti-ssconf.lock")

    def ssconf_file(self, key: str) -> str:
        return os.path.join(self.data_dir, f"ssconf_{key}")

    @property
    def master_candidates_certs_file(self) -> str:
        return self.ssconf_file("master_candidates_certs")

    @property
    def noded_pid_file(self) -> str:
        return os.path.join(self.run_dir, "ganeti-noded.pid")

    @property
    def noded_log_file(self) -> str:
        return os.path.join(self.log_dir, "node-daemon.log")

    @property
    def etc_hosts(self) -> str:
        """/etc/hosts; below the root when there is one (a documented deviation)."""
        return self.under_root("/etc/hosts")

    @property
    def services_file(self) -> str:
        """The services database; below the root when there is one."""
        return self.under_root("/etc/services")

    @property
    def root_ssh_dir(self) -> str:
        """root's ~/.ssh; below the root when there is one."""
        return self.under_root("/root/.ssh")

    def ensure_dirs(self) -> None:
        """Create the directories the node daemon writes into (like Ganeti's ensure-dirs)."""
        for d, mode in [
            (self.data_dir, 0o755), (self.run_dir, 0o775), (self.log_dir, 0o750),
            (self.conf_dir, 0o755), (self.lock_dir, 0o755), (self.queue_dir, 0o700),
            (self.queue_archive_dir, 0o700), (self.crypto_dir, 0o700),
            (self.socket_dir, 0o750), (self.hooks_dir, 0o755),
            (os.path.join(self.data_dir, "rapi"), 0o750),
        ]:
            Path(d).mkdir(mode=mode, parents=True, exist_ok=True)
