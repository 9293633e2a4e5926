"""CIFAR-10 (Krizhevsky 2009, *Learning Multiple Layers of Features from Tiny Images*): 50000
training images in ``data_batch_1`` .. ``data_batch_5`` and 10000 test images in
``test_batch``, 3x32x32 colour, in ``<root>/cifar-10-batches-py/`` as torchvision's ``CIFAR10``
unpacks the archive.

Each batch is a pickled dict with ``data`` (uint8 [N, 3072]: per row 1024 red, 1024 green,
1024 blue pixels, each plane row-major) and ``labels`` (N integers 0..9). The pickles are read
by an unpickler that builds numpy arrays and nothing else, so a hostile file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import download_and_extract_archive

from vaelab.config.schema import DataConfig
from vaelab.data.idx import REFETCH, ImageArrays
from vaelab.data.splits import DATASETS, DatasetSource, Splits, carve_validation, flatten
from vaelab.errors import DataError

IMAGE_SHAPE = (3, 32, 32)
FOLDER = CIFAR10.base_folder  # cifar-10-batches-py
TRAIN_FILES = tuple(name for name, _ in CIFAR10.train_list)
TEST_FILES = tuple(name for name, _ in CIFAR10.test_list)
# file name -> md5 of the file, as torchvision publishes them
MD5 = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}

_ELSEWHERE = f"point data.root=... (env VAELAB_DATA_DIR) at a folder that holds {FOLDER}/"
# The only globals a batch's pickle needs: numpy's array reconstruction (numpy 1 and 2 names).
_reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


def batches_folder(root: str | Path) -> Path:
    return Path(root) / FOLDER


def ensure_cifar10(root: str | Path, download: bool) -> None:
    """Makes sure the six batch files exist: downloads and unpacks the archive (md5-checked) or raises DataError."""
    folder = batches_folder(root)
    missing = [name for name in MD5 if not (folder / name).is_file()]
    if not missing:
        return
    if not download:
        paths = ", ".join(str(folder / name) for name in missing)
        raise DataError(f"CIFAR-10 file(s) not found: {paths}; set data.download=true to download them, or {_ELSEWHERE}")
    try:
        download_and_extract_archive(CIFAR10.url, download_root=str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except Exception as err:  # no network, HTTP errors, bad checksum: all end the same way
        reason = " ".join(str(err).split())
        raise DataError(
            f"could not download {CIFAR10.url} into {root} ({reason}); unpack {CIFAR10.filename} there by hand, "
            f"or {_ELSEWHERE}"
        ) from err
    verify_cifar10_md5(root)


def verify_cifar10_md5(root: str | Path) -> None:
    """Checks each batch file's md5 against torchvision's table."""
    for name, expected in MD5.items():
        path = batches_folder(root) / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 file {path} not found; {_ELSEWHERE}")
        actual = hashlib.md5(path.read_bytes()).hexdigest()
        if actual != expected:
            raise DataError(f"CIFAR-10 file {path} has md5 {actual}, expected {expected}; {REFETCH}")


def load_cifar10(root: str | Path, download: bool = False) -> ImageArrays:
    """The official split: images uint8 [50000 | 10000, 3, 32, 32], labels int64 [N] in 0..9."""
    ensure_cifar10(root, download)
    folder = batches_folder(root)
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    test = [read_batch(folder / name) for name in TEST_FILES]
    return ImageArrays(
        torch.cat([images for images, _ in train]),
        torch.cat([labels for _, labels in train]),
        torch.cat([images for images, _ in test]),
        torch.cat([labels for _, labels in test]),
    )


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, and a CIFAR-10 batch holds only numpy arrays")
        return _ALLOWED[(module, name)]


def read_batch(path: Path) -> tuple[Tensor, Tensor]:
    """One batch file: images uint8 [N, 3, 32, 32] and labels int64 [N]."""
    try:
        # latin1: the batches were pickled by Python 2, whose str holds the array's bytes
        contents = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except EOFError as err:
        raise DataError(f"CIFAR-10 file {path} is truncated: its pickle ends early; {REFETCH}") from err
    except Exception as err:  # a damaged pickle fails with many exception types
        reason = " ".join(str(err).split())
        if "truncated" in reason:
            raise DataError(f"CIFAR-10 file {path} is truncated: {reason}; {REFETCH}") from err
        raise DataError(f"CIFAR-10 file {path} is not a CIFAR-10 batch pickle ({reason}); {REFETCH}") from err
    if not isinstance(contents, dict):
        raise DataError(f"CIFAR-10 file {path} holds a {type(contents).__name__}, expected a dict with data and labels; {REFETCH}")
    contents = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in contents.items()}
    data, labels = contents.get("data"), contents.get("labels")
    pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == pixels):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"CIFAR-10 file {path}: data is {found}, expected uint8 (N, {pixels}); {REFETCH}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as err:
        raise DataError(f"CIFAR-10 file {path}: labels are not integers ({err}); {REFETCH}") from err
    if labels.shape != (len(data),):
        raise DataError(f"CIFAR-10 file {path} has labels of shape {labels.shape} for {len(data)} images; {REFETCH}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"CIFAR-10 file {path} is corrupt: it holds label {labels.max() if labels.max() > 9 else labels.min()}, expected 0..9; {REFETCH}")
    images = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, *IMAGE_SHAPE)  # rows are C x H x W already
    return images, torch.from_numpy(labels)


def cifar10_splits(cfg: DataConfig, generator: torch.Generator) -> Splits:
    """The official 10000 test images; ``data.val_size`` of the 50000 training images validate."""
    arrays = load_cifar10(cfg.root)
    pool, test = flatten(arrays.train_images), flatten(arrays.test_images)
    return carve_validation(pool, test, cfg.val_size, generator, test_labels=arrays.test_labels.long())


SOURCE = DATASETS.register(DatasetSource(
    name="cifar10", image_shape=IMAGE_SHAPE, binary=False, ensure=ensure_cifar10, load=cifar10_splits,
    continuous="colour levels",
))
