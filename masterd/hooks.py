"""Hooks: the pre and post phases of an opcode, run on the nodes through hooks_runner (Ganeti's HooksMaster).

An opcode with a hooks path builds its environment once (the keys without
the ``GANETI_`` prefix); the pre phase runs it as ``GANETI_<key>`` on the
pre nodes and aborts the opcode when a script fails there (HooksAbort, with
``[node, script, output]`` per failure; no answer from any node is
HooksFailure); the post phase adds the environment again as
``GANETI_POST_<key>`` (recomputed after the change) and only reports
failures as feedback. Every phase also gets Ganeti's fixed variables
(PATH, GANETI_HOOKS_VERSION, GANETI_OP_CODE, GANETI_DATA_DIR,
GANETI_HOOKS_PHASE, GANETI_HOOKS_PATH, GANETI_OBJECT_TYPE, GANETI_CLUSTER,
GANETI_MASTER); every value is sent as a string. Offline nodes are skipped.

Interface::

    hooks = Hooks(ctx, "instance-add", "INSTANCE", pre_nodes=[names], post_nodes=[names])
    await hooks.pre(env)          # raises GanetiError("HooksAbort", [...]) when a pre script fails
    await hooks.post(env)         # failures become feedback lines
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from masterd.luxi.protocol import GanetiError
from masterd.rpc import call

if TYPE_CHECKING:
    from masterd.ops.base import OpContext

PHASE_PRE = "pre"
PHASE_POST = "post"
HOOKS_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"
HOOKS_VERSION = 2
#: hooks_runner's script status for a failed script (constants.HKR_FAIL).
HKR_FAIL = 1
DATA_DIR = "/var/lib/ganeti"


class Hooks:
    """The hooks of one opcode run (HooksMaster)."""

    def __init__(self, ctx: OpContext, hpath: str, htype: str | None, op_id: str,
                 pre_nodes: Sequence[str], post_nodes: Sequence[str], offline: Sequence[str] = ()) -> None:
        self.ctx = ctx
        self.hpath = hpath
        self.htype = htype
        self.op_id = op_id
        self.pre_nodes = list(dict.fromkeys(pre_nodes))
        self.post_nodes = list(dict.fromkeys(post_nodes))
        self.offline = set(offline)
        self.pre_env: dict[str, str] = {}

    def _fixed(self, phase: str) -> dict[str, str]:
        env = {"PATH": HOOKS_PATH, "GANETI_HOOKS_VERSION": str(HOOKS_VERSION), "GANETI_OP_CODE": self.op_id,
               "GANETI_DATA_DIR": DATA_DIR, "GANETI_HOOKS_PHASE": phase, "GANETI_HOOKS_PATH": self.hpath}
        if self.htype:
            env["GANETI_OBJECT_TYPE"] = self.htype
        config = self.ctx.config
        if config is not None and config.present:
            cfg = config.current
            env["GANETI_CLUSTER"] = cfg.cluster_name
            env["GANETI_MASTER"] = cfg.master_node.name
        return env

    async def _run(self, phase: str, nodes: Sequence[str],
                   env: Mapping[str, str]) -> list[tuple[str, str, str]]:
        """Run the phase; the failed scripts as (node, script, output); communication failures are logged."""
        rpc = self.ctx.node_rpc
        targets = [n for n in nodes if n not in self.offline]
        if rpc is None or not targets:
            return []
        full = {**self._fixed(phase), **env}
        results = await call(rpc, targets, "hooks_runner", [self.hpath, phase, full])
        failed: list[tuple[str, str, str]] = []
        answered = False
        for node, result in results.items():
            if result.fail_msg is not None:
                await self.ctx.log(f"Communication failure to node {node}: {result.fail_msg}")
                continue
            answered = True
            for entry in result.payload or []:
                script, status, output = entry[0], entry[1], entry[2]
                if status == HKR_FAIL:
                    failed.append((node, str(script), str(output)))
        if not answered and phase == PHASE_PRE:
            raise GanetiError("HooksFailure", "Communication Failure")
        return failed

    async def pre(self, env: Mapping[str, Any]) -> None:
        self.pre_env = {f"GANETI_{key}": str(value) for key, value in env.items()}
        failed = await self._run(PHASE_PRE, self.pre_nodes, self.pre_env)
        if failed:
            raise GanetiError("HooksAbort", [list(f) for f in failed])

    async def post(self, env: Mapping[str, Any] | None = None) -> None:
        post_env = {f"GANETI_POST_{key}": str(value) for key, value in (env or {}).items()}
        failed = await self._run(PHASE_POST, self.post_nodes, {**post_env, **self.pre_env})
        for node, script, output in failed:
            await self.ctx.log(f"On {node} script {script} failed, output: {output or '(no output)'}")
