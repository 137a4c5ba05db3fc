"""OP_CLUSTER_VERIFY_CONFIG (`gnt-cluster verify`'s configuration job): configuration consistency.

Ganeti's `gnt-cluster verify` runs OP_CLUSTER_VERIFY, which submits one
OP_CLUSTER_VERIFY_CONFIG job and one OP_CLUSTER_VERIFY_GROUP job per node
group. This module holds what those jobs report with, Ganeti's message
format and error codes:

- `Verifier` collects findings: each is sent to the job's log as
  ``"  - ERROR: node node2: <message>"`` (or, with the opcode's
  ``error_codes``, ``"  - ERROR:ENODEVERSION:node:node2:<message>"``); a code
  listed in ``ignore_errors`` is demoted to WARNING and does not make the
  result false; ``debug_simulate_errors`` reports every check as failed.
- `check_config` runs the configuration checks that apply to our
  configuration (masterd.config.model).
- `check_node_result` and `check_files` judge one node's node_verify answer
  (version, clock, hypervisor, node setup) and the file checksums across the
  group's nodes against the master; they are what OP_CLUSTER_VERIFY_GROUP
  will run once the node RPC client has node_verify.

The opcodes (none takes a lock besides the shared Big Ganeti Lock):

- `ClusterVerify` (OP_CLUSTER_VERIFY) submits the child jobs through the
  engine (OpContext.submit_jobs): OP_CLUSTER_VERIFY_CONFIG (unless
  ``group_name`` is given) and one OP_CLUSTER_VERIFY_GROUP per group (the
  group's UUID), each depending on the configuration job, with the parent's
  ``error_codes``, ``ignore_errors``, ``verbose``, ``debug_simulate_errors``
  (and ``skip_checks``, ``verify_clutter`` for the groups); result
  ``{"jobs": [[true, id], ...]}`` as Ganeti's ResultWithJobs.
- `ClusterVerifyConfig` returns True when nothing (not ignored) is wrong.
- `ClusterVerifyGroup` runs node_verify on every online node of the group and
  judges the answers: version, clock, hypervisor, node setup, client
  certificates against the configuration's candidate_certs, master IP
  reachability, file storage path, the OS definitions (node_verify's
  "oslist", os_diagnose's data: each vm_capable node's list judged and
  compared with the first such node's, Ganeti's _VerifyNodeOS: ENODEOS),
  and the checksums of config.data (master candidates) and the ssconf files
  (every node) against the master's. Then, as Ganeti's HooksMaster does after
  the LU, the post phase of the `cluster-verify` hooks runs on the group's
  nodes (hooks_runner, offline nodes skipped; env GANETI_CLUSTER_TAGS and
  GANETI_NODE_TAGS_<node>, also as GANETI_POST_*, with Ganeti's fixed
  variables): "* Hooks Results", then ENODEHOOKS for a node that did not
  answer ("Communication failure in hooks execution: ...") and for each
  failed script ("Script S failed, output:" and its output indented by six
  spaces). Result True when nothing (not ignored) is wrong and no hook
  failed (a failed hook makes it False even when ENODEHOOKS is ignored, as
  in Ganeti).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from masterd import rpc as node_rpc
from masterd.config.model import ConfigData, Node
from masterd.instances.model import virtual_path
from masterd.jqueue.model import ELOG_MESSAGE
from masterd.locking import Level
from masterd.luxi.protocol import OpExecError, OpPrereqError
from masterd.ops.base import LockRequest, Operation
from noded.context import PROTOCOL_VERSION, RELEASE_VERSION

#: Ganeti's constants.NODE_MAX_CLOCK_SKEW (seconds).
NODE_MAX_CLOCK_SKEW = 150.0

ERROR = "ERROR"
WARNING = "WARNING"

#: (object type, code) of the findings this module reports (Ganeti's CV_E* descriptors).
ECLUSTERCFG = ("cluster", "ECLUSTERCFG")
ECLUSTERFILECHECK = ("cluster", "ECLUSTERFILECHECK")
ECLUSTERDANGLINGNODES = ("node", "ECLUSTERDANGLINGNODES")
ENODERPC = ("node", "ENODERPC")
ENODEVERSION = ("node", "ENODEVERSION")
ENODETIME = ("node", "ENODETIME")
ENODEHV = ("node", "ENODEHV")
ENODEFILECHECK = ("node", "ENODEFILECHECK")
ENODESETUP = ("node", "ENODESETUP")
ENODENET = ("node", "ENODENET")
ENODEFILESTORAGEPATHUNUSABLE = ("node", "ENODEFILESTORAGEPATHUNUSABLE")
ECLUSTERCLIENTCERT = ("cluster", "ECLUSTERCLIENTCERT")
ENODEOS = ("node", "ENODEOS")
ENODEHOOKS = ("node", "ENODEHOOKS")

#: The hooks path of OP_CLUSTER_VERIFY_GROUP (Ganeti's LUClusterVerifyGroup.HPATH) and its fixed env.
HOOKS_PATH = "cluster-verify"
HOOKS_ENV_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"
HOOKS_VERSION = 2
HOOKS_DATA_DIR = "/var/lib/ganeti"
#: hooks_runner's status of a failed script (constants.HKR_FAIL).
HKR_FAIL = 1

REBUILD_CERTS = ("To rebuild node certificates, please run"
                 " 'gnt-cluster renew-crypto --new-node-certificates'.")


@dataclass
class Verifier:
    """Findings of one verify opcode: log lines in Ganeti's format and whether anything is wrong."""

    error_codes: bool = False
    ignore_errors: frozenset[str] = frozenset()
    simulate: bool = False
    lines: list[str] = field(default_factory=list)
    bad: bool = False

    @classmethod
    def for_op(cls, op: Mapping[str, Any]) -> Verifier:
        return cls(error_codes=bool(op.get("error_codes")),
                   ignore_errors=frozenset(op.get("ignore_errors") or ()),
                   simulate=bool(op.get("debug_simulate_errors")))

    def report(self, code: tuple[str, str], item: str | None, message: str, level: str = ERROR) -> None:
        """Record one finding (Ganeti's _ErrorMsg)."""
        object_type, name = code
        if name in self.ignore_errors:
            level = WARNING
        if self.error_codes:
            self.lines.append(f"  - {level}:{name}:{object_type}:{item or ''}:{message}")
        else:
            self.lines.append(f"  - {level}: {object_type} {item or ''}: {message}")
        if level == ERROR:
            self.bad = True

    def check(self, failed: Any, code: tuple[str, str], item: str | None, message: str,
              level: str = ERROR) -> bool:
        """Report `message` when `failed` is true (or errors are simulated); return bool(failed)."""
        if failed or self.simulate:
            self.report(code, item, message, level)
        return bool(failed)


def check_config(verifier: Verifier, cfg: ConfigData) -> None:
    """The configuration checks of LUClusterVerifyConfig that apply to our configuration."""
    raw_nodes = cfg.tree.get("nodes") or {}
    raw_groups = cfg.tree.get("nodegroups") or {}
    dangling = sorted(str(n.get("name", uuid)) for uuid, n in raw_nodes.items()
                      if isinstance(n, dict) and n.get("group") not in raw_groups)
    verifier.check(dangling, ECLUSTERDANGLINGNODES, None,
                   f"the following nodes (and their instances) belong to a non existing group:"
                   f" {', '.join(dangling)}")
    if dangling:
        return
    try:
        cfg.validate()
    except Exception as err:  # a broken configuration is a finding, not a crash of the job
        verifier.report(ECLUSTERCFG, None, f"configuration error: {err}")
        return
    nodes = cfg.nodes()
    master_uuid = cfg.master_node_uuid
    if master_uuid not in {n.uuid for n in nodes}:
        verifier.report(ECLUSTERCFG, None, f"master node {master_uuid} is not in the node list")
    candidates = [n for n in nodes if n.master_candidate]
    wanted = min(cfg.candidate_pool_size, sum(1 for n in nodes if n.master_capable and not n.offline
                                                 and not n.drained))
    verifier.check(len(candidates) < wanted, ECLUSTERCFG, None,
                   f"not enough master candidates: current {len(candidates)}, wanted {wanted}")
    for node in nodes:
        verifier.check(node.master_candidate and not node.master_capable, ECLUSTERCFG, None,
                       f"node {node.name} is a master candidate but not master capable")
        verifier.check(node.master_candidate and (node.offline or node.drained), ECLUSTERCFG, None,
                       f"node {node.name} is a master candidate but offline or drained")
    certs = cfg.candidate_certs
    for node in candidates:
        verifier.check(node.uuid not in certs, ECLUSTERCFG, None,
                       f"master candidate {node.name} has no client certificate digest in the"
                       f" configuration's candidate_certs")


def merge_time(value: Any) -> float:
    """Ganeti's (seconds, microseconds) pair as a float; ValueError/TypeError when it is not one."""
    seconds, micro = value
    if not isinstance(seconds, int) or not isinstance(micro, int) or not 0 <= micro < 1_000_000:
        raise ValueError(f"not a (seconds, microseconds) pair: {value!r}")
    return seconds + micro / 1_000_000


def check_node_result(verifier: Verifier, node: Node, result: Any, started: float, ended: float) -> bool:
    """Judge one node's node_verify answer (version, time, hypervisor, setup); False if it is unusable."""
    if verifier.check(not isinstance(result, dict) or not result, ENODERPC, node.name,
                      "unable to verify node: no data returned"):
        return False
    assert isinstance(result, dict)
    version: Any = result.get("version")
    if verifier.check(not (isinstance(version, list | tuple) and len(version) == 2), ENODERPC, node.name,
                      "connection to node returned invalid data"):
        return False
    if verifier.check(version[0] != PROTOCOL_VERSION, ENODEVERSION, node.name,
                      f"incompatible protocol versions: master {PROTOCOL_VERSION}, node {version[0]}"):
        return False
    verifier.check(version[1] != RELEASE_VERSION, ENODEVERSION, node.name,
                   f"software version mismatch: master {RELEASE_VERSION}, node {version[1]}", WARNING)
    hypervisors = result.get("hypervisor")
    if node.vm_capable and isinstance(hypervisors, dict):
        for name, failure in sorted(hypervisors.items()):
            verifier.check(failure is not None, ENODEHV, node.name,
                           f"hypervisor {name} verify failure: '{failure}'")
    if "nodesetup" in result:
        problems = result["nodesetup"] or []
        verifier.check(problems, ENODESETUP, node.name, f"node setup error: {'; '.join(problems)}")
    try:
        node_time = merge_time(result.get("time"))
    except (ValueError, TypeError):
        verifier.report(ENODETIME, node.name, "Node returned invalid time")
        return True
    if node_time < started - NODE_MAX_CLOCK_SKEW:
        skew: str | None = f"{abs(started - node_time):.1f}s"
    elif node_time > ended + NODE_MAX_CLOCK_SKEW:
        skew = f"{abs(node_time - ended):.1f}s"
    else:
        skew = None
    verifier.check(skew is not None, ENODETIME, node.name,
                   f"Node time diverges by at least {skew} from master node time")
    return True


def check_files(verifier: Verifier, expected: Mapping[str, Iterable[str]],
                answers: Mapping[str, Any]) -> None:
    """Compare the file checksums (node_verify's "filelist") across nodes (Ganeti's _VerifyFiles).

    `expected` maps each file name to the names of the nodes that must have it;
    `answers` maps a node name to its "filelist" answer ({file: checksum}).
    """
    ignored: set[str] = set()
    seen: dict[str, dict[str, set[str]]] = {name: {} for name in expected}
    for node, files in sorted(answers.items()):
        if verifier.check(not (files and isinstance(files, dict)), ENODEFILECHECK, node,
                          "Node did not return file checksum data"):
            ignored.add(node)
            continue
        for name, checksum in files.items():
            seen.setdefault(name, {}).setdefault(str(checksum), set()).add(node)
    for name, checksums in sorted(seen.items()):
        having = {n for holders in checksums.values() for n in holders} - ignored
        wanted = set(expected.get(name, ())) - ignored
        missing = sorted(wanted - having)
        verifier.check(missing, ECLUSTERFILECHECK, None,
                       f"File {name} is missing from node(s) {', '.join(missing)}")
        unexpected = sorted(having - wanted)
        verifier.check(unexpected, ECLUSTERFILECHECK, None,
                       f"File {name} should not exist on node(s) {', '.join(unexpected)}")
        if len(checksums) > 1:
            variants = [f"variant {i + 1} on {', '.join(sorted(holders))}"
                        for i, (_, holders) in enumerate(sorted(checksums.items()))]
            verifier.report(ECLUSTERFILECHECK, None,
                            f"File {name} found with {len(checksums)} different checksums"
                            f" ({'; '.join(variants)})")


@dataclass
class OsImage:
    """One node's OS definitions from node_verify's "oslist": name -> its entries, in search order."""

    node: str
    oslist: dict[str, list[tuple[str, bool, str, frozenset[str], frozenset[tuple[str, str]],
                                  frozenset[int], bool]]]


def node_os_image(verifier: Verifier, node: Node, answer: Mapping[str, Any]) -> OsImage | None:
    """The node's OS data (Ganeti's _UpdateNodeOS), or None after reporting it invalid."""
    raw = answer.get("oslist")
    if verifier.check(not isinstance(raw, list) or not all(isinstance(v, list) and len(v) == 8 for v in raw),
                      ENODEOS, node.name, "node hasn't returned valid OS data"):
        return None
    assert isinstance(raw, list)
    oslist: dict[str, list[Any]] = {}
    try:
        for name, path, status, diagnose, variants, parameters, api_versions, trusted in raw:
            oslist.setdefault(str(name), []).append(
                (str(path), bool(status), str(diagnose), frozenset(variants or []),
                 frozenset(tuple(p) for p in parameters or []), frozenset(api_versions or []), bool(trusted)))
    except (TypeError, ValueError):
        verifier.report(ENODEOS, node.name, "node hasn't returned valid OS data")
        return None
    return OsImage(node.name, oslist)


def check_node_os(verifier: Verifier, image: OsImage, base: OsImage) -> None:
    """Judge a node's OS definitions and compare them with the reference node's (Ganeti's _VerifyNodeOS)."""
    name = image.node
    for os_name, entries in image.oslist.items():
        path, status, diagnose, variants, parameters, api, trusted = entries[0]
        verifier.check(not status, ENODEOS, name, f"Invalid OS {os_name} (located at {path}): {diagnose}")
        verifier.check(len(entries) > 1, ENODEOS, name,
                       f"OS '{os_name}' has multiple entries (first one shadows the rest):"
                       f" {', '.join(e[0] for e in entries)}")
        if verifier.check(os_name not in base.oslist, ENODEOS, name,
                          f"Extra OS {os_name} not present on reference node ({base.node})"):
            continue
        _, b_status, _, b_variants, b_parameters, b_api, b_trusted = base.oslist[os_name][0]
        if not b_status:
            continue  # the reference's own definition is invalid: nothing to compare with
        for kind, mine, theirs in (("API version", sorted(map(str, api)), sorted(map(str, b_api))),
                                   ("variants list", sorted(variants), sorted(b_variants)),
                                   ("parameters", sorted(f"{k}: {v}" for k, v in parameters),
                                    sorted(f"{k}: {v}" for k, v in b_parameters))):
            verifier.check(mine != theirs, ENODEOS, name,
                           f"OS {kind} for {os_name} differs from reference node {base.node}:"
                           f" [{', '.join(mine)}] vs. [{', '.join(theirs)}]")
        verifier.check(trusted != b_trusted, ENODEOS, name,
                       f"OS trusted for {os_name} differs from reference node {base.node}:"
                       f" {trusted} vs. {b_trusted}")
    missing = sorted(set(base.oslist) - set(image.oslist))
    verifier.check(missing, ENODEOS, name,
                   f"OSes present on reference node {base.node} but missing on this node:"
                   f" {', '.join(missing)}")


class ClusterVerifyConfig(Operation):
    """OP_CLUSTER_VERIFY_CONFIG: check the configuration; result True when nothing (not ignored) is wrong."""

    op_id: ClassVar[str] = "OP_CLUSTER_VERIFY_CONFIG"
    req_bgl: ClassVar[bool] = False

    async def exec(self) -> Any:
        config = self.ctx.config
        if config is None or not config.present:
            raise OpPrereqError("This master has no cluster configuration (config.data): there is"
                                " nothing to verify; initialise the cluster with gnt-cluster init",
                                "wrong_state")
        verifier = Verifier.for_op(self.op)
        await self.ctx.log("* Verifying cluster config")
        check_config(verifier, config.current)
        for line in verifier.lines:
            await self.ctx.log(line, ELOG_MESSAGE)
        return not verifier.bad


def _present_config(op: Operation) -> ConfigData:
    config = op.ctx.config
    if config is None or not config.present:
        raise OpPrereqError("This master has no cluster configuration (config.data): there is"
                            " nothing to verify; initialise the cluster with gnt-cluster init",
                            "wrong_state")
    return config.current


class ClusterVerify(Operation):
    """OP_CLUSTER_VERIFY: submit the configuration job and one job per node group."""

    op_id: ClassVar[str] = "OP_CLUSTER_VERIFY"
    req_bgl: ClassVar[bool] = False

    def child_jobs(self, cfg: ConfigData) -> list[list[dict[str, Any]]]:
        """The jobs Ganeti's LUClusterVerify submits, in its order."""
        op = self.op
        common = {"ignore_errors": list(op.get("ignore_errors") or []),
                  "debug_simulate_errors": bool(op.get("debug_simulate_errors")),
                  "verbose": bool(op.get("verbose")), "error_codes": bool(op.get("error_codes")),
                  "comment": "Submitted by OP_CLUSTER_VERIFY",
                  "reason": list(op.get("reason") or []), "priority": op.get("priority", 0)}
        jobs: list[list[dict[str, Any]]] = []
        group_name = op.get("group_name")
        if group_name:
            groups = [_lookup_group(cfg, str(group_name)).uuid]
        else:
            groups = [g.uuid for g in cfg.groups()]
            jobs.append([{"OP_ID": "OP_CLUSTER_VERIFY_CONFIG", **common}])
        for uuid in groups:
            jobs.append([{"OP_ID": "OP_CLUSTER_VERIFY_GROUP", **common, "group_name": uuid,
                          "skip_checks": list(op.get("skip_checks") or []),
                          "verify_clutter": bool(op.get("verify_clutter")),
                          "depends": None if group_name else [[-len(jobs), []]]}])
        return jobs

    async def exec(self) -> Any:
        cfg = _present_config(self)
        if self.ctx.submit_jobs is None:
            raise OpExecError("This master's engine cannot submit jobs from an opcode")
        return {"jobs": await self.ctx.submit_jobs(self.child_jobs(cfg))}


def _lookup_group(cfg: ConfigData, name_or_uuid: str) -> Any:
    for group in cfg.groups():
        if name_or_uuid in (group.uuid, group.name):
            return group
    raise OpPrereqError(f"Group '{name_or_uuid}' not found", "unknown_entity")


def check_client_certs(verifier: Verifier, nodes: Iterable[Node], certs: Mapping[str, str],
                       answers: Mapping[str, Any]) -> None:
    """The client certificates against candidate_certs (Ganeti's _VerifyClientCertificates)."""
    found = False

    def error(message: str) -> None:
        nonlocal found
        verifier.report(ECLUSTERCLIENTCERT, None, message)
        found = True

    if not certs:
        verifier.report(ECLUSTERCLIENTCERT, None,
                        "The cluster's list of master candidate certificates is empty. " + REBUILD_CERTS)
        return
    if len(certs) != len(set(certs.values())):
        error("There are at least two master candidates configured to use the same certificate.")
    for node in nodes:
        answer = answers.get(node.name)
        if node.offline or not isinstance(answer, dict) or "client-cert" not in answer:
            continue
        code, message = answer["client-cert"]
        if code is not None:
            error(f"Client certificate of node '{node.uuid}' failed validation: {message} (code '{code}')")
            continue
        if node.master_candidate:
            if node.uuid not in certs:
                error(f"The master candidate '{node.uuid}' does not have an entry in the map of candidate"
                      f" certificates.")
                if message in certs.values():
                    error(f"Master candidate '{node.uuid}' is using a certificate of another node.")
            elif message != certs[node.uuid]:
                error(f"Client certificate digest of master candidate '{node.uuid}' does not match its"
                      f" entry in the cluster's map of master candidate certificates. Expected: {message}"
                      f" Got: {certs[node.uuid]}")
        else:
            if node.uuid in certs:
                error(f"Node '{node.uuid}' is not a master candidate, but still listed in the map of"
                      f" master candidate certificates.")
            elif message in certs.values():
                error(f"Node '{node.uuid}' is not a master candidate and is incorrectly using a"
                      f" certificate of another node which is master candidate.")
    if found:
        verifier.report(ECLUSTERCLIENTCERT, None, REBUILD_CERTS)


def node_role(cfg: ConfigData, node: Node) -> str:
    if node.uuid == cfg.master_node_uuid:
        return "master"
    if node.master_candidate:
        return "master candidate"
    if node.drained:
        return "drained"
    return "regular"


class ClusterVerifyGroup(Operation):
    """OP_CLUSTER_VERIFY_GROUP: node_verify on the group's online nodes, judged as Ganeti does."""

    op_id: ClassVar[str] = "OP_CLUSTER_VERIFY_GROUP"
    req_bgl: ClassVar[bool] = False

    def checks(self, cfg: ConfigData, online: list[Node], files: list[str]) -> dict[str, Any]:
        """The node_verify check list (Ganeti's node_verify_param, reduced to what we judge)."""
        cluster = cfg.cluster
        hypervisors = list(cluster.get("enabled_hypervisors") or [])
        candidates = sorted(n.name for n in online if n.master_candidate)
        checks: dict[str, Any] = {
            "filelist": files, "hypervisor": hypervisors, "version": None, "time": None,
            "master-ip": [cfg.master_node.name, cluster.get("master_ip"), candidates],
            "nonvmnodes": sorted(n.name for n in cfg.nodes() if not n.vm_capable),
            "client-cert": None,
        }
        if "nodesetup" not in (self.op.get("skip_checks") or []):
            checks["nodesetup"] = None
        if any(n.vm_capable for n in online):
            checks["oslist"] = None
        templates = cluster.get("enabled_disk_templates") or []
        if "file" in templates and cluster.get("file_storage_dir"):
            # as a virtual path: every node checks its own directory (model.virtual_path)
            checks["file-storage-path"] = virtual_path(self.ctx.paths.root, cluster["file_storage_dir"])
        return checks

    def expected_files(self, cfg: ConfigData, online: list[Node]) -> dict[str, list[str]]:
        """File name (as sent) -> the nodes that must have it: config.data on candidates, ssconf on all."""
        paths = self.ctx.paths
        expected = {paths.virtualize(paths.config_file):
                    [n.name for n in online if n.master_candidate or n.uuid == cfg.master_node_uuid]}
        data_dir = paths.data_dir
        names = sorted(f for f in os.listdir(data_dir) if f.startswith("ssconf_")) \
            if os.path.isdir(data_dir) else []
        for name in names:
            expected[paths.virtualize(os.path.join(data_dir, name))] = [n.name for n in online]
        return expected

    async def exec(self) -> Any:
        cfg = _present_config(self)
        group = _lookup_group(cfg, str(self.op.get("group_name") or ""))
        log = self.ctx.log
        await log(f"* Verifying group '{group.name}'")
        members = [n for n in cfg.nodes() if n.group == group.uuid]
        if not members:
            await log("* Empty node group, skipping verification")
            return True
        verifier = Verifier.for_op(self.op)
        online = [n for n in members if not n.offline]
        await log(f"* Gathering data ({len(members)} nodes)")
        rpc = self.ctx.node_rpc
        if rpc is None:
            raise OpExecError("This master has no node RPC client: the nodes cannot be verified")
        expected = self.expected_files(cfg, online)
        checks = self.checks(cfg, online, list(expected))
        started = time.time()
        answers = await rpc.node_verify([n.name for n in online], checks, cfg.cluster_name,
                                        cfg.cluster.get("hvparams"))
        ended = time.time()
        results = {name: answer for name, (answer, failure) in answers.items() if failure is None}

        await log("* Verifying configuration file consistency")
        check_client_certs(verifier, online, cfg.candidate_certs, results)
        check_files(verifier, expected, {name: r.get("filelist") for name, r in results.items()
                                         if isinstance(r, dict)})
        await self._flush(verifier)

        await log("* Verifying node status")
        reference_os: OsImage | None = None
        for node in members:
            if node.offline:
                if self.op.get("verbose"):
                    await log(f"* Skipping offline node {node.name}")
                continue
            if self.op.get("verbose"):
                await log(f"* Verifying node {node.name} ({node_role(cfg, node)})")
            answer, failure = answers[node.name]
            if verifier.check(failure, ENODERPC, node.name, f"while contacting node: {failure}"):
                continue
            if check_node_result(verifier, node, answer, started, ended):
                self.check_node_extras(verifier, cfg, node, answer)
                if node.vm_capable:
                    image = node_os_image(verifier, node, answer)
                    if image is not None:
                        reference_os = reference_os or image
                        check_node_os(verifier, image, reference_os)
            await self._flush(verifier)
        await self._flush(verifier)
        hooks_ok = await self.run_post_hooks(cfg, members, verifier)
        return not verifier.bad and hooks_ok

    def hooks_env(self, cfg: ConfigData, members: list[Node]) -> dict[str, str]:
        """The post phase's environment (Ganeti's HooksMaster with LUClusterVerifyGroup.BuildHooksEnv)."""
        own = {"CLUSTER_TAGS": " ".join(cfg.cluster.get("tags") or [])}
        raw_nodes = cfg.tree.get("nodes") or {}
        for node in members:
            own[f"NODE_TAGS_{node.name}"] = " ".join((raw_nodes.get(node.uuid) or {}).get("tags") or [])
        env = {"PATH": HOOKS_ENV_PATH, "GANETI_HOOKS_VERSION": str(HOOKS_VERSION),
               "GANETI_OP_CODE": self.op_id, "GANETI_DATA_DIR": HOOKS_DATA_DIR, "GANETI_HOOKS_PHASE": "post",
               "GANETI_HOOKS_PATH": HOOKS_PATH, "GANETI_OBJECT_TYPE": "CLUSTER",
               "GANETI_CLUSTER": cfg.cluster_name, "GANETI_MASTER": cfg.master_node.name}
        env.update({f"GANETI_{key}": value for key, value in own.items()})
        env.update({f"GANETI_POST_{key}": value for key, value in own.items()})
        return env

    async def run_post_hooks(self, cfg: ConfigData, members: list[Node], verifier: Verifier) -> bool:
        """The cluster-verify post hooks on the group's nodes, judged as Ganeti's HooksCallBack.

        False when a node did not answer or a script failed.
        """
        rpc = self.ctx.node_rpc
        if rpc is None:
            return True
        names = [n.name for n in members]
        offline = [n.name for n in members if n.offline]
        args = [HOOKS_PATH, "post", self.hooks_env(cfg, members)]
        results = await node_rpc.call(rpc, names, "hooks_runner", args, offline=offline)
        await self.ctx.log("* Hooks Results")
        ok = True
        for name, result in results.items():
            if result.offline:
                continue
            if verifier.check(result.fail_msg, ENODEHOOKS, name,
                              f"Communication failure in hooks execution: {result.fail_msg}"):
                ok = False
                await self._flush(verifier)
                continue
            for entry in result.payload if isinstance(result.payload, list) else []:
                script, status, output = [*list(entry), None, None, None][:3]
                failed = status == HKR_FAIL
                verifier.check(failed, ENODEHOOKS, name, f"Script {script} failed, output:")
                await self._flush(verifier)
                if failed:
                    ok = False
                    await self.ctx.log("\n".join("      " + line for line in str(output or "").split("\n")))
        return ok

    async def _flush(self, verifier: Verifier) -> None:
        for line in verifier.lines:
            await self.ctx.log(line, ELOG_MESSAGE)
        verifier.lines.clear()

    def check_node_extras(self, verifier: Verifier, cfg: ConfigData, node: Node, answer: dict[str, Any]
                          ) -> None:
        """Master IP reachability and the file storage path."""
        if node.master_candidate or node.uuid == cfg.master_node_uuid:
            if "master-ip" not in answer:
                verifier.report(ENODENET, node.name, "node hasn't returned node master IP reachability data")
            elif answer["master-ip"] is False:
                verifier.report(ENODENET, node.name,
                                "the master node cannot reach the master IP (not configured?)"
                                if node.uuid == cfg.master_node_uuid else "cannot reach the master IP")
        if "file" in (cfg.cluster.get("enabled_disk_templates") or []):
            verifier.check("file-storage-path" in answer, ENODEFILESTORAGEPATHUNUSABLE, node.name,
                           f"The configured file storage path is unusable: {answer.get('file-storage-path')}")


class ClusterVerifyDisks(Operation):
    """OP_CLUSTER_VERIFY_DISKS (gnt-cluster verify-disks, the watcher): an OP_GROUP_VERIFY_DISKS per group."""

    op_id = "OP_CLUSTER_VERIFY_DISKS"
    req_bgl = False

    def _groups(self) -> list[str]:
        assert self.ctx.config is not None
        cfg = self.ctx.config.current
        name = self.op.get("group_name")
        return [_lookup_group(cfg, str(name)).uuid] if name else [g.uuid for g in cfg.groups()]

    def locks(self) -> list[LockRequest]:
        if self.ctx.config is None:
            raise OpPrereqError("This master has no cluster configuration", "wrong_state")
        return [(Level.NODEGROUP, self._groups(), True)]

    async def exec(self) -> Any:
        if self.ctx.submit_jobs is None:
            raise OpExecError("This master's engine cannot submit jobs from an opcode")
        jobs = [[{"OP_ID": "OP_GROUP_VERIFY_DISKS", "group_name": uuid}] for uuid in self._groups()]
        return {"jobs": await self.ctx.submit_jobs(jobs)}


class GroupVerifyDisks(Operation):
    """OP_GROUP_VERIFY_DISKS: Ganeti's (node errors, instances needing activate-disks, missing volumes).

    Ganeti looks at the logical volumes (plain, drbd) of the group's instances
    whose disks are active, and at the DRBD states; file, sharedfile and
    diskless disks have neither, so on this cluster the answer is always
    Ganeti's answer for a group without them: ``[{}, [], {}]``.
    """

    op_id = "OP_GROUP_VERIFY_DISKS"
    req_bgl = False

    def locks(self) -> list[LockRequest]:
        if self.ctx.config is None:
            raise OpPrereqError("This master has no cluster configuration", "wrong_state")
        group = _lookup_group(self.ctx.config.current, str(self.op.get("group_name") or ""))
        return [(Level.NODEGROUP, [group.uuid], True)]

    async def exec(self) -> Any:
        assert self.ctx.config is not None
        _lookup_group(self.ctx.config.current, str(self.op.get("group_name") or ""))
        return [{}, [], {}]
