"""CIWAE (Rainforth et al. 2018): c ELBO + (1 - c) IWAE from the same K samples
(``model.ciwae_mix`` = c, apart from ``model.beta``, the KL weight)."""

from __future__ import annotations

from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.objectives.objective import OBJECTIVES, LogWeightBound
from vaelab.probability.bounds import iwae_bound


def ciwae_bound(log_weights: Tensor, mix: float) -> Tensor:
    """[K, batch] -> [batch]: c * mean_k log w_k + (1 - c) * L_K."""
    return mix * log_weights.mean(0) + (1.0 - mix) * iwae_bound(log_weights)


@OBJECTIVES.register
class CIWAE(LogWeightBound):
    name = "ciwae"

    def check(self) -> None:
        super().check()
        mix = self.cfg.ciwae_mix
        if not 0.0 <= mix <= 1.0:
            raise ConfigError(f"model.ciwae_mix={mix} is invalid: expected 0 <= c <= 1 (1: the elbo, 0: the iwae bound)")
        self.mix = mix

    def of_log_weights(self, log_weights: Tensor) -> Tensor:
        return ciwae_bound(log_weights, self.mix)
