"""Minibatches cut from one in-memory tensor, without a DataLoader."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor


class EpochPermutation:
    """The order of the examples in each epoch.

    With ``shuffle`` an epoch's order is ``torch.randperm`` from a CPU generator seeded with
    ``seed + epoch``, so every DDP rank draws the same permutation; otherwise it is 0..N-1.
    Lightning calls :meth:`set_epoch` on a loader's ``sampler`` before each epoch.
    """

    def __init__(self, num_examples: int, shuffle: bool, seed: int) -> None:
        self.num_examples = num_examples
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> Tensor:
        """The current epoch's order: int64 indices on the CPU."""
        if not self.shuffle:
            return torch.arange(self.num_examples)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_examples, generator=generator)


class InMemoryBatches:
    """An iterable over minibatches of the rows of ``data`` ([N, D]), sharded across ranks.

    Rank ``r`` of ``world_size`` takes positions r, r + world_size, ... of the epoch's order.
    When N is not a multiple of world_size the order is padded by repeating its first
    examples (as torch's ``DistributedSampler`` does), so every rank gets ceil(N / world_size)
    examples and the same number of batches, which DDP needs; up to world_size - 1 examples
    are then seen twice per epoch. With ``pad=False`` (for evaluation, where every example
    must count exactly once and ranks need not take equal steps) rank r takes positions
    r, r + world_size, ... and nothing more. The last batch may be smaller than batch_size.

    ``limit`` cuts each epoch after that many minibatches. With ``group`` the iterable yields
    lists of up to ``group`` consecutive minibatches (the training step takes one optimizer
    step for each), and its length counts those lists.
    """

    # Lightning reads ``batch_sampler`` whenever a loader has a ``sampler``.
    batch_sampler = None

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        group: int | None = None,
        limit: int | None = None,
    ) -> None:
        if data.dim() != 2:
            raise ValueError(f"data must have shape [N, D], got {tuple(data.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if (group is not None and group < 1) or (limit is not None and limit < 1):
            raise ValueError(f"group and limit must be >= 1, got {group} and {limit}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.data = data
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.group = group
        self.limit = limit
        self.sampler = EpochPermutation(len(data), shuffle, seed)

    @property
    def examples_per_rank(self) -> int:
        if self.pad:
            return math.ceil(len(self.data) / self.world_size)
        return len(range(self.rank, len(self.data), self.world_size))

    @property
    def minibatches(self) -> int:
        """Minibatches per epoch (the optimizer steps of a training epoch)."""
        batches = math.ceil(self.examples_per_rank / self.batch_size)
        return batches if self.limit is None else min(batches, self.limit)

    def __len__(self) -> int:
        return math.ceil(self.minibatches / (self.group or 1))

    def __iter__(self) -> Iterator[Tensor] | Iterator[list[Tensor]]:
        # A generator: the order is drawn at the first batch. Lightning calls ``iter`` before
        # ``set_epoch`` when it resumes from a checkpoint, and ``next`` after it.
        shard = self._shard(self.sampler.indices()).to(self.data.device)
        starts = range(0, self.minibatches * self.batch_size, self.batch_size)
        batches = (self.data.index_select(0, shard[start : start + self.batch_size]) for start in starts)
        if self.group is None:
            yield from batches
            return
        for first in range(0, len(starts), self.group):
            yield [next(batches) for _ in range(min(self.group, len(starts) - first))]

    def to(self, device: torch.device | str) -> InMemoryBatches:
        """Moves the data to ``device`` (batches are then cut there) and returns ``self``."""
        self.data = self.data.to(device)
        return self

    def _shard(self, order: Tensor) -> Tensor:
        if not self.pad:
            return order[self.rank :: self.world_size]
        total = self.examples_per_rank * self.world_size
        if total > len(order):
            order = order.repeat(math.ceil(total / len(order)))[:total]
        return order[self.rank : total : self.world_size]
