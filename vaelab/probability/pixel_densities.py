"""Normalised likelihoods of pixel intensities, summed over the last dimension, in nats.

* The continuous Bernoulli on [0, 1] (Loaiza-Ganem & Cunningham 2019, eq. 2-3): a density of
  grey levels, parameterised by logits l = logit(lambda).
* The discretized logistic mixture on 256 levels (Salimans et al. 2017, PixelCNN++, section
  2.1): a probability of each 8-bit value. Bin layout: the data are x = j/255, j = 0..255; bin j
  is [x - 1/510, x + 1/510), the first extends to -inf and the last to +inf, so the 256
  probabilities sum to 1.

Each dimension (pixel and channel) is independent given the parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.probability.densities import bernoulli_log_prob

LEVELS = 256
HALF_BIN = 0.5 / (LEVELS - 1)  # data are j / 255: a bin is 1/255 wide, centred on its level
CB_TAYLOR_BELOW = 1e-2  # |logit| under which the series of log C and of the mean are used
CB_MEAN_TAYLOR_BELOW = 1e-1


def continuous_bernoulli_log_norm(logits: Tensor) -> Tensor:
    """log C(lambda), C = 2 atanh(1 - 2 lambda) / (1 - 2 lambda) (eq. 3), elementwise.

    In logits C = l / tanh(l / 2), even in l and 2 at l = 0 (lambda = 1/2), where the ratio is
    0/0; there log C = log 2 + u^2/3 - 7u^4/90 + 62u^6/2835 with u = l/2 (error O(u^8))."""
    small = logits.abs() < CB_TAYLOR_BELOW
    a = torch.where(small, torch.ones_like(logits), logits.abs())  # a safe value where the series is used
    direct = torch.log(a) - torch.log(torch.tanh(0.5 * a))
    u2 = (0.5 * logits).pow(2)
    series = math.log(2.0) + u2 * (1.0 / 3.0 + u2 * (-7.0 / 90.0 + u2 * (62.0 / 2835.0)))
    return torch.where(small, series, direct)


def continuous_bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log CB(x; lambda) = log C(lambda) + x log lambda + (1 - x) log(1 - lambda), x in [0, 1] (eq. 2)."""
    return bernoulli_log_prob(x, logits) + continuous_bernoulli_log_norm(logits).sum(-1)


def continuous_bernoulli_mean(logits: Tensor) -> Tensor:
    """E[x] = lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda)) = 1 / (1 - e^-l) - 1/l, which
    is not lambda; near l = 0 the two terms cancel: 1/2 + l/12 - l^3/720 + l^5/30240 there."""
    small = logits.abs() < CB_MEAN_TAYLOR_BELOW
    safe = torch.where(small, torch.ones_like(logits), logits)
    direct = -1.0 / torch.expm1(-safe) - 1.0 / safe
    l2 = logits.pow(2)
    series = 0.5 + logits * (1.0 / 12.0 + l2 * (-1.0 / 720.0 + l2 * (1.0 / 30240.0)))
    return torch.where(small, series, direct)


def _log1mexp(delta: Tensor) -> Tensor:
    """log(1 - e^-delta) for delta > 0, stably at both ends (Maechler 2012)."""
    return torch.where(delta < math.log(2.0), torch.log(-torch.expm1(-delta)), torch.log1p(-torch.exp(-delta)))


def discretized_logistic_log_probs(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(bin of x) under each logistic component, elementwise: x [..., D, 1] or [..., D, K].

    P = sigmoid(a) - sigmoid(b) with a, b the bin's upper and lower edges standardised; written
    as log sigmoid(a) + log sigmoid(-b) + log(1 - e^-(a - b)), which never subtracts two close
    numbers, so it needs no fallback where the difference underflows. The first bin drops the
    terms of b (b = -inf), the last those of a (a = +inf)."""
    inv_scale = torch.exp(-log_scales)
    centred = x - means
    a = (centred + HALF_BIN) * inv_scale
    b = (centred - HALF_BIN) * inv_scale
    first = x < HALF_BIN
    last = x > 1.0 - HALF_BIN
    zero = torch.zeros_like(a)
    upper = torch.where(last, zero, F.logsigmoid(a))
    lower = torch.where(first, zero, F.logsigmoid(-b))
    width = torch.where(first | last, zero, _log1mexp(2.0 * HALF_BIN * inv_scale))
    return upper + lower + width


def discretized_logistic_mixture_log_prob(
    x: Tensor, means: Tensor, log_scales: Tensor, mixture_logits: Tensor | None
) -> Tensor:
    """log sum_k pi_k P_k(bin of x), summed over D: x [..., D]; means, log_scales [..., D, K];
    mixture_logits [..., D, K] or None for one component."""
    log_probs = discretized_logistic_log_probs(x.unsqueeze(-1), means, log_scales)
    if mixture_logits is None:
        return log_probs.squeeze(-1).sum(-1)
    return torch.logsumexp(log_probs + F.log_softmax(mixture_logits, dim=-1), dim=-1).sum(-1)


def discretized_logistic_mixture_mean(means: Tensor, log_scales: Tensor, mixture_logits: Tensor | None) -> Tensor:
    """E[x] over the 256 levels, [..., D]: for x = j/255, E[x] = (1/255) sum_{j=1}^{255} P(x >= j/255)
    with P(x >= j/255) = sum_k pi_k sigmoid((mu_k - (j - 1/2)/255) / s_k); in [0, 1] by construction."""
    weights = torch.ones_like(means) if mixture_logits is None else torch.softmax(mixture_logits, dim=-1)
    inv_scale = torch.exp(-log_scales)
    total = torch.zeros_like(means)
    for j in range(1, LEVELS):  # one edge at a time: memory as the parameters'
        total = total + torch.sigmoid((means - (j - 0.5) / (LEVELS - 1)) * inv_scale)
    return (weights * total).sum(-1) / (LEVELS - 1)


def discretized_logistic_mixture_sample(means: Tensor, log_scales: Tensor, mixture_logits: Tensor | None) -> Tensor:
    """One draw per dimension, [..., D], on the levels j/255: a component, a logistic, its bin."""
    if mixture_logits is None:
        mu, log_s = means.squeeze(-1), log_scales.squeeze(-1)
    else:
        pick = torch.distributions.Categorical(logits=mixture_logits).sample().unsqueeze(-1)
        mu, log_s = means.gather(-1, pick).squeeze(-1), log_scales.gather(-1, pick).squeeze(-1)
    u = torch.rand_like(mu).clamp(1e-6, 1.0 - 1e-6)
    value = mu + torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))
    return torch.round(value * (LEVELS - 1)).clamp(0, LEVELS - 1) / (LEVELS - 1)
