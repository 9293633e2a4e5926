"""What a training objective is (Pyro's ``Trace_ELBO``, ``RenyiELBO``: the bound is an object
handed to the trainer): its bound on log p(x), the loss whose gradient the chosen estimator
gives, the estimators it supports, and its validity rules, all in the objective's own module.

An objective is built from the model settings (``model.objective`` names it, ``model.k``,
``model.estimator`` and the objective's own keys configure it); building one checks it, so a bad
combination is one line before anything trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.probability.objectives import LatentVariableModel
from vaelab.registry import Registry

if TYPE_CHECKING:
    from vaelab.config.schema import ModelConfig

FREE_BITS_NEED = (
    "model.free_bits floors the analytic KL of the ELBO per dimension: use it with model.objective=elbo "
    "and model.kl=analytic, or set model.free_bits=0"
)


class TrainingObjective:
    """A bound on log p(x) per example and the training loss of its gradient estimators.

    ``bound`` is the bound with KL weight 1 ([batch], nats); ``training_loss`` is minus the batch
    mean of a surrogate whose value is the bound with log p(z) - log q(z|x) weighted by
    ``kl_weight`` (a 0-dim tensor; None is weight 1) and whose gradient is the estimator's, with the
    true bound from the same samples, detached."""

    name: ClassVar[str]
    estimators: ClassVar[tuple[str, ...]] = ("reparam",)
    # Made of importance log-weights only, so the KL is sampled: model.kl=analytic is refused.
    samples_its_kl: ClassVar[bool] = True

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg
        self.k = cfg.k
        self.estimator = cfg.estimator.value
        self.args = dict(cfg.objective_args)  # an objective of the user's reads its settings here
        self.check()

    def check(self) -> None:
        """Raise a one-line ConfigError for a setting this objective cannot train with."""
        cfg = self.cfg
        if cfg.objective_args and ":" not in cfg.objective:
            raise ConfigError(
                f"model.objective_args is for an objective of your own (model.objective=path/file.py:Class); "
                f"model.objective={cfg.objective} takes its settings as model keys (--help)"
            )
        if cfg.free_bits > 0:
            raise ConfigError(FREE_BITS_NEED)
        if self.estimator not in self.estimators:
            raise ConfigError(
                f"model.estimator={self.estimator} is not defined for model.objective={self.name}: "
                f"use one of [{', '.join(self.estimators)}]"
            )
        if self.samples_its_kl and cfg.kl.value == "analytic":
            raise ConfigError(
                f"model.objective={self.name} is made of importance log-weights, which sample the KL: "
                "set model.kl=mc"
            )

    @property
    def bound_name(self) -> str:
        """The bound's name in metrics.csv and on the console (``train/<name>``, ``val/<name>``)."""
        return f"{self.name}{self.k}"

    @property
    def reports_own_bound(self) -> bool:
        """Whether validation scores this bound beside the one-sample ELBO (not where it is that ELBO)."""
        return self.k > 1

    def check_model(self, model: LatentVariableModel, parts: str) -> None:
        """Raise a one-line ConfigError if the built model (its ``parts`` named, for the message)
        lacks what this objective needs."""

    def warning(self) -> str | None:
        """One line for a setting that trains but that the user should know about, else None."""
        return None

    def bound(self, model: LatentVariableModel, x: Tensor) -> Tensor:
        raise NotImplementedError

    def training_loss(self, model: LatentVariableModel, x: Tensor, kl_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The loss and the true bound, (scalar, [batch])."""
        loss, bound, _ = self.loss_bound_and_terms(model, x, kl_weight)
        return loss, bound

    def loss_bound_and_terms(
        self, model: LatentVariableModel, x: Tensor, kl_weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The loss, the true bound and the ELBO's two terms from the same samples (:func:`elbo_terms_of`)."""
        raise NotImplementedError


def elbo_terms_of(log_likelihood: Tensor, log_ratio: Tensor | float) -> Tensor:
    """[2, batch], detached: the reconstruction, the mean over samples of log p(x|z), and the KL,
    that minus the mean log-weight (the sampled KL, or the closed-form one where ``log_ratio``
    holds it), so that reconstruction - KL is the samples' ELBO. Inputs [k, batch] (``log_ratio``
    may broadcast)."""
    reconstruction = log_likelihood.detach().mean(0)
    return torch.stack([reconstruction, reconstruction - (log_likelihood.detach() + log_ratio.detach()).mean(0)])


class LogWeightBound(TrainingObjective):
    """An objective whose bound is a function of the k log-weights of each example
    (:meth:`of_log_weights`, [k, batch] -> [batch]), trained with the pathwise gradient of that
    function of the KL-weighted log-weights."""

    def of_log_weights(self, log_weights: Tensor) -> Tensor:
        raise NotImplementedError

    def bound(self, model: LatentVariableModel, x: Tensor) -> Tensor:
        sample = model.sample_latents(x, self.k)
        log_likelihood, log_prior = model.log_joint(x, sample)
        return self.of_log_weights(log_likelihood + log_prior - sample.log_q)

    def loss_bound_and_terms(
        self, model: LatentVariableModel, x: Tensor, kl_weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        sample = model.sample_latents(x, self.k)
        log_likelihood, log_prior = model.log_joint(x, sample)
        log_ratio = log_prior - sample.log_q  # [k, batch]
        bound = self.of_log_weights(log_likelihood + log_ratio)
        surrogate = bound if kl_weight is None else self.of_log_weights(log_likelihood + kl_weight * log_ratio)
        return -surrogate.mean(), bound.detach(), elbo_terms_of(log_likelihood, log_ratio)


OBJECTIVES: Registry[type[TrainingObjective]] = Registry("model.objective", "vaelab.objectives", base=TrainingObjective)


def objective_for(cfg: ModelConfig) -> TrainingObjective:
    """The objective ``cfg.objective`` names, configured (and checked) by ``cfg``."""
    return OBJECTIVES[cfg.objective](cfg)
