"""Monte Carlo comparison of gradient estimators, for models too small to need more than a
few thousand draws: mean gradients per parameter tensor from G groups of draws, and the
paired t-statistic of two estimators run on the same random numbers."""

from __future__ import annotations

import torch

from vaelab.config.schema import ModelConfig
from vaelab.models.vae import VAE
from vaelab.objectives import objective_for
from vaelab.probability import objectives


def gradient_groups(vae: VAE, x: torch.Tensor, cfg: ModelConfig, seed: int, groups: int, draws: int) -> dict[str, torch.Tensor]:
    """Parameter name -> [groups, numel]: each row the gradient of ``cfg``'s training loss on x
    repeated ``draws`` times (every copy its own samples), from the seed ``seed``."""
    torch.manual_seed(seed)
    copies = x.repeat(draws, 1)
    rows: dict[str, list[torch.Tensor]] = {name: [] for name, _ in vae.named_parameters()}
    for _ in range(groups):
        vae.zero_grad()
        objective_for(cfg).training_loss(vae, copies)[0].backward()
        for name, p in vae.named_parameters():
            assert p.grad is not None, f"no gradient reaches {name}"
            rows[name].append(p.grad.flatten().clone())
    return {name: torch.stack(row) for name, row in rows.items()}


def paired_t(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], floor: float = 1e-10) -> dict[str, torch.Tensor]:
    """Per tensor and coordinate: the mean of a - b over the groups over its standard error (floored)."""
    t = {}
    for name in a:
        d = a[name] - b[name]
        t[name] = d.mean(0) / (d.var(0) / len(d)).sqrt().clamp(min=floor)
    return t
