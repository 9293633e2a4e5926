"""Gaussian stochastic layers: the posterior family q(z|x) (Kingma & Welling eq. 9) and, in a
hierarchy (Burda et al. section 5), each q(z_{l+1}|z_l) and each generative p(z_l|z_{l+1}).

A layer maps its input h through a network trunk to the parameters of a
:class:`~vaelab.probability.distributions.DiagonalGaussian`: ``layer(h)`` gives them as a
tuple of tensors (what compiled code passes around), ``distribution(params)`` the object with
reparameterized samples and their log-density, and ``frozen(h)`` the distribution computed
with the layer's parameters stopped (gradients still reach h), for ``stl`` and ``dreg``.
The posterior mean that reconstructions, interpolations and active units use is its ``mean``.
A flow posterior of z_1 (:mod:`vaelab.models.posteriors.flow`) subclasses :class:`GaussianLayer`;
``posterior=gaussian`` is this layer on the encoder's trunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vaelab.models.posteriors.posterior import POSTERIORS
from vaelab.probability.distributions import DiagonalGaussian
from vaelab.registry import no_args

if TYPE_CHECKING:
    from vaelab.config.schema import ModelConfig, PosteriorConfig

GaussianParams = tuple[Tensor, Tensor]


def frozen(module: nn.Module) -> Callable[..., object]:
    """``module``'s forward with its parameters detached: gradients reach its inputs only."""
    parameters = {name: parameter.detach() for name, parameter in module.named_parameters()}
    return lambda *inputs: torch.func.functional_call(module, parameters, inputs)


@POSTERIORS.register
class GaussianLayer(nn.Module):
    """N(mean(h), diag(exp(log_var(h)))): two linear heads on a trunk's features."""

    name = "gaussian"
    gaussian = True  # see :mod:`vaelab.models.posteriors.posterior`

    @classmethod
    def posterior(cls, cfg: PosteriorConfig, model: ModelConfig, trunk: nn.Module) -> GaussianLayer:
        """q(z_1|x) = N(mu(x), diag(sigma^2(x))) on the encoder trunk (Kingma & Welling eq. 9)."""
        no_args(cfg.args, "posterior.args", "posterior=gaussian")
        return cls(trunk, trunk.width, model.latent_dim)

    def __init__(self, trunk: nn.Module, width: int, out_features: int):
        super().__init__()
        self.trunk = trunk
        self.mean = nn.Linear(width, out_features)
        self.log_var = nn.Linear(width, out_features)

    def forward(self, h: Tensor) -> GaussianParams:
        """Mean and log-variance, each [..., out_features]."""
        h = self.trunk(h)
        return self.mean(h), self.log_var(h)

    @staticmethod
    def distribution(params: GaussianParams) -> DiagonalGaussian:
        return DiagonalGaussian(*params)

    @staticmethod
    def base(params: GaussianParams) -> DiagonalGaussian:
        """The Gaussian of the parameters (a flow posterior's q_0; here the distribution itself)."""
        return DiagonalGaussian(*params)

    def frozen(self, h: Tensor) -> DiagonalGaussian:
        """The distribution at h with this layer's parameters stopped."""
        return DiagonalGaussian(*frozen(self)(h))

    @property
    def out_features(self) -> int:
        return self.mean.out_features
