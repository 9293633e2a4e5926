"""A prior of your own: the factorised Cauchy prior, p(z) = prod_d Cauchy(z_d; 0, scale).

Heavy-tailed (no mean, no variance), so no closed-form KL: the bounds sample log p(z) - log q(z|x).
``configs/prior/cauchy.yaml`` picks it (``prior=cauchy`` with VAELAB_CONFIG_PATH=examples/parts/configs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.models.priors import Prior


class CauchyPrior(Prior):
    name = "cauchy"

    @dataclass
    class Settings:
        scale: float = 1.0  # the Cauchy scale gamma > 0

        def __post_init__(self) -> None:
            if not (math.isfinite(self.scale) and self.scale > 0):
                raise ValueError(f"scale must be a finite number > 0, not {self.scale}")

    def __init__(self, latent_dim: int, scale: float = 1.0):
        super().__init__(latent_dim)
        self.scale = scale

    def log_prob(self, z: Tensor) -> Tensor:
        """sum_d -log(pi gamma (1 + (z_d / gamma)^2))."""
        return -(torch.log1p((z / self.scale) ** 2) + math.log(math.pi * self.scale)).sum(-1)

    def icdf(self, u: Tensor) -> Tensor:
        return self.scale * torch.tan(math.pi * (u - 0.5))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.icdf(torch.rand(n, self.latent_dim, generator=generator))

    def describe(self) -> str:
        return f"Cauchy, scale {self.scale}"
