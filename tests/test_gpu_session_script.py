"""scripts/gpu_session.sh, the one script a lent GPU machine runs: its usage errors, and a
cheap step run end to end on this machine (log, summary table, one tarball of the results)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_session.sh"


def run_script(*args: str, out: Path | None, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHON"] = sys.executable
    env.update(extra_env)
    if out is not None:
        env["OUT"] = str(out)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_unknown_step_is_a_usage_error(tmp_path):
    result = run_script("env", "benchmarks", out=tmp_path)
    assert result.returncode == 2
    assert "unknown step 'benchmarks'" in result.stderr
    assert not (tmp_path / "results").exists()


def test_out_must_be_set(tmp_path):
    result = run_script("env", out=None)
    assert result.returncode == 2
    assert "OUT is not set" in result.stderr


def test_env_step_logs_summarises_and_packs(tmp_path):
    result = run_script("env", out=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    log = (tmp_path / "results" / "env.log").read_text()
    assert f"torch {torch.__version__}" in log
    summary = (tmp_path / "results" / "summary.txt").read_text().split()
    assert summary[:2] == ["env", "rc=0"]
    assert "=== summary" in result.stdout and "env      rc=0" in result.stdout
    with tarfile.open(tmp_path / "gpu_results.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"results/env.log", "results/summary.txt"} <= names


def test_steps_past_the_deadline_are_skipped_and_results_still_packed(tmp_path):
    result = run_script("env", out=tmp_path, DEADLINE="5")
    assert result.returncode == 1  # one step did not run
    assert "env skipped: " in result.stdout
    assert (tmp_path / "results" / "summary.txt").read_text().split()[:3] == ["env", "skipped", "(deadline)"]
    assert (tmp_path / "gpu_results.tar.gz").is_file()
