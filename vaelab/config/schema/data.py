"""The settings of the data: ``data.*`` (which dataset, its splits and binarization, the batches)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from vaelab.config.schema.fields import _help, _require


class Binarize(str, Enum):
    none = "none"
    dynamic = "dynamic"
    static = "static"


@dataclass
class DataConfig:
    name: str = _help(
        "dataset: mnist (60000/10000, LeCun et al.); frey (1965 faces, seeded split); binarized_mnist "
        "(Larochelle & Murray 2011's fixed binarization, 50000/10000/10000); omniglot (Burda et al. 2016's "
        "28x28, 24345/8070, validation carved from train); caltech_silhouettes (Marlin et al. 2010, split 1, "
        "4100/2264/2307); fashion_mnist (Xiao et al. 2017, 60000/10000 1x28x28 grey); cifar10 (Krizhevsky "
        "2009, 50000/10000 3x32x32 colour, binarize=none); custom: the class data.target names. Splits and "
        "sources: docs/data.md",
        "mnist", choices="vaelab.data.splits:DATASETS",
    )
    root: str = _help(
        "folder holding the datasets' folders: MNIST/raw/, FreyFaces/, BinarizedMNIST/, Omniglot/, "
        "CaltechSilhouettes/, FashionMNIST/raw/, cifar-10-batches-py/ (env VAELAB_DATA_DIR)", "data",
    )
    download: bool = _help("download missing files when a network is reachable", True)
    batch_size: int = _help("training minibatch size per device", 100)
    val_size: int = _help(
        "examples carved from the training set for validation (configs/data/: 5000; frey 200; omniglot 1345); "
        "binarized_mnist and caltech_silhouettes validate on their official split: its size, or 0 for none", 5000,
    )
    test_size: Optional[int] = _help("frey only: examples held out for test (the others have their own test set)", None)
    binarize: Binarize = _help(
        "dynamic: a fresh draw each batch; static: one seeded draw, NOT the standard fixed binarization of "
        "the literature (that is data=binarized_mnist); none for binary datasets and cifar10", Binarize.dynamic,
    )
    split_seed: int = _help("seed of the validation/test split and of static binarization", 0)
    target: Optional[str] = _help("custom: a dataset class of your own, as path/to/file.py:ClassName (docs/extending.md)", None)
    args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "the settings of a dataset that declares them (data.target's class)", "lightning": False},
    )

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, "data.batch_size", self.batch_size, "an integer >= 1")
        _require(self.val_size >= 0, "data.val_size", self.val_size, "an integer >= 0")
        self.source.check(self)

    @property
    def binary(self) -> bool:
        """Whether the model sees 0/1 pixels: a binary dataset, or one binarized."""
        return self.source.binary or self.binarize is not Binarize.none

    @property
    def source(self):
        """The dataset (:mod:`vaelab.data.splits`) that ``name`` (or ``target``) picks."""
        from vaelab.data.splits import dataset_for  # the datasets are registered where they are defined

        return dataset_for(self)
