"""A family of parts chosen by name: the built-in ones register themselves where they are defined.

``Registry.register`` is a class decorator; a module that defines a part registers it when it is
imported, so a new part is a new module and nothing central is edited. ``registry[name]`` is the
part, or one line naming the choices (and the closest one) for a name that is not registered; a
name ``path/to/file.py:ClassName`` (or ``package.module:ClassName``) is a part of the user's.
A group (``prior``, ``posterior``, ``net``, ``data``) picks one of the user's with
``<group>.name=custom <group>.target=path/file.py:Class`` and passes it ``<group>.args``
(:meth:`Registry.chosen`, :func:`users_part`).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Generic, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vaelab.errors import ConfigError, first_line
from vaelab.targets import construct, load_class

CUSTOM = "custom"  # <group>.name of a part of the user's, the class <group>.target names

Part = TypeVar("Part")


class Registry(Generic[Part]):
    """The parts of one family (e.g. the objectives), each under its ``name``; ``key`` is the
    config key that picks one (e.g. ``model.objective``), for error messages."""

    def __init__(self, key: str, package: str, base: type | None = None, custom: bool = False):
        self.key = key
        self._custom = custom  # whether ``name=custom`` picks the class ``<group>.target`` names
        self._package = package  # the package whose modules define the built-in parts
        self._base = base  # what a part of the user's (a class named path/file.py:Class) must subclass
        self._parts: dict[str, Part] = {}
        self._loaded = False

    def register(self, part: Part) -> Part:
        name = part.name
        if name in self._parts and self._parts[name] is not part:
            raise ValueError(f"two parts are registered as {self.key}={name}: {self._parts[name]!r} and {part!r}")
        self._parts[name] = part
        return part

    def names(self) -> list[str]:
        self._load()
        return sorted(self._parts)

    def choices(self) -> list[str]:
        """What the key may be set to: the registered names, and ``custom`` where a group takes one of the user's."""
        return self.names() + ([CUSTOM] if self._custom else [])

    def __getitem__(self, name: str) -> Part:
        """The part registered as ``name``, or the user's class that ``name`` names as
        ``path/to/file.py:ClassName`` or ``package.module:ClassName``."""
        if ":" in name:
            return self._users(name)
        self._load()
        if name not in self._parts:
            close = difflib.get_close_matches(name, self._parts, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{self.key}={name} is unknown: expected one of [{', '.join(self.choices())}]{hint}")
        return self._parts[name]

    def chosen(self, name: str, target: str | None, target_key: str) -> Part:
        """The part a group's ``name`` picks, or with ``name=custom`` the user's class ``target``
        names (``target_key``: the config key of ``target``, for error messages)."""
        if name == CUSTOM:
            if not target:
                raise ConfigError(f"{self.key}=custom needs {target_key}=path/to/file.py:ClassName (or package.module:ClassName)")
            return self._users(target, target_key, needs_name=False)
        if target is not None:
            raise ConfigError(f"{target_key}={target} is invalid: expected null unless {self.key}=custom (it is {name})")
        return self[name]

    def check(self, name: str, target: str | None, target_key: str) -> None:
        """One line for a name that is not registered or a target without ``name=custom``; the
        user's class itself is imported when the part is built."""
        if name != CUSTOM or not target:
            self.chosen(name, target, target_key)

    def _users(self, spec: str, key: str | None = None, needs_name: bool = True) -> Part:
        key = key or self.key
        part = load_class(spec, key)
        if self._base is not None and not issubclass(part, self._base):
            raise ConfigError(f"{key}={spec}: {part.__name__} is not a {self._base_path()} subclass")
        if needs_name and not isinstance(getattr(part, "name", None), str):
            raise ConfigError(f"{key}={spec}: {part.__name__} has no name (a class attribute, e.g. name = \"my_bound\")")
        return part

    def _base_path(self) -> str:
        """Where a user imports the base class from: the family's package where it exports it."""
        package = importlib.import_module(self._package)
        home = self._package if getattr(package, self._base.__name__, None) is self._base else self._base.__module__
        return f"{home}.{self._base.__name__}"

    def _load(self) -> None:
        """Import every module of the package once, so each registers its parts."""
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self._package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self._package}.{module.name}")


def part_name(part: object) -> str:
    """What a part calls itself: its ``name``, else its class's name (a part of the user's may have none)."""
    name = getattr(part, "name", None)
    return name if isinstance(name, str) else (part if isinstance(part, type) else type(part)).__name__


def typed_args(cls: type, args: dict, key: str) -> dict:
    """``args`` checked against ``cls.Settings`` where the class declares one (a dataclass: unknown
    keys, wrong types and its ``__post_init__`` checks are one line each), else as given."""
    settings = getattr(cls, "Settings", None)
    if settings is None:
        return dict(args)
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(settings), dict(args)))
    except OmegaConfBaseException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        field = getattr(error, "full_key", None) or ""
        raise ConfigError(f"{key}.{field}: {first_line(error)} ({cls.__name__}.Settings)") from error
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{key}: {first_line(error)} ({cls.__name__}.Settings)") from error
    return {name: getattr(typed, name) for name in typed.__dataclass_fields__}


def users_part(cls: type, key: str, args: dict, *context: object, **named_context: object) -> object:
    """A part of the user's: ``cls(*context, **named_context, **args)``, ``args`` typed by
    :func:`typed_args`; a mistake is one line naming ``key`` (e.g. ``prior.args``)."""
    return construct(cls, key, *context, **named_context, **typed_args(cls, args, key))


def no_args(args: dict, key: str, part: str) -> None:
    """A built-in part whose settings are keys of its group takes no ``<group>.args``."""
    if args:
        raise ConfigError(f"{key}={dict(args)} is not read by {part}: its settings are keys of the group (--help); args are for a part that declares them")
