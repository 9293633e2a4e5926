"""Update skipping (``trainer.skip_threshold``, VDVAE): an update whose gradient norm, before
clipping, reaches the threshold or is not finite leaves the parameters and the optimizer state as
they were and is counted; any other update is taken, and a threshold never reached changes no number."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from tests.helpers import SHARED_DATA, metrics_rows, needs_mnist
from vaelab.fit import main
from vaelab.training.updates import GradientUpdate


def model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    return model, optimizer


def gradient_of(model: nn.Module, scale: float = 1.0) -> float:
    """Backpropagate a loss into ``model`` and return the gradient's norm."""
    model.zero_grad(set_to_none=True)
    (scale * model(torch.ones(2, 4)).pow(2).sum()).backward()
    return float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]))


def update(model: nn.Module, optimizer: torch.optim.Optimizer, gradients: GradientUpdate) -> bool:
    """The module's direct update after the backward pass; whether it was taken."""
    skipped = gradients.skips(gradients.clip_directly(list(model.parameters())))
    if not skipped:
        optimizer.step()
    return not skipped


def test_an_update_at_the_threshold_is_skipped_and_one_below_it_is_taken():
    model, optimizer = model_and_optimizer()
    norm = gradient_of(model)
    at = GradientUpdate(clip=None, skip_threshold=norm)
    assert not update(model, optimizer, at) and at.skipped == 1
    below = GradientUpdate(clip=None, skip_threshold=math.nextafter(norm, math.inf) * (1 + 1e-6))
    before = copy.deepcopy(model.state_dict())
    assert update(model, optimizer, below) and below.skipped == 0
    assert not torch.equal(model.weight, before["weight"])


def test_a_skipped_update_leaves_parameters_and_optimizer_state_as_they_were():
    model, optimizer = model_and_optimizer()
    gradients = GradientUpdate(clip=None, skip_threshold=1e3)
    gradient_of(model)
    assert update(model, optimizer, gradients)  # a normal batch updates: Adam now has moments
    state = copy.deepcopy(optimizer.state_dict())
    parameters = copy.deepcopy(model.state_dict())
    for planted in (1e6, float("nan")):  # a huge gradient, then a NaN one
        gradient_of(model, planted)
        assert not update(model, optimizer, gradients)
        for name, value in model.state_dict().items():
            assert torch.equal(value, parameters[name]), name
        for index, moments in optimizer.state_dict()["state"].items():
            for key, value in moments.items():
                assert torch.equal(value, state["state"][index][key]), (index, key)
    assert gradients.skipped == 2
    gradient_of(model)
    assert update(model, optimizer, gradients) and gradients.skipped == 2


def test_the_threshold_judges_the_norm_before_clipping():
    model, optimizer = model_and_optimizer()
    norm = gradient_of(model)
    gradients = GradientUpdate(clip=0.1 * norm, skip_threshold=0.5 * norm)  # clipped it would pass
    assert not update(model, optimizer, gradients)
    norm = gradient_of(model)
    gradients = GradientUpdate(clip=0.1 * norm, skip_threshold=2 * norm)
    assert update(model, optimizer, gradients)
    clipped = float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]))
    assert clipped == pytest.approx(0.1 * norm, rel=1e-6)


FIT = [
    "experiment=smoke", "trainer.progress_bar=false", "eval.ll_samples=4", f"data.root={SHARED_DATA}",
    "trainer.max_epochs=1", "trainer.limit_train_batches=6", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=2", "trainer.compile=false", "model.hidden=[32]", "trainer.gradient_clip_val=5",
]


@pytest.mark.slow
@needs_mnist
def test_a_fit_counts_its_skipped_updates_and_an_unreached_threshold_changes_nothing(tmp_path):
    assert main([*FIT, f"run.dir={tmp_path / 'off'}"]) == 0
    assert main([*FIT, f"run.dir={tmp_path / 'never'}", "trainer.skip_threshold=1e12"]) == 0
    assert main([*FIT, f"run.dir={tmp_path / 'always'}", "trainer.skip_threshold=1e-9"]) == 0
    off, never, always = (metrics_rows(tmp_path / name) for name in ("off", "never", "always"))
    assert [{k: v for k, v in row.items() if k != "train/skipped_updates"} for row in never] == off
    steps = [row for row in always if row.get("train/skipped_updates")]
    assert [int(float(row["train/skipped_updates"])) for row in steps] == [int(row["step"]) + 1 for row in steps] == [2, 4, 6]
    assert all(not row.get("train/skipped_updates") or float(row["train/skipped_updates"]) == 0 for row in never)
    state = {name: torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False) for name in ("always", "never")}
    assert state["always"]["vaelab_skipped_updates"] == 6 and state["never"]["vaelab_skipped_updates"] == 0
    assert state["always"]["optimizer_states"][0]["state"] == {}  # Adam never stepped
