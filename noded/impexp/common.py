"""Facts shared by the import/export procedures and the transfer daemon.

The stream on the wire is Ganeti's: inside a TLS connection (both sides
present a certificate and verify the peer's against the `ca` file), the
compressed bytes of `M=<magic>` followed by the data. So a transfer works
with a Ganeti import/export daemon (socat + openssl) on the other end.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re

MODE_IMPORT = "import"
MODE_EXPORT = "export"
MODES = (MODE_IMPORT, MODE_EXPORT)

#: Files of a status directory (Ganeti's _IES_STATUS_FILE, _IES_PID_FILE, _IES_CA_FILE).
STATUS_FILE = "status"
PID_FILE = "pid"
CA_FILE = "ca"
#: The environment of an OS import/export script, as JSON (ours; Ganeti passes it to its daemon).
SCRIPT_ENV_FILE = "script-env.json"

#: Compression methods Ganeti knows (constants.IEC_ALL); other plain program names are run as filters.
COMPRESS_NONE = "none"
COMPRESS_GZIP = "gzip"
COMPRESS_GZIP_FAST = "gzip-fast"
COMPRESS_GZIP_SLOW = "gzip-slow"
COMPRESS_LZOP = "lzop"
GZIP_METHODS = (COMPRESS_GZIP, COMPRESS_GZIP_FAST, COMPRESS_GZIP_SLOW)
#: A compression tool name we are willing to run (Ganeti's cluster compression_tools rule).
COMPRESS_TOOL_RE = re.compile(r"^[-_a-zA-Z0-9]+$")

#: What a magic string may look like (constants.IE_MAGIC_RE).
MAGIC_RE = re.compile(r"^[-_.a-zA-Z0-9]{5,100}$")
#: In front of the magic on the wire, so it cannot be taken for an option of echo (Ganeti's "M=").
MAGIC_PREFIX = "M="

#: --expected-size value meaning "the export script tells the size on $EXP_SIZE_FD".
CUSTOM_SIZE = "fd"
#: Connection attempts of an export, and seconds per attempt (RIE_CONNECT_RETRIES / _ATTEMPT_TIMEOUT).
CONNECT_RETRIES = 10
CONNECT_ATTEMPT_TIMEOUT = 20
#: Seconds an import waits for its peer unless told otherwise (the daemon's DEFAULT_CONNECT_TIMEOUT).
DEFAULT_CONNECT_TIMEOUT = 60
#: Ciphers both ends allow (constants.OPENSSL_CIPHERS).
OPENSSL_CIPHERS = "HIGH:-DES:-3DES:-EXPORT:-DH"

MIB = 1024 * 1024
#: Bytes moved at once (the daemon's BUFSIZE).
BUFSIZE = MIB


def bytes_to_mib(value: int) -> int:
    """Whole MiB, rounded (Ganeti's BytesToMebibyte)."""
    return round(value / MIB)


def read_locked_pid(path: str) -> int | None:
    """The PID in a daemon's PID file while the daemon holds its lock, else None (ReadLockedPidFile).

    A daemon that exited (or was killed) no longer holds the lock, so its
    PID, which may have been reused, is never returned.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            text = os.read(fd, 100).decode("ascii", errors="replace").strip()
            return int(text) if text.isdigit() else None
        return None
    finally:
        os.close(fd)


def write_locked_pid(path: str) -> int:
    """Write this process's PID to `path` and hold an exclusive lock on it until exit; the open fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd
