"""Errors a user can act on.

Every error that reaches the command line is a :class:`VaelabError`: the CLI prints its
message as one line and exits non-zero. The message says what is wrong and how to fix it.
"""

import sys
from collections.abc import Callable


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


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type's name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_command(prog: str, run: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run a command's ``run(words)``; a :class:`VaelabError` becomes one line on stderr,
    ``<prog>: error: <message>``, and exit status 2."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except VaelabError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
