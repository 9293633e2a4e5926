"""Surrogate objectives: per-example tensors whose value is a (KL-weighted) bound and whose
gradient is a chosen estimator of that bound's gradient.

Notation: log w_i = log p(x|z_i) + beta * (log p(z_i) - log q(z_i|x)), i = 1..k, the
log-weights with the KL weight ``beta`` (beta = 1: Burda et al.'s; beta != 1 only in training,
Bowman et al. 2016). Derivations, the KL weight included, are in docs/estimators.md.
"""

import torch
from torch import Tensor

from vaelab.probability.bounds import iwae_bound


def weighted_log_weights(log_likelihood: Tensor, log_ratio: Tensor, weight: Tensor) -> Tensor:
    """log p(x|z) + weight * (log p(z) - log q(z|x)): the log-weights with the KL term weighted."""
    return log_likelihood + weight * log_ratio


def with_value(surrogate: Tensor, value: Tensor) -> Tensor:
    """``value`` in the forward pass, ``surrogate``'s gradient in the backward pass."""
    return surrogate + (value - surrogate).detach()


def dreg_surrogate(log_w_fixed_z: Tensor, log_w: Tensor, weight: Tensor) -> Tensor:
    """IWAE-DReG (Tucker, Lawson, Gu & Maddison 2019, section 3): [k, batch] -> [batch].

    Both inputs are the same log-weights: ``log_w`` computed from the reparameterized
    samples z with log q's parameters stopped, ``log_w_fixed_z`` from the samples detached
    (its gradient reaches only p's parameters theta). With normalised weights w~_i and
    c_i = (1 - beta) w~_i + beta w~_i^2, the surrogate sum_i (w~_i - c_i) log w_i(fixed z)
    + c_i log w_i has the gradients

    * theta: sum_i w~_i d log w_i / d theta, the usual IWAE gradient (Burda et al. eq. 12);
    * phi (q's parameters): sum_i c_i d log w_i / d z_i dz_i / d phi. For beta = 1, c_i = w~_i^2,
      Tucker et al.'s estimator; for beta != 1 the score term removed is beta times as large,
      hence the mixture (docs/estimators.md).

    The value is the bound L_k of the log-weights.
    """
    normalised = torch.softmax(log_w_fixed_z.detach(), dim=0)
    encoder_coefficient = (1.0 - weight) * normalised + weight * normalised.square()
    surrogate = ((normalised - encoder_coefficient) * log_w_fixed_z + encoder_coefficient * log_w).sum(0)
    return with_value(surrogate, iwae_bound(log_w_fixed_z.detach()))
