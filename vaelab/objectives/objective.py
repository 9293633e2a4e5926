"""What a training objective is (Pyro's ``Trace_ELBO``, ``RenyiELBO``: the bound is an object
handed to the trainer): its bound on log p(x), the loss whose gradient the chosen estimator
gives, the estimators it supports, and its validity rules, all in the objective's own module.

An objective is built from the model settings (``model.objective`` names it, ``model.k``,
``model.estimator`` and the objective's own keys configure it); building one checks it, so a bad
combination is one line before anything trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

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
        self.check()

    def check(self) -> None:
        """Raise a one-line ConfigError for a setting this objective cannot train with."""
        cfg = self.cfg
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
        raise NotImplementedError


OBJECTIVES: Registry[type[TrainingObjective]] = Registry("model.objective", "vaelab.objectives")


def objective_for(cfg: ModelConfig) -> TrainingObjective:
    """The objective ``cfg.objective`` names, configured (and checked) by ``cfg``."""
    return OBJECTIVES[cfg.objective](cfg)
