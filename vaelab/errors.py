"""Errors a user can act on.

Every error that reaches the command line is a :class:`VaelabError`: the CLI prints its
message as one line and exits non-zero. The message says what is wrong and how to fix it.
"""


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
