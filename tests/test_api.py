"""``vaelab.train`` and ``vaelab.load_run`` (vaelab/api.py) on a real short run: what a run
gives, the model's images and scores against the fit's and vaelab.evaluate's own, and the
one-line errors."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import make_grid

import vaelab
from tests.helpers import PROJECT, write_mnist
from vaelab.errors import CheckpointError, ConfigError, VaelabError
from vaelab.evaluate import main as evaluate_main
from vaelab.models.module import RENAMED_PARAMETERS

# Two epochs of 4 steps on 300 tiny MNIST images, tested on the first 50 test images with
# 10 importance samples each (two batches of 25, in chunks of 4 samples): a few seconds.
WORDS = [
    "model=bernoulli", "trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2", "trainer.log_every_n_steps=1", "trainer.accelerator=cpu",
    "trainer.compile=false", "trainer.progress_bar=false", "data.val_size=100", "data.batch_size=50",
    "data.download=false", "model.hidden=[32]", "model.latent_dim=4",
    "eval.batch_size=25", "eval.chunk_size=4", "eval.ll_samples=10", "eval.compile=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> vaelab.Run:
    """One short run, trained by vaelab.train, shared by the module."""
    root = tmp_path_factory.mktemp("api")
    write_mnist(root / "data", n_train=300, n_test=50)
    return vaelab.train(*WORDS, f"data.root={root / 'data'}", f"run.dir={root / 'run'}")


@pytest.mark.slow
def test_a_trained_run_gives_its_config_summary_and_metrics(trained):
    run = trained
    assert run.config.model.latent_dim == 4 and run.config.model.decoder == "bernoulli"
    assert run.checkpoint.parent == run.dir / "checkpoints" and run.checkpoint.name.startswith("best-epoch")
    summary = json.loads((run.dir / "summary.json").read_text())
    assert run.summary == summary and summary["epochs"] == 2 and summary["steps"] == 8
    assert run.evaluation is None  # vaelab.evaluate has not run
    metrics = run.metrics
    assert {"step", "epoch", "train/elbo", "val/elbo", "test/ll"} <= set(metrics)
    steps, elbo = metrics.curve("train/elbo")
    assert steps.tolist() == list(range(8)) and np.isfinite(elbo).all()  # one row per step (log_every_n_steps=1)
    steps, val = metrics.curve("val/elbo")
    assert steps.tolist() == [3, 7]  # after each epoch's last step
    assert val.max() == pytest.approx(summary["best_val_elbo"])
    epochs, _ = metrics.curve("val/elbo", x="epoch")
    assert epochs.tolist() == [0, 1]
    assert len(metrics["step"]) == len(metrics["val/elbo"])  # every column has a cell per row, NaN where empty
    with pytest.raises(KeyError, match="no column 'val/elbow'") as caught:
        metrics.curve("val/elbow")
    assert isinstance(caught.value, VaelabError)
    # the file as well as its run directory
    again = vaelab.load_run(run.checkpoint)
    assert again.dir == run.dir and again.checkpoint == run.checkpoint
    last = vaelab.load_run(run.dir / "checkpoints" / "last.ckpt")
    assert last.checkpoint.name == "last.ckpt"


@pytest.mark.slow
def test_samples_are_those_of_the_fits_picture_and_follow_the_seed(trained):
    model = trained.model
    samples = model.sample(64, seed=trained.config.seed)
    assert samples.shape == (64, 1, 28, 28) and samples.dtype == torch.float32
    # samples.png: the same 64 decoder means, as torchvision's save_image writes them
    grid = make_grid(samples, nrow=8, padding=2, pad_value=1.0)
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    with Image.open(trained.dir / "samples.png") as picture:
        assert np.array_equal(np.asarray(picture.convert("RGB")), pixels)
    assert torch.equal(model.sample(5, seed=3), model.sample(5, seed=3))
    assert not torch.allclose(model.sample(5, seed=3), model.sample(5, seed=4), atol=1e-3)
    torch.manual_seed(0)
    first = model.sample(5)
    assert not torch.equal(first, model.sample(5))  # no seed: the global generator's next draws


@pytest.mark.slow
def test_log_likelihood_of_the_test_images_is_vaelab_evaluates(trained, tmp_path):
    """Same checkpoint, images, seed, samples, batches and chunks: exactly eval.json's test_ll and
    test_elbo (both the float64 mean of the same per-image float32 values), and the fit's test
    numbers up to its float32 running mean; another seed moves them by far more."""
    copy = tmp_path / "run"
    shutil.copytree(trained.dir, copy)
    assert evaluate_main([f"ckpt={copy}", "eval.iwae_k=[1,5]"]) == 0  # max k <= S: only the S samples drawn
    evaluated = json.loads((copy / "eval.json").read_text())
    run = vaelab.load_run(copy)
    assert run.evaluation == evaluated
    images = run.test_images()
    assert images.shape == (50, 1, 28, 28) and set(images.unique().tolist()) == {0.0, 1.0}  # the fixed binarization
    state = torch.get_rng_state()
    ll = run.model.log_likelihood(images, seed=run.config.seed)
    elbo = run.model.elbo(images, seed=run.config.seed)
    assert torch.equal(torch.get_rng_state(), state), "a seeded call leaves the global generator as it was"
    assert ll.shape == elbo.shape == (50,) and (ll >= elbo - 1e-4).all()
    assert ll.double().mean().item() == evaluated["test_ll"]
    assert elbo.double().mean().item() == evaluated["test_elbo"]
    assert ll.double().mean().item() == pytest.approx(run.summary["test_ll"], abs=1e-3, rel=0)
    assert elbo.double().mean().item() == pytest.approx(run.summary["test_elbo"], abs=1e-3, rel=0)
    other = run.model.log_likelihood(images, seed=run.config.seed + 1)
    assert abs(other.double().mean().item() - evaluated["test_ll"]) > 1e-2
    more = run.model.log_likelihood(images[:10], samples=200, seed=0)
    assert (more.mean() > ll[:10].mean() - 1.0) and torch.isfinite(more).all()  # L_S grows with S, on average


@pytest.mark.slow
def test_reconstructions_and_posterior_means(trained):
    model = trained.model
    images = trained.test_images(8)
    recon = model.reconstruct(images)
    assert recon.shape == (8, 1, 28, 28) and recon.min() >= 0 and recon.max() <= 1
    assert not torch.allclose(recon[0], recon[1], atol=1e-4)  # each its own input's
    assert torch.equal(model.reconstruct(images[:, 0]), recon)  # [n, H, W] as well
    assert torch.equal(model.reconstruct((images * 255).to(torch.uint8)), recon)  # uint8 0..255
    assert torch.equal(model.reconstruct(images.numpy()), recon)
    means = model.encode(images)
    assert means.shape == (8, 4)
    with torch.no_grad():
        assert torch.equal(means, model.vae.encode(images.reshape(8, -1))[0])
    with pytest.warns(UserWarning, match="cross-entropy"):
        model.log_likelihood(images * 0.5, samples=2)


BAD_IMAGES = {
    "one image without n": (torch.zeros(28, 28), "images of shape [28, 28]: this model takes [n, 28, 28] or [n, 1, 28, 28] with n >= 1 (one image: images[None])"),
    "wrong size": (torch.zeros(3, 28, 27), "images of shape [3, 28, 27]"),
    "three channels": (torch.zeros(3, 3, 28, 28), "images of shape [3, 3, 28, 28]"),
    "no images": (torch.zeros(0, 28, 28), "with n >= 1"),
    "0..255 floats": (torch.full((2, 28, 28), 255.0), "image values from 255 to 255: pass floats in [0, 1]"),
    "NaN": (torch.full((2, 28, 28), math.nan), "image values from nan to nan"),
    "int64": (torch.zeros(2, 28, 28, dtype=torch.int64), "images of dtype torch.int64"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_are_one_line_errors(case, trained):
    images, expected = BAD_IMAGES[case]
    for method in (trained.model.log_likelihood, trained.model.reconstruct, trained.model.encode):
        with pytest.raises(VaelabError) as caught:
            method(images)
        message = str(caught.value)
        assert expected in message and "\n" not in message, message


@pytest.mark.slow  # starts python -m vaelab.fit
def test_train_gives_the_numbers_of_the_command_with_the_same_words(trained, tmp_path):
    words = [*WORDS, f"data.root={trained.config.data.root}", f"run.dir={tmp_path / 'cli'}"]
    subprocess.run([sys.executable, "-m", "vaelab.fit", *words], cwd=tmp_path, capture_output=True, check=True)
    command = json.loads((tmp_path / "cli" / "summary.json").read_text())
    for key in ("test_ll", "test_elbo", "best_val_elbo", "steps"):
        assert command[key] == trained.summary[key], key
    assert (tmp_path / "cli" / "metrics.csv").read_text() == (trained.dir / "metrics.csv").read_text()


@pytest.mark.slow
def test_train_resumes_with_the_command_lines_words(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained.dir, copy)
    resumed = vaelab.train(f"run.resume={copy}", "trainer.max_epochs=3")
    assert resumed.dir == copy and resumed.summary["epochs"] == 3 and resumed.summary["steps"] == 12
    assert resumed.metrics.curve("val/elbo")[0].tolist() == [3, 7, 11]


@pytest.mark.slow
def test_a_checkpoint_with_the_old_parameter_names_loads(trained, tmp_path):
    """Checkpoints written before the VAE was built from parts name the decoder's parameters
    otherwise; load_run loads them as vaelab.evaluate does."""
    copy = tmp_path / "run"
    shutil.copytree(trained.dir, copy)
    path = copy / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    old_names = {new: old for old, new in RENAMED_PARAMETERS.items()}
    state = {}
    for name, value in checkpoint["state_dict"].items():
        prefix = next((new for new in old_names if name.startswith(new)), None)
        state[name if prefix is None else old_names[prefix] + name[len(prefix):]] = value
    assert "vae.decoder.logits.weight" in state
    checkpoint["state_dict"] = state
    torch.save(checkpoint, path)
    old = vaelab.load_run(path)
    today = vaelab.load_run(trained.dir / "checkpoints" / "last.ckpt")
    assert torch.equal(old.model.sample(4, seed=1), today.model.sample(4, seed=1))


def test_train_with_a_bad_override_raises_a_config_error_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for words, expected in (
        (["model.latnt_dim=3"], "unknown key 'model.latnt_dim' in override 'model.latnt_dim=3'; did you mean model.latent_dim?"),
        (["model=bernouli"], "unknown model 'bernouli'"),
        (["--cfg"], "cannot read '--cfg'"),
    ):
        with pytest.raises(ConfigError, match=expected):
            vaelab.train(*words)
    assert list(tmp_path.iterdir()) == []


def test_load_run_of_no_run_raises_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match=f"no checkpoint at {tmp_path / 'missing'}"):
        vaelab.load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="expected best-\\*.ckpt or last.ckpt"):
        vaelab.load_run(tmp_path / "empty")


@pytest.mark.slow  # a new Python process that imports torch
def test_importing_vaelab_imports_no_torch_until_the_api_is_used():
    """``python -m vaelab.fit`` imports the package first: its start-up stays the command's."""
    code = (
        "import sys, vaelab; assert 'torch' not in sys.modules and 'vaelab.api' not in sys.modules;"
        " vaelab.load_run; assert 'vaelab.api' in sys.modules; print(sorted(vaelab.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sorted(["Metrics", "Model", "Run", "load_run", "train"]))
