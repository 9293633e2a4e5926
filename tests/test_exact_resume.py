"""Exact resume: a run killed with SIGKILL and resumed is the run that was never interrupted.

The same 3-epoch run is trained twice as ``python -m vaelab.fit`` processes: once without
interruption, once killed by SIGKILL at a random step inside a ``training_step`` call (between
two optimizer steps) and then resumed with ``run.resume=<run dir>``. The final parameters, the
optimizer's state, the step count, ``metrics.csv`` (every row once) and the test results must
be equal, bit for bit, on the CPU with deterministic algorithms. The same holds for a 2-process
DDP run (gloo) stopped mid-epoch by SIGUSR1 (the checkpoint taken before a SLURM requeue), whose
ranks each draw their own noise and must each get their own generators back. The runs are a
small model on tiny MNIST files of the real format; the processes are forked from one Python that
has made the imports (tests/helpers/, run_forked).
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.helpers import PROJECT, Command, assert_same_training_state, exact_fit_words, metrics_rows, run_forked, write_mnist
from vaelab.data.batches import InMemoryBatches
from vaelab.training.rank_noise import seed_rank_generators, seed_test_samples
from vaelab.training.resume import ExactResume, IntervalCheckpoint, random_states

EPOCHS, STEPS_PER_EPOCH, STEPS_PER_CALL = 3, 10, 3  # calls of 3, 3, 3 and 1 steps per epoch
# data.root is added by the tiny_mnist fixture: 600 training images, 100 of them for validation
WORDS = [
    *exact_fit_words(EPOCHS, STEPS_PER_EPOCH, STEPS_PER_CALL),
    "trainer.checkpoint_every_n_steps=2",  # a checkpoint after every call but an epoch's last (3 steps reach 2)
]
# Before `python -m vaelab.fit`: the process sends itself SIGKILL right after the training bound
# of optimizer step $KILL_AT_STEP (numbered from 0) is logged: inside a training_step call.
KILLED_AT_STEP = """
import os, signal
from vaelab.training.loggers import AppendingCSVLogger

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
    "top-down, 2 layers, per-layer KL": [
        "hierarchy=topdown", "hierarchy.merge=concat", "model.upper_layers=[{hidden: [16], latent_dim: 4}]",
        "eval.collapse_diagnostics=true",
    ],
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
    monkeypatch.setattr("vaelab.training.resume.time.monotonic", lambda: clock.now)
    trainer = FakeTrainer(batches=6)
    callback = IntervalCheckpoint(tmp_path / "last.ckpt", every_n_steps=None, every_minutes=10)
    callback.on_train_start(trainer, None)
    run_epoch(callback, trainer, [5] * 6, minutes=[4, 4, 4, 4, 9, 30], clock=clock)
    assert trainer.saved == [15, 25]  # 12 minutes after the start, then 13 after that; not at the end


@pytest.mark.slow
def test_a_run_resumed_from_its_sigusr1_checkpoint_is_the_uninterrupted_run(tmp_path, tiny_mnist):
    """The checkpoint vaelab.training.slurm_requeue writes on SIGUSR1 (here in this process, without SLURM)
    resumes the run exactly, as ``last.ckpt`` does."""
    import pytorch_lightning as pl

    from vaelab.training.slurm_requeue import SlurmRequeue
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


# ---------------------------------------------------------------- every DDP rank its own noise


def same_states(a: dict, b: dict) -> bool:
    return torch.equal(a["torch"], b["torch"]) and a["numpy"] == b["numpy"] and a["python"] == b["python"]


def seeded(seed: int, rank: int) -> dict:
    seed_rank_generators(seed, rank)
    return random_states()


def test_rank_seeds_give_every_rank_and_seed_other_streams_of_every_generator():
    first = seeded(3, 1)
    assert same_states(first, seeded(3, 1))  # a function of (seed, rank) alone
    others = [seeded(3, 0), seeded(4, 0), seeded(4, 1), seeded(2, 1)]  # (4, 0): seed + rank does not collide
    for other in others:
        assert not torch.equal(first["torch"], other["torch"])
        assert first["numpy"][1] != other["numpy"][1] and first["python"][1] != other["python"][1]
    seed_rank_generators(3, 1)
    numpy_draw, python_draw = np.random.random_sample(), random.random()
    assert numpy_draw != python_draw  # two Mersenne Twisters seeded with other words
    seed_test_samples(5, 0, 1)  # one process: as vaelab.evaluate, torch.manual_seed(seed)
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(5).get_state())
    seed_test_samples(5, 1, 2)
    assert same_states(random_states(), seeded(5, 1))


def first_step_states(world_size: int, rank: int, loaded: dict | None) -> dict:
    """The generators' states ExactResume(seed=7) leaves before the first (and the second)
    training step at ``rank`` of ``world_size`` processes, resuming from a checkpoint whose
    callback state is ``loaded`` (None: a fresh run), where set-up left torch.manual_seed(123)."""
    callback, trainer = ExactResume(seed=7), SimpleNamespace(world_size=world_size, global_rank=rank, is_global_zero=rank == 0, loggers=[])
    if loaded is not None:
        callback.load_state_dict(loaded)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    callback.on_train_start(trainer, None)
    callback.on_train_batch_start(trainer, None, None, 0)
    states = random_states()
    torch.rand(3)
    callback.on_train_batch_start(trainer, None, None, 1)  # the second step draws on
    assert not torch.equal(torch.get_rng_state(), states["torch"])
    return states


def test_exact_resume_gives_each_rank_its_own_states_or_says_why_not():
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    as_left, a, b, c = random_states(), seeded(1, 0), seeded(1, 1), seeded(1, 2)
    per_rank = "random_states_per_rank"
    assert same_states(first_step_states(1, 0, None), as_left)  # one process: never reseeded
    assert same_states(first_step_states(2, 1, None), seeded(7, 1))
    assert same_states(first_step_states(2, 1, {per_rank: [a, b]}), b)
    assert same_states(first_step_states(2, 0, {per_rank: [a, b]}), a)
    assert same_states(first_step_states(1, 0, {per_rank: [a]}), a)
    assert same_states(first_step_states(1, 0, {"random_states": a}), a)  # written before per-rank states
    with pytest.warns(UserWarning, match="one random state for all ranks"):
        assert same_states(first_step_states(2, 1, {"random_states": a}), seeded(7, 1))
    with pytest.warns(UserWarning, match="random states of 3 processes and this run has 2"):
        assert same_states(first_step_states(2, 1, {per_rank: [a, b, c]}), seeded(7, 1))
    with pytest.warns(UserWarning, match="random states of 2 processes and this run has 1"):
        assert same_states(first_step_states(1, 0, {per_rank: [a, b]}), as_left)


DDP_EPOCHS, DDP_STEPS_PER_EPOCH = 2, 10  # 500 training images: 250 a rank, 10 minibatches of 25
DDP_WORDS = [*WORDS, "trainer=ddp", "trainer.devices=2", f"trainer.max_epochs={DDP_EPOCHS}", "data.batch_size=25"]
REQUEUE_AT_STEP = DDP_STEPS_PER_EPOCH + 2 * STEPS_PER_CALL  # epoch 1, after its second call


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, tiny_mnist) -> SimpleNamespace:
    """Two-process DDP fits by tests/helpers/fit_with_probes.py: one uninterrupted, with each rank's
    initial weights and first draws recorded; one stopped by SIGUSR1 at REQUEUE_AT_STEP
    (``hpc_ckpt_1.ckpt``), then resumed from that checkpoint by ``python -m vaelab.fit``."""
    tmp = tmp_path_factory.mktemp("ddp")
    probes = tmp / "probes"
    probes.mkdir()
    words = [*DDP_WORDS, tiny_mnist]
    whole, requeued = tmp / "whole", tmp / "requeued"
    fits = [
        Command([*words, f"run.dir={whole}"], tmp, module="tests.helpers.fit_with_probes", env={"PROBE_DIR": str(probes)}),
        Command([*words, f"run.dir={requeued}"], tmp, module="tests.helpers.fit_with_probes", env={"REQUEUE_AT_STEP": str(REQUEUE_AT_STEP)}),
    ]
    resume = Command([f"run.resume={requeued / 'hpc_ckpt_1.ckpt'}"], tmp)
    results = run_forked([fits, [resume]], env=ENV, timeout=600)
    return SimpleNamespace(results=dict(zip(("whole", "requeued", "resumed"), results)), whole=whole, requeued=requeued, probes=probes)


@pytest.mark.slow
def test_ddp_ranks_start_from_the_same_weights_and_draw_their_own_noise(ddp_runs, tiny_mnist, tmp_path):
    from vaelab.config.compose import compose, parse_command_line
    from vaelab.fit import build_run

    assert ddp_runs.results["whole"].returncode == 0, ddp_runs.results["whole"].stderr[-3000:]
    ranks = [torch.load(ddp_runs.probes / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    assert [record["rank"] for record in ranks] == [0, 1]
    # The weights one process builds from the seed, before any reseeding (in-process: leave torch's flags alone).
    words = [w for w in WORDS if w != "trainer.deterministic=true"]
    single = build_run(compose(parse_command_line([*words, tiny_mnist, "data.batch_size=25", f"run.dir={tmp_path}"])))
    for name, value in single.module.state_dict().items():
        assert torch.equal(ranks[0]["weights"][name], value) and torch.equal(ranks[1]["weights"][name], value), name
    for rank, record in enumerate(ranks):
        assert torch.equal(record["torch_state"], seeded(0, rank)["torch"]), rank  # from (seed=0, rank)
    assert not torch.equal(ranks[0]["torch_draws"], ranks[1]["torch_draws"])
    assert ranks[0]["numpy_draws"] != ranks[1]["numpy_draws"] and ranks[0]["python_draws"] != ranks[1]["python_draws"]


@pytest.mark.slow
def test_a_ddp_run_requeued_mid_epoch_and_resumed_is_the_uninterrupted_run(ddp_runs):
    results = ddp_runs.results
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr[-3000:])
    assert "could not requeue SLURM job" in results["requeued"].stderr
    hpc = load(ddp_runs.requeued / "hpc_ckpt_1.ckpt")
    assert hpc["global_step"] == REQUEUE_AT_STEP  # mid-epoch 1
    a, b = hpc["callbacks"]["ExactResume"]["random_states_per_rank"]  # every rank's own, gathered
    assert not torch.equal(a["torch"], b["torch"])

    a, b = load(ddp_runs.whole / "checkpoints" / "last.ckpt"), load(ddp_runs.requeued / "checkpoints" / "last.ckpt")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (DDP_EPOCHS - 1, DDP_EPOCHS * DDP_STEPS_PER_EPOCH)
    assert_same_training_state(a, b)
    assert metrics_rows(ddp_runs.whole) == metrics_rows(ddp_runs.requeued)
    summary_a, summary_b = (json.loads((run / "summary.json").read_text()) for run in (ddp_runs.whole, ddp_runs.requeued))
    assert summary_a["world_size"] == summary_b["world_size"] == 2
    for key in ("test_elbo", "test_ll", "best_val_elbo", "steps", "epochs"):
        assert summary_a[key] == summary_b[key], key
