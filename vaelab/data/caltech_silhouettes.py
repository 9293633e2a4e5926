"""Caltech 101 Silhouettes at 28x28 (Marlin et al. 2010), split 1:
``<root>/CaltechSilhouettes/caltech101_silhouettes_28_split1.mat`` with ``train_data``
(4100 x 784), ``val_data`` (2264) and ``test_data`` (2307), binary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaelab.config.schema import DataConfig
from vaelab.data.files import REFETCH, ensure_files, read_mat_arrays
from vaelab.data.splits import DATASETS, DatasetSource, Splits, from_column_major
from vaelab.errors import ConfigError, DataError

URL = "https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat"
FILE = "CaltechSilhouettes/caltech101_silhouettes_28_split1.mat"
PIXELS = 784
ROWS = {"train_data": 4100, "val_data": 2264, "test_data": 2307}  # no published checksum: shapes are checked
WHAT = "Caltech 101 Silhouettes"


def ensure_caltech_silhouettes(root: str | Path, download: bool) -> None:
    ensure_files(WHAT, root, {FILE: URL}, download)


def caltech_splits(cfg: DataConfig, generator: torch.Generator) -> Splits:
    """The official three splits, each image transposed (stored column-major) and inverted
    (1 - x: the shape is 1, the background 0), as in Tomczak & Welling's code."""
    if cfg.val_size not in (0, ROWS["val_data"]):
        raise ConfigError(
            f"data.val_size={cfg.val_size} is invalid for data=caltech_silhouettes: its validation set is the "
            f"official split of {ROWS['val_data']} images; use {ROWS['val_data']}, or 0 for no validation"
        )
    ensure_caltech_silhouettes(cfg.root, download=False)
    path = Path(cfg.root) / FILE
    arrays = read_mat_arrays(WHAT, path, {key: (rows, PIXELS) for key, rows in ROWS.items()})
    for key, array in arrays.items():
        if not np.isin(array, (0, 1)).all():
            raise DataError(f"{WHAT} file {path} is corrupt: variable '{key}' holds values other than 0 and 1; {REFETCH}")
    train, val, test = (1 - from_column_major(arrays[key]) for key in ROWS)
    return Splits(train=train, val=val if cfg.val_size else val[:0], test=test)


SOURCE = DATASETS.register(DatasetSource(
    name="caltech_silhouettes", image_shape=(1, 28, 28), binary=True, ensure=ensure_caltech_silhouettes, load=caltech_splits,
))
