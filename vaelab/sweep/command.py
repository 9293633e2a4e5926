"""A run's command line: built as ``wandb agent`` builds it, checked as vaelab.fit reads it.

The sweep's ``command`` and its macros (``${args_no_hyphens}``, ``${envvar:NAME}``, ...) are
expanded by wandb's own functions (``wandb.sdk.launch.sweeps.utils``), with
``${interpreter}`` = this Python and ``${env}`` = ``/usr/bin/env``. The extra ``key=value``
words of the command line follow, then ``run.dir=<run dir>``, so that the run writes where
the runner reads.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from wandb.sdk.launch.sweeps.utils import DEFAULT_SWEEP_COMMAND, create_sweep_command, create_sweep_command_args

from vaelab.config import load_config
from vaelab.errors import ConfigError, SweepError

VAELAB_COMMAND = "[${env}, ${interpreter}, -m, vaelab.fit, ${args_no_hyphens}]"
ARGS_JSON_FILE = "sweep-args.json"  # in the run directory, for ${args_json_file}


def require_command(sweep: dict, source: str) -> None:
    """A SweepError unless the sweep says what to run: a ``command:``, or W&B's default command
    (``${env} ${interpreter} ${program} ${args}``) and a ``program:``."""
    command = sweep.get("command") or DEFAULT_SWEEP_COMMAND
    if command == DEFAULT_SWEEP_COMMAND and not sweep.get("program"):
        raise SweepError(f"{source}: no command: vaelab sweeps run command: {VAELAB_COMMAND}")


def check_extra_words(extra: list[str], sweep: dict) -> None:
    """The extra words of the command line are key=value overrides of keys the sweep leaves alone."""
    searched = set(sweep["parameters"])
    for word in extra:
        key = word.split("=", 1)[0]
        if "=" not in word or not key:
            raise SweepError(f"cannot read '{word}': extra words are key=value overrides, e.g. trainer.max_epochs=5")
        if key in searched:
            raise SweepError(f"'{word}' sets {key}, a parameter of the sweep: change it in the sweep file")
        if key == "run.dir":
            raise SweepError(f"'{word}': the runner gives each run its own run.dir below --out")


def param_values(proposal_config: dict) -> dict[str, Any]:
    """``{name: value}`` from the engine's ``{name: {"value": value}}``, as plain JSON values
    (what wandb agent receives from the server): numpy numbers become Python numbers."""

    def plain(value: Any) -> Any:
        if hasattr(value, "tolist"):
            return value.tolist()
        raise TypeError(f"cannot pass {value!r} of type {type(value).__name__} to a run")

    values = {name: spec["value"] for name, spec in proposal_config.items()}
    return json.loads(json.dumps(values, default=plain))


def command_args(values: dict[str, Any]) -> dict[str, Any]:
    """The argument macros of a run (``args``, ``args_no_hyphens``, ...), from wandb itself."""
    return create_sweep_command_args({"args": {name: {"value": value} for name, value in values.items()}})


def write_args_json_file(sweep: dict, values: dict[str, Any], run_dir: Path) -> None:
    """The file of ``${args_json_file}`` in the run directory, if the sweep's command names it."""
    if "${args_json_file}" in [str(chunk) for chunk in sweep.get("command") or []]:
        (run_dir / ARGS_JSON_FILE).write_text(command_args(values)["args_json"][0])


def build_command(sweep: dict, values: dict[str, Any], run_dir: Path, extra: list[str] = ()) -> list[str]:
    """The argv of one run: the sweep's command with its macros expanded as wandb agent does,
    then the extra ``key=value`` words, then ``run.dir=<run_dir>``. Writes nothing: the file
    of ``${args_json_file}`` is written when the run starts."""
    macros = command_args(values)
    macros["interpreter"] = [sys.executable]
    macros["env"] = ["/usr/bin/env"] if os.name != "nt" else []
    macros["program"] = [sweep["program"]] if sweep.get("program") else []
    macros["args_json_file"] = [str(run_dir / ARGS_JSON_FILE)]
    # create_sweep_command expands ${envvar:NAME} in the list it is given: give it a copy.
    command = create_sweep_command(list(sweep.get("command") or DEFAULT_SWEEP_COMMAND))
    words: list[str] = []
    for chunk in map(str, command):
        if chunk.startswith("${") and chunk.endswith("}"):
            words += macros.get(chunk[2:-1]) or []
        else:
            words.append(chunk)
    return [*words, *extra, f"run.dir={run_dir}"]


def vaelab_words(command: list[str]) -> list[str] | None:
    """The words after ``-m vaelab.fit`` (or ``.../vaelab/fit.py``); None for another program."""
    for i, word in enumerate(command):
        if word == "vaelab.fit" and i > 0 and command[i - 1] == "-m":
            return command[i + 1:]
        if word.replace("\\", "/").endswith("vaelab/fit.py"):
            return command[i + 1:]
    return None


def check_vaelab_command(command: list[str], source: str) -> None:
    """Compose a proposed run's config as vaelab.fit would (no training); a SweepError if it fails."""
    words = vaelab_words(command)
    if words is None:
        return
    hyphens = [w for w in words if w.startswith("-") and "=" in w]
    if hyphens:
        raise SweepError(
            f"{source}: vaelab.fit takes key=value words, not '{hyphens[0]}': put ${{args_no_hyphens}} "
            f"in the command, not ${{args}}: command: {VAELAB_COMMAND}"
        )
    try:
        load_config(words)
    except ConfigError as error:
        raise SweepError(f"{source}: vaelab.fit rejects the proposed run: {error}") from None
