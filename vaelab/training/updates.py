"""One optimizer update's gradient handling: clip the gradient's norm, and skip the update whose
norm reaches a threshold (VDVAE's update skipping, Child 2021, section 3.4: a rare huge gradient
would undo much training, so the update is dropped and counted instead)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


class GradientUpdate:
    """Clipping at ``clip`` and skipping from ``skip_threshold`` (either None: off); ``skipped``
    counts the updates skipped in the run so far (kept in checkpoints by the module)."""

    def __init__(self, clip: float | None, skip_threshold: float | None):
        self.clip = clip
        self.skip_threshold = skip_threshold
        self.skipped = 0
        self.idle = clip is None and skip_threshold is None  # the update is zero_grad, backward, step

    def norm_before_clipping(self, parameters: Iterable[nn.Parameter]) -> Tensor | None:
        """The gradients' total norm, computed only where skipping needs it: before clipping, as VDVAE does."""
        if self.skip_threshold is None:
            return None
        return torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])

    def clip_directly(self, parameters: list[nn.Parameter]) -> Tensor | None:
        """Clip (if ``clip``) and return the norm before clipping (None where nothing needs it)."""
        if self.clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(parameters, self.clip)
            return norm if self.skip_threshold is not None else None
        return self.norm_before_clipping(parameters)

    def skips(self, norm: Tensor | None) -> bool:
        """Whether to drop this update: its norm reaches the threshold or is not finite (a NaN
        compares false). Reading the norm waits for the device, so only where skipping is on."""
        if self.skip_threshold is None:
            return False
        skip = not bool(norm < self.skip_threshold)
        self.skipped += skip
        return skip
