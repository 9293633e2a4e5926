"""``python -m vaelab.fit [group=option ...] [key=value ...]``: train, test, write results.

See ``--help``. Every user error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import math
import signal
import sys
import warnings
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from vaelab.config.compose import CommandLine, compose, compose_saved, parse_command_line, to_object
from vaelab.config.help import help_text
from vaelab.config.plain import to_plain
from vaelab.config.schema import Binarize, FitConfig, KLMode, TrainerConfig
from vaelab.training.slurm_requeue import SlurmRequeue
from vaelab.data import VAEDataModule, build_datamodule
from vaelab.errors import ConfigError, ResultsWriteError, run_command, warn
from vaelab.training.interrupts import SignalStop
from vaelab.models.module import VAEModule
from vaelab.objectives import objective_for
from vaelab.training.checkpoints import AtomicCheckpointIO
from vaelab.training.clock import TrainingClock
from vaelab.training.console import StepProgressBar, console_callbacks, silence_lightning
from vaelab.evaluation.pictures import image_grids, save_grids
from vaelab.training.rank_noise import seed_test_samples
from vaelab.training.resume import ExactResume, IntervalCheckpoint, SignalCheckpoint
from vaelab.training.loggers import build_loggers
from vaelab.training.run_dir import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    ConfigWriter,
    check_run_dir,
    choose_run_dir,
    exported_run_dir,
    find_resume_point,
    unwritable_run_dir_fix,
)
from vaelab.training.run_lock import one_writer
from vaelab.evaluation.protocol import BY_VALIDATION, LAST_EPOCH, protocol
from vaelab.evaluation.test_numbers import test_numbers
from vaelab.evaluation.summary import summary_lines, write_summary

RESUME_KEY = "run.resume="
# Lightning compares its count of training_step calls with log_every_n_steps; VAEModule
# logs by optimizer steps, several per call, so the comparison does not apply.
warnings.filterwarnings("ignore", "The number of training batches .* is smaller than the logging interval", PossibleUserWarning)
# What to lower when memory runs out outside a training, validation or test step.
MEMORY_SETTINGS = "model.k or data.batch_size (training), eval.chunk_size or eval.batch_size (test)"


def _trainer(cfg: FitConfig, run_dir: Path, callbacks: list[pl.Callback], loggers: list) -> pl.Trainer:
    t = cfg.trainer
    silence_lightning(one_process=t.devices == 1 and t.num_nodes == 1, resuming=bool(cfg.run.resume))
    try:
        return _lightning_trainer(t, run_dir, callbacks, loggers)
    except (MisconfigurationException, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        raise ConfigError(f"Lightning rejects the trainer settings: {reason} (see trainer.* in --help)") from error


def _lightning_trainer(t: TrainerConfig, run_dir: Path, callbacks: list[pl.Callback], loggers: list) -> pl.Trainer:
    plugins = [AtomicCheckpointIO()]  # every checkpoint renamed into place once whole
    if SLURMEnvironment.detect():  # requeue on SIGUSR1 by vaelab's handler, not Lightning's
        plugins.append(SLURMEnvironment(auto_requeue=False))
        # check for the signal about every 10 optimizer steps, or every call if calls are longer
        callbacks = [*callbacks, SlurmRequeue(every_n_steps=max(1, 10 // t.steps_per_call))]
    console = console_callbacks(t.progress_bar)  # the model's parts, epoch lines, a bar on a terminal
    return pl.Trainer(
        **lightning_arguments(t),
        plugins=plugins,
        default_root_dir=run_dir,
        # Lightning counts training_step calls, each of steps_per_call optimizer steps;
        # VAEModule logs the training bound itself every trainer.log_every_n_steps steps.
        log_every_n_steps=max(1, t.log_every_n_steps // t.steps_per_call),
        enable_progress_bar=any(isinstance(c, StepProgressBar) for c in console),
        enable_model_summary=False,  # the console's summary counts the VAE's parts instead
        callbacks=[*callbacks, *console],
        logger=loggers,
    )


def lightning_arguments(t: TrainerConfig) -> dict:
    """The ``trainer.*`` keys that are ``pl.Trainer`` arguments of the same name."""
    values = {f.name: getattr(t, f.name) for f in fields(t) if f.metadata["lightning"]}
    return {name: value.value if isinstance(value, Enum) else value for name, value in values.items()}


@dataclass
class Run:
    """Everything one fit needs, built from a composed config."""

    cfg: FitConfig
    run_dir: Path
    datamodule: VAEDataModule
    module: VAEModule
    trainer: pl.Trainer
    checkpoint: ModelCheckpoint
    clock: TrainingClock


def build_run(cfg_node: DictConfig) -> Run:
    """Seed, then build the data module, model, callbacks, loggers and trainer."""
    cfg = to_object(cfg_node)
    run_dir = choose_run_dir(cfg)
    cfg_node.run.dir = str(run_dir)
    _warn_about_the_data_and_objective(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    t = cfg.trainer
    datamodule = build_datamodule(
        cfg.data, cfg.seed, cfg.eval.batch_size, cfg.eval.track_test,
        steps_per_call=t.steps_per_call, limit_train_batches=t.limit_train_batches,
    )
    module = VAEModule(
        model=to_plain(cfg_node.model),
        optim=to_plain(cfg_node.optim),
        eval=to_plain(cfg_node.eval),
        data_dim=math.prod(datamodule.image_shape),
        image_shape=datamodule.image_shape,
        dynamic_binarization=cfg.data.binarize is Binarize.dynamic,
        compile=t.compile,
        gradient_clip_val=t.gradient_clip_val,
        skip_threshold=t.skip_threshold,
        log_every_n_steps=t.log_every_n_steps,
        prior=to_plain(cfg_node.prior),
        net=to_plain(cfg_node.net),
        posterior=to_plain(cfg_node.posterior),
        hierarchy=to_plain(cfg_node.hierarchy),
    )
    _warn_about_a_sampled_kl(cfg, module)
    callbacks, checkpoint, clock = _callbacks(cfg, cfg_node, run_dir)
    loggers = build_loggers(cfg.logger, run_dir, f"{run_dir.parent.name}/{run_dir.name}", to_plain(cfg_node))
    trainer = _trainer(cfg, run_dir, callbacks, loggers)
    return Run(cfg, run_dir, datamodule, module, trainer, checkpoint, clock)


def _warn_about_the_data_and_objective(cfg: FitConfig) -> None:
    """One warning for each setting that trains but whose numbers a user could misread."""
    note = cfg.data.source.static_binarization_note
    if note and cfg.data.binarize is Binarize.static:
        rank_zero_warn(note)
    if cfg.model.likelihood.binary_data and not cfg.data.binary:
        rank_zero_warn(
            "model=bernoulli on continuous data: the Bernoulli log-likelihood of grey levels is not a "
            "normalised density, so its nats are not comparable with published ones"
        )
    objective_warning = objective_for(cfg.model).warning()
    if objective_warning:
        rank_zero_warn(objective_warning)


def _warn_about_a_sampled_kl(cfg: FitConfig, module: VAEModule) -> None:
    """model.kl=analytic where the built model has no closed-form KL: say that it is sampled."""
    if cfg.model.kl is KLMode.analytic and not module.vae.prior.has_closed_form_kl:
        rank_zero_warn(
            f"prior={cfg.prior.name} has no closed-form KL to the posterior: the ELBO samples "
            "log p(z) - log q(z|x) (as model.kl=mc does), in training and validation"
        )
    elif cfg.model.kl is KLMode.analytic and not module.vae.has_closed_form_kl:
        rank_zero_warn(
            f"posterior={cfg.posterior.name} (a flow) has no closed-form KL to the prior: the ELBO samples "
            "log p(z) - log q(z|x) with every log-determinant (as model.kl=mc does), in training and validation"
        )


def _callbacks(cfg: FitConfig, cfg_node: DictConfig, run_dir: Path) -> tuple[list, ModelCheckpoint, TrainingClock]:
    """The callbacks of a fit: config.yaml, the best and last checkpoints, checkpoints within an
    epoch and on a signal, exact resume, the clock, early stopping; and the two the run keeps."""
    t = cfg.trainer
    validates = cfg.data.val_size > 0 and t.limit_val_batches != 0  # else no val/elbo to pick by
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename="best-epoch{epoch}" if validates else "epoch{epoch}",
        auto_insert_metric_name=False,
        monitor="val/elbo" if validates else None,
        mode="max",
        save_last=True,
        # Overwrite last.ckpt rather than add last-v1.ckpt when a run directory is reused
        # (resumed after a move, or requeued), so run.resume always finds the newest.
        enable_version_counter=False,
    )
    within_epoch = IntervalCheckpoint(
        run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT, t.checkpoint_every_n_steps, t.checkpoint_every_minutes
    )
    on_signal = SignalCheckpoint(run_dir, run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT)  # Ctrl-C, SIGTERM
    clock = TrainingClock()
    callbacks = [ConfigWriter(run_dir, cfg_node), checkpoint, within_epoch, on_signal, ExactResume(cfg.seed), clock]
    if t.early_stop_patience is not None:
        if not validates:
            raise ConfigError(
                "trainer.early_stop_patience needs a validation split to watch: set data.val_size > 0 "
                "(and trainer.limit_val_batches != 0), or trainer.early_stop_patience=null"
            )
        # after each validation, on the same bound the best checkpoint is picked by
        callbacks.append(EarlyStopping("val/elbo", patience=t.early_stop_patience, mode="max", check_on_train_epoch_end=False))
    return callbacks, checkpoint, clock


def fit(cfg_node: DictConfig, resume_checkpoint: Path | None = None) -> dict:
    """Train, test on the best checkpoint, write pictures and ``summary.json``; return the summary.

    Ctrl-C or SIGTERM stops it with :class:`vaelab.training.interrupts.Interrupted`: during training after
    a checkpoint where the run resumes exactly (vaelab/training/interrupts.py)."""
    with SignalStop():
        return fit_run(build_run(cfg_node), resume_checkpoint)


def fit_run(run: Run, resume_checkpoint: Path | None = None) -> dict:
    """:func:`fit` for a run already built (tests and benchmarks add callbacks to it).

    An OS fault writing the run directory, found before the data are read or met later, is
    one :class:`ResultsWriteError` that says what to do and which checkpoint is kept."""
    try:
        with one_writer(run.run_dir, run.trainer.is_global_zero):  # before any rank starts
            if run.trainer.is_global_zero:
                check_run_dir(run.run_dir)  # a bad run.dir fails in a second, not after an epoch
            return _fit(run, resume_checkpoint)
    except ResultsWriteError as error:
        _stop_other_ranks(run.trainer)
        raise error.with_fix(unwritable_run_dir_fix(error, run.run_dir, resume_checkpoint is not None)) from error


def _stop_other_ranks(trainer: pl.Trainer) -> None:
    """Kill the DDP processes this one started (as Lightning does on Ctrl+C): they would
    wait for it in a collective until the process group's timeout."""
    if isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        trainer.strategy.launcher.kill(signal.SIGKILL)


def _fit(run: Run, resume_checkpoint: Path | None) -> dict:
    cfg, trainer, checkpoint = run.cfg, run.trainer, run.checkpoint
    with exported_run_dir(run.run_dir):
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=resume_checkpoint)
    best = checkpoint.best_model_path or checkpoint.last_model_path
    layer_kls = _validated_layer_kls(trainer, len(run.module.vae.latent_dims))  # testing clears them
    seed_test_samples(cfg.seed, trainer.global_rank, trainer.world_size)  # in one process, vaelab.evaluate's samples
    tested = trainer.test(run.module, datamodule=run.datamodule, ckpt_path=best, verbose=False)[0]
    per_image = run.module.test_per_image
    summary = {
        "run_dir": str(run.run_dir),
        **test_numbers(
            tested["test/ll"], tested["test/elbo"], cfg.eval.ll_samples, run.module.vae.data_dim, cfg.model.likelihood,
            cfg.data.binary, per_image.get("ll"), per_image.get("ess"), per_image.get("pareto_k"),
        ),
        "protocol": protocol(
            cfg, run.datamodule, BY_VALIDATION if checkpoint.best_model_score is not None else LAST_EPOCH,
            _scored_images(run.module.test_per_image), run.datamodule.source.binary,
        ),
        "epochs": trainer.current_epoch,
        "train_seconds": run.clock.seconds,
        "best_checkpoint": best,
        "best_val_elbo": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "steps": trainer.global_step,
        "world_size": trainer.world_size,
        "model": cfg.model.decoder,
        "prior": cfg.prior.name,
        "net": cfg.net.name,
        "posterior": cfg.posterior.name,
        "hierarchy": cfg.hierarchy.name,
        "val_kl": "analytic" if run.module.vae.has_closed_form_kl else "mc",
        "val_kl_per_layer": layer_kls,
        "data": cfg.data.name,
        "seed": cfg.seed,
    }
    try:
        _write_results(run, summary)
    finally:  # rank 0 reaches the barrier too if it fails writing, so no rank waits for it
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            trainer.strategy.barrier("vaelab-results")
            torch.distributed.destroy_process_group()  # a clean exit for every rank (gloo aborts otherwise)
    return summary


def _validated_layer_kls(trainer: pl.Trainer, layers: int) -> list[float] | None:
    """The last validation's KL term of each layer, z_1 first (eval.collapse_diagnostics; else None)."""
    logged = trainer.callback_metrics
    names = [f"val/kl_z{layer}" for layer in range(1, layers + 1)]
    return [float(logged[name]) for name in names] if all(name in logged for name in names) else None


def _scored_images(per_image: dict) -> int:
    return 0 if per_image.get("ll") is None else len(per_image["ll"])


@rank_zero_only
def _write_results(run: Run, summary: dict) -> None:
    run.module.eval()
    data = run.datamodule
    grids = image_grids(run.module.vae, data.test_data, data.image_shape, run.cfg.eval.num_images, run.cfg.seed)
    paths = save_grids(grids, run.run_dir)
    summary["images"] = {name: str(path) for name, path in paths.items()}
    write_summary(run.run_dir, summary)
    for logger in run.trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key="pictures", images=list(grids.values()), caption=list(grids))
            logger.experiment.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # flush now: the next fit in this process is a new run
    for line in summary_lines(summary):
        print(line)


def compose_fit(line: CommandLine) -> tuple[Path | None, DictConfig]:
    """The checkpoint to continue from (``run.resume=``, else None) and the checked config of
    a command line; ``vaelab.train`` composes its words here too."""
    resume = [w[len(RESUME_KEY):] for w in line.overrides if w.startswith(RESUME_KEY)]
    if resume and resume[-1] not in ("", "null"):
        checkpoint, saved = find_resume_point(resume[-1])
        cfg_node = compose_saved(saved, line, keeps="a resumed run keeps its saved config")
    else:
        checkpoint, cfg_node = None, compose(line)
    to_object(cfg_node)
    return checkpoint, cfg_node


def run(words: list[str]) -> int:
    line = parse_command_line(words)
    if line.flags & {"--help", "-h"}:
        print(help_text())
        return 0
    checkpoint, cfg_node = compose_fit(line)
    if "--cfg" in line.flags:
        print(OmegaConf.to_yaml(cfg_node), end="")
        return 0
    fit(cfg_node, checkpoint)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("vaelab.fit", run, argv, memory_settings=MEMORY_SETTINGS)


if __name__ == "__main__":
    sys.exit(main())
