"""The master's cluster configuration: config.data loaded at start, changed only through jobs.

At start the master loads $DATA_DIR/config.data (`load`); without the file
the master keeps its ssconf-only behaviour (`present` is False and every
change is refused). The loaded configuration is the master's in-memory truth:
queries read `current` (a snapshot that must not be changed), and opcode
implementations change it through `change()`::

    async with confmgr.change() as cfg:     # a private copy; changes one at a time
        cfg.set_node_flags(uuid, offline=True)

On a clean exit of the block the serial number grows (once, unless a
mutation helper of ConfigData already bumped it), the copy is written
durably through masterd.config.writer.ConfigWriter (written before anyone
sees it) and becomes `current`; then it is distributed (changes that
pile up during a distribution go out together in the next) with
masterd.distribution.ConfigDistributor: config.data to the online master
candidates, the ssconf values (masterd.config.ssconf, derived from it) to
every online node, this one included. Offline nodes are never contacted. A
distribution failure is logged and reported, never raised: the job that made
the change succeeds. An exception inside the block discards the copy.

Node addresses for every node RPC of the master come from the configuration
(primary IPs) once it is loaded (NodeRpcClient.set_addresses); ports still
come from $DATA_DIR/node-grpc-ports (masterd.ssconf).

Interface::

    confmgr = ConfigManager(paths, rpc)          # rpc: masterd.rpc.NodeRpcClient
    confmgr.load() -> bool                       # True when config.data was found (ConfigError if corrupt)
    confmgr.present, confmgr.current -> ConfigData, confmgr.last_report -> DistributionReport | None
    async with confmgr.change(full=False) as cfg: ...   # ConfigUnavailableError without config.data
    await confmgr.distribute(full=False) -> DistributionReport   # the current config, as it is
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from masterd.config.model import ConfigData, ConfigError
from masterd.config.ssconf import ssconf_values
from masterd.config.writer import ConfigWriter
from masterd.distribution import ConfigDistributor, DistributionReport
from masterd.rpc import NodeRpcClient
from noded.paths import Paths

log = logging.getLogger("masterd.confmgr")


class ConfigUnavailableError(ConfigError):
    """The master has no config.data: the cluster state cannot be changed or read from it."""


class ConfigManager:
    """Owner of config.data in the master (module docstring)."""

    def __init__(self, paths: Paths, rpc: NodeRpcClient,
                 distributor: ConfigDistributor | None = None) -> None:
        self.paths = paths
        self.rpc = rpc
        self.writer = ConfigWriter(paths)
        self.distributor = distributor or ConfigDistributor(paths, rpc)
        self._cfg: ConfigData | None = None
        self._data: bytes = b""
        self._lock = asyncio.Lock()  # one change at a time: copy, write, install
        self._send_lock = asyncio.Lock()  # one distribution at a time
        self._sent_serial = -1  # the newest serial the nodes were sent
        self._pending_full = False
        self.last_report: DistributionReport | None = None

    def load(self) -> bool:
        """Read config.data if it exists; True when loaded, False when absent (ConfigError when corrupt)."""
        try:
            with open(self.writer.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            log.info("no %s: the master serves from ssconf only", self.writer.path)
            return False
        except OSError as err:
            raise ConfigError(f"cannot read {self.writer.path}: {err.strerror or err}") from err
        cfg = ConfigData.from_json(data, source=self.writer.path)
        self.writer.last_serial = cfg.serial_no
        self._install(cfg, data)
        log.info("configuration of cluster %s loaded: serial %d, %d node(s)", cfg.cluster_name,
                 cfg.serial_no, len(cfg.nodes()))
        return True

    def _install(self, cfg: ConfigData, data: bytes) -> None:
        self._cfg, self._data = cfg, data
        self.rpc.set_addresses({node.name: node.primary_ip for node in cfg.nodes()})

    @property
    def present(self) -> bool:
        return self._cfg is not None

    @property
    def current(self) -> ConfigData:
        """The configuration as last written (do not change it: use `change()`)."""
        if self._cfg is None:
            raise ConfigUnavailableError(f"{self.writer.path} was not found when the master started: this"
                                         " master has no cluster configuration (gnt-cluster init writes it)")
        return self._cfg

    @contextlib.asynccontextmanager
    async def change(self, full: bool = False) -> AsyncIterator[ConfigData]:
        """A copy to change; written, then distributed, when the block ends without an exception.

        Returns once the nodes were sent this configuration or a newer one:
        changes made while a distribution is on its way are sent together
        by the next one (the newest configuration holds them all).
        """
        async with self._lock:
            cfg = self.current.copy()
            before = cfg.serial_no
            yield cfg
            if cfg.serial_no <= before:
                cfg.bump()
            data = await asyncio.to_thread(self.writer.write, cfg)
            self._install(cfg, data)
            self._pending_full = self._pending_full or full
            log.info("configuration serial %d written", cfg.serial_no)
        await self._send_up_to(cfg.serial_no)

    async def _send_up_to(self, serial: int) -> None:
        async with self._send_lock:
            if self._sent_serial >= serial:
                return  # a distribution that started after this change covered it
            cfg, data, full = self.current, self._data, self._pending_full
            self._pending_full = False
            await self._distribute(cfg, data, full)
            self._sent_serial = cfg.serial_no

    async def distribute(self, full: bool = False) -> DistributionReport:
        """Send the current configuration and ssconf as they are (no change)."""
        async with self._send_lock:
            cfg, data, full = self.current, self._data, full or self._pending_full
            self._pending_full = False
            report = await self._distribute(cfg, data, full)
            self._sent_serial = cfg.serial_no
            return report

    async def _distribute(self, cfg: ConfigData, data: bytes, full: bool) -> DistributionReport:
        online = [node for node in cfg.nodes() if not node.offline]
        candidates = [node for node in online if node.master_candidate]
        try:
            report = await self.distributor.distribute(data, ssconf_values(cfg), candidates, online,
                                                       full=full)
        except Exception:  # a distribution bug must not fail the job that changed the configuration
            log.exception("distributing configuration serial %d failed", cfg.serial_no)
            report = DistributionReport()
            report.fail(self.paths.hostname, "distribution", "internal error (see the master's log)")
        skipped = [node.name for node in cfg.nodes() if node.offline]
        report.offline = sorted(set(report.offline) | set(skipped))
        self.last_report = report
        log.info("configuration serial %d distributed: config.data to %s; ssconf to %d node(s)%s%s",
                 cfg.serial_no, ", ".join(report.config_nodes) or "no other candidate",
                 len(report.ssconf_nodes) + len(report.ssconf_unchanged),
                 f"; offline, not contacted: {', '.join(report.offline)}" if report.offline else "",
                 f"; {len(report.failures)} failed" if report.failures else "")
        return report
