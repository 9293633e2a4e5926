"""The log-density of a mixture of diagonal Gaussians, sum_k pi_k N(z; mu_k, diag(exp(s_k))), as
a matrix product: the VampPrior, the mixture prior and the aggregate posterior of the mutual
information score K components at every z, and broadcasting z - mu_k would build a [..., K, d]
tensor (50 x 100 x 500 x 20 numbers per chunk of the VampPrior's test-set estimate).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaelab.probability.densities import LOG_2PI

# Rows of z per product: the [rows, K] block of log-densities stays in a core's cache between
# the product and the logsumexp's passes over it.
BLOCK_ROWS = 512


def diagonal_gaussian_mixture_log_prob(z: Tensor, means: Tensor, log_vars: Tensor, log_weights: Tensor) -> Tensor:
    """log sum_k pi_k N(z; mu_k, diag(exp(s_k))), [...], for z [..., d], means mu and log-variances
    s [K, d] and log-weights log pi [K] (added as given, normalised or not).

    The quadratic form in matrix products, with precisions P = exp(-s): sum_d (z_d - mu_kd)^2 P_kd
    = (z*z) P^T - 2 z (mu*P)^T + sum_d mu_kd^2 P_kd, so log pi_k + log N(z; mu_k, .) =
    [z*z, z] [-P/2, mu*P]^T + log pi_k - (d log 2pi + sum_d s_kd + sum_d mu_kd^2 P_kd) / 2.
    Its terms cancel where z is near a narrow component far from the origin: it is computed in
    float64 (float32's error reaches nats there; docs/speed.md), on z and mu centred on the mean
    of the means, and the value is returned in z's dtype.
    """
    d, dtype = z.shape[-1], z.dtype
    wide = torch.float64 if z.device.type != "mps" else dtype  # MPS has no float64
    means, log_vars, log_weights = means.to(wide), log_vars.to(wide), log_weights.to(wide)
    centre = means.detach().mean(0)  # a constant shift: the same values and gradients, smaller terms
    flat, means = z.reshape(-1, d).to(wide) - centre, means - centre
    precisions = torch.exp(-log_vars)
    weighted = means * precisions
    offsets = log_weights - 0.5 * (d * LOG_2PI + log_vars.sum(-1) + (means * weighted).sum(-1))  # [K]
    coefficients = torch.cat([-0.5 * precisions, weighted], -1).T  # [2d, K]
    blocks = [
        _logsumexp(torch.addmm(offsets, torch.cat([rows * rows, rows], -1), coefficients))
        for rows in flat.split(BLOCK_ROWS)
    ]
    return torch.cat(blocks).to(dtype).reshape(z.shape[:-1])


def _logsumexp(x: Tensor) -> Tensor:
    """torch.logsumexp over the last dimension, each term under exp(floor) times the largest
    raised to that: the sum moves by far less than its rounding, and on the CPU exp is many
    times slower where its result underflows (a mixture's far components)."""
    floor = 0.9 * math.log(torch.finfo(x.dtype).tiny)
    top = x.detach().amax(-1, keepdim=True)
    shift = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    if x.requires_grad:
        terms = (x - shift).clamp(min=floor).exp_()
    else:  # no graph to keep: overwrite the block in place, fewer passes over memory
        terms = x.sub_(shift).clamp_(min=floor).exp_()
    total = terms.sum(-1).log() + shift.squeeze(-1)
    return torch.where(top.squeeze(-1) == -math.inf, top.squeeze(-1), total)  # every term 0: log 0
