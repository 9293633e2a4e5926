"""The Lightning data module: MNIST, Fashion-MNIST, CIFAR-10 or Frey faces as [N, C*H*W] tensors in [0, 1]."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor

from vaelab.config.schema import Binarize, DataConfig, DatasetKind
from vaelab.data.batches import InMemoryBatches
from vaelab.data.cifar10 import IMAGE_SHAPE as CIFAR10_SHAPE
from vaelab.data.cifar10 import ensure_cifar10, load_cifar10
from vaelab.data.fashion_mnist import ensure_fashion_mnist, load_fashion_mnist
from vaelab.data.frey import IMAGE_SIZE as FREY_SIZE
from vaelab.data.frey import ensure_frey, load_frey
from vaelab.data.mnist import IMAGE_SIZE as MNIST_SIZE
from vaelab.data.mnist import ensure_mnist, load_mnist
from vaelab.errors import DataError

# The datasets with an official train / test split: C x H x W, and their (ensure, load).
OFFICIAL_SPLITS = {
    DatasetKind.mnist: ((1, *MNIST_SIZE), ensure_mnist, load_mnist),
    DatasetKind.fashion_mnist: ((1, *MNIST_SIZE), ensure_fashion_mnist, load_fashion_mnist),
    DatasetKind.cifar10: (CIFAR10_SHAPE, ensure_cifar10, load_cifar10),
}


class VAEDataModule(pl.LightningDataModule):
    """Holds the train / validation / test splits in memory and cuts their minibatches.

    MNIST, Fashion-MNIST, CIFAR-10: validation is ``val_size`` images carved from the official
    training images (60000, 60000, 50000) by a permutation seeded with ``split_seed``; test is
    the official 10000. Frey: the faces are permuted with ``split_seed`` into test
    (``test_size``), validation (``val_size``) and train. ``image_shape`` is C x H x W, the
    order of the C*H*W values of a row.

    Binarization: ``static`` draws every split once; ``dynamic`` draws validation and test once
    (the same draws as ``static``, so evaluation is deterministic) and leaves the training
    set's grey levels for the training step to draw from afresh; ``none`` keeps grey levels.
    The seeded draws use ``split_seed``.

    The training loader yields lists of up to ``steps_per_call`` minibatches and stops an
    epoch after ``limit_train_batches`` minibatches.
    """

    def __init__(
        self,
        cfg: DataConfig,
        seed: int,
        eval_batch_size: int = 100,
        track_test: bool = False,
        steps_per_call: int = 1,
        limit_train_batches: int | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.eval_batch_size = eval_batch_size
        self.steps_per_call = steps_per_call
        self.limit_train_batches = limit_train_batches
        # The sets scored after every training epoch, in the order of val_dataloader's loaders:
        # the validation split, and the test set too for test-set learning curves.
        self.validation_sets = (["val"] if cfg.val_size > 0 else []) + (["test"] if track_test else [])
        self.image_shape = OFFICIAL_SPLITS[cfg.name][0] if cfg.name in OFFICIAL_SPLITS else (1, *FREY_SIZE)
        self.binary = cfg.binarize is not Binarize.none
        self.train_data: Tensor | None = None
        self.val_data: Tensor | None = None
        self.test_data: Tensor | None = None
        self.test_labels: Tensor | None = None

    def prepare_data(self) -> None:
        if self.cfg.name in OFFICIAL_SPLITS:
            OFFICIAL_SPLITS[self.cfg.name][1](self.cfg.root, self.cfg.download)
        else:
            ensure_frey(self.cfg.root, self.cfg.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is None:
            self._load()
        if self.trainer is not None and self.trainer.strategy.root_device.type == "cuda":
            self._move_to(self.trainer.strategy.root_device)

    def train_dataloader(self) -> InMemoryBatches:
        batches = self._batches(self.train_data, self.cfg.batch_size, shuffle=True)
        batches.group, batches.limit = self.steps_per_call, self.limit_train_batches
        return batches

    def val_dataloader(self) -> list[InMemoryBatches]:
        """One loader per name in ``validation_sets``; none (Lightning then skips validation)
        when there is no validation split and the test set is not tracked."""
        data = {"val": (self.val_data, self.cfg.batch_size), "test": (self.test_data, self.eval_batch_size)}
        return [self._batches(*data[name], shuffle=False, pad=False) for name in self.validation_sets]

    def test_dataloader(self) -> InMemoryBatches:
        return self._batches(self.test_data, self.eval_batch_size, shuffle=False, pad=False)

    def _load(self) -> None:
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.split_seed)
        if cfg.name in OFFICIAL_SPLITS:
            arrays = OFFICIAL_SPLITS[cfg.name][2](cfg.root)
            pool, test = _flatten(arrays.train_images), _flatten(arrays.test_images)
            self.test_labels = arrays.test_labels.long()
            order = _split_order(len(pool), cfg.val_size, "data.val_size", generator)
            val, train = pool[order[: cfg.val_size]], pool[order[cfg.val_size :]]
        else:
            pool = _flatten(load_frey(cfg.root))
            held_out = cfg.test_size + cfg.val_size
            order = _split_order(len(pool), held_out, "data.val_size + data.test_size", generator)
            test, val, train = (
                pool[order[: cfg.test_size]],
                pool[order[cfg.test_size : held_out]],
                pool[order[held_out:]],
            )
        if cfg.binarize is not Binarize.none:
            val, test = torch.bernoulli(val, generator=generator), torch.bernoulli(test, generator=generator)
        if cfg.binarize is Binarize.static:
            train = torch.bernoulli(train, generator=generator)
        self.train_data, self.val_data, self.test_data = train, val, test

    def _move_to(self, device: torch.device) -> None:
        self.train_data = self.train_data.to(device)
        self.val_data = self.val_data.to(device)
        self.test_data = self.test_data.to(device)
        if self.test_labels is not None:
            self.test_labels = self.test_labels.to(device)

    def _batches(self, data: Tensor | None, batch_size: int, shuffle: bool, pad: bool = True) -> InMemoryBatches:
        """Batches of this rank's shard: training pads so that ranks take equal steps;
        evaluation does not, so each example counts exactly once."""
        if data is None:
            raise RuntimeError("call setup() before asking for a data loader")
        rank, world_size = (0, 1) if self.trainer is None else (self.trainer.global_rank, self.trainer.world_size)
        return InMemoryBatches(data, batch_size, shuffle, self.seed, rank, world_size, pad)


def _flatten(images: Tensor) -> Tensor:
    """uint8 images [N, H, W] or [N, C, H, W] -> float32 rows [N, C*H*W] in [0, 1]."""
    return images.reshape(len(images), -1).to(torch.float32).div_(255)


def _split_order(num_examples: int, held_out: int, key: str, generator: torch.Generator) -> Tensor:
    """A seeded permutation of the examples; the first ``held_out`` leave the training set."""
    if held_out >= num_examples:
        raise DataError(
            f"{key} = {held_out} leaves no training data out of {num_examples} images; "
            f"make it smaller than {num_examples}"
        )
    return torch.randperm(num_examples, generator=generator)
