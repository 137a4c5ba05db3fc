"""The status file a transfer daemon keeps up to date (Ganeti's objects.ImportExportStatus, as JSON).

Keys are Ganeti's: `recent_output` (last 20 lines of notable output),
`listen_port`, `connected`, `progress_mbytes`, `progress_throughput`
(MiB/s), `progress_percent`, `progress_eta` (seconds), `exit_status`,
`error_message`, `ctime` and `mtime` (seconds since the epoch). Keys whose
value is unknown are left out, as Ganeti's ToDict leaves out None. The file
is replaced atomically (mode 0400) on every write.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

#: Lines of output kept (the daemon's MAX_RECENT_OUTPUT_LINES).
MAX_RECENT_OUTPUT_LINES = 20
#: Seconds between routine writes (the daemon's MIN_UPDATE_INTERVAL); state changes are written at once.
MIN_UPDATE_INTERVAL = 5.0
#: Progress samples older than this many seconds do not count for the throughput (DD_THROUGHPUT_INTERVAL).
THROUGHPUT_WINDOW = 60.0


class StatusFile:
    """The status of one transfer, written to `path`. Safe to use from several threads."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._data: dict[str, Any] = {"recent_output": [], "ctime": time.time()}
        self._samples: list[tuple[float, float]] = []
        self._written: float | None = None

    # -- state ---------------------------------------------------------------------

    def add_output(self, line: str) -> None:
        """Keep `line` among the recent output."""
        with self._lock:
            lines: list[str] = self._data["recent_output"]
            lines.append(line)
            del lines[:-MAX_RECENT_OUTPUT_LINES]

    def set_listen_port(self, port: int) -> None:
        with self._lock:
            self._data["listen_port"] = port

    def set_connected(self) -> None:
        with self._lock:
            self._data["connected"] = True

    @property
    def connected(self) -> bool:
        with self._lock:
            return bool(self._data.get("connected"))

    def set_progress(self, done_bytes: int, expected_mib: int | None) -> None:
        """Record that `done_bytes` have gone through; throughput, percentage and ETA follow."""
        now = time.monotonic()
        mbytes = done_bytes / (1024 * 1024)
        with self._lock:
            self._samples.append((now, mbytes))
            self._samples = [s for s in self._samples if s[0] >= now - THROUGHPUT_WINDOW] or [(now, mbytes)]
            (t0, m0), (t1, m1) = self._samples[0], self._samples[-1]
            throughput = (m1 - m0) / (t1 - t0) if t1 > t0 else None
            percent = eta = None
            if expected_mib is not None:
                if expected_mib:
                    percent = max(0.0, min(100.0, 100.0 * mbytes / expected_mib))
                if throughput:
                    eta = max(0.0, (expected_mib - mbytes) / throughput)
            # Whole MiB, as Ganeti reports it (BytesToMebibyte of dd's byte count).
            self._data["progress_mbytes"] = round(mbytes)
            for key, value in (("progress_throughput", throughput), ("progress_percent", percent),
                               ("progress_eta", eta)):
                if value is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = round(value, 2)

    def set_exit_status(self, status: int, error_message: str | None) -> None:
        """The transfer's outcome: 0 and no message for success, else a non-zero status and why."""
        assert status == 0 or error_message
        with self._lock:
            self._data["exit_status"] = status
            if error_message:
                self._data["error_message"] = error_message

    @property
    def succeeded(self) -> bool:
        """True once the transfer ended without an error."""
        with self._lock:
            return self._data.get("exit_status") == 0

    # -- writing -------------------------------------------------------------------

    def update(self, force: bool = False) -> None:
        """Write the file when `force`, when never written, or when the last write is old enough."""
        with self._write_lock:
            self._write(force)

    def _write(self, force: bool) -> None:
        with self._lock:
            now = time.time()
            if not force and self._written is not None and now < self._written + MIN_UPDATE_INTERVAL:
                return
            self._written = now
            self._data["mtime"] = now
            text = json.dumps(self._data)
        tmp = f"{self._path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
        os.chmod(tmp, 0o400)
        os.replace(tmp, self._path)
