"""What a dataset module hands the data module: its splits as [N, D] rows in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaelab.config.schema import DataConfig
from vaelab.errors import DataError


@dataclass(frozen=True)
class Splits:
    """float32 rows [N, C*H*W] in [0, 1]; ``val`` has no rows when there is no validation."""

    train: Tensor
    val: Tensor
    test: Tensor
    test_labels: Tensor | None = None


@dataclass(frozen=True)
class DatasetSource:
    """One dataset: its files (``ensure``: present, downloaded, or a one-line DataError) and
    its splits (``load``, drawing any seeded split from ``generator`` before binarization)."""

    image_shape: tuple[int, int, int]  # C x H x W
    binary: bool  # the files hold 0/1 already: data.binarize must be none
    ensure: Callable[[str | Path, bool], None]
    load: Callable[[DataConfig, torch.Generator], Splits]


def flatten(images: Tensor) -> Tensor:
    """uint8 images [N, H, W] or [N, C, H, W] -> float32 rows [N, C*H*W] in [0, 1]."""
    return images.reshape(len(images), -1).to(torch.float32).div_(255)


def from_column_major(rows: np.ndarray, height: int = 28, width: int = 28) -> Tensor:
    """[N, H*W], each image stored column-major (MATLAB's order) -> float32 rows [N, H*W]
    row-major: numpy's ``reshape(-1, H, W).reshape(-1, H*W, order='F')`` of the IWAE and
    VampPrior code."""
    images = torch.from_numpy(np.asarray(rows, dtype=np.float32)).reshape(-1, width, height)
    return images.transpose(1, 2).reshape(len(images), height * width).contiguous()


def split_order(num_examples: int, held_out: int, key: str, generator: torch.Generator) -> Tensor:
    """A seeded permutation of the examples; the first ``held_out`` leave the training set."""
    if held_out >= num_examples:
        raise DataError(
            f"{key} = {held_out} leaves no training data out of {num_examples} images; "
            f"make it smaller than {num_examples}"
        )
    return torch.randperm(num_examples, generator=generator)


def carve_validation(pool: Tensor, test: Tensor, val_size: int, generator: torch.Generator, test_labels: Tensor | None = None) -> Splits:
    """Validation is ``val_size`` rows of ``pool`` picked by a seeded permutation; the rest train."""
    order = split_order(len(pool), val_size, "data.val_size", generator)
    return Splits(train=pool[order[val_size:]], val=pool[order[:val_size]], test=test, test_labels=test_labels)
