"""Bounds on log p(x) built from importance log-weights log w = log p(x,z) - log q(z|x)."""

import math
from typing import Callable

import torch
from torch import Tensor


def iwae_bound(log_weights: Tensor) -> Tensor:
    """Importance-weighted bound L_k = log (1/k) sum_i w_i over dim 0 (Burda et al. eq. 8).

    With k=1 it is the Monte Carlo ELBO; it grows with k towards log p(x).
    """
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def importance_sampled_log_likelihood(
    log_weights: Callable[[int], Tensor], num_samples: int, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Estimate log p(x) and the ELBO from ``num_samples`` importance samples, in chunks.

    ``log_weights(n)`` returns n fresh log-weights per example, shape [n, batch]. The
    log-likelihood estimate is L_S with S = num_samples (Burda et al. eq. 8, section 5.1);
    the ELBO estimate is the mean log-weight (Kingma & Welling eq. 3). Only one chunk of
    samples is in memory at a time, so memory does not grow with ``num_samples``.
    """
    log_sum = mean_sum = None
    for start in range(0, num_samples, chunk_size):
        chunk = log_weights(min(chunk_size, num_samples - start))
        chunk_log_sum = torch.logsumexp(chunk, dim=0)
        chunk_sum = chunk.sum(dim=0)
        if log_sum is None:
            log_sum, mean_sum = chunk_log_sum, chunk_sum
        else:
            log_sum = torch.logaddexp(log_sum, chunk_log_sum)
            mean_sum = mean_sum + chunk_sum
    return log_sum - math.log(num_samples), mean_sum / num_samples
