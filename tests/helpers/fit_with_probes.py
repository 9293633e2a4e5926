"""``python -m tests.helpers.fit_with_probes <fit words>``: ``vaelab.fit`` with test-only callbacks on every rank.

Lightning starts the other DDP ranks by running this module again with the same arguments and
environment, so every rank builds the same run and adds the same callbacks:

* with ``$PROBE_DIR``, :class:`RecordFirstStep` writes ``$PROBE_DIR/rank<r>.pt``: the parameters
  at the start of training and, just before the first training step (after vaelab has set the
  generators: callbacks run in order, this one after ``ExactResume``), the global generators'
  states and the first numbers each of them would draw;
* with ``$REQUEUE_AT_STEP``, :class:`SignalAtStep` makes every rank send itself SIGUSR1 after the
  ``training_step`` call that reaches that optimizer step, and :class:`vaelab.training.slurm_requeue.SlurmRequeue`
  (checking after every call) writes ``<run dir>/hpc_ckpt_1.ckpt`` and stops the run, as it does
  before a SLURM requeue (here no SLURM: it warns that it could not requeue).
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from vaelab.training.slurm_requeue import SlurmRequeue
from vaelab.config.compose import compose, parse_command_line
from vaelab.fit import build_run, fit_run


class RecordFirstStep(pl.Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.record: dict | None = None

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.record = {"weights": {name: value.detach().clone() for name, value in module.state_dict().items()}}

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self.record is None or "torch_state" in self.record:
            return
        state = torch.get_rng_state()
        numpy_copy, python_copy = np.random.RandomState(), random.Random()
        numpy_copy.set_state(np.random.get_state())
        python_copy.setstate(random.getstate())
        self.record.update(
            rank=trainer.global_rank,
            torch_state=state,
            torch_draws=torch.rand(8, generator=torch.Generator().set_state(state)),
            numpy_draws=numpy_copy.random_sample(8).tolist(),
            python_draws=[python_copy.random() for _ in range(8)],
        )
        torch.save(self.record, self.folder / f"rank{trainer.global_rank}.pt")


class SignalAtStep(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def main(words: list[str]) -> None:
    run = build_run(compose(parse_command_line(words)))
    if "PROBE_DIR" in os.environ:
        run.trainer.callbacks.append(RecordFirstStep(Path(os.environ["PROBE_DIR"])))
    if "REQUEUE_AT_STEP" in os.environ:
        run.trainer.callbacks.extend([SignalAtStep(int(os.environ["REQUEUE_AT_STEP"])), SlurmRequeue(every_n_steps=1)])
    fit_run(run)


if __name__ == "__main__":
    main(sys.argv[1:])
