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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from vaelab.errors import ConfigError, first_line
from vaelab.probability.bounds import ImportanceEstimates, estimate_log_likelihood

if TYPE_CHECKING:
    from vaelab.models.posteriors import GaussianParams
    from vaelab.models.vae import VAE

# ``trainer.compile=null`` compiles a run when the steps ahead are expected to save more time
# than compiling costs. The constants rest on benchmarks (docs/speed.md#when-auto-compiles).
# On CUDA, a guess (nothing measured there): from this many steps.
AUTO_MIN_STEPS_CUDA = 2_000
# On the CPU the saving per step grows with the step's arithmetic, about
# CPU_SAVING_PER_STEP + CPU_SAVING_PER_FLOP * FLOP; compiling costs CPU_COMPILE_SECONDS (a cold cache).
CPU_SAVING_PER_STEP = 0.25e-3  # seconds
CPU_SAVING_PER_FLOP = 2.1e-12  # seconds
CPU_COMPILE_SECONDS = 40.0

# ``eval.compile=null`` compiles the test-set estimates from this many importance samples in
# all (images x eval.ll_samples), on the CPU: where the saving repays compiling (docs/speed.md).
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
    """FLOP of a training step's matrix products and convolutions, forward and backward (3 x the
    forward's): those of one pass of every layer, q(z_1|x) once per example, every other layer
    once per sample of z (k per example), and any fixed cost (a VampPrior's pseudo-inputs).

    ``torch.utils.flop_counter`` counts three tiny passes (1 example x 1 sample, 1 x 2, 2 x 1),
    and the count, linear in examples and samples, is extrapolated to the step's: no memory is
    needed for the step's own size, no random number of the run is drawn, no gradient is kept."""
    parameter = next(vae.parameters())
    devices = [parameter.device] if parameter.device.type == "cuda" else []

    def forward_flops(examples: int, k: int) -> int:
        x = torch.zeros(examples, vae.data_dim, device=parameter.device, dtype=parameter.dtype)
        with torch.random.fork_rng(devices=devices), torch.no_grad(), FlopCounterMode(display=False) as counter:
            vae.log_weights(x, k)
        return counter.get_total_flops()

    one = forward_flops(1, 1)
    per_sample = forward_flops(1, 2) - one
    per_example = forward_flops(2, 1) - one - per_sample
    fixed = one - per_example - per_sample
    return 3 * (fixed + per_example * batch_size + per_sample * batch_size * vae.cfg.k)


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


def compiled_log_weights(vae: VAE) -> Callable[[Tensor, int, GaussianParams], Tensor]:
    """``vae.log_weights`` compiled, built once per model: the same samples, so the estimates
    change only by float rounding. Where compiling fails (it fails before drawing any noise),
    one warning and the eager ``vae.log_weights``: a fit's test after hours of training does
    not stop for it."""
    cached = getattr(vae, "_compiled_log_weights", None)
    if cached is not None:
        return cached
    compiled = torch.compile(vae.log_weights, dynamic=False, options={"fallback_random": True})

    def log_weights(x: Tensor, k: int, first: GaussianParams) -> Tensor:
        if x.device.type not in _failed_devices:
            try:
                return compiled(x, k, first)
            except Exception as error:  # no C++ compiler, an op inductor cannot compile, ...
                _failed_devices.add(x.device.type)
                warnings.warn(
                    "torch.compile failed, so log p(x) is estimated eagerly (slower; eval.compile=false "
                    f"skips the attempt): {first_line(error)}",
                    stacklevel=2,
                )
        return vae.log_weights(x, k, first)

    vae._compiled_log_weights = log_weights  # a plain attribute: not a parameter, not in the state dict
    return log_weights


def importance_estimates(
    vae: VAE, x: Tensor, samples: int, chunk_size: int, iwae_k: Iterable[int] = (), compiled: bool = False
) -> ImportanceEstimates:
    """Importance-sampled log p(x) (L_S), ELBO and L_k of each k from one stream of samples of
    q, drawn ``chunk_size`` at a time: see :class:`ImportanceEstimates`. ``compiled``: the
    log-weights under ``torch.compile``, the same samples."""
    first = vae.encode(x)  # q(z_1|x), computed once for every chunk
    log_weights = compiled_log_weights(vae) if compiled else vae.log_weights
    with vae.prior.fixed():  # the prior's own parameters too (a VampPrior's components)
        return estimate_log_likelihood(lambda n: log_weights(x, n, first), samples, chunk_size, iwae_k)
