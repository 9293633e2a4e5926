"""Fashion-MNIST (Xiao et al. 2017): 60000 training and 10000 test 28x28 grey images of ten
kinds of clothing, in MNIST's IDX format, from the four files in ``<root>/FashionMNIST/raw/``
(where torchvision's ``FashionMNIST`` puts them), read by vaelab.data.idx."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import FashionMNIST

from vaelab.config.schema import DataConfig
from vaelab.data.idx import IdxFiles, ImageArrays, ensure_idx, load_idx, verify_md5
from vaelab.data.splits import DATASETS, DatasetSource, Splits, carve_validation, flatten

IMAGE_SIZE = (28, 28)

# file name (without .gz) -> md5 of the .gz file, as torchvision publishes them
MD5 = {name.removesuffix(".gz"): md5 for name, md5 in FashionMNIST.resources}


def _fetch(root: str) -> None:
    FashionMNIST(root, train=True, download=True)  # fetches all four files into <root>/FashionMNIST/raw/


FILES = IdxFiles("Fashion-MNIST", "FashionMNIST/raw", MD5, md5_of_gzip=True, item_shape=IMAGE_SIZE, fetch=_fetch)


def ensure_fashion_mnist(root: str | Path, download: bool) -> None:
    """Makes sure the four files exist: downloads them (then checks md5) or raises DataError."""
    ensure_idx(FILES, root, download)


def verify_fashion_mnist_md5(root: str | Path) -> None:
    """Checks the md5 of each ``.gz`` file against torchvision's table (decompressed copies alone go unchecked)."""
    verify_md5(FILES, root)


def load_fashion_mnist(root: str | Path, download: bool = False) -> ImageArrays:
    """The official split: images uint8 [60000 | 10000, 28, 28], labels [N] in 0..9."""
    return load_idx(FILES, root, download)


def fashion_mnist_splits(cfg: DataConfig, generator: torch.Generator) -> Splits:
    """The official 10000 test images; ``data.val_size`` of the 60000 training images validate."""
    arrays = load_fashion_mnist(cfg.root)
    pool, test = flatten(arrays.train_images), flatten(arrays.test_images)
    return carve_validation(pool, test, cfg.val_size, generator, test_labels=arrays.test_labels.long())


SOURCE = DATASETS.register(DatasetSource(
    name="fashion_mnist", image_shape=(1, *IMAGE_SIZE), binary=False, ensure=ensure_fashion_mnist, load=fashion_mnist_splits,
))
