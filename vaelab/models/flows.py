"""Amortized flow posteriors q_K(z_1|x): a diagonal Gaussian q_0(z_0|x) on the encoder's features
pushed through K invertible steps, planar (Rezende & Mohamed 2015) or inverse autoregressive
(Kingma et al. 2016). The transforms and their log-determinants are in
:mod:`vaelab.probability.flows`; here are the networks that give their parameters.

log q_K(z_K|x) = log N(z_0; mu, sigma^2) - sum_k log|det J_k| (Rezende & Mohamed eq. 6), from
the sample's noise. For ``stl`` and ``dreg``, :meth:`FlowDistribution.stopped_log_prob` gives
log q at the sample with every parameter of q stopped, exact in value and gradient.
The posterior mean that reconstructions, interpolations and active units use is the flow
applied to the base mean, f_K(...f_1(mu)) (not E_q[z], which has no closed form).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.config.schema import Activation, PosteriorConfig, PosteriorKind
from vaelab.models.networks.mlp import ACTIVATIONS
from vaelab.models.posteriors import GaussianLayer, frozen
from vaelab.probability.distributions import DiagonalGaussian
from vaelab.probability.flows import iaf_step, planar_solve, planar_step, planar_u_hat

# sigma = sigmoid(s + GATE_OFFSET) starts near 0.88, each IAF step near the identity (Kingma et al. sec. 4)
GATE_OFFSET = 2.0


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


@dataclass
class IAFStep:
    """One IAF step: ``network(z, context)`` -> (m, s), autoregressive in z; with ``reverse`` it
    acts on z in the reverse order (z flipped in and out), so consecutive steps alternate."""

    network: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    context: Tensor
    reverse: bool
    module: nn.Module

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = z.flip(-1) if self.reverse else z
        m, s = self.network(z, self.context if context is None else context)
        z, log_det = iaf_step(z, m, s + GATE_OFFSET)
        return (z.flip(-1) if self.reverse else z), log_det

    def solve(self, z: Tensor, v: Tensor) -> Tensor:
        """J^{-1} v, J = df/dz at z: the d x d Jacobian of each sample by forward-mode autograd, then a solve."""
        d = z.shape[-1]
        context = self.context.expand(*z.shape[:-1], self.context.shape[-1]).reshape(-1, self.context.shape[-1])
        one = lambda zi, ci: self.forward(zi, ci)[0]  # noqa: E731
        with warnings.catch_warnings():  # torch.func's first call scripts a helper with a deprecated API
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            jacobian = torch.func.vmap(torch.func.jacfwd(one))(z.reshape(-1, d), context)
        return torch.linalg.solve(jacobian, v.reshape(-1, d, 1)).reshape(v.shape)

    def stopped(self) -> IAFStep:
        return IAFStep(frozen(self.module), self.context.detach(), self.reverse, self.module)


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


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (Germain et al. 2015, MADE)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """(m, s) = network(z, h), each output i a function of z_<i and the context h only (MADE
    masks, Germain et al. 2015; the context enters the first hidden layer, Kingma et al. eq. 10).

    Degrees: input i is i (1..d); hidden units cycle through 1..d-1; a hidden unit sees the
    inputs and units of degree <= its own, output i the hidden units of degree < i.
    """

    def __init__(self, latent_dim: int, context: int, hidden: list[int], activation: Activation):
        super().__init__()
        inputs = torch.arange(1, latent_dim + 1)
        degrees, layers, before = inputs, [], latent_dim
        for width in hidden:
            units = torch.arange(width) % max(latent_dim - 1, 1) + 1
            layers.append(MaskedLinear(before, width, units[:, None] >= degrees[None, :]))
            degrees, before = units, width
        self.hidden = nn.ModuleList(layers)
        self.context = nn.Linear(context, hidden[0])
        out_mask = inputs[:, None] > degrees[None, :]
        self.m = MaskedLinear(before, latent_dim, out_mask)
        self.s = MaskedLinear(before, latent_dim, out_mask)
        self.activation = ACTIVATIONS[activation]()

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        out = self.activation(self.hidden[0](z) + self.context(h))
        for layer in self.hidden[1:]:
            out = self.activation(layer(out))
        return self.m(out), self.s(out)


class PlanarFlow(nn.Module):
    """Amortized planar steps: u, w [K, d] and b [K] per example, linear maps of the encoder's features."""

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


class InverseAutoregressiveFlow(nn.Module):
    """IAF steps (Kingma et al. 2016): the encoder gives a context h; one MADE per step."""

    def __init__(self, width: int, latent_dim: int, length: int, hidden: list[int], context: int, activation: Activation):
        super().__init__()
        self.context = nn.Linear(width, context)
        self.networks = nn.ModuleList([MADE(latent_dim, context, hidden, activation) for _ in range(length)])

    def params(self, h: Tensor) -> tuple[Tensor, ...]:
        return (self.context(h),)

    def steps(self, params: tuple[Tensor, ...]) -> list[IAFStep]:
        (context,) = params
        return [IAFStep(network, context, index % 2 == 1, network) for index, network in enumerate(self.networks)]


class FlowPosterior(GaussianLayer):
    """q_K(z_1|x): the Gaussian layer's mean and log-variance heads for q_0, and a flow whose
    parameters (planar) or context (IAF) come from the same features."""

    def __init__(self, trunk: nn.Module, width: int, out_features: int, flow: PlanarFlow | InverseAutoregressiveFlow):
        super().__init__(trunk, width, out_features)
        self.flow = flow

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
    if cfg.name is PosteriorKind.planar:
        return PlanarFlow(width, latent_dim, cfg.flow_length)
    if cfg.name is PosteriorKind.iaf:
        return InverseAutoregressiveFlow(width, latent_dim, cfg.flow_length, cfg.iaf_hidden, cfg.context, activation)
    raise NotImplementedError(f"posterior.name={cfg.name.value} has no flow in build_flow")
