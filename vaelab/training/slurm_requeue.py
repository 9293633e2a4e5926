"""Preemption-safe SLURM jobs: on SIGUSR1, checkpoint, requeue the job, stop.

``sbatch --signal=USR1@90`` (see ``slurm/fit.sbatch``) sends SIGUSR1 90 s before the time
limit. Lightning's own handler writes the checkpoint inside the signal handler; under DDP
one rank can then wait in the checkpoint's barrier while another waits in the gradient
all-reduce, and the job hangs until SLURM kills it (Lightning issue #21406). Here the
handler only sets a flag; the ranks agree on it after a training batch, where all of them
are, and save together. When the requeued job starts, Lightning resumes from the newest
``hpc_ckpt_<n>.ckpt`` of ``default_root_dir`` (the run directory) by itself.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` in a job array."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{array_task}" if array_job and array_task else os.environ.get("SLURM_JOB_ID")


def next_hpc_checkpoint(run_dir: Path) -> Path:
    """``hpc_ckpt_<n+1>.ckpt`` after the highest n already in the run directory."""
    numbers = [
        int(match.group(1))
        for path in run_dir.glob("hpc_ckpt_*.ckpt")
        if (match := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", path.name))
    ]
    return run_dir / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


class SlurmRequeue(pl.Callback):
    """On ``signum``: write ``<run dir>/hpc_ckpt_<n>.ckpt``, requeue the SLURM job, exit 0.

    The ranks compare notes before every ``every_n_steps``-th training batch of an epoch
    (its first included), so the check costs one small all-reduce per ``every_n_steps`` steps.
    """

    def __init__(self, every_n_steps: int = 10, signum: int = signal.SIGUSR1) -> None:
        self.every_n_steps = every_n_steps
        self.signum = signum
        self.requested = False
        self._previous_handler = None

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(self.signum, self._handle)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._previous_handler is not None:
            signal.signal(self.signum, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # After a batch (where Lightning resumes exactly: the loader's position, the step
        # count), never after an epoch's last one: a checkpoint taken there would resume
        # after that epoch's training but skip its validation.
        if batch_idx + 1 >= trainer.num_training_batches or (batch_idx + 1) % self.every_n_steps != 0:
            return
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        path = trainer.strategy.broadcast(next_hpc_checkpoint(Path(trainer.default_root_dir)))
        rank_zero_info(f"SIGUSR1: saving {path} and requeueing the job")
        trainer.save_checkpoint(path, weights_only=False)  # the whole state (said, so Lightning logs nothing)
        trainer.strategy.barrier("vaelab-requeue")
        # Leave the process group before the requeue: SLURM then sends SIGTERM to every rank, and
        # Lightning's SIGTERM handler broadcasts to the other ranks while there is a group, which
        # fails (a traceback in the log) or hangs once some rank has gone.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if trainer.is_global_zero:
            job = slurm_job_id()
            done = job is not None and subprocess.run(["scontrol", "requeue", job], check=False).returncode == 0
            if not done:
                rank_zero_warn(f"could not requeue SLURM job {job}: continue it with run.resume={trainer.default_root_dir}")
        raise SystemExit(0)  # the requeued job goes on; no test or summary in this one
