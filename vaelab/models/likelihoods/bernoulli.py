"""The Bernoulli likelihood of binary data: ``model.decoder=bernoulli``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vaelab.models.likelihoods.likelihood import LIKELIHOODS, Head, Likelihood
from vaelab.probability.densities import bernoulli_log_prob
from vaelab.registry import no_args

if TYPE_CHECKING:
    from vaelab.config.schema import ModelConfig


@LIKELIHOODS.register
class BernoulliLikelihood(Likelihood):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logit_d)) (Kingma & Welling appendix C.1); params: the logits."""

    name = "bernoulli"
    binary_data = True

    @classmethod
    def from_config(cls, cfg: ModelConfig, head: Head) -> Likelihood:
        no_args(cfg.decoder_args, "model.decoder_args", f"model.decoder={cls.name}")
        return cls(head)

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
