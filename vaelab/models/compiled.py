"""Compiling with ``torch.compile``, where it pays: the training bound and its gradient, and
the log-weights of the test-set estimates of log p(x).

A training step of these small models is bound by per-operation overhead, not arithmetic:
compiling fuses the elementwise work of the bound and of its backward pass (CPU, via C++
code from inductor) and, on CUDA, captures the step as a CUDA graph (``reduce-overhead``).
The test-set estimate (5000 samples per image) is bound by the decoder's matrix products;
compiling fuses the passes over their outputs (softplus, the log-likelihood and its sum), see
``benchmarks/evaluation.py``. Compiling costs seconds to a minute once per process, so
``auto`` compiles only work long enough to repay it.

On the CPU random numbers are drawn by torch's eager kernels inside the compiled code
(inductor's ``fallback_random``), so compiled code samples exactly the noise eager code does
and compiling never changes which random numbers a run uses.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vaelab.errors import ConfigError, first_line

if TYPE_CHECKING:
    from vaelab.models.vae import VAE, Posterior

# ``trainer.compile=null`` compiles a run when the steps ahead are expected to save more time
# than compiling costs. On CUDA (never measured here) from this many steps:
AUTO_MIN_STEPS_CUDA = 2_000
# On the CPU, the saving per step grows with the step's arithmetic: measured on this project's
# 2-core reference CPU (benchmarks/throughput.py, 2026-11-22), 0.36 ms of 5.1 ms for vaelab's
# step of Burda et al.'s one-layer model at batch 20 (51 MFLOP per step) and 1.9 ms of 14.5 ms
# for the plain loop's step of the default model at batch 100 (790 MFLOP): about
# CPU_SAVING_PER_STEP + CPU_SAVING_PER_FLOP * FLOP. Compiling the default model's step took 42 s
# with an empty inductor cache (a few seconds with it warm): CPU_COMPILE_SECONDS.
CPU_SAVING_PER_STEP = 0.25e-3  # seconds
CPU_SAVING_PER_FLOP = 2.1e-12  # seconds
CPU_COMPILE_SECONDS = 40.0

# ``eval.compile=null`` compiles the test-set estimates from this many importance samples in
# all (images x eval.ll_samples), on the CPU. On the 2-core reference CPU compiling takes
# 5-25 s and saves 6-16% of the 16-27 us a sample of the default model costs eagerly
# (benchmarks/evaluation.py; the default test, 5 * 10^7 samples, saves about 1-2 minutes).
AUTO_MIN_SAMPLES = 20_000_000

_failed_devices: set[str] = set()  # device types on which compiling the estimates failed


def has_cpp_compiler() -> bool:
    """Inductor's CPU back end builds C++: it needs a compiler on the PATH."""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def should_compile(setting: bool | None, device: torch.device, steps_ahead: int, step_flops: float) -> bool:
    """``trainer.compile``: true, false, or null (auto: where ``steps_ahead`` training steps of
    ``step_flops`` each are expected to repay compiling, on a CPU or CUDA device)."""
    if device.type not in ("cpu", "cuda"):
        if setting:
            raise ConfigError(f"trainer.compile=true is not supported on {device.type}: set trainer.compile=false")
        return False
    if device.type == "cpu" and not has_cpp_compiler():
        if setting:
            raise ConfigError("trainer.compile=true needs a C++ compiler (g++ or clang++) on the CPU: install one or set trainer.compile=false")
        return False
    if setting is not None:
        return setting
    if device.type == "cuda":
        return steps_ahead >= AUTO_MIN_STEPS_CUDA
    return steps_ahead * (CPU_SAVING_PER_STEP + CPU_SAVING_PER_FLOP * step_flops) >= CPU_COMPILE_SECONDS


def training_step_flops(vae: VAE, batch_size: int) -> int:
    """FLOP of a training step's matrix products, forward and backward (3 x 2 per multiply-add):
    q(z_1|x) once per example, every other layer once per sample of z (k per example)."""

    def products(module: torch.nn.Module, rows: int) -> int:
        return sum(rows * m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))

    samples = batch_size * vae.cfg.k
    per_sample = [*vae.encoders[1:], *vae.priors, vae.decoder]
    return 6 * (products(vae.encoders[0], batch_size) + sum(products(m, samples) for m in per_sample))


class CompiledForBatchSize:
    """``fn(x, *tensors)`` compiled for minibatches x of exactly ``batch_size`` rows; other
    sizes (an epoch's ragged last minibatch) run eagerly instead of compiling a second graph.

    On the CPU the compiled step samples the noise an eager step does (``fallback_random``).
    """

    def __init__(self, fn: Callable[..., tuple[Tensor, ...]], batch_size: int, device: torch.device) -> None:
        self.fn = fn
        self.batch_size = batch_size
        if device.type == "cuda":
            self.compiled = torch.compile(fn, mode="reduce-overhead", dynamic=False)
        else:
            self.compiled = torch.compile(fn, dynamic=False, options={"fallback_random": True})

    def __call__(self, x: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
        return self.compiled(x, *tensors) if x.shape[0] == self.batch_size else self.fn(x, *tensors)


def should_compile_estimates(setting: bool | None, device: torch.device, samples_in_all: int) -> bool:
    """``eval.compile``: true, false, or null (auto: on a CPU with a C++ compiler, from
    ``AUTO_MIN_SAMPLES`` importance samples in all; elsewhere it was not measured)."""
    if setting is None:
        return device.type == "cpu" and has_cpp_compiler() and samples_in_all >= AUTO_MIN_SAMPLES
    return setting


def compiled_log_weights(vae: VAE) -> Callable[[Tensor, int, Posterior], Tensor]:
    """``vae.log_weights`` compiled: the same samples, so the estimates change only by float
    rounding. Where compiling fails (it fails before drawing any noise), one warning and the
    eager ``vae.log_weights``: a fit's test after hours of training does not stop for it."""
    compiled = torch.compile(vae.log_weights, dynamic=False, options={"fallback_random": True})

    def log_weights(x: Tensor, k: int, posterior: Posterior) -> Tensor:
        if x.device.type not in _failed_devices:
            try:
                return compiled(x, k, posterior)
            except Exception as error:  # no C++ compiler, an op inductor cannot compile, ...
                _failed_devices.add(x.device.type)
                warnings.warn(
                    "torch.compile failed, so log p(x) is estimated eagerly (slower; eval.compile=false "
                    f"skips the attempt): {first_line(error)}",
                    stacklevel=2,
                )
        return vae.log_weights(x, k, posterior)

    return log_weights
