"""Compose a run's configuration from ``configs/`` and ``key=value`` command-line words.

Order, later wins: the schema's defaults, ``configs/config.yaml``, one file per group
(``model``, ``posterior``, ``prior``, ``net``, ``data``, ``trainer``, ``logger``; chosen by ``group=option``), the
``experiment`` file if one is chosen (it may choose groups itself under ``defaults:`` and
set any key), then dotted overrides such as ``model.latent_dim=5``. A saved run's config
(to resume or evaluate it) takes the place of the files: :func:`compose_saved`. The result is
checked against :mod:`vaelab.config.schema`; every problem is one :class:`ConfigError` line.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from vaelab.config.plain import net_of_older_run
from vaelab.config.schema import FitConfig
from vaelab.errors import ConfigError, first_line

GROUPS = ("model", "posterior", "prior", "net", "hierarchy", "data", "trainer", "logger", "experiment")
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def config_dir() -> Path:
    """The folder of YAML files: ``$VAELAB_CONFIG_DIR`` or the project's ``configs/``."""
    return Path(os.environ.get("VAELAB_CONFIG_DIR", DEFAULT_CONFIG_DIR))


def search_path(root: Path | None = None) -> list[Path]:
    """Where group files are looked for, first match wins: the folders of ``$VAELAB_CONFIG_PATH``
    (separated by ``os.pathsep``, e.g. a folder of your own parts' YAML files), then ``root``."""
    extra = [Path(folder).expanduser() for folder in os.environ.get("VAELAB_CONFIG_PATH", "").split(os.pathsep) if folder]
    return [*extra, root or config_dir()]


@dataclass
class CommandLine:
    """The words after ``python -m vaelab.fit``, sorted by kind."""

    choices: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)


def parse_command_line(words: list[str], flags: tuple[str, ...] = ("--help", "-h", "--cfg")) -> CommandLine:
    """Split words into group choices (``model=x``), dotted overrides and flags."""
    line = CommandLine()
    for word in words:
        if word in flags:
            line.flags.add(word)
        elif "=" not in word:
            raise ConfigError(
                f"cannot read '{word}': expected group=option (groups: {', '.join(GROUPS)}) "
                "or a dotted key=value such as model.latent_dim=5; see --help"
            )
        else:
            key, value = word.split("=", 1)
            if key in GROUPS:
                line.choices[key] = value
            else:
                line.overrides.append(word)
    return line


def group_options(group: str, root: Path | None = None) -> list[str]:
    """The options of a config group: the YAML files in ``<folder>/<group>/`` of the :func:`search_path`."""
    return sorted({p.stem for folder in search_path(root) for p in (folder / group).glob("*.yaml")})


def load_yaml(path: Path) -> DictConfig:
    """A YAML file of keys and values; one :class:`ConfigError` line if it is unreadable or not a mapping."""
    try:
        loaded = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config file {path}: {first_line(error)}") from error
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return loaded


def _group_file(group: str, option: str, root: Path) -> DictConfig:
    for folder in search_path(root):
        if (folder / group / f"{option}.yaml").is_file():
            return load_yaml(folder / group / f"{option}.yaml")
    options = group_options(group, root)
    close = difflib.get_close_matches(option, options, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    folders = ", ".join(str(folder / group) for folder in search_path(root))
    raise ConfigError(f"unknown {group} '{option}': choose one of {', '.join(options)} (files in {folders}){hint}")


def _pop_defaults(node: DictConfig, source: str) -> dict[str, str | None]:
    defaults = node.pop("defaults", None)
    if defaults is None:
        return {}
    defaults = OmegaConf.to_container(defaults)
    if not isinstance(defaults, dict) or set(defaults) - set(GROUPS):
        raise ConfigError(f"{source}: 'defaults' must map groups ({', '.join(GROUPS)}) to options")
    return defaults


def _schema_keys(node: object, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, DictConfig):
            keys += _schema_keys(value, full + ".")
    return keys


def _explain(error: OmegaConfBaseException, source: str) -> ConfigError:
    """One line naming the key, what is wrong and how to fix it."""
    key = getattr(error, "full_key", None) or ""
    if isinstance(error, ConfigKeyError) or "not in" in str(error):
        known = _schema_keys(OmegaConf.structured(FitConfig))
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see --help for the keys"
        return ConfigError(f"unknown key '{key}' in {source}{hint}")
    message = first_line(error)
    return ConfigError(f"bad value for {key} in {source}: {message}; see --help for its type")


def _merge(base: DictConfig, update: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as error:
        raise _explain(error, source) from error


def _merge_all(base: DictConfig, updates: list[tuple[DictConfig, str]]) -> DictConfig:
    """``base`` merged with each update in turn; a failure names the file (``source``) it came from."""
    try:
        return OmegaConf.merge(base, *(update for update, _ in updates))  # one copy of the config, not one per file
    except OmegaConfBaseException as error:
        for update, source in updates:  # again one at a time: the file at fault raises, named
            base = _merge(base, update, source)
        raise _explain(error, "the config files") from error


def compose(line: CommandLine, root: Path | None = None) -> DictConfig:
    """Compose and type-check the configuration; values are resolved (no interpolations left)."""
    root = root or config_dir()
    main = load_yaml(root / "config.yaml")
    choices = _pop_defaults(main, "config.yaml")
    experiment_name = line.choices.get("experiment", choices.get("experiment"))
    experiment = None
    if experiment_name:
        experiment = _group_file("experiment", experiment_name, root)
        choices.update(_pop_defaults(experiment, f"experiment/{experiment_name}.yaml"))
    choices.update(line.choices)
    updates = [(main, "config.yaml")]
    for group in GROUPS[:-1]:
        if choices.get(group):
            node = _group_file(group, choices[group], root)
            updates.append((OmegaConf.create({group: node}), f"{group}/{choices[group]}.yaml"))
    if experiment is not None:
        updates.append((experiment, f"experiment/{experiment_name}.yaml"))
    return _overridden(_merge_all(OmegaConf.structured(FitConfig), updates), line.overrides)


def compose_saved(saved: DictConfig, line: CommandLine, keeps: str) -> DictConfig:
    """A saved run's config with the dotted overrides on top, checked and resolved as :func:`compose`.

    The saved config replaces the files (``vaelab.fit run.resume=``, ``vaelab.evaluate``), so a
    group choice is refused, in a line that opens with ``keeps`` ("a resumed run keeps its saved config").
    """
    if line.choices:
        raise ConfigError(
            f"{keeps}: drop {', '.join(f'{g}=' for g in line.choices)} and change single keys with dotted overrides"
        )
    if "net" in saved:
        plain = OmegaConf.to_container(saved, enum_to_str=True)
        saved = OmegaConf.create({**plain, "net": net_of_older_run(plain["net"], plain.get("model", {}))})
    cfg = _merge(OmegaConf.structured(FitConfig), saved, "the saved run config")
    return _overridden(cfg, line.overrides)


def _overridden(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``cfg`` with the dotted overrides applied in order, then resolved."""
    for word in overrides:
        try:
            update = OmegaConf.from_dotlist([word])
        except (OmegaConfBaseException, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read override '{word}': {first_line(error)}") from error
        cfg = _merge(cfg, update, f"override '{word}'")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as error:
        raise _explain(error, "an interpolation") from error
    return cfg


def to_object(cfg: DictConfig) -> FitConfig:
    """The typed :class:`FitConfig`; range checks in the schema run here."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise _explain(error, "the composed config") from error


def load_config(words: list[str]) -> tuple[DictConfig, FitConfig]:
    """Compose, resolve and validate; returns the YAML-able and the typed config."""
    cfg = compose(parse_command_line(words))
    return cfg, to_object(cfg)
