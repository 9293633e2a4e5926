"""Exact resume: checkpoints within an epoch, and what they keep beyond Lightning's own state.

Lightning's checkpoint holds the weights, the optimizer and schedule, the loop counters,
callback states and, through the training loader's ``state_dict``, the position in the
epoch (:class:`vaelab.data.batches.InMemoryBatches`). :class:`ExactResume` adds every rank's
global random generators (dynamic binarization and the reparameterization noise draw from
them) and how many rows ``metrics.csv`` held, so that a resumed run draws the same numbers
and writes each row once. :class:`IntervalCheckpoint` bounds the work a hard kill can lose;
:class:`SignalCheckpoint` stops a run at Ctrl-C or SIGTERM where it resumes exactly.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher

from vaelab.training.interrupts import Interrupted, active, signal_name
from vaelab.training.loggers import AppendingCSVLogger
from vaelab.training.rank_noise import seed_rank_generators

# The callback state's generator states: a list by global rank (one entry in one process).
RANK_STATES = "random_states_per_rank"
# Checkpoints written before each rank drew its own noise: rank 0's states, every rank's.
SHARED_STATES = "random_states"


def random_states() -> dict[str, Any]:
    """The global generators of torch (CPU, and this process's CUDA device), numpy and Python."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        # plain lists and numbers: Lightning loads checkpoints with torch.load(weights_only=True)
        "numpy": [kind, keys.tolist(), position, has_gauss, gauss],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    version, internal, python_gauss = states["python"]
    random.setstate((version, tuple(internal), python_gauss))
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["torch.cuda"])


def _csv_logger(trainer: pl.Trainer) -> AppendingCSVLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, AppendingCSVLogger)), None)


class ExactResume(pl.Callback):
    """Sets each rank's random generators for training, keeps every rank's states and
    ``metrics.csv``'s row count in every checkpoint.

    The generators are set just before the first training step of a session (building the
    model, Lightning's set-up and the sanity check draw numbers before it): on resume, to this
    rank's states in the checkpoint; in a fresh run of several processes, seeded from
    (``seed``, rank) (:mod:`vaelab.training.rank_noise`), so that the ranks draw their own
    noise; a single process leaves them as seeding and building the model left them.
    Validation draws from the same generators, after training.

    Lightning asks every rank for the callback's state when it dumps a checkpoint (together,
    in ``trainer.save_checkpoint``) and writes rank 0's: the ranks' states are gathered there,
    a list by global rank. A checkpoint of another number of processes, or one from before
    per-rank states (one state for all ranks) resumed by several processes, cannot give each
    rank its own: one warning, and the generators are set as in a fresh run. Rows that were
    written after the checkpoint, by the session that was interrupted, are removed: the
    resumed run writes them again.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._trainer: pl.Trainer | None = None
        self._loaded: dict[str, Any] | None = None
        self._before_first_step = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        states = [random_states()]
        if trainer is not None and trainer.world_size > 1 and torch.distributed.is_initialized():
            states = [None] * trainer.world_size  # every rank takes part: it is in save_checkpoint too
            torch.distributed.all_gather_object(states, random_states())
        state: dict[str, Any] = {RANK_STATES: states}
        logger = _csv_logger(trainer) if trainer is not None and trainer.is_global_zero else None
        if logger is not None:
            state["metrics_rows"] = logger.flushed_rows()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._before_first_step = True
        if self._loaded is None or "metrics_rows" not in self._loaded or not trainer.is_global_zero:
            return
        logger = _csv_logger(trainer)
        if logger is not None:
            logger.keep_first_rows(self._loaded["metrics_rows"])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._before_first_step:
            return
        self._before_first_step = False
        states = self._loaded_states(trainer)
        self._loaded = None
        if states is not None:
            set_random_states(states)
        elif trainer.world_size > 1:
            seed_rank_generators(self.seed, trainer.global_rank)

    def _loaded_states(self, trainer: pl.Trainer) -> dict[str, Any] | None:
        """This rank's generator states in the loaded checkpoint, or None (with a warning
        where the checkpoint has states that do not fit this run)."""
        if self._loaded is None:
            return None
        world_size = trainer.world_size
        per_rank = self._loaded.get(RANK_STATES)
        if per_rank is None and SHARED_STATES in self._loaded:
            if world_size == 1:
                return self._loaded[SHARED_STATES]
            rank_zero_warn(
                "the checkpoint holds one random state for all ranks (written before each rank drew its own "
                "noise): every rank's generators are seeded afresh from (seed, rank)"
            )
            return None
        if per_rank is None:
            return None
        if len(per_rank) != world_size:
            afresh = "seeded afresh from (seed, rank)" if world_size > 1 else "left as the seed set them"
            rank_zero_warn(
                f"the checkpoint holds the random states of {len(per_rank)} processes and this run has "
                f"{world_size}: the generators are {afresh}, so the noise differs from an uninterrupted run's"
            )
            return None
        return per_rank[trainer.global_rank]


class IntervalCheckpoint(pl.Callback):
    """Writes ``path`` (the run's ``last.ckpt``) within an epoch, every ``every_n_steps``
    optimizer steps or ``every_minutes`` minutes of training, whichever comes first.

    A checkpoint can only be taken between ``training_step`` calls, so it is written after
    the first call that reaches the interval (with ``trainer.steps_per_call=50`` and
    ``every_n_steps=120``, every 150 steps). Never after an epoch's last call: the epoch's
    own checkpoint follows its validation. Both intervals count from the latest checkpoint.
    """

    def __init__(self, path: Path, every_n_steps: int | None, every_minutes: float | None) -> None:
        self.path = path
        self.every_n_steps = every_n_steps
        self.every_seconds = None if every_minutes is None else 60.0 * every_minutes
        self._since_step = 0
        self._since_time = time.monotonic()

    def _restart_interval(self, trainer: pl.Trainer) -> None:
        self._since_step, self._since_time = trainer.global_step, time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restart_interval(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restart_interval(trainer)  # the previous epoch ended with a checkpoint

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        due = self.every_n_steps is not None and trainer.global_step - self._since_step >= self.every_n_steps
        if self.every_seconds is not None:
            # Clocks differ between processes: rank 0 decides for all (every rank calls this).
            late = time.monotonic() - self._since_time >= self.every_seconds
            due = trainer.strategy.broadcast(due or late)
        if due:
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole state (said, so Lightning logs nothing)
            self._restart_interval(trainer)


class SignalCheckpoint(pl.Callback):
    """At the first SIGINT or SIGTERM during training (recorded by the :class:`SignalStop` in
    force), save ``path`` (the run's ``last.ckpt``) after the current ``training_step`` call and
    stop: :class:`Interrupted`, no test, no summary. After an epoch's last call it waits for the
    epoch's own checkpoint, which follows its validation, and saves nothing more.

    Built before the data are loaded, it tells the :class:`SignalStop` in force which run and
    checkpoint a signal interrupts. Every rank checks after every call, with one small all-reduce under DDP (as Lightning's own
    SIGTERM check), so the ranks agree where to stop whichever of them got the signal, and save
    together. Without a :class:`SignalStop` (a fit driven from Python) it does nothing.
    """

    def __init__(self, run_dir: Path, path: Path) -> None:
        self.path = path
        self._first_epoch = 0
        if (stop := active()) is not None:
            stop.run_dir, stop.checkpoint = run_dir, path

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (stop := active()) is not None:
            stop.take_back()  # from Lightning's SIGTERM handler, installed as the fit started
            stop.training, stop.stage = True, "during training"
        self._first_epoch = trainer.current_epoch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx + 1 < trainer.num_training_batches:
            self._check(trainer, save=True)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > self._first_epoch:  # last.ckpt is the end of the epoch before
            self._check(trainer, save=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, save=False)  # the last epoch's checkpoint is written
        if (stop := active()) is not None:
            stop.training, stop.stage = False, "after training (in the test)"

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if (stop := active()) is not None:
            stop.exiting = True  # signals from now on change nothing: the fit is ending anyway
            stop.training = False
        launcher = trainer.strategy.launcher
        if isinstance(exception, Interrupted) and exception.at_once and isinstance(launcher, _SubprocessScriptLauncher):
            launcher.kill(signal.SIGKILL)  # the other ranks may wait in a collective: end them too

    def _check(self, trainer: pl.Trainer, save: bool) -> None:
        stop = active()
        if stop is None:
            return
        signum = stop.requested or 0
        if trainer.world_size > 1:  # the signal any rank got (one process: no device sync per call)
            requested = torch.tensor(signum, device=trainer.strategy.root_device)
            signum = int(trainer.strategy.reduce(requested, reduce_op="max").item())
        if not signum:
            return
        if save:
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole state (said, so Lightning logs nothing)
        stop.exiting = True
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            trainer.strategy.barrier("vaelab-interrupt")
            torch.distributed.destroy_process_group()  # a clean exit for every rank (gloo aborts otherwise)
        saved = "checkpoint saved" if save else "the end of an epoch, its checkpoint kept"
        raise Interrupted(signum, f"interrupted by {signal_name(signum)} at step {trainer.global_step} ({saved}){stop.how_to_continue()}")
