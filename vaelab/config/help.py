"""The text of ``--help``: usage, config groups with their options, and every key."""

from __future__ import annotations

import dataclasses
import importlib
import typing
from enum import Enum

from vaelab.config.compose import GROUPS, group_options
from vaelab.config.schema import FitConfig

USAGE = """\
usage: python -m vaelab.fit [group=option ...] [key=value ...] [--cfg] [--help]

Train a VAE, test it and write the results into a run directory.
  group=option   pick configs/<group>/<option>.yaml       e.g. model=gaussian_learned data=frey
  key=value      override one key (dotted, later wins)    e.g. model.latent_dim=5 optim.lr=3e-4
  --cfg          print the composed, validated config and exit without training
  run.resume=D   continue the run in directory D (or from a .ckpt file); overrides still apply
"""


def _type_name(tp: object) -> str:
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "|".join(member.value for member in tp)
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    if typing.get_origin(tp) is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    return getattr(tp, "__name__", str(tp))


def _choices(registry: str) -> str:
    """The names registered in ``registry`` (``module:attribute``), as an enum's values are shown."""
    module, attribute = registry.split(":")
    return "|".join(getattr(importlib.import_module(module), attribute).choices())


def _default(f: dataclasses.Field) -> object:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return value.value if isinstance(value, Enum) else value


def _key_lines(schema: type, prefix: str = "") -> list[str]:
    lines = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += _key_lines(tp, f"{prefix}{f.name}.")
            continue
        type_name = _choices(f.metadata["choices"]) if f.metadata.get("choices") else _type_name(tp)
        lines.append(f"  {prefix + f.name:<28} {type_name:<36} {f.metadata.get('help', '')}")
    return lines


def help_text() -> str:
    groups = [f"  {group:<11} {', '.join(group_options(group))}" for group in GROUPS]
    return "\n".join(
        [USAGE, "config groups (configs/<group>/*.yaml):", *groups, "",
         "keys (schema defaults; the group files set most of them; --cfg shows the result):",
         *_key_lines(FitConfig)]
    )
