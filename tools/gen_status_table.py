"""Write the README's table of all node procedures and the status of each.

    python tools/gen_status_table.py [--check]

The table is derived, not written by hand: the rpcs come from the proto
descriptors, the status from the backend table (noded.backends). It sits in
README.md between the two marker lines; --check fails when it is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from noded.api import rpcs_by_procedure, services  # noqa: E402
from noded.daemon import load_procedures  # noqa: E402

BEGIN = "<!-- BEGIN procedure table (tools/gen_status_table.py) -->"
END = "<!-- END procedure table -->"

#: Which absent feature a procedure of backends/unsupported.py stands for.
_FEATURES = [
    ("drbd", "DRBD"), ("blockdev_addchildren", "DRBD"), ("blockdev_removechildren", "DRBD"),
    ("lv_list", "LVM"), ("vg_list", "LVM"), ("node_volumes", "LVM"), ("storage_modify", "LVM"),
    ("storage_execute", "LVM"), ("blockdev_snapshot", "LVM"), ("node_configure_ovs", "Open vSwitch"),
    ("extstorage", "ExtStorage providers"),
]


def _feature(name: str) -> str:
    for prefix, feature in _FEATURES:
        if name.startswith(prefix):
            return feature
    return "the feature"


#: Limits of implemented procedures, said in the table.
_NOTES = {
    "node_ssh_key_add": "this node's files; a change that must reach other nodes over SSH is refused",
    "node_ssh_key_remove": "this node's files; a change that must reach other nodes over SSH is refused",
    "node_ssh_keys_renew": "this node's files; a change that must reach other nodes over SSH is refused",
    "node_powercycle": "refused unless the daemon runs with --allow-powercycle",
    "node_start_master_daemons": "starts our ganeti-masterd when installed, else Ganeti's via daemon-util",
    "node_stop_master": "stops our ganeti-masterd, or Ganeti 3.0's through daemon-util",
    "etc_hosts_modify": "edits $GANETI_ROOTDIR/etc/hosts when a root is set (never the machine's)",
    "iallocator_runner": "runs Debian's hail when ganeti-htools is installed",
}


def status_of(name: str, table: dict[str, object]) -> str:
    proc = table.get(name)
    if proc is None:
        return "not implemented yet (answers `not implemented yet on this node: " + name + "`)"
    module = getattr(getattr(proc, "func", None), "__module__", "")
    if module.endswith(".unsupported"):
        return f"answers as a real node without {_feature(name)} does"
    note = _NOTES.get(name)
    return f"implemented ({note})" if note else "implemented"


def render() -> str:
    table = load_procedures()
    by_proc = rpcs_by_procedure()
    lines = [BEGIN, "",
             f"All {len(by_proc)} procedures of Ganeti 3.0's node daemon, by gRPC service:", "",
             "| procedure | gRPC method | status |", "|---|---|---|"]
    counts: dict[str, int] = {}
    for svc in services():
        for rpc in svc.rpcs:
            status = status_of(rpc.procedure, table)  # type: ignore[arg-type]
            key = status.split(" (")[0] if status.startswith(("not implemented", "implemented")) else (
                "absent feature" if status.startswith("answers as") else status)
            counts[key] = counts.get(key, 0) + 1
            lines.append(f"| `{rpc.procedure}` | `{svc.descriptor.name}.{rpc.name}` | {status} |")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    lines += ["", f"Summary: {summary}.", "", END]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"README.md has no {BEGIN!r} ... {END!r} block", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + render() + tail
    if "--check" in argv:
        if new != text:
            print("README.md's procedure table is stale: run `python tools/gen_status_table.py`",
                  file=sys.stderr)
            return 1
        print("README.md's procedure table is up to date")
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
