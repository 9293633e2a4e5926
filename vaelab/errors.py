"""Errors a user can act on.

Every error that reaches the command line is a :class:`VaelabError`: the CLI prints its
message as one line and exits non-zero. The message says what is wrong and how to fix it.
"""

import re
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path



class Interrupted(BaseException):
    """A command stopped for SIGINT or SIGTERM; its message is the one line to print.

    A BaseException, as KeyboardInterrupt is: no ``except Exception`` on the way out swallows it."""

    def __init__(self, signum: int, message: str, at_once: bool = False) -> None:
        super().__init__(message)
        self.signum = signum
        self.at_once = at_once  # a second signal, or one outside training: no checkpoint was waited for

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class VaelabError(Exception):
    """Base class of every error vaelab reports to the user as one line."""


class ConfigError(VaelabError):
    """An unknown group option, key or a bad value in the composed configuration."""


class DataError(VaelabError):
    """A dataset file is missing, truncated, corrupt or cannot be downloaded."""


class TrainingDivergedError(VaelabError):
    """The training loss became NaN or infinite."""


class CheckpointError(VaelabError):
    """A checkpoint or run directory to resume from is missing or unusable."""


class SweepError(VaelabError):
    """A sweep file, option or output folder that the offline sweep runner cannot use."""


class RunDirInUseError(VaelabError):
    """Another live process is writing into the run directory."""


class ResultsWriteError(VaelabError):
    """The operating system refused a write into a run directory or another output folder:
    no space, a read-only file system, no permission, or a file of the wrong kind in the way.

    ``remedy`` says what to do about that path ("free space there"); the command that catches
    the error adds its own way around it (``fix``: another run.dir, another --out).
    """

    def __init__(self, path: Path, reason: str, remedy: str, fix: str = "") -> None:
        self.path, self.reason, self.remedy, self.fix = path, reason, remedy, fix
        super().__init__(f"cannot write {path}: {reason}; " + (fix or remedy))

    def with_fix(self, fix: str) -> "ResultsWriteError":
        return ResultsWriteError(self.path, self.reason, self.remedy, fix)

    def __reduce__(self):  # picklable, as an error sent between processes must be
        return ResultsWriteError, (self.path, self.reason, self.remedy, self.fix)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type's name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# The command running in this process, for warn(); set by run_command.
_command = "vaelab"


def warn(message: str) -> None:
    """One line on stderr, ``<command>: warning: <message>``, from the first DDP rank only."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        print(f"{_command}: warning: {message}", file=sys.stderr)


# Settings that bound memory, by the step of a fit that ran out of it (the innermost of these
# functions in the traceback); vaelab.evaluate runs none of them.
MEMORY_SETTINGS = {
    "training_step": "model.k or data.batch_size",
    "validation_step": "model.k, data.batch_size or eval.batch_size",
    "test_step": "eval.chunk_size or eval.batch_size",
}


def out_of_memory_message(error: BaseException, settings: str) -> str | None:
    """The one line for an allocation that failed (CPU, CUDA, MPS), or None for another error.

    ``settings``: what to lower where the traceback does not show the step that ran out.
    """
    text = " ".join(str(error).split())
    torch = sys.modules.get("torch")
    if not (
        isinstance(error, MemoryError)
        or (torch is not None and isinstance(error, torch.OutOfMemoryError))
        or (isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text))
    ):
        return None
    steps = [frame.f_code.co_name for frame, _ in traceback.walk_tb(error.__traceback__)]
    settings = next((MEMORY_SETTINGS[s] for s in reversed(steps) if s in MEMORY_SETTINGS), settings)
    requested = re.search(r"(?:tried to allocate|Tried to allocate) (\d+) bytes", text)
    size = f"{int(requested.group(1)) / 2**30:,.1f} GiB" if requested else None
    if size is None and (cuda := re.search(r"Tried to allocate ([\d.]+ [KMGT]i?B)", text)):
        size = cuda.group(1)
    device = "GPU" if "CUDA" in text or "MPS" in text else "CPU"
    asked = f" (an allocation of {size})" if size else ""
    return f"out of {device} memory{asked}: lower {settings}"


def run_command(
    prog: str, run: Callable[[list[str]], int], argv: list[str] | None = None, memory_settings: str = ""
) -> int:
    """Run a command's ``run(words)``; a :class:`VaelabError`, or running out of memory, becomes
    one line on stderr, ``<prog>: error: <message>``, and exit status 2; :class:`Interrupted`
    (Ctrl-C, SIGTERM) one line ``<prog>: <message>`` from the first DDP rank, and 128 + the signal.

    ``memory_settings``: the settings to lower when memory runs out outside a fit's steps."""
    global _command
    _command = prog
    formatted = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # not Python's two lines of file, line and source
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except VaelabError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        rank = sys.modules.get("lightning_fabric.utilities.rank_zero")  # imported by any fit
        if getattr(getattr(rank, "rank_zero_only", None), "rank", 0) == 0:
            print(f"{prog}: {stop}", file=sys.stderr)
        return stop.exit_status
    except (MemoryError, RuntimeError) as error:
        message = out_of_memory_message(error, memory_settings or "the batch sizes")
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatted


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """How a command shows a warning: ``<command>: warning: <message>``, one line (as :func:`warn`)."""
    return f"{_command}: warning: {' '.join(str(message).split())}\n"
