"""A prior of your own, outside vaelab: the factorised Laplace prior.

    p(z) = prod_d Laplace(z_d; 0, b),   Laplace(z; 0, b) = exp(-|z| / b) / (2 b),

with scale b > 0 (variance 2 b^2). Heavier-tailed than N(0, I) and sparsity-promoting; a
common alternative prior in the VAE literature. Use it without editing vaelab:

    uv run python -m vaelab.fit model=bernoulli prior.name=custom \
        prior.target=examples/laplace_prior.py:LaplacePrior prior.args.scale=0.5

(docs/extending.md). It gives no closed-form KL, so the bounds sample log p(z) - log q(z|x).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaelab.models.priors import Prior


class LaplacePrior(Prior):
    """p(z) = prod_d Laplace(z_d; 0, scale): density exp(-|z_d| / scale) / (2 scale) per coordinate.

    ``latent_dim`` is passed by vaelab; ``scale`` (b > 0, default 1.0) comes from ``prior.args.scale``.
    It has no parameters to learn, so its checkpoint holds no tensors of its own.
    """

    def __init__(self, latent_dim: int, scale: float = 1.0):
        super().__init__(latent_dim)
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0 (the Laplace scale b), not {scale}")
        self.scale = scale

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) = sum_d [-log(2 b) - |z_d| / b]: [...] for z [..., d]."""
        return -z.abs().sum(-1) / self.scale - z.shape[-1] * math.log(2.0 * self.scale)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws [n, d] by the inverse CDF of uniforms from ``generator`` (torch.rand)."""
        u = torch.rand(n, self.latent_dim, generator=generator)
        return self.icdf(u.clamp_min(torch.finfo(u.dtype).tiny))  # torch.rand can return 0: F^-1(0) = -inf

    def icdf(self, u: Tensor) -> Tensor:
        """The quantile function of Laplace(0, b) per coordinate, u in (0, 1):
        F^-1(u) = b log(2u) for u < 1/2, -b log(2 - 2u) above (each exact where it is used)."""
        below = u < 0.5
        return self.scale * torch.where(below, torch.log(2.0 * u), -torch.log(2.0 - 2.0 * u))

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, scale={self.scale}"
