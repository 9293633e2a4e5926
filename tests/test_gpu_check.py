"""benchmarks/gpu_check.sh's plumbing (steps, timeouts, the report, the exit status), in its CPU
dry mode: what it runs on a GPU has never run here (docs/speed.md#the-gpu-check)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.helpers import PROJECT

STEPS = ["environment", "data", "cuda-tests", "estimate-gpu-vs-cpu", "compiled-fit-resume", "bf16-fit", "throughput"]


@pytest.mark.slow
def test_the_dry_run_reports_every_step_and_fails_for_a_planted_failure(tmp_path):
    """A dry run with failures planted in three steps and a hang in another: one report line per
    step in order, each with its status and whole seconds, the failures FAIL, the hang TIMEOUT
    (cut at its limit, so the run goes on), every other step PASS, a log per step, and exit
    status 1. The planted steps are the dry run's slowest; cuda-tests still runs the function the
    two other pytest steps share, so this takes about 20 s."""
    failing = ["estimate-gpu-vs-cpu", "compiled-fit-resume", "throughput"]
    env = {
        **os.environ, "GPU_CHECK_DRY": "1", "OUT": str(tmp_path),
        "GPU_CHECK_PLANT_FAIL": ",".join(failing), "GPU_CHECK_PLANT_HANG": "bf16-fit",
    }
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    report = (tmp_path / "gpu_check.txt").read_text().splitlines()
    lines = [line.split(maxsplit=3) for line in report if not line.startswith("#")]
    assert [line[0] for line in lines] == STEPS, report
    statuses = {name: status for name, status, *_ in lines}
    assert statuses == {**dict.fromkeys(STEPS, "PASS"), "bf16-fit": "TIMEOUT", **dict.fromkeys(failing, "FAIL")}, report
    assert all(seconds.isdigit() for _, _, seconds, *_ in lines), report
    assert int(lines[STEPS.index("bf16-fit")][2]) < 10, "the planted hang was not cut at its 3 s limit"
    assert all(lines[STEPS.index(step)][3] == "planted failure (GPU_CHECK_PLANT_FAIL)" for step in failing), report
    assert sorted(path.name for path in (tmp_path / "logs").iterdir()) == sorted(f"{step}.log" for step in STEPS)
    assert report[-1].startswith("# 4 of 7 steps did not pass"), report
    assert done.returncode == 1, done.stdout + done.stderr
