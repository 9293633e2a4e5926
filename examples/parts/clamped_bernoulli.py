"""A likelihood of your own: a Bernoulli whose logits are bounded, |logit| <= bound (a floor on
every pixel's probability, exp(-bound)); from torch.distributions. ``configs/model/clamped_bernoulli.yaml``
picks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.models.likelihoods import Likelihood


class ClampedBernoulliLikelihood(Likelihood):
    name = "clamped_bernoulli"
    binary_data = True  # a probability of binary data

    @dataclass
    class Settings:
        bound: float = 8.0

        def __post_init__(self) -> None:
            if not (math.isfinite(self.bound) and self.bound > 0):
                raise ValueError(f"bound must be a finite number > 0, not {self.bound}")

    def __init__(self, head, bound: float = 8.0):
        super().__init__()
        self.logits = head()
        self.bound = bound

    def params(self, h: Tensor) -> Tensor:
        return self.bound * torch.tanh(self.logits(h) / self.bound)

    def log_prob(self, x: Tensor, logits: Tensor) -> Tensor:
        return torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def sample(self, logits: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(logits))
