"""Tiny files of the binary 28x28 datasets' real formats (the .amat text files of binarized
MNIST, Omniglot's chardata.mat, the Caltech silhouettes' .mat) and the row counts to expect
of them, for tests that must not download anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from tests.helpers import SHARED_DATA
from vaelab.data import binarized_mnist, caltech_silhouettes, omniglot

# the real files, where a user has them beside the project (../shared/data)
REAL_FILES = {
    "binarized_mnist": [SHARED_DATA / binarized_mnist.amat_name(split) for split in binarized_mnist.ROWS],
    "omniglot": [SHARED_DATA / omniglot.FILE],
    "caltech_silhouettes": [SHARED_DATA / caltech_silhouettes.FILE],
}

AMAT_ROWS = {"train": 12, "valid": 5, "test": 7}
OMNIGLOT_COLUMNS = {"data": 30, "testdata": 9}
CALTECH_ROWS = {"train_data": 12, "val_data": 5, "test_data": 6}


def expect_tiny_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The readers expect the tiny files' row counts instead of the real ones."""
    monkeypatch.setattr(binarized_mnist, "ROWS", dict(AMAT_ROWS))
    monkeypatch.setattr(omniglot, "COLUMNS", dict(OMNIGLOT_COLUMNS))
    monkeypatch.setattr(caltech_silhouettes, "ROWS", dict(CALTECH_ROWS))


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_binarized_mnist(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """The three .amat files of random 0/1 rows; returns split -> uint8 [rows, 784]."""
    folder = root / "BinarizedMNIST"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, rows in AMAT_ROWS.items():
        array = (_rng(seed + rows).random((rows, 784)) < 0.3).astype(np.uint8)
        text = "".join(" ".join(str(v) for v in row) + "\n" for row in array)
        (folder / f"binarized_mnist_{split}.amat").write_text(text)
        arrays[split] = array
    return arrays


def write_omniglot(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """chardata.mat with grey levels; returns key -> float64 images [N, 28, 28] (row-major)
    as the model should see them; the file holds each one column-major, one per column."""
    path = root / "Omniglot" / "chardata.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    images = {key: _rng(seed + n).random((n, 28, 28)) for key, n in OMNIGLOT_COLUMNS.items()}
    scipy.io.savemat(path, {key: column_major(array).T for key, array in images.items()})
    return images


def write_caltech(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """The silhouettes' .mat (background 1 in the file); returns key -> uint8 images [N, 28, 28]
    as the model should see them (shape 1, background 0)."""
    path = root / "CaltechSilhouettes" / "caltech101_silhouettes_28_split1.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    images = {key: (_rng(seed + n).random((n, 28, 28)) < 0.4).astype(np.uint8) for key, n in CALTECH_ROWS.items()}
    scipy.io.savemat(path, {key: column_major(1 - array).astype(np.float64) for key, array in images.items()})
    return images


def column_major(images: np.ndarray) -> np.ndarray:
    """[N, H, W] -> [N, H*W], each image flattened column by column (MATLAB's order)."""
    return np.stack([image.flatten(order="F") for image in images])
