"""A mixture of diagonal Gaussians with learned weights, means and variances: ``prior=mog``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vaelab.models.priors.prior import PRIORS, PosteriorOf, Prior
from vaelab.probability.distributions import DiagonalGaussian
from vaelab.probability.mixtures import diagonal_gaussian_mixture_log_prob
from vaelab.registry import no_args

if TYPE_CHECKING:
    from vaelab.config.schema import PriorConfig


def sample_mixture(components: DiagonalGaussian, log_weights: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """n draws of sum_k pi_k N(mean_k, diag(var_k)): a component by its weight, then its Gaussian."""
    mean, log_var = components.mean.detach().cpu(), components.log_var.detach().cpu()
    index = torch.multinomial(log_weights.detach().cpu().float().exp(), n, replacement=True, generator=generator)
    eps = torch.randn(n, mean.shape[-1], generator=generator, dtype=mean.dtype)
    return (mean[index] + torch.exp(0.5 * log_var[index]) * eps).to(components.mean.device)


@PRIORS.register
class MixturePrior(Prior):
    """p(z) = sum_k pi_k N(z; m_k, diag(exp(s_k))) with learned pi (softmax of logits), m and s.

    The means start as N(0, I) draws so the components begin apart, the variances at 1, the
    weights equal.
    """

    name = "mog"

    @classmethod
    def from_config(cls, cfg: PriorConfig, latent_dim: int, data_dim: int, posterior_of: PosteriorOf) -> Prior:
        no_args(cfg.args, "prior.args", "prior=mog")
        return cls(latent_dim, cfg.components)

    def describe(self) -> str:
        return f"mixture of {len(self.logits)} Gaussians (weights, means, log-variances)"

    def __init__(self, latent_dim: int, components: int):
        super().__init__(latent_dim)
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.log_vars = nn.Parameter(torch.zeros(components, latent_dim))

    def log_prob(self, z: Tensor) -> Tensor:
        return diagonal_gaussian_mixture_log_prob(z, self.means, self.log_vars, torch.log_softmax(self.logits, dim=0))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        components = DiagonalGaussian(self.means, self.log_vars)
        return sample_mixture(components, torch.log_softmax(self.logits, dim=0), n, generator)
