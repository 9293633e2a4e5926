"""One run's process, supervised as ``wandb agent`` supervises it.

The run's console output goes to a file. While it runs, a check is asked every POLL_SECONDS
whether to stop it (early termination); a run to stop gets SIGTERM, then SIGKILL if it has not
exited KILL_AFTER_SECONDS later. The run has a session of its own, so a Ctrl-C at the terminal
reaches the runner alone, which passes each SIGINT or SIGTERM it gets on to the run: vaelab.fit
then stops at a checkpoint it can continue from (vaelab/training/interrupts.py). On Linux the run also
gets SIGTERM when the runner dies, however it dies (kill -9 included).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vaelab.files.write_faults import writing

# Environment variables through which wandb agent puts its runs into a W&B sweep: the runs
# of the offline runner belong to no W&B sweep, so they are not passed on.
AGENT_ENVIRONMENT = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH")
POLL_SECONDS = 2.0  # how often a running run is checked for early termination
KILL_AFTER_SECONDS = 30.0  # SIGKILL a stopped run that has not exited this long after SIGTERM


@dataclass
class Ended:
    """How a supervised process ended."""

    exit_code: int
    seconds: float
    stop_reason: str | None = None  # the check's answer, when it asked for the run to stop
    signals: list[int] = field(default_factory=list)  # SIGINT, SIGTERM the runner got and passed on

    @property
    def interrupted(self) -> bool:
        """The runner was sent SIGINT or SIGTERM: the run was stopped; the caller should stop too."""
        return bool(self.signals)

    @property
    def status(self) -> str:
        """``finished`` (exit code 0), ``failed``, ``stopped`` (by the check) or ``interrupted``."""
        if self.interrupted:
            return "interrupted"
        if self.stop_reason:
            return "stopped"
        return "finished" if self.exit_code == 0 else "failed"


def stop(process: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL if the process has not exited after KILL_AFTER_SECONDS; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(KILL_AFTER_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


@contextmanager
def passed_on(process: subprocess.Popen) -> Iterator[list[int]]:
    """While the block runs, each SIGINT and SIGTERM this process gets goes to ``process``; the
    list holds them. (Outside the main thread, where Python sets no handlers: nothing.)"""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def pass_on(signum: int, frame: object) -> None:
        received.append(signum)
        if process.poll() is None:
            process.send_signal(signum)

    previous = {signum: signal.signal(signum, pass_on) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait(process: subprocess.Popen, should_stop: Callable[[], str | None] | None, signals: list[int]) -> str | None:
    """Wait for the process; the check's reason as soon as it asks to stop the process. Once a
    signal was passed on, wait up to KILL_AFTER_SECONDS for the run to stop, then SIGKILL it."""
    deadline = None
    while True:
        try:
            process.wait(POLL_SECONDS)
            return None
        except subprocess.TimeoutExpired:
            pass
        if signals:
            deadline = deadline or time.monotonic() + KILL_AFTER_SECONDS
            if time.monotonic() > deadline:
                process.kill()
            continue
        reason = should_stop() if should_stop is not None else None
        if reason:
            return reason


def _dies_with_the_runner() -> None:
    """In the run's process, before it starts (Linux): SIGTERM when its parent, the runner, dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def supervise(
    command: list[str], output: Path, should_stop: Callable[[], str | None] | None = None, append: bool = False
) -> Ended:
    """Run ``command`` with its output in ``output`` (added to it with ``append``); stop it when
    ``should_stop()`` gives a reason."""
    env = {k: v for k, v in os.environ.items() if k not in AGENT_ENVIRONMENT}
    started = time.monotonic()
    with writing(output):
        log = open(output, "a" if append else "w")
    with log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=_dies_with_the_runner if sys.platform.startswith("linux") else None,
        )  # fmt: skip
        with passed_on(process) as signals:
            reason = _wait(process, should_stop, signals)
            code = stop(process) if reason else process.wait()
    return Ended(code, time.monotonic() - started, stop_reason=reason, signals=signals)
