"""A dataset of your own: binary 8x8 images of random horizontal and vertical bars, drawn from a
seed (no files). ``configs/data/bars.yaml`` picks it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaelab.data.splits import Dataset, Splits


class BarsDataset(Dataset):
    name = "bars"
    image_shape = (1, 8, 8)
    binary = True

    @dataclass
    class Settings:
        train: int = 1000
        test: int = 200

    def __init__(self, train: int = 1000, test: int = 200):
        self.sizes = train, test

    def ensure(self, root, download: bool) -> None:
        """Nothing to download: the images are drawn."""

    def load(self, cfg, generator: torch.Generator) -> Splits:
        train, test = self.sizes
        images = self._draw(train + cfg.val_size + test, generator)
        return Splits(train=images[:train], val=images[train:train + cfg.val_size], test=images[train + cfg.val_size:])

    @staticmethod
    def _draw(n: int, generator: torch.Generator) -> torch.Tensor:
        rows = torch.rand(n, 8, 1, generator=generator) < 0.25
        columns = torch.rand(n, 1, 8, generator=generator) < 0.25
        return (rows | columns).reshape(n, 64).float()
