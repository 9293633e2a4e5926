"""Distributed data parallel on 2 CPU processes (gloo) against 1 process with the same global batch.

With the same seed, the 2 ranks' batches of 50 are together exactly the single process's
batch of 100 (rank r takes positions r, r+2, ... of the same epoch order) and DDP averages
their gradients, so the two runs differ only through their random draws (binarization,
reparameterization noise: each DDP rank draws its own, docs/resume.md). After 100 steps of the
default model, their test numbers agree to within TOLERANCE nats (the differences seen:
docs/testing.md#tolerances-and-waits).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA, needs_mnist

TOLERANCE = 2.0  # nats per example, on test ELBO and test log-likelihood

BUDGET = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=100",
    "trainer.limit_val_batches=5",
    "eval.ll_samples=10",
    "trainer.progress_bar=false",
    f"data.root={SHARED_DATA}",
    "seed=0",
]

pytestmark = [needs_mnist, pytest.mark.slow]


def fit_at_once(cwd: Path, *runs: list[str]) -> list[subprocess.CompletedProcess]:
    """``python -m vaelab.fit`` with the budget and each run's words, all started at once in
    ``cwd`` (one thread per process: tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if k != "VAELAB_RUN_DIR"}
    started = []
    for index, words in enumerate(runs):
        out, err = (open(cwd / f"run-{index}.{name}", "w+") for name in ("out", "err"))  # files: pipes could fill
        command = [sys.executable, "-m", "vaelab.fit", *BUDGET, *words]
        started.append((subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, text=True), out, err))
    results = []
    for process, out, err in started:
        status = process.wait(timeout=300)
        with out, err:
            out.seek(0), err.seek(0)
            results.append(subprocess.CompletedProcess(process.args, status, out.read(), err.read()))
    return results


# A learned prior's parameters and a conv network are synchronised like any other.
PARTS = {"mlp, N(0, I)": [], "conv, VampPrior": ["net=conv", "net.channels=[8,16]", "prior=vamp", "prior.components=50"]}


@pytest.mark.parametrize("parts", list(PARTS.values()), ids=list(PARTS))
def test_two_process_ddp_agrees_with_one_process_of_the_same_global_batch(tmp_path, parts):
    single, ddp = fit_at_once(
        tmp_path,
        ["data.batch_size=100", f"run.dir={tmp_path / 'single'}", *parts],
        # No run.dir: both ranks must agree on the default one, chosen by the launching process.
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=50", *parts],
    )
    assert single.returncode == 0, single.stderr[-2000:]
    assert ddp.returncode == 0, ddp.stderr[-2000:]

    run_dirs = [p.parent for p in (tmp_path / "runs").rglob("summary.json")]
    assert len(run_dirs) == 1, "DDP must write exactly one run directory"
    assert len(list((tmp_path / "runs").rglob("config.yaml"))) == 1
    ddp_dir = run_dirs[0]
    checkpoints = sorted(p.name for p in (ddp_dir / "checkpoints").iterdir())
    assert checkpoints == ["best-epoch0.ckpt", "last.ckpt"]
    assert ddp.stdout.count("run directory:") == 1  # rank 0 alone prints the results
    assert ddp.stdout.count("model parameters:") == 1 and ddp.stdout.count("epoch 1/1  step 100  ") == 1
    assert "\r" not in ddp.stdout and "2 processes" in ddp.stdout

    one = json.loads((tmp_path / "single" / "summary.json").read_text())
    two = json.loads((ddp_dir / "summary.json").read_text())
    assert one["steps"] == two["steps"] == 100
    assert one["prior"] == two["prior"] and one["net"] == two["net"]
    for key in ("test_elbo", "test_ll"):
        assert abs(one[key] - two[key]) < TOLERANCE, (key, one[key], two[key])
    # the standard error over the images is of both ranks' images: one rank's half would give ~sqrt(2) times it
    assert 0.9 < two["test_ll_se"] / one["test_ll_se"] < 1.1, (one["test_ll_se"], two["test_ll_se"])
