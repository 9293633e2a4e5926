"""Compiling the training bound and its gradient with ``torch.compile``, where it pays.

A training step of these small models is bound by per-operation overhead, not arithmetic:
compiling fuses the elementwise work of the bound and of its backward pass (CPU, via C++
code from inductor) and, on CUDA, captures the step as a CUDA graph (``reduce-overhead``).
Compiling costs seconds to a minute once per process, so ``auto`` compiles only runs long
enough to repay it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import torch
from torch import Tensor

from vaelab.errors import ConfigError

# ``trainer.compile=null`` compiles a run with at least this many optimizer steps ahead.
# On this project's 2-core reference CPU compiling the training step costs about 40 s
# (4 s with inductor's on-disk cache warm) and saves 15-30% of a small step.
AUTO_MIN_STEPS = {"cpu": 30_000, "cuda": 2_000}


def has_cpp_compiler() -> bool:
    """Inductor's CPU back end builds C++: it needs a compiler on the PATH."""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def should_compile(setting: bool | None, device: torch.device, steps_ahead: int) -> bool:
    """``trainer.compile``: true, false, or null (auto: a long run on a CPU or CUDA device)."""
    if device.type not in AUTO_MIN_STEPS:
        if setting:
            raise ConfigError(f"trainer.compile=true is not supported on {device.type}: set trainer.compile=false")
        return False
    if device.type == "cpu" and not has_cpp_compiler():
        if setting:
            raise ConfigError("trainer.compile=true needs a C++ compiler (g++ or clang++) on the CPU: install one or set trainer.compile=false")
        return False
    if setting is None:
        return steps_ahead >= AUTO_MIN_STEPS[device.type]
    return setting


class CompiledForBatchSize:
    """``fn(x, *tensors)`` compiled for minibatches x of exactly ``batch_size`` rows; other
    sizes (an epoch's ragged last minibatch) run eagerly instead of compiling a second graph.

    On the CPU random numbers are drawn by torch's eager kernels inside the compiled code
    (inductor's ``fallback_random``), so a compiled step samples exactly the noise an
    eager step does and compiling never changes which random numbers a run uses.
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
