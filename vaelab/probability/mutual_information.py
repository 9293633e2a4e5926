"""The mutual information I_q(x; z) between the data and a diagonal-Gaussian code under the
encoder's joint q(x, z) = p_data(x) q(z|x), estimated on a batch.

I_q(x; z) = E_x[KL(q(z|x) || q(z))] with q(z) = E_x[q(z|x)] the aggregate posterior (Hoffman &
Johnson 2016, "ELBO surgery", eq. 3), estimated as in He et al. 2019 ("Lagging inference
networks", their code's ``calc_mi``): E_x E_q[log q(z|x)] = -H[q(z|x)] in closed form, and for
one sample z_i ~ q(z|x_i) per example, log q(z_i) ~ logsumexp_j log q(z_i|x_j) - log N over the
batch's N posteriors. The estimate is consistent in N (biased below log N for a finite batch).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaelab.probability.densities import LOG_2PI
from vaelab.probability.mixtures import diagonal_gaussian_mixture_log_prob


def mutual_information(mean: Tensor, log_var: Tensor, z: Tensor) -> Tensor:
    """He et al.'s estimate of I_q(x; z) in nats, a 0-dim tensor, from q(z|x_i)'s ``mean`` and
    ``log_var`` and one sample ``z`` of each, [N, d] each."""
    n, d = mean.shape
    negative_entropy = (-0.5 * (d * LOG_2PI + (1.0 + log_var).sum(-1))).mean()
    uniform = torch.full((n,), -math.log(n), dtype=mean.dtype, device=mean.device)
    log_aggregate = diagonal_gaussian_mixture_log_prob(z, mean, log_var, uniform)  # the batch's N posteriors
    return negative_entropy - log_aggregate.mean()
