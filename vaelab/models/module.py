"""The LightningModule that trains a :class:`VAE` and reports its bounds in nats per example."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import Tensor
from torchmetrics import MeanMetric

from vaelab.config.schema import EvalConfig, KLMode, ModelConfig, Objective, OptimConfig
from vaelab.errors import TrainingDivergedError
from vaelab.models.optim import build_optimizer, build_schedule, kl_weight
from vaelab.models.vae import VAE



def _typed(schema: type, values: dict):
    """Rebuild a config dataclass from the plain dict kept in a checkpoint's hparams."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


class VAEModule(pl.LightningModule):
    """Maximises the configured bound; validates on the ELBO; tests log p(x) by importance sampling.

    Arguments are plain dicts (YAML-able) so that ``VAEModule.load_from_checkpoint`` can
    rebuild the model from a checkpoint alone.
    """

    def __init__(self, model: dict, optim: dict, eval: dict, data_dim: int, image_shape: tuple[int, int]):
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg: ModelConfig = _typed(ModelConfig, model)
        self.optim_cfg: OptimConfig = _typed(OptimConfig, optim)
        self.eval_cfg: EvalConfig = _typed(EvalConfig, eval)
        self.vae = VAE(self.model_cfg, data_dim)
        # Means over every evaluated example, reduced exactly across DDP ranks (sums and counts).
        self.val_elbo, self.val_bound, self.curve_test_elbo = MeanMetric(), MeanMetric(), MeanMetric()
        self.test_ll, self.test_elbo = MeanMetric(), MeanMetric()

    def configure_optimizers(self):
        optimizer = build_optimizer(self.optim_cfg, self.parameters())
        schedule = build_schedule(self.optim_cfg, optimizer)
        if schedule is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def on_train_start(self) -> None:
        # A run resumed mid-epoch (a SLURM requeue's hpc checkpoint) skips on_train_epoch_start.
        self.on_train_epoch_start()

    def on_train_epoch_start(self) -> None:
        self._bound_sum = torch.zeros((), device=self.device)
        self._examples = 0

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        """The configured estimator's loss, with this step's KL weight; the logged bound is
        the true one (weight 1). Logging costs no per-step work: the epoch's sum is kept on
        the device and Lightning sees a value only on the steps it writes logs."""
        epochs_done = self.current_epoch + batch_idx / max(self.trainer.num_training_batches, 1)
        weight = kl_weight(self.model_cfg.beta, self.optim_cfg.kl_warmup_epochs, epochs_done)
        loss, bound = self.vae.training_loss(x, torch.tensor(weight, device=self.device))
        self._bound_sum += bound.sum()
        self._examples += len(x)
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log(f"train/{self._bound_name()}", bound.mean(), prog_bar=True, batch_size=len(x))
            self.log("train/kl_weight", weight, batch_size=len(x))
        return loss

    def on_train_batch_end(self, outputs: object, batch: Tensor, batch_idx: int) -> None:
        """Stop with a clear error once the loss is NaN/inf, checked without a per-step sync.

        The check runs every ``log_every_n_steps`` and on the epoch's last batch, so it
        always runs before validation and hence before any checkpoint is written.
        """
        last = batch_idx + 1 >= self.trainer.num_training_batches
        if not (last or (batch_idx + 1) % self.trainer.log_every_n_steps == 0):
            return
        # Every DDP rank takes the same decision, so all stop together instead of waiting.
        diverged = self.trainer.strategy.reduce_boolean_decision(not torch.isfinite(self._bound_sum), all=False)
        if diverged:
            raise TrainingDivergedError(
                f"the training loss became NaN or infinite in epoch {self.current_epoch}: lower optim.lr, "
                "set trainer.gradient_clip_val, or for gaussian_learned raise model.var_floor; "
                "checkpoints from earlier epochs are kept"
            )

    def on_train_epoch_end(self) -> None:
        mean = self._bound_sum / max(self._examples, 1)
        self.log(f"train/{self._bound_name()}_epoch", mean, prog_bar=True, sync_dist=True)

    def validation_step(self, x: Tensor, batch_idx: int, dataloader_idx: int = 0) -> None:
        """The ELBO (analytic KL, one sample) of the validation split selects the best
        checkpoint; an IWAE run also reports its own bound. With ``eval.track_test`` the
        test set's ELBO is scored too, for learning curves (``curve/test_elbo``)."""
        elbo = self.vae.elbo(x, 1, KLMode.analytic)
        if self.trainer.datamodule.validation_sets[dataloader_idx] == "test":
            self.curve_test_elbo.update(elbo)
            self.log("curve/test_elbo", self.curve_test_elbo, add_dataloader_idx=False)
            return
        self.val_elbo.update(elbo)
        self.log("val/elbo", self.val_elbo, add_dataloader_idx=False)
        if self.model_cfg.objective is Objective.iwae and self.model_cfg.k > 1:
            self.val_bound.update(self.vae.iwae(x, self.model_cfg.k))
            self.log(f"val/{self._bound_name()}", self.val_bound, add_dataloader_idx=False)

    def test_step(self, x: Tensor, batch_idx: int) -> None:
        log_likelihood, elbo = self.vae.log_likelihood(x, self.eval_cfg.ll_samples, self.eval_cfg.chunk_size)
        self.test_ll.update(log_likelihood)
        self.test_elbo.update(elbo)
        self.log("test/ll", self.test_ll)
        self.log("test/elbo", self.test_elbo)

    def _bound_name(self) -> str:
        cfg = self.model_cfg
        return "elbo" if cfg.objective is Objective.elbo else f"iwae{cfg.k}"
