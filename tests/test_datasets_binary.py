"""The binary 28x28 datasets of the literature on tiny files of their real formats (nothing is
downloaded): binarized MNIST (Larochelle & Murray), Burda et al.'s Omniglot, the Caltech 101
silhouettes; their shapes, values, splits, one-line errors, and a tiny fit of each."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import TINY_FIT, metrics_rows
from tests.helpers.binary_datasets import (
    AMAT_ROWS,
    CALTECH_ROWS,
    REAL_FILES,
    OMNIGLOT_COLUMNS,
    expect_tiny_counts,
    write_binarized_mnist,
    write_caltech,
    write_omniglot,
)
from vaelab.config.schema import Binarize, DataConfig
from vaelab.data import build_datamodule, files, omniglot
from vaelab.data.splits import DATASETS
from vaelab.errors import ConfigError, DataError
from vaelab.fit import main as fit_main



@pytest.fixture(autouse=True)
def tiny_counts(request, monkeypatch):
    if not request.node.name.startswith("test_real_"):
        expect_tiny_counts(monkeypatch)


def loaded(root, name: str, **overrides):
    settings = {"name": name, "root": str(root), "download": False, "binarize": Binarize.none}
    dm = build_datamodule(DataConfig(**{**settings, **overrides}), seed=0)
    dm.prepare_data()
    dm.setup()
    return dm


def one_line(error_type, call, *args, **kwargs) -> str:
    with pytest.raises(error_type) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ binarized MNIST


def test_binarized_mnist_is_the_three_official_files(tmp_path):
    arrays = write_binarized_mnist(tmp_path)
    dm = loaded(tmp_path, "binarized_mnist", val_size=AMAT_ROWS["valid"])
    for data, split in ((dm.train_data, "train"), (dm.val_data, "valid"), (dm.test_data, "test")):
        assert data.dtype == torch.float32 and torch.equal(data, torch.from_numpy(arrays[split]).float())
    assert dm.image_shape == (1, 28, 28) and dm.binary and DATASETS["binarized_mnist"].image_shape == (1, 28, 28)
    assert loaded(tmp_path, "binarized_mnist", val_size=0).val_data.shape == (0, 784)


def test_binarized_mnist_refuses_carving_and_binarizing(tmp_path):
    write_binarized_mnist(tmp_path)
    message = one_line(ConfigError, loaded, tmp_path, "binarized_mnist", val_size=3)
    assert "official file of 5 images" in message and "or 0 for no validation" in message
    message = one_line(ConfigError, DataConfig, name="binarized_mnist", binarize=Binarize.dynamic)
    assert message == "data.binarize=dynamic is invalid: expected none for binarized_mnist (its files are binary already)"


def test_missing_binarized_mnist_names_the_files_and_folder(tmp_path):
    write_binarized_mnist(tmp_path)
    (tmp_path / "BinarizedMNIST" / "binarized_mnist_valid.amat").unlink()
    message = one_line(DataError, loaded, tmp_path, "binarized_mnist", val_size=5)
    assert f"file(s) not found: {tmp_path / 'BinarizedMNIST' / 'binarized_mnist_valid.amat'};" in message
    assert "data.download=true" in message and "VAELAB_DATA_DIR" in message


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda text: text[: len(text) - 100], "is truncated: 7 lines (the last of"),
        (lambda text: text[: text.rindex("\n", 0, len(text) - 1) + 1], "is truncated: 6 lines"),
        (lambda text: text.replace("0", "2", 1), "is corrupt: line 1 holds a character other than 0, 1 and spaces"),
        (lambda text: text.replace("0 ", "00 ", 1), "is corrupt: line 1 holds a number other than 0 and 1"),
        (lambda text: text.replace("\n", " 1\n", 1), "is corrupt: line 1 has 785 values, expected 784"),
        (lambda text: text + text.splitlines(keepends=True)[0], "is corrupt: 8 lines, expected 7"),
    ],
)
def test_damaged_amat_is_one_line(tmp_path, damage, expected):
    write_binarized_mnist(tmp_path)
    path = tmp_path / "BinarizedMNIST" / "binarized_mnist_test.amat"
    path.write_text(damage(path.read_text()))
    message = one_line(DataError, loaded, tmp_path, "binarized_mnist", val_size=5)
    assert f"{path} {expected}" in message and "download again" in message


# ------------------------------------------------------------------ Omniglot


def test_omniglot_images_are_upright_and_split_by_the_seed(tmp_path):
    images = write_omniglot(tmp_path)
    dm = loaded(tmp_path, "omniglot", val_size=8, binarize=Binarize.dynamic)
    pool = torch.from_numpy(images["data"]).float().reshape(-1, 784)
    assert dm.train_data.shape == (OMNIGLOT_COLUMNS["data"] - 8, 784) and dm.val_data.shape == (8, 784)
    # training images keep their grey levels, row-major as in the IWAE code; every one is in the pool
    assert dm.binary and torch.all((dm.train_data > 0) & (dm.train_data < 1))
    matches = (dm.train_data[:, None, :] == pool[None]).all(-1)
    assert torch.equal(matches.sum(1), torch.ones(len(dm.train_data), dtype=torch.long))
    # validation and test are one seeded draw; validation is disjoint from training
    assert set(dm.val_data.unique().tolist()) <= {0.0, 1.0} and dm.test_data.shape == (OMNIGLOT_COLUMNS["testdata"], 784)
    val_rows = set(range(len(pool))) - set(matches.float().argmax(1).tolist())
    assert len(val_rows) == 8
    again = loaded(tmp_path, "omniglot", val_size=8, binarize=Binarize.dynamic)
    other = loaded(tmp_path, "omniglot", val_size=8, binarize=Binarize.dynamic, split_seed=1)
    assert torch.equal(again.train_data, dm.train_data) and torch.equal(again.val_data, dm.val_data)
    assert not torch.equal(other.train_data, dm.train_data)


def test_omniglot_grey_levels_without_binarization(tmp_path):
    images = write_omniglot(tmp_path)
    dm = loaded(tmp_path, "omniglot", val_size=0)
    expected = torch.from_numpy(images["testdata"]).float().reshape(-1, 784)
    assert torch.equal(dm.test_data, expected) and not dm.binary


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("truncate", "is truncated or corrupt"),
        ("garbage", "is truncated or corrupt"),
        ("key", "has no variable 'testdata' (variables: data)"),
        ("shape", "variable 'data' is float64 (784, 29), expected 784 x 30 numbers"),
        ("range", "is corrupt: variable 'data' holds values outside [0, 1]"),
    ],
)
def test_damaged_omniglot_is_one_line(tmp_path, damage, expected):
    import scipy.io

    images = write_omniglot(tmp_path)
    path = tmp_path / "Omniglot" / "chardata.mat"
    raw = path.read_bytes()
    columns = {key: array.reshape(len(array), -1).T for key, array in images.items()}
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a MATLAB file" * 20)
    elif damage == "key":
        scipy.io.savemat(path, {"data": columns["data"]})
    elif damage == "shape":
        scipy.io.savemat(path, {"data": columns["data"][:, :29], "testdata": columns["testdata"]})
    else:
        scipy.io.savemat(path, {"data": columns["data"] * 2, "testdata": columns["testdata"]})
    message = one_line(DataError, loaded, tmp_path, "omniglot", val_size=8)
    assert f"Omniglot file {path}" in message and expected in message and "download again" in message


def test_missing_omniglot_names_the_file(tmp_path):
    message = one_line(DataError, loaded, tmp_path, "omniglot", val_size=8)
    assert f"Omniglot file(s) not found: {tmp_path / 'Omniglot' / 'chardata.mat'};" in message


# ------------------------------------------------------------------ Caltech 101 silhouettes


def test_caltech_silhouettes_are_upright_inverted_and_officially_split(tmp_path):
    images = write_caltech(tmp_path)
    dm = loaded(tmp_path, "caltech_silhouettes", val_size=CALTECH_ROWS["val_data"])
    for data, key in ((dm.train_data, "train_data"), (dm.val_data, "val_data"), (dm.test_data, "test_data")):
        assert torch.equal(data, torch.from_numpy(images[key]).float().reshape(-1, 784))
    assert dm.binary
    message = one_line(ConfigError, loaded, tmp_path, "caltech_silhouettes", val_size=100)
    assert "official split of 5 images; use 5, or 0 for no validation" in message


def test_caltech_with_grey_levels_is_corrupt(tmp_path):
    import scipy.io

    write_caltech(tmp_path)
    path = tmp_path / "CaltechSilhouettes" / "caltech101_silhouettes_28_split1.mat"
    contents = {key: value for key, value in scipy.io.loadmat(path).items() if not key.startswith("__")}
    contents["val_data"] = contents["val_data"] * 0.5
    scipy.io.savemat(path, contents)
    message = one_line(DataError, loaded, tmp_path, "caltech_silhouettes", val_size=5)
    assert "variable 'val_data' holds values other than 0 and 1" in message


# ------------------------------------------------------------------ the command line


def test_mnist_static_binarization_warns_and_names_binarized_mnist(tmp_path):
    from vaelab.config.compose import compose, parse_command_line
    from vaelab.fit import build_run

    node = compose(parse_command_line(["data.binarize=static", f"run.dir={tmp_path / 'run'}"]))
    with pytest.warns(UserWarning, match=r"not Larochelle & Murray's fixed binarization .* use data=binarized_mnist"):
        build_run(node)


@pytest.mark.slow
@pytest.mark.parametrize(
    "words",
    [
        ["data=binarized_mnist", "data.val_size=5"],
        ["experiment=iwae_1layer", "data=omniglot", "model.k=2", "trainer.max_epochs=1"],
        ["data=caltech_silhouettes", "data.val_size=5"],
    ],
    ids=["binarized_mnist", "omniglot", "caltech_silhouettes"],
)
def test_tiny_fit(tmp_path, words):
    write_binarized_mnist(tmp_path)
    write_omniglot(tmp_path)
    write_caltech(tmp_path)
    run_dir = tmp_path / "run"
    status = fit_main([
        *TINY_FIT, f"data.root={tmp_path}", "data.download=false", "data.batch_size=4", "model.hidden=[16]",
        "trainer.accelerator=cpu", "trainer.compile=false", *words, f"run.dir={run_dir}",
    ])
    assert status == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert -784 * 0.7 < summary["test_ll"] < 0


@pytest.mark.slow
def test_early_stopping_ends_a_run_whose_validation_bound_stops_improving(tmp_path, capsys):
    write_caltech(tmp_path)
    words = [*TINY_FIT, f"data.root={tmp_path}", "data.download=false", "data=caltech_silhouettes", "data.val_size=5",
             "data.batch_size=4", "model.hidden=[16]", "trainer.accelerator=cpu", "trainer.compile=false",
             "optim.lr=1e-9", "trainer.max_epochs=8", "trainer.early_stop_patience=1"]
    assert fit_main([*words, f"run.dir={tmp_path / 'run'}"]) == 0
    epochs = {int(row["epoch"]) for row in metrics_rows(tmp_path / "run") if row.get("val/elbo")}
    assert 2 <= len(epochs) < 8  # an epoch without a better val/elbo ends it, long before max_epochs
    assert fit_main([*words, "data.val_size=0", f"run.dir={tmp_path / 'none'}"]) == 2
    assert "trainer.early_stop_patience needs a validation split" in capsys.readouterr().err


def test_failed_download_names_the_url_and_folder(tmp_path, monkeypatch):
    def no_network(url, root, filename):
        raise RuntimeError("<urlopen error [Errno -2]\nName or service not known>")

    monkeypatch.setattr(files, "download_url", no_network)
    config = DataConfig(name="omniglot", root=str(tmp_path), download=True, val_size=8)
    message = one_line(DataError, build_datamodule(config, seed=0).prepare_data)
    assert message.startswith(f"could not download {omniglot.URL} to {tmp_path / 'Omniglot' / 'chardata.mat'} (")
    assert "Name or service not known" in message and f"fetch it by hand into {tmp_path / 'Omniglot'}" in message



@pytest.mark.parametrize(
    "name, val_size, shapes",
    [
        ("binarized_mnist", 10000, (50000, 10000, 10000)),
        ("omniglot", 1345, (23000, 1345, 8070)),
        ("caltech_silhouettes", 2264, (4100, 2264, 2307)),
    ],
)
def test_real_files_where_a_user_has_them(name, val_size, shapes):
    if not all(path.is_file() for path in REAL_FILES[name]):
        pytest.skip(f"real {name} not found: expected {', '.join(str(p) for p in REAL_FILES[name])}")
    dm = loaded(REAL_FILES[name][0].parents[1], name, val_size=val_size, binarize=Binarize.none)
    assert (len(dm.train_data), len(dm.val_data), len(dm.test_data)) == shapes and dm.image_shape == (1, 28, 28)
    for data in (dm.train_data, dm.val_data, dm.test_data):
        assert data.shape[1] == 784 and float(data.min()) >= 0 and float(data.max()) <= 1
        if name != "omniglot":
            assert set(data.unique().tolist()) == {0.0, 1.0}
