"""Run directories: one per run, holding config.yaml, checkpoints/, metrics and pictures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from vaelab.config.schema import FitConfig
from vaelab.errors import CheckpointError, warn
from vaelab.results.atomic import write_atomically
from vaelab.results.checkpoints import checkpoint_problem

CONFIG_FILE = "config.yaml"
# The launching process exports its run directory here, so that the DDP worker processes
# Lightning starts (which run the same command again) write into the same one.
RUN_DIR_ENV = "VAELAB_RUN_DIR"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


def choose_run_dir(cfg: FitConfig) -> Path:
    """``run.dir`` if set; else the launching process's choice (``$VAELAB_RUN_DIR``); else
    ``runs/<data>-<model>/<timestamp>`` below the working directory."""
    if cfg.run.dir:
        return Path(cfg.run.dir)
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path("runs") / f"{cfg.data.name.value}-{cfg.model.decoder.value}" / stamp


@contextmanager
def exported_run_dir(run_dir: Path) -> Iterator[None]:
    """Export ``run_dir`` to worker processes started inside this block."""
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        yield
    finally:
        if previous is None:
            del os.environ[RUN_DIR_ENV]
        else:
            os.environ[RUN_DIR_ENV] = previous


def save_config(run_dir: Path, cfg: DictConfig) -> None:
    write_atomically(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg))


def find_resume_point(target: str) -> tuple[Path, Path]:
    """The run directory and checkpoint to continue from a checkpoint file or run directory.

    A run directory continues from ``checkpoints/last.ckpt``, or where that is not a whole file,
    from the newest whole checkpoint in ``checkpoints/``, with a warning. A file must be whole.
    """
    path = Path(target)
    if path.is_dir():
        checkpoint = path / CHECKPOINT_DIR / LAST_CHECKPOINT
        run_dir = path
    else:
        checkpoint = path
        run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
    if not checkpoint.is_file():
        raise CheckpointError(
            f"cannot resume: no checkpoint at {checkpoint}; pass run.resume=<run dir> holding "
            f"{CHECKPOINT_DIR}/{LAST_CHECKPOINT} or run.resume=<file.ckpt>"
        )
    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"cannot resume: {run_dir / CONFIG_FILE} is missing, so the run's config is unknown")
    problem = checkpoint_problem(checkpoint)
    if problem is None:
        return run_dir, checkpoint
    if not path.is_dir():
        raise CheckpointError(
            f"cannot resume from {checkpoint}: the file is {problem}; pass run.resume=<run dir> to continue "
            "from the run's newest whole checkpoint"
        )
    return run_dir, _previous_whole_checkpoint(checkpoint, problem)


def _previous_whole_checkpoint(broken: Path, problem: str) -> Path:
    """The newest whole checkpoint beside ``broken``, announced in one warning line."""
    others = sorted((p for p in broken.parent.glob("*.ckpt") if p != broken), key=lambda p: p.stat().st_mtime)
    for other in reversed(others):
        if checkpoint_problem(other) is None:
            warn(f"{broken} is {problem}: resuming from {other}, the newest whole checkpoint of the run")
            return other
    raise CheckpointError(
        f"cannot resume: {broken} is {problem} and {broken.parent} holds no other whole checkpoint; "
        "start the run again without run.resume"
    )


def load_saved_config(run_dir: Path) -> DictConfig:
    return OmegaConf.load(run_dir / CONFIG_FILE)


class ConfigWriter(pl.Callback):
    """Writes the resolved ``config.yaml`` into the run directory once the data are found.

    Lightning prepares the data before it sets up callbacks, so a run that stops for a
    missing file leaves no run directory behind.
    """

    def __init__(self, run_dir: Path, cfg: DictConfig) -> None:
        self.run_dir = run_dir
        self.cfg = cfg

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and stage == "fit":
            save_config(self.run_dir, self.cfg)
