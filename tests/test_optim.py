"""Optimizers and Burda et al.'s learning-rate schedule."""

import pytest
import torch

from vaelab.config.schema import LRSchedule, OptimConfig, OptimizerKind
from vaelab.models.optim import build_optimizer, build_schedule, burda_lr_factor


def test_burda_schedule_has_eight_stages_of_three_to_the_i_epochs():
    factors = [burda_lr_factor(epoch) for epoch in range(3280)]
    stages = []
    for factor in factors:
        if not stages or stages[-1][0] != factor:
            stages.append([factor, 0])
        stages[-1][1] += 1
    assert [length for _, length in stages] == [3**i for i in range(8)]
    for i, (factor, _) in enumerate(stages):
        assert factor == pytest.approx(10 ** (-i / 7))
    assert burda_lr_factor(10_000) == pytest.approx(0.1)


@pytest.mark.parametrize("kind, cls", [("adam", torch.optim.Adam), ("adagrad", torch.optim.Adagrad), ("sgd", torch.optim.SGD)])
def test_build_optimizer_uses_the_configured_settings(kind, cls):
    cfg = OptimConfig(name=OptimizerKind(kind), lr=0.02, weight_decay=1e-4, betas=[0.8, 0.99], eps=1e-4)
    optimizer = build_optimizer(cfg, torch.nn.Linear(3, 2).parameters())
    assert isinstance(optimizer, cls)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.02 and group["weight_decay"] == 1e-4
    if kind == "adam":
        assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-4


def test_burda_schedule_scales_the_learning_rate_per_epoch():
    cfg = OptimConfig(lr=1e-3, schedule=LRSchedule.burda)
    optimizer = build_optimizer(cfg, torch.nn.Linear(3, 2).parameters())
    schedule = build_schedule(cfg, optimizer)
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([1e-3, *[1e-3 * 10 ** (-1 / 7)] * 3, 1e-3 * 10 ** (-2 / 7)])
    assert build_schedule(OptimConfig(), optimizer) is None
