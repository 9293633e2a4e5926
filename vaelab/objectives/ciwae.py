"""CIWAE (Rainforth et al. 2018): c ELBO + (1 - c) IWAE from the same K samples
(``model.ciwae_mix`` = c, apart from ``model.beta``, the KL weight)."""

from __future__ import annotations

from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.objectives.objective import OBJECTIVES, TrainingObjective
from vaelab.probability.bounds import iwae_bound
from vaelab.probability.estimators import weighted_log_weights
from vaelab.probability.objectives import LatentVariableModel


def ciwae_bound(log_weights: Tensor, mix: float) -> Tensor:
    """[K, batch] -> [batch]: c * mean_k log w_k + (1 - c) * L_K."""
    return mix * log_weights.mean(0) + (1.0 - mix) * iwae_bound(log_weights)


@OBJECTIVES.register
class CIWAE(TrainingObjective):
    name = "ciwae"

    def check(self) -> None:
        super().check()
        mix = self.cfg.ciwae_mix
        if not 0.0 <= mix <= 1.0:
            raise ConfigError(f"model.ciwae_mix={mix} is invalid: expected 0 <= c <= 1 (1: the elbo, 0: the iwae bound)")
        self.mix = mix

    def bound(self, model: LatentVariableModel, x: Tensor) -> Tensor:
        sample = model.sample_latents(x, self.k)
        log_likelihood, log_prior = model.generative_log_probs(x, sample.zs)
        return ciwae_bound(log_likelihood + log_prior - sample.log_q, self.mix)

    def training_loss(self, model: LatentVariableModel, x: Tensor, kl_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        sample = model.sample_latents(x, self.k)
        log_likelihood, log_prior = model.generative_log_probs(x, sample.zs)
        log_ratio = log_prior - sample.log_q  # [k, batch]
        bound = ciwae_bound(log_likelihood + log_ratio, self.mix)
        surrogate = bound if kl_weight is None else ciwae_bound(weighted_log_weights(log_likelihood, log_ratio, kl_weight), self.mix)
        return -surrogate.mean(), bound.detach()
