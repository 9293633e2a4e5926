"""Training wall time that survives resuming: kept in the checkpoint."""

import time

import pytorch_lightning as pl


class TrainingClock(pl.Callback):
    """Seconds spent in ``trainer.fit`` over all sessions of a run (resumes included)."""

    def __init__(self) -> None:
        self.seconds_before = 0.0
        self._started: float | None = None

    @property
    def seconds(self) -> float:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.seconds_before + running

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds_before, self._started = self.seconds, None

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seconds_before = state_dict["seconds"]
