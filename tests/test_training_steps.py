"""The training path: several optimizer steps per Lightning call, optionally compiled.

A run that takes ``trainer.steps_per_call`` steps per ``training_step`` call must be the run
that takes one: the same examples in the same order, the same binarization and
reparameterization noise, the same parameters and the same ``metrics.csv``, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import gzip

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from tests.helpers import (
    SHARED_DATA, assert_same_training_state, idx_bytes, metrics_rows, needs_frey, needs_mnist,
)
from vaelab.config.compose import compose, parse_command_line
from vaelab.config.plain import to_plain
from vaelab.data import build_datamodule
from vaelab.data.mnist import IMAGE_MAGIC, LABEL_MAGIC
from vaelab.fit import build_run, fit_run, main
from vaelab.models.compiled import AUTO_MIN_STEPS_CUDA, has_cpp_compiler, should_compile, training_step_flops
from vaelab.config.schema import Binarize, DataConfig, EvalConfig, ModelConfig, OptimConfig
from vaelab.errors import ConfigError
from vaelab.models.module import VAEModule
from vaelab.models.vae import VAE

BASE = [
    "experiment=smoke", "trainer.progress_bar=false", "eval.ll_samples=10", f"data.root={SHARED_DATA}",
    "trainer.max_epochs=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=1",
]
# Every feature of the step: dynamic binarization, clipping, a schedule, the IWAE bound,
# a second stochastic layer, the learned-variance decoder, Adagrad, a ragged last batch.
SETUPS = {
    "mnist-elbo-clip": ["trainer.limit_train_batches=11", "trainer.gradient_clip_val=1.0", "trainer.log_every_n_steps=3"],
    "frey-iwae-2layers": [
        "data=frey", "model=gaussian_learned", "model.objective=iwae", "model.k=3", "data.batch_size=100",
        "'model.upper_layers=[{hidden: [20], latent_dim: 4}]'", "model.hidden=[50]", "optim.schedule=burda",
        "trainer.log_every_n_steps=4",
    ],
    "mnist-adagrad-mc": [
        "trainer.limit_train_batches=9", "optim.name=adagrad", "model.kl=mc", "model.k=2", "trainer.log_every_n_steps=2",
    ],
}


def fit(run_dir: Path, *words: str) -> None:
    words = [w.strip("'") for w in words]
    assert main([*BASE, f"run.dir={run_dir}", "trainer.compile=false", *words]) == 0


def final_state(run_dir: Path) -> dict:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return checkpoint


@pytest.mark.slow
@needs_mnist
@needs_frey
@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_many_steps_per_call_train_exactly_as_one(tmp_path, setup):
    fit(tmp_path / "one", *SETUPS[setup], "trainer.steps_per_call=1")
    fit(tmp_path / "many", *SETUPS[setup], "trainer.steps_per_call=4")
    one, many = final_state(tmp_path / "one"), final_state(tmp_path / "many")
    assert one["global_step"] == many["global_step"] > 4
    assert_same_training_state(one, many, setup)
    rows_one, rows_many = metrics_rows(tmp_path / "one"), metrics_rows(tmp_path / "many")
    assert rows_one == rows_many
    assert sum(1 for row in rows_one if any(k.startswith("train/") and not k.endswith("_epoch") and v for k, v in row.items())) >= 2


@pytest.mark.slow
@needs_mnist
@needs_frey
def test_steps_through_lightnings_hooks_equal_direct_steps(tmp_path):
    """On one device the update skips Lightning's optimizer and backward wrappers (DDP and
    fp16 need them); both ways give the same run."""
    class ThroughLightning(pl.Callback):
        def on_train_start(self, trainer, module):
            self.default = None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if self.default is None:
                self.default = module._direct
            module._direct = False

    words = [*BASE, "trainer.compile=false", *SETUPS["mnist-elbo-clip"], "trainer.steps_per_call=4"]
    assert main([*words, f"run.dir={tmp_path / 'direct'}"]) == 0
    run = build_run(compose(parse_command_line([*words, f"run.dir={tmp_path / 'lightning'}"])))
    callback = ThroughLightning()
    run.trainer.callbacks.append(callback)
    fit_run(run)
    assert callback.default is True  # one device: the direct way unless told otherwise
    direct, lightning = final_state(tmp_path / "direct"), final_state(tmp_path / "lightning")
    assert direct["global_step"] == lightning["global_step"] == 22
    for name, value in direct["state_dict"].items():
        assert torch.equal(value, lightning["state_dict"][name]), name
    assert metrics_rows(tmp_path / "direct") == metrics_rows(tmp_path / "lightning")


@pytest.mark.slow
@needs_mnist
@needs_frey
def test_steps_are_counted_in_optimizer_steps(tmp_path):
    fit(tmp_path / "run", "trainer.limit_train_batches=11", "trainer.steps_per_call=4", "trainer.log_every_n_steps=5")
    rows = metrics_rows(tmp_path / "run")
    logged = [(int(row["epoch"]), int(row["step"])) for row in rows if row.get("train/elbo")]
    # steps 5, 10, 15, 20 (numbered from 0: 4, 9, 14, 19) over two epochs of 11 steps
    assert logged == [(0, 4), (0, 9), (1, 14), (1, 19)]
    val_steps = [int(row["step"]) for row in rows if row.get("val/elbo")]
    assert val_steps == [10, 21]  # the last step of each epoch, as Lightning numbers them
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 22


@pytest.mark.slow
@needs_mnist
@needs_frey
def test_dynamic_binarization_draws_each_training_minibatch(tmp_path):
    seen: list[torch.Tensor] = []

    class Recorder(pl.Callback):
        def on_train_start(self, trainer, module):
            step_loss = module._step_loss

            def recording(x, *tensors):
                seen.append(x.clone())
                return step_loss(x, *tensors)

            module._step_loss = recording

    words = [*BASE, "trainer.max_epochs=1", "trainer.limit_train_batches=3", f"run.dir={tmp_path}", "data.batch_size=500"]
    run = build_run(compose(parse_command_line(words)))
    run.trainer.callbacks.append(Recorder())
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert len(seen) == 3
    assert all(bool(((x == 0) | (x == 1)).all()) for x in seen)
    assert 0.1 < float(torch.cat(seen).mean()) < 0.16  # Bernoulli draws of MNIST's grey levels


def record_training_inputs(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """This module's one reach into internals (update it when they are renamed): a list that
    receives a copy of every x the training step hands to the ELBO's training loss
    (``vaelab.objectives.elbo.ELBO.loss_bound_and_terms``)."""
    from vaelab.objectives.elbo import ELBO

    seen: list[torch.Tensor] = []
    original = ELBO.loss_bound_and_terms

    def recording(objective, vae, x, *args, **kwargs):
        seen.append(x.detach().clone())
        return original(objective, vae, x, *args, **kwargs)

    monkeypatch.setattr(ELBO, "loss_bound_and_terms", recording)
    return seen


def test_training_step_draws_dynamic_binarization_afresh_from_the_grey_levels(tmp_path, monkeypatch):
    """data.binarize=dynamic, through the data module's batches and VAEModule's training
    step (recording the x that reaches the ELBO's training loss), 2 epochs of 4 steps (3 to a call)
    over 1000 copies of one grey image (every level 0..255): each x is binary; two copies of the image in one
    batch, and two batches, are drawn differently; epoch 2 draws anew (no row of it repeats a
    row of epoch 1, which a draw made once, at loading, would); and each pixel's mean over
    the 2000 draws is its grey level within 5 binomial standard errors, sqrt(p(1-p)/2000)
    (a correct draw misses in one pixel of 784 with probability about 4e-4; the seed is
    fixed). A fixed threshold is binary with about the right overall mean but fails all
    but the first."""
    grey = (np.arange(784) % 256).astype(np.uint8).reshape(1, 28, 28)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, copies in (("train", 1000), ("t10k", 1)):
        images = np.repeat(grey, copies, axis=0)
        for kind, magic, array in (("images-idx3", IMAGE_MAGIC, images), ("labels-idx1", LABEL_MAGIC, np.zeros(copies, np.uint8))):
            (raw / f"{split}-{kind}-ubyte.gz").write_bytes(gzip.compress(idx_bytes(magic, array.shape, array.tobytes())))
    data = DataConfig(root=str(tmp_path), download=False, binarize=Binarize.dynamic, val_size=0, batch_size=251)
    datamodule = build_datamodule(data, seed=0, steps_per_call=3)
    module = VAEModule(
        model=to_plain(ModelConfig(latent_dim=2, hidden=[4])), optim=to_plain(OptimConfig()), eval=to_plain(EvalConfig()),
        data_dim=784, image_shape=(28, 28), dynamic_binarization=True, compile=False,
    )
    seen = record_training_inputs(monkeypatch)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    )
    torch.manual_seed(0)
    trainer.fit(module, datamodule=datamodule)
    assert [len(x) for x in seen] == [251, 251, 251, 247] * 2
    assert all(bool(((x == 0) | (x == 1)).all()) for x in seen)
    assert not torch.equal(seen[0][0], seen[0][1]) and not torch.equal(seen[0], seen[1])
    epochs = [{bytes(row) for row in torch.cat(seen[i : i + 4]).to(torch.uint8).numpy()} for i in (0, 4)]
    assert not epochs[0] & epochs[1], f"{len(epochs[0] & epochs[1])} draws of epoch 1 come again in epoch 2"
    p = torch.from_numpy(grey).reshape(784).double() / 255
    draws = torch.cat(seen).double()
    error = (draws.mean(0) - p).abs()
    assert (error <= 5 * (p * (1 - p) / len(draws)).sqrt()).all(), error.max()


def test_training_step_flops_count_every_matrix_product():
    cfg = ModelConfig(hidden=[5], latent_dim=3, k=4)  # x(8) -5- (3, 3) | z(3) -5- 8
    vae = VAE(cfg, 8)
    encoder, decoder = 8 * 5 + 5 * 3 * 2, 3 * 5 + 5 * 8
    assert training_step_flops(vae, batch_size=10) == 6 * (10 * encoder + 10 * 4 * decoder)


def test_auto_compiles_runs_long_enough_to_repay_compiling():
    cpu = torch.device("cpu")
    small, large = 51e6, 790e6  # FLOP per step: Burda et al.'s one-layer model at batch 20; the default model
    default_run, smoke_run, burda_run = 50 * 550, 2 * 50, 3280 * 3000
    if has_cpp_compiler():
        assert should_compile(None, cpu, default_run, large)
        assert should_compile(None, cpu, burda_run, small)
        assert should_compile(True, cpu, 10, small)
    assert not should_compile(None, cpu, default_run, small)
    assert not should_compile(None, cpu, smoke_run, large)
    assert not should_compile(False, cpu, 10**9, large)
    assert should_compile(None, torch.device("cuda"), AUTO_MIN_STEPS_CUDA, small)
    assert not should_compile(None, torch.device("cuda"), AUTO_MIN_STEPS_CUDA - 1, large)
    with pytest.raises(ConfigError, match="trainer.compile=true is not supported on mps"):
        should_compile(True, torch.device("mps"), 10, small)


@pytest.mark.slow
@needs_mnist
@needs_frey
@pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_steps_draw_the_same_noise_as_eager_ones(tmp_path):
    """Compiling changes rounding only: a compiled run stays within float32 tolerance of
    the eager run (a different draw of the noise would move it by whole nats)."""
    words = ["trainer.limit_train_batches=8", "trainer.log_every_n_steps=2", "model.hidden=[64]", "data.batch_size=50"]
    fit(tmp_path / "eager", *words)
    fit(tmp_path / "compiled", *words, "trainer.compile=true")
    eager, compiled = final_state(tmp_path / "eager"), final_state(tmp_path / "compiled")
    for name, value in eager["state_dict"].items():
        torch.testing.assert_close(compiled["state_dict"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    bounds = [
        [float(row["train/elbo"]) for row in metrics_rows(tmp_path / run) if row.get("train/elbo")]
        for run in ("eager", "compiled")
    ]
    assert len(bounds[0]) == 8
    torch.testing.assert_close(torch.tensor(bounds[1]), torch.tensor(bounds[0]), rtol=1e-5, atol=1e-3)
