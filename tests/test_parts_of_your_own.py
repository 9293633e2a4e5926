"""A part of every family from a folder outside vaelab: one Python file and one YAML each.

``examples/parts/`` holds a prior (Cauchy), a posterior flow step (affine), a likelihood (a
Bernoulli of bounded logits), a network (one hidden layer), a dataset (binary bars drawn from a
seed) and an objective (the mean of two IWAE bounds of k/2 samples), and ``examples/parts/configs/``
one YAML for each. The test copies that folder to a temporary one, adds its configs with
``VAELAB_CONFIG_PATH``, and trains and evaluates a model made of all six, editing nothing under
vaelab/. Each part must be the one that ran: the built model's densities are checked against
torch.distributions, and the objective's training numbers against the built-in MIWAE(2, 2) it
equals, step for step.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.distributions as D

from tests.helpers import PROJECT, metrics_rows
from vaelab.config.compose import load_config
from vaelab.evaluate import main as evaluate_main
from vaelab.fit import main as fit_main
from vaelab.models.vae import VAE

PARTS = ["model=clamped_bernoulli", "prior=cauchy", "posterior=affine", "net=one_layer", "data=bars", "experiment=two_group_iwae"]
BUDGET = [
    "trainer.max_epochs=2", "trainer.progress_bar=false", "trainer.accelerator=cpu", "trainer.compile=false",
    "trainer.deterministic=true", "trainer.log_every_n_steps=1", "eval.ll_samples=20", "eval.compile=false",
]


@pytest.fixture
def own_parts(tmp_path, monkeypatch):
    """The working directory: a copy of examples/parts/ (the YAML files name the Python files from here)."""
    shutil.copytree(PROJECT / "examples" / "parts", tmp_path / "examples" / "parts")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAELAB_CONFIG_PATH", str(tmp_path / "examples" / "parts" / "configs"))
    return tmp_path


def test_the_six_parts_build_the_model_they_describe(own_parts):
    torch.manual_seed(0)
    _, cfg = load_config(PARTS)
    vae = VAE(cfg.model, cfg.data.source.image_shape, cfg.prior, cfg.net, cfg.posterior).double()
    assert (cfg.data.source.name, type(vae.prior).__name__, type(vae.decoder.likelihood).__name__) == (
        "bars", "CauchyPrior", "ClampedBernoulliLikelihood")
    assert vae.encoders[0].trunk.width == 64 and not vae.encoders[0].gaussian and not vae.has_closed_form_kl
    z = torch.randn(5, 4, dtype=torch.float64) * 3
    assert torch.allclose(vae.prior.log_prob(z), D.Cauchy(0.0, 1.0).log_prob(z).sum(-1), atol=1e-12)
    x = torch.bernoulli(torch.full((5, 64), 0.3, dtype=torch.float64))
    params = vae.encoders[0](x)
    mean, log_var, log_scale, shift = params
    sample, noise = vae.encoders[0].distribution(params).rsample()
    q = D.TransformedDistribution(
        D.Normal(mean, torch.exp(0.5 * log_var)), [D.AffineTransform(shift, torch.exp(log_scale))]
    )
    assert torch.allclose(vae.encoders[0].distribution(params).log_prob_of_noise(noise), q.log_prob(sample).sum(-1), atol=1e-10)
    logits = vae.decoder.params(sample)
    assert logits.abs().max() <= 8.0
    assert torch.allclose(vae.decoder.log_prob(x, sample), D.Bernoulli(logits=logits).log_prob(x).sum(-1), atol=1e-12)
    images = cfg.data.source.load(cfg.data, torch.Generator().manual_seed(0))
    assert (len(images.train), len(images.val), len(images.test)) == (1000, 100, 200)
    assert set(images.train.unique().tolist()) == {0.0, 1.0}


def test_a_model_of_six_parts_of_your_own_trains_and_evaluates(own_parts):
    assert fit_main([*PARTS, *BUDGET, f"run.dir={own_parts / 'own'}"]) == 0
    # MIWAE(M=2, K=2) is the same bound of the same 4 samples: the same run, step for step
    assert fit_main([*PARTS, *BUDGET, "model.objective=miwae", "model.m=2", "model.k=2", f"run.dir={own_parts / 'miwae'}"]) == 0
    own = [row["train/two_group_iwae4"] for row in metrics_rows(own_parts / "own") if row.get("train/two_group_iwae4")]
    builtin = [row["train/miwae2x2"] for row in metrics_rows(own_parts / "miwae") if row.get("train/miwae2x2")]
    assert len(own) == 40 and own == builtin
    assert float(own[-1]) > float(own[0]) + 1  # it learns: about -45 nats after 40 steps
    summary = json.loads((own_parts / "own" / "summary.json").read_text())
    assert summary["val_kl"] == "mc" and summary["bits_per_dim"] is not None  # a probability of binary data
    assert math.isfinite(summary["test_ll"]) and summary["test_ll"] >= summary["test_elbo"]
    assert evaluate_main([f"ckpt={own_parts / 'own'}", "eval.ll_samples=20", "eval.iwae_k=[1]"]) == 0
    evaluated = json.loads((own_parts / "own" / "eval.json").read_text())
    assert evaluated["test_ll"] == pytest.approx(summary["test_ll"], rel=1e-6, abs=0)


@pytest.mark.parametrize(
    "words, message",
    [
        (["prior.args.scale=-1"], "scale must be a finite number > 0"),
        (["prior.args.shape=2"], "prior.args.shape"),
        (["model.decoder_args.bound=many"], "model.decoder_args.bound"),
        (["net.args.width=wide"], "net.args.width"),
        (["data.args.train=0.5"], "data.args.train"),
        (["model.k=3"], "model.k=3 is invalid: expected an even number for two_group_iwae"),
        (["net.name=mlp"], "net.target=examples/parts/one_layer_network.py:OneLayerNetwork is invalid: expected null unless net.name=custom"),
    ],
)
def test_a_mistake_in_a_part_of_your_own_is_one_line_exit_status_2(own_parts, capsys, words, message):
    assert fit_main([*PARTS, *BUDGET, *words, f"run.dir={own_parts / 'bad'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (own_parts / "bad" / "checkpoints").exists()


def test_a_run_without_run_dir_is_named_by_its_parts_names(own_parts, monkeypatch):
    from vaelab.training.run_dir import choose_run_dir

    monkeypatch.delenv("VAELAB_RUN_DIR", raising=False)
    assert choose_run_dir(load_config(PARTS)[1]).parent.name == "bars-clamped_bernoulli"
    assert choose_run_dir(load_config(["model=bernoulli"])[1]).parent.name == "mnist-bernoulli"
