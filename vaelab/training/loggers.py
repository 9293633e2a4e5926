"""Metrics loggers: a CSV file in the run directory, and Weights & Biases when asked for."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from vaelab.config.schema import LoggerConfig, LoggerKind, WandbMode
from vaelab.errors import ResultsWriteError
from vaelab.files.atomic import replace_atomically
from vaelab.files.write_faults import writing


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing metrics.csv is continued, not deleted, the whole
    file is only ever replaced atomically (when a new column appears), an append that fails
    (a full disk) leaves no half row, and hparams.yaml is written atomically."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])

    def _check_log_dir_exists(self) -> None:
        pass

    def log_hparams(self, params: dict) -> None:
        self.hparams.update(params)
        path = Path(self.log_dir) / self.NAME_HPARAMS_FILE
        replace_atomically(path, lambda tmp: save_hparams_to_yaml(tmp, self.hparams))

    def save(self) -> None:
        path = Path(self.metrics_file_path)
        with writing(path):
            try:
                super().save()
            except OSError:
                _drop_partial_row(path)
                raise

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        self._rewrite(fieldnames, self._rows())

    def _rows(self) -> list[dict[str, str]]:
        if not self._fs.isfile(self.metrics_file_path):
            return []
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            return list(csv.DictReader(file))

    def _rewrite(self, fieldnames: list[str], rows: list[dict[str, str]]) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=fieldnames)
                writer.writeheader()
                writer.writerows(rows)

        replace_atomically(Path(self.metrics_file_path), write)

    def flushed_rows(self) -> int:
        """Write the rows logged so far; return how many the file holds."""
        self.save()
        return len(self._rows())

    def keep_first_rows(self, count: int) -> None:
        """Drop the file's rows after its first ``count`` (and any not yet written)."""
        self.metrics = []
        rows = self._rows()
        if len(rows) > count:
            self._rewrite(self.metrics_keys, rows[:count])


def _drop_partial_row(path: Path) -> None:
    """Cut ``path`` after its last whole line (a row ends with a newline); remove it if none is left."""
    try:
        with open(path, "rb+") as file:
            start = max(0, file.seek(0, os.SEEK_END) - (1 << 16))  # a row is far shorter than this
            file.seek(start)
            end = file.read().rfind(b"\n")
            if end < 0 and start > 0:
                return  # not rows of a CSV file: leave it
            file.truncate(keep := start + end + 1)
        if keep == 0:
            path.unlink()
    except OSError:
        pass  # a file that cannot be opened again was not written either


class AppendingCSVLogger(CSVLogger):
    """Writes ``<run dir>/metrics.csv``; a resumed run appends to the same file.

    A checkpoint records how many rows the file held (:meth:`flushed_rows`); a run resumed
    from it first drops the rows written after it (:meth:`keep_first_rows`), since it
    writes them again.
    """

    def __init__(self, run_dir: Path):
        super().__init__(save_dir=run_dir, name="", version="")

    @property
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            with writing(Path(self.root_dir)):
                self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def finalize(self, status: str) -> None:
        try:
            super().finalize(status)
        except ResultsWriteError:
            if status != "failed":
                raise
            # The run stops for another error, which is reported; rows not written are those
            # after its last checkpoint, which a resumed run writes again.

    def flushed_rows(self) -> int:
        return self.experiment.flushed_rows()

    def keep_first_rows(self, count: int) -> None:
        self.experiment.keep_first_rows(count)


def wandb_run_id(run_dir: Path) -> str:
    """A W&B run id fixed by the run directory, so a resumed run continues the same W&B run."""
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


def wandb_mode(cfg: LoggerConfig) -> str:
    """``$WANDB_MODE`` if set; online when a W&B sweep agent launched this run (so the sweep
    sees its metrics) unless ``logger.mode=disabled``; else ``logger.mode``."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_SWEEP_ID") and cfg.mode is WandbMode.offline:
        return WandbMode.online.value
    return cfg.mode.value


def build_loggers(cfg: LoggerConfig, run_dir: Path, run_name: str, run_config: dict) -> list[Logger]:
    """The CSV logger, and with ``logger=wandb`` a W&B logger that records ``run_config``
    (the resolved config, the same on every rank: sweep values arrive as command-line
    overrides and are never read back from ``wandb.config``)."""
    loggers: list[Logger] = [AppendingCSVLogger(run_dir)]
    if cfg.name is LoggerKind.wandb:
        loggers.append(
            WandbLogger(
                project=cfg.project,
                entity=cfg.entity,
                name=run_name,
                save_dir=str(run_dir),
                # A sweep agent chooses the run id itself (WANDB_RUN_ID); otherwise fix it
                # by the run directory so a resumed run logs into the same W&B run.
                id=None if "WANDB_RUN_ID" in os.environ else wandb_run_id(run_dir),
                resume="allow",
                mode=wandb_mode(cfg),
                config=run_config,
            )
        )
    return loggers
