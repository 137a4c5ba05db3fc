"""The node API's proto surface matches the real Ganeti 3.0.2 node daemon.

One rpc per legacy procedure (all 108 `perspective_*` methods of noded.py),
request fields named and ordered like the positional arguments in Ganeti's
rpc_defs.py, timeouts and offline flags as rpc_defs.py sets them, a comment
on every service, rpc, message and field of the node API, and legacy JSON
(the real daemon's observed results, and bodies in the masters' shapes) that
survives the trip through the typed messages unchanged.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from compat_jsonrpc import codec  # noqa: E402
from generated.ganeti.common.v1 import legacy_pb2  # noqa: E402

GENERATED_DIR = ROOT / "generated" / "ganeti" / "node" / "v1"
PROTO_DIR = ROOT / "proto"
NODE_PROTO_DIR = PROTO_DIR / "ganeti" / "node" / "v1"
GANETI_TREE = Path("/usr/share/ganeti/3.0")
NODED_PY = GANETI_TREE / "ganeti" / "server" / "noded.py"
RPC_DEFS_PY = GANETI_TREE / "ganeti" / "rpc_defs.py"
SYSTEM_PYTHON = Path("/usr/bin/python3")
EXPECTED_PROCEDURES = 108
# Procedures the Haskell master sends but rpc_defs.py does not define; their
# body is one JSON object, not a list of positional arguments.
HASKELL_ONLY = frozenset({"instance_console_info"})

_TIMEOUT_CLASS_SECONDS = {
    legacy_pb2.LEGACY_TIMEOUT_URGENT: 60,
    legacy_pb2.LEGACY_TIMEOUT_FAST: 300,
    legacy_pb2.LEGACY_TIMEOUT_NORMAL: 900,
    legacy_pb2.LEGACY_TIMEOUT_SLOW: 3600,
    legacy_pb2.LEGACY_TIMEOUT_FOUR_HOURS: 4 * 3600,
    legacy_pb2.LEGACY_TIMEOUT_ONE_DAY: 24 * 3600,
}

# Prints {procedure: {"args": [names], "timeout": seconds or null when
# computed, "offline": bool}} for every call of rpc_defs.CALLS.
_RPC_DEFS_DUMP = """
import json
from ganeti import rpc_defs
out = {}
for calls in rpc_defs.CALLS.values():
    for name, (_, _, offline, timeout, args, _, _, _) in calls.items():
        out[name] = {
            "args": [arg[0] for arg in args],
            "timeout": timeout if isinstance(timeout, int) else None,
            "offline": offline is rpc_defs.ACCEPT_OFFLINE_NODE,
        }
print(json.dumps(out))
"""


@dataclass(frozen=True)
class LegacyRpc:
    """An rpc of the node API and the legacy procedure it answers to."""

    service: str
    method: MethodDescriptor
    procedure: legacy_pb2.LegacyProcedure


@dataclass(frozen=True)
class RpcDef:
    """A call as Ganeti's rpc_defs.py defines it."""

    args: list[str]
    timeout: int | None
    offline: bool


def _node_modules() -> list[object]:
    names = sorted(p.stem for p in GENERATED_DIR.glob("*_pb2.py"))
    return [importlib.import_module(f"generated.ganeti.node.v1.{name}") for name in names]


@functools.cache
def _all_rpcs() -> tuple[tuple[str, MethodDescriptor], ...]:
    rpcs: list[tuple[str, MethodDescriptor]] = []
    for module in _node_modules():
        for service in module.DESCRIPTOR.services_by_name.values():  # type: ignore[attr-defined]
            rpcs.extend((service.full_name, method) for method in service.methods)
    return tuple(rpcs)


@functools.cache
def _legacy_rpcs() -> tuple[LegacyRpc, ...]:
    found = []
    for service, method in _all_rpcs():
        options = method.GetOptions()
        if options.HasExtension(legacy_pb2.legacy):
            found.append(LegacyRpc(service, method, options.Extensions[legacy_pb2.legacy]))
    return tuple(found)


def _by_procedure() -> dict[str, LegacyRpc]:
    return {rpc.procedure.name: rpc for rpc in _legacy_rpcs()}


@functools.cache
def _rpc_defs() -> dict[str, RpcDef]:
    if not RPC_DEFS_PY.is_file() or not SYSTEM_PYTHON.is_file():
        pytest.skip(f"Ganeti 3.0's rpc_defs.py ({RPC_DEFS_PY}) or {SYSTEM_PYTHON} is not installed")
    proc = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", _RPC_DEFS_DUMP],
        env={"PYTHONPATH": str(GANETI_TREE), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, f"reading rpc_defs.CALLS failed:\n{proc.stderr}"
    raw = json.loads(proc.stdout)
    return {name: RpcDef(d["args"], d["timeout"], d["offline"]) for name, d in raw.items()}


def _field_names(message: Descriptor) -> list[str]:
    return [f.name for f in sorted(message.fields, key=lambda f: f.number)]


def _shape(message: Descriptor) -> int:
    return message.GetOptions().Extensions[legacy_pb2.legacy_shape]


def _duplicates(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


def test_there_are_exactly_108_legacy_procedures() -> None:
    names = sorted(rpc.procedure.name for rpc in _legacy_rpcs())
    assert len(names) == EXPECTED_PROCEDURES, (
        f"{len(names)} rpcs carry a legacy option, expected {EXPECTED_PROCEDURES}: {names}")


def test_legacy_procedure_names_are_unique() -> None:
    assert _duplicates([rpc.procedure.name for rpc in _legacy_rpcs()]) == []


def test_rpc_names_are_unique_across_services() -> None:
    assert _duplicates([method.name for _, method in _all_rpcs()]) == []


def test_every_node_rpc_names_its_legacy_procedure() -> None:
    missing = [f"{service}.{method.name}" for service, method in _all_rpcs()
               if not method.GetOptions().Extensions[legacy_pb2.legacy].name]
    assert missing == []


def test_legacy_names_are_the_real_daemons_procedures() -> None:
    if not NODED_PY.is_file():
        pytest.skip(f"Ganeti 3.0's node daemon source {NODED_PY} is not installed")
    real = set(re.findall(r"^\s+def perspective_(\w+)\(", NODED_PY.read_text(), re.M))
    assert len(real) == EXPECTED_PROCEDURES
    ours = set(_by_procedure())
    assert (sorted(real - ours), sorted(ours - real)) == ([], [])


def test_request_fields_are_rpc_defs_arguments_in_order() -> None:
    defs = _rpc_defs()
    by_procedure = _by_procedure()
    wrong = {}
    for name, rpc_def in sorted(defs.items()):
        if name not in by_procedure:
            wrong[name] = "no rpc"
            continue
        fields = _field_names(by_procedure[name].method.input_type)
        if fields != rpc_def.args:
            wrong[name] = f"fields {fields} != arguments {rpc_def.args}"
    assert wrong == {}


def test_only_haskell_only_procedures_are_missing_from_rpc_defs() -> None:
    assert set(_by_procedure()) - set(_rpc_defs()) == HASKELL_ONLY


def test_haskell_only_procedures_take_one_unwrapped_object() -> None:
    by_procedure = _by_procedure()
    for name in sorted(HASKELL_ONLY):
        request = by_procedure[name].method.input_type
        assert _shape(request) == legacy_pb2.LEGACY_SHAPE_UNWRAP, name
        assert len(request.fields) == 1, name
        field = request.fields[0]
        value_type = field.message_type
        is_map = value_type is not None and value_type.GetOptions().map_entry
        is_struct = value_type is not None and value_type.full_name == "google.protobuf.Struct"
        assert is_map or is_struct, f"{name}: its single field must be a JSON object"


def test_timeouts_follow_rpc_defs() -> None:
    wrong = {}
    for name, rpc_def in sorted(_rpc_defs().items()):
        rpc = _by_procedure().get(name)
        if rpc is None:
            continue
        timeout = rpc.procedure.timeout
        if rpc_def.timeout is None:
            ok = timeout == legacy_pb2.LEGACY_TIMEOUT_COMPUTED
        else:
            ok = _TIMEOUT_CLASS_SECONDS.get(timeout) == rpc_def.timeout
        if not ok:
            wrong[name] = f"{legacy_pb2.LegacyTimeout.Name(timeout)} != {rpc_def.timeout} s"
    assert wrong == {}


def test_only_rpc_defs_offline_procedures_accept_offline_nodes() -> None:
    defs = _rpc_defs()
    ours = {rpc.procedure.name for rpc in _legacy_rpcs() if rpc.procedure.accept_offline_node}
    assert ours == {name for name, d in defs.items() if d.offline}


def test_every_rpc_has_a_timeout_class() -> None:
    unset = [rpc.procedure.name for rpc in _legacy_rpcs()
             if rpc.procedure.timeout == legacy_pb2.LEGACY_TIMEOUT_UNSPECIFIED]
    assert unset == []


# --- comments: read from protoc's source info (the generated modules drop them)

# Field numbers of the descriptor.proto paths used in SourceCodeInfo.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_SERVICE_METHOD, _ENUM_VALUE = 2, 2


@functools.cache
def _descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO_DIR)) for p in NODE_PROTO_DIR.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "node.binpb"
        proc = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}",
             "--include_source_info", f"--descriptor_set_out={out}", *files],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _enum_elements(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...],
                   prefix: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"enum {prefix}{enum.name}", path
    for i, value in enumerate(enum.value):
        yield f"enum value {prefix}{enum.name}.{value.name}", (*path, _ENUM_VALUE, i)


def _message_elements(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...],
                      prefix: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    if message.options.map_entry:
        return  # synthesized by protoc for map fields
    name = f"{prefix}{message.name}"
    yield f"message {name}", path
    for i, field in enumerate(message.field):
        yield f"field {name}.{field.name}", (*path, _MESSAGE_FIELD, i)
    for i, nested in enumerate(message.nested_type):
        yield from _message_elements(nested, (*path, _MESSAGE_NESTED, i), f"{name}.")
    for i, enum in enumerate(message.enum_type):
        yield from _enum_elements(enum, (*path, _MESSAGE_ENUM, i), f"{name}.")


def _file_elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, tuple[int, ...]]]:
    for i, message in enumerate(file.message_type):
        yield from _message_elements(message, (_FILE_MESSAGE, i), "")
    for i, enum in enumerate(file.enum_type):
        yield from _enum_elements(enum, (_FILE_ENUM, i), "")
    for i, service in enumerate(file.service):
        yield f"service {service.name}", (_FILE_SERVICE, i)
        for j, method in enumerate(service.method):
            yield f"rpc {service.name}.{method.name}", (_FILE_SERVICE, i, _SERVICE_METHOD, j)


def test_every_service_rpc_message_and_field_has_a_leading_comment() -> None:
    uncommented: list[str] = []
    for file in _descriptor_set().file:
        comments = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        uncommented.extend(f"{file.name}: {what}" for what, path in _file_elements(file)
                           if not comments.get(path, "").strip())
    assert uncommented == []


def test_comment_check_sees_every_generated_rpc() -> None:
    described = {f"{s.name}.{m.name}" for f in _descriptor_set().file for s in f.service for m in s.method}
    generated = {f"{service.rsplit('.', 1)[-1]}.{method.name}" for service, method in _all_rpcs()}
    assert described == generated


def test_request_and_response_messages_are_unique_per_rpc() -> None:
    types: list[str] = []
    for _, method in _all_rpcs():
        types += [method.input_type.full_name, method.output_type.full_name]
    assert _duplicates(types) == []


# --- the legacy JSON of every message round-trips through the generic codec

# shared/ lies beside the checkout (here, and in CI).
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples"
SAMPLE_FILES = ("demo_output.jsonl", "more_calls_output.jsonl")
_VIRTUAL = "/###-VIRTUAL-PATH-###,/var/lib/ganeti/"


def _message_class(desc: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(desc)


def _observed_results() -> list[tuple[str, Any]]:
    """(procedure, payload) of every successful call the real daemon answered."""
    found = []
    for name in SAMPLE_FILES:
        path = SAMPLES_DIR / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            if not line.startswith("{"):
                continue  # client log lines between the records
            record = json.loads(line)
            raw = record.get("raw")
            match = re.match(r"(?:[AB]\d?\s+)?([a-z0-9_]+)", record["call"])
            if raw and raw[0] is True and match:
                found.append((match.group(1), raw[1]))
    return found


@pytest.mark.parametrize(("procedure", "payload"), _observed_results())
def test_observed_result_of_the_real_daemon_round_trips(procedure: str, payload: Any) -> None:
    response = _message_class(_by_procedure()[procedure].method.output_type)
    message = codec.response_from_result(response, payload, procedure)
    assert codec.to_native(message, "response") == payload


def test_observed_results_are_available() -> None:
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"reference samples {SAMPLES_DIR} are not available")
    assert len(_observed_results()) > 40


# Legacy bodies in the shapes Ganeti's masters send (rpc_defs.py encoders and
# cmdlib/cluster/verify.py for node_verify), with every null that matters.
_REQUESTS: dict[str, list[Any]] = {
    "upload_file": [[_VIRTUAL + "known_hosts", [0, "x\n"], 33188, "root", "root", 1.5, 2.25]],
    "upload_file_single": [_VIRTUAL + "known_hosts", [1, "eF6r"], None, "root", "root", None, None],
    "write_ssconf_files": [{"cluster_name": "c1", "master_candidates_certs": ["u=AA:BB"]}],
    "etc_hosts_modify": ["remove", "node2", None],
    "node_info": [[["file", "/srv/ganeti/file-storage", []], ["lvm-vg", "xenvg", [False]]],
                  [["fake", {"migration_mode": "live"}]]],
    "node_verify": [{
        "version": None, "time": None, "nodesetup": None, "oslist": None, "client-cert": None,
        "vglist": None, "drbd-version": None, "drbd-list": None, "drbd-helper": "/bin/true",
        "filelist": [_VIRTUAL + "server.pem"], "nodelist": [["n1"], {"n1": ["n9"]}, ["n1"]],
        "hypervisor": ["fake"], "hvparms": [["cluster", "fake", {"a": 1}]],
        "node-net-test": [[["n1", "192.0.2.1", "192.0.2.1"]], ["n1"]], "instancelist": ["fake"],
        "hvinfo": "fake", "master-ip": ["n1", "192.0.2.5", ["n1"]], "nonvmnodes": [], "user-scripts": [],
        "ssh-setup": [[["u1", "n1", True, True, True]], "rsa"], "ssh-clutter": True, "lvlist": "xenvg",
        "pvlist": ["xenvg"], "exclusive-pvs": True, "allowed-file-storage-paths": "n1",
        "file-storage-path": "/srv/ganeti/file-storage", "bridges": ["br0"], "oob-paths": ["/x"],
        "a-future-check": {"x": [1]}}, "c1", {"fake": {}}],
    "node_verify_light": [{"version": None}, "c1", {}],
    "node_crypto_tokens": [[["ssl", "get", {}]]],
    "node_activate_master_ip": [{"uuid": "u", "ip": "192.0.2.5", "netmask": 32, "netdev": "lo",
                                 "ip_family": 2}, False],
    "node_configure_ovs": ["switch1", None],
    "iallocator_runner": ["hail", "{}", {"a": "1", "b": None}],
    "jobqueue_rename": [[[_VIRTUAL + "queue/job-1", _VIRTUAL + "queue/archive/0/job-1"]]],
}

# Results in the shapes backend.py returns, with every null that matters.
_RESULTS: dict[str, Any] = {
    "get_file_info": [False, {}],
    "run_oob": None,
    "node_info": ["boot-id",
                  [{"type": "lvm-vg", "name": "xenvg", "storage_free": None, "storage_size": None}],
                  [{"memory_total": 1, "memory_free": 1, "memory_dom0": 1, "cpu_total": 2, "cpu_nodes": 1,
                    "cpu_sockets": 1, "cpu_dom0": 2, "hv_version": [2, 5, 0], "memory_hv": 3}]],
    "node_verify": {
        "master-ip": None, "oob-paths": [None, "out of band helper /x is not a file"],
        "hypervisor": {"fake": None, "kvm": "bad"}, "hvparms": [["cluster", "fake", "err"]],
        "lvlist": {"xenvg/lv": ["1024.00", False, True]}, "instancelist": "error text",
        "drbd-list": [0, 1], "drbd-version": "8.4.11", "drbd-helper": [False, "no module"],
        "vglist": {"xenvg": 10240}, "exclusive-pvs": [["/dev/sda", ["a", "b"]]],
        "pvlist": [{"name": "/dev/sda", "vg_name": "xenvg", "size": 100.5, "free": 50.25,
                    "attributes": "a--", "lv_list": []}],
        "nodesetup": [], "user-scripts": [], "ssh-setup": [], "ssh-clutter": [], "nodelist": {},
        "node-net-test": {}, "allowed-file-storage-paths": [], "file-storage-path": "not allowed",
        "client-cert": ["ERROR", "missing"],
        "oslist": [["noop", "/p", True, "", [], [["p", "doc"]], [20], True]]},
    "node_volumes": [{"name": "lv", "size": "1024.00", "dev": "/dev/sda", "vg": "xenvg"}],
    "node_ssh_key_add": [["n2", "failed"]],
    "node_ssh_key_remove": None,
    "node_leave_cluster": "Shutdown scheduled",
    "hooks_runner": [["cluster-verify-post.d/00-x", 2, "ok"]],
    "jobqueue_rename": [None, None],
}


@pytest.mark.parametrize("procedure", sorted(_REQUESTS))
def test_legacy_request_body_round_trips(procedure: str) -> None:
    request = _message_class(_by_procedure()[procedure].method.input_type)
    message = codec.request_from_args(request, _REQUESTS[procedure], procedure)
    assert codec.args_from_request(message) == _REQUESTS[procedure]


@pytest.mark.parametrize("procedure", sorted(_RESULTS))
def test_legacy_result_round_trips(procedure: str) -> None:
    response = _message_class(_by_procedure()[procedure].method.output_type)
    message = codec.response_from_result(response, _RESULTS[procedure], procedure)
    assert codec.to_native(message, "response") == _RESULTS[procedure]
