"""Gaussian likelihoods, of fixed or learned variance: ``model.decoder=gaussian|gaussian_learned``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.models.likelihoods.likelihood import LIKELIHOODS, Head, Likelihood
from vaelab.probability.densities import gaussian_log_prob
from vaelab.registry import no_args

if TYPE_CHECKING:
    from vaelab.config.schema import ModelConfig


@LIKELIHOODS.register
class GaussianLikelihood(Likelihood):
    """p(x|z) = N(x; mu, diag(sigma^2)) (Kingma & Welling appendix C.2); params: (mean, log-variance).

    With ``sigma`` given the variance is fixed (a broadcast scalar); with ``sigma=None`` a
    second head predicts each pixel's variance as ``var_floor + softplus(head(h))``, so the
    density of continuous data stays bounded. ``sigmoid_mean`` squashes the mean into (0, 1),
    as in Kingma & Welling's Frey-face model.
    """

    name = "gaussian"

    @classmethod
    def from_config(cls, cfg: ModelConfig, head: Head) -> Likelihood:
        no_args(cfg.decoder_args, "model.decoder_args", f"model.decoder={cls.name}")
        return cls(head, cfg.sigmoid_mean, cfg.sigma, cfg.var_floor)

    def __init__(self, head: Head, sigmoid_mean: bool, sigma: float | None, var_floor: float):
        super().__init__()
        self.mean_head = head()
        self.sigmoid_mean = sigmoid_mean
        self.var_floor = var_floor
        self.var_head = head() if sigma is None else None
        self.register_buffer("fixed_log_var", torch.tensor(2.0 * math.log(sigma if sigma else 1.0)))

    def params(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean = self.mean_head(h)
        if self.sigmoid_mean:
            mean = torch.sigmoid(mean)
        if self.var_head is None:
            return mean, self.fixed_log_var
        return mean, torch.log(self.var_floor + F.softplus(self.var_head(h)))

    def log_prob(self, x: Tensor, params: tuple[Tensor, Tensor]) -> Tensor:
        return gaussian_log_prob(x, *params)

    def mean(self, params: tuple[Tensor, Tensor]) -> Tensor:
        return params[0]

    def sample(self, params: tuple[Tensor, Tensor]) -> Tensor:
        mean, log_var = params
        return mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)


@LIKELIHOODS.register
class LearnedVarianceGaussianLikelihood(GaussianLikelihood):
    """The Gaussian whose per-pixel variance a second head predicts, ``model.var_floor`` + softplus."""

    name = "gaussian_learned"

    @classmethod
    def from_config(cls, cfg: ModelConfig, head: Head) -> Likelihood:
        no_args(cfg.decoder_args, "model.decoder_args", f"model.decoder={cls.name}")
        return cls(head, cfg.sigmoid_mean, None, cfg.var_floor)
