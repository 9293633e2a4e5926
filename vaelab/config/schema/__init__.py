"""Typed schema of a vaelab run.

OmegaConf checks types against these dataclasses while a config is composed (an unknown
key or a string where a number belongs fails there); ``__post_init__`` checks ranges when
the composed config is turned into these objects. Each ``help`` string is shown by
``python -m vaelab.fit --help``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from vaelab.config.schema.data import Binarize, DataConfig
from vaelab.config.schema.evaluation import EvalConfig
from vaelab.config.schema.fields import _help
from vaelab.config.schema.model import (
    Activation, Estimator, HierarchyConfig, Init, KLMode, LayerMerge, ModelConfig, NetConfig, PosteriorConfig,
    PriorConfig, StochasticLayerConfig,
)
from vaelab.config.schema.training import (
    AcceleratorKind, LoggerConfig, LoggerKind, LRSchedule, OptimConfig, OptimizerKind, TrainerConfig, WandbMode,
)
from vaelab.errors import ConfigError

__all__ = [
    "AcceleratorKind", "Activation", "Binarize", "DataConfig",
    "Estimator", "EvalConfig", "FitConfig", "HierarchyConfig", "Init", "KLMode", "LayerMerge", "LRSchedule", "LoggerConfig", "LoggerKind",
    "ModelConfig", "NetConfig", "OptimConfig", "OptimizerKind", "PosteriorConfig",
    "PriorConfig", "RunConfig", "StochasticLayerConfig", "TrainerConfig", "WandbMode",
]


@dataclass
class RunConfig:
    dir: Optional[str] = _help("run directory (null: runs/<data>-<model>/<timestamp>)", None)
    resume: Optional[str] = _help("checkpoint file or run directory to continue", None)


@dataclass
class FitConfig:
    seed: int = _help("seed of initialisation, shuffling and sampling", 0)
    model: ModelConfig = field(default_factory=ModelConfig)
    posterior: PosteriorConfig = field(default_factory=PosteriorConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    net: NetConfig = field(default_factory=NetConfig)
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.model.likelihood.grey_levels and self.data.binarize is not Binarize.none:
            raise ConfigError(
                f"model.decoder={self.model.decoder} is a probability of the 256 grey levels but data.binarize={self.data.binarize.value}; "
                "add data.binarize=none"
            )
