"""Ctrl-C (SIGINT) and SIGTERM during ``python -m vaelab.fit``: real signals to real processes.

A run is held after a chosen optimizer step (a test-only hook, ``HELD``, wraps vaelab's check for
the signal) until the signal has arrived, so the signal lands at that step however fast the steps
are. Then: exit status 130 (SIGINT) or 143 (SIGTERM), one line with the command that continues,
no test and no summary.json, a whole ``last.ckpt`` of that step; ``run.resume=<run dir>`` ends bit
for bit where the run never interrupted ends (CPU, deterministic algorithms). A second SIGINT
stops at once and leaves the last whole checkpoint; a signal while the data load or while the
test runs ends with one line too; under DDP (2 CPU processes, gloo) a Ctrl-C that reaches both
ranks stops both at the same step.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import PROJECT, assert_same_training_state, exact_fit_words, metrics_rows, write_mnist
from vaelab.training.checkpoints import checkpoint_problem

pytestmark = pytest.mark.slow

EPOCHS, STEPS_PER_EPOCH, STEPS_PER_CALL = 2, 10, 3  # calls of 3, 3, 3 and 1 steps per epoch
# Only the epochs' own checkpoints and the signal's: a mid-epoch last.ckpt is the signal's.
WORDS = [
    *exact_fit_words(EPOCHS, STEPS_PER_EPOCH, STEPS_PER_CALL),
    "trainer.checkpoint_every_n_steps=null", "trainer.checkpoint_every_minutes=null",
]
# The ends of calls, the epochs' last ones included (there the run stops after validation).
CALL_ENDS = [e * STEPS_PER_EPOCH + s for e in range(EPOCHS) for s in (3, 6, 9, 10)][:-1]

# Run before vaelab.fit in the same process. HOLD_AT_STEP: after that step (rank 0, first start
# only: no $HOLD_MARKER yet) write the marker and wait until vaelab has the signal; with
# HOLD_AGAIN=1 wait on (for a second signal, which stops at once). HOLD_IN=data|test: write the
# marker and sleep while the data load or in the first test step.
HELD = """
import os, time
from pathlib import Path

from vaelab.training import interrupts
from vaelab.training.resume import SignalCheckpoint

marker = Path(os.environ.get("HOLD_MARKER", "held"))


def hold(until_signal):
    marker.write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (until_signal and interrupts.active().requested):
        time.sleep(0.01)


if os.environ.get("HOLD_AT_STEP") and not marker.exists():
    hold_at, check = int(os.environ["HOLD_AT_STEP"]), SignalCheckpoint.on_train_batch_end

    def hold_then_check(self, trainer, *args):
        if trainer.global_step == hold_at and trainer.is_global_zero and not marker.exists():
            hold(until_signal=True)
            if os.environ.get("HOLD_AGAIN"):
                hold(until_signal=False)
        check(self, trainer, *args)

    SignalCheckpoint.on_train_batch_end = hold_then_check
elif os.environ.get("HOLD_IN") == "data":
    import vaelab.data
    build = vaelab.data.build_datamodule
    vaelab.data.build_datamodule = lambda *a, **k: (hold(until_signal=False), build(*a, **k))[1]
elif os.environ.get("HOLD_IN") == "test":
    from vaelab.models.module import VAEModule
    test_step = VAEModule.test_step

    def held_test_step(self, x, batch_idx):
        hold(until_signal=False)
        return test_step(self, x, batch_idx)

    VAEModule.test_step = held_test_step

import runpy, sys
sys.argv = ["vaelab.fit", *sys.argv[1:]]
runpy.run_module("vaelab.fit", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory) -> str:
    """The data.root word of tiny MNIST files: 10 minibatches of 50 training images an epoch."""
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=600, n_test=100)
    return f"data.root={root}"


def env(**extra: str) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("VAELAB_", "HOLD_", "SLURM_"))}
    return {**kept, "PYTHONPATH": str(PROJECT), **extra}


def start(words: list[str], cwd: Path, **hold: str) -> subprocess.Popen:
    """``python -m vaelab.fit words`` with the HELD hook, in its own process group; output to files."""
    out, err = (open(cwd / f"fit-{time.monotonic_ns()}.{name}", "w+") for name in ("out", "err"))
    process = subprocess.Popen([sys.executable, "-c", HELD, *words], cwd=cwd, env=env(**hold),
                               stdout=out, stderr=err, text=True, start_new_session=True)
    process.files = (out, err)
    return process


def finish(process: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    status = process.wait(timeout=timeout)
    out, err = process.files
    with out, err:
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(process.args, status, out.read(), err.read())


def wait_for(marker: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            done = finish(process)
            pytest.fail(f"exited {done.returncode} before it was held:\n{done.stderr[-3000:]}")
        assert time.monotonic() < deadline, f"not held within {timeout} s"
        time.sleep(0.02)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def the_line(stderr: str, alone: bool = True) -> str:
    """vaelab's one line about the interrupt, and no traceback; ``alone``: nothing else on stderr
    (a DDP run's start-up banner aside)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("vaelab.fit:")]
    assert len(lines) == 1, stderr[-3000:]
    if alone:
        assert stderr.splitlines() == lines, stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny_mnist) -> Path:
    """The run never interrupted."""
    cwd = tmp_path_factory.mktemp("whole")
    done = finish(start([*WORDS, tiny_mnist, f"run.dir={cwd / 'run'}"], cwd))
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd / "run"


def hold_step() -> int:
    """A random end of a call; $VAELAB_HOLD_AT_STEP repeats a given one."""
    chosen = os.environ.get("VAELAB_HOLD_AT_STEP")
    return int(chosen) if chosen else random.choice(CALL_ENDS)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_where_the_run_resumes_exactly(tmp_path, tiny_mnist, whole, signum):
    step, run_dir, marker = hold_step(), tmp_path / "run", tmp_path / "held"
    process = start([*WORDS, tiny_mnist, f"run.dir={run_dir}"], tmp_path, HOLD_AT_STEP=str(step), HOLD_MARKER=str(marker))
    wait_for(marker, process)
    process.send_signal(signum)
    done = finish(process)
    assert done.returncode == 128 + signum, (step, done.returncode, done.stderr[-3000:])
    line = the_line(done.stderr)
    name = signal.Signals(signum).name
    assert line == (f"vaelab.fit: interrupted by {name} at step {step} "
                    f"({'checkpoint saved' if step % STEPS_PER_EPOCH else 'the end of an epoch, its checkpoint kept'}); "
                    f"continue with: python -m vaelab.fit run.resume={run_dir}"), (step, line)
    assert not (run_dir / "summary.json").exists() and not (run_dir / "samples.png").exists()
    assert "run directory:" not in done.stdout  # no summary lines
    last = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint_problem(last) is None
    assert load(last)["global_step"] == step
    assert not list(run_dir.rglob(".partial-*"))

    resumed = finish(start([f"run.resume={run_dir}"], tmp_path))
    assert resumed.returncode == 0, (step, resumed.stderr[-3000:])
    a, b = load(whole / "checkpoints" / "last.ckpt"), load(last)
    assert a["global_step"] == b["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert_same_training_state(a, b, step)
    assert metrics_rows(whole) == metrics_rows(run_dir), step
    summary_a, summary_b = (json.loads((run / "summary.json").read_text()) for run in (whole, run_dir))
    for key in ("test_elbo", "test_ll", "best_val_elbo", "steps", "epochs"):
        assert summary_a[key] == summary_b[key], (step, key)


def test_a_second_sigint_stops_at_once_and_keeps_the_last_whole_checkpoint(tmp_path, tiny_mnist):
    """The first SIGINT asks for a checkpoint after the call; the second, before it is taken, stops
    at once: the end of epoch 0's checkpoint stays, whole."""
    step, run_dir, marker = STEPS_PER_EPOCH + 3, tmp_path / "run", tmp_path / "held"
    process = start([*WORDS, tiny_mnist, f"run.dir={run_dir}"], tmp_path,
                    HOLD_AT_STEP=str(step), HOLD_MARKER=str(marker), HOLD_AGAIN="1")
    wait_for(marker, process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)  # the hook has seen the first (it polls every 10 ms) and holds on
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    done = finish(process)
    assert done.returncode == 130, done.stderr[-3000:]
    assert time.monotonic() - sent < 20  # not the hook's 120 s: at once
    line = the_line(done.stderr)
    assert line == f"vaelab.fit: interrupted by SIGINT again: stopped at once; continue with: python -m vaelab.fit run.resume={run_dir}"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint_problem(last) is None
    assert load(last)["global_step"] == STEPS_PER_EPOCH  # the end of epoch 0, not step 13
    assert not (run_dir / "summary.json").exists()
    assert not list(run_dir.rglob(".partial-*"))


@pytest.mark.parametrize("where, signum", [("data", signal.SIGINT), ("test", signal.SIGTERM)])
def test_a_signal_outside_training_ends_with_one_line(tmp_path, tiny_mnist, where, signum):
    run_dir, marker = tmp_path / "run", tmp_path / "held"
    process = start([*WORDS, tiny_mnist, f"run.dir={run_dir}"], tmp_path, HOLD_IN=where, HOLD_MARKER=str(marker))
    wait_for(marker, process)
    process.send_signal(signum)
    done = finish(process, timeout=60)
    assert done.returncode == 128 + signum, done.stderr[-3000:]
    line, name = the_line(done.stderr), signal.Signals(signum).name
    if where == "data":
        assert line == f"vaelab.fit: interrupted by {name} before training; nothing was saved: start the run again"
        assert not run_dir.exists()
    else:
        assert line == (f"vaelab.fit: interrupted by {name} after training (in the test); "
                        f"continue with: python -m vaelab.fit run.resume={run_dir}")
        assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == EPOCHS * STEPS_PER_EPOCH
        assert not (run_dir / "summary.json").exists()


DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=25"]


def test_ctrl_c_on_both_ddp_ranks_stops_both_at_one_checkpoint(tmp_path, tiny_mnist):
    """SIGINT to the process group, as a terminal sends it: rank 0 is held after step 6, rank 1
    waits for it in the check; both stop after that call, with one checkpoint, and nobody hangs.
    Resumed, the run ends at its full number of steps, every step's row once."""
    step, run_dir, marker = 6, tmp_path / "run", tmp_path / "held"
    process = start([*WORDS, *DDP, tiny_mnist, f"run.dir={run_dir}"], tmp_path, HOLD_AT_STEP=str(step), HOLD_MARKER=str(marker))
    wait_for(marker, process)
    os.killpg(process.pid, signal.SIGINT)
    done = finish(process, timeout=120)
    assert done.returncode == 130, done.stderr[-3000:]
    assert the_line(done.stderr, alone=False).startswith(f"vaelab.fit: interrupted by SIGINT at step {step} (checkpoint saved)")
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "rank 1 is still running"
        time.sleep(0.1)
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == step
    assert not (run_dir / "summary.json").exists()

    resumed = finish(start([f"run.resume={run_dir}"], tmp_path), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == EPOCHS * STEPS_PER_EPOCH and summary["world_size"] == 2
    train_steps = [int(row["step"]) for row in metrics_rows(run_dir) if row.get("train/elbo")]
    assert train_steps == list(range(EPOCHS * STEPS_PER_EPOCH))
