"""Inverse autoregressive flow steps (Kingma et al. 2016) with MADE networks: ``posterior=iaf``."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.config.schema import Activation
from vaelab.models.networks.mlp import ACTIVATIONS
from vaelab.models.posteriors.flow import Flow
from vaelab.models.posteriors.gaussian import frozen
from vaelab.models.posteriors.posterior import POSTERIORS
from vaelab.probability.flows import iaf_step
from vaelab.registry import no_args

if TYPE_CHECKING:
    from vaelab.config.schema import PosteriorConfig

# sigma = sigmoid(s + GATE_OFFSET) starts near 0.88, each IAF step near the identity (Kingma et al. sec. 4)
GATE_OFFSET = 2.0


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


@POSTERIORS.register
class InverseAutoregressiveFlow(Flow):
    """IAF steps (Kingma et al. 2016): the encoder gives a context h; one MADE per step."""

    name = "iaf"

    @classmethod
    def from_config(cls, cfg: PosteriorConfig, width: int, latent_dim: int, activation: Activation) -> Flow:
        no_args(cfg.args, "posterior.args", "posterior=iaf")
        return cls(width, latent_dim, cfg.flow_length, cfg.iaf_hidden, cfg.context, activation)

    def describe(self) -> str:
        return f"iaf, {len(self.networks)} steps"

    def __init__(self, width: int, latent_dim: int, length: int, hidden: list[int], context: int, activation: Activation):
        super().__init__()
        self.context = nn.Linear(width, context)
        self.networks = nn.ModuleList([MADE(latent_dim, context, hidden, activation) for _ in range(length)])

    def params(self, h: Tensor) -> tuple[Tensor, ...]:
        return (self.context(h),)

    def steps(self, params: tuple[Tensor, ...]) -> list[IAFStep]:
        (context,) = params
        return [IAFStep(network, context, index % 2 == 1, network) for index, network in enumerate(self.networks)]
