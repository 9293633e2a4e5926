"""Tiny Fashion-MNIST and CIFAR-10 files of the real formats, for tests: Fashion-MNIST's four
IDX files (gzipped, as torchvision stores them) and CIFAR-10's six pickled batches."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

from tests.helpers import write_idx_files
from vaelab.data.cifar10 import FOLDER, TEST_FILES, TRAIN_FILES


def write_fashion_mnist(root: Path, n_train: int = 12, n_test: int = 4, gz: bool = True) -> dict[str, np.ndarray]:
    """Writes ``<root>/FashionMNIST/raw``'s four IDX files with seeded random contents and returns those."""
    return write_idx_files(root / "FashionMNIST" / "raw", n_train, n_test, gz, seed=1)


def cifar_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    """A batch file's bytes: the pickled dict of the real files (bytes keys, data uint8 [N, 3072])."""
    return pickle.dumps(
        {b"batch_label": b"tiny", b"labels": [int(v) for v in labels], b"data": images.reshape(len(images), -1),
         b"filenames": [b"%d.png" % i for i in range(len(images))]},
        protocol=4,
    )  # fmt: skip


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6, python2: bool = False) -> dict[str, np.ndarray]:
    """Writes ``<root>/cifar-10-batches-py``'s six batches (``python2``: pickled as the real ones
    are, see :func:`python2_cifar_batch`); returns the images [N, 3, 32, 32] and labels of the
    training set (the five batches in order) and of the test set. Every image has a red plane
    brighter than its green, and its green brighter than its blue."""
    rng = np.random.default_rng(2)
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[np.ndarray]] = {"train_images": [], "train_labels": [], "test_images": [], "test_labels": []}
    for split, names, n in (("train", TRAIN_FILES, per_batch), ("test", TEST_FILES, n_test)):
        for name in names:
            planes = [rng.integers(low, low + 60, size=(n, 1, 32, 32)) for low in (190, 100, 10)]  # R > G > B
            images = np.concatenate(planes, axis=1).astype(np.uint8)
            labels = rng.integers(0, 10, size=n)
            (folder / name).write_bytes((python2_cifar_batch if python2 else cifar_batch)(images, labels))
            parts[f"{split}_images"].append(images)
            parts[f"{split}_labels"].append(labels)
    return {key: np.concatenate(value) for key, value in parts.items()}


def python2_cifar_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    """A batch file's bytes as Python 2's cPickle (protocol 2) wrote the real ones: str (not
    bytes) keys and array data, and numpy 1's ``numpy.core.multiarray._reconstruct``."""

    def string(value: bytes) -> bytes:  # a Python 2 str: SHORT_BINSTRING or BINSTRING
        return b"U" + bytes([len(value)]) + value if len(value) < 256 else b"T" + struct.pack("<I", len(value)) + value

    def integer(value: int) -> bytes:  # BININT
        return b"J" + struct.pack("<i", value)

    rows = images.reshape(len(images), -1)
    dtype = b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"  # dtype('u1', 0, 1)
    dtype += b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b") + b"\x87R"
    array += b"(" + integer(1) + integer(rows.shape[0]) + integer(rows.shape[1]) + b"\x86" + dtype + b"\x89"
    array += string(rows.tobytes()) + b"tb"
    label_list = b"](" + b"".join(integer(int(v)) for v in labels) + b"e"
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list + b"u."
