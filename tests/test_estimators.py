"""Gradient estimators (model.estimator) and the KL weight (model.beta), in float64 on
linear-Gaussian VAEs small enough to average thousands of gradient draws in a second.

Monte Carlo tolerances: a mean gradient is compared from G = 20 groups of draws; a
difference passes when it is within 5 standard errors of the group means (a t-statistic
with 19 degrees of freedom: a correct estimator fails one coordinate of ~50 with probability
below 1e-3; the seeds are fixed, so the outcome is too).
"""

import dataclasses

import pytest
import torch
from tests.helpers import (
    DATA_DIM,
    closed_form_elbo,
    linear_gaussian_vae,
    sample_x,
    set_posterior,
    two_layer_linear_vae,
)

from vaelab.config.schema import Estimator, KLMode, ModelConfig, Objective
from vaelab.errors import ConfigError
from vaelab.models.optim import kl_weight
from vaelab.models.vae import VAE
from vaelab.probability.densities import kl_to_standard_normal

pytestmark = pytest.mark.usefixtures("float64", "one_thread")  # float64: conftest.py


@pytest.fixture
def one_thread():
    """These tensors are tiny: one thread runs them several times faster than a shared pool."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

GROUPS, DRAWS_PER_GROUP, MAX_T = 20, 500, 5.0


def configure(vae: VAE, estimator: str, objective: str = "iwae", k: int = 5, kl: str = "mc") -> VAE:
    vae.cfg = dataclasses.replace(
        vae.cfg, estimator=Estimator(estimator), objective=Objective(objective), k=k, kl=KLMode(kl)
    )
    return vae


def gradient_groups(vae: VAE, x: torch.Tensor, weight: float, seed: int) -> torch.Tensor:
    """[GROUPS, parameters]: each row the gradient of the loss on the minibatch x averaged over
    DRAWS_PER_GROUP draws (x repeated: every copy gets its own samples), parameters concatenated."""
    torch.manual_seed(seed)
    copies = x.repeat(DRAWS_PER_GROUP, 1)
    rows = []
    for _ in range(GROUPS):
        vae.zero_grad()
        loss, _ = vae.training_loss(copies, torch.tensor(weight))
        loss.backward()
        rows.append(torch.cat([p.grad.flatten() for p in vae.parameters()]))
    return torch.stack(rows)


def t_statistics(groups: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """(mean - expected) / standard error, per coordinate; 0 where every group agrees exactly."""
    error = groups.std(0) / GROUPS**0.5
    return torch.where(error > 0, (groups.mean(0) - expected) / error, torch.zeros_like(error))


def encoder_mask(vae: VAE) -> torch.Tensor:
    """Which coordinates of the concatenated gradient belong to q's parameters."""
    return torch.cat([
        torch.full((p.numel(),), name.startswith("encoders."), dtype=torch.bool) for name, p in vae.named_parameters()
    ])


# ---------------------------------------------------------------- unbiasedness


@pytest.mark.parametrize("weight", [1.0, 0.3])
@pytest.mark.parametrize("estimator", ["reparam", "stl"])
def test_elbo_gradient_is_unbiased_against_the_closed_form(estimator, weight):
    """The KL-weighted ELBO of a linear-Gaussian VAE is a closed form; the mean over draws of
    ``reparam`` and ``stl`` (k=3, Monte Carlo KL) must equal its exact gradient, for every
    encoder and decoder parameter."""
    vae = configure(linear_gaussian_vae(), estimator, objective="elbo", k=3)
    set_posterior(vae, log_var_shift=0.7, mean_shift=0.3)  # q away from the posterior: a gradient to follow
    x = torch.randn(3, DATA_DIM) * 2
    vae.zero_grad()
    (-closed_form_elbo(vae, x, weight).mean()).backward()
    exact = torch.cat([p.grad.flatten() for p in vae.parameters()])
    t = t_statistics(gradient_groups(vae, x, weight, seed=1), exact)
    assert t.abs().max() < MAX_T, t


def linear_two_layer_vae() -> VAE:
    """The two-layer linear model with q(z_2|z_1) depending on z_1, so the gradient reaches
    q(z_1|x) also through the input of q(z_2|z_1)."""
    vae = two_layer_linear_vae()
    with torch.no_grad():
        vae.encoders[0].mean.weight.copy_(0.3 * torch.randn_like(vae.encoders[0].mean.weight))
        vae.encoders[1].mean.weight.copy_(0.5 * torch.randn_like(vae.encoders[1].mean.weight))
        vae.encoders[1].log_var.weight.copy_(0.2 * torch.randn_like(vae.encoders[1].log_var.weight))
    return vae


def shifted_one_layer_vae() -> VAE:
    vae = linear_gaussian_vae()
    set_posterior(vae, log_var_shift=0.7, mean_shift=0.3)
    return vae


MODELS = {"one layer": shifted_one_layer_vae, "two layers": linear_two_layer_vae}


@pytest.mark.parametrize("weight", [1.0, 0.3])
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize(
    "estimator, objective, k", [("stl", "elbo", 3), ("dreg", "iwae", 5)], ids=["stl-elbo", "dreg-iwae5"]
)
def test_estimator_has_the_mean_of_reparam(estimator, objective, k, model, weight):
    """Same bound, same random numbers: the mean gradient of ``estimator`` minus that of
    ``reparam`` is 0 for encoder and decoder parameters, one stochastic layer or two."""
    vae = MODELS[model]()
    x = torch.randn(3, DATA_DIM) * 2 if model == "one layer" else sample_x(vae, 3)
    reference = gradient_groups(configure(vae, "reparam", objective, k), x, weight, seed=1)
    candidate = gradient_groups(configure(vae, estimator, objective, k), x, weight, seed=1)
    t = t_statistics(candidate - reference, torch.zeros(reference.shape[1]))
    assert t.abs().max() < MAX_T, t
    # ... and the comparison is sharp: the estimators do differ draw by draw, in the encoder.
    assert (candidate - reference)[:, encoder_mask(vae)].abs().max() > 1e-3


@pytest.mark.parametrize("model", list(MODELS))
def test_stl_on_the_iwae_bound_is_biased(model):
    """Tucker et al. (2019) section 3: on the IWAE bound (k > 1), stl's encoder gradient has
    another mean than reparam's; the test above would catch it (its t far beyond 5)."""
    vae = MODELS[model]()
    x = torch.randn(3, DATA_DIM) * 2 if model == "one layer" else sample_x(vae, 3)
    reference = gradient_groups(configure(vae, "reparam", "iwae", 5), x, 1.0, seed=1)
    candidate = gradient_groups(configure(vae, "stl", "iwae", 5), x, 1.0, seed=1)
    t = t_statistics(candidate - reference, torch.zeros(reference.shape[1]))
    assert t[encoder_mask(vae)].abs().max() > 4 * MAX_T, t
    assert t[~encoder_mask(vae)].abs().max() < MAX_T, t  # the decoder's gradient is the usual one


# ---------------------------------------------------------------- zero variance at the posterior


@pytest.mark.parametrize(
    "estimator, objective, k", [("stl", "elbo", 1), ("stl", "elbo", 4), ("dreg", "iwae", 5)]
)
def test_encoder_gradient_vanishes_when_q_is_the_posterior(estimator, objective, k):
    """With q(z|x) = p(z|x) every log-weight is log p(x) whatever z: the path gradient is 0,
    draw by draw, while reparam's score term is not (Roeder et al. 2017, section 3)."""
    vae = linear_gaussian_vae()
    set_posterior(vae)
    x = torch.randn(3, DATA_DIM) * 2
    encoder = encoder_mask(vae)
    stopped = gradient_groups(configure(vae, estimator, objective, k), x, 1.0, seed=2)[:, encoder]
    pathwise = gradient_groups(configure(vae, "reparam", objective, k), x, 1.0, seed=2)[:, encoder]
    assert stopped.abs().max() < 1e-9, stopped.abs().max()
    assert pathwise.std(0).max() > 0.1, pathwise.std(0)


# ---------------------------------------------------------------- signal-to-noise ratio


def encoder_output_gradients(vae: VAE, x: torch.Tensor, draws: int) -> torch.Tensor:
    """[draws, 2 * latent]: the loss gradient w.r.t. q(z|x)'s mean and log-variance, one row per
    draw for the single example x. For a linear encoder, each parameter's gradient is one of
    these times an input coordinate, so these carry every encoder parameter's SNR."""
    outputs = []

    def keep(module, inputs, output):
        for tensor in output:
            tensor.retain_grad()
        outputs.extend(output)

    handle = vae.encoders[0].register_forward_hook(keep)
    loss, _ = vae.training_loss(x.expand(draws, -1), torch.tensor(1.0))
    handle.remove()
    loss.backward()
    return torch.cat([tensor.grad for tensor in outputs], dim=-1) * draws


def test_encoder_snr_falls_with_k_for_reparam_and_not_for_dreg():
    """Rainforth et al. (2018): with reparam on the IWAE bound the encoder gradient's SNR,
    |E g| / std g, shrinks like 1/sqrt(k); Tucker et al. (2019): with dreg it does not.
    4000 draws give each SNR to about 0.02; the gaps checked are ten times that."""
    vae = linear_gaussian_vae()
    set_posterior(vae, log_var_shift=0.5, mean_shift=0.3)
    x = torch.randn(1, DATA_DIM) * 2
    snr = {}
    for estimator in ("reparam", "dreg"):
        for k in (1, 5, 50):
            g = encoder_output_gradients(configure(vae, estimator, "iwae", k), x, draws=4000)
            snr[estimator, k] = (g.mean(0).abs() / g.std(0)).mean().item()
    assert snr["reparam", 1] > 1.5 * snr["reparam", 5] > 1.5 * snr["reparam", 50], snr
    assert snr["dreg", 50] >= snr["dreg", 5] >= 0.9 * snr["dreg", 1], snr
    assert snr["dreg", 50] > 10 * snr["reparam", 50], snr


# ---------------------------------------------------------------- KL weight


@pytest.mark.parametrize(
    "estimator, objective, k, kl",
    [
        ("reparam", "elbo", 2, "analytic"),
        ("reparam", "elbo", 2, "mc"),
        ("stl", "elbo", 2, "mc"),
        ("reparam", "iwae", 5, "mc"),
        ("stl", "iwae", 5, "mc"),
        ("dreg", "iwae", 5, "mc"),
    ],
)
@pytest.mark.parametrize("model", list(MODELS))
def test_training_loss_returns_the_true_bound_whatever_the_weight(estimator, objective, k, kl, model):
    """The bound training_loss returns is the unweighted one (vae.elbo / vae.iwae on the same
    samples), detached, for any weight; the loss is minus the weighted bound's batch mean."""
    vae = configure(MODELS[model](), estimator, objective, k, kl)
    x = sample_x(vae, 4) if model == "two layers" else torch.randn(4, DATA_DIM)
    torch.manual_seed(7)
    unweighted = vae.iwae(x, k) if objective == "iwae" else vae.elbo(x, k, KLMode(kl))
    for weight in (0.0, 0.3, 1.0):
        torch.manual_seed(7)
        loss, bound = vae.training_loss(x, torch.tensor(weight))
        assert not bound.requires_grad and loss.requires_grad
        torch.testing.assert_close(bound, unweighted)
        if weight == 1.0:
            torch.testing.assert_close(loss, -unweighted.mean())
        else:
            assert loss < -unweighted.mean()  # a smaller KL penalty: a larger weighted bound


def test_weight_zero_leaves_only_the_reconstruction_term():
    """With weight 0 the analytic-KL ELBO loss is minus the mean of E_q log p(x|z): the KL's
    closed form drops out exactly."""
    vae = configure(linear_gaussian_vae(), "reparam", "elbo", 3, "analytic")
    x = torch.randn(4, DATA_DIM)
    torch.manual_seed(3)
    loss, bound = vae.training_loss(x, torch.tensor(0.0))
    mean, log_var = vae.encoders[0](x)
    torch.testing.assert_close(loss, -(bound + kl_to_standard_normal(mean, log_var)).mean())


def test_kl_weight_schedule_rises_linearly_to_beta():
    assert kl_weight(0.5, 0.0, 0.0) == 0.5
    assert [kl_weight(2.0, 4.0, e) for e in (0.0, 1.0, 2.0, 4.0, 9.0)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert kl_weight(1.0, 2.0, 0.5) == pytest.approx(0.25)


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    "keys, message",
    [
        (dict(estimator=Estimator.stl), "model.estimator=stl needs model.kl=mc"),
        (dict(estimator=Estimator.dreg, kl=KLMode.mc), "model.estimator=dreg is defined for model.objective=iwae"),
        (dict(beta=-0.1), "model.beta=-0.1 is invalid"),
    ],
)
def test_undefined_combinations_are_config_errors(keys, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**keys)


def test_stl_on_iwae_is_flagged_biased_only_for_k_above_one():
    assert ModelConfig(estimator=Estimator.stl, objective=Objective.iwae, k=5).biased_estimator
    assert not ModelConfig(estimator=Estimator.stl, objective=Objective.iwae, k=1).biased_estimator
    assert not ModelConfig(estimator=Estimator.dreg, objective=Objective.iwae, k=5).biased_estimator
