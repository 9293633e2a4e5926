"""Parts of your own: a class named on the command line (``prior.target=file.py:ClassName``)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from vaelab.errors import ConfigError, first_line


def load_class(spec: str, key: str) -> type:
    """The class ``spec`` names: ``path/to/file.py:ClassName`` or ``package.module:ClassName``."""
    module_name, _, class_name = spec.rpartition(":")
    if not module_name or not class_name:
        raise ConfigError(f"{key}={spec} is invalid: expected path/to/file.py:ClassName or package.module:ClassName")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"{key}={spec}: no file {path}; give the path from the working directory or an absolute one")
            name = f"vaelab_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"  # the same in every process
            module = sys.modules.get(name)
            if module is None:
                loader = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(loader)
                sys.modules[name] = module  # before running it, so its classes can be pickled and found again
                loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as error:  # a syntax error, a failing import inside the user's file, ...
        raise ConfigError(f"{key}={spec}: cannot import {module_name}: {type(error).__name__}: {first_line(error)}") from error
    found = getattr(module, class_name, None)
    if not inspect.isclass(found):
        raise ConfigError(f"{key}={spec}: {module_name} has no class {class_name}")
    return found


def construct(cls: type, key: str, *args: object, **kwargs: object) -> object:
    """``cls(*args, **kwargs)``; arguments it does not take are one line naming those it does."""
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as error:
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
        raise ConfigError(f"{key}: {cls.__name__} {error}; it takes {', '.join(accepted) or 'no arguments'}") from error
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{key}: {cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: {first_line(error)}") from error
