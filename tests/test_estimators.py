"""Gradient estimators (model.estimator) and the KL weight (model.beta), in float64 on
linear-Gaussian VAEs small enough to average thousands of gradient draws in a second.

Every gradient check is made per parameter tensor of every part of the model (each stochastic
layer's recognition network q(z_l|.), each generative layer p(z_l|z_{l+1}), the decoder
p(x|z_1): see :func:`parts`), and names the tensors that fail, so an error confined to an
upper layer cannot hide behind agreeing lower ones.

Monte Carlo tolerances: a mean gradient is compared from G = 20 groups of draws; a
difference passes when it is within 5 standard errors of the group means (a t-statistic
with 19 degrees of freedom, two-sided tail 8e-5: a correct estimator fails one coordinate of
the ~100 of the two-layer model with probability below 1e-2; the seeds are fixed, so the
outcome is too). The standard error is floored at 1e-10 (float64 rounding of these sums is
below 1e-13), so a gradient that is the same in every draw but wrong fails, while
rounding-level differences between estimators that agree exactly pass.
"""

import dataclasses
import math

import pytest
import torch
from torch import distributions as D

from tests.helpers import (
    DATA_DIM,
    SIGMA,
    closed_form_elbo,
    closed_form_log_likelihood,
    linear_gaussian_vae,
    sample_x,
    set_posterior,
    two_layer_linear_vae,
)

from vaelab.config.schema import Estimator, KLMode, ModelConfig
from vaelab.errors import ConfigError
from vaelab.models.optim import kl_weight
from vaelab.models.vae import VAE
from vaelab.objectives import objective_for
from vaelab.probability import objectives
from vaelab.probability.densities import kl_to_standard_normal

pytestmark = pytest.mark.usefixtures("float64", "one_thread")  # float64: conftest.py


@pytest.fixture
def one_thread():
    """These tensors are tiny: one thread runs them several times faster than a shared pool."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

GROUPS, DRAWS_PER_GROUP, MAX_T, MIN_STANDARD_ERROR = 20, 500, 5.0, 1e-10


def configure(vae: VAE, estimator: str, objective: str = "iwae", k: int = 5, kl: str = "mc") -> VAE:
    """``objective`` may carry its M, as ``miwae2``: MIWAE(2, k)."""
    m = int(objective[5:]) if objective.startswith("miwae") else 1
    vae.cfg = dataclasses.replace(
        vae.cfg, estimator=Estimator(estimator), objective=objective[:5] if m > 1 else objective, k=k, kl=KLMode(kl), m=m
    )
    return vae


def parts(vae: VAE) -> dict[str, torch.nn.Module]:
    """This module's one reach into the model's internals (update it when they are renamed):
    the model's parts by role, q(z1|x), q(z2|z1), ..., p(z1|z2), ..., p(x|z1). A q or p(z|z)
    part maps its input to (mean, log-variance) and has Linear heads ``mean`` and ``log_var``;
    the decoder has ``mean(z)`` and a Linear ``mean_head``. Together they hold every parameter."""
    layers = len(vae.encoders)
    roles = {"q(z1|x)": vae.encoders[0]}
    roles |= {f"q(z{l + 1}|z{l})": vae.encoders[l] for l in range(1, layers)}
    roles |= {f"p(z{l}|z{l + 1})": vae.generative_layers[l - 1] for l in range(1, layers)}
    roles["p(x|z1)"] = vae.decoder
    assert sum(p.numel() for m in roles.values() for p in m.parameters()) == sum(p.numel() for p in vae.parameters())
    return roles


def tensors(vae: VAE) -> dict[str, torch.Tensor]:
    """Every parameter tensor, named '<role>.<parameter>', e.g. 'q(z2|z1).log_var.weight'."""
    return {f"{role}.{name}": p for role, part in parts(vae).items() for name, p in part.named_parameters()}


def is_encoder(name: str) -> bool:
    return name.startswith("q(")


def gradient_groups(vae: VAE, x: torch.Tensor, weight: float, seed: int, loss=None) -> dict[str, torch.Tensor]:
    """Tensor name -> [GROUPS, numel]: each row the gradient of the loss on the minibatch x
    averaged over DRAWS_PER_GROUP draws (x repeated: every copy gets its own samples). The
    loss is ``vae.training_loss`` unless ``loss(copies, weight)`` is given."""
    torch.manual_seed(seed)
    copies = x.repeat(DRAWS_PER_GROUP, 1)
    named = tensors(vae)
    rows = {name: [] for name in named}
    for _ in range(GROUPS):
        vae.zero_grad()
        value = objective_for(vae.cfg).training_loss(vae, copies, torch.tensor(weight))[0] if loss is None else loss(copies, weight)
        value.backward()
        for name, p in named.items():
            assert p.grad is not None, f"no gradient reaches {name}"
            rows[name].append(p.grad.flatten().clone())
    return {name: torch.stack(row) for name, row in rows.items()}


def t_statistics(groups: dict[str, torch.Tensor], expected: dict[str, torch.Tensor] | None = None,
                 reference: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per tensor, per coordinate: (mean - expected) / standard error, against an exact
    ``expected`` gradient, or against the mean of independent ``reference`` groups (the two
    standard errors combined); 0 by default. The standard error is floored (module docstring)."""
    t = {}
    for name, rows in groups.items():
        variance = rows.var(0) / GROUPS
        if reference is not None:
            target, variance = reference[name].mean(0), variance + reference[name].var(0) / GROUPS
        else:
            target = torch.zeros(rows.shape[1]) if expected is None else expected[name]
        t[name] = (rows.mean(0) - target) / variance.sqrt().clamp(min=MIN_STANDARD_ERROR)
    return t


def assert_every_tensor_agrees(t: dict[str, torch.Tensor]) -> None:
    """|t| < MAX_T in every coordinate of every tensor; the failure lists every tensor that misses."""
    failing = {name: round(float(v.abs().max()), 1) for name, v in t.items() if not v.abs().max() < MAX_T}
    assert not failing, f"|t| >= {MAX_T} in: {failing}"


def differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: a[name] - b[name] for name in a}


def reference_loss(vae: VAE, objective: str, k: int):
    """Minus the KL-weighted bound (ELBO: mean over k; IWAE: log-mean-exp over k) of the
    minibatch, from log-weights computed here with torch.distributions and rsample, not by
    vaelab: log p(x|z1) + weight * (log p(z_L) + sum_l log p(z_l|z_{l+1}) - sum_l log q(z_l|.)).
    Its gradient is the pathwise (reparam) estimator of the bound's gradient, unbiased."""
    roles = parts(vae)
    layers = sum(is_encoder(role) for role in roles)

    def gaussian(part: torch.nn.Module, h: torch.Tensor) -> D.Normal:
        mean, log_var = part(h)
        return D.Normal(mean, torch.exp(0.5 * log_var))

    def loss(x: torch.Tensor, weight: float) -> torch.Tensor:
        q = gaussian(roles["q(z1|x)"], x)
        zs = [q.rsample((k,))]
        log_q = q.log_prob(zs[0]).sum(-1)
        for l in range(1, layers):
            q = gaussian(roles[f"q(z{l + 1}|z{l})"], zs[-1])
            zs.append(q.rsample())
            log_q = log_q + q.log_prob(zs[-1]).sum(-1)
        log_p = D.Normal(0.0, 1.0).log_prob(zs[-1]).sum(-1)
        for l in range(1, layers):
            log_p = log_p + gaussian(roles[f"p(z{l}|z{l + 1})"], zs[l]).log_prob(zs[l - 1]).sum(-1)
        log_likelihood = D.Normal(roles["p(x|z1)"].mean(zs[0]), SIGMA).log_prob(x).sum(-1)
        log_w = log_likelihood + weight * (log_p - log_q)  # [k, batch]
        bound = log_w.mean(0) if objective == "elbo" else torch.logsumexp(log_w, 0) - math.log(k)
        return -bound.mean()

    return loss


# ---------------------------------------------------------------- unbiasedness


@pytest.mark.parametrize("weight", [1.0, 0.3])
@pytest.mark.parametrize("estimator", ["reparam", "stl"])
def test_elbo_gradient_is_unbiased_against_the_closed_form(estimator, weight):
    """The KL-weighted ELBO of a linear-Gaussian VAE is a closed form; the mean over draws of
    ``reparam`` and ``stl`` (k=3, Monte Carlo KL) must equal its exact gradient, for every
    encoder and decoder parameter tensor."""
    vae = configure(linear_gaussian_vae(), estimator, objective="elbo", k=3)
    set_posterior(vae, log_var_shift=0.7, mean_shift=0.3)  # q away from the posterior: a gradient to follow
    x = torch.randn(3, DATA_DIM) * 2
    vae.zero_grad()
    (-closed_form_elbo(vae, x, weight).mean()).backward()
    exact = {name: p.grad.flatten().clone() for name, p in tensors(vae).items()}
    assert_every_tensor_agrees(t_statistics(gradient_groups(vae, x, weight, seed=1), exact))


def linear_two_layer_vae() -> VAE:
    """The two-layer linear model with q(z_2|z_1) depending on z_1, so the gradient reaches
    q(z_1|x) also through the input of q(z_2|z_1)."""
    vae = two_layer_linear_vae()
    roles = parts(vae)
    with torch.no_grad():
        for head, scale in ((roles["q(z1|x)"].mean, 0.3), (roles["q(z2|z1)"].mean, 0.5), (roles["q(z2|z1)"].log_var, 0.2)):
            head.weight.copy_(scale * torch.randn_like(head.weight))
    return vae


def shifted_one_layer_vae() -> VAE:
    vae = linear_gaussian_vae()
    set_posterior(vae, log_var_shift=0.7, mean_shift=0.3)
    return vae


MODELS = {"one layer": shifted_one_layer_vae, "two layers": linear_two_layer_vae}


@pytest.mark.parametrize("weight", [1.0, 0.3])
@pytest.mark.parametrize(
    "estimator, objective, k",
    [("reparam", "elbo", 3), ("stl", "elbo", 3), ("reparam", "iwae", 5), ("dreg", "iwae", 5)],
    ids=["reparam-elbo", "stl-elbo", "reparam-iwae5", "dreg-iwae5"],
)
def test_two_layer_gradient_is_unbiased_against_an_independent_reference(estimator, objective, k, weight):
    """Two stochastic layers, where no closed form is at hand: the mean gradient of each
    estimator equals that of :func:`reference_loss` (the same KL-weighted bound, its
    log-weights written here with torch.distributions, its own samples) for every tensor of
    q(z1|x), q(z2|z1), p(z1|z2) and the decoder (two-sample t, module docstring). Comparing
    estimators only with vaelab's reparam would pass a mistake they share, e.g. q(z2|z1) fed
    a detached z1, so that no gradient reaches q(z1|x) through the layer above."""
    vae = linear_two_layer_vae()
    x = sample_x(vae, 3)
    reference = gradient_groups(vae, x, weight, seed=2, loss=reference_loss(vae, objective, k))
    candidate = gradient_groups(configure(vae, estimator, objective, k), x, weight, seed=1)
    assert_every_tensor_agrees(t_statistics(candidate, reference=reference))


@pytest.mark.parametrize("weight", [1.0, 0.3])
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize(
    "estimator, objective, k", [("stl", "elbo", 3), ("dreg", "iwae", 5), ("dreg", "miwae2", 3)],
    ids=["stl-elbo", "dreg-iwae5", "dreg-miwae2x3"],
)
def test_estimator_has_the_mean_of_reparam(estimator, objective, k, model, weight):
    """Same bound, same random numbers: the mean gradient of ``estimator`` minus that of
    ``reparam`` is 0 for every parameter tensor, one stochastic layer or two."""
    vae = MODELS[model]()
    x = torch.randn(3, DATA_DIM) * 2 if model == "one layer" else sample_x(vae, 3)
    reference = gradient_groups(configure(vae, "reparam", objective, k), x, weight, seed=1)
    candidate = gradient_groups(configure(vae, estimator, objective, k), x, weight, seed=1)
    difference = differences(candidate, reference)
    assert_every_tensor_agrees(t_statistics(difference))
    # ... and the comparison is sharp: the estimators do differ draw by draw, in every tensor
    # of every recognition layer (an estimator that stops q's parameters in one layer only
    # would leave another layer's equal to reparam's).
    same = [name for name, d in difference.items() if is_encoder(name) and not d.abs().max() > 1e-3]
    assert not same, f"equal to reparam's draw by draw: {same}"


@pytest.mark.parametrize("model", list(MODELS))
def test_stl_on_the_iwae_bound_is_biased(model):
    """Tucker et al. (2019) section 3: on the IWAE bound (k > 1), stl's encoder gradient has
    another mean than reparam's, in q(z1|x) and, with two layers, in q(z2|z1) too; the tests
    above would catch it (t far beyond 5). The other parts' gradients are the usual ones."""
    vae = MODELS[model]()
    x = torch.randn(3, DATA_DIM) * 2 if model == "one layer" else sample_x(vae, 3)
    reference = gradient_groups(configure(vae, "reparam", "iwae", 5), x, 1.0, seed=1)
    candidate = gradient_groups(configure(vae, "stl", "iwae", 5), x, 1.0, seed=1)
    t = t_statistics(differences(candidate, reference))
    for role in (r for r in parts(vae) if is_encoder(r)):
        assert max(v.abs().max() for name, v in t.items() if name.startswith(f"{role}.")) > 4 * MAX_T, (role, t)
    assert_every_tensor_agrees({name: v for name, v in t.items() if not is_encoder(name)})


# ---------------------------------------------------------------- zero variance at the posterior


def two_layer_vae_at_its_posterior() -> VAE:
    """The two-layer linear model with q(z1|x) q(z2|z1) = p(z1|x) p(z2|z1) = p(z1, z2|x)
    exactly. A's rows are orthogonal and its columns disjoint, and W's columns orthogonal, so
    p(z1) = N(a, A A^T + S1), p(z1|x) and p(z2|z1) all have diagonal covariances:
    Cov(z1|x) = C1 = (Cov(z1)^-1 + W^T W / s^2)^-1, E[z1|x] = C1 (Cov(z1)^-1 a + W^T (x - b) / s^2);
    Cov(z2|z1) = C2 = (I + A^T S1^-1 A)^-1, E[z2|z1] = C2 A^T S1^-1 (z1 - a)."""
    vae = two_layer_linear_vae()
    roles = parts(vae)
    prior, decoder = roles["p(z1|z2)"], roles["p(x|z1)"]
    A, a = torch.tensor([[1.0, 0.0], [0.0, 0.7], [0.0, 0.0]]), torch.tensor([0.3, -0.2, 0.5])
    q, _ = torch.linalg.qr(torch.randn(DATA_DIM, 3))
    W, b = q * torch.tensor([2.0, 1.0, 0.5]), torch.randn(DATA_DIM)
    s1 = torch.exp(prior.log_var.bias.detach())  # p(z1|z2)'s fixed variances
    cov_z1 = (A**2).sum(1) + s1
    c1 = 1 / (1 / cov_z1 + (W**2).sum(0) / SIGMA**2)
    gain1 = c1[:, None] * W.T / SIGMA**2
    c2 = 1 / (1 + (A**2 / s1[:, None]).sum(0))
    gain2 = c2[:, None] * A.T / s1
    settings = [
        (decoder.likelihood.mean_head, W, b), (prior.mean, A, a),
        (roles["q(z1|x)"].mean, gain1, c1 * a / cov_z1 - gain1 @ b), (roles["q(z1|x)"].log_var, 0.0, torch.log(c1)),
        (roles["q(z2|z1)"].mean, gain2, -gain2 @ a), (roles["q(z2|z1)"].log_var, 0.0, torch.log(c2)),
    ]  # fmt: skip
    with torch.no_grad():
        for head, weight, bias in settings:
            head.weight.copy_(torch.as_tensor(weight).expand_as(head.weight))
            head.bias.copy_(bias)
    cov_x = W @ torch.diag(cov_z1) @ W.T + SIGMA**2 * torch.eye(DATA_DIM)
    vae.exact_log_likelihood = lambda x: D.MultivariateNormal(W @ a + b, cov_x).log_prob(x)
    return vae


def one_layer_vae_at_its_posterior() -> VAE:
    vae = linear_gaussian_vae()
    set_posterior(vae)
    vae.exact_log_likelihood = lambda x: closed_form_log_likelihood(vae, x)
    return vae


@pytest.mark.parametrize("model", ["one layer", "two layers"])
@pytest.mark.parametrize(
    "estimator, objective, k", [("stl", "elbo", 1), ("stl", "elbo", 4), ("dreg", "iwae", 5)]
)
def test_encoder_gradient_vanishes_when_q_is_the_posterior(estimator, objective, k, model):
    """With q = the exact posterior every log-weight is log p(x) whatever z (checked): the
    path gradient is 0, draw by draw, in every tensor of every recognition layer, while
    reparam's score term is not, in any of them (Roeder et al. 2017, section 3). A layer whose
    log q keeps its parameters' gradient would show that score term: |g| > 1e-3 against the
    1e-9 allowed for rounding."""
    vae = one_layer_vae_at_its_posterior() if model == "one layer" else two_layer_vae_at_its_posterior()
    x = torch.randn(3, DATA_DIM) * 2
    with torch.no_grad():
        torch.testing.assert_close(vae.log_weights(x, 7), vae.exact_log_likelihood(x).expand(7, -1))
    stopped = gradient_groups(configure(vae, estimator, objective, k), x, 1.0, seed=2)
    pathwise = gradient_groups(configure(vae, "reparam", objective, k), x, 1.0, seed=2)
    moving = {name: float(g.abs().max()) for name, g in stopped.items() if is_encoder(name) and not g.abs().max() < 1e-9}
    assert not moving, moving
    still = [name for name, g in pathwise.items() if is_encoder(name) and not g.std(0).max() > 1e-3]
    assert not still, f"reparam's gradient has no score term in {still}"


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

    handle = parts(vae)["q(z1|x)"].register_forward_hook(keep)
    loss, _ = objective_for(vae.cfg).training_loss(vae, x.expand(draws, -1), torch.tensor(1.0))
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
    unweighted = objectives.iwae(vae, x, k) if objective == "iwae" else objectives.elbo(vae, x, k, KLMode(kl))
    for weight in (0.0, 0.3, 1.0):
        torch.manual_seed(7)
        loss, bound = objective_for(vae.cfg).training_loss(vae, x, torch.tensor(weight))
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
    loss, bound = objective_for(vae.cfg).training_loss(vae, x, torch.tensor(0.0))
    mean, log_var = parts(vae)["q(z1|x)"](x)
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
    assert "biased" in objective_for(ModelConfig(estimator=Estimator.stl, objective="iwae", k=5)).warning()
    assert objective_for(ModelConfig(estimator=Estimator.stl, objective="iwae", k=1)).warning() is None
    assert objective_for(ModelConfig(estimator=Estimator.dreg, objective="iwae", k=5)).warning() is None
