"""The Lightning data module: any dataset of the registry as [N, C*H*W] tensors in [0, 1]."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor

from vaelab.config.schema import Binarize, DataConfig
from vaelab.data.batches import InMemoryBatches
from vaelab.data.splits import dataset_for


class VAEDataModule(pl.LightningDataModule):
    """Holds the train / validation / test splits in memory and cuts their minibatches.

    The dataset module of ``cfg.name`` (vaelab.data.registry) makes the splits, any seeded
    ones by a permutation seeded with ``split_seed``: MNIST carves ``val_size`` validation
    images from its 60000 training images, Frey permutes its faces into test (``test_size``),
    validation (``val_size``) and train.

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
        self.source = dataset_for(cfg)
        self.image_shape = self.source.image_shape  # C x H x W, the order of the C*H*W values of a row
        self.binary = cfg.binary
        self.train_data: Tensor | None = None
        self.val_data: Tensor | None = None
        self.test_data: Tensor | None = None
        self.test_labels: Tensor | None = None

    def prepare_data(self) -> None:
        self.source.ensure(self.cfg.root, self.cfg.download)

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
        generator = torch.Generator().manual_seed(cfg.split_seed)  # the split first, then the draws
        splits = self.source.load(cfg, generator)
        train, val, test = splits.train, splits.val, splits.test
        self.test_labels = splits.test_labels
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

