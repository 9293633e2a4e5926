"""MNIST from the four IDX files in ``<root>/MNIST/raw/`` (gzipped or not), read by vaelab.data.idx."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets import MNIST

from vaelab.config.schema import DataConfig
from vaelab.data.splits import DATASETS, DatasetSource, Splits, carve_validation, flatten

from vaelab.data.idx import IMAGE_MAGIC, LABEL_MAGIC, IdxFiles, ImageArrays, ensure_idx, load_idx, verify_md5
from vaelab.data import idx

__all__ = ["IMAGE_MAGIC", "LABEL_MAGIC", "IMAGE_SIZE", "MD5", "MnistArrays", "ensure_mnist", "load_mnist", "verify_mnist_md5"]

IMAGE_SIZE = (28, 28)

# file name (without .gz) -> md5 of its decompressed bytes
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

MnistArrays = ImageArrays  # the official split: images [N, 28, 28], labels [N]


def _fetch(root: str) -> None:
    MNIST(root, train=True, download=True)  # fetches all four files into <root>/MNIST/raw/


FILES = IdxFiles("MNIST", "MNIST/raw", MD5, md5_of_gzip=False, item_shape=IMAGE_SIZE, fetch=_fetch)


def raw_folder(root: str | Path) -> Path:
    return FILES.raw_folder(root)


def find_file(root: str | Path, name: str) -> Path | None:
    """The decompressed file ``name`` if present, else ``name.gz``, else None."""
    return idx.find_file(FILES, root, name)


def ensure_mnist(root: str | Path, download: bool) -> None:
    """Makes sure the four files exist: downloads them (then checks md5) or raises DataError."""
    ensure_idx(FILES, root, download)


def verify_mnist_md5(root: str | Path) -> None:
    """Checks the md5 of each file's decompressed bytes against the published table."""
    verify_md5(FILES, root)


def load_mnist(root: str | Path, download: bool = False) -> MnistArrays:
    """Reads the training and test images and labels, downloading missing files if allowed."""
    return load_idx(FILES, root, download)


def read_idx(path: Path, magic: int) -> Tensor:
    """Reads an MNIST IDX file: images [N, 28, 28] (``IMAGE_MAGIC``) or labels [N]."""
    return idx.read_idx(FILES, path, magic)


def mnist_splits(cfg: DataConfig, generator: torch.Generator) -> Splits:
    """The official 10000 test images; ``data.val_size`` of the 60000 training images validate."""
    mnist = load_mnist(cfg.root)
    pool, test = flatten(mnist.train_images), flatten(mnist.test_images)
    return carve_validation(pool, test, cfg.val_size, generator, test_labels=mnist.test_labels.long())


SOURCE = DATASETS.register(DatasetSource(
    name="mnist", image_shape=(1, *IMAGE_SIZE), binary=False, ensure=ensure_mnist, load=mnist_splits,
    static_binarization_note=(
        "data.binarize=static is one seeded draw, not Larochelle & Murray's fixed binarization that "
        "published static-MNIST tables use (numbers differ by 1-2 nats); for those use data=binarized_mnist"
    ),
))
