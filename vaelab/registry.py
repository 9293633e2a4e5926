"""A family of parts chosen by name: the built-in ones register themselves where they are defined.

``Registry.register`` is a class decorator; a module that defines a part registers it when it is
imported, so a new part is a new module and nothing central is edited. ``registry[name]`` is the
part, or one line naming the choices (and the closest one) for a name that is not registered; a
name ``path/to/file.py:ClassName`` (or ``package.module:ClassName``) is a part of the user's.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Generic, TypeVar

from vaelab.errors import ConfigError
from vaelab.targets import load_class

Part = TypeVar("Part")


class Registry(Generic[Part]):
    """The parts of one family (e.g. the objectives), each under its ``name``; ``key`` is the
    config key that picks one (e.g. ``model.objective``), for error messages."""

    def __init__(self, key: str, package: str, base: type | None = None):
        self.key = key
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

    def __getitem__(self, name: str) -> Part:
        """The part registered as ``name``, or the user's class that ``name`` names as
        ``path/to/file.py:ClassName`` or ``package.module:ClassName``."""
        if ":" in name:
            return self._users(name)
        self._load()
        if name not in self._parts:
            close = difflib.get_close_matches(name, self._parts, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{self.key}={name} is unknown: expected one of [{', '.join(self.names())}]{hint}")
        return self._parts[name]

    def _users(self, spec: str) -> Part:
        part = load_class(spec, self.key)
        if self._base is not None and not issubclass(part, self._base):
            raise ConfigError(f"{self.key}={spec}: {part.__name__} is not a {self._base.__module__}.{self._base.__name__} subclass")
        if not isinstance(getattr(part, "name", None), str):
            raise ConfigError(f"{self.key}={spec}: {part.__name__} has no name (a class attribute, e.g. name = \"my_bound\")")
        return part

    def _load(self) -> None:
        """Import every module of the package once, so each registers its parts."""
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self._package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self._package}.{module.name}")
