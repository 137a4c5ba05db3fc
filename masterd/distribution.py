"""Distribution of the configuration (config.data) and the ssconf files to the nodes.

After every configuration change Ganeti's master copies config.data to the
other master candidates (so that any of them can take over) and the ssconf
values to every online node (so that every node knows the master, the
node lists, the candidates' certificates ...). This module does both, over
the node daemons' gRPC door (masterd.rpc.NodeRpcClient); it knows nothing
about the configuration's model: it takes the serialised file and the
ssconf values as they are.

What goes where:

- ``upload_file_single`` of config.data to every online master candidate
  except this node (the master wrote its own copy): the file name is the
  virtual path ``/###-VIRTUAL-PATH-###,/var/lib/ganeti/config.data`` when
  the master runs in a virtual-cluster root (then every node does), else
  the plain path; the content is always ``[1, base64(zlib(data))]``
  (ED_COMPRESS, as Ganeti's masters send large files); mode 0640, owner
  gnt-masterd and group gnt-confd (Ganeti's ownership of config.data) when
  those exist on this machine, else root; atime and mtime the time of the
  distribution.
- ``write_ssconf_files`` to every online node, this one included (nothing
  else writes the master's own ssconf files). Offline nodes are never
  contacted, whatever list they appear in.

Unchanged ssconf values are not resent: the distributor remembers, per
node, the values that node last acknowledged, and sends only the keys whose
content differs (nothing at all when none does). ``full=True`` sends every
value to every node (config.data goes to every online candidate in any
case): what ``gnt-cluster redist-conf`` forces. A failed call forgets what that node is
known to hold, so the next distribution sends it everything again.

All nodes are served in parallel, at most `max_parallel` at a time; for
each node config.data goes before its ssconf (Ganeti's order). A node's
failure never raises: it is logged and listed in the report, and the other
nodes still get their data. Distributions run one at a time (a second call
waits for the first), so an older configuration never overtakes a newer one.

Interface::

    distributor = ConfigDistributor(paths, rpc, max_parallel=32, timeout=60.0)
    report = await distributor.distribute(config_data, ssconf, candidates, online_nodes, full=False)
        # config_data: bytes of config.data; ssconf: {key: [lines]} (a str value is taken as is);
        # candidates / online_nodes: objects with a `name` (and optionally `offline`)
    report.ok, report.failures -> {node: [messages]}, report.config_nodes, report.ssconf_nodes, ...
    distributor.forget(node)        drop what a node is known to hold (removed or re-added node)
"""

from __future__ import annotations

import asyncio
import base64
import grp
import logging
import pwd
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from masterd.rpc import FILES_TIMEOUT, NodeRpcClient
from noded.paths import Paths

log = logging.getLogger("masterd.distribution")

#: RPC_ENCODING_ZLIB_BASE64: config.data always travels compressed.
ENCODING_ZLIB_BASE64 = 1
#: zlib level of Ganeti's RPC layer.
ZLIB_LEVEL = 3
#: Mode of config.data on the nodes (Ganeti's ensure-dirs: 0640).
CONFIG_MODE = 0o640
#: Owner and group of config.data in Ganeti (masterd writes it, confd reads it).
CONFIG_USER = "gnt-masterd"
CONFIG_GROUP = "gnt-confd"
#: Nodes served at the same time, by default.
DEFAULT_MAX_PARALLEL = 32


class NodeRef(Protocol):
    """What the distributor needs of a node: its name (an `offline` attribute is honoured if present)."""

    @property
    def name(self) -> str: ...


def config_owner() -> tuple[str, str]:
    """(user, group) for config.data: Ganeti's gnt-masterd / gnt-confd where they exist, else root."""
    try:
        user = pwd.getpwnam(CONFIG_USER).pw_name
    except KeyError:
        user = "root"
    try:
        group = grp.getgrnam(CONFIG_GROUP).gr_name
    except KeyError:
        group = "root"
    return user, group


def encode_config(data: bytes) -> tuple[int, str]:
    """config.data as ``[1, base64(zlib(data))]``."""
    return ENCODING_ZLIB_BASE64, base64.b64encode(zlib.compress(data, ZLIB_LEVEL)).decode("ascii")


def ssconf_text(value: str | Sequence[str]) -> str:
    """What a value amounts to on the node (before the trailing newline): a list is joined by newlines."""
    return value if isinstance(value, str) else "\n".join(value)


@dataclass
class DistributionReport:
    """What one distribution did; failures are per node and never raised."""

    #: Candidates that received config.data.
    config_nodes: list[str] = field(default_factory=list)
    #: Nodes that received ssconf values (with the number of keys sent).
    ssconf_nodes: dict[str, int] = field(default_factory=dict)
    #: Nodes whose ssconf values were all unchanged: nothing was sent to them.
    ssconf_unchanged: list[str] = field(default_factory=list)
    #: Nodes left out because they are offline.
    offline: list[str] = field(default_factory=list)
    #: node -> what failed there ("config.data: <error>", "ssconf: <error>").
    failures: dict[str, list[str]] = field(default_factory=dict)
    #: Size of config.data, and of its encoded form (base64 of the zlib stream) times the candidates
    #: it was sent to (failed ones included), in bytes.
    config_bytes: int = 0
    sent_bytes: int = 0
    #: Wall-clock seconds of the whole distribution.
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, node: str, what: str, error: str) -> None:
        self.failures.setdefault(node, []).append(f"{what}: {error}")


class ConfigDistributor:
    """Sends config.data to the master candidates and ssconf to the online nodes (module docstring)."""

    def __init__(self, paths: Paths, rpc: NodeRpcClient, max_parallel: int = DEFAULT_MAX_PARALLEL,
                 timeout: float = FILES_TIMEOUT) -> None:
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be at least 1, not {max_parallel}")
        self.paths = paths
        self.rpc = rpc
        self.max_parallel = max_parallel
        self.timeout = timeout
        self.user, self.group = config_owner()
        #: The node's file name of config.data (virtual path in virtual-cluster mode).
        self.config_name = paths.virtualize(paths.config_file)
        self._known: dict[str, dict[str, str]] = {}  # node -> ssconf key -> text it acknowledged
        self._serial = asyncio.Lock()  # one distribution at a time: an older one never overtakes a newer

    def forget(self, node: str) -> None:
        """Forget what `node` is known to hold: the next distribution sends it every ssconf value."""
        self._known.pop(node, None)

    async def distribute(self, config_data: bytes, ssconf: Mapping[str, str | Sequence[str]],
                         candidates: Sequence[NodeRef], online_nodes: Sequence[NodeRef],
                         full: bool = False) -> DistributionReport:
        """Send config.data to the other online candidates and ssconf to the online nodes, in parallel."""
        async with self._serial:
            return await self._distribute(config_data, ssconf, candidates, online_nodes, full)

    async def _distribute(self, config_data: bytes, ssconf: Mapping[str, str | Sequence[str]],
                          candidates: Sequence[NodeRef], online_nodes: Sequence[NodeRef],
                          full: bool) -> DistributionReport:
        start = time.monotonic()
        report = DistributionReport(config_bytes=len(config_data))
        online: dict[str, None] = {}
        for node in online_nodes:
            if getattr(node, "offline", False):
                report.offline.append(node.name)
            else:
                online[node.name] = None
        for node in candidates:
            if (node.name not in online and node.name not in report.offline
                    and getattr(node, "offline", False)):
                report.offline.append(node.name)
        receivers = {n.name for n in candidates if n.name in online and n.name != self.paths.hostname}
        content: tuple[int, str] | None = None
        if receivers:
            content = await asyncio.to_thread(encode_config, config_data)
            report.sent_bytes = len(content[1]) * len(receivers)
        texts = {key: ssconf_text(value) for key, value in ssconf.items()}
        now = time.time()
        limit = asyncio.Semaphore(self.max_parallel)

        async def serve(node: str) -> None:
            async with limit:
                try:
                    if content is not None and node in receivers:
                        await self._send_config(node, content, now, report)
                    await self._send_ssconf(node, ssconf, texts, full, report)
                except Exception as err:  # a bug must not stop the other nodes
                    log.exception("distributing the configuration to node %s failed unexpectedly", node)
                    self.forget(node)
                    report.fail(node, "distribution", f"{type(err).__name__}: {err}")

        await asyncio.gather(*(serve(node) for node in online))
        report.seconds = time.monotonic() - start
        if report.failures:
            log.warning("configuration distribution: %d of %d node(s) failed: %s", len(report.failures),
                        len(online), "; ".join(f"{n}: {', '.join(m)}" for n, m in report.failures.items()))
        return report

    async def _send_config(self, node: str, content: tuple[int, str], now: float,
                           report: DistributionReport) -> None:
        result = await self.rpc.upload_file_single([node], self.config_name, content, CONFIG_MODE,
                                                   self.user, self.group, now, now, timeout=self.timeout)
        error = result[node]
        if error is None:
            report.config_nodes.append(node)
        else:
            log.error("cannot upload config.data to node %s (%s): %s; it keeps an older configuration",
                      node, await self._target(node), error)
            report.fail(node, "config.data", error)

    async def _send_ssconf(self, node: str, values: Mapping[str, str | Sequence[str]],
                           texts: Mapping[str, str], full: bool, report: DistributionReport) -> None:
        known = {} if full else self._known.get(node, {})
        changed = {key: values[key] for key, text in texts.items() if known.get(key) != text}
        if not changed:
            report.ssconf_unchanged.append(node)
            return
        result = await self.rpc.write_ssconf_files([node], changed, timeout=self.timeout)
        error = result[node]
        if error is None:
            held = self._known.setdefault(node, {})
            held.update({key: texts[key] for key in changed})
            report.ssconf_nodes[node] = len(changed)
        else:
            self.forget(node)
            log.error("cannot write the ssconf files on node %s (%s): %s", node, await self._target(node),
                      error)
            report.fail(node, "ssconf", error)

    async def _target(self, node: str) -> str:
        try:
            return await self.rpc.target(node)
        except Exception as err:
            return f"no address: {err}"
