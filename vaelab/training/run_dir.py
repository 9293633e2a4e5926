"""Run directories: one per run, holding config.yaml, checkpoints/, metrics and pictures."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from vaelab.config.compose import load_yaml
from vaelab.config.schema import FitConfig
from vaelab.errors import CheckpointError, ResultsWriteError, warn
from vaelab.files.atomic import probe_write, write_atomically
from vaelab.training.checkpoints import checkpoint_problem
from vaelab.files.write_faults import write_error
from vaelab.registry import part_name

CONFIG_FILE = "config.yaml"
# The launching process exports its run directory here, so that the DDP worker processes
# Lightning starts (which run the same command again) write into the same one.
RUN_DIR_ENV = "VAELAB_RUN_DIR"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
# The files a fit writes at the top of its run directory (the table in docs/resume.md).
RESULT_FILES = (CONFIG_FILE, "hparams.yaml", "metrics.csv", "summary.json", "samples.png", "reconstructions.png")


def choose_run_dir(cfg: FitConfig) -> Path:
    """``run.dir`` if set; else the launching process's choice (``$VAELAB_RUN_DIR``); else
    ``runs/<data>-<model>/<timestamp>`` below the working directory."""
    if cfg.run.dir:
        return Path(cfg.run.dir)
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path("runs") / f"{part_name(cfg.data.source)}-{part_name(cfg.model.likelihood)}" / stamp


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


def check_writable(folder: Path, files: tuple[str, ...] = (), folders: tuple[str, ...] = ()) -> None:
    """Raise the :class:`ResultsWriteError` that writing ``folder`` would meet, before any work:
    ``folder`` (and each of ``folders`` in it that exists) cannot be written (read-only, not
    yours, a full disk), one of ``files`` is a directory, or one of ``folders`` is a file."""
    probe_write(folder)
    for name in files:
        if (folder / name).is_dir():
            raise write_error(folder / name, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))
    for name in folders:
        path = folder / name
        if path.is_dir():
            probe_write(path)
        elif os.path.lexists(path):
            raise write_error(path, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))


def check_run_dir(run_dir: Path) -> None:
    """:func:`check_writable` for a fit's run directory: its files and ``checkpoints/``."""
    check_writable(run_dir, RESULT_FILES, (CHECKPOINT_DIR,))


def unwritable_run_dir_fix(error: ResultsWriteError, run_dir: Path, resumed: bool) -> str:
    """What to do when a fit cannot write into ``run_dir``, and which checkpoint is kept."""
    elsewhere = "copy the run directory elsewhere and resume the copy" if resumed else "pass run.dir=<a folder elsewhere>"
    fix = f"{error.remedy}, or {elsewhere}"
    kept = newest_whole_checkpoint(run_dir / CHECKPOINT_DIR)
    if kept is not None:
        fix += f" (the last whole checkpoint, {kept}, is kept: continue with run.resume={run_dir})"
    return fix


def newest_whole_checkpoint(folder: Path, besides: Path | None = None) -> Path | None:
    """The newest whole ``*.ckpt`` in ``folder`` other than ``besides``; None if there is none."""
    try:
        found = sorted((p for p in folder.glob("*.ckpt") if p != besides), key=lambda p: p.stat().st_mtime)
    except OSError:
        return None
    return next((p for p in reversed(found) if checkpoint_problem(p) is None), None)


def save_config(run_dir: Path, cfg: DictConfig) -> None:
    write_atomically(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg))


def find_checkpoint(target: str, key: str, prefer_best: bool = False) -> tuple[Path, Path, str]:
    """The run directory, the checkpoint file and a few words on why that one, for ``key=target``.

    ``target`` is a checkpoint file (its run directory holds it, or the ``checkpoints/`` folder
    that does) or a run directory: then its newest ``checkpoints/best-*.ckpt`` if ``prefer_best``,
    else ``checkpoints/last.ckpt``.
    """
    path = Path(target)
    fix = f"pass {key}=<run dir> of a vaelab.fit run or {key}=<file.ckpt>"
    if not path.is_dir():
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {path}: {fix}")
        run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
        return run_dir, path, "as given"
    folder = path / CHECKPOINT_DIR
    best = sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime) if prefer_best else []
    if best:
        return path, best[-1], "best by validation ELBO" if len(best) == 1 else f"the newest of {len(best)} best-*.ckpt"
    if (folder / LAST_CHECKPOINT).is_file():
        why = f"no best-*.ckpt in {folder}: the last epoch's" if prefer_best else "the last written"
        return path, folder / LAST_CHECKPOINT, why
    expected = f"best-*.ckpt or {LAST_CHECKPOINT}" if prefer_best else LAST_CHECKPOINT
    raise CheckpointError(f"no checkpoint in {folder}: expected {expected}; {fix}")


def load_saved_config(run_dir: Path) -> DictConfig:
    """The run's ``config.yaml``, as it was saved."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing, so the run's data and settings are unknown")
    return load_yaml(path)


def find_resume_point(target: str) -> tuple[Path, DictConfig]:
    """The checkpoint and the saved config to continue from a checkpoint file or run directory.

    A run directory continues from ``checkpoints/last.ckpt``, or where that is not a whole file,
    from the newest whole checkpoint in ``checkpoints/``, with a warning. A file must be whole.
    The config's ``run.dir`` is where the run is now (it may have been moved).
    """
    try:
        run_dir, checkpoint, _ = find_checkpoint(target, "run.resume")
        saved = load_saved_config(run_dir)
    except CheckpointError as error:
        raise CheckpointError(f"cannot resume: {error}") from None
    OmegaConf.update(saved, "run.dir", str(run_dir))
    problem = checkpoint_problem(checkpoint)
    if problem is None:
        return checkpoint, saved
    if not Path(target).is_dir():
        raise CheckpointError(
            f"cannot resume from {checkpoint}: the file is {problem}; pass run.resume=<run dir> to continue "
            "from the run's newest whole checkpoint"
        )
    return _previous_whole_checkpoint(checkpoint, problem), saved


def _previous_whole_checkpoint(broken: Path, problem: str) -> Path:
    """The newest whole checkpoint beside ``broken``, announced in one warning line."""
    other = newest_whole_checkpoint(broken.parent, besides=broken)
    if other is not None:
        warn(f"{broken} is {problem}: resuming from {other}, the newest whole checkpoint of the run")
        return other
    raise CheckpointError(
        f"cannot resume: {broken} is {problem} and {broken.parent} holds no other whole checkpoint; "
        "start the run again without run.resume"
    )


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
