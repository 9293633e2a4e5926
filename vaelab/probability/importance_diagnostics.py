"""How far an importance-sampling estimate of log p(x) can be trusted, from its log-weights.

* ``effective_sample_size``: (sum_s w_s)^2 / sum_s w_s^2 of the S weights of one image (Kong
  1992; Owen 2013, eq. 9.13): S for equal weights, 1 when one weight dominates.
* ``pareto_k``: the shape k-hat of a generalized Pareto distribution fitted to the largest
  weights (Vehtari, Simpson, Gelman, Yao & Gabry, *Pareto smoothed importance sampling*, 2024,
  section 3): the weights' distribution has finite moments of order < 1/k, so above k = 0.7
  the estimate's error falls too slowly with S to be trusted (their section 3.2.4).

Every function takes log-weights [S, batch] and returns one value per image, [batch], in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

UNRELIABLE_K = 0.7  # Vehtari et al.'s threshold above which an importance-sampling estimate is unreliable
JUDGED_FROM = 100  # samples from which the tail fit has M >= 20 points: fewer say too little to warn on


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """(sum_s w_s)^2 / sum_s w_s^2 over dim 0, computed from log-weights without overflow: [batch]."""
    log_w = log_weights.double()
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


def tail_length(samples: int) -> int:
    """M = ceil(min(S / 5, 3 sqrt(S))): how many of the largest weights the Pareto fit uses (PSIS, section 3)."""
    return math.ceil(min(0.2 * samples, 3.0 * math.sqrt(samples)))


def pareto_k(log_weights: Tensor) -> Tensor:
    """k-hat of the largest M = :func:`tail_length` (S) weights of each image: [batch].

    The exceedances w - w_(S-M) of the M largest weights over the next largest are fitted by
    Zhang & Stephens's (2009) empirical-Bayes estimate of the generalized Pareto shape, with
    PSIS's weakly informative prior pulling k towards 0.5 with the weight of 10 observations.
    Needs S >= 10 log-weights per image.
    """
    samples = log_weights.shape[0]
    if samples < 10:
        raise ValueError(f"pareto_k needs at least 10 log-weights per image, got {samples}")
    return pareto_k_of_largest(torch.topk(log_weights, tail_length(samples) + 1, dim=0).values)


def pareto_k_of_largest(largest: Tensor) -> Tensor:
    """:func:`pareto_k` from the M + 1 largest log-weights of each image alone, [M + 1, batch]
    in any order, as a stream of samples keeps them."""
    largest = largest.double().transpose(0, 1).sort(dim=1).values  # ascending: the cutoff, then the tail
    # scaled by the largest weight, so that exp cannot overflow; k is scale-free
    scaled = torch.exp(largest - largest[:, -1:])
    exceedances = scaled[:, 1:] - scaled[:, :1]  # [batch, M], ascending
    return _generalized_pareto_shape(exceedances)


def _generalized_pareto_shape(x: Tensor) -> Tensor:
    """Zhang & Stephens's (2009) estimate of the shape k of a generalized Pareto distribution
    (location 0) from each row of ascending, positive ``x`` [batch, n], in the sign convention
    where k > 0 is a heavy tail, with PSIS's prior (n k + 10 * 0.5) / (n + 10)."""
    n = x.shape[1]
    candidates = 80 + int(math.sqrt(n))
    quartile = x[:, int(n / 4 + 0.5) - 1 : int(n / 4 + 0.5)]  # [batch, 1]
    j = torch.arange(1, candidates + 1, dtype=x.dtype, device=x.device)
    theta = 1.0 / x[:, -1:] + (1.0 - torch.sqrt(candidates / (j - 0.5))) / (3.0 * quartile)  # [batch, m]
    k = torch.log1p(-theta.unsqueeze(-1) * x.unsqueeze(1)).mean(-1)  # [batch, m]
    profile = n * (torch.log(-theta / k) - k - 1.0)  # the profile log-likelihood of each theta
    posterior = torch.softmax(profile, dim=1)  # the weights of the candidate thetas
    theta_hat = (posterior * theta).sum(1, keepdim=True)
    k_hat = torch.log1p(-theta_hat * x).mean(1)
    return (n * k_hat + 10 * 0.5) / (n + 10)
