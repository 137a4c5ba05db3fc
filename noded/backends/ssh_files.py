"""root's SSH files and Ganeti's public-key file, in Ganeti's formats.

- `authorized_keys` (root's ~/.ssh): one key per line. Like Ganeti, two
  lines are the same key when both start with ssh-rsa/ssh-dss and their
  first two fields match (whitespace and comments ignored); other lines
  (options, other key types) compare by all their fields.
- `$DATA_DIR/ganeti_pub_keys`: "<node uuid> <key line>" per line, the keys
  of the potential master candidates. A node added by name first is later
  re-keyed by its UUID. The file is rewritten atomically with mode 0600.

With GANETI_ROOTDIR set, root's ~/.ssh is below the root (Paths.root_ssh_dir).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from noded.backends.fileio import remove_file, write_file_atomic
from noded.errors import RpcFail
from noded.paths import Paths

#: SSH key kinds Ganeti manages (constants.SSHK_ALL), in a fixed order.
KEY_KINDS = ("dsa", "ecdsa", "rsa")
#: Key types whose authorized_keys lines compare by type and key only (constants.SSHAK_ALL).
_SIMPLE_KEY_TYPES = frozenset(["ssh-dss", "ssh-rsa"])
#: Suffix of the master's new key files while its keys are renewed (SSHS_MASTER_SUFFIX).
MASTER_SUFFIX = "_master_tmp"
#: Mode of root's ~/.ssh when it has to be created (constants.SECURE_DIR_MODE).
SSH_DIR_MODE = 0o700
#: Mode of the public-key file and of a new authorized_keys file.
KEY_FILE_MODE = 0o600

#: A mapping of node UUID to its key lines.
KeyMap = dict[str, list[str]]


@dataclass(frozen=True)
class SshFiles:
    """Where root's SSH files and the cluster's public-key file are on this node."""

    paths: Paths

    @property
    def ssh_dir(self) -> str:
        return self.paths.root_ssh_dir

    @property
    def authorized_keys(self) -> str:
        return os.path.join(self.ssh_dir, "authorized_keys")

    @property
    def public_keys(self) -> str:
        return os.path.join(self.paths.data_dir, "ganeti_pub_keys")

    def key_pair(self, kind: str, suffix: str = "") -> tuple[str, str]:
        """(private, public) key file of root for `kind` ("rsa" ...)."""
        if kind not in KEY_KINDS:
            raise RpcFail(f"Unknown SSH key type '{kind}' (expected one of {', '.join(KEY_KINDS)})")
        private = os.path.join(self.ssh_dir, f"id_{kind}{suffix}")
        return private, private + ".pub"


# -- authorized_keys -------------------------------------------------------

def _key_fields(line: str) -> tuple[bool, list[str]]:
    parts = line.split()
    if parts and parts[0] in _SIMPLE_KEY_TYPES:
        return False, parts[:2]
    return True, parts


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise RpcFail(f"Cannot read {path}: {err.strerror}") from err


def _rewrite(path: str, text: str, default_mode: int) -> None:
    """Write `text` atomically, keeping an existing file's mode and owner."""
    try:
        st = os.stat(path)
        mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    except FileNotFoundError:
        mode, uid, gid = default_mode, -1, -1
    write_file_atomic(path, text.encode("utf-8"), mode=mode, uid=uid, gid=gid)


def _ensure_ssh_dir(files: SshFiles) -> None:
    if not os.path.isdir(files.ssh_dir):
        os.makedirs(files.ssh_dir, mode=SSH_DIR_MODE, exist_ok=True)
        os.chmod(files.ssh_dir, SSH_DIR_MODE)


def authorized_keys_add(files: SshFiles, keys: Iterable[str]) -> None:
    """Append the keys not yet in root's authorized_keys (the file is created if missing)."""
    _ensure_ssh_dir(files)
    text = _read_text(files.authorized_keys) or ""
    present = [_key_fields(line) for line in text.splitlines()]
    missing: list[str] = []
    for key in keys:
        fields = _key_fields(key)
        if fields not in present:
            present.append(fields)
            missing.append(key.rstrip("\r\n"))
    if not missing:
        return
    if text and not text.endswith("\n"):
        text += "\n"
    text += "".join(f"{key}\n" for key in missing)
    _rewrite(files.authorized_keys, text, KEY_FILE_MODE)


def authorized_keys_remove(files: SshFiles, keys: Iterable[str]) -> None:
    """Remove the lines holding any of `keys` from root's authorized_keys (missing file: nothing to do)."""
    text = _read_text(files.authorized_keys)
    if text is None:
        return
    unwanted = [_key_fields(key) for key in keys]
    lines = text.splitlines(True)
    kept = [line for line in lines if _key_fields(line) not in unwanted]
    if len(kept) != len(lines):
        _rewrite(files.authorized_keys, "".join(kept), KEY_FILE_MODE)


# -- ganeti_pub_keys ---------------------------------------------------------

def _parse_key_line(line: str) -> tuple[str | None, str | None]:
    if not line.rstrip():
        return None, None
    chunks = line.split(" ")
    if len(chunks) < 2:
        raise RpcFail(f"Error parsing public SSH key file. Line: '{line}'")
    return chunks[0], " ".join(chunks[1:]).rstrip()


def query_public_keys(files: SshFiles, uuids: Iterable[str] | None) -> KeyMap:
    """The keys of the given node UUIDs (or of all nodes for None) in ganeti_pub_keys."""
    text = _read_text(files.public_keys)
    if text is None:
        raise RpcFail(f"Cannot read the public key file {files.public_keys}: it does not exist")
    wanted = None if uuids is None else set(uuids)
    result: KeyMap = {}
    for line in text.splitlines(True):
        uuid, key = _parse_key_line(line)
        if uuid is None or key is None:
            continue
        if wanted is None or uuid in wanted:
            result.setdefault(uuid, []).append(key)
    return result


#: Processes one (identifier, key) entry: returns (matched, entry to keep or None).
_LineFn = Callable[[str, str], tuple[bool, tuple[str, str] | None]]


def _edit_public_keys(files: SshFiles, process: _LineFn,
                      if_absent: tuple[str, str] | None = None) -> None:
    """Rewrite ganeti_pub_keys entry by entry; append `if_absent` when nothing matched."""
    text = _read_text(files.public_keys) or ""
    entries: list[tuple[str, str]] = []
    matched = False
    for line in text.splitlines(True):
        ident, key = _parse_key_line(line)
        if not ident or key is None:
            continue
        hit, keep = process(ident, key)
        matched = matched or hit
        if keep is not None:
            entries.append(keep)
    if not matched and if_absent is not None:
        entries.append(if_absent)
    data = "".join(f"{ident} {key}\n" for ident, key in entries)
    write_file_atomic(files.public_keys, data.encode("utf-8"), mode=KEY_FILE_MODE)


def public_key_add(files: SshFiles, uuid: str, key: str) -> None:
    """Add "<uuid> <key>" unless that exact entry is there."""
    key = key.rstrip("\r\n")
    _edit_public_keys(files, lambda i, k: (i == uuid and k == key, (i, k)), if_absent=(uuid, key))


def public_key_remove(files: SshFiles, uuid: str) -> None:
    """Remove every key of `uuid`."""
    _edit_public_keys(files, lambda i, k: (True, None) if i == uuid else (False, (i, k)))


def public_key_rename(files: SshFiles, uuid: str, name: str) -> None:
    """Re-key the entries filed under the node's name by its UUID."""
    _edit_public_keys(files, lambda i, k: (True, (uuid, k)) if i == name else (False, (i, k)))


def public_keys_clear(files: SshFiles) -> None:
    write_file_atomic(files.public_keys, b"", mode=KEY_FILE_MODE)


def public_keys_override(files: SshFiles, keys: KeyMap) -> None:
    data = "".join(f"{uuid} {key}\n" for uuid, node_keys in keys.items() for key in node_keys)
    write_file_atomic(files.public_keys, data.encode("utf-8"), mode=KEY_FILE_MODE)


# -- key generation ----------------------------------------------------------

def backup_file(path: str) -> str:
    """Copy `path` to "<path>.backup-<timestamp>.<random>" (Ganeti's CreateBackup)."""
    directory, base = os.path.split(path)
    prefix = f"{base}.backup-{time.strftime('%Y-%m-%d_%H_%M_%S')}."
    fd, backup = tempfile.mkstemp(prefix=prefix, dir=directory)
    with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return backup


def generate_root_key(files: SshFiles, kind: str, bits: int, suffix: str = "") -> str:
    """Make a new key pair for root with ssh-keygen and authorize it; returns the public key line.

    Existing files of that name are backed up first (Ganeti's InitSSHSetup).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
        raise RpcFail(f"Invalid SSH key length {bits!r}: expected a positive number of bits")
    private, public = files.key_pair(kind, suffix)
    _ensure_ssh_dir(files)
    for name in (private, public):
        if os.path.isfile(name):
            backup_file(name)
        remove_file(name)
    try:
        result = subprocess.run(
            ["ssh-keygen", "-b", str(bits), "-t", kind, "-f", private, "-q", "-N", ""],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RpcFail(f"Could not generate ssh keypair, error {err}") from err
    if result.returncode != 0:
        raise RpcFail(f"Could not generate ssh keypair, error {(result.stdout + result.stderr).strip()}")
    with open(public, encoding="utf-8") as f:
        key = f.read()
    authorized_keys_add(files, [key])
    return key.rstrip("\r\n")


# -- what Ganeti's ssh-update tool does on a node ------------------------------

@dataclass
class SshUpdate:
    """Changes Ganeti's ssh-update tool applies to one node's SSH files.

    `authorized_keys` is (action, {uuid: [key]}) with action "add" or
    "remove"; `public_keys` is (action, {uuid: [key]}) with action
    "override", "add", "replace_or_add", "remove" or "clear";
    `generate` is (key type, bits, file-name suffix).
    """

    authorized_keys: tuple[str, KeyMap] | None = None
    public_keys: tuple[str, KeyMap] | None = None
    generate: tuple[str, int, str] | None = None

    def changes_anything(self) -> bool:
        return any(x is not None for x in (self.authorized_keys, self.public_keys, self.generate))


def apply_update(files: SshFiles, update: SshUpdate) -> None:
    """Apply an SshUpdate to this node's files, in the tool's order."""
    if update.authorized_keys is not None:
        action, key_map = update.authorized_keys
        keys = [k for node_keys in key_map.values() for k in node_keys]
        if action == "add":
            authorized_keys_add(files, keys)
        elif action == "remove":
            authorized_keys_remove(files, keys)
        else:
            raise RpcFail(f"Action '{action}' not implemented for authorized keys.")
    if update.public_keys is not None:
        action, key_map = update.public_keys
        if action == "override":
            public_keys_override(files, key_map)
        elif action in ("add", "replace_or_add"):
            for uuid, node_keys in key_map.items():
                if action == "replace_or_add":
                    public_key_remove(files, uuid)
                for key in node_keys:
                    public_key_add(files, uuid, key)
        elif action == "remove":
            for uuid in key_map:
                public_key_remove(files, uuid)
        elif action == "clear":
            public_keys_clear(files)
        else:
            raise RpcFail(f"Action '{action}' not implemented for public keys.")
    if update.generate is not None:
        kind, bits, suffix = update.generate
        generate_root_key(files, kind, bits, suffix)
