"""scripts/gpu_check.sh keeps within its time budget: a step gets at most what
is left of TACQ_GPU_CHECK_BUDGET_S and is skipped, as a failure, with under
15 s left. Run as its dry run (the whole dry run runs in CI: scripts/test.sh)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["versions", "build", "cuda_tests", "bench", "demo", "c_library", "memcheck"]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_every_step_is_skipped_and_the_run_fails_when_no_budget_is_left(tmp_path):
    env = {**os.environ, "TACQ_GPU_CHECK_DRY_RUN": "1", "TACQ_GPU_CHECK_BUDGET_S": "10"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split()[0] for line in summary] == STEPS
    assert all("skipped: " in line and "of the run's budget left" in line for line in summary), summary
    assert not list((tmp_path / "logs").iterdir())  # nothing ran


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_a_step_runs_under_the_time_left_not_its_own_limit(tmp_path):
    # 16 s: the first step (limit 60 s) gets them all; importing torch and
    # transformers there takes more than the 1 s that would leave the next
    # steps 15 s, so everything after the collection steps is skipped
    env = {**os.environ, "TACQ_GPU_CHECK_DRY_RUN": "1", "TACQ_GPU_CHECK_BUDGET_S": "16"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert "[gpu_check] versions (timeout 16 s)" in result.stdout, result.stdout
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.startswith("versions rc=0 "), summary
    assert "bench skipped" in summary and "memcheck skipped" in summary and result.returncode == 1, summary
