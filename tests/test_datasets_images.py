"""Fashion-MNIST and CIFAR-10 (vaelab.data.fashion_mnist, vaelab.data.cifar10) on tiny files of
the real formats (tests/helpers/tiny_datasets.py), images kept C x H x W through the networks,
and colour pictures."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, FashionMNIST

from tests.helpers import SHARED_DATA, idx_bytes
from tests.helpers.tiny_datasets import cifar_batch, write_cifar10, write_fashion_mnist
from vaelab.config.schema import Binarize, DataConfig, ModelConfig, NetConfig
from vaelab.data import build_datamodule, cifar10, fashion_mnist
from vaelab.data.cifar10 import load_cifar10, verify_cifar10_md5
from vaelab.data.fashion_mnist import load_fashion_mnist, verify_fashion_mnist_md5
from vaelab.data.idx import IMAGE_MAGIC
from vaelab.errors import ConfigError, DataError
from vaelab.fit import main
from vaelab.models.vae import VAE
from vaelab.evaluation.pictures import PAD, image_grids, interpolation_grids


needs_fashion_mnist = pytest.mark.skipif(
    not all((SHARED_DATA / "FashionMNIST" / "raw" / f"{name}.gz").is_file() for name in fashion_mnist.MD5),
    reason=f"real Fashion-MNIST not found in {SHARED_DATA / 'FashionMNIST' / 'raw'}",
)
needs_cifar10 = pytest.mark.skipif(
    not all((SHARED_DATA / "cifar-10-batches-py" / name).is_file() for name in cifar10.MD5),
    reason=f"real CIFAR-10 not found in {SHARED_DATA / 'cifar-10-batches-py'}",
)


def one_line_error(call, *args, error=DataError, **kwargs) -> str:
    """Runs ``call``, expects ``error`` and returns its one-line message."""
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def datamodule(root, name: str, **fields):
    cfg = DataConfig(name=name, root=str(root), download=False, **fields)
    dm = build_datamodule(cfg, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def grid_size(columns: int, rows: int, height: int, width: int) -> tuple[int, int]:
    """(width, height) of make_grid's grid of images with padding PAD."""
    return columns * (width + PAD) + PAD, rows * (height + PAD) + PAD


# ---------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_md5s_are_torchvisions():
    assert {f"{name}.gz": md5 for name, md5 in fashion_mnist.MD5.items()} == dict(FashionMNIST.resources)
    assert cifar10.MD5 == dict(CIFAR10.train_list + CIFAR10.test_list) and len(cifar10.MD5) == 6


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_the_idx_files(tmp_path, gz):
    arrays = write_fashion_mnist(tmp_path, gz=gz)
    loaded = load_fashion_mnist(tmp_path)
    assert loaded.train_images.shape == (12, 28, 28) and loaded.test_images.shape == (4, 28, 28)
    assert loaded.train_images.dtype == torch.uint8
    assert np.array_equal(loaded.train_images.numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(loaded.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_fashion_mnist_splits_are_disjoint_complete_and_seeded(tmp_path):
    arrays = write_fashion_mnist(tmp_path)
    dm = datamodule(tmp_path, "fashion_mnist", val_size=5, binarize=Binarize.none)
    assert dm.image_shape == (1, 28, 28)
    assert (dm.train_data.shape, dm.val_data.shape, dm.test_data.shape) == ((7, 784), (5, 784), (4, 784))
    pool = torch.from_numpy(arrays["train-images-idx3-ubyte"]).reshape(12, -1).float() / 255
    together = torch.cat([dm.val_data, dm.train_data])
    assert torch.equal(together[together[:, :8].sum(1).argsort()], pool[pool[:, :8].sum(1).argsort()])
    expected_test = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).reshape(4, -1).float() / 255
    assert torch.equal(dm.test_data, expected_test)  # the official test set, in order
    assert float(dm.train_data.min()) >= 0 and float(dm.train_data.max()) <= 1
    again = datamodule(tmp_path, "fashion_mnist", val_size=5, binarize=Binarize.none)
    other = datamodule(tmp_path, "fashion_mnist", val_size=5, binarize=Binarize.none, split_seed=1)
    assert torch.equal(again.val_data, dm.val_data) and not torch.equal(other.val_data, dm.val_data)


def test_fashion_mnist_binarizes_like_mnist(tmp_path):
    write_fashion_mnist(tmp_path)
    dm = datamodule(tmp_path, "fashion_mnist", val_size=5)  # binarize=dynamic, the preset's choice
    for split in (dm.val_data, dm.test_data):
        assert set(split.unique().tolist()) == {0.0, 1.0}
    assert len(dm.train_data.unique()) > 2  # grey levels, drawn afresh by the training step


def test_missing_fashion_mnist_names_the_files_and_folder(tmp_path):
    message = one_line_error(load_fashion_mnist, tmp_path)
    folder = tmp_path / "FashionMNIST" / "raw"
    for name in fashion_mnist.MD5:
        assert str(folder / f"{name}.gz") in message
    assert "Fashion-MNIST" in message and "data.download=true" in message and "VAELAB_DATA_DIR" in message


def test_fashion_mnist_truncated_and_corrupt_files(tmp_path):
    write_fashion_mnist(tmp_path)
    path = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert f"Fashion-MNIST file {path} is truncated" in one_line_error(load_fashion_mnist, tmp_path)
    path.write_bytes(gzip.compress(idx_bytes(IMAGE_MAGIC, (12, 28, 28), bytes(100))))
    assert "header says 12 images of 28x28 but only 100 bytes of pixels follow" in one_line_error(load_fashion_mnist, tmp_path)
    path.write_bytes(gzip.compress(idx_bytes(IMAGE_MAGIC + 1, (12, 28, 28), bytes(12 * 784))))
    assert "is not an IDX images file" in one_line_error(load_fashion_mnist, tmp_path)


def test_fashion_mnist_md5_check(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path)
    raw = tmp_path / "FashionMNIST" / "raw"
    table = {name: hashlib.md5((raw / f"{name}.gz").read_bytes()).hexdigest() for name in fashion_mnist.MD5}
    for name, md5 in table.items():  # FILES holds this same dict
        monkeypatch.setitem(fashion_mnist.MD5, name, md5)
    verify_fashion_mnist_md5(tmp_path)  # the tiny files pass against their own table
    path = raw / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes() + b"\x00")
    message = one_line_error(verify_fashion_mnist_md5, tmp_path)
    assert f"Fashion-MNIST file {path} has md5" in message and f"expected {table['t10k-labels-idx1-ubyte']}" in message


def test_failed_fashion_mnist_download_is_one_line(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://..., got:\nno route")

    monkeypatch.setattr(fashion_mnist, "FashionMNIST", no_network)
    message = one_line_error(load_fashion_mnist, tmp_path, download=True)
    assert f"could not download Fashion-MNIST into {tmp_path / 'FashionMNIST' / 'raw'}" in message
    assert "no route" in message and "train-images-idx3-ubyte.gz" in message


# ---------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("python2", [False, True], ids=["python3 pickles", "python2 pickles"])
def test_cifar10_reads_the_pickled_batches_channels_first(tmp_path, python2):
    arrays = write_cifar10(tmp_path, python2=python2)
    loaded = load_cifar10(tmp_path)
    assert loaded.train_images.shape == (20, 3, 32, 32) and loaded.test_images.shape == (6, 3, 32, 32)
    assert loaded.train_images.dtype == torch.uint8 and loaded.train_labels.dtype == torch.int64
    assert np.array_equal(loaded.train_images.numpy(), arrays["train_images"])
    assert np.array_equal(loaded.test_labels.numpy(), arrays["test_labels"])
    red, green, blue = loaded.train_images[:, 0].float(), loaded.train_images[:, 1].float(), loaded.train_images[:, 2].float()
    assert bool((red > green).all() and (green > blue).all())  # 1024 R, then G, then B per row


def test_cifar10_splits_are_disjoint_complete_and_seeded(tmp_path):
    arrays = write_cifar10(tmp_path)
    dm = datamodule(tmp_path, "cifar10", val_size=6, binarize=Binarize.none)
    assert dm.image_shape == (3, 32, 32) and not dm.binary
    assert (dm.train_data.shape, dm.val_data.shape, dm.test_data.shape) == ((14, 3072), (6, 3072), (6, 3072))
    pool = torch.from_numpy(arrays["train_images"]).reshape(20, -1).float() / 255
    key = lambda rows: rows[:, :16].sum(1)  # noqa: E731  the random pixels tell the images apart
    together = torch.cat([dm.val_data, dm.train_data])
    assert torch.equal(together[key(together).argsort()], pool[key(pool).argsort()])
    assert torch.equal(dm.test_data, torch.from_numpy(arrays["test_images"]).reshape(6, -1).float() / 255)
    assert float(dm.train_data.min()) >= 0 and float(dm.train_data.max()) <= 1
    again = datamodule(tmp_path, "cifar10", val_size=6, binarize=Binarize.none)
    other = datamodule(tmp_path, "cifar10", val_size=6, binarize=Binarize.none, split_seed=1)
    assert torch.equal(again.val_data, dm.val_data) and not torch.equal(other.val_data, dm.val_data)


def test_cifar10_takes_grey_levels_only():
    for binarize in (Binarize.dynamic, Binarize.static):
        message = one_line_error(DataConfig, name="cifar10", binarize=binarize, error=ConfigError)
        assert f"data.binarize={binarize.value} is invalid" in message and "none for cifar10" in message
    assert "null for cifar10" in one_line_error(DataConfig, name="cifar10", binarize=Binarize.none, test_size=5, error=ConfigError)


def test_missing_cifar10_names_the_files_and_folder(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    message = one_line_error(load_cifar10, tmp_path)
    assert f"CIFAR-10 file(s) not found: {tmp_path / 'cifar-10-batches-py' / 'data_batch_3'};" in message
    assert "data_batch_1" not in message and "data.download=true" in message and "cifar-10-batches-py/" in message


class _Hostile:
    def __reduce__(self):
        return (print, ("a pickle ran code",))


@pytest.mark.parametrize(
    "content, expected",
    [
        (lambda whole: whole[: len(whole) // 2], "is truncated"),
        (lambda whole: b"not a pickle at all", "is not a CIFAR-10 batch pickle"),
        (lambda whole: pickle.dumps({b"data": _Hostile(), b"labels": []}), "asks for builtins.print"),
        (lambda whole: pickle.dumps([1, 2]), "holds a list, expected a dict"),
        (lambda whole: cifar_batch(np.zeros((2, 3, 16, 16), np.uint8), np.zeros(2)), "data is uint8 (2, 768), expected uint8 (N, 3072)"),
        (lambda whole: cifar_batch(np.zeros((2, 3, 32, 32), np.uint8), np.zeros(3)), "labels of shape (3,) for 2 images"),
        (lambda whole: cifar_batch(np.zeros((2, 3, 32, 32), np.uint8), np.array([0, 10])), "holds label 10"),
    ],
    ids=["truncated", "garbage", "hostile", "not a dict", "wrong size", "label count", "label range"],
)
def test_cifar10_bad_batches_are_one_line(tmp_path, capsys, content, expected):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(content(path.read_bytes()))
    message = one_line_error(load_cifar10, tmp_path)
    assert message.startswith(f"CIFAR-10 file {path}") and expected in message, message
    assert "download again" in message
    assert "ran code" not in capsys.readouterr().out


def test_cifar10_md5_check(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for name in cifar10.MD5:
        monkeypatch.setitem(cifar10.MD5, name, hashlib.md5((folder / name).read_bytes()).hexdigest())
    verify_cifar10_md5(tmp_path)
    path = folder / "data_batch_2"
    expected = cifar10.MD5["data_batch_2"]
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    message = one_line_error(verify_cifar10_md5, tmp_path)
    assert f"CIFAR-10 file {path} has md5" in message and f"expected {expected}" in message


def test_cifar10_download_is_md5_checked(tmp_path, monkeypatch):
    calls = []

    def unpack_tiny_files(url, download_root, filename, md5):  # stands in for the download and its tgz md5 check
        calls.append((url, filename, md5))
        write_cifar10(Path(download_root))

    monkeypatch.setattr(cifar10, "download_and_extract_archive", unpack_tiny_files)
    message = one_line_error(load_cifar10, tmp_path, download=True)
    assert calls == [(CIFAR10.url, CIFAR10.filename, CIFAR10.tgz_md5)]
    assert f"CIFAR-10 file {tmp_path / 'cifar-10-batches-py' / 'data_batch_1'} has md5" in message  # tiny files are not the real ones

    def no_network(*args, **kwargs):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(cifar10, "download_and_extract_archive", no_network)
    message = one_line_error(load_cifar10, tmp_path / "empty", download=True)
    assert f"could not download {CIFAR10.url}" in message and "name resolution" in message


# ---------------------------------------------------------------- C x H x W networks and colour pictures


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (1, 28, 20)])
@pytest.mark.parametrize("net", ["conv", "mlp"])
def test_networks_take_channels_by_height_by_width(shape, net):
    torch.manual_seed(0)
    cfg = ModelConfig(decoder="gaussian_learned", latent_dim=3, hidden=[8], sigmoid_mean=True)
    vae = VAE(cfg, shape, net=NetConfig(name=net, channels=[4, 8], dense=16))
    x = torch.rand(5, math.prod(shape))
    assert vae.image_shape == shape
    assert vae.reconstruct(x).shape == (5, math.prod(shape)) and vae.sample(2, torch.Generator()).shape == (2, math.prod(shape))


def tiny_vae(shape):
    torch.manual_seed(0)
    cfg = ModelConfig(decoder="gaussian", latent_dim=2, hidden=[8], sigmoid_mean=True)
    return VAE(cfg, shape).eval()


def test_colour_grids_show_three_channels_and_grey_stays_grey():
    torch.manual_seed(0)
    colour = torch.rand(8, 3, 32, 32) * torch.tensor([1.0, 0.5, 0.1]).reshape(1, 3, 1, 1)  # reddish
    grids = image_grids(tiny_vae((3, 32, 32)), colour.reshape(8, -1), (3, 32, 32), count=8, seed=0)
    recon = grids["reconstructions"]
    assert recon.shape == (3, *reversed(grid_size(8, 2, 32, 32)))
    assert grids["samples"].shape == (3, *reversed(grid_size(8, 1, 32, 32)))
    inputs = recon[:, PAD : PAD + 32, PAD : PAD + 32]  # the first input image
    assert torch.equal(inputs, colour[0])  # shown as it is, red, green and blue planes in place
    assert not torch.equal(inputs[0], inputs[1])
    lines = interpolation_grids(tiny_vae((3, 32, 32)), colour[:4].reshape(4, -1), torch.randn(4, 2), (3, 32, 32), 3)
    assert lines["interpolation_linear"].shape == (3, *reversed(grid_size(5, 2, 32, 32)))
    assert torch.equal(lines["interpolation_linear"][:, PAD : PAD + 32, PAD : PAD + 32], colour[0])

    grey = torch.rand(8, 28 * 20)
    grey_grid = image_grids(tiny_vae((1, 28, 20)), grey, (1, 28, 20), count=8, seed=0)["reconstructions"]
    assert grey_grid.shape == (3, *reversed(grid_size(8, 2, 28, 20)))
    assert torch.equal(grey_grid[0], grey_grid[1]) and torch.equal(grey_grid[1], grey_grid[2])


# ---------------------------------------------------------------- the command on tiny files

TINY_WORDS = [
    "experiment=smoke", "trainer.progress_bar=false", "trainer.accelerator=cpu", "trainer.compile=false",
    "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    "data.download=false", "data.batch_size=4", "eval.batch_size=4", "eval.ll_samples=4", "eval.num_images=4",
    "model.hidden=[16]", "model.latent_dim=2", "net.channels=[4,8]", "net.dense=16",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "data, writer, words, height, width",
    [
        ("fashion_mnist", write_fashion_mnist, ["data.val_size=4"], 28, 28),
        ("cifar10", write_cifar10, ["data.val_size=4", "model=gaussian_learned", "net=conv"], 32, 32),
    ],
)
def test_fit_and_test_on_tiny_files(tmp_path, capsys, data, writer, words, height, width):
    writer(tmp_path)
    run_dir = tmp_path / "run"
    argv = [*TINY_WORDS, f"data={data}", f"data.root={tmp_path}", f"run.dir={run_dir}", *words]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data"] == data and summary["steps"] == 2
    assert math.isfinite(summary["test_ll"]) and summary["test_ll"] >= summary["test_elbo"] - 1e-3
    with Image.open(run_dir / "reconstructions.png") as picture:
        assert picture.size == grid_size(4, 2, height, width)
        pixels = np.asarray(picture.convert("RGB"), dtype=np.int64)
    first_input = pixels[PAD : PAD + height, PAD : PAD + width]
    coloured = bool((first_input[..., 0] != first_input[..., 2]).any())
    assert coloured == (data == "cifar10")  # the tiny CIFAR images are red > green > blue


@pytest.mark.parametrize(
    "words, expected",
    [
        (["data=cifar10", "model=gaussian_learned", "data.download=false"], "CIFAR-10 file(s) not found: {root}/cifar-10-batches-py/data_batch_1"),
        (["data=fashion_mnist", "data.download=false"], "Fashion-MNIST file(s) not found: {root}/FashionMNIST/raw/train-images"),
        (["data=cifar10", "data.binarize=dynamic"], "data.binarize=dynamic is invalid: expected none for cifar10"),
    ],
    ids=["missing cifar10", "missing fashion_mnist", "binarized cifar10"],
)
def test_the_command_exits_2_with_one_line(tmp_path, capsys, words, expected):
    assert main([*TINY_WORDS, f"data.root={tmp_path}", f"run.dir={tmp_path / 'run'}", *words]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1].startswith("vaelab.fit: error:") and expected.format(root=tmp_path) in lines[-1], lines
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the real files, where a user has them


@pytest.mark.slow
@needs_fashion_mnist
def test_real_fashion_mnist():
    verify_fashion_mnist_md5(SHARED_DATA)
    dm = datamodule(SHARED_DATA, "fashion_mnist", val_size=5000)
    assert (len(dm.train_data), len(dm.val_data), len(dm.test_data)) == (55000, 5000, 10000)
    assert dm.image_shape == (1, 28, 28) and set(dm.test_labels.unique().tolist()) == set(range(10))


@pytest.mark.slow
@needs_cifar10
def test_real_cifar10():
    verify_cifar10_md5(SHARED_DATA)
    dm = datamodule(SHARED_DATA, "cifar10", val_size=5000, binarize=Binarize.none)
    assert (len(dm.train_data), len(dm.val_data), len(dm.test_data)) == (45000, 5000, 10000)
    assert dm.image_shape == (3, 32, 32) and dm.train_data.shape[1] == 3072
    assert float(dm.test_data.min()) == 0.0 and float(dm.test_data.max()) == 1.0
    assert set(dm.test_labels.unique().tolist()) == set(range(10))


@pytest.mark.slow
def test_the_cifar10_preset_reports_bits_per_dimension_of_its_logistic_likelihood(tmp_path, capsys):
    write_cifar10(tmp_path)
    run_dir = tmp_path / "run"
    words = [w for w in TINY_WORDS if not w.startswith(("experiment=", "model.hidden", "net."))]
    argv = [*words, "experiment=cifar10_logistic", f"data.root={tmp_path}", f"run.dir={run_dir}", "data.val_size=4",
            "model.mixtures=2", "net.channels=[4,8,8]", "net.dense=16", "trainer.max_epochs=1"]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "logistic" and summary["net"] == "conv" and summary["data"] == "cifar10"
    # a probability of the 256 levels of each of the 3x32x32 values: bits per dimension of the stored values
    assert summary["bits_per_dim"] == pytest.approx(-summary["test_ll"] / (3 * 32 * 32 * math.log(2)), rel=1e-12)
    assert 0 < summary["bits_per_dim"] < 12
    assert summary["protocol"]["variant"] == "colour levels in [0, 1]"
