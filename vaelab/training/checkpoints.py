"""Checkpoint files: written whole or not at all, and checked whole before they are loaded.

Lightning writes every checkpoint through the strategy's ``CheckpointIO``: ModelCheckpoint's
``last.ckpt`` and ``best-*.ckpt``, the SLURM ``hpc_ckpt_<n>.ckpt`` of :mod:`vaelab.training.slurm_requeue`, any
``trainer.save_checkpoint``. Lightning's own ``TorchCheckpointIO`` writes to a temporary file in
``$TMPDIR`` and moves it, which across file systems is a copy into the target: a kill or a full
disk then leaves a truncated checkpoint. :class:`AtomicCheckpointIO` writes beside the target
and renames (:func:`vaelab.files.atomic.replace_atomically`).

A checkpoint is a zip archive (``torch.save``): :func:`checkpoint_problem` says why a file is
not a whole one (cut short: no central directory; corrupt: a member fails its CRC-32).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from vaelab.files.atomic import replace_atomically
from vaelab.files.write_faults import writing


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO``, but a checkpoint is renamed into place once written."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        replace_atomically(Path(path), lambda tmp: _save(checkpoint, tmp))

    def remove_checkpoint(self, path: Any) -> None:
        with writing(Path(path)):
            super().remove_checkpoint(path)


def _save(checkpoint: dict[str, Any], path: Path) -> None:
    # Serialized in memory first (as Lightning's own writer does), then written by Python, whose
    # write raises the OSError of a full disk: torch's file writer turns it into a RuntimeError.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with open(path, "wb") as file:
        file.write(buffer.getbuffer())


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole ``torch.save`` file, in a few words; None if it is one."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()  # reads every member and checks its CRC-32
    except zipfile.BadZipFile as error:
        return f"truncated or not a checkpoint ({error})"
    except (OSError, EOFError, ValueError) as error:  # unreadable, or cut inside a member
        return f"truncated or unreadable ({error})"
    if bad_member is not None:
        return f"corrupt (its member {bad_member} fails the CRC check)"
    return None
