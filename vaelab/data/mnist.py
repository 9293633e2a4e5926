"""MNIST from the four IDX files in ``<root>/MNIST/raw/`` (gzipped or not)."""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import MNIST

from vaelab.config.schema import DataConfig
from vaelab.data.splits import DatasetSource, Splits, carve_validation, flatten
from vaelab.errors import DataError

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
IMAGE_SIZE = (28, 28)

# file name (without .gz) -> md5 of its decompressed bytes
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

_REFETCH = "delete it and download again, or point data.root at a complete copy"
_ELSEWHERE = "point data.root=... (env VAELAB_DATA_DIR) at a folder that holds MNIST/raw/"


class MnistArrays(NamedTuple):
    """The official split as uint8 tensors: images [N, 28, 28], labels [N]."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


def raw_folder(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def find_file(root: str | Path, name: str) -> Path | None:
    """The decompressed file ``name`` if present, else ``name.gz``, else None."""
    for path in (raw_folder(root) / name, raw_folder(root) / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def ensure_mnist(root: str | Path, download: bool) -> None:
    """Makes sure the four files exist: downloads them (then checks md5) or raises DataError."""
    folder = raw_folder(root)
    missing = [name for name in MD5 if find_file(root, name) is None]
    if not missing:
        return
    if not download:
        paths = ", ".join(str(folder / f"{name}.gz") for name in missing)
        raise DataError(
            f"MNIST file(s) not found: {paths} (decompressed copies are accepted too); "
            f"set data.download=true to download them, or {_ELSEWHERE}"
        )
    try:
        MNIST(str(root), train=True, download=True)  # fetches all four files into <root>/MNIST/raw/
    except Exception as err:  # no network, HTTP errors, bad checksums: all end the same way
        reason = " ".join(str(err).split())
        files = ", ".join(f"{name}.gz" for name in MD5)
        raise DataError(
            f"could not download MNIST into {folder} ({reason}); put the 4 files {files} there, or {_ELSEWHERE}"
        ) from err
    verify_mnist_md5(root)


def verify_mnist_md5(root: str | Path) -> None:
    """Checks the md5 of each file's decompressed bytes against the published table."""
    for name, expected in MD5.items():
        path = _existing(root, name)
        actual = hashlib.md5(_read_bytes(path)).hexdigest()
        if actual != expected:
            raise DataError(
                f"MNIST file {path} has md5 {actual} (of its decompressed bytes), expected {expected}; {_REFETCH}"
            )


def load_mnist(root: str | Path, download: bool = False) -> MnistArrays:
    """Reads the training and test images and labels, downloading missing files if allowed."""
    ensure_mnist(root, download)
    arrays = []
    for split in ("train", "t10k"):
        images_path = _existing(root, f"{split}-images-idx3-ubyte")
        labels_path = _existing(root, f"{split}-labels-idx1-ubyte")
        images = read_idx(images_path, IMAGE_MAGIC)
        labels = read_idx(labels_path, LABEL_MAGIC)
        if len(labels) != len(images):
            raise DataError(
                f"MNIST file {labels_path} has {len(labels)} labels but {images_path} has {len(images)} images; "
                f"{_REFETCH}"
            )
        arrays += [images, labels]
    return MnistArrays(*arrays)


def read_idx(path: Path, magic: int) -> Tensor:
    """Reads an IDX file of unsigned bytes: images [N, 28, 28] (``IMAGE_MAGIC``) or labels [N]."""
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"MNIST file {path} is truncated: {len(data)} bytes, less than its {header_size}-byte IDX header; "
            f"{_REFETCH}"
        )
    found, *dims = (int.from_bytes(data[i : i + 4], "big") for i in range(0, header_size, 4))
    kind = "images" if magic == IMAGE_MAGIC else "labels"
    if found != magic:
        raise DataError(
            f"MNIST file {path} is not an IDX {kind} file: magic number {found:#010x}, expected {magic:#010x}; "
            f"{_REFETCH}"
        )
    item_shape = tuple(dims[1:])
    if magic == IMAGE_MAGIC and item_shape != IMAGE_SIZE:
        raise DataError(f"MNIST file {path} holds images of {dims[1]}x{dims[2]}, expected 28x28; {_REFETCH}")
    expected = math.prod(dims)
    payload = len(data) - header_size
    items = f"{dims[0]} images of 28x28" if magic == IMAGE_MAGIC else f"{dims[0]} labels"
    unit = "pixels" if magic == IMAGE_MAGIC else "labels"
    if payload < expected:
        raise DataError(
            f"MNIST file {path} is truncated: header says {items} but only {payload} bytes of {unit} follow; {_REFETCH}"
        )
    if payload > expected:
        raise DataError(
            f"MNIST file {path} is corrupt: header says {items} but {payload - expected} extra bytes follow them; "
            f"{_REFETCH}"
        )
    values = torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=header_size).copy())
    if magic == LABEL_MAGIC and len(values) > 0 and int(values.max()) > 9:
        raise DataError(f"MNIST file {path} is corrupt: it holds label {int(values.max())}, expected 0..9; {_REFETCH}")
    return values.reshape(dims)


def _existing(root: str | Path, name: str) -> Path:
    path = find_file(root, name)
    if path is None:
        raise DataError(f"MNIST file {raw_folder(root) / name}.gz not found; {_ELSEWHERE}")
    return path


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if its name ends in .gz."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as err:
        raise DataError(f"MNIST file {path} is truncated: its gzip stream ends early; {_REFETCH}") from err
    except (OSError, zlib.error) as err:
        raise DataError(f"MNIST file {path} is not a valid gzip file ({err}); {_REFETCH}") from err


def mnist_splits(cfg: DataConfig, generator: torch.Generator) -> Splits:
    """The official 10000 test images; ``data.val_size`` of the 60000 training images validate."""
    mnist = load_mnist(cfg.root)
    pool, test = flatten(mnist.train_images), flatten(mnist.test_images)
    return carve_validation(pool, test, cfg.val_size, generator, test_labels=mnist.test_labels.long())


SOURCE = DatasetSource(image_shape=(1, *IMAGE_SIZE), binary=False, ensure=ensure_mnist, load=mnist_splits)
