"""The settings of training: ``optim.*`` (optimizer, schedule, KL weighting), ``trainer.*`` and ``logger.*``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from vaelab.errors import ConfigError
from vaelab.config.schema.fields import _help, _require


class OptimizerKind(str, Enum):
    adam = "adam"
    adagrad = "adagrad"
    sgd = "sgd"


class LRSchedule(str, Enum):
    constant = "constant"
    burda = "burda"


@dataclass
class OptimConfig:
    name: OptimizerKind = _help("optimizer (torch.optim)", OptimizerKind.adam)
    lr: float = _help("learning rate", 1e-3)
    weight_decay: float = _help("L2 penalty (as in torch.optim)", 0.0)
    betas: list[float] = _help("Adam's decay rates of the moment estimates", [0.9, 0.999])
    eps: float = _help("Adam's epsilon", 1e-8)
    kl_warmup_epochs: float = _help(
        "the KL weight rises linearly from 0 to model.beta over this many epochs, updated every step (0: off)", 0.0
    )
    kl_cycles: int = _help(
        "cyclical KL annealing (Fu et al. 2019): M cycles over the run's steps, in each the KL weight rises "
        "linearly from 0 to model.beta, then stays there; updated every step (0: off; not with kl_warmup_epochs)", 0,
    )
    kl_cycle_ratio: float = _help("R of cyclical KL annealing: the fraction of each cycle spent rising", 0.5)
    schedule: LRSchedule = _help(
        "constant, or burda: lr * 10^(-i/7) for 3^i epochs, i = 0..7 (Burda et al. section 5; 3280 epochs)",
        LRSchedule.constant,
    )

    def __post_init__(self) -> None:
        _require(self.lr > 0, "optim.lr", self.lr, "a learning rate > 0")
        _require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a value >= 0")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas", self.betas, "two values in [0, 1)")
        _require(self.eps > 0, "optim.eps", self.eps, "a value > 0")
        warmup = self.kl_warmup_epochs
        _require(warmup >= 0 and math.isfinite(warmup), "optim.kl_warmup_epochs", warmup, "a number of epochs >= 0")
        _require(self.kl_cycles >= 0, "optim.kl_cycles", self.kl_cycles, "an integer >= 0")
        _require(0 < self.kl_cycle_ratio <= 1, "optim.kl_cycle_ratio", self.kl_cycle_ratio, "a fraction in (0, 1]")
        if self.kl_cycles > 0 and warmup > 0:
            raise ConfigError(
                "optim.kl_cycles and optim.kl_warmup_epochs are two schedules of the KL weight: set one of them to 0"
            )


class AcceleratorKind(str, Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"
    cuda = "cuda"
    mps = "mps"


@dataclass
class TrainerConfig:
    """Keys marked ``lightning=True`` are passed to ``pl.Trainer`` as they are (a new
    Trainer option needs only a field here and a line in configs/trainer/*.yaml); the
    others are vaelab's training loop's own."""

    max_epochs: int = _help("number of training epochs", 50, lightning=True)
    max_time: Optional[str] = _help(
        "also stop training after this wall time, DD:HH:MM:SS (Lightning's max_time; for runs compared at equal "
        "time: where it stops depends on the machine); null: off", None, lightning=True,
    )
    accelerator: AcceleratorKind = _help("Lightning accelerator (auto: a GPU if there is one)", AcceleratorKind.auto, lightning=True)
    devices: int = _help("devices (GPUs or CPU processes) per node; -1: every GPU", 1, lightning=True)
    num_nodes: int = _help("number of nodes", 1, lightning=True)
    strategy: str = _help("Lightning strategy: auto, ddp, ...", "auto", lightning=True)
    precision: str = _help("Lightning precision, e.g. 32-true or bf16-mixed", "32-true", lightning=True)
    limit_val_batches: Optional[int] = _help(
        "validate on at most this many batches (null: all; 0: no validation)", None, lightning=True
    )
    limit_test_batches: Optional[int] = _help("test on at most this many batches (null: all)", None, lightning=True)
    gradient_clip_val: Optional[float] = _help("clip gradient norm to this value (null: off)", None)
    skip_threshold: Optional[float] = _help(
        "skip an update whose gradient norm (before clipping) reaches this value or is not finite, counted in "
        "metrics.csv as train/skipped_updates (VDVAE, Child 2021; null: off)", None,
    )
    limit_train_batches: Optional[int] = _help("train on at most this many minibatches per epoch (null: all)", None)
    log_every_n_steps: int = _help("log the training bound every n optimizer steps", 50)
    progress_bar: bool = _help(
        "true: a bar of the epoch's optimizer steps when stdout is a terminal; either way one line "
        "per epoch (and only those, without carriage returns, in files and pipes); false: the lines only", True,
    )
    steps_per_call: int = _help(
        "optimizer steps per Lightning training_step call: Lightning's per-call work is shared by them; "
        "the numbers do not depend on it", 50,
    )
    compile: Optional[bool] = _help(
        "torch.compile the bound and its gradient (CUDA: as a CUDA graph); null: when the run is long "
        "enough to repay the compile time", None,
    )
    deterministic: bool = _help(
        "torch.use_deterministic_algorithms: needed for bitwise-equal runs and resumes on CUDA", False, lightning=True,
    )
    checkpoint_every_n_steps: Optional[int] = _help(
        "also write last.ckpt within an epoch every n optimizer steps (rounded up to whole calls; null: off)", None
    )
    checkpoint_every_minutes: Optional[float] = _help(
        "also write last.ckpt within an epoch every this many minutes of training (null: off); "
        "a kill loses at most this much work", 10.0,
    )

    early_stop_patience: Optional[int] = _help(
        "stop when val/elbo has not improved for this many epochs (Lightning's EarlyStopping; null: off; "
        "needs data.val_size > 0)", None,
    )

    def __post_init__(self) -> None:
        _require(self.max_epochs >= 1, "trainer.max_epochs", self.max_epochs, "an integer >= 1")
        _require(self.devices >= 1 or self.devices == -1, "trainer.devices", self.devices, "an integer >= 1, or -1")
        _require(self.num_nodes >= 1, "trainer.num_nodes", self.num_nodes, "an integer >= 1")
        _require(self.log_every_n_steps >= 1, "trainer.log_every_n_steps", self.log_every_n_steps, "an integer >= 1")
        _require(self.steps_per_call >= 1, "trainer.steps_per_call", self.steps_per_call, "an integer >= 1")
        every_n, minutes = self.checkpoint_every_n_steps, self.checkpoint_every_minutes
        _require(every_n is None or every_n >= 1, "trainer.checkpoint_every_n_steps", every_n, "null or an integer >= 1")
        _require(minutes is None or minutes > 0, "trainer.checkpoint_every_minutes", minutes, "null or a number > 0")
        for key in ("limit_train_batches", "limit_test_batches", "early_stop_patience"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"trainer.{key}", value, "null or an integer >= 1")
        val = self.limit_val_batches
        _require(val is None or val >= 0, "trainer.limit_val_batches", val, "null or an integer >= 0")
        clip = self.gradient_clip_val
        _require(clip is None or clip > 0, "trainer.gradient_clip_val", clip, "null or a value > 0")
        skip = self.skip_threshold
        _require(skip is None or skip > 0, "trainer.skip_threshold", skip, "null or a gradient norm > 0")
        if skip is not None and self.precision.startswith("16"):
            raise ConfigError(
                f"trainer.skip_threshold reads the gradient's norm, which trainer.precision={self.precision} scales: "
                "use 32-true or bf16-mixed, or trainer.skip_threshold=null"
            )


class LoggerKind(str, Enum):
    csv = "csv"
    wandb = "wandb"


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class LoggerConfig:
    name: LoggerKind = _help("csv: metrics.csv; wandb: metrics.csv and Weights & Biases", LoggerKind.csv)
    project: str = _help("W&B project", "vaelab")
    entity: Optional[str] = _help("W&B entity (team or user); null: your default", None)
    mode: WandbMode = _help("W&B mode (the environment variable WANDB_MODE wins)", WandbMode.offline)
