"""The test-set numbers that summary.json (``vaelab.fit``) and eval.json (``vaelab.evaluate``)
share: one function writes them, so that the same key means the same thing in both files."""

from __future__ import annotations

from torch import Tensor

from vaelab.errors import warn
from vaelab.models.likelihoods import Likelihood
from vaelab.evaluation.scores import (
    bits_per_dim, discrete_bits_per_dim, importance_diagnostics, std_error,
    unreliable_estimate_warning,
)


def test_numbers(
    test_ll: float, test_elbo: float, samples: int, data_dim: int, likelihood: type[Likelihood], binary: bool,
    per_image_ll: Tensor | None = None, ess: Tensor | None = None, pareto_k: Tensor | None = None,
) -> dict:
    """``test_ll`` (L_S with S = ``samples``, mean over the images), ``test_elbo``, ``ll_samples``,
    ``bits_per_dim`` (of a discrete likelihood: :func:`discrete_bits_per_dim`), ``test_bits_per_dim``
    (of a density of 8-bit data scaled to [0, 1]: :func:`bits_per_dim`; else None), and, with the
    per-image values, ``test_ll_se`` and the importance-sampling diagnostics, warning once (one
    line) where Pareto k-hat says that L_S is unreliable."""
    # a density of grey levels; the Bernoulli "likelihood" of grey levels is not normalised
    density = not binary and not likelihood.binary_data and not likelihood.grey_levels
    numbers = {
        "test_ll": test_ll,
        "test_elbo": test_elbo,
        "ll_samples": samples,
        "bits_per_dim": discrete_bits_per_dim(test_ll, data_dim, likelihood, binary),
        "test_bits_per_dim": bits_per_dim(test_ll, data_dim) if density else None,
    }
    if per_image_ll is None:
        return numbers
    numbers |= {"test_ll_se": std_error(per_image_ll), **importance_diagnostics(ess, pareto_k)}
    unreliable = unreliable_estimate_warning(numbers, samples, len(per_image_ll))
    if unreliable:
        warn(unreliable)
    return numbers
