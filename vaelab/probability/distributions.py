"""The diagonal Gaussian as an object: the posterior family q(z|x) of Kingma & Welling (eq. 9)
and of every stochastic layer of Burda et al.'s hierarchy, and the components of the mixture
priors. Its methods are the densities of :mod:`vaelab.probability.densities`, so the hot path
builds no ``torch.distributions`` objects (which check arguments on every call).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.probability.densities import gaussian_kl, gaussian_log_prob, gaussian_log_prob_of_noise


@dataclass
class DiagonalGaussian:
    """N(mean, diag(exp(log_var))), batched over the leading dimensions: [..., d] each."""

    mean: Tensor
    log_var: Tensor

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A reparameterized sample z = mean + sigma * eps (Kingma & Welling eq. 10) and its
        noise eps ~ N(0, I). With ``k``: k samples in a new leading dimension, [k, *mean.shape];
        without, one of the shape of ``mean`` (which may already carry a sample dimension).
        ``generator`` (on the mean's device): eps is its draw, not the global generator's."""
        shape = self.mean.shape if k is None else (k, *self.mean.shape)
        eps = torch.randn(shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + torch.exp(0.5 * self.log_var) * eps, eps

    def log_prob_of_noise(self, eps: Tensor) -> Tensor:
        """log q(z) at the sample z that :meth:`rsample` made from ``eps``: the value and gradient
        of :meth:`log_prob` there, with fewer operations."""
        return gaussian_log_prob_of_noise(eps, self.log_var)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; mean, diag(exp(log_var))), summed over the last dimension."""
        return gaussian_log_prob(z, self.mean, self.log_var)

    def stopped_log_prob(self, z: Tensor, eps: Tensor) -> Tensor:
        """log q(z) at its own sample z with the parameters stopped (gradients reach z only);
        ``eps`` is unused here (a flow posterior needs its noise)."""
        return self.detached().log_prob(z)

    def detached(self) -> DiagonalGaussian:
        """The same distribution with its parameters stopped: gradients reach only z."""
        return DiagonalGaussian(self.mean.detach(), self.log_var.detach())

    def kl(self, other: DiagonalGaussian) -> Tensor:
        """KL(self || other) in closed form, summed over the last dimension."""
        return gaussian_kl(self.mean, self.log_var, other.mean, other.log_var)
