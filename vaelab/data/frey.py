"""Frey faces from ``<root>/FreyFaces/frey_rawface.mat``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch
from torch import Tensor
from torchvision.datasets.utils import download_url

from vaelab.config.schema import DataConfig
from vaelab.data.splits import DATASETS, DatasetSource, Splits, flatten, split_order
from vaelab.errors import DataError

URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
MD5 = "c85293416dcc06d4782ae2dd0bb598b1"
IMAGE_SIZE = (28, 20)
VARIABLE = "ff"  # uint8 [560, N]: one row-major 28x20 face per column

_REFETCH = "delete it and download again, or point data.root at a complete copy"
_ELSEWHERE = "point data.root=... (env VAELAB_DATA_DIR) at a folder that holds FreyFaces/frey_rawface.mat"


def frey_path(root: str | Path) -> Path:
    return Path(root) / "FreyFaces" / "frey_rawface.mat"


def ensure_frey(root: str | Path, download: bool) -> None:
    """Makes sure the file exists: downloads it (md5-checked) or raises DataError."""
    path = frey_path(root)
    if path.is_file():
        return
    if not download:
        raise DataError(f"Frey faces file {path} not found; set data.download=true to download it, or {_ELSEWHERE}")
    try:
        download_url(URL, root=str(path.parent), filename=path.name, md5=MD5)
    except Exception as err:  # no network, HTTP errors, bad checksum: all end the same way
        reason = " ".join(str(err).split())
        raise DataError(f"could not download {URL} to {path} ({reason}); fetch it by hand, or {_ELSEWHERE}") from err


def load_frey(root: str | Path, download: bool = False) -> Tensor:
    """The faces as a uint8 tensor [N, 28, 20] (1965 faces in the real file)."""
    ensure_frey(root, download)
    path = frey_path(root)
    try:
        contents = scipy.io.loadmat(str(path))
    except Exception as err:  # loadmat signals a damaged file with many exception types
        reason = " ".join(str(err).split())
        raise DataError(f"Frey faces file {path} is truncated or corrupt ({reason}); {_REFETCH}") from err
    if VARIABLE not in contents:
        found = ", ".join(name for name in contents if not name.startswith("__")) or "none"
        raise DataError(f"Frey faces file {path} has no variable '{VARIABLE}' (variables: {found}); {_REFETCH}")
    faces = contents[VARIABLE]
    pixels = IMAGE_SIZE[0] * IMAGE_SIZE[1]
    if not (
        isinstance(faces, np.ndarray)
        and faces.dtype == np.uint8
        and faces.ndim == 2
        and faces.shape[0] == pixels
        and faces.shape[1] >= 1
    ):
        description = f"{faces.dtype} {faces.shape}" if isinstance(faces, np.ndarray) else type(faces).__name__
        raise DataError(
            f"Frey faces file {path}: variable '{VARIABLE}' is {description}, expected uint8 ({pixels}, N) "
            f"with one 28x20 face per column; {_REFETCH}"
        )
    return torch.from_numpy(np.ascontiguousarray(faces.T)).reshape(-1, *IMAGE_SIZE)


def frey_splits(cfg: DataConfig, generator: torch.Generator) -> Splits:
    """The faces permuted with the seeded ``generator`` into test, validation and train."""
    pool = flatten(load_frey(cfg.root))
    held_out = cfg.test_size + cfg.val_size
    order = split_order(len(pool), held_out, "data.val_size + data.test_size", generator)
    return Splits(
        train=pool[order[held_out:]], val=pool[order[cfg.test_size : held_out]], test=pool[order[: cfg.test_size]]
    )


SOURCE = DATASETS.register(DatasetSource(
    name="frey", image_shape=(1, *IMAGE_SIZE), binary=False, ensure=ensure_frey, load=frey_splits,
    continuous="grey levels", own_test_split=False,
))
