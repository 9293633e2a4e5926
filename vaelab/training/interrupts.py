"""Ctrl-C and SIGTERM: stop a command cleanly, with one line and exit status 128 + the signal.

Lightning turns Ctrl-C (KeyboardInterrupt) into exit status 1 without a checkpoint, and its
SIGTERM handler broadcasts to the other DDP ranks from inside the handler, which can hang
(Lightning issue #21406, as for SIGUSR1 in :mod:`vaelab.training.slurm_requeue`). While a fit runs,
:class:`SignalStop` handles SIGINT and SIGTERM instead: during training the first signal is
only recorded, and :class:`vaelab.training.resume.SignalCheckpoint` stops the run after the next
``training_step`` call, where it resumes exactly; a second signal, or one outside training
(data loading, the test), stops at once. Either way :class:`Interrupted` ends the command
with one line and exit status 130 (SIGINT) or 143 (SIGTERM), as a shell reports them.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

from vaelab.errors import Interrupted  # noqa: F401 (the exception these handlers raise)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


_active: list[SignalStop] = []  # the handlers in force, innermost last


def active() -> SignalStop | None:
    """The :class:`SignalStop` whose handlers are in force, if any."""
    return _active[-1] if _active else None


class SignalStop:
    """SIGINT and SIGTERM handlers for the ``with`` block; the previous ones come back after it.

    In training (:attr:`training`) the first signal is recorded in :attr:`requested` for the
    fit to act on; any other signal raises :class:`Interrupted` at once, where the main thread
    is. Once an exception is on its way out (:attr:`exiting`), signals change nothing.
    Outside the main thread, where Python cannot set handlers, it does nothing.
    """

    def __init__(self, stage: str = "before training", continuation: str | None = None) -> None:
        self.requested: int | None = None
        self.training = False
        self.exiting = False
        self.stage = stage  # for the line: where the signal came
        self.continuation = continuation  # how to continue, where it is not a fit's run.resume
        self.run_dir: Path | None = None
        self.checkpoint: Path | None = None  # the run's last.ckpt: continue from it if it exists
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self.handle) for signum in SIGNALS}
        _active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _active.remove(self)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def take_back(self) -> None:
        """Handle the signals again (Lightning installs its own SIGTERM handler as a fit starts)."""
        for signum in self._previous:
            signal.signal(signum, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.exiting:
            return
        if self.training and self.requested is None:
            self.requested = signum
            return
        self.exiting = True
        again = self.training  # a second signal while training waits for its checkpoint
        where = "again: stopped at once" if again else self.stage
        raise Interrupted(signum, f"interrupted by {signal_name(signum)} {where}{self.how_to_continue()}", at_once=True)

    def how_to_continue(self) -> str:
        if self.continuation is not None:
            return f"; {self.continuation}"
        if self.run_dir is not None and self.checkpoint is not None and self.checkpoint.is_file():
            return f"; continue with: python -m vaelab.fit run.resume={self.run_dir}"
        return "; nothing was saved: start the run again"
