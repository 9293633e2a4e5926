"""Planar flow steps (Rezende & Mohamed 2015), amortized: ``posterior=planar``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor, nn

from vaelab.config.schema import Activation
from vaelab.models.posteriors.flow import Flow
from vaelab.models.posteriors.posterior import POSTERIORS
from vaelab.probability.flows import planar_solve, planar_step, planar_u_hat
from vaelab.registry import no_args

if TYPE_CHECKING:
    from vaelab.config.schema import PosteriorConfig


@dataclass
class PlanarStep:
    """One planar step with its per-example parameters u_hat, w [batch, d], b and 1 + w^T u_hat [batch]."""

    u_hat: Tensor
    w: Tensor
    b: Tensor
    one_plus_w_u_hat: Tensor

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return planar_step(z, self.u_hat, self.w, self.b, self.one_plus_w_u_hat)

    def solve(self, z: Tensor, v: Tensor) -> Tensor:
        """J^{-1} v, J = df/dz at z."""
        return planar_solve(z, self.u_hat, self.w, self.b, self.one_plus_w_u_hat, v)

    def stopped(self) -> PlanarStep:
        return PlanarStep(self.u_hat.detach(), self.w.detach(), self.b.detach(), self.one_plus_w_u_hat.detach())


@POSTERIORS.register
class PlanarFlow(Flow):
    """Amortized planar steps: u, w [K, d] and b [K] per example, linear maps of the encoder's features."""

    name = "planar"

    @classmethod
    def from_config(cls, cfg: PosteriorConfig, width: int, latent_dim: int, activation: Activation) -> Flow:
        no_args(cfg.args, "posterior.args", "posterior=planar")
        return cls(width, latent_dim, cfg.flow_length)

    def describe(self) -> str:
        return f"planar, {self.length} steps"

    def __init__(self, width: int, latent_dim: int, length: int):
        super().__init__()
        self.length, self.latent_dim = length, latent_dim
        self.u = nn.Linear(width, length * latent_dim)
        self.w = nn.Linear(width, length * latent_dim)
        self.b = nn.Linear(width, length)

    def params(self, h: Tensor) -> tuple[Tensor, ...]:
        shape = (*h.shape[:-1], self.length, self.latent_dim)
        return self.u(h).reshape(shape), self.w(h).reshape(shape), self.b(h)

    def steps(self, params: tuple[Tensor, ...]) -> list[PlanarStep]:
        u, w, b = params
        steps = []
        for k in range(self.length):
            u_hat, one_plus_w_u_hat = planar_u_hat(u[..., k, :], w[..., k, :])
            steps.append(PlanarStep(u_hat, w[..., k, :], b[..., k], one_plus_w_u_hat))
        return steps
