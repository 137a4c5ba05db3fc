"""Generate masterd/config/defaults.py: Ganeti 3.0.2's defaults for a fresh config.data.

Values come from Ganeti's own constants (HVC_DEFAULTS, BEC_DEFAULTS,
NICC_DEFAULTS, NDC_DEFAULTS, DISK_DT_DEFAULTS, IPOLICY_DEFAULTS,
HVST_DEFAULTS, ...), read by running Debian's Python 3 on
/usr/share/ganeti/3.0 (nothing of Ganeti is copied, only these values).
The key order of every object follows the real config.data written by
wconfd (samples/config.data.json), so a fresh config dumps in Ganeti's
order; keys the sample lacks come after, sorted (Haskell maps are sorted).

    .venv/bin/python tools/gen_config_defaults.py [--sample PATH] [--output PATH] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import pprint
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples" / "config.data.json"
DEFAULT_OUTPUT = ROOT / "masterd" / "config" / "defaults.py"
GANETI_PYTHONPATH = "/usr/share/ganeti/3.0"

_DUMP_CONSTANTS = r"""
import json
from ganeti import constants as c, pathutils as p
print(json.dumps({
    "HVC_DEFAULTS": c.HVC_DEFAULTS, "BEC_DEFAULTS": c.BEC_DEFAULTS, "NICC_DEFAULTS": c.NICC_DEFAULTS,
    "NDC_DEFAULTS": c.NDC_DEFAULTS, "DISK_DT_DEFAULTS": c.DISK_DT_DEFAULTS,
    "IPOLICY_DEFAULTS": c.IPOLICY_DEFAULTS, "HVST_DEFAULTS": c.HVST_DEFAULTS,
    "MASTER_POOL_SIZE_DEFAULT": c.MASTER_POOL_SIZE_DEFAULT, "DEFAULT_MAC_PREFIX": c.DEFAULT_MAC_PREFIX,
    "FIRST_DRBD_PORT": c.FIRST_DRBD_PORT, "DATA_COLLECTOR_NAMES": sorted(c.DATA_COLLECTOR_NAMES),
    "MOND_TIME_INTERVAL": c.MOND_TIME_INTERVAL, "HYPER_TYPES": sorted(c.HYPER_TYPES),
    "DISK_TEMPLATES": sorted(c.DISK_TEMPLATES), "IEC_DEFAULT_TOOLS": c.IEC_DEFAULT_TOOLS,
    "SSH_DEFAULT_KEY_TYPE": c.SSH_DEFAULT_KEY_TYPE, "SSH_DEFAULT_KEY_BITS": c.SSH_DEFAULT_KEY_BITS,
    "LUXID_MAXIMAL_RUNNING_JOBS_DEFAULT": c.LUXID_MAXIMAL_RUNNING_JOBS_DEFAULT,
    "LUXID_MAXIMAL_TRACKED_JOBS_DEFAULT": c.LUXID_MAXIMAL_TRACKED_JOBS_DEFAULT,
    "DEFAULT_FILE_STORAGE_DIR": p.DEFAULT_FILE_STORAGE_DIR,
    "DEFAULT_SHARED_FILE_STORAGE_DIR": p.DEFAULT_SHARED_FILE_STORAGE_DIR,
    "DEFAULT_GLUSTER_STORAGE_DIR": p.DEFAULT_GLUSTER_STORAGE_DIR,
    "INITIAL_NODE_GROUP_NAME": c.INITIAL_NODE_GROUP_NAME, "ALLOC_POLICY_PREFERRED": c.ALLOC_POLICY_PREFERRED,
    "CONFIG_VERSION": c.CONFIG_VERSION, "RELEASE_VERSION": c.RELEASE_VERSION,
    "IP4_FAMILY": 2, "IP4_NETMASK": c.IP4_DEFAULT_NETMASK if hasattr(c, "IP4_DEFAULT_NETMASK") else 32,
}))
"""


def ganeti_constants() -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=GANETI_PYTHONPATH)
    out = subprocess.run(["/usr/bin/python3", "-c", _DUMP_CONSTANTS], env=env, check=True,
                         capture_output=True, text=True).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def order_like(value: Any, template: Any) -> Any:
    """`value` with its dict keys in `template`'s order (others after, sorted)."""
    if isinstance(value, dict):
        tdict = template if isinstance(template, dict) else {}
        keys = [k for k in tdict if k in value] + sorted(k for k in value if k not in tdict)
        return {k: order_like(value[k], tdict.get(k)) for k in keys}
    if isinstance(value, list):
        tfirst = template[0] if isinstance(template, list) and template else None
        return [order_like(item, tfirst) for item in value]
    return value


def build(sample: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    scluster = sample["cluster"]
    cluster_defaults = {
        "highest_used_port": c["FIRST_DRBD_PORT"] - 1,
        "tcpudp_port_pool": [],
        "mac_prefix": c["DEFAULT_MAC_PREFIX"],
        "reserved_lvs": [],
        "master_netmask": 32,
        "use_external_mip_script": False,
        "file_storage_dir": c["DEFAULT_FILE_STORAGE_DIR"],
        "shared_file_storage_dir": c["DEFAULT_SHARED_FILE_STORAGE_DIR"],
        "gluster_storage_dir": c["DEFAULT_GLUSTER_STORAGE_DIR"],
        "hvparams": c["HVC_DEFAULTS"],
        "os_hvp": {},
        "beparams": {"default": c["BEC_DEFAULTS"]},
        "osparams": {},
        "osparams_private_cluster": {},
        "nicparams": {"default": c["NICC_DEFAULTS"]},
        "ndparams": c["NDC_DEFAULTS"],
        "diskparams": c["DISK_DT_DEFAULTS"],
        "candidate_pool_size": c["MASTER_POOL_SIZE_DEFAULT"],
        "modify_etc_hosts": True,
        "modify_ssh_setup": True,
        "maintain_node_health": False,
        "uid_pool": [],
        "default_iallocator": "",
        "default_iallocator_params": {},
        "hidden_os": [],
        "blacklisted_os": [],
        "primary_ip_family": c["IP4_FAMILY"],
        "prealloc_wipe_disks": False,
        "ipolicy": c["IPOLICY_DEFAULTS"],
        "disk_state_static": {},
        "candidate_certs": {},
        "max_running_jobs": c["LUXID_MAXIMAL_RUNNING_JOBS_DEFAULT"],
        "max_tracked_jobs": c["LUXID_MAXIMAL_TRACKED_JOBS_DEFAULT"],
        "install_image": "",
        "instance_communication_network": "",
        "zeroing_image": "",
        "compression_tools": c["IEC_DEFAULT_TOOLS"],
        "enabled_user_shutdown": False,
        "data_collectors": {name: {"active": True, "interval": int(c["MOND_TIME_INTERVAL"] * 1e6)}
                            for name in c["DATA_COLLECTOR_NAMES"]},
        "ssh_key_type": c["SSH_DEFAULT_KEY_TYPE"],
        "ssh_key_bits": c["SSH_DEFAULT_KEY_BITS"],
        "tags": [],
    }
    return {
        "CONFIG_VERSION": c["CONFIG_VERSION"],
        "RELEASE_VERSION": c["RELEASE_VERSION"],
        "HYPERVISOR_TYPES": c["HYPER_TYPES"],
        "DISK_TEMPLATES": c["DISK_TEMPLATES"],
        "HVST_DEFAULTS": order_like(c["HVST_DEFAULTS"], next(iter(scluster["hv_state_static"].values()))),
        "INITIAL_NODE_GROUP_NAME": c["INITIAL_NODE_GROUP_NAME"],
        "ALLOC_POLICY_PREFERRED": c["ALLOC_POLICY_PREFERRED"],
        "CLUSTER_DEFAULTS": order_like(cluster_defaults, scluster),
        "TOP_KEY_ORDER": list(sample),
        "CLUSTER_KEY_ORDER": list(scluster),
        "NODE_KEY_ORDER": list(next(iter(sample["nodes"].values()))),
        "GROUP_KEY_ORDER": list(next(iter(sample["nodegroups"].values()))),
        "INSTANCE_KEY_ORDER": list(next(iter(sample["instances"].values()))),
        "NIC_KEY_ORDER": list(next(iter(sample["instances"].values()))["nics"][0]),
        "DISK_KEY_ORDER": list(next(iter(sample["disks"].values()))),
    }


def render(values: dict[str, Any]) -> str:
    lines = ['"""Ganeti 3.0.2\'s defaults for a fresh config.data (generated: do not edit).',
             "",
             "Regenerate with `.venv/bin/python tools/gen_config_defaults.py`: values from",
             "Ganeti's constants, key orders from the real config.data written by wconfd.",
             '"""', "", "from typing import Any", ""]
    for name, value in values.items():
        text = pprint.pformat(value, width=80, sort_dicts=False)
        annotation = "dict[str, Any]" if isinstance(value, dict) else (
            "list[str]" if isinstance(value, list) else type(value).__name__)
        lines.append(f"{name}: {annotation} = {text}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="fail if the output differs from a fresh run")
    args = parser.parse_args(argv)
    sample = json.loads(args.sample.read_text())
    text = render(build(sample, ganeti_constants()))
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale; run tools/gen_config_defaults.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
