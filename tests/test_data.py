"""Tests of vaelab.data: real files from the shared folder, tiny synthetic files, batching."""

from __future__ import annotations

import gzip
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import scipy.io
import torch
from lightning_fabric.utilities.data import _set_sampler_epoch

from tests.helpers import SHARED_DATA, idx_bytes, needs_frey, needs_mnist, write_mnist
from vaelab.config.schema import Binarize, DataConfig
from vaelab.data import InMemoryBatches, VAEDataModule, build_datamodule, frey, mnist
from vaelab.data.frey import load_frey
from vaelab.data.mnist import IMAGE_MAGIC, LABEL_MAGIC, load_mnist, verify_mnist_md5
from vaelab.errors import DataError



def one_line_error(call, *args, **kwargs) -> str:
    """Runs ``call``, expects a DataError and returns its one-line message."""
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- synthetic files


def write_frey(root: Path, faces: np.ndarray) -> Path:
    path = root / "FreyFaces" / "frey_rawface.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"ff": faces})
    return path


def numbered_faces(n: int) -> np.ndarray:
    """uint8 [560, n]: face i has every pixel equal to i."""
    return np.repeat(np.arange(n, dtype=np.uint8)[None, :], 560, axis=0)


def test_synthetic_mnist_loads(tmp_path):
    arrays = write_mnist(tmp_path)
    loaded = load_mnist(tmp_path)
    assert loaded.train_images.shape == (7, 28, 28) and loaded.test_images.shape == (3, 28, 28)
    assert loaded.train_images.dtype == torch.uint8
    assert np.array_equal(loaded.train_images.numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(loaded.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_decompressed_files_are_accepted(tmp_path):
    arrays = write_mnist(tmp_path, gz=False)
    assert np.array_equal(load_mnist(tmp_path).train_labels.numpy(), arrays["train-labels-idx1-ubyte"])


def test_missing_mnist_names_expected_path(tmp_path):
    message = one_line_error(load_mnist, tmp_path, download=False)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz") in message
    assert "data.download=true" in message and "VAELAB_DATA_DIR" in message


def test_failed_mnist_download_says_where_to_put_files(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got:\nno route")

    monkeypatch.setattr(mnist, "MNIST", no_network)
    message = one_line_error(load_mnist, tmp_path, download=True)
    assert str(tmp_path / "MNIST" / "raw") in message and "no route" in message
    for name in mnist.MD5:
        assert f"{name}.gz" in message
    assert "data.root=" in message and "VAELAB_DATA_DIR" in message


def corrupt(tmp_path: Path, name: str, content: bytes) -> None:
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / name).write_bytes(content)


def test_truncated_gzip(tmp_path):
    whole = gzip.compress(idx_bytes(IMAGE_MAGIC, (7, 28, 28), bytes(7 * 784)))
    corrupt(tmp_path, "train-images-idx3-ubyte.gz", whole[: len(whole) // 2])
    message = one_line_error(load_mnist, tmp_path)
    assert "train-images-idx3-ubyte.gz is truncated" in message and "download again" in message


def test_bad_gzip(tmp_path):
    corrupt(tmp_path, "t10k-labels-idx1-ubyte.gz", b"this is not a gzip stream")
    assert "t10k-labels-idx1-ubyte.gz is not a valid gzip file" in one_line_error(load_mnist, tmp_path)


def test_wrong_magic(tmp_path):
    corrupt(tmp_path, "train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(IMAGE_MAGIC, (7,), bytes(7))))
    message = one_line_error(load_mnist, tmp_path)
    assert "not an IDX labels file" in message and "0x00000803" in message and "0x00000801" in message


def test_truncated_payload(tmp_path):
    corrupt(tmp_path, "train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(IMAGE_MAGIC, (7, 28, 28), bytes(1234))))
    message = one_line_error(load_mnist, tmp_path)
    assert "is truncated: header says 7 images of 28x28 but only 1234 bytes of pixels follow" in message


def test_truncated_header(tmp_path):
    corrupt(tmp_path, "train-images-idx3-ubyte.gz", gzip.compress(b"\x00\x00\x08"))
    assert "less than its 16-byte IDX header" in one_line_error(load_mnist, tmp_path)


def test_wrong_image_size(tmp_path):
    corrupt(tmp_path, "t10k-images-idx3-ubyte.gz", gzip.compress(idx_bytes(IMAGE_MAGIC, (3, 28, 27), bytes(3 * 756))))
    assert "images of 28x27, expected 28x28" in one_line_error(load_mnist, tmp_path)


def test_label_count_must_match_image_count(tmp_path):
    corrupt(tmp_path, "train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(LABEL_MAGIC, (6,), bytes(6))))
    assert "has 6 labels but" in one_line_error(load_mnist, tmp_path)


def test_synthetic_frey_loads(tmp_path):
    faces = np.arange(560 * 4, dtype=np.int64).reshape(560, 4).astype(np.uint8)
    write_frey(tmp_path, faces)
    loaded = load_frey(tmp_path)
    assert loaded.shape == (4, 28, 20) and loaded.dtype == torch.uint8
    assert np.array_equal(loaded.numpy(), faces.T.reshape(-1, 28, 20))


def test_missing_frey_names_expected_path(tmp_path):
    message = one_line_error(load_frey, tmp_path, download=False)
    assert str(tmp_path / "FreyFaces" / "frey_rawface.mat") in message and "data.download=true" in message


def test_failed_frey_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3]\nTemporary failure in name resolution>")

    monkeypatch.setattr(frey, "download_url", no_network)
    message = one_line_error(load_frey, tmp_path, download=True)
    assert frey.URL in message and "name resolution" in message and "VAELAB_DATA_DIR" in message


def test_frey_wrong_variable(tmp_path):
    path = tmp_path / "FreyFaces" / "frey_rawface.mat"
    path.parent.mkdir(parents=True)
    scipy.io.savemat(path, {"faces": numbered_faces(3)})
    assert "has no variable 'ff' (variables: faces)" in one_line_error(load_frey, tmp_path)


def test_frey_wrong_shape(tmp_path):
    write_frey(tmp_path, np.zeros((100, 3), dtype=np.uint8))
    assert "expected uint8 (560, N)" in one_line_error(load_frey, tmp_path)


@pytest.mark.parametrize("keep", [100, 300])
def test_frey_truncated(tmp_path, keep):
    path = write_frey(tmp_path, numbered_faces(5))
    path.write_bytes(path.read_bytes()[:keep])
    assert "is truncated or corrupt" in one_line_error(load_frey, tmp_path)


# ---------------------------------------------------------------- data module on synthetic files


def frey_module(root: Path, **overrides) -> VAEDataModule:
    settings = {
        "name": "frey",
        "root": str(root),
        "download": False,
        "binarize": Binarize.none,
        "val_size": 20,
        "test_size": 30,
        "batch_size": 16,
    }
    return build_datamodule(DataConfig(**{**settings, **overrides}), seed=0, eval_batch_size=25)


def test_frey_split_is_disjoint_and_complete(tmp_path):
    write_frey(tmp_path, numbered_faces(100))
    dm = frey_module(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_data), len(dm.val_data), len(dm.test_data)) == (50, 20, 30)
    assert dm.train_data.shape[1] == 560 and dm.image_shape == (1, 28, 20) and not dm.binary
    ids = torch.cat([dm.train_data, dm.val_data, dm.test_data])[:, 0] * 255
    assert sorted(ids.round().long().tolist()) == list(range(100))
    assert dm.test_labels is None
    first_train = dm.train_data.clone()
    dm.setup("test")  # idempotent
    assert torch.equal(dm.train_data, first_train)
    assert len(dm.test_dataloader()) == 2 and len(dm.train_dataloader()) == 4


def test_too_large_held_out_set(tmp_path):
    write_frey(tmp_path, numbered_faces(50))
    dm = frey_module(tmp_path)
    message = one_line_error(dm.setup, "fit")
    assert "data.val_size + data.test_size = 50 leaves no training data out of 50" in message


def test_empty_validation_set_gives_no_loader(tmp_path):
    write_frey(tmp_path, numbered_faces(60))
    dm = frey_module(tmp_path, val_size=0)
    dm.setup("fit")
    assert dm.val_dataloader() == []


class TinyModel(pl.LightningModule):
    """Records the first value of every training minibatch and counts validation batches."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(560, 1)
        self.first_values: list[tuple[int, float]] = []
        self.val_batches = 0

    def training_step(self, minibatches: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = torch.cat(minibatches)
        self.first_values.append((self.current_epoch, float(x[0, 0])))
        return self.layer(x).pow(2).mean()

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self.val_batches += 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("val_size", [0, 20])
def test_lightning_fit_runs_on_the_loaders(tmp_path, val_size):
    write_frey(tmp_path, numbered_faces(100))
    dm = frey_module(tmp_path, val_size=val_size)
    model = TinyModel()
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    # Lightning warns about the empty validation loader, then skips validation
    expect_warning = pytest.warns(UserWarning, match="across ranks is zero") if val_size == 0 else nullcontext()
    with expect_warning:
        trainer.fit(model, datamodule=dm)
    assert trainer.train_dataloader.sampler.epoch == 2
    orders = {epoch: [v for e, v in model.first_values if e == epoch] for epoch in range(3)}
    assert orders[0] != orders[1]  # a new permutation each epoch
    assert model.val_batches == (0 if val_size == 0 else 3 * 2)


# ---------------------------------------------------------------- MNIST split and binarization, synthetic files


def write_mnist_images(root: Path, train: np.ndarray, test: np.ndarray) -> None:
    """The four IDX files of ``<root>/MNIST/raw`` (gzipped) holding these uint8 [N, 28, 28]
    images, every label 0."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, images in (("train", train), ("t10k", test)):
        files = {"images-idx3": (IMAGE_MAGIC, images), "labels-idx1": (LABEL_MAGIC, np.zeros(len(images), np.uint8))}
        for kind, (magic, array) in files.items():
            (raw / f"{split}-{kind}-ubyte.gz").write_bytes(gzip.compress(idx_bytes(magic, array.shape, array.tobytes())))


def synthetic_mnist(root: Path, binarize: Binarize, split_seed: int = 0, seed: int = 0, val_size: int = 15) -> VAEDataModule:
    cfg = DataConfig(root=str(root), download=False, binarize=binarize, val_size=val_size, split_seed=split_seed)
    dm = build_datamodule(cfg, seed=seed)
    dm.setup("fit")
    return dm


def row_keys(rows: torch.Tensor) -> list[bytes]:
    """Each row of grey levels in [0, 1] as the bytes of its uint8 pixels: an image's identity."""
    return [bytes(row) for row in (rows * 255).round().to(torch.uint8).numpy()]


def test_mnist_validation_split_is_disjoint_complete_and_seeded(tmp_path):
    """MNIST validation is carved from the training file: validation and training rows are
    disjoint, together exactly the file's 60 images each once, and the split is a function
    of data.split_seed alone (the same for another shuffle seed and global RNG state, other
    for another split_seed). Sizes alone would not see an overlap, a dropped image or an
    unseeded permutation. The test set is the t10k file, untouched and in order."""
    arrays = write_mnist(tmp_path, n_train=60, n_test=9)  # random images: all distinct (checked)
    train_images, test_images = arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]
    originals = [bytes(image.reshape(-1)) for image in train_images]
    assert len(set(originals)) == 60
    torch.manual_seed(1)
    dm = synthetic_mnist(tmp_path, Binarize.none, split_seed=3)
    val, train = row_keys(dm.val_data), row_keys(dm.train_data)
    assert (len(val), len(train)) == (15, 45)
    assert not set(val) & set(train)
    assert sorted(val + train) == sorted(originals)
    assert torch.equal(dm.test_data, torch.from_numpy(test_images).reshape(9, 784).float() / 255)
    assert torch.equal(dm.test_labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    torch.manual_seed(2)
    again = synthetic_mnist(tmp_path, Binarize.none, split_seed=3, seed=7)
    assert torch.equal(again.val_data, dm.val_data) and torch.equal(again.train_data, dm.train_data)
    other = synthetic_mnist(tmp_path, Binarize.none, split_seed=4)
    assert set(row_keys(other.val_data)) != set(val)
    assert torch.equal(other.test_data, dm.test_data)


def test_frey_split_depends_on_the_split_seed_only(tmp_path):
    """The Frey split (disjoint and complete: test_frey_split_is_disjoint_and_complete) is the
    same for the same split_seed whatever the shuffle seed and global RNG state, and another
    for another split_seed."""
    write_frey(tmp_path, numbered_faces(100))

    def split(split_seed: int, seed: int = 0) -> list[list[int]]:
        dm = build_datamodule(
            DataConfig(name="frey", root=str(tmp_path), download=False, binarize=Binarize.none,
                       val_size=20, test_size=30, split_seed=split_seed),
            seed=seed,
        )  # fmt: skip
        dm.setup("fit")
        return [(part[:, 0] * 255).round().long().tolist() for part in (dm.train_data, dm.val_data, dm.test_data)]

    torch.manual_seed(1)
    first = split(0)
    torch.manual_seed(2)
    assert split(0, seed=9) == first
    assert all(sorted(a) != sorted(b) for a, b in zip(split(1), first))


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


# Every grey level 0..255, three or four pixels each (0 and 255 included, drawn as 0 and 1).
GREY = (np.arange(784) % 256).astype(np.uint8).reshape(28, 28)


def binomial_tolerance(p: torch.Tensor, draws: int) -> torch.Tensor:
    """5 binomial standard errors of a mean of ``draws`` Bernoulli(p) draws, per pixel (0
    where p is 0 or 1: those draws are exact). A correct draw misses it in one pixel of 784
    with probability about 4e-4 (the seeds are fixed, so the outcome is too); a fixed
    threshold at 0.5 misses it by up to 0.5 at grey levels near 0.5."""
    return 5 * (p * (1 - p) / draws).sqrt()


def test_static_binarization_is_one_seeded_draw_of_the_grey_levels(tmp_path):
    """data.binarize=static: every split is binary; the same split_seed gives the same draws
    whatever the shuffle seed and global RNG state (a draw from torch's global generator would
    not), another split_seed other draws; two copies of one grey image are drawn differently,
    and each pixel's mean over 400 copies is its grey level within the binomial tolerance (a
    fixed threshold is binary and deterministic too, but fails both)."""
    write_mnist_images(tmp_path, np.repeat(GREY[None], 400, axis=0), np.repeat(GREY[None], 100, axis=0))
    torch.manual_seed(1)
    dm = synthetic_mnist(tmp_path, Binarize.static, split_seed=0, val_size=100)
    torch.manual_seed(2)
    again = synthetic_mnist(tmp_path, Binarize.static, split_seed=0, seed=5, val_size=100)
    other = synthetic_mnist(tmp_path, Binarize.static, split_seed=1, val_size=100)
    grey = torch.from_numpy(GREY).reshape(784).double() / 255
    for name in ("train_data", "val_data", "test_data"):
        draws = getattr(dm, name)
        assert is_binary(draws), name
        assert torch.equal(draws, getattr(again, name)), name
        assert not torch.equal(draws, getattr(other, name)), name
        assert not torch.equal(draws[0], draws[1]), name
    draws = torch.cat([dm.train_data, dm.val_data]).double()
    error = (draws.mean(0) - grey).abs()
    assert (error <= binomial_tolerance(grey, len(draws))).all(), error.max()


def test_dynamic_binarization_keeps_training_grey_levels_and_draws_evaluation_once(tmp_path):
    """data.binarize=dynamic: the training rows are the grey levels themselves (the training
    step draws from them: tests/test_training_steps.py), validation and test are the static
    draws of the same split_seed."""
    write_mnist_images(tmp_path, np.repeat(GREY[None], 40, axis=0), np.repeat(GREY[None], 10, axis=0))
    dynamic = synthetic_mnist(tmp_path, Binarize.dynamic, split_seed=2)
    static = synthetic_mnist(tmp_path, Binarize.static, split_seed=2)
    grey = torch.from_numpy(GREY).reshape(1, 784).float() / 255
    assert torch.equal(dynamic.train_data, grey.expand(25, -1))
    assert torch.equal(next(iter(dynamic.train_dataloader()))[0], grey.expand(25, -1))
    assert torch.equal(dynamic.val_data, static.val_data) and torch.equal(dynamic.test_data, static.test_data)
    assert is_binary(dynamic.val_data) and is_binary(dynamic.test_data)


# ---------------------------------------------------------------- InMemoryBatches


def ids_of(batches: InMemoryBatches) -> list[int]:
    return [int(v) for batch in batches for v in batch[:, 0]]


def numbered(n: int) -> torch.Tensor:
    """[n, 2]: row i is (i, -i)."""
    ids = torch.arange(n, dtype=torch.float32)
    return torch.stack([ids, -ids], dim=1)


def test_each_example_once_per_epoch():
    batches = InMemoryBatches(numbered(103), batch_size=10, shuffle=True, seed=5)
    assert len(batches) == 11
    sizes = [len(batch) for batch in batches]
    assert sizes == [10] * 10 + [3]
    for epoch in range(3):
        batches.sampler.set_epoch(epoch)
        ids = ids_of(batches)
        assert sorted(ids) == list(range(103)) and ids != list(range(103))
    assert all(torch.equal(b[:, 1], -b[:, 0]) for b in batches)  # rows stay whole


def test_permutation_depends_on_seed_and_epoch_only():
    def order(seed: int, epoch: int) -> list[int]:
        batches = InMemoryBatches(numbered(50), batch_size=7, shuffle=True, seed=seed)
        _set_sampler_epoch(batches, epoch)  # as Lightning does
        return ids_of(batches)

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 1) != order(2, 1)
    assert order(1, 1) == order(2, 0)  # the generator is seeded with seed + epoch


def test_no_shuffle_keeps_order():
    batches = InMemoryBatches(numbered(25), batch_size=10, shuffle=False, seed=0)
    batches.sampler.set_epoch(4)
    assert ids_of(batches) == list(range(25))


def test_order_is_drawn_when_iteration_starts():
    batches = InMemoryBatches(numbered(30), batch_size=30, shuffle=True, seed=0)
    iterator = iter(batches)  # Lightning calls iter() before set_epoch() when resuming
    batches.sampler.set_epoch(3)
    expected = InMemoryBatches(numbered(30), batch_size=30, shuffle=True, seed=3)
    assert torch.equal(next(iterator), next(iter(expected)))


@pytest.mark.parametrize("n, world_size", [(100, 2), (103, 2), (10, 3), (2, 4)])
def test_ranks_share_an_epoch(n, world_size):
    shards = [
        InMemoryBatches(numbered(n), batch_size=8, shuffle=True, seed=9, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    per_rank = -(-n // world_size)
    assert {len(s) for s in shards} == {-(-per_rank // 8)}
    ids = [ids_of(s) for s in shards]
    assert {len(i) for i in ids} == {per_rank}
    together = sorted(i for shard in ids for i in shard)
    # every example once; the padding repeats the first examples of the epoch's order
    assert sorted(set(together)) == list(range(n))
    assert len(together) - n == per_rank * world_size - n


@pytest.mark.parametrize("group, limit", [(1, None), (4, None), (4, 6), (50, None), (3, 20)])
def test_groups_hold_the_same_minibatches_in_the_same_order(group, limit):
    plain = InMemoryBatches(numbered(103), batch_size=10, shuffle=True, seed=5)
    grouped = InMemoryBatches(numbered(103), batch_size=10, shuffle=True, seed=5, group=group, limit=limit)
    lists = list(grouped)
    expected = list(plain)[:limit]
    assert all(isinstance(item, list) and 1 <= len(item) <= group for item in lists)
    assert len(grouped) == len(lists) == -(-len(expected) // group)
    assert grouped.minibatches == len(expected)
    flat = [batch for item in lists for batch in item]
    assert len(flat) == len(expected) and all(torch.equal(a, b) for a, b in zip(flat, expected))


def test_to_moves_the_data():
    batches = InMemoryBatches(numbered(4).double(), batch_size=2, shuffle=False, seed=0)
    assert batches.to("cpu") is batches and batches.data.device.type == "cpu"


def test_bad_arguments():
    with pytest.raises(ValueError):
        InMemoryBatches(torch.zeros(5), batch_size=2, shuffle=False, seed=0)
    with pytest.raises(ValueError):
        InMemoryBatches(numbered(5), batch_size=2, shuffle=False, seed=0, rank=2, world_size=2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_are_cut_on_the_gpu(tmp_path):
    write_frey(tmp_path, numbered_faces(100))
    dm = frey_module(tmp_path)
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), global_rank=0, world_size=1
    )
    dm.setup("fit")
    assert dm.train_data.is_cuda and dm.test_data.is_cuda
    assert next(iter(dm.train_dataloader()))[0].is_cuda


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_mnist():
    return load_mnist(SHARED_DATA)


@needs_mnist
def test_real_mnist_files(real_mnist):
    assert real_mnist.train_images.shape == (60000, 28, 28) and real_mnist.test_images.shape == (10000, 28, 28)
    assert real_mnist.train_labels.shape == (60000,) and real_mnist.test_labels.shape == (10000,)
    for images in (real_mnist.train_images, real_mnist.test_images):
        assert images.dtype == torch.uint8 and int(images.min()) == 0 and int(images.max()) == 255
    assert set(real_mnist.train_labels.unique().tolist()) == set(range(10))
    verify_mnist_md5(SHARED_DATA)  # md5 of the decompressed bytes against the published table


def mnist_module(binarize: Binarize, split_seed: int = 0) -> VAEDataModule:
    cfg = DataConfig(root=str(SHARED_DATA), download=False, binarize=binarize, val_size=10000, split_seed=split_seed)
    return build_datamodule(cfg, seed=0)


@needs_mnist
def test_real_mnist_splits():
    dm = mnist_module(Binarize.none)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_data), len(dm.val_data), len(dm.test_data)) == (50000, 10000, 10000)
    assert dm.train_data.shape[1] == 784 and dm.train_data.dtype == torch.float32
    assert dm.test_labels.shape == (10000,) and dm.image_shape == (1, 28, 28)
    for split in (dm.train_data, dm.val_data, dm.test_data):
        assert float(split.min()) == 0.0 and float(split.max()) == 1.0
    assert len(dm.train_dataloader()) == 500 and len(dm.test_dataloader()) == 100


@pytest.fixture(scope="module")
def static_mnist() -> VAEDataModule:
    dm = mnist_module(Binarize.static)
    dm.setup("fit")
    return dm


@needs_mnist
def test_real_mnist_static_binarization_is_fixed(static_mnist):
    again = mnist_module(Binarize.static)
    again.setup("fit")
    assert static_mnist.binary
    for a, b in (
        (static_mnist.train_data, again.train_data),
        (static_mnist.val_data, again.val_data),
        (static_mnist.test_data, again.test_data),
    ):
        assert is_binary(a) and torch.equal(a, b)
    assert 0.1 < float(static_mnist.train_data.mean()) < 0.15  # MNIST's mean intensity is about 0.13


@needs_mnist
def test_real_mnist_dynamic_binarization_leaves_training_grey_levels(static_mnist):
    dynamic = mnist_module(Binarize.dynamic)
    dynamic.setup("fit")
    # validation and test are drawn once, as under static binarization
    assert torch.equal(dynamic.val_data, static_mnist.val_data) and torch.equal(
        dynamic.test_data, static_mnist.test_data
    )
    # the training step draws each minibatch afresh (tests/test_training_steps.py)
    batch = next(iter(dynamic.train_dataloader()))[0]
    assert not is_binary(batch)


@needs_frey
def test_real_frey_faces():
    faces = load_frey(SHARED_DATA)
    assert faces.shape == (1965, 28, 20) and faces.dtype == torch.uint8
    assert int(faces.min()) == 8 and int(faces.max()) == 238
    assert float(faces.double().mean()) == pytest.approx(154.46, abs=0.01)
