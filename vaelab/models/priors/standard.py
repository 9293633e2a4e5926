"""p(z) = N(0, I): ``prior=standard``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vaelab.models.priors.prior import PRIORS, PosteriorOf, Prior
from vaelab.probability.densities import kl_to_standard_normal, kl_to_standard_normal_per_dimension, standard_normal_log_prob
from vaelab.probability.distributions import DiagonalGaussian
from vaelab.registry import no_args

if TYPE_CHECKING:
    from vaelab.config.schema import PriorConfig


@PRIORS.register
class StandardNormalPrior(Prior):
    """p(z) = N(0, I) (Kingma & Welling section 3)."""

    name = "standard"

    @classmethod
    def from_config(cls, cfg: PriorConfig, latent_dim: int, data_dim: int, posterior_of: PosteriorOf) -> Prior:
        no_args(cfg.args, "prior.args", "prior=standard")
        return cls(latent_dim)

    def describe(self) -> str:
        return "N(0, I)"

    def log_prob(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def kl(self, q: DiagonalGaussian) -> Tensor:
        """Kingma & Welling appendix B."""
        return kl_to_standard_normal(q.mean, q.log_var)

    def kl_per_dimension(self, q: DiagonalGaussian) -> Tensor:
        return kl_to_standard_normal_per_dimension(q.mean, q.log_var)

    def icdf(self, u: Tensor) -> Tensor:
        return torch.special.ndtri(u)
