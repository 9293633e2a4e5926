"""A posterior flow of your own: one elementwise affine step z' = z * exp(s) + t after q_0(z|x).

s and t come from the encoder's features, so the step only rescales and shifts the Gaussian (a
diagonal Gaussian again); it shows the interface of a flow step: forward, solve and stopped.
``configs/posterior/affine.yaml`` picks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaelab.models.posteriors import Flow


@dataclass
class AffineStep:
    log_scale: Tensor  # [batch, d]
    shift: Tensor

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """f(z) and log|det df/dz| = sum_d s_d."""
        return z * torch.exp(self.log_scale) + self.shift, self.log_scale.sum(-1).expand(z.shape[:-1])

    def solve(self, z: Tensor, v: Tensor) -> Tensor:
        """J^{-1} v, J = diag(exp(s))."""
        return v * torch.exp(-self.log_scale)

    def stopped(self) -> AffineStep:
        return AffineStep(self.log_scale.detach(), self.shift.detach())


class AffineFlow(Flow):
    name = "affine"

    @dataclass
    class Settings:
        max_log_scale: float = 3.0  # |s| <= this, by a tanh

    def __init__(self, width: int, latent_dim: int, max_log_scale: float = 3.0):
        super().__init__()
        self.max_log_scale = max_log_scale
        self.log_scale = nn.Linear(width, latent_dim)
        self.shift = nn.Linear(width, latent_dim)

    def params(self, h: Tensor) -> tuple[Tensor, ...]:
        return self.max_log_scale * torch.tanh(self.log_scale(h) / self.max_log_scale), self.shift(h)

    def steps(self, params: tuple[Tensor, ...]) -> list[AffineStep]:
        return [AffineStep(*params)]
