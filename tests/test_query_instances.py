"""The `instance` query resource: every field of luxid's table over an in-memory config.data, live data
rules (status, oper_*, console), selection, QueryInstances, and Debian's gnt-instance list against our
master on a 3-node cluster (127.0.13.x, cluster IP 127.0.13.100).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from masterd.config.model import ConfigData
from masterd.query.engine import check_fields_response, check_query_response, query_fields
from masterd.query.errors import FilterError, OpPrereqError
from masterd.query.fields import (
    RS_NODATA,
    RS_NORMAL,
    RS_OFFLINE,
    RS_UNAVAIL,
    RS_UNKNOWN,
)
from masterd.query.instances import (
    LIVE_FIELDS,
    PENDING,
    InstanceItem,
    Live,
    classic_instances,
    combine_live,
    instance_items,
    instance_resource,
    needs_live,
    query_instances,
    select_instances,
)
from masterd.rpc import RpcResult

from cluster_support import needs_cluster  # isort: skip
from config_support import SAMPLES, cluster  # isort: skip
from instance_cluster import InstanceCluster, build_cluster  # isort: skip

REAL_FIELDS = json.loads((SAMPLES / "real_query_fields.json").read_text())["instance"]


def _real_fields() -> list[dict[str, str]]:
    return REAL_FIELDS if isinstance(REAL_FIELDS, list) else REAL_FIELDS["fields"]


# --- an in-memory configuration ------------------------------------------------------------------------

NET_UUID = "5b1c6a8e-0000-4000-8000-00000000ne01"


def _disk(uuid: str, dev_type: str, nodes: list[str], size: int, index: int, **extra: Any) -> dict[str, Any]:
    """A disk object shaped like the reference sample's."""
    disk: dict[str, Any] = {
        "logical_id": ["loop", f"/srv/ganeti/file-storage/x/{uuid}.file.disk{index}"], "dev_type": dev_type,
        "children": [], "nodes": nodes, "iv_name": f"disk/{index}", "size": size, "mode": "rw", "params": {},
        "uuid": uuid, "serial_no": 1, "ctime": 1795313918.4, "mtime": 1795313918.4}
    disk.update(extra)
    return disk


def _instance(uuid: str, name: str, pnode: str, disks: list[str], nics: list[dict[str, Any]],
              **extra: Any) -> dict[str, Any]:
    """An instance object shaped like the reference sample's."""
    raw: dict[str, Any] = {
        "name": name, "primary_node": pnode, "os": "noop", "hypervisor": "fake", "hvparams": {},
        "beparams": {"minmem": 128, "maxmem": 128}, "osparams": {}, "osparams_private": {},
        "admin_state": "up", "admin_state_source": "admin", "nics": nics, "disks": disks,
        "disks_active": True, "ctime": 1795313918.379364, "mtime": 1795313918.855371, "uuid": uuid,
        "serial_no": 3, "tags": []}
    raw.update(extra)
    return raw


def build_config() -> ConfigData:
    """Three nodes and six instances covering the field rules (the sample's shapes)."""
    cfg = cluster("node1", "node2", "node3")
    n1, n2, n3 = (cfg.node_by_name(n).uuid for n in ("node1", "node2", "node3"))
    group = cfg.node_by_name("node1").group
    cfg.tree["networks"][NET_UUID] = {"name": "net1", "network": "192.0.2.0/24", "uuid": NET_UUID}
    cfg.cluster["osparams"] = {"noop": {"a": "1", "b": "base"}, "noop+v": {"b": "variant"}}
    cfg.cluster["os_hvp"] = {"tiny": {"kvm": {"kernel_args": "console=ttyS0"}}}
    disks = {
        "d-file0": _disk("d-file0", "file", [n1], 1024, 0, name="root"),
        "d-file1": _disk("d-file1", "file", [n1], 2048, 1, spindles=2),
        "d-drbd0": _disk("d-drbd0", "drbd", [n2, n3], 512, 0, logical_id=[n2, n3, 11000, 0, 1, "secret"]),
        "d-plain": _disk("d-plain", "plain", [n2], 100, 1, logical_id=["xenvg", "lv"]),
        "d-shared": _disk("d-shared", "sharedfile", [n3], 300, 0),
    }
    cfg.tree["disks"].update(disks)
    instances = {
        # file, two disks, a routed NIC with an IP and a bridged NIC in a network
        "u-inst1": _instance("u-inst1", "inst1.example.com", n1, ["d-file0", "d-file1"], [
            {"mac": "aa:00:00:00:00:01", "ip": "192.0.2.10", "nicparams": {"mode": "routed", "link": "rt1"},
             "name": "eth0", "uuid": "nic-1"},
            {"mac": "aa:00:00:00:00:02", "nicparams": {}, "network": NET_UUID, "uuid": "nic-2"}],
            tags=["web", "prod"], osparams={"c": "own"}, os="noop+v"),
        # diskless, no NIC, old-style memory beparam, stopped by the admin
        "u-inst2": _instance("u-inst2", "inst2.example.com", n2, [], [], beparams={"memory": 512},
                             admin_state="down"),
        # drbd plus plain: secondaries, DRBD metadata in disk_usage, a mixed template
        "u-inst3": _instance("u-inst3", "inst3.example.com", n2, ["d-drbd0", "d-plain"], [
            {"mac": "aa:00:00:00:00:03", "nicparams": {"mode": "openvswitch", "link": "br", "vlan": ".100"},
             "uuid": "nic-3"}], admin_state="offline"),
        # kvm with a network port, sharedfile
        "u-inst4": _instance("u-inst4", "inst4.example.com", n3, ["d-shared"], [], hypervisor="kvm",
                             os="tiny", hvparams={"kernel_path": ""}, network_port=11001, forthcoming=True),
        "u-inst10": _instance("u-inst10", "inst10.example.com", n1, [], []),
        # a disk uuid missing from config.data
        "u-broken": _instance("u-broken", "broken.example.com", n3, ["d-missing"], []),
    }
    cfg.tree["instances"].update(instances)
    cfg.tree["nodegroups"][group]["name"] = "default"
    return cfg


@pytest.fixture
def cfg() -> ConfigData:
    return build_config()


def item(cfg: ConfigData, uuid: str, live: Live | None = None) -> InstanceItem:
    [found] = instance_items(cfg, [uuid])
    if live is not None:
        found.live = live
    return found


def entry(found: InstanceItem, field: str) -> list[Any]:
    spec = instance_resource().specs[field]
    status, value = spec.getter(found)
    return [status, value if status == RS_NORMAL else None]


def node_uuid(cfg: ConfigData, name: str) -> str:
    return cfg.node_by_name(name).uuid


def query(cfg: ConfigData, fields: list[str], qfilter: Any = None) -> dict[str, Any]:
    return asyncio.run(query_instances(cfg, None, fields, qfilter))


# --- the field table -----------------------------------------------------------------------------------

def test_every_field_of_the_real_table_has_a_getter() -> None:
    specs = instance_resource().specs
    real = _real_fields()
    assert len(real) == 292
    assert sorted(specs) == sorted(f["name"] for f in real)
    assert {n: s.definition.to_dict() for n, s in specs.items()} == {f["name"]: f for f in real}


def test_query_fields_lists_the_real_table_in_natural_order() -> None:
    answer = query_fields(instance_resource().definitions, None)
    check_fields_response(answer)
    assert sorted(f["name"] for f in answer["fields"]) == sorted(f["name"] for f in _real_fields())
    names = [f["name"] for f in answer["fields"]]
    assert names.index("disk.size/2") < names.index("disk.size/10")


_KIND_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,), "bool": (bool,), "number": (int,), "unit": (int,), "timestamp": (float, int),
    "float": (float, int)}


@pytest.mark.parametrize("field", sorted(f["name"] for f in _real_fields()))
def test_every_field_answers_a_value_of_its_kind_for_every_instance(cfg: ConfigData, field: str) -> None:
    kind = instance_resource().definitions[field].kind
    nodes = {n.name: n.uuid for n in cfg.nodes()}
    results = {"node1": RpcResult("node1", payload={"inst1.example.com": {
        "memory": 128, "vcpus": 1, "state": 0, "time": 1.5}}), "node2": RpcResult("node2", payload={}),
        "node3": RpcResult("node3", fail_msg="Connection refused")}
    console = {"instance": "inst1.example.com", "kind": "message", "message": "x"}
    consoles = {"node1": RpcResult("node1", payload={"inst1.example.com": console})}
    items = instance_items(cfg, select_instances(cfg, []))
    live = combine_live(cfg, items, results, consoles)
    assert set(nodes) == {"node1", "node2", "node3"}
    for found in items:
        found.live = live[found.uuid]
        status, value = entry(found, field)
        assert status in (RS_NORMAL, RS_NODATA, RS_UNAVAIL, RS_OFFLINE), (field, found.raw["name"])
        if status == RS_NORMAL and kind in _KIND_TYPES:
            assert isinstance(value, _KIND_TYPES[kind]), (field, found.raw["name"], value)
            if kind in ("number", "unit"):
                assert not isinstance(value, bool), (field, value)
        json.dumps(value)


# --- configuration fields ------------------------------------------------------------------------------

def test_simple_fields_come_from_the_instance(cfg: ConfigData) -> None:
    inst1 = item(cfg, "u-inst1")
    raw = cfg.tree["instances"]["u-inst1"]
    assert entry(inst1, "name") == [RS_NORMAL, raw["name"]]
    assert entry(inst1, "uuid") == [RS_NORMAL, "u-inst1"]
    assert entry(inst1, "os") == [RS_NORMAL, "noop+v"]
    assert entry(inst1, "hypervisor") == [RS_NORMAL, "fake"]
    assert entry(inst1, "admin_state") == [RS_NORMAL, "up"]
    assert entry(inst1, "admin_state_source") == [RS_NORMAL, "admin"]
    assert entry(inst1, "admin_up") == [RS_NORMAL, True]
    assert entry(item(cfg, "u-inst2"), "admin_up") == [RS_NORMAL, False]
    assert entry(inst1, "disks_active") == [RS_NORMAL, True]
    assert entry(inst1, "ctime") == [RS_NORMAL, raw["ctime"]]
    assert entry(inst1, "mtime") == [RS_NORMAL, raw["mtime"]]
    assert entry(inst1, "serial_no") == [RS_NORMAL, 3]
    assert entry(inst1, "tags") == [RS_NORMAL, ["web", "prod"]]
    assert entry(inst1, "forthcoming") == [RS_NORMAL, False]
    assert entry(item(cfg, "u-inst4"), "forthcoming") == [RS_NORMAL, True]


def test_network_port_is_unavailable_unless_set(cfg: ConfigData) -> None:
    assert entry(item(cfg, "u-inst1"), "network_port") == [RS_UNAVAIL, None]
    assert entry(item(cfg, "u-inst4"), "network_port") == [RS_NORMAL, 11001]


def test_primary_and_secondary_nodes_with_their_groups(cfg: ConfigData) -> None:
    group = cfg.node_by_name("node2").group
    inst3 = item(cfg, "u-inst3")
    assert entry(inst3, "pnode") == [RS_NORMAL, "node2"]
    assert entry(inst3, "pnode.group") == [RS_NORMAL, "default"]
    assert entry(inst3, "pnode.group.uuid") == [RS_NORMAL, group]
    assert entry(inst3, "snodes") == [RS_NORMAL, ["node3"]]
    assert entry(inst3, "snodes.group") == [RS_NORMAL, ["default"]]
    assert entry(inst3, "snodes.group.uuid") == [RS_NORMAL, [group]]
    for uuid in ("u-inst1", "u-inst2", "u-inst4"):  # file, diskless, sharedfile: no secondaries
        assert entry(item(cfg, uuid), "snodes") == [RS_NORMAL, []]


def test_parameters_are_merged_as_ganeti_does(cfg: ConfigData) -> None:
    inst1 = item(cfg, "u-inst1")
    assert entry(inst1, "custom_hvparams") == [RS_NORMAL, {}]
    # the cluster-global migration_mode is not an instance parameter
    assert entry(inst1, "hvparams") == [RS_NORMAL, {}]
    assert entry(inst1, "beparams") == [RS_NORMAL, {**cfg.cluster["beparams"]["default"], "maxmem": 128,
                                                    "minmem": 128}]
    assert entry(inst1, "osparams") == [RS_NORMAL, {"a": "1", "b": "variant", "c": "own"}]
    assert entry(inst1, "custom_osparams") == [RS_NORMAL, {"c": "own"}]
    assert entry(inst1, "custom_nicparams") == [RS_NORMAL, [{"mode": "routed", "link": "rt1"}, {}]]
    inst4 = item(cfg, "u-inst4")
    kvm = dict(cfg.cluster["hvparams"]["kvm"])
    expected = {k: v for k, v in kvm.items()
                if k not in ("migration_bandwidth", "migration_mode", "migration_port")}
    expected.update(kernel_path="", kernel_args="console=ttyS0")
    assert entry(inst4, "hvparams") == [RS_NORMAL, expected]
    assert entry(inst4, "hv/kernel_path") == [RS_NORMAL, ""]
    assert entry(inst4, "hv/kernel_args") == [RS_NORMAL, "console=ttyS0"]
    assert entry(inst4, "hv/serial_speed") == [RS_NORMAL, kvm["serial_speed"]]
    # parameters the instance's hypervisor does not have, and the cluster-global ones
    assert entry(inst1, "hv/kernel_path") == [RS_UNAVAIL, None]
    for name in ("hv/migration_mode", "hv/migration_port", "hv/migration_bandwidth", "hv/xen_cmd"):
        assert name not in instance_resource().specs


def test_backend_fields_and_their_aliases(cfg: ConfigData) -> None:
    inst2 = item(cfg, "u-inst2")  # beparams {"memory": 512}: upgraded to maxmem/minmem
    assert entry(inst2, "be/maxmem") == [RS_NORMAL, 512]
    assert entry(inst2, "be/minmem") == [RS_NORMAL, 512]
    assert entry(inst2, "be/memory") == [RS_NORMAL, 512]
    assert entry(inst2, "be/vcpus") == [RS_NORMAL, 1]
    assert entry(inst2, "vcpus") == [RS_NORMAL, 1]
    assert entry(inst2, "be/auto_balance") == [RS_NORMAL, True]
    assert entry(inst2, "be/always_failover") == [RS_NORMAL, False]
    assert entry(inst2, "be/spindle_use") == [RS_NORMAL, 1]
    assert entry(inst2, "custom_beparams") == [RS_NORMAL, {"memory": 512}]


def test_disk_fields(cfg: ConfigData) -> None:
    inst1 = item(cfg, "u-inst1")
    assert entry(inst1, "disk_template") == [RS_NORMAL, "file"]
    assert entry(inst1, "disk.count") == [RS_NORMAL, 2]
    assert entry(inst1, "disk.sizes") == [RS_NORMAL, [1024, 2048]]
    assert entry(inst1, "disk_usage") == [RS_NORMAL, 3072]
    assert entry(inst1, "disk.names") == [RS_NORMAL, ["root", None]]
    assert entry(inst1, "disk.spindles") == [RS_NORMAL, [None, 2]]
    assert entry(inst1, "disk.uuids") == [RS_NORMAL, ["d-file0", "d-file1"]]
    assert entry(inst1, "disk.size/0") == [RS_NORMAL, 1024]
    assert entry(inst1, "sda_size") == [RS_NORMAL, 1024]
    assert entry(inst1, "sdb_size") == [RS_NORMAL, 2048]
    assert entry(inst1, "disk.size/2") == [RS_UNAVAIL, None]
    assert entry(inst1, "disk.size/15") == [RS_UNAVAIL, None]
    assert entry(inst1, "disk.name/0") == [RS_NORMAL, "root"]
    assert entry(inst1, "disk.name/1") == [RS_UNAVAIL, None]
    assert entry(inst1, "disk.spindles/0") == [RS_UNAVAIL, None]
    assert entry(inst1, "disk.spindles/1") == [RS_NORMAL, 2]
    assert entry(inst1, "disk.uuid/1") == [RS_NORMAL, "d-file1"]
    inst2 = item(cfg, "u-inst2")
    assert entry(inst2, "disk_template") == [RS_NORMAL, "diskless"]
    assert entry(inst2, "disk_usage") == [RS_NORMAL, 0]
    assert entry(inst2, "disk.sizes") == [RS_NORMAL, []]
    assert entry(inst2, "sda_size") == [RS_UNAVAIL, None]
    inst3 = item(cfg, "u-inst3")
    assert entry(inst3, "disk_template") == [RS_NORMAL, "mixed"]
    assert entry(inst3, "disk_usage") == [RS_NORMAL, 512 + 128 + 100]
    assert entry(item(cfg, "u-inst4"), "disk_template") == [RS_NORMAL, "sharedfile"]


def test_an_instance_with_a_missing_disk_has_no_disk_data(cfg: ConfigData) -> None:
    broken = item(cfg, "u-broken")
    for field in ("disk_template", "disk.sizes", "disk_usage", "disk.size/0", "snodes"):
        assert entry(broken, field) == [RS_NODATA, None], field
    assert entry(broken, "disk.count") == [RS_NORMAL, 1]


def test_nic_fields(cfg: ConfigData) -> None:
    inst1 = item(cfg, "u-inst1")
    default_link = cfg.cluster["nicparams"]["default"]["link"]
    assert entry(inst1, "nic.count") == [RS_NORMAL, 2]
    assert entry(inst1, "nic.macs") == [RS_NORMAL, ["aa:00:00:00:00:01", "aa:00:00:00:00:02"]]
    assert entry(inst1, "nic.ips") == [RS_NORMAL, ["192.0.2.10", None]]
    assert entry(inst1, "nic.names") == [RS_NORMAL, ["eth0", None]]
    assert entry(inst1, "nic.uuids") == [RS_NORMAL, ["nic-1", "nic-2"]]
    assert entry(inst1, "nic.modes") == [RS_NORMAL, ["routed", "bridged"]]
    assert entry(inst1, "nic.links") == [RS_NORMAL, ["rt1", default_link]]
    assert entry(inst1, "nic.bridges") == [RS_NORMAL, [None, default_link]]
    assert entry(inst1, "nic.vlans") == [RS_NORMAL, [None, None]]
    assert entry(inst1, "nic.networks") == [RS_NORMAL, [None, NET_UUID]]
    assert entry(inst1, "nic.networks.names") == [RS_NORMAL, [None, "net1"]]
    assert entry(inst1, "nic.ip/0") == [RS_NORMAL, "192.0.2.10"]
    assert entry(inst1, "ip") == [RS_NORMAL, "192.0.2.10"]
    assert entry(inst1, "nic.ip/1") == [RS_UNAVAIL, None]
    assert entry(inst1, "mac") == [RS_NORMAL, "aa:00:00:00:00:01"]
    assert entry(inst1, "nic.mode/0") == [RS_NORMAL, "routed"]
    assert entry(inst1, "nic_mode") == [RS_NORMAL, "routed"]
    assert entry(inst1, "nic_link") == [RS_NORMAL, "rt1"]
    assert entry(inst1, "bridge") == [RS_UNAVAIL, None]
    assert entry(inst1, "nic.bridge/1") == [RS_NORMAL, default_link]
    assert entry(inst1, "nic.vlan/1") == [RS_UNAVAIL, None]
    assert entry(inst1, "nic.name/0") == [RS_NORMAL, "eth0"]
    assert entry(inst1, "nic.name/1") == [RS_UNAVAIL, None]
    assert entry(inst1, "nic_network") == [RS_UNAVAIL, None]
    assert entry(inst1, "nic.network/1") == [RS_NORMAL, NET_UUID]
    assert entry(inst1, "nic.network.name/1") == [RS_NORMAL, "net1"]
    assert entry(inst1, "nic.network.name/0") == [RS_UNAVAIL, None]
    assert entry(inst1, "nic.uuid/1") == [RS_NORMAL, "nic-2"]
    assert entry(inst1, "nic.mac/2") == [RS_UNAVAIL, None]
    assert entry(inst1, "nic.mode/7") == [RS_UNAVAIL, None]
    inst3 = item(cfg, "u-inst3")
    assert entry(inst3, "nic.vlan/0") == [RS_NORMAL, ".100"]
    assert entry(inst3, "nic.vlans") == [RS_NORMAL, [".100"]]
    assert entry(inst3, "nic.bridges") == [RS_NORMAL, [None]]
    assert entry(item(cfg, "u-inst2"), "nic.macs") == [RS_NORMAL, []]


# --- live fields -----------------------------------------------------------------------------------------

RUNNING = {"memory": 128, "vcpus": 1, "state": 0, "time": 1.0}
SHUTDOWN = {"memory": 128, "vcpus": 1, "state": 1, "time": -1}


def live_of(cfg: ConfigData, uuid: str, results: dict[str, RpcResult],
            consoles: dict[str, RpcResult] | None = None) -> InstanceItem:
    items = instance_items(cfg, select_instances(cfg, []))
    live = combine_live(cfg, items, results, consoles)
    found = item(cfg, uuid)
    found.live = live[uuid]
    return found


def ok(node: str, **instances: Any) -> RpcResult:
    return RpcResult(node, payload=dict(instances))


def test_running_instance(cfg: ConfigData) -> None:
    found = live_of(cfg, "u-inst1", {"node1": ok("node1", **{"inst1.example.com": RUNNING}),
                                     "node2": ok("node2"), "node3": ok("node3")})
    assert entry(found, "status") == [RS_NORMAL, "running"]
    assert entry(found, "oper_state") == [RS_NORMAL, True]
    assert entry(found, "oper_ram") == [RS_NORMAL, 128]
    assert entry(found, "oper_vcpus") == [RS_NORMAL, 1]
    assert entry(found, "console") == [RS_NODATA, None]  # not asked for


def test_stopped_instances_by_admin_state(cfg: ConfigData) -> None:
    answers = {"node1": ok("node1"), "node2": ok("node2"), "node3": ok("node3")}
    up = live_of(cfg, "u-inst1", answers)
    assert entry(up, "status") == [RS_NORMAL, "ERROR_down"]
    assert entry(up, "oper_state") == [RS_NORMAL, False]
    assert entry(up, "oper_ram") == [RS_UNAVAIL, None]
    assert entry(up, "oper_vcpus") == [RS_UNAVAIL, None]
    assert entry(live_of(cfg, "u-inst2", answers), "status") == [RS_NORMAL, "ADMIN_down"]
    assert entry(live_of(cfg, "u-inst3", answers), "status") == [RS_NORMAL, "ADMIN_offline"]


def test_running_though_stopped_by_the_admin_is_error_up(cfg: ConfigData) -> None:
    found = live_of(cfg, "u-inst2", {"node2": ok("node2", **{"inst2.example.com": RUNNING})})
    assert entry(found, "status") == [RS_NORMAL, "ERROR_up"]


def test_user_shutdown_follows_the_cluster_setting(cfg: ConfigData) -> None:
    answers = {"node1": ok("node1", **{"inst1.example.com": SHUTDOWN})}
    assert entry(live_of(cfg, "u-inst1", answers), "status") == [RS_NORMAL, "ERROR_down"]
    cfg.cluster["enabled_user_shutdown"] = True
    found = live_of(cfg, "u-inst1", answers)
    assert entry(found, "status") == [RS_NORMAL, "USER_down"]
    assert entry(found, "oper_state") == [RS_NORMAL, True]
    # stopped by its user earlier: the configuration remembers who
    cfg.tree["instances"]["u-inst2"]["admin_state_source"] = "user"
    assert entry(live_of(cfg, "u-inst2", {"node2": ok("node2")}), "status") == [RS_NORMAL, "USER_down"]
    # a kvm instance needs its own user_shutdown parameter
    kvm = live_of(cfg, "u-inst4", {"node3": ok("node3", **{"inst4.example.com": SHUTDOWN})})
    assert entry(kvm, "status") == [RS_NORMAL, "ERROR_down"]
    cfg.tree["instances"]["u-inst4"]["hvparams"]["user_shutdown"] = True
    kvm = live_of(cfg, "u-inst4", {"node3": ok("node3", **{"inst4.example.com": SHUTDOWN})})
    assert entry(kvm, "status") == [RS_NORMAL, "USER_down"]


def test_instance_running_on_another_node_is_wrongnode(cfg: ConfigData) -> None:
    found = live_of(cfg, "u-inst1", {"node1": ok("node1"), "node3": ok("node3"),
                                     "node2": ok("node2", **{"inst1.example.com": RUNNING})})
    assert entry(found, "status") == [RS_NORMAL, "ERROR_wrongnode"]
    assert entry(found, "oper_state") == [RS_NORMAL, True]
    assert entry(found, "oper_ram") == [RS_NORMAL, 128]


def test_failed_primary_node_gives_nodata_and_nodedown(cfg: ConfigData) -> None:
    found = live_of(cfg, "u-inst1", {"node1": RpcResult("node1", fail_msg="Connection refused"),
                                     "node2": ok("node2"), "node3": ok("node3")})
    assert entry(found, "status") == [RS_NORMAL, "ERROR_nodedown"]
    for field in ("oper_state", "oper_ram", "oper_vcpus", "console"):
        assert entry(found, field) == [RS_NODATA, None], field


def test_offline_primary_node_gives_offline_and_nodeoffline(cfg: ConfigData) -> None:
    cfg.tree["nodes"][node_uuid(cfg, "node1")]["offline"] = True
    found = live_of(cfg, "u-inst1", {"node1": RpcResult("node1", fail_msg="Node is marked offline",
                                                        offline=True)})
    assert entry(found, "status") == [RS_NORMAL, "ERROR_nodeoffline"]
    assert entry(found, "oper_state") == [RS_NODATA, None]
    for field in ("oper_ram", "oper_vcpus", "console"):
        assert entry(found, field) == [RS_OFFLINE, None], field


def test_console_comes_from_the_primary_node(cfg: ConfigData) -> None:
    console = {"instance": "inst1.example.com", "kind": "message", "message": "fake"}
    found = live_of(cfg, "u-inst1", {"node1": ok("node1", **{"inst1.example.com": RUNNING})},
                    {"node1": ok("node1", **{"inst1.example.com": console})})
    assert entry(found, "console") == [RS_NORMAL, console]


def test_live_fields_read_before_gathering_are_pending(cfg: ConfigData) -> None:
    found = item(cfg, "u-inst1", PENDING)
    with pytest.raises(Exception, match="u-inst1"):
        entry(found, "status")


def test_needs_live_looks_at_fields_and_filter() -> None:
    assert LIVE_FIELDS == {"status", "oper_state", "oper_ram", "oper_vcpus", "console"}
    assert not needs_live(["name", "pnode", "be/memory"], None)
    assert needs_live(["name", "oper_ram"], None)
    assert needs_live(["name"], ["==", "status", "running"])
    assert not needs_live(["name"], ["==", "pnode", "node2"])


# --- queries ----------------------------------------------------------------------------------------------

def names_of(answer: dict[str, Any]) -> list[str]:
    return [row[0][1] for row in answer["data"]]


def test_query_without_names_lists_every_instance_in_natural_order(cfg: ConfigData) -> None:
    answer = query(cfg, ["name", "pnode", "disk_template"])
    check_query_response(answer)
    assert names_of(answer) == ["broken.example.com", "inst1.example.com", "inst2.example.com",
                                "inst3.example.com", "inst4.example.com", "inst10.example.com"]


def test_query_by_names_keeps_the_order_asked(cfg: ConfigData) -> None:
    qfilter = ["|", ["==", "name", "inst3.example.com"], ["==", "name", "inst1"], ["==", "name", "inst2"],
               ["==", "name", "inst1.example.com"]]
    assert names_of(query(cfg, ["name"], qfilter)) == ["inst3.example.com", "inst1.example.com",
                                                       "inst2.example.com"]
    # a uuid selects the instance, but the filter (on the name) then drops it, as in luxid
    assert names_of(query(cfg, ["name"], ["|", ["==", "name", "u-inst2"]])) == []


def test_query_for_an_unknown_name_fails_as_luxid(cfg: ConfigData) -> None:
    with pytest.raises(OpPrereqError) as err:
        query(cfg, ["name"], ["|", ["==", "name", "inst1"], ["==", "name", "nosuch"]])
    assert err.value.encode() == ["OpPrereqError", ["Instance name nosuch not found", "unknown_entity"]]


def test_filter_on_primary_node_matches_its_short_name(cfg: ConfigData) -> None:
    answer = query(cfg, ["name", "pnode"], ["==", "pnode", "node2"])
    assert [row[1][1] for row in answer["data"]] == ["node2", "node2"]
    assert names_of(answer) == ["inst2.example.com", "inst3.example.com"]


def test_live_query_without_node_answers_is_nodata(cfg: ConfigData) -> None:
    cfg.tree["nodes"][node_uuid(cfg, "node3")]["offline"] = True
    answer = query(cfg, ["name", "status", "oper_ram"], ["!", ["==", "pnode", "node1"]])
    check_query_response(answer)
    assert answer["data"] == [
        [[RS_NORMAL, "broken.example.com"], [RS_NORMAL, "ERROR_nodeoffline"], [RS_OFFLINE, None]],
        [[RS_NORMAL, "inst2.example.com"], [RS_NORMAL, "ERROR_nodedown"], [RS_NODATA, None]],
        [[RS_NORMAL, "inst3.example.com"], [RS_NORMAL, "ERROR_nodedown"], [RS_NODATA, None]],
        [[RS_NORMAL, "inst4.example.com"], [RS_NORMAL, "ERROR_nodeoffline"], [RS_OFFLINE, None]]]


def test_filter_on_a_live_field_is_decided_with_the_live_data(cfg: ConfigData) -> None:
    answer = query(cfg, ["name"], ["&", ["==", "pnode", "node2"], ["==", "status", "ERROR_nodedown"]])
    assert names_of(answer) == ["inst2.example.com", "inst3.example.com"]
    assert query(cfg, ["name"], ["==", "status", "running"])["data"] == []


def test_bad_filter_is_refused_before_any_work(cfg: ConfigData) -> None:
    with pytest.raises(FilterError, match="Unknown field 'nosuch'"):
        query(cfg, ["status"], ["==", "nosuch", "x"])
    with pytest.raises(FilterError):
        query(cfg, ["name"], ["==", "disk.count", "two"])


def test_unknown_field_is_unknown_in_every_row(cfg: ConfigData) -> None:
    answer = query(cfg, ["name", "nosuch"])
    assert answer["fields"][1] == {"name": "nosuch", "title": "nosuch", "kind": "unknown",
                                   "doc": "Unknown field 'nosuch'"}
    assert all(row[1] == [RS_UNKNOWN, None] for row in answer["data"])


def test_classic_query_matches_names_and_uuids_and_drops_unknown_ones(cfg: ConfigData) -> None:
    names = ["inst3", "nosuch", "u-inst1"]
    rows = asyncio.run(classic_instances(cfg, None, names, ["name", "pnode", "tags"]))
    assert rows == [["inst1.example.com", "node1", ["web", "prod"]], ["inst3.example.com", "node2", []]]
    every = asyncio.run(classic_instances(cfg, None, [], ["name"]))
    assert [r[0] for r in every] == names_of(query(cfg, ["name"]))


def test_classic_query_refuses_unknown_fields(cfg: ConfigData) -> None:
    with pytest.raises(OpPrereqError) as err:
        asyncio.run(classic_instances(cfg, None, [], ["name", "foo", "bar"]))
    assert err.value.encode() == ["OpPrereqError",
                                  ["Unknown output fields selected: foo, bar", "wrong_input"]]


def test_classic_live_values_are_plain(cfg: ConfigData) -> None:
    rows = asyncio.run(classic_instances(cfg, None, ["inst1"], ["name", "oper_ram", "status"]))
    assert rows == [["inst1.example.com", None, "ERROR_nodedown"]]


def test_queries_do_not_change_the_configuration(cfg: ConfigData) -> None:
    before = copy.deepcopy(cfg.tree)
    query(cfg, sorted(instance_resource().specs))
    assert cfg.tree == before


# --- Debian's gnt-instance list against our master ---------------------------------------------------------

NODES = {"node1": "127.0.13.1", "node2": "127.0.13.2", "node3": "127.0.13.3"}
CLUSTER_IP = "127.0.13.100"
INSTANCES = {"inst1": "127.0.13.51", "inst2": "127.0.13.52", "inst3": "127.0.13.53", "inst4": "127.0.13.54"}
#: What each instance is made of: node, template, memory (MiB), started.
LAYOUT = {"inst1": ("node1", "file", 128, True), "inst2": ("node2", "diskless", 256, False),
          "inst3": ("node2", "file", 192, True), "inst4": ("node3", "diskless", 160, True)}
LUXI_CLIENT = """
import json, sys
from ganeti import luxi
client = luxi.Client(address=sys.argv[1])
method, args = json.loads(sys.argv[2])
result = getattr(client, method)(*args)
print(json.dumps(result.ToDict() if hasattr(result, "ToDict") else result))
"""


@pytest.fixture(scope="module")
def real() -> Any:
    with build_cluster("gq", NODES, CLUSTER_IP, instances=INSTANCES) as c:
        for name, (node, template, memory, start) in LAYOUT.items():
            args = ["add", "-n", node, "-t", template, "-o", "noop", "--no-ip-check", "--no-name-check", "-H",
                    "fake", "-B", f"memory={memory}M", "--net", f"0:mode=routed,ip={INSTANCES[name]}"]
            if template == "file":
                args += ["--disk", "0:size=1G"]
            if not start:
                args.append("--no-start")
            if name == "inst1":
                args += ["--tags", "web,prod"]
            done = c.gnt("gnt-instance", *args, name)
            assert done.returncode == 0, done.stderr
        yield c


def luxi_call(c: InstanceCluster, method: str, *args: Any) -> Any:
    """A call through Debian's own LUXI client (python3 with Ganeti's modules)."""
    socket = str(c.root(c.master) / "var/run/ganeti/socket/ganeti-query")
    env = dict(c.env, PYTHONPATH="/usr/share/ganeti/3.0")
    done = subprocess.run(["/usr/bin/python3", "-c", LUXI_CLIENT, socket, json.dumps([method, list(args)])],
                          env=env, capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def table(out: str) -> list[list[str]]:
    return [line.split("|") for line in out.splitlines()]


def expected_status(name: str) -> str:
    return "running" if LAYOUT[name][3] else "ADMIN_down"


@needs_cluster
def test_gnt_instance_list_default_fields(real: InstanceCluster) -> None:
    done = real.gnt("gnt-instance", "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["Instance", "Hypervisor", "OS", "Primary_node", "Status", "Memory"]
    rows = [line.split() for line in lines[1:]]
    assert rows == [[name, "fake", "noop", node, expected_status(name), f"{memory}M" if start else "-"]
                    for name, (node, _t, memory, start) in LAYOUT.items()]
    # Memory is a unit column: right-aligned under its title
    assert all(line.endswith(("M", "-")) for line in lines[1:])
    assert len({len(line) for line in lines}) == 1


@needs_cluster
def test_gnt_instance_list_chosen_fields(real: InstanceCluster) -> None:
    fields = "name,status,oper_state,oper_ram,pnode,snodes,disk_template,disk.sizes,nic.macs,be/memory," \
             "hv/kernel_path,tags"
    done = real.gnt("gnt-instance", "list", "-o", fields)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == [
        "Instance", "Status", "Running", "Memory", "Primary_node", "Secondary_Nodes", "Disk_template",
        "Disk_sizes", "NIC_MACs", "ConfigMaxMem", "Kernel_path", "Tags"]
    done = real.gnt("gnt-instance", "list", "--no-headers", "--separator=|", "-o", fields)
    assert done.returncode == 0, done.stderr
    cfg = real.config()
    by_name = {raw["name"]: raw for raw in cfg.tree["instances"].values()}
    expected = []
    for name, (node, template, memory, start) in LAYOUT.items():
        raw = by_name[name]
        sizes = ",".join(str(cfg.tree["disks"][d]["size"]) for d in raw["disks"])
        tags = ",".join(raw["tags"])
        expected.append([name, expected_status(name), "Y" if start else "N", str(memory) if start else "-",
                         node, "", template, sizes, raw["nics"][0]["mac"], str(memory), "-", tags])
    assert table(done.stdout) == expected
    assert by_name["inst1"]["tags"] == ["web", "prod"] or sorted(by_name["inst1"]["tags"]) == ["prod", "web"]


@needs_cluster
def test_gnt_instance_list_fields_lists_the_real_table(real: InstanceCluster) -> None:
    done = real.gnt("gnt-instance", "list-fields")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["Name", "Type", "Title", "Description"]
    listed = [line.split()[0] for line in lines[1:]]
    assert sorted(listed) == sorted(f["name"] for f in _real_fields())
    line = next(x for x in lines if x.startswith("oper_ram "))
    assert line.split()[:4] == ["oper_ram", "Storage", "size", "Memory"]
    done = real.gnt("gnt-instance", "list-fields", "status", "nosuch")
    assert done.returncode != 0 or "nosuch" in done.stdout + done.stderr


@needs_cluster
def test_gnt_instance_list_with_a_filter(real: InstanceCluster) -> None:
    done = real.gnt("gnt-instance", "list", "--no-headers", "-F", 'pnode == "node2"')
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["inst2", "inst3"]
    done = real.gnt("gnt-instance", "list", "--no-headers", "-o", "name", "-F", 'status == "running"')
    assert done.stdout.split() == [n for n, layout in LAYOUT.items() if layout[3]]
    done = real.gnt("gnt-instance", "list", "--no-headers", "-o", "name", "-F",
                    'oper_state and pnode != "node1"')
    assert done.stdout.split() == ["inst3", "inst4"]


@needs_cluster
def test_gnt_instance_list_by_names(real: InstanceCluster) -> None:
    done = real.gnt("gnt-instance", "list", "--no-headers", "-o", "name,pnode", "inst3", "inst1")
    assert done.returncode == 0, done.stderr
    assert [line.split() for line in done.stdout.splitlines()] == [["inst3", "node2"], ["inst1", "node1"]]
    done = real.gnt("gnt-instance", "list", "nosuch")
    assert done.returncode != 0
    assert "Instance name nosuch not found" in done.stdout + done.stderr


@needs_cluster
def test_query_instances_through_debians_luxi_client(real: InstanceCluster) -> None:
    fields = ["name", "pnode", "oper_ram"]
    rows = luxi_call(real, "QueryInstances", ["inst3", "nosuch", "inst1"], fields, False)
    assert rows == [["inst1", "node1", 128], ["inst3", "node2", 192]]
    uuid = next(u for u, raw in real.config().tree["instances"].items() if raw["name"] == "inst2")
    assert luxi_call(real, "QueryInstances", [uuid], ["name", "status"], False) == [["inst2", "ADMIN_down"]]
    answer = luxi_call(real, "Query", "instance", ["name", "console"], ["==", "name", "inst1"])
    [[name, console]] = answer["data"]
    assert name == [RS_NORMAL, "inst1"]
    assert console[0] == RS_NORMAL and console[1]["instance"] == "inst1"


@needs_cluster
def test_a_node_that_does_not_answer_gives_nodedown(real: InstanceCluster) -> None:
    """Runs last in the module: node3's node daemon is stopped, then node3 is marked offline."""
    pid = real.pid_of("node3", "ganeti-noded")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    done = real.gnt("gnt-instance", "list", "--no-headers")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()}
    assert rows["inst4"][4:] == ["ERROR_nodedown", "?"]
    assert rows["inst1"][4:] == ["running", "128M"]
    done = real.gnt("gnt-instance", "list", "--no-headers", "--separator=|", "-o", "name,oper_state,status",
                    "inst4")
    assert table(done.stdout) == [["inst4", "?", "ERROR_nodedown"]]
    assert re.search(r"\binst4\b", done.stdout)
    # marked offline, node3 is not even asked
    done = real.gnt("gnt-node", "modify", "--offline=yes", "node3")
    assert done.returncode == 0, done.stderr
    done = real.gnt("gnt-instance", "list", "--no-headers", "--separator=|", "-o",
                    "name,status,oper_state,oper_ram,console")
    rows = {row[0]: row for row in table(done.stdout)}
    assert rows["inst4"] == ["inst4", "ERROR_nodeoffline", "?", "*", "*"]
    assert rows["inst1"][:4] == ["inst1", "running", "Y", "128"]
