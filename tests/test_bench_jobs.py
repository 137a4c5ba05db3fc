"""`run_bench.py --only jobs`: our master driven by the real-cluster anchor's bench_jobs.py, reported against
the real master's reference figures (never the real master itself here: that needs `make bench-real`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bench.jobs import REFERENCE, JobsResult, JobsRun, JobsSettings, markdown

REPO = Path(__file__).resolve().parents[1]
ANCHOR = REPO.parent / "shared" / "anchors" / "real-cluster"
needs_ganeti = pytest.mark.skipif(
    not (ANCHOR / "bench_jobs.py").exists() or not os.path.exists("/usr/share/ganeti/3.0/ganeti/luxi.py")
    or not (Path(sys.executable).parent / "ganeti-masterd").exists(),
    reason="needs the real-cluster anchor, Debian's Ganeti 3.0 and our ganeti-masterd console script")


def fake_run(master: str, jobs_per_s: float, single_s: float, status: str = "success") -> JobsRun:
    return JobsRun(master, jobs_per_s, jobs_per_s, 200 / jobs_per_s, {status: 200}, single_s, single_s / 2,
                   [status], {})


@needs_ganeti
def test_jobs_scenario_runs_bench_jobs_against_our_master_and_compares_with_the_reference(
        tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench" / "run_bench.py"), "--only", "jobs", "--jobs-n", "20",
         "--jobs-reps", "3", "--jobs-rounds", "1", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "reference, not this run" in done.stdout
    [result] = tmp_path.glob("bench-*.json")
    jobs = json.loads(result.read_text())["jobs"]
    [ours] = jobs["ours"]
    assert ours["batch"]["final_status_counts"] == {"success": 20}
    assert ours["single"]["statuses"] == ["success"]
    assert jobs["baseline"]["jobs_per_s"] == REFERENCE.jobs_per_s
    assert jobs["throughput_ratio"] == round(jobs["ours_median_jobs_per_s"] / REFERENCE.jobs_per_s, 2)


def test_report_marks_a_missed_target() -> None:
    result = JobsResult(JobsSettings(rounds=1), [fake_run("ours", 100.0, 0.02)], [], ["cmd"])
    text = markdown(result, "now")
    assert "| jobs/s | 100.0 | 8.244 | 12.1x | >= 30x | **MISSED** |" in text
    assert "| single submit->success median | 20.0 ms | 163 ms | 0.123 | <= 0.1 | **MISSED** |" in text


def test_report_uses_the_real_master_measured_in_the_run_when_there_is_one() -> None:
    result = JobsResult(JobsSettings(rounds=1, real=True), [fake_run("ours", 400.0, 0.012)],
                        [fake_run("real", 8.0, 0.150)], ["cmd"])
    text = markdown(result, "now")
    assert "reference, not this run" not in text
    assert "| jobs/s | 400.0 | 8.000 | 50.0x | >= 30x | ok |" in text


def test_a_run_with_failed_jobs_counts_as_an_error() -> None:
    result = JobsResult(JobsSettings(rounds=1), [fake_run("ours", 400.0, 0.012, status="error")], [], [])
    assert result.errors == 1
