"""One run's process, supervised as ``wandb agent`` supervises it.

The run's console output goes to a file. While it runs, a check is asked every POLL_SECONDS
whether to stop it (early termination); a run to stop, or one running at Ctrl-C, gets SIGTERM,
then SIGKILL if it has not exited KILL_AFTER_SECONDS later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vaelab.results.write_faults import writing

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
    interrupted: bool = False  # Ctrl-C: the run was stopped; the caller should stop too

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


def _wait(process: subprocess.Popen, should_stop: Callable[[], str | None] | None) -> str | None:
    """Wait for the process; the check's reason as soon as it asks to stop the process."""
    while True:
        try:
            process.wait(POLL_SECONDS)
            return None
        except subprocess.TimeoutExpired:
            pass
        reason = should_stop() if should_stop is not None else None
        if reason:
            return reason


def supervise(command: list[str], output: Path, should_stop: Callable[[], str | None] | None = None) -> Ended:
    """Run ``command`` with its output in ``output``; stop it when ``should_stop()`` gives a reason."""
    env = {k: v for k, v in os.environ.items() if k not in AGENT_ENVIRONMENT}
    started = time.monotonic()
    with writing(output):
        log = open(output, "w")
    with log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            reason = _wait(process, should_stop)
        except KeyboardInterrupt:
            return Ended(stop(process), time.monotonic() - started, interrupted=True)
        code = stop(process) if reason else process.wait()
    return Ended(code, time.monotonic() - started, stop_reason=reason)
