"""The continuous Bernoulli density on [0, 1]: ``model.decoder=continuous_bernoulli``."""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.models.likelihoods.bernoulli import BernoulliLikelihood
from vaelab.models.likelihoods.likelihood import LIKELIHOODS
from vaelab.probability.pixel_densities import continuous_bernoulli_log_prob, continuous_bernoulli_mean


@LIKELIHOODS.register
class ContinuousBernoulliLikelihood(BernoulliLikelihood):
    """p(x|z) = prod_d CB(x_d; sigmoid(logit_d)) on [0, 1]^D (Loaiza-Ganem & Cunningham 2019, eq. 2);
    params: the logits, from the Bernoulli's head. Its mean is not lambda (eq. 4)."""

    name = "continuous_bernoulli"
    binary_data = False  # a normalised density of grey levels

    def log_prob(self, x: Tensor, logits: Tensor) -> Tensor:
        return continuous_bernoulli_log_prob(x, logits)

    def mean(self, logits: Tensor) -> Tensor:
        return continuous_bernoulli_mean(logits)

    def sample(self, logits: Tensor) -> Tensor:
        return torch.distributions.ContinuousBernoulli(logits=logits).sample()
