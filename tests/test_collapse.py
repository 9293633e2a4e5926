"""Posterior-collapse diagnostics, free bits and cyclical KL annealing.

The mutual-information estimator against the closed form of a linear-Gaussian encoder and on a
collapsed one; the KL terms per layer against the ELBO from the same draws; free bits' value and
gradient; the cyclical schedule against Fu et al.'s formula; and a tiny fit whose metrics.csv gains
the diagnostics' columns while every other cell stays as without them (the pinned numbers of
tests/test_same_numbers.py cover runs without them).
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import TINY_FIT, linear_gaussian_vae, metrics_rows, needs_mnist, sample_x, set_posterior, two_layer_linear_vae
from vaelab.config.schema import (
    KLMode, ModelConfig, OptimConfig, PosteriorConfig, PriorConfig,
)
from vaelab.errors import ConfigError
from vaelab.fit import main
from vaelab.models.collapse import CollapseDiagnostics, batch_diagnostics
from vaelab.models.module import VAEModule
from vaelab.models.optim import cyclical_kl_weight
from vaelab.models.vae import VAE
from vaelab.objectives import objective_for
from vaelab.objectives.elbo import free_bits_kl, free_bits_loss
from vaelab.probability import objectives
from vaelab.probability.densities import kl_to_standard_normal, kl_to_standard_normal_per_dimension
from vaelab.probability.mutual_information import mutual_information

SEED = 3


def generator(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- mutual information


def test_mutual_information_of_a_linear_gaussian_encoder_is_the_closed_form():
    """x ~ N(0, s^2), q(z|x) = N(a x, diag(v)): q(z) = N(0, s^2 a a^T + diag(v)), so
    I = 0.5 log det(I + s^2 diag(v)^-1 a a^T) = 0.5 log(1 + s^2 sum_j a_j^2 / v_j). N = 4000 in
    float64: over 8 seeds the estimate's error has a spread of 0.02 nats; tolerance 0.07."""
    torch.manual_seed(0)
    n, s = 2500, 1.5
    a = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    v = torch.tensor([0.25, 1.0, 0.5], dtype=torch.float64)
    x = s * torch.randn(n, 1, dtype=torch.float64)
    mean, log_var = a * x, torch.log(v).expand(n, 3)
    z = mean + v.sqrt() * torch.randn(n, 3, dtype=torch.float64)
    expected = 0.5 * math.log(1 + s**2 * (1 / 0.25 + 0.25 / 1.0))
    assert float(mutual_information(mean, log_var, z)) == pytest.approx(expected, abs=0.08)


def test_a_collapsed_encoder_has_no_mutual_information_and_no_active_units():
    """q(z|x) independent of x (the two-layer helper's encoders are all zero, q(z_1|x) = N(0, 9 I)):
    the batch mixture is q(z_1) itself, so the estimate is E[log q] - mean_i log q(z_i), noise of
    standard error sqrt(d / 2 / N) = 0.039 nats for d = 3, N = 1000: tolerance 0.16 (4 of them).
    No unit of either layer is active."""
    torch.manual_seed(0)
    vae = two_layer_linear_vae()
    x = sample_x(vae, 1000).double()
    vae = vae.double()
    diagnostics = CollapseDiagnostics([3, 2]).double()
    with torch.no_grad():
        draws = generator()
        for batch in x.split(250):
            diagnostics.update(batch_diagnostics(vae, batch, draws, mean_samples=10))
    assert float(diagnostics.mutual_information.compute()) == pytest.approx(0.0, abs=0.16)
    assert diagnostics.active_units(0.01) == {"active_units_z1": 0, "active_units_z2": 0}


def test_active_units_count_the_units_whose_posterior_mean_varies():
    """The linear-Gaussian VAE's exact posterior: the mean of unit j is g_j^T (x - b), its variance
    over x the closed form g_j^T Cov(x) g_j; units 0 and 1 are scaled to vary, unit 2 to (almost) not."""
    torch.manual_seed(0)
    vae = linear_gaussian_vae().double()
    set_posterior(vae)
    with torch.no_grad():
        vae.encoders[0].mean.weight.mul_(torch.tensor([[1.0], [1.0], [1e-3]], dtype=torch.float64))
    x = torch.randn(2000, 6, dtype=torch.float64)  # Cov(x) = I
    diagnostics = CollapseDiagnostics([3]).double()
    with torch.no_grad():
        diagnostics.update(batch_diagnostics(vae, x, generator()))
        expected = (vae.encoders[0].mean.weight**2).sum(1)  # g_j^T I g_j
    assert expected[:2].min() > 0.05 and expected[2] < 1e-4
    variances = diagnostics.variances[0].compute()
    assert variances.tolist() == pytest.approx(expected.tolist(), rel=0.1, abs=1e-5)
    assert diagnostics.active_units(0.01) == {"active_units_z1": 2}


# ---------------------------------------------------------------- KL per layer


@pytest.mark.parametrize("model", ["one layer", "two layers", "mixture prior", "planar flow"])
def test_kl_per_layer_sums_to_the_kl_of_the_elbo_from_the_same_draws(model):
    """recon - sum_l KL_l is the one-sample ELBO of :func:`objectives.elbo` when both draw the same
    noise (the global generator seeded as the diagnostics' own): float64, to 1e-10 nats; the KL is
    sampled for a mixture prior and a flow posterior."""
    torch.manual_seed(0)
    if model == "two layers":
        vae = two_layer_linear_vae()
        with torch.no_grad():
            for parameter in vae.encoders.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
    else:
        cfg = ModelConfig(decoder="gaussian", latent_dim=3, hidden=[5], sigma=0.5)
        prior = PriorConfig(name="mog", components=4) if model == "mixture prior" else None
        flow = PosteriorConfig(name="planar", flow_length=3) if model == "planar flow" else None
        vae = VAE(cfg, 6, prior, None, flow)
    vae = vae.double()
    x = torch.randn(7, 6, dtype=torch.float64)
    with torch.no_grad():
        terms = batch_diagnostics(vae, x, generator())
        torch.manual_seed(SEED)
        elbo = objectives.elbo(vae, x, 1, KLMode.analytic)
    assert len(terms.kl) == (2 if model == "two layers" else 1)
    assert all(kl.shape == (7,) for kl in terms.kl) and terms.reconstruction.shape == (7,)
    assert (terms.reconstruction - sum(terms.kl)).tolist() == pytest.approx(elbo.tolist(), abs=1e-10)
    assert (terms.mutual_information is None) == (model == "planar flow")  # a flow's q(z|x') needs its inverse
    if model == "one layer":  # the top layer's KL is the closed form
        mean, log_var = vae.encoders[0](x)
        assert terms.kl[0].tolist() == pytest.approx(kl_to_standard_normal(mean, log_var).tolist(), abs=1e-12)


def test_the_diagnostics_leave_the_global_generator_alone():
    """Training draws from the global generator: the diagnostics' draws (two layers, posterior means) do not."""
    vae = two_layer_linear_vae()
    torch.manual_seed(1)
    before = torch.random.get_rng_state()
    with torch.no_grad():
        batch_diagnostics(vae, torch.zeros(4, 6), generator())
    assert torch.equal(torch.random.get_rng_state(), before)


# ---------------------------------------------------------------- free bits


def test_free_bits_floor_each_dimensions_batch_mean_kl():
    """sum_j max(lambda, KL_j) of the batch means; below the floor a dimension's KL has no
    gradient, above it the plain gradient 1/batch per example."""
    kl = torch.tensor([[0.1, 2.0, 0.6], [0.3, 1.0, 0.2]], dtype=torch.float64, requires_grad=True)
    value = free_bits_kl(kl, 0.5)  # batch means 0.2, 1.5, 0.4
    assert float(value.detach()) == pytest.approx(0.5 + 1.5 + 0.5, abs=1e-12)
    value.backward()
    assert kl.grad.tolist() == [[0.0, 0.5, 0.0], [0.0, 0.5, 0.0]]


def test_free_bits_loss_has_the_plain_gradient_above_the_floor_and_reports_the_true_elbo():
    """The linear-Gaussian VAE near its posterior, lambda between its dimensions' KLs: the loss's
    gradient is that of -E[log p(x|z)] + the KLs of the dimensions above lambda (same draws), and
    the bound is the ELBO with weight 1; float64, to 1e-10."""
    torch.manual_seed(0)
    vae = linear_gaussian_vae().double()
    set_posterior(vae, log_var_shift=0.3)
    x = torch.randn(20, 6, dtype=torch.float64)
    with torch.no_grad():
        per_dimension = kl_to_standard_normal_per_dimension(*vae.encoders[0](x)).mean(0)
    floor = float(per_dimension.median())
    above = per_dimension > floor
    assert 0 < int(above.sum()) < 3

    def gradients(loss: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.autograd.grad(loss, list(vae.encoders.parameters()) + list(vae.decoder.parameters())))

    torch.manual_seed(SEED)
    loss, bound, terms = free_bits_loss(vae, x, 1, floor)
    assert torch.allclose(terms[0] - terms[1], bound, atol=1e-10, rtol=0)  # reconstruction - true KL
    torch.manual_seed(SEED)
    q = vae.encoders[0].distribution(vae.encode(x))
    z, _ = q.rsample(1)
    log_likelihood = vae.decoder.log_prob(x, z)
    plain = -log_likelihood.mean() + kl_to_standard_normal_per_dimension(q.mean, q.log_var).mean(0)[above].sum()
    for got, expected in zip(gradients(loss), gradients(plain)):
        assert torch.allclose(got, expected, atol=1e-10, rtol=0)
    torch.manual_seed(SEED)
    assert bound.tolist() == pytest.approx(objectives.elbo(vae, x, 1, KLMode.analytic).tolist(), abs=1e-10)
    cfg = ModelConfig(decoder="gaussian", latent_dim=3, hidden=[], sigma=0.5, free_bits=floor)
    torch.manual_seed(SEED)
    loss_via_config, _ = objective_for(cfg).training_loss(vae, x)
    assert float(loss_via_config.detach()) == pytest.approx(float(loss.detach()), abs=1e-12)


def test_free_bits_refuse_what_has_no_per_dimension_kl():
    with pytest.raises(ConfigError, match="model.free_bits"):
        ModelConfig(free_bits=0.5, objective="iwae", k=5)
    with pytest.raises(ConfigError, match="model.free_bits"):
        ModelConfig(free_bits=0.5, kl=KLMode.mc)
    with pytest.raises(ConfigError, match="model.free_bits"):
        ModelConfig(free_bits=-1.0)
    model = {"latent_dim": 2, "hidden": [4], "free_bits": 0.5}
    with pytest.raises(ConfigError, match="prior=mog"):
        VAEModule(model, {}, {}, 6, (1, 1, 6), prior={"name": "mog", "components": 3})
    with pytest.raises(ConfigError, match="posterior=planar"):
        VAEModule(model, {}, {}, 6, (1, 1, 6), posterior={"name": "planar"})


# ---------------------------------------------------------------- cyclical KL


def test_cyclical_kl_weight_follows_fu_et_al():
    """T = 100 steps, M = 4 cycles of 25, R = 0.5: rising over steps 0..12.5 of each cycle, then beta."""
    weight = [cyclical_kl_weight(2.0, 4, 0.5, step, 100) for step in (0, 6, 12, 13, 24, 25, 37, 99)]
    assert weight == pytest.approx([0.0, 2 * 6 / 12.5, 2 * 12 / 12.5, 2.0, 2.0, 0.0, 2 * 12 / 12.5, 2.0])
    # T/M = 10/3 is no integer: tau = (t mod 4) / (10/3), R = 1
    assert [cyclical_kl_weight(1.0, 3, 1.0, step, 10) for step in (3, 4, 9)] == pytest.approx([0.9, 0.0, 0.3])
    with pytest.raises(ConfigError, match="kl_warmup_epochs"):
        OptimConfig(kl_cycles=2, kl_warmup_epochs=1.0)
    with pytest.raises(ConfigError, match="optim.kl_cycle_ratio"):
        OptimConfig(kl_cycles=2, kl_cycle_ratio=0.0)


# ---------------------------------------------------------------- in a fit


FIT = [
    *TINY_FIT, "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=1",
    "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.log_every_n_steps=1",
]


@pytest.mark.slow
@needs_mnist
def test_a_fit_logs_the_diagnostics_beside_unchanged_numbers(tmp_path, capsys):
    """eval.collapse_diagnostics adds its columns to metrics.csv and its values to the epoch line;
    every other cell is the same as without it. A fit with free bits and 2 KL cycles logs the
    cyclical weight of each of its 6 steps."""
    assert main([*FIT, f"run.dir={tmp_path / 'off'}"]) == 0
    assert main([*FIT, f"run.dir={tmp_path / 'on'}", "eval.collapse_diagnostics=true", "eval.diagnostic_batches=1"]) == 0
    off, on = metrics_rows(tmp_path / "off"), metrics_rows(tmp_path / "on")
    new = {"val/recon", "val/kl_z1", "val/mi_z1", "val/active_units_z1"}
    assert set(on[0]) == set(off[0]) | new
    assert [{key: row[key] for key in off[0]} for row in on] == off
    validated = [row for row in on if row["val/elbo"]]
    assert len(validated) == 2 and all(row[key] for row in validated for key in new)
    assert all(0 <= float(row["val/active_units_z1"]) <= 20 and float(row["val/kl_z1"]) > 0 for row in validated)
    assert "KL z1" in capsys.readouterr().out

    assert main([*FIT, f"run.dir={tmp_path / 'cycles'}", "model.free_bits=0.5", "optim.kl_cycles=2"]) == 0
    weights = [float(row["train/kl_weight"]) for row in metrics_rows(tmp_path / "cycles") if row.get("train/kl_weight")]
    assert weights == pytest.approx([cyclical_kl_weight(1.0, 2, 0.5, step, 6) for step in range(6)])
    assert weights == pytest.approx([0.0, 2 / 3, 1.0, 0.0, 2 / 3, 1.0])
