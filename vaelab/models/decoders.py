"""Generative models p(x|z): one class per likelihood family.

Each decoder has ``log_prob(x, z)``, the exact log-likelihood summed over pixels with a
shape of ``z.shape[:-1]``, and ``mean(z)``, E[x|z] for pictures.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.config.schema import Activation, DecoderKind, ModelConfig
from vaelab.models.mlp import mlp
from vaelab.probability.densities import bernoulli_log_prob, gaussian_log_prob


class BernoulliDecoder(nn.Module):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logit_d(z))) (Kingma & Welling appendix C.1)."""

    def __init__(self, latent_dim: int, hidden: list[int], data_dim: int, activation: Activation):
        super().__init__()
        self.trunk = mlp(latent_dim, hidden, activation)
        self.logits = nn.Linear(hidden[-1] if hidden else latent_dim, data_dim)

    def forward(self, z: Tensor) -> Tensor:
        return self.logits(self.trunk(z))

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        return bernoulli_log_prob(x, self(z))

    def mean(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self(z))


class GaussianDecoder(nn.Module):
    """p(x|z) = N(x; mu(z), diag(sigma^2)) (Kingma & Welling appendix C.2).

    With ``sigma`` given the variance is fixed; with ``sigma=None`` a second head predicts
    each pixel's variance as ``var_floor + softplus(head(h))``, so the density of
    continuous data stays bounded. ``sigmoid_mean`` squashes the mean into (0, 1), as in
    Kingma & Welling's Frey-face model.
    """

    def __init__(
        self,
        latent_dim: int,
        hidden: list[int],
        data_dim: int,
        activation: Activation,
        sigmoid_mean: bool,
        sigma: float | None,
        var_floor: float,
    ):
        super().__init__()
        width = hidden[-1] if hidden else latent_dim
        self.trunk = mlp(latent_dim, hidden, activation)
        self.mean_head = nn.Linear(width, data_dim)
        self.sigmoid_mean = sigmoid_mean
        self.var_floor = var_floor
        self.var_head = nn.Linear(width, data_dim) if sigma is None else None
        self.register_buffer("fixed_log_var", torch.tensor(2.0 * math.log(sigma if sigma else 1.0)))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of p(x|z); the fixed log-variance is a broadcast scalar."""
        h = self.trunk(z)
        mean = self.mean_head(h)
        if self.sigmoid_mean:
            mean = torch.sigmoid(mean)
        if self.var_head is None:
            return mean, self.fixed_log_var
        return mean, torch.log(self.var_floor + F.softplus(self.var_head(h)))

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        mean, log_var = self(z)
        return gaussian_log_prob(x, mean, log_var)

    def mean(self, z: Tensor) -> Tensor:
        return self(z)[0]


def build_decoder(cfg: ModelConfig, data_dim: int) -> nn.Module:
    """The decoder ``cfg.decoder`` names, its hidden layers mirroring the encoder's."""
    hidden = list(reversed(cfg.hidden))
    if cfg.decoder is DecoderKind.bernoulli:
        return BernoulliDecoder(cfg.latent_dim, hidden, data_dim, cfg.activation)
    sigma = cfg.sigma if cfg.decoder is DecoderKind.gaussian else None
    return GaussianDecoder(
        cfg.latent_dim, hidden, data_dim, cfg.activation, cfg.sigmoid_mean, sigma, cfg.var_floor
    )
