"""Hooks, iallocators, out-of-band helpers and restricted commands."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import pytest
from real_ganeti import requires_real_ganeti
from real_noded_calls import our_call, real_call, real_snippet

from noded.backends import hooks
from noded.backends.runcmd import CommandNotFound
from noded.context import NodeContext
from noded.errors import RpcFail
from noded.paths import Paths

HOOK_ENV = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "GANETI_OP_CODE": "OP_TEST", "GANETI_X": "world"}


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    paths = Paths(root=str(tmp_path / "node1"), hostname="node1")
    paths.ensure_dirs()
    return NodeContext(paths=paths)


def _script(path: Path, body: str, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(mode)
    return path


def _hooks_dir(ctx: NodeContext, name: str = "instance-add-pre.d") -> Path:
    d = Path(ctx.paths.hooks_dir) / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _mixed_hooks(ctx: NodeContext) -> None:
    d = _hooks_dir(ctx)
    _script(d / "10-ok", '#!/bin/sh\necho "hello $GANETI_X"\nprintf \'tab\\there\\n\'\n')
    _script(d / "20-fail", "#!/bin/sh\necho oops >&2\nexit 3\n")
    _script(d / "30-noexec", "#!/bin/sh\nexit 0\n", mode=0o644)
    _script(d / "40.dotted", "#!/bin/sh\necho never\n")
    (d / "50-dir").mkdir()
    _script(d / ".hidden", "#!/bin/sh\necho never\n")
    _script(d / "60-utf8", "#!/bin/sh\nprintf 'caf\\303\\251\\n'\n")
    _script(d / "70-noshebang", "echo no interpreter\n")


# -- hooks_runner ------------------------------------------------------------------

def test_hooks_runner_without_a_hooks_directory_answers_nothing(ctx: NodeContext) -> None:
    assert hooks.hooks_runner(ctx, "cluster-verify", "post", HOOK_ENV) == []


def test_hooks_runner_runs_in_name_order_with_statuses(ctx: NodeContext) -> None:
    _mixed_hooks(ctx)
    result = hooks.hooks_runner(ctx, "instance-add", "pre", HOOK_ENV)
    assert [(name, status) for name, status, _ in result] == [
        ("instance-add-pre.d/10-ok", 2), ("instance-add-pre.d/20-fail", 1),
        ("instance-add-pre.d/30-noexec", 0), ("instance-add-pre.d/40.dotted", 0),
        ("instance-add-pre.d/50-dir", 0), ("instance-add-pre.d/60-utf8", 2),
        ("instance-add-pre.d/70-noshebang", 1)]
    assert result[0][2] == r"hello world\ntab\there"
    assert result[1][2] == "oops"
    assert result[5][2] == r"caf\xe9"
    assert result[6][2].startswith("Hook script execution error: [Errno 8] Exec format error")


@requires_real_ganeti
def test_hooks_runner_results_match_ganeti(ctx: NodeContext) -> None:
    _mixed_hooks(ctx)
    args = ["instance-add", "pre", HOOK_ENV]
    assert our_call(hooks.hooks_runner, ctx, *args) == real_call(Path(ctx.paths.root), "hooks_runner", *args)


def test_hooks_get_exactly_the_given_environment(ctx: NodeContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GTEST_LEAK", "from-the-daemon")
    # Python itself adds LC_CTYPE when started without a locale; that one is not ours.
    _script(_hooks_dir(ctx, "node-add-post.d") / "env", "#!/usr/bin/python3\nimport os\n"
            "print(' '.join(f'{k}={v}' for k, v in sorted(os.environ.items()) if k != 'LC_CTYPE'))\n")
    [[_, status, output]] = hooks.hooks_runner(ctx, "node-add", "post", {"GANETI_A": "1", "GANETI_B": 2})
    assert status == 2
    assert output == "GANETI_A=1 GANETI_B=2"


def test_hooks_get_the_path_the_master_sends(ctx: NodeContext) -> None:
    _script(_hooks_dir(ctx, "node-add-post.d") / "path", '#!/bin/sh\necho "$PATH"\n')
    [[_, _, output]] = hooks.hooks_runner(ctx, "node-add", "post", {"PATH": hooks.HOOKS_PATH})
    assert output == hooks.HOOKS_PATH


def test_hooks_runner_refuses_an_unknown_phase(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match=r"^Unknown hooks phase 'middle'$"):
        hooks.hooks_runner(ctx, "instance-add", "middle", {})


def test_hooks_runner_refuses_a_path_outside_the_hooks_directory(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="Invalid hooks path"):
        hooks.hooks_runner(ctx, "../../tmp/x", "pre", {})


def test_a_hook_running_too_long_is_terminated_and_fails(ctx: NodeContext) -> None:
    _script(_hooks_dir(ctx, "cluster-verify-post.d") / "slow", "#!/bin/sh\necho started\nexec sleep 60\n")
    start = time.monotonic()
    [result] = hooks.run_hooks(ctx.paths, "cluster-verify", "post", HOOK_ENV, timeout=0.5)
    assert time.monotonic() - start < 5
    assert result.status == hooks.HKR_FAIL
    assert result.output == (r"started\n(hook terminated by signal 15, terminated after timeout of"
                             " 0.50 seconds)")


# -- iallocator_runner --------------------------------------------------------------

def _iallocator(ctx: NodeContext, name: str, body: str) -> Path:
    return _script(Path(ctx.paths.under_root("/usr/lib/ganeti/iallocators")) / name, body)


def test_iallocator_runner_passes_the_input_file_and_parameters(ctx: NodeContext) -> None:
    _iallocator(ctx, "echo-alloc", '#!/bin/sh\nprintf \'{"args": "%s", "input": %s}\' "$*" "$(cat "$1")"\n')
    out = hooks.iallocator_runner(ctx, "echo-alloc", '{"request": 1}', {"a": "b", "flag": None})
    answer = json.loads(out)
    assert answer["input"] == {"request": 1}
    args = answer["args"].split()
    assert args[1:] == ["--a=b", "--flag"]
    assert not os.path.exists(args[0]), "the input file is removed afterwards"


def test_iallocator_runner_reports_a_failing_iallocator(ctx: NodeContext) -> None:
    _iallocator(ctx, "broken", "#!/bin/sh\necho bad input >&2\nexit 2\n")
    with pytest.raises(RpcFail) as err:
        hooks.iallocator_runner(ctx, "broken", "{}", {})
    assert err.value.message == ("iallocator module 'broken' failed: exited with exit code 2,"
                                 " output 'bad input\n'")


@requires_real_ganeti
def test_iallocator_runner_unknown_name_matches_ganeti(ctx: NodeContext) -> None:
    args = ["nosuch-alloc", "{}", {}]
    assert our_call(hooks.iallocator_runner, ctx, *args) == \
        real_call(Path(ctx.paths.root), "iallocator_runner", *args)


@pytest.mark.skipif(not os.path.exists("/usr/lib/ganeti/iallocators/hail"), reason="hail is not installed")
def test_iallocator_runner_finds_the_installed_hail(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail) as err:
        hooks.iallocator_runner(ctx, "hail", "this is not an iallocator request", {})
    assert err.value.message.startswith("iallocator module 'hail' failed: exited with exit code 1")


# -- run_oob --------------------------------------------------------------------------

def test_run_oob_parses_the_json_the_helper_prints(ctx: NodeContext, tmp_path: Path) -> None:
    helper = _script(tmp_path / "oob", '#!/bin/sh\necho "{\\"command\\": \\"$1\\", \\"node\\": \\"$2\\"}"\n')
    assert hooks.run_oob(ctx, str(helper), "power-status", "node2", 10) == {
        "command": "power-status", "node": "node2"}


def test_run_oob_with_no_output_answers_null(ctx: NodeContext, tmp_path: Path) -> None:
    helper = _script(tmp_path / "oob", "#!/bin/sh\nexit 0\n")
    assert hooks.run_oob(ctx, str(helper), "power-on", "node2", 10) is None


def test_run_oob_of_a_missing_helper_fails(ctx: NodeContext, tmp_path: Path) -> None:
    with pytest.raises(CommandNotFound, match=r"Can't execute '.*nohelper power-on node2': not found"):
        hooks.run_oob(ctx, str(tmp_path / "nohelper"), "power-on", "node2", 10)


@requires_real_ganeti
def test_run_oob_failures_match_ganeti(ctx: NodeContext, tmp_path: Path) -> None:
    failing = _script(tmp_path / "failing oob", "#!/bin/sh\necho out; echo err >&2; exit 4\n")
    slow = _script(tmp_path / "slow-oob", "#!/bin/sh\nexec sleep 30\n")
    for args in ([str(failing), "power-on", "node2", 10], [str(slow), "power-on", "node2", 0.5]):
        assert our_call(hooks.run_oob, ctx, *args) == real_call(Path(ctx.paths.root), "run_oob", *args)


# -- restricted_command -----------------------------------------------------------------

def _rcmd_dir(ctx: NodeContext, mode: int = 0o755) -> Path:
    d = Path(hooks.restricted_commands_dir(ctx.paths))
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(mode)
    return d


def test_restricted_command_runs_with_an_empty_environment(ctx: NodeContext) -> None:
    _script(_rcmd_dir(ctx) / "show-env", "#!/usr/bin/python3\nimport os\nprint(sorted(os.environ))\n")
    assert hooks.restricted_command(ctx, "show-env") in ("[]\n", "['LC_CTYPE']\n")


def test_a_refused_restricted_command_fails_after_the_delay(ctx: NodeContext) -> None:
    start = time.monotonic()
    with pytest.raises(RpcFail, match=r"^Executing command 'missing' failed$"):
        hooks.run_restricted_command(ctx.paths, "missing", delay=0.3)
    assert time.monotonic() - start >= 0.3


@pytest.mark.parametrize("setup", ["no-dir", "group-writable-dir", "bad-name", "not-executable",
                                   "world-writable-file", "path-name"])
def test_restricted_command_checks_refuse(ctx: NodeContext, setup: str) -> None:
    cmd = "ok"
    if setup != "no-dir":
        d = _rcmd_dir(ctx, 0o775 if setup == "group-writable-dir" else 0o755)
        _script(d / "ok", "#!/bin/sh\necho fine\n",
                mode={"not-executable": 0o644, "world-writable-file": 0o757}.get(setup, 0o755))
    cmd = {"bad-name": "o.k", "path-name": "../ok"}.get(setup, cmd)
    with pytest.raises(RpcFail, match=rf"^Executing command '{cmd}' failed$".replace(".", r"\.")):
        hooks.run_restricted_command(ctx.paths, cmd, delay=0)


def test_restricted_command_refuses_while_the_lock_is_held(ctx: NodeContext) -> None:
    _script(_rcmd_dir(ctx) / "ok", "#!/bin/sh\necho fine\n")
    fd = os.open(hooks.restricted_commands_lock(ctx.paths), os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(RpcFail, match=r"^Executing command 'ok' failed$"):
            hooks.run_restricted_command(ctx.paths, "ok", delay=0, lock_timeout=0.2)
    finally:
        os.close(fd)
    assert hooks.run_restricted_command(ctx.paths, "ok", delay=0) == "fine\n"


@requires_real_ganeti
def test_restricted_command_answers_match_ganeti(ctx: NodeContext) -> None:
    d = _rcmd_dir(ctx)
    _script(d / "hello", "#!/bin/sh\necho hello; echo warn >&2\n")
    _script(d / "failing", "#!/bin/sh\necho partial; exit 3\n")
    for cmd in ("hello", "failing", "missing", "bad/name"):
        ours = our_call(lambda c, name: hooks.run_restricted_command(c.paths, name, delay=0), ctx, cmd)
        theirs = real_snippet(Path(ctx.paths.root), f"""
from ganeti import backend
try:
    result = [True, backend.RunRestrictedCmd({cmd!r}, _sleep_fn=lambda _: None)]
except backend.RPCFail as err:
    result = [False, str(err)]
""")
        assert ours == theirs, cmd
