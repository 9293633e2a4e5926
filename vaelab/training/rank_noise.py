"""Each DDP rank's own random draws: the global generators seeded from (run seed, rank).

Every rank builds the model from the run seed (``pl.seed_everything`` in ``vaelab.fit``),
so that the initial weights are the same everywhere. Left there, the ranks' global
generators would also stay equal, and each rank would draw the same dynamic binarization
and reparameterization noise for its different examples. A run of several processes
therefore reseeds every rank from (seed, rank) before its first training step
(:class:`vaelab.training.resume.ExactResume`) and before testing; a single process never
reseeds, so its numbers are those it always drew.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rank_seed_words(seed: int, rank: int) -> np.ndarray:
    """Six 32-bit words hashed from (seed, rank) by numpy's ``SeedSequence`` (seed as its
    entropy, rank as its spawn key: numpy's way of giving parallel workers independent
    streams), so that rank r of seed s and rank 0 of seed s + r are unrelated streams."""
    return np.random.SeedSequence(seed % 2**64, spawn_key=(rank,)).generate_state(6, np.uint32)


def seed_rank_generators(seed: int, rank: int) -> None:
    """Seed the global generators that training and testing draw from (torch's on the CPU
    and every CUDA device, numpy's, Python's) with :func:`rank_seed_words` of (seed, rank),
    two words each (numpy and Python both seed a Mersenne Twister from 32-bit words: the
    same words would give them the same stream)."""
    words = rank_seed_words(seed, rank)
    torch.manual_seed(int(words[0]) | int(words[1]) << 32)  # also every CUDA device's
    np.random.seed(words[2:4])
    random.seed(int(words[4]) | int(words[5]) << 32)


def seed_test_samples(seed: int, rank: int, world_size: int) -> None:
    """Seed the test's importance samples: in one process ``torch.manual_seed(seed)``, as
    ``vaelab.evaluate`` does, so that both draw the same samples; under DDP each rank its own
    stream (:func:`seed_rank_generators`), so that every test image gets independent samples
    as in one process, rather than the same samples as an image of another rank."""
    if world_size > 1:
        seed_rank_generators(seed, rank)
    else:
        torch.manual_seed(seed)
