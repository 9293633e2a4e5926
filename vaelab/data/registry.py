"""The datasets ``data.name`` can pick: each module's :class:`DatasetSource`."""

from __future__ import annotations

from vaelab.config.schema import DatasetKind
from vaelab.data import binarized_mnist, caltech_silhouettes, cifar10, fashion_mnist, frey, mnist, omniglot
from vaelab.data.splits import DatasetSource

DATASETS: dict[DatasetKind, DatasetSource] = {
    DatasetKind.mnist: mnist.SOURCE,
    DatasetKind.frey: frey.SOURCE,
    DatasetKind.binarized_mnist: binarized_mnist.SOURCE,
    DatasetKind.omniglot: omniglot.SOURCE,
    DatasetKind.caltech_silhouettes: caltech_silhouettes.SOURCE,
    DatasetKind.fashion_mnist: fashion_mnist.SOURCE,
    DatasetKind.cifar10: cifar10.SOURCE,
}


def dataset_source(name: DatasetKind) -> DatasetSource:
    return DATASETS[name]
