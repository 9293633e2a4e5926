"""Bounds on log p(x) built from importance log-weights log w = log p(x,z) - log q(z|x)."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import Tensor

from vaelab.probability.importance_diagnostics import pareto_k_of_largest, tail_length


def iwae_bound(log_weights: Tensor) -> Tensor:
    """Importance-weighted bound L_k = log (1/k) sum_i w_i over dim 0 (Burda et al. eq. 8).

    With k=1 it is the Monte Carlo ELBO; it grows with k towards log p(x).
    """
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def renyi_bound(log_weights: Tensor, alpha: float) -> Tensor:
    """The K-sample estimate of the Renyi variational bound over dim 0, 1/(1-alpha) log (1/K)
    sum_k w_k^(1-alpha) (Li & Turner 2016, eq. 8 with its sampled estimate): alpha = 0 is L_K
    (:func:`iwae_bound`), and as alpha -> 1 it tends to the mean log-weight, the ELBO."""
    return iwae_bound((1.0 - alpha) * log_weights) / (1.0 - alpha)


def in_groups(log_weights: Tensor, groups: int) -> Tensor:
    """[M*K, ...] -> [K, M, ...]: M groups of K consecutive samples, the samples of a group in
    dim 0, so that a bound over dim 0 gives one value per group."""
    return log_weights.reshape(groups, -1, *log_weights.shape[1:]).transpose(0, 1)


class _GroupedBound:
    """The running sum of L_k over consecutive groups of k log-weights, fed in chunks of any size."""

    def __init__(self, k: int):
        self.k = k
        self.pending: Tensor | None = None  # the samples of an unfinished group: [< k, batch]
        self.total: Tensor | None = None
        self.groups = 0

    def add(self, log_w: Tensor) -> None:
        if self.pending is not None and len(self.pending):
            log_w = torch.cat([self.pending, log_w])
        groups = len(log_w) // self.k
        if groups:
            grouped = log_w[: groups * self.k].reshape(groups, self.k, -1)
            bounds = iwae_bound(grouped.transpose(0, 1)).sum(0)
            self.total = bounds if self.total is None else self.total + bounds
            self.groups += groups
        self.pending = log_w[groups * self.k :]


class ImportanceEstimates:
    """Estimates of log p(x) from one stream of importance log-weights per example.

    Fed chunks of log-weights [n, batch] in the order they were drawn (any chunk sizes), it
    keeps running sums only, so memory does not grow with the number of samples. From the
    first S = ``samples`` log-weights: ``log_likelihood``, the bound L_S (Burda et al. eq. 8;
    their section 5.1 estimates log p(x) with S = 5000), and ``elbo``, the mean log-weight
    (Kingma & Welling eq. 7). For each k of ``iwae_k``: ``iwae[k]``, the mean of L_k over the
    floor(P/k) consecutive groups of k of all P = max(S, max k) log-weights (``needed``),
    unbiased for E[L_k]; where k divides k', L_k <= L_k' per example. How far L_S can be
    trusted (:mod:`~vaelab.probability.importance_diagnostics`), from the same S log-weights:
    ``ess``, their effective sample size, and ``pareto_k``, the Pareto shape of the largest
    (kept as the stream goes: M + 1 per example, M = ``tail_length(S)``).
    """

    def __init__(self, samples: int, iwae_k: Iterable[int] = ()):
        self.samples = samples
        self._grouped = {k: _GroupedBound(k) for k in sorted(set(iwae_k))}
        self.needed = max([samples, *self._grouped])
        self.seen = 0
        self._log_sum: Tensor | None = None  # log sum_s w_s over the first S samples
        self._sum: Tensor | None = None  # sum_s log w_s over the first S samples
        self._log_sum_of_squares: Tensor | None = None  # log sum_s w_s^2 over the first S samples
        self._largest: Tensor | None = None  # the M + 1 largest of the first S log-weights
        self._keep = tail_length(samples) + 1 if samples >= 10 else 0

    def add(self, log_w: Tensor) -> None:
        """Take the next chunk of log-weights, [n, batch]."""
        for bound in self._grouped.values():
            bound.add(log_w)
        first = log_w[: max(0, self.samples - self.seen)]
        if len(first):
            log_sum, total = torch.logsumexp(first, dim=0), first.sum(0)
            self._log_sum = log_sum if self._log_sum is None else torch.logaddexp(self._log_sum, log_sum)
            self._sum = total if self._sum is None else self._sum + total
            log_sum_of_squares = torch.logsumexp(2 * first, dim=0)
            self._log_sum_of_squares = (
                log_sum_of_squares if self._log_sum_of_squares is None
                else torch.logaddexp(self._log_sum_of_squares, log_sum_of_squares)
            )
            if self._keep:
                pool = first if self._largest is None else torch.cat([self._largest, first])
                self._largest = torch.topk(pool, min(self._keep, len(pool)), dim=0).values
        self.seen += len(log_w)

    @property
    def missing(self) -> int:
        """How many more log-weights per example the estimates need."""
        return max(0, self.needed - self.seen)

    @property
    def log_likelihood(self) -> Tensor:
        """L_S: log (1/S) sum_s w_s, [batch]."""
        self._require_all()
        return self._log_sum - math.log(self.samples)

    @property
    def elbo(self) -> Tensor:
        """The mean of the first S log-weights, [batch]."""
        self._require_all()
        return self._sum / self.samples

    @property
    def iwae(self) -> dict[int, Tensor]:
        """k -> the mean L_k over the groups of k, [batch] each."""
        self._require_all()
        return {k: bound.total / bound.groups for k, bound in self._grouped.items()}

    @property
    def ess(self) -> Tensor:
        """The effective sample size (sum w)^2 / sum w^2 of the first S weights, [batch]."""
        self._require_all()
        return torch.exp(2 * self._log_sum - self._log_sum_of_squares)

    @property
    def pareto_k(self) -> Tensor | None:
        """The Pareto shape k-hat of the largest of the first S weights, [batch] on the CPU in
        float64 (which not every accelerator has); None for S < 10."""
        self._require_all()
        return pareto_k_of_largest(self._largest.cpu()) if self._keep else None

    def _require_all(self) -> None:
        if self.missing:
            raise ValueError(f"only {self.seen} of the {self.needed} log-weights per example were added")


def estimate_log_likelihood(
    log_weights: Callable[[int], Tensor], samples: int, chunk_size: int, iwae_k: Iterable[int] = ()
) -> ImportanceEstimates:
    """:class:`ImportanceEstimates` from ``log_weights(n)``, n fresh log-weights [n, batch] per
    call, drawn ``chunk_size`` samples at a time."""
    estimates = ImportanceEstimates(samples, iwae_k)
    while estimates.missing:
        estimates.add(log_weights(min(chunk_size, estimates.missing)))
    return estimates
