"""Datasets held in memory as [N, D] tensors and cut into minibatches on their device."""

from vaelab.config.schema import DataConfig
from vaelab.data.batches import EpochPermutation, InMemoryBatches
from vaelab.data.datamodule import VAEDataModule

__all__ = ["EpochPermutation", "InMemoryBatches", "VAEDataModule", "build_datamodule"]


def build_datamodule(cfg: DataConfig, seed: int, eval_batch_size: int = 100, track_test: bool = False, **training) -> VAEDataModule:
    """The data module described by ``cfg``; ``seed`` seeds the training shuffle;
    ``track_test`` also scores the test set after every epoch; ``training`` takes
    ``steps_per_call`` and ``limit_train_batches`` (see :class:`VAEDataModule`)."""
    return VAEDataModule(cfg, seed=seed, eval_batch_size=eval_batch_size, track_test=track_test, **training)
