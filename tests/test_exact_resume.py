"""Exact resume: a run killed with SIGKILL and resumed is the run that was never interrupted.

The same 3-epoch run is trained twice as ``python -m vaelab.fit`` processes: once without
interruption, once killed by SIGKILL at a random step inside a ``training_step`` call (between
two optimizer steps) and then resumed with ``run.resume=<run dir>``. The final parameters, the
optimizer's state, the step count, ``metrics.csv`` (every row once) and the test results must
be equal, bit for bit, on the CPU with deterministic algorithms. The runs are a small model on
tiny MNIST files of the real format; the processes are forked from one Python that has made the
imports (tests/helpers.py, run_forked).
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import PROJECT, Command, assert_same_training_state, metrics_rows, run_forked, write_mnist
from vaelab.data.batches import InMemoryBatches
from vaelab.results.resume import IntervalCheckpoint

EPOCHS, STEPS_PER_EPOCH, STEPS_PER_CALL = 3, 10, 3  # calls of 3, 3, 3 and 1 steps per epoch
# data.root is added by the tiny_mnist fixture: 600 training images, 100 of them for validation
WORDS = [
    "experiment=smoke", "trainer.progress_bar=false", "data.val_size=100", "eval.ll_samples=10",
    f"trainer.max_epochs={EPOCHS}", f"trainer.limit_train_batches={STEPS_PER_EPOCH}", "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1", f"trainer.steps_per_call={STEPS_PER_CALL}", "trainer.log_every_n_steps=1",
    # a checkpoint after every call but an epoch's last (3 steps reach 2)
    "trainer.checkpoint_every_n_steps=2", "trainer.accelerator=cpu", "trainer.deterministic=true",
    "trainer.compile=false", "model.hidden=[64]", "data.batch_size=50",
]
# Before `python -m vaelab.fit`: the process sends itself SIGKILL right after the training bound
# of optimizer step $KILL_AT_STEP (numbered from 0) is logged: inside a training_step call.
KILLED_AT_STEP = """
import os, signal
from vaelab.results.loggers import AppendingCSVLogger

kill_at, log_metrics = int(os.environ["KILL_AT_STEP"]), AppendingCSVLogger.log_metrics

def log_and_maybe_die(self, metrics, step=None):
    log_metrics(self, metrics, step)
    if step == kill_at and any(key.startswith("train/") and not key.endswith("_epoch") for key in metrics):
        self.save()
        os.kill(os.getpid(), signal.SIGKILL)

AppendingCSVLogger.log_metrics = log_and_maybe_die
"""
ENV = {**os.environ, "PYTHONPATH": str(PROJECT)}  # one thread per process: tests/conftest.py


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory) -> str:
    """The data.root word of tiny MNIST files: 10 minibatches of 50 training images an epoch."""
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=600, n_test=100)
    return f"data.root={root}"


def killed_at(step: int, words: list[str], cwd: Path) -> Command:
    """``python -m vaelab.fit words``, killed at optimizer step ``step``."""
    return Command(words, cwd, env={"KILL_AT_STEP": str(step)}, before=KILLED_AT_STEP)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def kill_step() -> int:
    """A random optimizer step after the first checkpoint (that of step 3), in any epoch;
    $VAELAB_KILL_AT_STEP repeats a given one."""
    chosen = os.environ.get("VAELAB_KILL_AT_STEP")
    return int(chosen) if chosen else random.randrange(STEPS_PER_CALL, EPOCHS * STEPS_PER_EPOCH)


# Every kind of part resumes exactly: learned priors' parameters, conv networks, other estimators.
PARTS = {
    "mlp, N(0, I)": [],
    "conv, VampPrior, IWAE-DReG": [
        "net=conv", "net.channels=[4,8]", "net.dense=16", "prior=vamp", "prior.components=20",
        "model.objective=iwae", "model.k=3", "model.estimator=dreg",
    ],
    "mlp, mixture prior, STL": ["prior=mog", "prior.components=5", "model.kl=mc", "model.k=2", "model.estimator=stl"],
}


@pytest.mark.slow
@pytest.mark.parametrize("parts", list(PARTS.values()), ids=list(PARTS))
def test_kill_9_at_a_random_step_then_resume_is_the_uninterrupted_run(tmp_path, tiny_mnist, parts):
    step = kill_step()
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    words = [*WORDS, tiny_mnist, *parts]
    runs = [Command([*words, f"run.dir={whole}"], tmp_path), killed_at(step, [*words, f"run.dir={killed}"], tmp_path)]
    # the resumed process first copies the killed run directory as the kill left it
    as_killed = tmp_path / "as-killed"
    keep_a_copy = f"import shutil; shutil.copytree({str(killed)!r}, {str(as_killed)!r})"
    resume = Command([f"run.resume={killed}"], tmp_path, before=keep_a_copy)
    whole_run, killed_run, resumed_run = run_forked([runs, [resume]], env=ENV, timeout=300)
    assert whole_run.returncode == 0, whole_run.stderr[-3000:]
    assert killed_run.returncode == -signal.SIGKILL, (step, killed_run.stderr[-3000:])

    # The premise: the kill lost work and left rows that the resumed run writes again.
    resumed_from = load(as_killed / "checkpoints" / "last.ckpt")["global_step"]
    assert resumed_from <= step, (step, resumed_from)
    assert max(int(row["step"]) for row in metrics_rows(as_killed)) == step
    if step % STEPS_PER_EPOCH >= STEPS_PER_CALL:  # a checkpoint of this epoch exists: resume mid-epoch
        assert resumed_from % STEPS_PER_EPOCH != 0, (step, resumed_from)

    assert resumed_run.returncode == 0, (step, resumed_run.stderr[-3000:])

    a, b = load(whole / "checkpoints" / "last.ckpt"), load(killed / "checkpoints" / "last.ckpt")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (EPOCHS - 1, EPOCHS * STEPS_PER_EPOCH)
    assert_same_training_state(a, b, step)

    rows_a, rows_b = metrics_rows(whole), metrics_rows(killed)
    assert len(rows_a) == len(rows_b), (step, len(rows_a), len(rows_b))
    for row_a, row_b in zip(rows_a, rows_b):
        assert row_a == row_b, step
    bound = "train/elbo" if "model.objective=iwae" not in parts else "train/iwae3"
    train_steps = [int(row["step"]) for row in rows_b if row.get(bound)]
    assert train_steps == list(range(EPOCHS * STEPS_PER_EPOCH)), step  # each step's row once

    summary_a, summary_b = (json.loads((run / "summary.json").read_text()) for run in (whole, killed))
    for key in ("test_elbo", "test_ll", "best_val_elbo", "steps", "epochs"):
        assert summary_a[key] == summary_b[key], (step, key)


def test_loader_state_round_trips_mid_epoch():
    """A loader that loads the state of one stopped mid-epoch hands out the rest of that
    epoch, and then the next epochs, exactly as the one that was never stopped."""
    data = torch.arange(23 * 2, dtype=torch.float32).reshape(23, 2)
    make = lambda: InMemoryBatches(data, batch_size=3, shuffle=True, seed=5, group=2, limit=7)  # noqa: E731

    def epoch(loader: InMemoryBatches, number: int) -> list[list[torch.Tensor]]:
        iterator = iter(loader)  # as Lightning does: iter before set_epoch
        loader.sampler.set_epoch(number)
        return list(iterator)

    whole = make()
    reference = [epoch(whole, number) for number in range(3)]
    assert [len(groups) for groups in reference] == [4, 4, 4]  # 7 minibatches: groups of 2, 2, 2, 1

    stopped = make()
    epoch(stopped, 0)
    iterator = iter(stopped)
    stopped.sampler.set_epoch(1)
    next(iterator)
    state = stopped.state_dict()
    assert state == {"epoch": 1, "minibatches": 2}

    resumed = make()
    resumed.load_state_dict(state)
    rest = epoch(resumed, 1)
    assert len(rest) == 3
    for got, expected in zip(rest, reference[1][1:]):
        assert all(torch.equal(x, y) for x, y in zip(got, expected, strict=True))
    assert resumed.state_dict() == {"epoch": 1, "minibatches": 7}
    after = epoch(resumed, 2)  # the next epoch is whole again
    assert len(after) == 4
    for got, expected in zip(after, reference[2]):
        assert all(torch.equal(x, y) for x, y in zip(got, expected, strict=True))


def test_loader_state_of_another_epoch_skips_nothing():
    data = torch.arange(10, dtype=torch.float32).reshape(10, 1)
    loader = InMemoryBatches(data, batch_size=2, shuffle=False, seed=0)
    loader.load_state_dict({"epoch": 3, "minibatches": 2})
    iterator = iter(loader)
    loader.sampler.set_epoch(4)
    assert len(list(iterator)) == 5


class FakeTrainer(SimpleNamespace):
    """What IntervalCheckpoint reads of a trainer; records the steps it saved at."""

    def __init__(self, batches: int) -> None:
        super().__init__(global_step=0, num_training_batches=batches, saved=[])
        self.strategy = SimpleNamespace(broadcast=lambda value: value)

    def save_checkpoint(self, path: Path, weights_only: bool | None = None) -> None:
        self.saved.append(self.global_step)


def run_epoch(callback: IntervalCheckpoint, trainer: FakeTrainer, steps: list[int], minutes: list[float] | None = None, clock=None) -> None:
    callback.on_train_epoch_start(trainer, None)
    for index, size in enumerate(steps):
        trainer.global_step += size
        if clock is not None:
            clock.now += 60 * minutes[index]
        callback.on_train_batch_end(trainer, None, None, None, index)


def test_interval_checkpoints_round_steps_up_to_whole_calls_and_skip_epoch_ends(tmp_path):
    trainer = FakeTrainer(batches=4)
    callback = IntervalCheckpoint(tmp_path / "last.ckpt", every_n_steps=4, every_minutes=None)
    callback.on_train_start(trainer, None)
    run_epoch(callback, trainer, [3, 3, 3, 1])  # steps 3, 6, 9, 10: 6 reaches 4; 9 - 6 does not
    run_epoch(callback, trainer, [3, 3, 3, 1])  # the interval restarts with the epoch (at 10): 16
    assert trainer.saved == [6, 16]
    trainer = FakeTrainer(batches=4)
    callback = IntervalCheckpoint(tmp_path / "last.ckpt", every_n_steps=1, every_minutes=None)
    run_epoch(callback, trainer, [3, 3, 3, 1])
    assert trainer.saved == [3, 6, 9]  # never after the epoch's last call


def test_interval_checkpoints_by_minutes(tmp_path, monkeypatch):
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr("vaelab.results.resume.time.monotonic", lambda: clock.now)
    trainer = FakeTrainer(batches=6)
    callback = IntervalCheckpoint(tmp_path / "last.ckpt", every_n_steps=None, every_minutes=10)
    callback.on_train_start(trainer, None)
    run_epoch(callback, trainer, [5] * 6, minutes=[4, 4, 4, 4, 9, 30], clock=clock)
    assert trainer.saved == [15, 25]  # 12 minutes after the start, then 13 after that; not at the end


@pytest.mark.slow
def test_a_run_resumed_from_its_sigusr1_checkpoint_is_the_uninterrupted_run(tmp_path, tiny_mnist):
    """The checkpoint vaelab.cluster writes on SIGUSR1 (here in this process, without SLURM)
    resumes the run exactly, as ``last.ckpt`` does."""
    import pytorch_lightning as pl

    from vaelab.cluster import SlurmRequeue
    from vaelab.config.compose import compose, parse_command_line
    from vaelab.fit import build_run, main

    words = [w for w in WORDS if w != "trainer.deterministic=true"] + [tiny_mnist]  # in-process: leave torch's flags alone
    words = [*words, f"trainer.max_epochs={EPOCHS - 1}"]
    assert main([*words, f"run.dir={tmp_path / 'whole'}"]) == 0

    requeue = SlurmRequeue(every_n_steps=1)

    class SignalAtStep(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            requeue.requested = trainer.global_step >= STEPS_PER_EPOCH + STEPS_PER_CALL  # epoch 1, its second call

    run_dir = tmp_path / "requeued"
    run = build_run(compose(parse_command_line([*words, f"run.dir={run_dir}"])))
    run.trainer.callbacks.extend([SignalAtStep(), requeue])
    with pytest.warns(UserWarning, match="could not requeue SLURM job"), pytest.raises(SystemExit):
        run.trainer.fit(run.module, datamodule=run.datamodule)
    hpc = load(run_dir / "hpc_ckpt_1.ckpt")
    assert hpc["global_step"] == STEPS_PER_EPOCH + STEPS_PER_CALL
    assert main([f"run.resume={run_dir / 'hpc_ckpt_1.ckpt'}"]) == 0

    a, b = load(tmp_path / "whole" / "checkpoints" / "last.ckpt"), load(run_dir / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == (EPOCHS - 1) * STEPS_PER_EPOCH
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    assert metrics_rows(tmp_path / "whole") == metrics_rows(run_dir)
