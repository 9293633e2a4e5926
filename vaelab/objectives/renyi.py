"""The Renyi variational bound (Li & Turner 2016): ``model.objective=vr`` with ``model.alpha``,
its K-sample estimate 1/(1-alpha) log (1/K) sum_k w_k^(1-alpha), between the IWAE bound
(alpha = 0) and the ELBO (alpha -> 1)."""

from __future__ import annotations

from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.objectives.objective import OBJECTIVES, LogWeightBound
from vaelab.probability.bounds import renyi_bound


@OBJECTIVES.register
class RenyiBound(LogWeightBound):
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

    def of_log_weights(self, log_weights: Tensor) -> Tensor:
        return renyi_bound(log_weights, self.alpha)
