"""An objective of your own: the mean of two IWAE bounds, each of half the k samples (MIWAE with
M = 2, Rainforth et al. 2018). ``configs/experiment/two_group_iwae.yaml`` picks it."""

from __future__ import annotations

from vaelab.errors import ConfigError
from vaelab.objectives.objective import LogWeightBound
from vaelab.probability.bounds import iwae_bound


class TwoGroupIWAE(LogWeightBound):
    name = "two_group_iwae"

    def check(self) -> None:
        super().check()
        if self.k % 2:
            raise ConfigError(f"model.k={self.k} is invalid: expected an even number for {self.name}")

    def of_log_weights(self, log_weights):
        first, second = log_weights.chunk(2, dim=0)
        return (iwae_bound(first) + iwae_bound(second)) / 2
