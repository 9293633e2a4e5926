"""Likelihoods p(x | z_1): the decoder's distribution over the data, one class per family.

A likelihood owns its output layers (one ``head()`` of the decoder trunk per parameter map)
and turns the trunk's features into its parameters, ``params(h)``. Given those parameters it
has ``log_prob(x, params)``, the exact log-density summed over the data dimensions (every
constant included), ``mean(params)``, E[x|z], and ``sample(params)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.config.schema import DecoderKind, ModelConfig
from vaelab.probability.densities import bernoulli_log_prob, gaussian_log_prob
from vaelab.probability.pixel_densities import (
    continuous_bernoulli_log_prob,
    continuous_bernoulli_mean,
    discretized_logistic_mixture_log_prob,
    discretized_logistic_mixture_mean,
    discretized_logistic_mixture_sample,
)

Head = Callable[[], nn.Module]


class BernoulliLikelihood(nn.Module):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logit_d)) (Kingma & Welling appendix C.1); params: the logits."""

    def __init__(self, head: Head):
        super().__init__()
        self.logits = head()

    def params(self, h: Tensor) -> Tensor:
        return self.logits(h)

    def log_prob(self, x: Tensor, logits: Tensor) -> Tensor:
        return bernoulli_log_prob(x, logits)

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def sample(self, logits: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(logits))


class GaussianLikelihood(nn.Module):
    """p(x|z) = N(x; mu, diag(sigma^2)) (Kingma & Welling appendix C.2); params: (mean, log-variance).

    With ``sigma`` given the variance is fixed (a broadcast scalar); with ``sigma=None`` a
    second head predicts each pixel's variance as ``var_floor + softplus(head(h))``, so the
    density of continuous data stays bounded. ``sigmoid_mean`` squashes the mean into (0, 1),
    as in Kingma & Welling's Frey-face model.
    """

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


class ContinuousBernoulliLikelihood(BernoulliLikelihood):
    """p(x|z) = prod_d CB(x_d; sigmoid(logit_d)) on [0, 1]^D (Loaiza-Ganem & Cunningham 2019, eq. 2);
    params: the logits, from the Bernoulli's head. Its mean is not lambda (eq. 4)."""

    def log_prob(self, x: Tensor, logits: Tensor) -> Tensor:
        return continuous_bernoulli_log_prob(x, logits)

    def mean(self, logits: Tensor) -> Tensor:
        return continuous_bernoulli_mean(logits)

    def sample(self, logits: Tensor) -> Tensor:
        return torch.distributions.ContinuousBernoulli(logits=logits).sample()


LogisticParams = tuple[Tensor, Tensor, "Tensor | None"]


class DiscretizedLogisticLikelihood(nn.Module):
    """p(x|z) = prod_d sum_k pi_dk DLogistic(x_d; mu_dk, s_dk) on the 256 levels j/255 (Salimans
    et al. 2017, section 2.1); every dimension (pixel and channel) independent given z.

    params: means and log-scales [..., D, K] (log s = floor + softplus(head - floor), a smooth
    floor) and the mixture logits [..., D, K] (None for K = 1). One head per map: K for the
    means, K for the log-scales, then K for the logits when K > 1.
    """

    def __init__(self, head: Head, mixtures: int, log_scale_floor: float):
        super().__init__()
        self.mean_heads = nn.ModuleList(head() for _ in range(mixtures))
        self.log_scale_heads = nn.ModuleList(head() for _ in range(mixtures))
        self.logit_heads = nn.ModuleList(head() for _ in range(mixtures)) if mixtures > 1 else None
        self.log_scale_floor = log_scale_floor

    def params(self, h: Tensor) -> LogisticParams:
        means = torch.stack([m(h) for m in self.mean_heads], dim=-1)
        raw = torch.stack([m(h) for m in self.log_scale_heads], dim=-1)
        log_scales = self.log_scale_floor + F.softplus(raw - self.log_scale_floor)
        logits = None if self.logit_heads is None else torch.stack([m(h) for m in self.logit_heads], dim=-1)
        return means, log_scales, logits

    def log_prob(self, x: Tensor, params: LogisticParams) -> Tensor:
        return discretized_logistic_mixture_log_prob(x, *params)

    def mean(self, params: LogisticParams) -> Tensor:
        return discretized_logistic_mixture_mean(*params)

    def sample(self, params: LogisticParams) -> Tensor:
        return discretized_logistic_mixture_sample(*params)


def build_likelihood(cfg: ModelConfig, head: Head) -> nn.Module:
    """The likelihood ``model.decoder`` names, with its output layers from ``head``."""
    if cfg.decoder is DecoderKind.bernoulli:
        return BernoulliLikelihood(head)
    if cfg.decoder is DecoderKind.gaussian:
        return GaussianLikelihood(head, cfg.sigmoid_mean, cfg.sigma, cfg.var_floor)
    if cfg.decoder is DecoderKind.gaussian_learned:
        return GaussianLikelihood(head, cfg.sigmoid_mean, None, cfg.var_floor)
    if cfg.decoder is DecoderKind.continuous_bernoulli:
        return ContinuousBernoulliLikelihood(head)
    if cfg.decoder is DecoderKind.logistic:
        return DiscretizedLogisticLikelihood(head, cfg.mixtures, cfg.log_scale_floor)
    raise NotImplementedError(f"model.decoder={cfg.decoder.value} has no branch in build_likelihood")


class Decoder(nn.Module):
    """p(x | z_1): a network trunk and a likelihood on its features."""

    def __init__(self, trunk: nn.Module, likelihood: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.likelihood = likelihood

    def params(self, z: Tensor) -> object:
        return self.likelihood.params(self.trunk(z))

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z), [*z.shape[:-1]]."""
        return self.likelihood.log_prob(x, self.params(z))

    def mean(self, z: Tensor) -> Tensor:
        """E[x|z], [*z.shape[:-1], D]."""
        return self.likelihood.mean(self.params(z))

    def sample(self, z: Tensor) -> Tensor:
        return self.likelihood.sample(self.params(z))
