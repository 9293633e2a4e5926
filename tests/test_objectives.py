"""The training objectives (vaelab/objectives/): the bounds of the Renyi family and of Rainforth et
al. 2018 against their formulas and limits, the objectives at their limit settings against the
bounds they generalise, PIWAE's split gradient against autograd of each of its bounds, and an
exact check on the linear-Gaussian VAE, whose every bound is log p(x) when q is the posterior.
All in float64."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.distributions as D

from tests.helpers import (
    SIGMA, closed_form_log_likelihood, exact_fit_words, linear_gaussian_vae, metrics_rows, set_posterior, write_mnist,
)
from vaelab.fit import main
from vaelab.config.schema import Estimator, KLMode
from vaelab.objectives import OBJECTIVES, objective_for
from vaelab.objectives.ciwae import ciwae_bound
from vaelab.objectives.miwae import miwae_bound
from vaelab.probability.bounds import in_groups, iwae_bound, renyi_bound

pytestmark = pytest.mark.usefixtures("float64")  # conftest.py


def log_weights(k: int = 6, batch: int = 4) -> torch.Tensor:
    """Log-weights spread over several nats, as a poor q gives."""
    return 3.0 * torch.randn(k, batch) - 100.0


def log_mean_exp(v: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.exp(v).mean(0))  # direct: the values here are small enough


def test_the_renyi_bound_is_its_formula_the_iwae_bound_at_0_and_the_elbo_towards_1():
    log_w = log_weights()
    shifted = log_w + 100.0  # direct exponentials stay in range; every bound moves by the same 100
    for alpha in (0.0, 0.3, 0.9):
        expected = log_mean_exp((1 - alpha) * shifted) / (1 - alpha) - 100.0
        torch.testing.assert_close(renyi_bound(log_w, alpha), expected, rtol=0, atol=1e-10)
    assert torch.equal(renyi_bound(log_w, 0.0), iwae_bound(log_w))
    torch.testing.assert_close(renyi_bound(log_w, 1 - 1e-8), log_w.mean(0), rtol=0, atol=1e-6)
    # Non-increasing in alpha (a power mean of order 1 - alpha), strictly for unequal weights.
    values = torch.stack([renyi_bound(log_w, alpha) for alpha in (0.0, 0.3, 0.6, 0.9)] + [log_w.mean(0)])
    assert (values[:-1] > values[1:]).all()


def test_miwae_averages_the_iwae_bounds_of_consecutive_groups():
    log_w = log_weights(k=12)
    by_hand = torch.stack([iwae_bound(log_w[g * 4 : (g + 1) * 4]) for g in range(3)]).mean(0)
    torch.testing.assert_close(miwae_bound(log_w, 3), by_hand, rtol=0, atol=1e-12)
    assert in_groups(log_w, 3).shape == (4, 3, 4)
    torch.testing.assert_close(miwae_bound(log_w, 1), iwae_bound(log_w), rtol=0, atol=1e-12)
    torch.testing.assert_close(miwae_bound(log_w, 12), log_w.mean(0), rtol=0, atol=1e-12)  # K = 1: the ELBO
    assert (miwae_bound(log_w, 3) < iwae_bound(log_w)).all() and (miwae_bound(log_w, 3) > log_w.mean(0)).all()


def test_ciwae_mixes_the_elbo_and_the_iwae_bound_of_the_same_samples():
    log_w = log_weights()
    torch.testing.assert_close(ciwae_bound(log_w, 1.0), log_w.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(ciwae_bound(log_w, 0.0), iwae_bound(log_w), rtol=0, atol=1e-12)
    torch.testing.assert_close(ciwae_bound(log_w, 0.25), 0.25 * log_w.mean(0) + 0.75 * iwae_bound(log_w), rtol=0, atol=1e-12)


def configured(vae, objective: str, **settings):
    vae.cfg = dataclasses.replace(vae.cfg, objective=objective, kl=KLMode.mc, **settings)
    return objective_for(vae.cfg)


def loss_and_gradients(vae, objective, x: torch.Tensor, seed: int, weight: float | None = None):
    vae.zero_grad()
    torch.manual_seed(seed)
    loss, bound = objective.training_loss(vae, x, None if weight is None else torch.tensor(weight))
    loss.backward()
    return loss.detach(), bound, [p.grad.clone() for p in vae.parameters()]


@pytest.mark.parametrize("weight", [None, 0.4])
@pytest.mark.parametrize(
    "objective, settings, limit, limit_settings",
    [
        ("vr", {"alpha": 0.0, "k": 5}, "iwae", {"k": 5}),
        ("miwae", {"m": 1, "k": 5}, "iwae", {"k": 5}),
        ("miwae", {"m": 5, "k": 1}, "elbo", {"k": 5}),
        ("ciwae", {"ciwae_mix": 0.0, "k": 5}, "iwae", {"k": 5}),
        ("ciwae", {"ciwae_mix": 1.0, "k": 5}, "elbo", {"k": 5}),
        ("piwae", {"m": 1, "k": 5}, "iwae", {"k": 5}),
    ],
    ids=["vr-alpha0", "miwae-m1", "miwae-k1", "ciwae-c0", "ciwae-c1", "piwae-m1"],
)
def test_an_objective_at_its_limit_trains_like_the_bound_it_generalises(objective, settings, limit, limit_settings, weight):
    """Same samples (seed), KL weight 1 or 0.4: loss, bound and every gradient agree to 1e-10."""
    vae = linear_gaussian_vae()
    set_posterior(vae, log_var_shift=0.5, mean_shift=0.3)
    x = torch.randn(7, 6)
    got = loss_and_gradients(vae, configured(vae, objective, **settings), x, seed=3, weight=weight)
    expected = loss_and_gradients(vae, configured(vae, limit, **limit_settings), x, seed=3, weight=weight)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-10)
    for a, b in zip(got[2], expected[2]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["elbo", "iwae", "vr", "miwae", "ciwae", "piwae"])
def test_every_bound_is_log_p_x_when_q_is_the_posterior(name):
    """With q(z|x) = p(z|x) every log-weight is log p(x), so every bound, and the bound the
    training loss reports, is the closed-form log p(x) (a bound that mixed up its terms, or
    an exponent, would not be)."""
    vae = linear_gaussian_vae()
    set_posterior(vae)
    x = torch.randn(5, 6)
    objective = configured(vae, name, k=4, m=3, alpha=0.5, ciwae_mix=0.3)
    exact = closed_form_log_likelihood(vae, x)
    torch.testing.assert_close(objective.bound(vae, x), exact, rtol=0, atol=1e-9)
    torch.testing.assert_close(objective.training_loss(vae, x)[1], exact, rtol=0, atol=1e-9)


def independent_log_weights(vae, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log p(x, z) - log q(z|x) for z = mean + std * eps, with torch.distributions: [n, batch]."""
    mean, log_var = vae.encoders[0](x)
    std = torch.exp(0.5 * log_var)
    z = mean + std * eps
    W, b = vae.decoder.likelihood.mean_head.weight, vae.decoder.likelihood.mean_head.bias
    log_p = D.Normal(z @ W.T + b, SIGMA).log_prob(x).sum(-1) + D.Normal(0.0, 1.0).log_prob(z).sum(-1)
    return log_p - D.Normal(mean, std).log_prob(z).sum(-1)


def test_piwae_trains_p_on_the_iwae_bound_of_all_samples_and_q_on_miwae():
    """PIWAE(M=3, K=4): the decoder's gradient is that of L_12, the encoder's that of MIWAE(3, 4),
    each from autograd of its bound written here; and the two differ (so the test would catch a
    PIWAE that gave either network the other's gradient)."""
    vae = linear_gaussian_vae()
    set_posterior(vae, log_var_shift=0.7, mean_shift=0.4)
    x = torch.randn(6, 6)
    objective = configured(vae, "piwae", m=3, k=4)
    torch.manual_seed(5)
    sample = vae.sample_latents(x, 12)
    mean, log_var = vae.encoders[0](x)
    eps = ((sample.zs[0] - mean) / torch.exp(0.5 * log_var)).detach()
    _, _, gradients = loss_and_gradients(vae, objective, x, seed=5)
    got = dict(zip([name for name, _ in vae.named_parameters()], gradients))

    decoder = list(vae.decoder.parameters())
    encoder = list(vae.encoders.parameters())
    log_w = independent_log_weights(vae, x, eps)
    iwae_all = torch.logsumexp(log_w, 0) - math.log(12)
    miwae = torch.stack([torch.logsumexp(log_w[4 * g : 4 * g + 4], 0) - math.log(4) for g in range(3)]).mean(0)
    for parameters, bound, other in ((decoder, iwae_all, miwae), (encoder, miwae, iwae_all)):
        expected = torch.autograd.grad(-bound.mean(), parameters, retain_graph=True)
        wrong = torch.autograd.grad(-other.mean(), parameters, retain_graph=True)
        names = [name for name, p in vae.named_parameters() if any(p is q for q in parameters)]
        for name, e, w in zip(names, expected, wrong):
            torch.testing.assert_close(got[name], e, rtol=0, atol=1e-10)
            assert (e - w).abs().max() > 1e-4, name


@pytest.mark.parametrize("name", ["elbo", "iwae", "vr", "miwae", "ciwae", "piwae"])
def test_every_objective_gives_the_elbos_terms_of_its_own_samples(name):
    """reconstruction = mean log p(x|z) and KL = reconstruction - mean log w, from the samples the
    loss used (seeded again: the same draws); for the ELBO (k=1, closed-form KL) their difference
    is the bound itself, and the KL is the closed-form one."""
    vae = linear_gaussian_vae()
    set_posterior(vae, log_var_shift=0.4, mean_shift=0.2)
    x = torch.randn(5, 6)
    objective = configured(vae, name, k=4, m=3)
    torch.manual_seed(2)
    _, bound, terms = objective.loss_bound_and_terms(vae, x)
    torch.manual_seed(2)
    samples = objective.m * objective.k if name in ("miwae", "piwae") else objective.k
    log_w = vae.log_weights(x, samples)
    torch.manual_seed(2)
    sample = vae.sample_latents(x, samples)
    reconstruction = vae.generative_log_probs(x, sample.zs)[0].mean(0)
    torch.testing.assert_close(terms[0], reconstruction, rtol=0, atol=1e-10)
    torch.testing.assert_close(terms[0] - terms[1], log_w.mean(0), rtol=0, atol=1e-10)
    elbo = objective_for(dataclasses.replace(vae.cfg, objective="elbo", kl=KLMode.analytic, k=1))
    _, bound, terms = elbo.loss_bound_and_terms(vae, x)
    torch.testing.assert_close(terms[0] - terms[1], bound, rtol=0, atol=1e-10)
    mean, log_var = vae.encoders[0](x)
    closed_form_kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(-1)
    torch.testing.assert_close(terms[1], closed_form_kl, rtol=0, atol=1e-10)


def test_the_objectives_are_registered_and_name_their_bounds():
    assert OBJECTIVES.names() == ["ciwae", "elbo", "iwae", "miwae", "piwae", "vr"]
    vae = linear_gaussian_vae()
    names = {name: configured(vae, name, k=5, m=2).bound_name for name in OBJECTIVES.names()}
    assert names == {"ciwae": "ciwae5", "elbo": "elbo", "iwae": "iwae5", "miwae": "miwae2x5", "piwae": "piwae2x5", "vr": "vr5"}
    assert configured(vae, "miwae", k=5, m=2, estimator=Estimator.stl).warning().startswith("model.estimator=stl on the miwae")


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=600, n_test=100)
    return f"data.root={root}"


@pytest.mark.parametrize(
    "words, bound",
    [
        (["model.objective=vr", "model.alpha=0.5"], "vr3"),
        (["model.objective=miwae", "model.m=2", "model.estimator=dreg"], "miwae2x3"),
        (["model.objective=ciwae", "model.ciwae_mix=0.5"], "ciwae3"),
        (["model.objective=piwae", "model.m=2"], "piwae2x3"),
    ],
    ids=["vr", "miwae-dreg", "ciwae", "piwae"],
)
def test_vaelab_fit_trains_each_new_objective_and_logs_its_bound(words, bound, tiny_mnist, tmp_path):
    """20 steps on tiny MNIST with K = 3: the bound is in metrics.csv for training (every step)
    and validation (every epoch), and training raises it by over 20 nats from the first step's
    (a loss of the wrong sign would lower it; random pixels end near -546 nats, their entropy)."""
    run_dir = tmp_path / "run"
    torch.set_default_dtype(torch.float32)  # a fit as users run it; the float64 fixture restores its dtype after
    main([*exact_fit_words(2, 10, 1), tiny_mnist, "model.kl=mc", "model.k=3", *words, f"run.dir={run_dir}"])
    rows = metrics_rows(run_dir)
    train = [float(r[f"train/{bound}"]) for r in rows if r.get(f"train/{bound}")]
    val = [float(r[f"val/{bound}"]) for r in rows if r.get(f"val/{bound}")]
    assert len(train) == 20 and len(val) == 2 and all(math.isfinite(v) for v in train + val)
    for split, rows_of in (("train", [r for r in rows if r.get(f"train/{bound}")]), ("val", [r for r in rows if r.get(f"val/{bound}")])):
        reconstruction = [float(r[f"{split}/reconstruction"]) for r in rows_of]
        kl = [float(r[f"{split}/kl"]) for r in rows_of]
        assert all(k > 0 for k in kl) and all(r < 0 for r in reconstruction), (split, kl, reconstruction)
    assert sum(train[-5:]) / 5 > train[0] + 20, train  # from about -580 at the first step to about -546
    assert min(val) > train[0] + 20, val


TEMPERED_BOUND = '''
from vaelab.objectives.objective import LogWeightBound
from vaelab.probability.bounds import iwae_bound


class TemperedBound(LogWeightBound):
    """T log (1/K) sum_k w_k^(1/T): at T = 1 the IWAE bound, operation for operation."""

    name = "tempered"

    def check(self):
        super().check()
        self.temperature = float(self.args.get("temperature", 1.0))

    def of_log_weights(self, log_weights):
        return iwae_bound(log_weights / self.temperature) * self.temperature
'''


def test_an_objective_of_your_own_from_a_file_trains_as_the_built_in_one_it_equals(tiny_mnist, tmp_path):
    """model.objective=path/file.py:Class with model.objective_args.*, from a folder outside
    vaelab: at temperature 1 it is the IWAE bound, so its run logs the iwae run's numbers, step for
    step, under its own name; mistakes are one line each."""
    (tmp_path / "tempered.py").write_text(TEMPERED_BOUND)
    torch.set_default_dtype(torch.float32)
    common = [*exact_fit_words(1, 6, 1), tiny_mnist, "model.kl=mc", "model.k=3"]
    main([*common, f"model.objective={tmp_path}/tempered.py:TemperedBound", "model.objective_args.temperature=1.0",
          f"run.dir={tmp_path / 'own'}"])
    main([*common, "model.objective=iwae", f"run.dir={tmp_path / 'iwae'}"])
    own = [r["train/tempered3"] for r in metrics_rows(tmp_path / "own") if r.get("train/tempered3")]
    builtin = [r["train/iwae3"] for r in metrics_rows(tmp_path / "iwae") if r.get("train/iwae3")]
    assert len(own) == 6 and own == builtin

    from vaelab.config import load_config
    from vaelab.errors import ConfigError

    for words, message in (
        ([f"model.objective={tmp_path}/missing.py:TemperedBound"], "no file"),
        ([f"model.objective={tmp_path}/tempered.py:LogWeightBound"], "has no name"),
        ([f"model.objective={tmp_path}/tempered.py:iwae_bound"], "has no class iwae_bound"),
        (["model.objective=vaelab.config.schema:ModelConfig"], "is not a vaelab.objectives.TrainingObjective subclass"),
        (["model.objective=iwae", "model.objective_args.temperature=2"], "model.objective_args is for an objective of your own"),
    ):
        with pytest.raises(ConfigError, match=message) as error:
            load_config(["model.kl=mc", *words])
        assert "\n" not in str(error.value)
