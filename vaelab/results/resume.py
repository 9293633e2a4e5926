"""Exact resume: checkpoints within an epoch, and what they keep beyond Lightning's own state.

Lightning's checkpoint holds the weights, the optimizer and schedule, the loop counters,
callback states and, through the training loader's ``state_dict``, the position in the
epoch (:class:`vaelab.data.batches.InMemoryBatches`). :class:`ExactResume` adds the global
random generators (dynamic binarization and the reparameterization noise draw from them)
and how many rows ``metrics.csv`` held, so that a resumed run draws the same numbers and
writes each row once. :class:`IntervalCheckpoint` bounds the work a hard kill can lose.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from vaelab.results.loggers import AppendingCSVLogger


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
    """Keeps the random generators' states and ``metrics.csv``'s row count in every checkpoint.

    On resume the generators are set back just before the first training step (building
    the model and Lightning's set-up draw numbers before it), and rows that were written
    after the checkpoint, by the session that was interrupted, are removed: the resumed
    run writes them again. Every rank of a DDP run draws the same numbers of the same
    shapes from the same seed, so rank 0's states are every rank's.
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._loaded: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"random_states": random_states()}
        logger = _csv_logger(self._trainer) if self._trainer is not None and self._trainer.is_global_zero else None
        if logger is not None:
            state["metrics_rows"] = logger.flushed_rows()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._loaded is None or "metrics_rows" not in self._loaded or not trainer.is_global_zero:
            return
        logger = _csv_logger(trainer)
        if logger is not None:
            logger.keep_first_rows(self._loaded["metrics_rows"])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._loaded is not None:
            set_random_states(self._loaded["random_states"])
            self._loaded = None


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
