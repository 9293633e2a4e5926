"""Larochelle & Murray's (2011) fixed binarization of MNIST: ``<root>/BinarizedMNIST/``
binarized_mnist_{train,valid,test}.amat, text files of 50000 / 10000 / 10000 rows of 784
space-separated 0s and 1s (the split of Rezende & Mohamed, Burda et al., VampPrior)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaelab.config.schema import DataConfig
from vaelab.data.files import REFETCH, ensure_files
from vaelab.data.splits import DATASETS, DatasetSource, Splits
from vaelab.errors import ConfigError, DataError

URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
FOLDER = "BinarizedMNIST"
PIXELS = 784
ROWS = {"train": 50000, "valid": 10000, "test": 10000}  # the publisher gives no checksums: rows are checked
WHAT = "binarized MNIST"

_ZERO, _ONE, _NEWLINE = ord("0"), ord("1"), ord("\n")
_SPACES = tuple(ord(c) for c in " \t\r")


def amat_name(split: str) -> str:
    return f"{FOLDER}/binarized_mnist_{split}.amat"


def ensure_binarized_mnist(root: str | Path, download: bool) -> None:
    files = {amat_name(split): URL + Path(amat_name(split)).name for split in ROWS}
    ensure_files(WHAT, root, files, download)


def read_amat(path: Path, rows: int) -> Tensor:
    """uint8 [rows, 784] of 0/1 from one .amat file; its format is checked in full."""
    text = np.frombuffer(path.read_bytes().rstrip(), dtype=np.uint8)
    digit = (text == _ZERO) | (text == _ONE)
    newline = text == _NEWLINE
    stray = ~(digit | newline | (text == _SPACES[0]) | (text == _SPACES[1]) | (text == _SPACES[2]))
    if stray.any():
        line = int(newline[: int(np.argmax(stray))].sum()) + 1
        raise DataError(f"{WHAT} file {path} is corrupt: line {line} holds a character other than 0, 1 and spaces; {REFETCH}")
    if (digit[1:] & digit[:-1]).any():
        line = int(newline[: int(np.argmax(digit[1:] & digit[:-1]))].sum()) + 1
        raise DataError(f"{WHAT} file {path} is corrupt: line {line} holds a number other than 0 and 1; {REFETCH}")
    lines = int(newline.sum()) + 1 if len(text) else 0
    # values per line: differences of the running count of digits at each line's end
    ends = np.concatenate((np.flatnonzero(newline), [len(text) - 1]))[:lines]
    per_line = np.diff(np.cumsum(digit, dtype=np.int32)[ends], prepend=0)
    if lines < rows or (lines == rows and per_line[-1] < PIXELS):
        raise DataError(f"{WHAT} file {path} is truncated: {lines} lines (the last of {per_line[-1] if lines else 0} values), "
                        f"expected {rows} of {PIXELS}; {REFETCH}")
    if lines > rows:
        raise DataError(f"{WHAT} file {path} is corrupt: {lines} lines, expected {rows}; {REFETCH}")
    if (per_line != PIXELS).any():
        line = int(np.argmax(per_line != PIXELS))
        raise DataError(
            f"{WHAT} file {path} is corrupt: line {line + 1} has {per_line[line]} values, expected {PIXELS}; {REFETCH}"
        )
    return torch.from_numpy((text[digit] - _ZERO).reshape(rows, PIXELS))


def binarized_mnist_splits(cfg: DataConfig, generator: torch.Generator) -> Splits:
    """The three files as they are: no seeded split, so ``generator`` draws nothing."""
    if cfg.val_size not in (0, ROWS["valid"]):
        raise ConfigError(
            f"data.val_size={cfg.val_size} is invalid for data=binarized_mnist: its validation set is the "
            f"official file of {ROWS['valid']} images; use {ROWS['valid']}, or 0 for no validation"
        )
    ensure_binarized_mnist(cfg.root, download=False)
    root = Path(cfg.root)
    train, valid, test = (read_amat(root / amat_name(split), rows).float() for split, rows in ROWS.items())
    return Splits(train=train, val=valid if cfg.val_size else valid[:0], test=test)


SOURCE = DATASETS.register(DatasetSource(
    name="binarized_mnist", image_shape=(1, 28, 28), binary=True, ensure=ensure_binarized_mnist, load=binarized_mnist_splits,
))
