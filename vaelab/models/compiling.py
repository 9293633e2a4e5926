"""``torch.compile`` for the test-set estimates of log p(x): whether it pays, and a safe wrapper.

The estimate with 5000 samples per test image is most of a CPU run's time, and most of its
own time outside the decoder's matrix products goes to passes over its activations (softplus,
the Bernoulli log-likelihood) that the compiler fuses; see ``benchmarks/evaluation.py``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from vaelab.errors import first_line

if TYPE_CHECKING:
    from vaelab.models.vae import VAE, Posterior

# Importance samples in all (images x samples) from which compiling pays on a CPU: compiling
# takes 20-60 s there, and saves about a quarter of the ~14 us that a sample of the default
# model costs eagerly.
COMPILE_FROM_SAMPLES = 10_000_000

_failed: set[str] = set()  # device types on which torch.compile failed in this process


def compile_pays(choice: bool | None, device: torch.device, samples_in_all: int) -> bool:
    """``eval.compile``: True or False as given; None (auto): on the CPU from
    ``COMPILE_FROM_SAMPLES`` importance samples in all (elsewhere it was not measured)."""
    if choice is not None:
        return choice
    return device.type == "cpu" and samples_in_all >= COMPILE_FROM_SAMPLES


def compiled_log_weights(vae: VAE) -> Callable[[Tensor, int, Posterior], Tensor]:
    """``vae.log_weights`` under ``torch.compile``, drawing the same samples (torch's generator
    makes the noise: inductor's ``fallback_random``), so the estimates change only by float
    rounding. Where compiling fails: one warning, and the eager ``vae.log_weights``."""
    compiled = torch.compile(vae.log_weights, dynamic=False, options={"fallback_random": True})

    def log_weights(x: Tensor, k: int, posterior: Posterior) -> Tensor:
        if x.device.type not in _failed:
            try:
                return compiled(x, k, posterior)
            except Exception as error:  # no C++ compiler, an unsupported op, ...; raised before any sampling
                _failed.add(x.device.type)
                warnings.warn(
                    f"torch.compile failed, so log p(x) is estimated eagerly (slower; eval.compile=false "
                    f"skips the attempt): {first_line(error)}",
                    stacklevel=2,
                )
        return vae.log_weights(x, k, posterior)

    return log_weights
