"""What a fit prints while it trains: the model's parts, one line per epoch, a progress bar of
optimizer steps on a terminal, and none of Lightning's messages a user can do nothing about.

On a terminal (``trainer.progress_bar=true``) a bar of the epoch's optimizer steps runs below the
epoch lines; elsewhere (SLURM ``.out`` files, ``| tee``, a sweep's output.log) there are only
the lines, without a carriage return. Only rank zero prints.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from tqdm import tqdm

from vaelab.models.vae import VAE
from vaelab.registry import part_name
from vaelab.training.clock import TrainingClock

# Lightning's and torch's log records that say nothing about this run a user could act on
# (logger name -> messages, by their start): vaelab prints its own device line and results.
NOISE_RECORDS = {
    "rank_zero": (
        "💡 Tip: For seamless cloud logging",  # an advertisement
        "GPU available: ",  # the device line of TrainingReport says what is used
        "TPU available: ",
        "`Trainer.fit` stopped: `max_epochs=",  # the run ends as configured
        "Restoring states from the checkpoint path at ",  # the test of the best checkpoint
        "Loaded model weights from the checkpoint at ",
        "`Trainer(limit_",  # a limit the user set, echoed; the test's line says how many batches
        # vaelab keeps float32 matrix products exact, so that nats agree across devices
        "You are using a CUDA device (",
    ),
    "pytorch_lightning.accelerators.cuda": ("LOCAL_RANK: ",),  # every rank's CUDA_VISIBLE_DEVICES
    # a SIGTERM during the test, which vaelab reports in its own line (vaelab/training/interrupts.py)
    "pytorch_lightning.trainer.connectors.signal_connector": ("[rank: ",),
    "torch.utils.cpp_extension": ("No CUDA runtime is found",),  # torch.compile on a CPU-only machine
}
# torch's deprecation warnings about calls in Lightning's own code: (message start, module).
LIGHTNING_DEPRECATIONS = (
    ("`isinstance(treespec, LeafSpec)` is deprecated", r"pytorch_lightning\.utilities\._pytree"),
    ("torch.distributed.nn.functional.all_gather is deprecated", r"lightning_fabric\.utilities\.distributed"),  # DDP
)
RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def silence_lightning(one_process: bool, resuming: bool) -> None:
    """Drop :data:`NOISE_RECORDS`, :data:`LIGHTNING_DEPRECATIONS` and two warnings: the hint to
    use srun where it has nothing to launch (one process, or outside a SLURM allocation, where
    Lightning starts the processes itself), and for a resumed run (which goes on writing into its
    own checkpoints/) that the folder is not empty."""
    for name, starts in NOISE_RECORDS.items():
        for logger_name in RANK_ZERO_LOGGERS if name == "rank_zero" else (name,):
            logger = logging.getLogger(logger_name)
            if not any(isinstance(f, _DropMessages) for f in logger.filters):
                logger.addFilter(_DropMessages(starts))
    for message, module in LIGHTNING_DEPRECATIONS:
        warnings.filterwarnings("ignore", re.escape(message), FutureWarning, module)
    if one_process or "SLURM_JOB_ID" not in os.environ:
        warnings.filterwarnings("ignore", "The `srun` command is available on your system but is not used", PossibleUserWarning)
    if resuming:
        warnings.filterwarnings("ignore", r"Checkpoint directory .* exists and is not empty\.", UserWarning)


def say(line: str) -> None:
    """Print a line on stdout, above a progress bar if one is showing; flushed, for files."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def steps_per_epoch(trainer: pl.Trainer) -> int:
    """Optimizer steps of a training epoch: the loader's minibatches (several per Lightning
    call), or Lightning's count of calls for a loader of one batch per call."""
    loader = trainer.train_dataloader
    return getattr(loader, "minibatches", None) or int(trainer.num_training_batches)


def steps_into_epoch(trainer: pl.Trainer) -> int:
    """Optimizer steps done in the current epoch (a resumed run starts within one)."""
    per_epoch = steps_per_epoch(trainer)
    return min(max(trainer.global_step - trainer.current_epoch * per_epoch, 0), per_epoch)


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, counting the epoch's optimizer steps (``trainer.steps_per_call`` per
    Lightning call, fewer in an epoch's last call) in steps/s, with the latest step's bound.

    No bar for the sanity check and validation (seconds); none stays once it ends, since the
    epoch lines above it say what it said.
    """

    def __init__(self) -> None:
        super().__init__(leave=False)

    def _bar(self, desc: str, unit: str, total: int, initial: int = 0) -> Tqdm:
        return Tqdm(
            desc=desc, unit=unit, total=total, initial=initial, position=2 * self.process_position,
            disable=self.is_disabled, leave=False, dynamic_ncols=True, file=sys.stdout, smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def init_sanity_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_train_tqdm(self) -> Tqdm:
        return self._bar(epoch_of(self.trainer), " steps", steps_per_epoch(self.trainer), steps_into_epoch(self.trainer))

    def init_test_tqdm(self) -> Tqdm:
        return self._bar("test", " batches", sum(self.trainer.num_test_batches))

    @property
    def total_train_batches(self) -> int:
        return steps_per_epoch(self.trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: object) -> None:
        bar = self.train_progress_bar
        bar.set_description(epoch_of(trainer), refresh=False)
        bar.initial = 0
        bar.reset(total=self.total_train_batches)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: object) -> None:
        bar = self.train_progress_bar
        if self.is_enabled and not bar.disable:
            bar.n = steps_into_epoch(trainer)
            bar.set_postfix_str(step_bounds(trainer), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # the postfix is the latest step's bound; the epoch's line follows

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def on_test_batch_start(self, *_: object, **__: object) -> None:
        pass  # one test set, its bar made whole by init_test_tqdm


def epoch_of(trainer: pl.Trainer) -> str:
    return f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"


def step_bounds(trainer: pl.Trainer) -> str:
    """The bound of the latest logged training step (``train/elbo``: every trainer.log_every_n_steps)."""
    metrics = trainer.progress_bar_metrics
    return "  ".join(
        f"train {bound_label(key[len('train/'):])} {float(value):.2f}"
        for key, value in metrics.items()
        if key.startswith("train/") and not key.endswith("_epoch")
    )


def bound_label(name: str) -> str:
    """A logged bound's name as printed: elbo -> ELBO, iwae5 -> IWAE k=5, miwae2x5 -> MIWAE M=2 k=5."""
    grouped = re.fullmatch(r"([a-z]+)(\d+)x(\d+)", name)
    if grouped:
        return f"{grouped[1].upper()} M={grouped[2]} k={grouped[3]}"
    match = re.fullmatch(r"([a-z]+)(\d+)", name)
    return f"{match[1].upper()} k={match[2]}" if match else name.upper()


ELBO_TERMS = ("reconstruction", "kl")  # val/ terms of the ELBO: in metrics.csv, not on the epoch line


DIAGNOSTIC_LABELS = {"kl": "KL", "mi": "MI", "active_units": "active"}  # the collapse diagnostics' val/ names


def diagnostic_text(name: str, value: float) -> str | None:
    """A collapse diagnostic as printed (kl_z1 -> ``KL z1 3.69``, active_units_z2 -> ``active z2 4``);
    None for a bound."""
    if name == "recon":
        return f"recon {value:.2f}"
    match = re.fullmatch(r"(kl|mi|active_units)_(z\d+)", name)
    if match is None:
        return None
    number = f"{value:.0f}" if match[1] == "active_units" else f"{value:.2f}"
    return f"{DIAGNOSTIC_LABELS[match[1]]} {match[2]} {number}"


def epoch_line(trainer: pl.Trainer, epoch: int, step: int, seconds: float) -> str:
    """``epoch 3/10  step 1650  train ELBO -95.31  val ELBO -94.20 nats  time 12.3 s``: epochs
    done of all, optimizer steps done, the epoch's mean training bound, the validation bounds
    (and the tracked test ELBO) per image, the collapse diagnostics where they are on, training
    time so far (resumes included)."""
    metrics = trainer.callback_metrics
    train, val, test, diagnostics = [], [], [], []
    for key in sorted(metrics):
        prefix, _, name = key.partition("/")
        if prefix == "train" and name.endswith("_epoch"):
            train.append(f"train {bound_label(name[: -len('_epoch')])} {float(metrics[key]):.2f}")
        elif prefix == "val" and name in ELBO_TERMS:
            continue
        elif prefix == "val" and diagnostic_text(name, float(metrics[key])) is not None:
            diagnostics.append(diagnostic_text(name, float(metrics[key])))
        elif prefix == "val":
            val.append(f"val {bound_label(name)} {float(metrics[key]):.2f}")
        elif key == "curve/test_elbo":
            test.append(f"test ELBO {float(metrics[key]):.2f}")
    parts = [f"epoch {epoch + 1}/{trainer.max_epochs}", f"step {step}", *train, *val, *test]
    bounds = " nats" if len(parts) > 2 else ""
    diagnostics = "  " + " ".join(diagnostics) if diagnostics else ""
    return "  ".join(parts) + bounds + diagnostics + f"  time {seconds:.1f} s"


class TrainingReport(pl.Callback):
    """Prints (rank zero) the device and the model's parts once training starts, then one line
    per epoch (:func:`epoch_line`), and one line on what the test computes.

    An epoch's line is printed once the module has logged its mean bound, which it does after
    the callbacks' ``on_train_epoch_end``: at the next epoch's start, or when training ends.
    """

    def __init__(self) -> None:
        self._parts_due = True
        self._epoch_ended: tuple[int, int, float] | None = None  # epoch, step, seconds

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: object) -> None:
        # the first call: after the module's on_train_start, which counts a step's FLOP
        if self._parts_due and trainer.is_global_zero:
            for line in [device_line(trainer, pl_module), *parts_lines(pl_module.vae, getattr(pl_module, "step_flops", None))]:
                say(line)
        self._parts_due = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_ended = (trainer.current_epoch, trainer.global_step, training_seconds(trainer))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print_epoch_line(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print_epoch_line(trainer)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the default test takes minutes on a CPU: say so where there is no bar
        if trainer.is_global_zero:
            batches, e = sum(trainer.num_test_batches), pl_module.eval_cfg
            each = " each process" if trainer.world_size > 1 else ""
            say(f"test: {batches} batch{'es' if batches != 1 else ''} of up to {e.batch_size} images{each}, {e.ll_samples} importance samples per image")

    def _print_epoch_line(self, trainer: pl.Trainer) -> None:
        ended, self._epoch_ended = self._epoch_ended, None
        if ended is not None and trainer.is_global_zero:
            say(epoch_line(trainer, *ended))


def training_seconds(trainer: pl.Trainer) -> float:
    """The run's training time (its :class:`TrainingClock`, which counts earlier sessions too)."""
    clocks = [c for c in trainer.callbacks if isinstance(c, TrainingClock)]
    return clocks[0].seconds if clocks else 0.0


def device_line(trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
    device = pl_module.device
    name = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    processes = f"{trainer.world_size} processes" if trainer.world_size > 1 else "1 process"
    return f"device: {name}, {processes}, precision {trainer.precision}"


def model_parts(vae: VAE) -> list[tuple[str, int]]:
    """(part, parameters) for each part of the VAE; each parameter is counted once, in the
    first part that holds it, so the counts sum to the model's."""
    parts = vae.named_parts()
    counted: set[int] = set()
    rows = []
    for name, part in parts:
        params = [part] if isinstance(part, torch.nn.Parameter) else list(part.parameters())
        fresh = [p for p in params if id(p) not in counted]
        counted.update(id(p) for p in fresh)
        rows.append((name, sum(p.numel() for p in fresh)))
    rest = sum(p.numel() for p in vae.parameters() if id(p) not in counted)
    if rest:
        rows.append(("other", rest))
    return rows


def parts_lines(vae: VAE, step_flops: int | None = None) -> list[str]:
    """The model's parts with their parameter counts, the total, and a training step's FLOP."""
    rows = model_parts(vae)
    total = sum(count for _, count in rows)
    width = max(len(name) for name, _ in rows)
    lines = ["model parameters:"]
    lines += [f"  {name:<{width}}  {count:>12,}" for name, count in rows]
    lines.append(f"  {'total':<{width}}  {total:>12,}")
    if step_flops:
        lines.append(f"training step: {step_flops / 1e9:.3g} GFLOP (matrix products and convolutions, forward and backward)")
    return lines


def console_callbacks(progress_bar: bool) -> list[pl.Callback]:
    """The epoch lines and parts; with ``progress_bar`` and a terminal on stdout, the bar too."""
    report: list[pl.Callback] = [TrainingReport()]
    return [*report, StepProgressBar()] if progress_bar and sys.stdout.isatty() else report
