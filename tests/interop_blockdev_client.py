#!/usr/bin/python3
"""tests/interop_client.py with the master's disk and instance encoders, for the blockdev procedures.

A real master encodes disks and instances from its configuration
(RpcRunner._SingleDiskDictDP, _DisksDictDP, _InstDict: objects.Disk/Instance
.ToDict() after filling in parameters). This client has no configuration, so
the test passes the disk and instance dicts with their parameters already
filled in; the encoders installed here build Ganeti's objects from them
and send what ToDict() gives, as the master does. Everything else (transport,
markers, output) is interop_client.py's.

Run like interop_client.py: same arguments, stdin and stdout.
"""

from typing import Any

import interop_client
from ganeti import objects, rpc_defs
from ganeti.rpc import node as rpcnode


def _disk(_node: str, disk: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = objects.Disk.FromDict(disk).ToDict(include_dynamic_params=True)
    return result


def _disks(node: str, disks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_disk(node, d) for d in disks]


def _instance(node: str, instance: dict[str, Any]) -> dict[str, Any]:
    disks_info = instance.pop("disks_info", [])
    result: dict[str, Any] = objects.Instance.FromDict(instance).ToDict()
    result["disks_info"] = _disks(node, disks_info)
    return result


def _rename(node: str, devlist: list[list[Any]]) -> list[tuple[dict[str, Any], Any]]:
    return [(_disk(node, d), new_id) for d, new_id in devlist]


rpcnode._ENCODERS.update({
    rpc_defs.ED_SINGLE_DISK_DICT_DP: _disk,
    rpc_defs.ED_DISKS_DICT_DP: _disks,
    rpc_defs.ED_MULTI_DISKS_DICT_DP: _disks,
    rpc_defs.ED_INST_DICT: _instance,
    rpc_defs.ED_BLOCKDEV_RENAME: _rename,
})

if __name__ == "__main__":
    interop_client.main()
