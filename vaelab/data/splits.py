"""What a dataset is: its files and its splits as [N, D] rows in [0, 1]; and the registry of datasets.

A dataset module registers one :class:`DatasetSource`; ``data.name`` names it. A dataset of your
own subclasses :class:`Dataset` (``data.name=custom data.target=path/file.py:Class data.args.*``,
docs/extending.md). What a dataset is (binary files, continuous levels, its own test split) it
declares here, and the checks of ``data.*`` that depend on it ask it (:meth:`Dataset.check`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

from vaelab.errors import ConfigError, DataError
from vaelab.registry import Registry, no_args, part_name, users_part

if TYPE_CHECKING:
    from vaelab.config.schema import DataConfig


@dataclass(frozen=True)
class Splits:
    """float32 rows [N, C*H*W] in [0, 1]; ``val`` has no rows when there is no validation."""

    train: Tensor
    val: Tensor
    test: Tensor
    test_labels: Tensor | None = None


class Dataset:
    """One dataset: ``image_shape`` (C x H x W); ``ensure(root, download)``, its files present,
    downloaded, or a one-line DataError; ``load(cfg, generator)``, its :class:`Splits`, drawing any
    seeded split from ``generator`` before binarization."""

    name: ClassVar[str]
    image_shape: tuple[int, int, int]
    binary: bool = False  # the files hold 0/1 already: data.binarize must be none
    continuous: str | None = None  # e.g. "colour levels": continuous data that data.binarize must leave as they are
    own_test_split: bool = True  # else data.test_size images are held out for test
    static_binarization_note: str | None = None  # a warning for data.binarize=static, where readers could misread it

    def ensure(self, root: str | Path, download: bool) -> None:
        raise NotImplementedError

    def load(self, cfg: DataConfig, generator: torch.Generator) -> Splits:
        raise NotImplementedError

    def check(self, cfg: DataConfig) -> None:
        """One line for a ``data.*`` setting this dataset cannot take."""
        name = part_name(self)
        if self.binary and cfg.binarize.value != "none":
            raise ConfigError(f"data.binarize={cfg.binarize.value} is invalid: expected none for {name} (its files are binary already)")
        if self.continuous and cfg.binarize.value != "none":
            raise ConfigError(f"data.binarize={cfg.binarize.value} is invalid: expected none for {name} (continuous {self.continuous})")
        if self.own_test_split and cfg.test_size is not None:
            raise ConfigError(f"data.test_size={cfg.test_size} is invalid: expected null for {name} (it has its own test set)")
        if not self.own_test_split and (cfg.test_size is None or cfg.test_size < 1):
            raise ConfigError(f"data.test_size={cfg.test_size} is invalid: expected an integer >= 1 for {name}")


@dataclass(frozen=True)
class DatasetSource(Dataset):
    """A built-in dataset: its name and properties, and its module's ``ensure`` and ``load``."""

    name: str
    image_shape: tuple[int, int, int]  # C x H x W
    binary: bool
    ensure: Callable[[str | Path, bool], None]
    load: Callable[[DataConfig, torch.Generator], Splits]
    continuous: str | None = None
    own_test_split: bool = True
    static_binarization_note: str | None = None


DATASETS: Registry[Dataset] = Registry("data.name", "vaelab.data", base=Dataset, custom=True)


def dataset_for(cfg: DataConfig) -> Dataset:
    """The dataset ``data.name`` names, or with ``data.name=custom`` the class ``data.target`` names,
    built with ``data.args``."""
    part = DATASETS.chosen(cfg.name, cfg.target, "data.target")
    if isinstance(part, type):
        return users_part(part, "data.args", cfg.args)
    no_args(cfg.args, "data.args", f"data.name={cfg.name}")
    return part


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
