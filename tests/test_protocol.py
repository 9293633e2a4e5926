"""The protocol block of summary.json and eval.json: what a run's test numbers were obtained under."""

from types import SimpleNamespace

import pytest
import torch

from vaelab.config import load_config
from vaelab.config.compose import to_object
from vaelab.evaluation.protocol import BY_VALIDATION, comparable_key, protocol


def cfg_of(*words):
    return to_object(load_config(list(words))[0])


def splits(train, val, test, shape=(1, 28, 28)):
    return SimpleNamespace(
        train_data=torch.zeros(train, 1), val_data=torch.zeros(val, 1), test_data=torch.zeros(test, 1), image_shape=shape
    )


@pytest.mark.parametrize(
    "words, binary_files, variant",
    [
        (["data=mnist"], False, "dynamic binarization"),
        (["data=mnist", "data.binarize=static"], False, "seeded static binarization (one draw, data.split_seed=0): not a standard fixed binarization"),
        (["data=binarized_mnist"], True, "binary as published (a fixed binarization)"),
        (["data=mnist", "data.binarize=none"], False, "grey levels in [0, 1]"),
    ],
)
def test_the_variant_names_the_binarization_and_never_calls_a_seeded_draw_standard(words, binary_files, variant):
    block = protocol(cfg_of(*words), splits(55000, 5000, 10000), BY_VALIDATION, 200, binary_files)
    assert block["variant"].startswith(variant)
    assert block["splits"] == {"train": 55000, "validation": 5000, "test": 10000}
    assert block["test_images_scored"] == 200 and block["ll_samples"] == 5000 and block["seed"] == 0


def test_static_and_dynamic_runs_are_not_comparable_but_two_seeds_are():
    def key(*words):
        return comparable_key(protocol(cfg_of(*words), splits(55000, 5000, 10000), BY_VALIDATION, 10000, False))

    assert key("data=mnist") == key("data=mnist", "seed=1")
    assert key("data=mnist") != key("data=mnist", "data.binarize=static")
    assert key("data=mnist") != key("data=mnist", "eval.ll_samples=100")


def test_frey_names_its_seeded_test_split():
    block = protocol(cfg_of("data=frey", "model=gaussian"), splits(1565, 200, 200, (1, 28, 20)), BY_VALIDATION, 200, False)
    assert block["test_split"] == "a hold-out seeded by data.split_seed=0" and block["variant"] == "grey levels in [0, 1]"
