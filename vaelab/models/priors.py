"""Priors p(z_L) over the top stochastic layer: N(0, I), the VampPrior, a Gaussian mixture.

Every prior is a :class:`Prior`: ``log_prob(z)`` [...] for z [..., d]; ``sample(n, generator)``,
n draws [n, d]; ``kl(q)``, KL(q || p) in closed form for a diagonal-Gaussian posterior where one
exists, else None (then the bounds sample log p(z) - log q(z|x)); and ``icdf(u)``, the quantile
function per coordinate where the prior factorises (for the 2-D manifold picture), else None.
A prior of your own subclasses :class:`Prior` (docs/extending.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from vaelab.probability.densities import (
    gaussian_log_prob,
    kl_to_standard_normal,
    kl_to_standard_normal_per_dimension,
    mixture_log_prob,
    standard_normal_log_prob,
)
from vaelab.probability.distributions import DiagonalGaussian


class Prior(nn.Module):
    """The interface of a prior over a ``latent_dim``-dimensional z."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z), summed over the last dimension: [...] for z [..., d]."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws, [n, d]; with ``generator`` (a CPU generator) the draws are its own."""
        raise NotImplementedError

    def kl(self, q: DiagonalGaussian) -> Tensor | None:
        """KL(q || p) in closed form, [...]; None where there is none (the bound samples it)."""
        return None

    @property
    def has_closed_form_kl(self) -> bool:
        """Whether the class gives :meth:`kl` a closed form (it overrides it)."""
        return type(self).kl is not Prior.kl

    def kl_per_dimension(self, q: DiagonalGaussian) -> Tensor | None:
        """KL(q || p) in closed form term by term, [..., d], where p factorises over dimensions
        (free bits need it); None where it does not (a mixture's KL does not split by dimension)."""
        return None

    @property
    def has_per_dimension_kl(self) -> bool:
        """Whether the class gives :meth:`kl_per_dimension` a closed form (it overrides it)."""
        return type(self).kl_per_dimension is not Prior.kl_per_dimension

    def icdf(self, u: Tensor) -> Tensor | None:
        """The quantiles of each coordinate's marginal at u in (0, 1), if the prior factorises into
        identical coordinates; else None."""
        return None


class StandardNormalPrior(Prior):
    """p(z) = N(0, I) (Kingma & Welling section 3)."""

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


def _sample_mixture(components: DiagonalGaussian, log_weights: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """n draws of sum_k pi_k N(mean_k, diag(var_k)): a component by its weight, then its Gaussian."""
    mean, log_var = components.mean.detach().cpu(), components.log_var.detach().cpu()
    index = torch.multinomial(log_weights.detach().cpu().float().exp(), n, replacement=True, generator=generator)
    eps = torch.randn(n, mean.shape[-1], generator=generator, dtype=mean.dtype)
    return (mean[index] + torch.exp(0.5 * log_var[index]) * eps).to(components.mean.device)


class MixturePrior(Prior):
    """p(z) = sum_k pi_k N(z; m_k, diag(exp(s_k))) with learned pi (softmax of logits), m and s.

    The means start as N(0, I) draws so the components begin apart, the variances at 1, the
    weights equal.
    """

    def __init__(self, latent_dim: int, components: int):
        super().__init__(latent_dim)
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.log_vars = nn.Parameter(torch.zeros(components, latent_dim))

    def log_prob(self, z: Tensor) -> Tensor:
        log_components = gaussian_log_prob(z.unsqueeze(-2), self.means, self.log_vars)  # [..., K]
        return mixture_log_prob(log_components, torch.log_softmax(self.logits, dim=0))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        components = DiagonalGaussian(self.means, self.log_vars)
        return _sample_mixture(components, torch.log_softmax(self.logits, dim=0), n, generator)


class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z | u_k) (Tomczak & Welling 2018, eq. 9): the posteriors of K learned
    pseudo-inputs u_k, each kept in [0, 1] by a hard tanh as in their code.

    ``posterior_of(u)`` is the model's diagonal-Gaussian posterior of the top layer given inputs
    u; in a hierarchy it follows the encoders' means to the top layer, since the marginal
    q(z_L|u) has no closed form (with one layer it is q(z|u) itself).
    """

    def __init__(
        self, latent_dim: int, data_dim: int, components: int, init_mean: float, init_std: float,
        posterior_of: Callable[[Tensor], DiagonalGaussian],
    ):
        super().__init__(latent_dim)
        self.pseudo_inputs = nn.Parameter(init_mean + init_std * torch.randn(components, data_dim))
        self._posterior_of = posterior_of  # the model's encoder, registered there and not here

    def components(self) -> DiagonalGaussian:
        """q(z | u_k) for every pseudo-input: mean and log-variance [K, d]."""
        return self._posterior_of(torch.nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0))

    def log_prob(self, z: Tensor) -> Tensor:
        q = self.components()
        log_components = gaussian_log_prob(z.unsqueeze(-2), q.mean, q.log_var)  # [..., K]
        return torch.logsumexp(log_components, dim=-1) - math.log(len(self.pseudo_inputs))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        q = self.components()
        uniform = torch.full((len(self.pseudo_inputs),), -math.log(len(self.pseudo_inputs)))
        return _sample_mixture(q, uniform, n, generator)
