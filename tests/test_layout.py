"""The layout's rules: short modules and functions, and part choices that come from the registries."""

from __future__ import annotations

import ast
import dataclasses
import importlib

import pytest

from tests.helpers import PROJECT
from vaelab.config.compose import load_yaml
from vaelab.config.schema import DataConfig, ModelConfig, NetConfig, PosteriorConfig, PriorConfig

MODULE_LINES, FUNCTION_LINES = 400, 60


def test_no_module_over_400_lines_and_no_function_over_60():
    long = []
    for path in sorted((PROJECT / "vaelab").rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MODULE_LINES:
            long.append(f"{path.relative_to(PROJECT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > FUNCTION_LINES:
                long.append(f"{path.relative_to(PROJECT)}: {node.name} is {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


# (schema, key, the group folder whose files pick a part, the key inside those files)
FAMILIES = [
    (PriorConfig, "name", "prior", "name"),
    (PosteriorConfig, "name", "posterior", "name"),
    (NetConfig, "name", "net", "name"),
    (DataConfig, "name", "data", "name"),
    (ModelConfig, "decoder", "model", "decoder"),
    (ModelConfig, "objective", None, None),
]


def _registry(schema: type, key: str):
    field = next(f for f in dataclasses.fields(schema) if f.name == key)
    module, attribute = field.metadata["choices"].split(":")
    return field, getattr(importlib.import_module(module), attribute)


@pytest.mark.parametrize("schema, key, group, file_key", FAMILIES, ids=[f"{s.__name__}.{k}" for s, k, _, _ in FAMILIES])
def test_each_family_takes_its_choices_from_its_registry(schema, key, group, file_key):
    """The key is a string checked against the registry (no enum to edit), and every preset of
    the group names a registered part (or custom, with a target)."""
    field, registry = _registry(schema, key)
    assert field.type in ("str", str)
    assert len(registry.names()) >= 2
    if group is None:
        return
    for path in sorted((PROJECT / "configs" / group).glob("*.yaml")):
        chosen = load_yaml(path).get(file_key)
        if chosen is not None:
            assert chosen in registry.choices(), (path, chosen)


def test_every_registered_part_declares_its_name_where_it_is_defined():
    for schema, key, _, _ in FAMILIES:
        _, registry = _registry(schema, key)
        for name in registry.names():
            part = registry[name]
            assert part.name == name
            module = importlib.import_module(part.__module__ if isinstance(part, type) else type(part).__module__)
            assert module.__name__.startswith(registry._package), (name, module.__name__)
