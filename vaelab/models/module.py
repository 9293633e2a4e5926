"""The LightningModule that trains a :class:`VAE` and reports its bounds in nats per example."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from vaelab.config.plain import from_plain, net_of_older_run
from vaelab.config.schema import (
    EvalConfig, HierarchyConfig, KLMode, ModelConfig, NetConfig, OptimConfig, PosteriorConfig, PriorConfig,
)
from vaelab.errors import ConfigError, TrainingDivergedError
from vaelab.models.collapse import DIAGNOSTIC_SEED, CollapseDiagnostics, batch_diagnostics
from vaelab.models.compiled import (
    CompiledForBatchSize,
    importance_estimates,
    should_compile,
    should_compile_estimates,
    training_step_flops,
)
from vaelab.models.optim import build_optimizer, build_schedule, cyclical_kl_weight, kl_weight
from vaelab.models.hierarchies import HIERARCHIES
from vaelab.models.vae import VAE
from vaelab.objectives import objective_for
from vaelab.objectives.objective import elbo_terms_of
from vaelab.probability import objectives
from vaelab.training.updates import GradientUpdate

# Where a checkpoint keeps the running sums of the epoch it was taken in.
EPOCH_SUMS_KEY = "vaelab_epoch_sums"
SKIPPED_UPDATES_KEY = "vaelab_skipped_updates"  # the run's count of skipped updates (trainer.skip_threshold)
# Parameter names of checkpoints written before the VAE was built from parts -> today's.
RENAMED_PARAMETERS = {
    "vae.priors.": "vae.generative_layers.",
    "vae.decoder.logits.": "vae.decoder.likelihood.logits.",
    "vae.decoder.mean_head.": "vae.decoder.likelihood.mean_head.",
    "vae.decoder.var_head.": "vae.decoder.likelihood.var_head.",
    "vae.decoder.fixed_log_var": "vae.decoder.likelihood.fixed_log_var",
}


def renamed_state_dict(state_dict: dict) -> dict:
    """A state dict with the parameter names of older checkpoints (:data:`RENAMED_PARAMETERS`) made today's."""
    renamed = {}
    for name, value in state_dict.items():
        for old, new in RENAMED_PARAMETERS.items():
            if name.startswith(old):
                name = new + name[len(old):]
                break
        renamed[name] = value
    return renamed


class VAEModule(pl.LightningModule):
    """Maximises the configured bound; validates on the ELBO; tests log p(x) by importance sampling.

    Arguments are plain dicts (YAML-able) so that ``VAEModule.load_from_checkpoint`` can
    rebuild the model from a checkpoint alone.

    Training takes one optimizer step per minibatch, several minibatches per Lightning
    ``training_step`` call (the loader groups them: ``trainer.steps_per_call``), so that
    Lightning's per-call work is shared by many small steps; the numbers are those of one
    step per call. ``compile`` (True, False or None for auto) compiles the bound and its
    gradient; ``gradient_clip_val`` clips the gradient's norm; ``log_every_n_steps`` sets how often the step's bound is logged.
    """

    def __init__(
        self,
        model: dict,
        optim: dict,
        eval: dict,
        data_dim: int,
        image_shape: tuple[int, ...],
        dynamic_binarization: bool = False,
        compile: bool | None = False,
        gradient_clip_val: float | None = None,
        log_every_n_steps: int = 50,
        skip_threshold: float | None = None,
        prior: dict | None = None,
        net: dict | None = None,
        posterior: dict | None = None,
        hierarchy: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False  # training_step takes its own optimizer steps
        self.model_cfg = from_plain(ModelConfig, model)
        self.optim_cfg = from_plain(OptimConfig, optim)
        self.eval_cfg = from_plain(EvalConfig, eval)
        # checkpoints from before the prior, net and posterior groups have none: N(0, I), MLPs, a Gaussian q
        prior_cfg, net_cfg = from_plain(PriorConfig, prior or {}), from_plain(NetConfig, net_of_older_run(net or {}, model))
        posterior_cfg = from_plain(PosteriorConfig, posterior or {})
        hierarchy_cfg = from_plain(HierarchyConfig, hierarchy or {})  # older checkpoints: bottom-up
        hierarchy_class = HIERARCHIES[hierarchy_cfg.name]
        self.vae = hierarchy_class(self.model_cfg, tuple(image_shape), prior_cfg, net_cfg, posterior_cfg, hierarchy_cfg)
        self.objective = objective_for(self.model_cfg)
        self._gradients = GradientUpdate(gradient_clip_val, skip_threshold)
        self.objective.check_model(self.vae, f"prior={prior_cfg.name} with posterior={posterior_cfg.name}")
        self.vae.check_training(self.model_cfg)
        # Means over every evaluated example, reduced exactly across DDP ranks (sums and counts).
        self.val_elbo, self.val_bound, self.curve_test_elbo = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_reconstruction, self.val_kl = MeanMetric(), MeanMetric()  # the validation ELBO's two terms
        self.test_ll, self.test_elbo = MeanMetric(), MeanMetric()
        # eval.collapse_diagnostics: none of their metrics (and no draw of theirs) otherwise
        self.collapse: CollapseDiagnostics | None = None
        if self.eval_cfg.collapse_diagnostics:
            self.collapse = CollapseDiagnostics(self.vae.latent_dims, mutual_information=self.vae.first_posterior_gaussian)
        self._diagnostic_generator: torch.Generator | None = None
        self._step_loss = self._loss_and_bound_sum
        self._bound_sum: Tensor | None = None  # the epoch's training bound, summed on the device
        self._term_sums: Tensor | None = None  # ... and its reconstruction and KL terms, [2]
        self._examples = 0  # ... over this many examples
        self._check_due = False  # a step was logged since the last NaN check
        self._restored_sums: dict | None = None  # those three, from a checkpoint taken mid-epoch
        self.step_flops: int | None = None  # a training step's FLOP, counted when training starts
        self.test_per_image: dict[str, Tensor | None] = {}  # L_S, ESS, Pareto k-hat of every test image
        self._test_chunks: list[tuple[Tensor, Tensor, Tensor | None]] = []

    def configure_optimizers(self):
        optimizer = build_optimizer(self.optim_cfg, self.parameters())
        schedule = build_schedule(self.optim_cfg, optimizer)
        if schedule is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def on_train_start(self) -> None:
        loader = self.trainer.train_dataloader
        steps_ahead = (self.trainer.max_epochs - self.current_epoch) * loader.minibatches
        self.step_flops = step_flops = training_step_flops(self.vae, loader.batch_size)
        if should_compile(self.hparams.compile, self.device, steps_ahead, step_flops):
            self._step_loss = CompiledForBatchSize(self._loss_and_bound_sum, loader.batch_size, self.device)
        plugin = self.trainer.precision_plugin
        self._direct = isinstance(self.trainer.strategy, SingleDeviceStrategy) and getattr(plugin, "scaler", None) is None
        # model.beta; during a warm-up or cycles (optim.kl_warmup_epochs, kl_cycles) refilled every step. None:
        # weight 1 throughout, where the loss is the bound itself (fewer operations).
        beta, warmup, cycles = self.model_cfg.beta, self.optim_cfg.kl_warmup_epochs, self.optim_cfg.kl_cycles
        scheduled = warmup > 0 or cycles > 0
        self._kl_weight = None if beta == 1 and not scheduled else torch.full((), beta, device=self.device)
        self._total_steps = self.trainer.max_epochs * loader.minibatches  # T of the cyclical schedule
        # A run resumed mid-epoch skips on_train_epoch_start: it goes on with the sums it saved.
        restored, self._restored_sums = self._restored_sums, None
        self.on_train_epoch_start()
        if restored is None:
            return
        per_rank = restored["bound_sum"].reshape(-1)
        if len(per_rank) != self.trainer.world_size:
            rank_zero_warn(
                f"the checkpoint was written by {len(per_rank)} processes and this run has {self.trainer.world_size}: "
                "the mean training bound of the resumed epoch covers only its steps after the resume"
            )
            return
        self._bound_sum = per_rank[self.global_rank].to(self.device)
        if "term_sums" in restored:  # checkpoints from before the terms were logged restart their sums here
            self._term_sums = restored["term_sums"][self.global_rank].to(self.device)
        self._examples, self._check_due = restored["examples"], restored["check_due"]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the epoch's running sums, so that a run resumed mid-epoch reports the same
        epoch mean as one never interrupted."""
        if self._bound_sum is None:
            return
        # Every rank saves the checkpoint together; each has its own sum ([world size] here).
        per_rank = self.all_gather(self._bound_sum).reshape(-1).cpu().clone()
        if not bool(torch.isfinite(per_rank).all()):
            raise self._diverged()
        term_sums = self.all_gather(self._term_sums).reshape(-1, 2).cpu().clone()  # [world size, 2]
        checkpoint[SKIPPED_UPDATES_KEY] = self._gradients.skipped
        checkpoint[EPOCH_SUMS_KEY] = {
            "bound_sum": per_rank, "term_sums": term_sums, "examples": self._examples, "check_due": self._check_due,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Runs before the state dict is loaded, by ``load_from_checkpoint`` and by a resume alike."""
        self._restored_sums = checkpoint.get(EPOCH_SUMS_KEY)
        self._gradients.skipped = checkpoint.get(SKIPPED_UPDATES_KEY, 0)
        checkpoint["state_dict"] = renamed_state_dict(checkpoint["state_dict"])

    def on_train_epoch_start(self) -> None:
        self._bound_sum = torch.zeros((), device=self.device)
        self._term_sums = torch.zeros(2, device=self.device)  # reconstruction, KL
        self._examples = 0
        self._check_due = False

    def _loss_and_bound_sum(self, x: Tensor, kl_weight: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The configured estimator's loss with this KL weight (a 0-dim tensor, so that a
        compiled step does not recompile when it changes; None for 1), the sum of the true
        bounds, and the sums of the reconstruction and KL terms ([2])."""
        loss, bound, terms = self.objective.loss_bound_and_terms(self.vae, x, kl_weight)
        return loss, bound.sum(), terms.sum(1)

    def training_step(self, minibatches: list[Tensor], batch_idx: int) -> None:
        """One optimizer step per minibatch: x ~ Bernoulli(grey levels) under dynamic
        binarization, the estimator's loss at this step's KL weight, its gradient, clipping,
        the update. The logged bound is the true one (weight 1), next to the weight in force.
        Logging costs no per-step work: the epoch's sum stays on the device until the epoch ends."""
        optimizer = self.optimizers()
        update = self._update_directly if self._direct else self._update_through_lightning
        binarize, every = self.hparams.dynamic_binarization, self.hparams.log_every_n_steps
        per_epoch = max(self.trainer.train_dataloader.minibatches, 1)
        beta, warmup, optim = self.model_cfg.beta, self.optim_cfg.kl_warmup_epochs, self.optim_cfg
        step, logged, weight = self.global_step, None, beta
        for x in minibatches:
            if binarize:
                x = torch.bernoulli(x)
            if warmup > 0:
                weight = kl_weight(beta, warmup, step / per_epoch)
                self._kl_weight.fill_(weight)  # on the device, without a host-to-device copy
            elif optim.kl_cycles > 0:
                weight = cyclical_kl_weight(beta, optim.kl_cycles, optim.kl_cycle_ratio, step, self._total_steps)
                self._kl_weight.fill_(weight)
            loss, bound_sum, term_sums = self._step_loss(x, self._kl_weight)
            update(optimizer, loss)
            step += 1
            self._bound_sum += bound_sum
            self._term_sums += term_sums
            self._examples += len(x)
            if step % every == 0:
                logged = bound_sum / len(x)
                reconstruction, kl = (term_sums / len(x)).tolist()
                metrics = {f"train/{self._bound_name()}": logged.item(), "train/kl_weight": weight,
                           "train/reconstruction": reconstruction, "train/kl": kl}
                if self._gradients.skip_threshold is not None:
                    metrics["train/skipped_updates"] = self._gradients.skipped
                self._log_step(step - 1, {**metrics, "epoch": self.current_epoch})
        epoch_loop = self.trainer.fit_loop.epoch_loop
        if self._direct:  # count the steps Lightning's optimizer wrapper did not see
            progress = epoch_loop.manual_optimization.optim_step_progress
            for _ in minibatches:
                progress.increment_ready()
                progress.increment_completed()
        # Lightning counts one batch per call; its logs and checkpoints count optimizer steps.
        epoch_loop._batches_that_stepped += len(minibatches) - 1
        if logged is not None:
            self.log(f"train/{self._bound_name()}", logged, prog_bar=True, logger=False)
        self._check_due = self._check_due or logged is not None

    def _update_through_lightning(self, optimizer: LightningOptimizer, loss: Tensor) -> None:
        """zero_grad, backward, clip, step (unless skipped: :mod:`vaelab.training.updates`)
        through Lightning's hooks, which DDP (gradient synchronisation) and fp16 (loss scaling) need."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        norm = self._gradients.norm_before_clipping(self.parameters())
        if self.hparams.gradient_clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val)
        if not self._gradients.skips(norm):
            optimizer.step()

    def _update_directly(self, optimizer: LightningOptimizer, loss: Tensor) -> None:
        """The same update on the torch optimizer itself, for one device without loss
        scaling: Lightning's hooks would cost more than a small step's arithmetic."""
        optimizer = optimizer.optimizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self._gradients.idle:  # no parameter list to build in the common step
            optimizer.step()
            return
        norm = self._gradients.clip_directly(list(self.parameters()))
        if not self._gradients.skips(norm):
            optimizer.step()

    def _log_step(self, step: int, metrics: dict) -> None:
        """Write one row of step metrics at optimizer step ``step`` (numbered from 0)."""
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)
            logger.save()

    def on_train_batch_end(self, outputs: object, batch: list[Tensor], batch_idx: int) -> None:
        """Stop with a clear error once the loss is NaN/inf, checked without a per-step sync.

        The check runs after the calls that logged a step (every ``log_every_n_steps``) and
        after the epoch's last call, so always before validation; a checkpoint taken within
        an epoch checks too (:meth:`on_save_checkpoint`), so no checkpoint holds a diverged run.
        """
        last = batch_idx + 1 >= self.trainer.num_training_batches
        if not (last or self._check_due):
            return
        self._check_due = False
        # Every DDP rank takes the same decision, so all stop together instead of waiting.
        diverged = self.trainer.strategy.reduce_boolean_decision(not torch.isfinite(self._bound_sum), all=False)
        if diverged:
            raise self._diverged()

    def _diverged(self) -> TrainingDivergedError:
        return TrainingDivergedError(
            f"the training loss became NaN or infinite in epoch {self.current_epoch}: lower optim.lr, "
            "set trainer.gradient_clip_val, or for gaussian_learned raise model.var_floor; "
            "earlier checkpoints are kept"
        )

    def on_train_epoch_end(self) -> None:
        """Log the epoch's mean training bound (its row is written here, before the epoch's
        checkpoint, like the step rows) and step the learning-rate schedule."""
        name = f"train/{self._bound_name()}_epoch"
        mean = self.trainer.strategy.reduce(self._bound_sum / max(self._examples, 1), reduce_op="mean")
        terms = self.trainer.strategy.reduce(self._term_sums / max(self._examples, 1), reduce_op="mean").tolist()
        metrics = {name: mean.item(), "train/reconstruction_epoch": terms[0], "train/kl_epoch": terms[1]}
        self._log_step(self.global_step - 1, {**metrics, "epoch": self.current_epoch})
        self.log(name, mean, prog_bar=True, logger=False, sync_dist=True)  # already the same on every rank
        schedule = self.lr_schedulers()
        if schedule is not None:
            schedule.step()

    def validation_step(self, x: Tensor, batch_idx: int, dataloader_idx: int = 0) -> None:
        """The ELBO (one sample; the KL analytic where the prior has a closed form, else sampled:
        ``val_kl`` in summary.json) of the validation split selects the best checkpoint; an IWAE
        run also reports its own bound. The ELBO's two terms, from the same samples, are logged as
        ``val/reconstruction`` and ``val/kl``. With ``eval.track_test`` the test set's ELBO is scored
        too, for learning curves (``curve/test_elbo``). With ``eval.collapse_diagnostics``, the
        first ``eval.diagnostic_batches`` validation batches are scored for them too
        (:mod:`vaelab.models.collapse`)."""
        log_likelihood, log_ratio = objectives.elbo_terms(self.vae, x, 1, KLMode.analytic)
        elbo = (log_likelihood + log_ratio).mean(0)
        if self.trainer.datamodule.validation_sets[dataloader_idx] == "test":
            self.curve_test_elbo.update(elbo)
            self.log("curve/test_elbo", self.curve_test_elbo, add_dataloader_idx=False)
            return
        self.val_elbo.update(elbo)
        self.log("val/elbo", self.val_elbo, add_dataloader_idx=False)
        reconstruction, kl = elbo_terms_of(log_likelihood, log_ratio)
        self.val_reconstruction.update(reconstruction)
        self.val_kl.update(kl)
        self.log("val/reconstruction", self.val_reconstruction, add_dataloader_idx=False)
        self.log("val/kl", self.val_kl, add_dataloader_idx=False)
        if self.objective.reports_own_bound:
            self.val_bound.update(self.objective.bound(self.vae, x))
            self.log(f"val/{self._bound_name()}", self.val_bound, add_dataloader_idx=False)
        limit = self.eval_cfg.diagnostic_batches
        if self.collapse is not None and (limit is None or batch_idx < limit):
            terms = batch_diagnostics(self.vae, x, self._diagnostic_generator, self.eval_cfg.posterior_mean_samples)
            self.collapse.update(terms)
            for name, metric in self.collapse.means().items():
                self.log(f"val/{name}", metric, add_dataloader_idx=False)

    def on_validation_epoch_start(self) -> None:
        """The collapse diagnostics draw from their own generator, seeded alike every epoch (one
        stream per DDP rank), so that the global one, which training draws from, moves as without them."""
        if self.collapse is not None:
            self._diagnostic_generator = torch.Generator(device=self.device)
            self._diagnostic_generator.manual_seed(DIAGNOSTIC_SEED + self.global_rank)

    def on_validation_epoch_end(self) -> None:
        """Active units per layer over the diagnostics' batches of every rank (the sums are reduced first)."""
        if self.collapse is None:
            return
        for name, count in self.collapse.active_units(self.eval_cfg.active_threshold).items():
            self.log(f"val/{name}", float(count), add_dataloader_idx=False, sync_dist=True)

    def test_step(self, x: Tensor, batch_idx: int) -> None:
        """L_S and the ELBO from the same S importance samples per image, as ``vaelab.evaluate``."""
        e = self.eval_cfg
        samples_in_all = sum(self.trainer.num_test_batches) * e.batch_size * e.ll_samples
        compiled = should_compile_estimates(e.compile, x.device, samples_in_all)
        estimates = importance_estimates(self.vae, x, e.ll_samples, e.chunk_size, compiled=compiled)
        self.test_ll.update(estimates.log_likelihood)
        self.test_elbo.update(estimates.elbo)
        self.log("test/ll", self.test_ll)
        self.log("test/elbo", self.test_elbo)
        self._test_chunks.append((estimates.log_likelihood.cpu(), estimates.ess.cpu(), estimates.pareto_k))

    def on_test_epoch_start(self) -> None:
        self._test_chunks = []

    def on_test_epoch_end(self) -> None:
        """Every rank's per-image L_S, effective sample size and Pareto k-hat, gathered into
        ``test_per_image`` (for the standard error and the diagnostics of summary.json)."""
        chunks = self._test_chunks
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, chunks)
            chunks = [chunk for rank_chunks in gathered for chunk in rank_chunks]
        lls, esses, ks = zip(*chunks) if chunks else ((), (), ())
        has_k = bool(ks) and all(k is not None for k in ks)
        self.test_per_image = {
            "ll": torch.cat(lls) if lls else None,
            "ess": torch.cat(esses) if esses else None,
            "pareto_k": torch.cat(ks) if has_k else None,
        }

    def _bound_name(self) -> str:
        return self.objective.bound_name
