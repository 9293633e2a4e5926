"""The discretized logistic mixture of the 256 grey levels: ``model.decoder=logistic``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.models.likelihoods.likelihood import LIKELIHOODS, Head, Likelihood
from vaelab.probability.pixel_densities import (
    discretized_logistic_mixture_log_prob,
    discretized_logistic_mixture_mean,
    discretized_logistic_mixture_sample,
)
from vaelab.registry import no_args

if TYPE_CHECKING:
    from vaelab.config.schema import ModelConfig

LogisticParams = tuple[Tensor, Tensor, "Tensor | None"]


@LIKELIHOODS.register
class DiscretizedLogisticLikelihood(Likelihood):
    """p(x|z) = prod_d sum_k pi_dk DLogistic(x_d; mu_dk, s_dk) on the 256 levels j/255 (Salimans
    et al. 2017, section 2.1); every dimension (pixel and channel) independent given z.

    params: means and log-scales [..., D, K] (log s = floor + softplus(head - floor), a smooth
    floor) and the mixture logits [..., D, K] (None for K = 1). One head per map: K for the
    means, K for the log-scales, then K for the logits when K > 1.
    """

    name = "logistic"
    grey_levels = True

    @classmethod
    def from_config(cls, cfg: ModelConfig, head: Head) -> Likelihood:
        no_args(cfg.decoder_args, "model.decoder_args", f"model.decoder={cls.name}")
        return cls(head, cfg.mixtures, cfg.log_scale_floor)

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
