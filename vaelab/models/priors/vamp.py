"""The VampPrior (Tomczak & Welling 2018): ``prior=vamp``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vaelab.models.priors.mixture import sample_mixture
from vaelab.models.priors.prior import PRIORS, PosteriorOf, Prior
from vaelab.probability.distributions import DiagonalGaussian
from vaelab.probability.mixtures import diagonal_gaussian_mixture_log_prob
from vaelab.registry import no_args

if TYPE_CHECKING:
    from vaelab.config.schema import PriorConfig


@PRIORS.register
class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z | u_k) (Tomczak & Welling 2018, eq. 9): the posteriors of K learned
    pseudo-inputs u_k, each kept in [0, 1] by a hard tanh as in their code.

    ``posterior_of(u)`` is the model's diagonal-Gaussian posterior of the top layer given inputs
    u; in a hierarchy it follows the encoders' means to the top layer, since the marginal
    q(z_L|u) has no closed form (with one layer it is q(z|u) itself).
    """

    name = "vamp"

    @classmethod
    def from_config(cls, cfg: PriorConfig, latent_dim: int, data_dim: int, posterior_of: PosteriorOf) -> Prior:
        no_args(cfg.args, "prior.args", "prior=vamp")
        return cls(latent_dim, data_dim, cfg.components, cfg.pseudo_init_mean, cfg.pseudo_init_std, posterior_of)

    def describe(self) -> str:
        return f"VampPrior, {len(self.pseudo_inputs)} pseudo-inputs"

    def __init__(
        self, latent_dim: int, data_dim: int, components: int, init_mean: float, init_std: float,
        posterior_of: PosteriorOf,
    ):
        super().__init__(latent_dim)
        self.pseudo_inputs = nn.Parameter(init_mean + init_std * torch.randn(components, data_dim))
        self._posterior_of = posterior_of  # the model's encoder, registered there and not here
        self._fixed: DiagonalGaussian | None = None  # the components, inside fixed()

    def components(self) -> DiagonalGaussian:
        """q(z | u_k) for every pseudo-input: mean and log-variance [K, d]."""
        if self._fixed is not None and not torch.is_grad_enabled():
            return self._fixed
        return self._posterior_of(torch.nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0))

    @contextmanager
    def fixed(self) -> Iterator[None]:
        """The K posteriors computed once for every log_prob inside (without gradient), not once
        per chunk of samples: the encoder's pass over the pseudo-inputs."""
        with torch.no_grad():
            self._fixed = self.components()
        try:
            yield
        finally:
            self._fixed = None

    def log_prob(self, z: Tensor) -> Tensor:
        q = self.components()
        uniform = torch.full((len(self.pseudo_inputs),), -math.log(len(self.pseudo_inputs)), device=z.device)
        return diagonal_gaussian_mixture_log_prob(z, q.mean, q.log_var, uniform)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        q = self.components()
        uniform = torch.full((len(self.pseudo_inputs),), -math.log(len(self.pseudo_inputs)))
        return sample_mixture(q, uniform, n, generator)
