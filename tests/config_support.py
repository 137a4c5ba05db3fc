"""Helpers for the masterd.config tests: small clusters, and Ganeti's own code as an oracle."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from masterd.config.model import ConfigData, new_config

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples"
SAMPLE_CONFIG = SAMPLES / "config.data.json"
GANETI_TREE = "/usr/share/ganeti/3.0"

needs_ganeti = pytest.mark.skipif(not os.path.isdir(os.path.join(GANETI_TREE, "ganeti")),
                                  reason="Debian's Ganeti 3.0 is not installed")


def cluster(*names: str, pool_size: int = 10) -> ConfigData:
    """A fresh cluster whose master is names[0], the other nodes regular (not candidates)."""
    cfg = new_config(cluster_name="cluster.example.com", master_name=names[0], master_ip="127.0.0.2",
                     cluster_ip="127.0.0.100", master_netdev="lo", enabled_hypervisors=["fake"],
                     enabled_disk_templates=["file", "diskless"], candidate_pool_size=pool_size,
                     now=1795313909.25)
    for index, name in enumerate(names[1:], start=3):
        cfg.add_node(name, f"127.0.0.{index}")
    return cfg


def ganeti_oracle(script: str, cfg: ConfigData, tmp_path: Path) -> Any:
    """Run `script` under Debian's Python with Ganeti's ConfigWriter `c` on `cfg` (offline mode).

    The script prints one JSON document, which is returned.
    """
    path = tmp_path / "oracle-config.data"
    path.write_text(cfg.dumps())
    prologue = ("import json, logging\nlogging.disable(logging.CRITICAL)\nfrom ganeti import config\n"
                f"c = config.ConfigWriter(cfg_file={str(path)!r}, offline=True, accept_foreign=True)\n")
    env = dict(os.environ, PYTHONPATH=GANETI_TREE)
    out = subprocess.run(["/usr/bin/python3", "-c", prologue + script], env=env, capture_output=True,
                         text=True, timeout=60, check=True, cwd=tmp_path).stdout
    return json.loads(out)
