#!/usr/bin/python3
"""tests/interop_blockdev_client.py with the master's instance encoders (_InstDict and its wrappers).

A real master sends an instance as RpcRunner._InstDict builds it from its
configuration: objects.Instance.ToDict(), then hvparams, beparams and
osparams filled with the cluster's defaults (Cluster.FillHV, FillBE,
SimpleFillOS) and the caller's overrides, "secondary_nodes", "disks_info"
(the instance's disks, encoded like the disk encoders do) and every NIC's
nicparams filled with the cluster's default nicparams.

This client has no configuration, so an instance argument is given as

    {"config": <the instance as the configuration holds it (Instance.ToDict())>,
     "disks": [<its disks, as the disk encoders take them>],
     "cluster": {"hvparams": {...}, "beparams": {"default": {...}},
                 "nicparams": {"default": {...}}, "osparams": {}, "os_hvp": {}}}

and the encoders fill it in with Ganeti's own objects.Cluster methods.
ED_INST_DICT takes that value; ED_INST_DICT_HVP_BEP_DP takes [value, hvp,
bep] and ED_INST_DICT_OSP_DP [value, osparams], like the master's tuples.
Disk arguments stay interop_blockdev_client.py's (dicts with their
parameters already filled in). Everything else is interop_client.py's.

Run like interop_client.py: same arguments, stdin and stdout.
"""

import copy
from typing import Any

import interop_blockdev_client
import interop_client
from ganeti import constants, objects, rpc_defs
from ganeti.rpc import node as rpcnode

_CLUSTER_KEYS = ("hvparams", "beparams", "nicparams", "osparams", "os_hvp")


def _cluster(spec: dict[str, Any]) -> Any:
    values = {key: copy.deepcopy(spec.get(key, {})) for key in _CLUSTER_KEYS}
    return objects.Cluster(osparams_private_cluster={}, **values)


def _inst_dict(node: str, spec: dict[str, Any], hvp: Any = None, bep: Any = None,
               osp: Any = None) -> dict[str, Any]:
    """What RpcRunner._InstDict sends for the instance described by `spec`."""
    cluster = _cluster(spec["cluster"])
    instance = objects.Instance.FromDict(copy.deepcopy(spec["config"]))
    idict: dict[str, Any] = instance.ToDict()
    idict["hvparams"] = cluster.FillHV(instance)
    idict["secondary_nodes"] = []  # file and diskless instances have none
    if hvp is not None:
        idict["hvparams"].update(hvp)
    idict["beparams"] = cluster.FillBE(instance)
    if bep is not None:
        idict["beparams"].update(bep)
    idict["osparams"] = cluster.SimpleFillOS(instance.os, instance.osparams)
    if osp is not None:
        idict["osparams"].update(osp)
    idict["disks_info"] = interop_blockdev_client._disks(node, copy.deepcopy(spec.get("disks", [])))
    for nic in idict["nics"]:
        nic["nicparams"] = objects.FillDict(cluster.nicparams[constants.PP_DEFAULT], nic["nicparams"])
    return idict


def _inst_dict_hvp_bep(node: str, value: list[Any]) -> dict[str, Any]:
    spec, hvp, bep = value
    return _inst_dict(node, spec, hvp=hvp, bep=bep)


def _inst_dict_osp(node: str, value: list[Any]) -> dict[str, Any]:
    spec, osp = value
    return _inst_dict(node, spec, osp=osp)


rpcnode._ENCODERS.update({
    rpc_defs.ED_INST_DICT: _inst_dict,
    rpc_defs.ED_INST_DICT_HVP_BEP_DP: _inst_dict_hvp_bep,
    rpc_defs.ED_INST_DICT_OSP_DP: _inst_dict_osp,
})

if __name__ == "__main__":
    interop_client.main()
