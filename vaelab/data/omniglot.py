"""Burda et al.'s (2016) 28x28 Omniglot: ``<root>/Omniglot/chardata.mat`` from the IWAE
repository, grey levels in [0, 1]: ``data`` 784 x 24345 (train) and ``testdata`` 784 x 8070."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaelab.config.schema import DataConfig
from vaelab.data.files import REFETCH, ensure_files, read_mat_arrays
from vaelab.data.splits import DATASETS, DatasetSource, Splits, carve_validation, from_column_major
from vaelab.errors import DataError

URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"
FILE = "Omniglot/chardata.mat"
PIXELS = 784
COLUMNS = {"data": 24345, "testdata": 8070}  # no published checksum: the shapes are checked
WHAT = "Omniglot"


def ensure_omniglot(root: str | Path, download: bool) -> None:
    ensure_files(WHAT, root, {FILE: URL}, download)


def omniglot_splits(cfg: DataConfig, generator: torch.Generator) -> Splits:
    """The official test set; ``data.val_size`` training images (1345 in the IWAE and
    VampPrior code) picked by the seeded ``generator`` validate."""
    ensure_omniglot(cfg.root, download=False)
    path = Path(cfg.root) / FILE
    arrays = read_mat_arrays(WHAT, path, {key: (PIXELS, columns) for key, columns in COLUMNS.items()})
    for key, array in arrays.items():
        if not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise DataError(f"{WHAT} file {path} is corrupt: variable '{key}' holds values outside [0, 1]; {REFETCH}")
    pool, test = from_column_major(arrays["data"].T), from_column_major(arrays["testdata"].T)
    return carve_validation(pool, test, cfg.val_size, generator)


SOURCE = DATASETS.register(DatasetSource(
    name="omniglot", image_shape=(1, 28, 28), binary=False, ensure=ensure_omniglot, load=omniglot_splits,
))
