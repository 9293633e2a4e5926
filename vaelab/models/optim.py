"""Optimizers, learning-rate schedules and the KL weight's warm-up or cycles, built from an :class:`OptimConfig`."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from vaelab.config.schema import LRSchedule, OptimConfig, OptimizerKind

BURDA_STAGES = 8  # stage i lasts 3^i epochs at lr * 10^(-i/7): 3280 epochs in all


def burda_lr_factor(epoch: int) -> float:
    """Burda et al. (section 5): for i = 0..7, 3^i passes over the data at lr * 10^(-i/7)."""
    end = 0
    for stage in range(BURDA_STAGES):
        end += 3**stage
        if epoch < end:
            return 10.0 ** (-stage / 7)
    return 10.0 ** (-(BURDA_STAGES - 1) / 7)


def kl_weight(beta: float, warmup_epochs: float, epochs_done: float) -> float:
    """The KL weight after ``epochs_done`` epochs (fractional: the module passes
    epoch + batch / batches per epoch, so the weight moves every step): rising linearly from
    0 to ``beta`` over ``warmup_epochs`` (Bowman et al. 2016; Sonderby et al. 2016), then
    ``beta``; ``beta`` throughout when ``warmup_epochs`` is 0."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, epochs_done / warmup_epochs)


def cyclical_kl_weight(beta: float, cycles: int, ratio: float, step: int, total_steps: int) -> float:
    """The KL weight at optimizer step ``step`` (from 0) of ``total_steps`` under Fu et al. 2019's
    cyclical schedule (their eq. 4 with t = step + 1): tau = (step mod ceil(T/M)) / (T/M), the
    weight ``beta * tau / R`` while tau <= R (``ratio``), then ``beta``; M = ``cycles``."""
    period = total_steps / cycles
    tau = (step % math.ceil(period)) / period
    return beta * min(1.0, tau / ratio)


def build_optimizer(cfg: OptimConfig, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The configured torch.optim optimizer, in its fused form (one kernel per step for all
    parameters) where torch has one for these parameters' device, else the default form."""
    parameters = list(parameters)
    kwargs: dict = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name is OptimizerKind.adam:
        optimizer, kwargs = torch.optim.Adam, {**kwargs, "betas": tuple(cfg.betas), "eps": cfg.eps}
    elif cfg.name is OptimizerKind.adagrad:
        optimizer = torch.optim.Adagrad
    else:
        optimizer = torch.optim.SGD
    try:
        return optimizer(parameters, fused=True, **kwargs)
    except RuntimeError:  # torch has no fused kernel for this optimizer on this device
        return optimizer(parameters, **kwargs)


def build_schedule(cfg: OptimConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch learning-rate schedule, or None for a constant rate."""
    if cfg.schedule is LRSchedule.burda:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, burda_lr_factor)
    return None
