"""The protocol of a run's test numbers: what was scored, how, and what chose the checkpoint.

Numbers are comparable only under one protocol (the same data and variant, split, checkpoint
rule and importance samples): static and dynamic binarization differ by nats, and a seeded
static draw is not Larochelle & Murray's fixed one. ``summary.json`` and ``eval.json`` carry
this block so that ``vaelab.compare`` and a reader can tell.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from vaelab.config.schema import Binarize, FitConfig

# Checkpoint rules, as summary.json and eval.json name them.
BY_VALIDATION = "best validation ELBO"
LAST_EPOCH = "last epoch (no validation split to choose by)"
LAST_CHECKPOINT = "last checkpoint (not chosen by validation)"

# What two runs' test numbers must share to be ranked together (not the seed).
COMPARABLE_KEYS = ("data", "variant", "test_split", "test_images_scored", "ll_samples", "checkpoint_chosen_by")


def vaelab_version() -> str:
    try:
        return version("vaelab")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def data_variant(cfg: FitConfig, image_shape: tuple[int, ...], binary_files: bool) -> str:
    """What the model saw of the dataset: its binarization, or the kind of levels it kept."""
    d = cfg.data
    if d.binarize is Binarize.dynamic:
        return "dynamic binarization (a fresh Bernoulli draw of a training image each time it is used)"
    if d.binarize is Binarize.static:
        return f"seeded static binarization (one draw, data.split_seed={d.split_seed}): not a standard fixed binarization"
    if binary_files:
        return "binary as published (a fixed binarization)"
    return "colour levels in [0, 1]" if image_shape[0] == 3 else "grey levels in [0, 1]"


def protocol(
    cfg: FitConfig, datamodule, checkpoint_rule: str, test_images: int, binary_files: bool
) -> dict:
    """The protocol block of ``cfg``'s test numbers on ``datamodule``'s splits (set up)."""
    d = cfg.data
    return {
        "data": d.name,
        "variant": data_variant(cfg, tuple(datamodule.image_shape), binary_files),
        "binarize": d.binarize.value,
        "splits": {
            "train": len(datamodule.train_data),
            "validation": len(datamodule.val_data),
            "test": len(datamodule.test_data),
        },
        "test_split": "the published test set" if d.test_size is None else f"a hold-out seeded by data.split_seed={d.split_seed}",
        "test_images_scored": test_images,
        "split_seed": d.split_seed,
        "checkpoint_chosen_by": checkpoint_rule,
        "ll_samples": cfg.eval.ll_samples,
        "seed": cfg.seed,
        "vaelab_version": vaelab_version(),
    }


def comparable_key(protocol_block: dict) -> tuple:
    """What two runs' test numbers must share to be ranked together: the data and variant, the
    test split and how many of its images were scored, the importance samples of L_S and the
    checkpoint rule (not the seed)."""
    return tuple(str(protocol_block.get(key)) for key in COMPARABLE_KEYS)
