"""Amortized flow posteriors q_K(z_1|x): a diagonal Gaussian q_0(z_0|x) on the encoder's features
pushed through K invertible steps (planar, :mod:`.planar`; inverse autoregressive, :mod:`.iaf`; or
one of your own). The transforms and their log-determinants are in :mod:`vaelab.probability.flows`.

log q_K(z_K|x) = log N(z_0; mu, sigma^2) - sum_k log|det J_k| (Rezende & Mohamed eq. 6), from
the sample's noise. For ``stl`` and ``dreg``, :meth:`FlowDistribution.stopped_log_prob` gives
log q at the sample with every parameter of q stopped, exact in value and gradient.
The posterior mean that reconstructions, interpolations and active units use is the flow
applied to the base mean, f_K(...f_1(mu)) (not E_q[z], which has no closed form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from vaelab.config.schema import Activation
from vaelab.models.posteriors.gaussian import GaussianLayer
from vaelab.probability.distributions import DiagonalGaussian
from vaelab.registry import part_name, users_part

if TYPE_CHECKING:
    from vaelab.config.schema import ModelConfig, PosteriorConfig


class Flow(nn.Module):
    """The steps of a flow on z_1, their parameters from the encoder's features h [..., width].

    ``params(h)`` -> a tuple of tensors (what compiled code passes around); ``steps(params)`` -> the
    steps in order, each with ``forward(z)`` -> (f(z), log|det df/dz|) [..., d] and [...],
    ``solve(z, v)`` -> J^{-1} v (J = df/dz at z; for ``stl``/``dreg``) and ``stopped()``, the step
    with its parameters detached. ``name`` is what ``posterior.name`` calls it; a flow of the user's
    (``posterior.name=custom posterior.target=...``) is built as ``cls(width, latent_dim, **posterior.args)``.
    """

    name: ClassVar[str]

    @classmethod
    def from_config(cls, cfg: PosteriorConfig, width: int, latent_dim: int, activation: Activation) -> Flow:
        return users_part(cls, "posterior.args", cfg.args, width=width, latent_dim=latent_dim)

    @classmethod
    def posterior(cls, cfg: PosteriorConfig, model: ModelConfig, trunk: nn.Module) -> GaussianLayer:
        """q(z_1|x) on the encoder trunk: its Gaussian q_0 and this flow."""
        flow = cls.from_config(cfg, trunk.width, model.latent_dim, model.activation)
        return FlowPosterior(trunk, trunk.width, model.latent_dim, flow)

    def params(self, h: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def steps(self, params: tuple[Tensor, ...]) -> list:
        raise NotImplementedError

    def describe(self) -> str:
        """The flow in a few words, for the console's table of parts."""
        return part_name(self)


@dataclass
class FlowNoise:
    """What a flow sample keeps for its log-density: the base noise eps, the input of every
    step (z_0 first) and the sum of the log-determinants [...]."""

    eps: Tensor
    inputs: list[Tensor]
    log_det: Tensor


class FlowDistribution:
    """q_K(z|x): z_0 = mu + sigma * eps ~ ``base``, then the ``steps`` in order."""

    def __init__(self, base: DiagonalGaussian, steps: list):
        self.base = base
        self.steps = steps

    @property
    def mean(self) -> Tensor:
        """The flow applied to the base mean, f_K(...f_1(mu)): the posterior's point summary."""
        z = self.base.mean
        for step in self.steps:
            z = step.forward(z)[0]
        return z

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, FlowNoise]:
        """A reparameterized z_K and its :class:`FlowNoise` (shapes and ``generator`` as ``DiagonalGaussian.rsample``)."""
        z, eps = self.base.rsample(k, generator)
        inputs, log_det = [], 0.0
        for step in self.steps:
            inputs.append(z)
            z, step_log_det = step.forward(z)
            log_det = log_det + step_log_det
        return z, FlowNoise(eps, inputs, log_det)

    def log_prob_of_noise(self, noise: FlowNoise) -> Tensor:
        """log q_K(z_K) = log N(z_0) - sum_k log|det J_k| at the sample made from ``noise``."""
        return self.base.log_prob_of_noise(noise.eps) - noise.log_det

    def stopped_log_prob(self, z: Tensor, noise: FlowNoise) -> Tensor:
        """log q_K(z) at the sample z with q's parameters stopped, gradients reaching z only.

        The inverse of the flow is not closed-form, but its first order is: z_0(z) = z_0 +
        J^{-1} (z - z.detach()) (J = dz/dz_0 at the sample, stopped) has the value z_0 and the
        derivative dz_0/dz of the exact inverse; log N(z_0(z)) - sum_k log|det J_k| re-evaluated
        along the stopped flow from z_0(z) then has the exact value and gradient of log q(z)."""
        steps = [step.stopped() for step in self.steps]
        v = z - z.detach()
        for step, z_in in zip(reversed(steps), reversed(noise.inputs)):
            v = step.solve(z_in.detach(), v)
        z0 = noise.inputs[0].detach() + v
        log_q = self.base.detached().log_prob(z0)
        for step in steps:
            z0, step_log_det = step.forward(z0)
            log_q = log_q - step_log_det
        return log_q


class FlowPosterior(GaussianLayer):
    """q_K(z_1|x): the Gaussian layer's mean and log-variance heads for q_0, and a flow whose
    parameters (planar) or context (IAF) come from the same features."""

    def __init__(self, trunk: nn.Module, width: int, out_features: int, flow: Flow):
        super().__init__(trunk, width, out_features)
        self.flow = flow

    gaussian = False  # q(z_1|x) is not Gaussian: no closed-form KL, no exact mutual information

    def forward(self, h: Tensor) -> tuple[Tensor, ...]:
        """(mean, log-variance, *the flow's parameters), each [..., *]."""
        h = self.trunk(h)
        return (self.mean(h), self.log_var(h), *self.flow.params(h))

    def distribution(self, params: tuple[Tensor, ...]) -> FlowDistribution:  # type: ignore[override]
        return FlowDistribution(DiagonalGaussian(params[0], params[1]), self.flow.steps(params[2:]))

    @staticmethod
    def base(params: tuple[Tensor, ...]) -> DiagonalGaussian:
        """q_0(z_0|x), the flow's base Gaussian."""
        return DiagonalGaussian(params[0], params[1])


def build_flow(cfg: PosteriorConfig, width: int, latent_dim: int, activation: Activation) -> nn.Module:
    """The flow ``posterior.name`` names on encoder features of size ``width``."""
