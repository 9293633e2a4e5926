"""Image grids of prior samples and of reconstructions next to their inputs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from vaelab.models.vae import VAE


def _as_images(x: Tensor, image_shape: tuple[int, int]) -> Tensor:
    return x.reshape(-1, 1, *image_shape).clamp(0, 1).cpu()


@torch.no_grad()
def image_grids(vae: VAE, test_images: Tensor, image_shape: tuple[int, int], count: int, seed: int) -> dict[str, Tensor]:
    """``samples``: decoder means E[x|z] for z from the prior; ``reconstructions``: rows of
    inputs above their reconstructions E[x | z = mu(x)]."""
    device = next(vae.parameters()).device
    per_row = min(8, count)
    count -= count % per_row  # whole rows, so each input sits above its reconstruction
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(count, vae.top_latent_dim, generator=generator).to(device)
    samples = _as_images(vae.decode_from_top(z), image_shape)
    inputs = test_images[:count].to(device)
    recon = _as_images(vae.reconstruct(inputs), image_shape)
    pairs = []
    for start in range(0, len(recon), per_row):
        pairs += [_as_images(inputs[start : start + per_row], image_shape), recon[start : start + per_row]]
    return {
        "samples": make_grid(samples, nrow=per_row, padding=2, pad_value=1.0),
        "reconstructions": make_grid(torch.cat(pairs), nrow=per_row, padding=2, pad_value=1.0),
    }


def save_grids(grids: dict[str, Tensor], run_dir: Path) -> dict[str, Path]:
    paths = {}
    for name, grid in grids.items():
        paths[name] = run_dir / f"{name}.png"
        save_image(grid, paths[name])
    return paths
