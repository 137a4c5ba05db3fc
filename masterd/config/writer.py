"""ConfigWriter: config.data written atomically and durably, its serial number only growing.

Every write goes to a temporary file in $DATA_DIR, is fsynced, renamed over
config.data and the directory fsynced (noded.backends.fileio's
write_file_atomic), with mode 0640 as Ganeti's wconfd leaves it. A write
whose serial_no is not greater than the last one written (or than the file
found at start) is refused with ConfigError: two different configurations
never carry the same serial number, which is what nodes and candidates
compare. After each durable write, every registered callback is called with
the ConfigData and the exact bytes written (the distribution hook: upload to
master candidates, ssconf to all nodes); a failing callback is logged and
does not undo the write.

Interface::

    writer = ConfigWriter(paths, on_written=[callback])
    writer.load() -> ConfigData              reads config.data, remembers its serial
    writer.write(cfg) -> bytes               durable; ConfigError if serial not increasing
    writer.commit(cfg) -> bytes              cfg.bump() then write (one change)
    writer.add_callback(callback)
    writer.last_serial -> int | None
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from masterd.config.model import ConfigData, ConfigError, load
from noded.backends.fileio import write_file_atomic
from noded.paths import Paths

log = logging.getLogger("masterd.config.writer")

#: Mode of config.data (root:gnt-masterd 0640 in Ganeti).
CONFIG_FILE_MODE = 0o640

WriteCallback = Callable[[ConfigData, bytes], None]


class ConfigWriter:
    """The single writer of $DATA_DIR/config.data in this master."""

    def __init__(self, paths: Paths, on_written: Iterable[WriteCallback] = ()) -> None:
        self.paths = paths
        self._callbacks: list[WriteCallback] = list(on_written)
        self._lock = threading.Lock()
        self.last_serial: int | None = None

    @property
    def path(self) -> str:
        return self.paths.config_file

    def add_callback(self, callback: WriteCallback) -> None:
        self._callbacks.append(callback)

    def load(self) -> ConfigData:
        cfg = load(self.path)
        with self._lock:
            self.last_serial = max(self.last_serial or 0, cfg.serial_no)
        return cfg

    def _known_serial(self) -> int | None:
        if self.last_serial is not None:
            return self.last_serial
        try:
            return load(self.path).serial_no
        except ConfigError:
            return None

    def write(self, cfg: ConfigData) -> bytes:
        """Write `cfg` durably; its serial_no must exceed every one written before."""
        cfg.validate()
        data = cfg.dumps().encode("utf-8")
        with self._lock:
            previous = self._known_serial()
            if previous is not None and cfg.serial_no <= previous:
                raise ConfigError(f"refusing to write configuration serial {cfg.serial_no}: serial"
                                  f" {previous} was already written to {self.path} (serial numbers"
                                  " must grow with every change)")
            try:
                write_file_atomic(self.path, data, mode=CONFIG_FILE_MODE)
            except OSError as err:
                raise ConfigError(f"cannot write {self.path}: {err.strerror or err}") from err
            self.last_serial = cfg.serial_no
        for callback in list(self._callbacks):
            try:
                callback(cfg, data)
            except Exception:  # a distribution failure must not undo the write
                log.exception("config.data serial %d written, but a post-write callback failed",
                              cfg.serial_no)
        return data

    def commit(self, cfg: ConfigData) -> bytes:
        """Record one change: bump the serial and mtime, then write."""
        cfg.bump()
        return self.write(cfg)
