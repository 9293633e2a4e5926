"""Image sets of four IDX files (LeCun's MNIST format) in one folder, gzipped or not.

MNIST and Fashion-MNIST (Xiao et al. 2017, a drop-in replacement with the same format) differ
only in their folder, their md5 table and their download; :class:`IdxFiles` names those, and
the functions here read any such set with one-line :class:`~vaelab.errors.DataError` s.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from vaelab.errors import DataError

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

REFETCH = "delete it and download again, or point data.root at a complete copy"


class ImageArrays(NamedTuple):
    """An official train / test split as uint8 tensors: images [N, H, W] or [N, C, H, W], labels [N]."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


@dataclass(frozen=True)
class IdxFiles:
    """One set of four IDX files, {train,t10k}-{images-idx3,labels-idx1}-ubyte, each possibly ``.gz``.

    ``md5``: file name (without .gz) -> md5, of the decompressed bytes, or of the ``.gz`` file
    where ``md5_of_gzip`` (torchvision's tables are of the archives). ``fetch(root)`` downloads
    the four files into ``<root>/<folder>``.
    """

    title: str
    folder: str
    md5: dict[str, str]
    md5_of_gzip: bool
    item_shape: tuple[int, int]
    fetch: Callable[[str], object]

    def raw_folder(self, root: str | Path) -> Path:
        return Path(root) / self.folder

    @property
    def elsewhere(self) -> str:
        return f"point data.root=... (env VAELAB_DATA_DIR) at a folder that holds {self.folder}/"


def find_file(files: IdxFiles, root: str | Path, name: str) -> Path | None:
    """The decompressed file ``name`` if present, else ``name.gz``, else None."""
    folder = files.raw_folder(root)
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def ensure_idx(files: IdxFiles, root: str | Path, download: bool) -> None:
    """Makes sure the four files exist: downloads them (then checks md5) or raises DataError."""
    folder = files.raw_folder(root)
    missing = [name for name in files.md5 if find_file(files, root, name) is None]
    if not missing:
        return
    if not download:
        paths = ", ".join(str(folder / f"{name}.gz") for name in missing)
        raise DataError(
            f"{files.title} file(s) not found: {paths} (decompressed copies are accepted too); "
            f"set data.download=true to download them, or {files.elsewhere}"
        )
    try:
        files.fetch(str(root))
    except Exception as err:  # no network, HTTP errors, bad checksums: all end the same way
        reason = " ".join(str(err).split())
        names = ", ".join(f"{name}.gz" for name in files.md5)
        raise DataError(
            f"could not download {files.title} into {folder} ({reason}); put the 4 files {names} there, "
            f"or {files.elsewhere}"
        ) from err
    verify_md5(files, root)


def verify_md5(files: IdxFiles, root: str | Path) -> None:
    """Checks each file's md5 against the published table. With ``md5_of_gzip`` only the
    ``.gz`` files can be checked: a decompressed copy alone is read unchecked."""
    for name, expected in files.md5.items():
        path = existing(files, root, name)
        if files.md5_of_gzip:
            path = path if path.suffix == ".gz" else path.with_name(f"{name}.gz")
            if not path.is_file():
                continue
            actual, of = hashlib.md5(path.read_bytes()).hexdigest(), "the file"
        else:
            actual, of = hashlib.md5(read_bytes(files, path)).hexdigest(), "its decompressed bytes"
        if actual != expected:
            raise DataError(f"{files.title} file {path} has md5 {actual} (of {of}), expected {expected}; {REFETCH}")


def load_idx(files: IdxFiles, root: str | Path, download: bool = False) -> ImageArrays:
    """Reads the training and test images and labels, downloading missing files if allowed."""
    ensure_idx(files, root, download)
    arrays = []
    for split in ("train", "t10k"):
        images_path = existing(files, root, f"{split}-images-idx3-ubyte")
        labels_path = existing(files, root, f"{split}-labels-idx1-ubyte")
        images = read_idx(files, images_path, IMAGE_MAGIC)
        labels = read_idx(files, labels_path, LABEL_MAGIC)
        if len(labels) != len(images):
            raise DataError(
                f"{files.title} file {labels_path} has {len(labels)} labels but {images_path} has {len(images)} images; "
                f"{REFETCH}"
            )
        arrays += [images, labels]
    return ImageArrays(*arrays)


def read_idx(files: IdxFiles, path: Path, magic: int) -> Tensor:
    """Reads an IDX file of unsigned bytes: images [N, H, W] (``IMAGE_MAGIC``) or labels [N]."""
    title = files.title
    data = read_bytes(files, path)
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"{title} file {path} is truncated: {len(data)} bytes, less than its {header_size}-byte IDX header; "
            f"{REFETCH}"
        )
    found, *dims = (int.from_bytes(data[i : i + 4], "big") for i in range(0, header_size, 4))
    kind = "images" if magic == IMAGE_MAGIC else "labels"
    if found != magic:
        raise DataError(
            f"{title} file {path} is not an IDX {kind} file: magic number {found:#010x}, expected {magic:#010x}; "
            f"{REFETCH}"
        )
    height, width = files.item_shape
    if magic == IMAGE_MAGIC and tuple(dims[1:]) != files.item_shape:
        raise DataError(f"{title} file {path} holds images of {dims[1]}x{dims[2]}, expected {height}x{width}; {REFETCH}")
    expected = math.prod(dims)
    payload = len(data) - header_size
    items = f"{dims[0]} images of {height}x{width}" if magic == IMAGE_MAGIC else f"{dims[0]} labels"
    unit = "pixels" if magic == IMAGE_MAGIC else "labels"
    if payload < expected:
        raise DataError(
            f"{title} file {path} is truncated: header says {items} but only {payload} bytes of {unit} follow; {REFETCH}"
        )
    if payload > expected:
        raise DataError(
            f"{title} file {path} is corrupt: header says {items} but {payload - expected} extra bytes follow them; "
            f"{REFETCH}"
        )
    values = torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=header_size).copy())
    if magic == LABEL_MAGIC and len(values) > 0 and int(values.max()) > 9:
        raise DataError(f"{title} file {path} is corrupt: it holds label {int(values.max())}, expected 0..9; {REFETCH}")
    return values.reshape(dims)


def existing(files: IdxFiles, root: str | Path, name: str) -> Path:
    path = find_file(files, root, name)
    if path is None:
        raise DataError(f"{files.title} file {files.raw_folder(root) / name}.gz not found; {files.elsewhere}")
    return path


def read_bytes(files: IdxFiles, path: Path) -> bytes:
    """The file's bytes, decompressed if its name ends in .gz."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as err:
        raise DataError(f"{files.title} file {path} is truncated: its gzip stream ends early; {REFETCH}") from err
    except (OSError, zlib.error) as err:
        raise DataError(f"{files.title} file {path} is not a valid gzip file ({err}); {REFETCH}") from err
