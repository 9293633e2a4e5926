"""The Renyi variational bound (Li & Turner 2016): ``model.objective=vr`` with ``model.alpha``,
its K-sample estimate 1/(1-alpha) log (1/K) sum_k w_k^(1-alpha), between the IWAE bound
(alpha = 0) and the ELBO (alpha -> 1)."""

from __future__ import annotations

from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.objectives.objective import OBJECTIVES, TrainingObjective
from vaelab.probability.bounds import renyi_bound
from vaelab.probability.estimators import weighted_log_weights
from vaelab.probability.objectives import LatentVariableModel


@OBJECTIVES.register
class RenyiBound(TrainingObjective):
    name = "vr"

    def check(self) -> None:
        super().check()
        alpha = self.cfg.alpha
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(
                f"model.alpha={alpha} is invalid: expected 0 <= alpha < 1 (alpha=1 is the elbo: model.objective=elbo; "
                "below 0 the Renyi bound lies above log p(x), Li & Turner 2016 Theorem 1, and is not a lower bound)"
            )
        self.alpha = alpha

    def bound(self, model: LatentVariableModel, x: Tensor) -> Tensor:
        sample = model.sample_latents(x, self.k)
        log_likelihood, log_prior = model.generative_log_probs(x, sample.zs)
        return renyi_bound(log_likelihood + log_prior - sample.log_q, self.alpha)

    def training_loss(self, model: LatentVariableModel, x: Tensor, kl_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        sample = model.sample_latents(x, self.k)
        log_likelihood, log_prior = model.generative_log_probs(x, sample.zs)
        log_ratio = log_prior - sample.log_q  # [k, batch]
        bound = renyi_bound(log_likelihood + log_ratio, self.alpha)
        surrogate = bound if kl_weight is None else renyi_bound(weighted_log_weights(log_likelihood, log_ratio, kl_weight), self.alpha)
        return -surrogate.mean(), bound.detach()
