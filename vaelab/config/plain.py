"""Configs as plain values and back: how a checkpoint keeps the settings it was trained with.

A checkpoint's hyperparameters hold plain dicts, lists, numbers and strings (enums by
name): Lightning loads checkpoints with ``torch.load(weights_only=True)``, which unpickles
nothing else, and ``hparams.yaml`` stays readable. :func:`from_plain` types them again with
the schema, filling in keys that older checkpoints lack with their defaults, except where
an older run trained with another value than today's default (:func:`net_of_older_run`).
"""

from __future__ import annotations

from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

Schema = TypeVar("Schema")


def to_plain(cfg: DictConfig | object) -> dict:
    """A config node or schema dataclass as plain values, enums by name."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)


def from_plain(schema: type[Schema], values: dict) -> Schema:
    """The ``schema`` dataclass of plain values; a key they lack takes the schema's default."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def net_of_older_run(net: dict, model: dict) -> dict:
    """A saved ``net`` config as today's schema reads it.

    Conv runs saved before ``net.activation`` existed trained their trunks with
    ``model.activation`` (default softplus), not today's ReLU default.
    """
    if net.get("name") == "conv" and "activation" not in net:
        return {**net, "activation": model.get("activation", "softplus")}
    return net
