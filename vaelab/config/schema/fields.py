"""The two helpers of every schema module: a field with its ``--help`` text, and a range check."""

from __future__ import annotations

from dataclasses import dataclass, field

from vaelab.errors import ConfigError


def _require(condition: bool, key: str, value: object, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value} is invalid: expected {expected}")


def _help(text: str, default: object, lightning: bool = False, choices: str | None = None) -> object:
    """A dataclass field with a default and a help string for ``--help``; ``lightning``
    marks a ``trainer.*`` key that goes unchanged to ``pl.Trainer``'s argument of that name;
    ``choices`` names the registry (``module:attribute``) whose parts are the key's values."""
    metadata = {"help": text, "lightning": lightning, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)
