"""The parts the VAE is assembled from: the diagonal Gaussian, the mixture priors (a learned
mixture of Gaussians and the VampPrior), the convolutional networks, and the FLOP count of a
training step, each against torch.distributions or a hand computation.

Monte Carlo tolerances: a sample mean (or variance, covariance, mean gradient) passes when it
is within MAX_T = 5 standard errors of its target, the standard error estimated from the same
draws (for a mean gradient: from G = 20 independent groups, a t-statistic with 19 degrees of
freedom, two-sided tail below 1e-4 per coordinate). Every seed is fixed, so the outcome is too.
Exact identities (log-densities, KL, gradients) are checked at torch.testing's float64
tolerances.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import distributions as D
from omegaconf import OmegaConf
from torch import nn

from vaelab.config.compose import CommandLine, compose_saved, to_object
from vaelab.config.plain import from_plain, net_of_older_run
from vaelab.config.schema import (
    Activation,
    Estimator,
    Init,
    KLMode,
    ModelConfig,
    NetConfig,
    PriorConfig,
   
    StochasticLayerConfig,
)
from vaelab.models.compiled import training_step_flops
from vaelab.models.priors import MixturePrior, VampPrior
from vaelab.models.vae import VAE
from vaelab.objectives import objective_for
from vaelab.probability import objectives
from vaelab.probability.distributions import DiagonalGaussian

pytestmark = pytest.mark.usefixtures("float64")  # conftest.py: double precision, seed 0

MAX_T = 5.0
MIN_STANDARD_ERROR = 1e-10  # float64 rounding of these sums is far below; an exact agreement passes


def normal(mean: torch.Tensor, log_var: torch.Tensor) -> D.Distribution:
    """The reference diagonal Gaussian: an Independent Normal over the last dimension."""
    return D.Independent(D.Normal(mean, torch.exp(0.5 * log_var)), 1)


def grads(value: torch.Tensor, inputs) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(value.sum(), list(inputs), allow_unused=True, retain_graph=True))


def assert_within_standard_errors(estimate, target, standard_error, what: str) -> None:
    t = (estimate - target).abs() / torch.as_tensor(standard_error).clamp(min=MIN_STANDARD_ERROR)
    assert bool((t < MAX_T).all()), f"{what}: |t| = {t.max():.1f} >= {MAX_T} (estimate {estimate}, target {target})"


def perturb_(module: nn.Module, scale: float = 0.3, skip: str = "prior.") -> None:
    """Noise on every parameter (biases start at 0), so no identity holds by symmetry alone."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not name.startswith(skip):
                p.add_(scale * torch.randn_like(p))


# ---------------------------------------------------------------- 1. DiagonalGaussian


def test_rsample_has_the_mean_and_variance_and_fresh_noise():
    mean, log_var = torch.tensor([0.5, -2.0, 1.0]), torch.tensor([-1.0, 0.0, 1.5])
    q = DiagonalGaussian(mean, log_var)
    n = 200_000
    z, eps = q.rsample(n)
    assert z.shape == eps.shape == (n, 3) and z.dtype == torch.float64
    torch.testing.assert_close(z, mean + torch.exp(0.5 * log_var) * eps)
    var = torch.exp(log_var)
    assert_within_standard_errors(z.mean(0), mean, (var / n).sqrt(), "sample mean")
    assert_within_standard_errors(z.var(0), var, var * math.sqrt(2 / (n - 1)), "sample variance")
    assert_within_standard_errors(eps.var(0), torch.ones(3), math.sqrt(2 / (n - 1)), "noise variance")

    batched = DiagonalGaussian(torch.randn(4, 3), torch.randn(4, 3))
    (a, _), (b, _) = batched.rsample(), batched.rsample()
    assert a.shape == b.shape == (4, 3)
    assert not torch.isclose(a, b).any(), "two draws share noise"
    two, _ = batched.rsample(2)
    assert two.shape == (2, 4, 3) and not torch.isclose(two[0], two[1]).any()


def test_log_prob_and_log_prob_of_noise_match_torch_in_value_and_gradient():
    mean, log_var = torch.randn(7, 5, requires_grad=True), torch.randn(7, 5, requires_grad=True)
    q = DiagonalGaussian(mean, log_var)
    z, eps = q.rsample(3)  # [3, 7, 5], a function of mean and log_var
    expected = normal(mean, log_var).log_prob(z)
    expected_grads = grads(expected, (mean, log_var))
    for got in (q.log_prob(z), q.log_prob_of_noise(eps)):
        assert got.shape == (3, 7)
        torch.testing.assert_close(got, expected)
        for grad, expected_grad in zip(grads(got, (mean, log_var)), expected_grads):
            torch.testing.assert_close(torch.zeros_like(mean) if grad is None else grad, expected_grad)
    # at a z that does not depend on the parameters: the score, non-zero for both
    fixed = torch.randn(3, 7, 5)
    expected = normal(mean, log_var).log_prob(fixed)
    torch.testing.assert_close(q.log_prob(fixed), expected)
    for grad, expected_grad in zip(grads(q.log_prob(fixed), (mean, log_var)), grads(expected, (mean, log_var))):
        assert expected_grad.abs().min() > 0
        torch.testing.assert_close(grad, expected_grad)


def test_kl_matches_torch_between_two_non_standard_gaussians():
    params = [torch.randn(6, 4, requires_grad=True) for _ in range(4)]
    mean_q, log_var_q, mean_p, log_var_p = params
    got = DiagonalGaussian(mean_q, log_var_q).kl(DiagonalGaussian(mean_p, log_var_p))
    expected = D.kl_divergence(normal(mean_q, log_var_q), normal(mean_p, log_var_p))
    assert got.shape == (6,)
    torch.testing.assert_close(got, expected)
    for grad, expected_grad in zip(grads(got, params), grads(expected, params)):
        torch.testing.assert_close(grad, expected_grad)
    torch.testing.assert_close(DiagonalGaussian(mean_q, log_var_q).kl(DiagonalGaussian(mean_q, log_var_q)), torch.zeros(6))


def test_detached_stops_the_parameters_but_not_z():
    mean, log_var = torch.randn(7, 5, requires_grad=True), torch.randn(7, 5, requires_grad=True)
    q = DiagonalGaussian(mean, log_var)
    z = torch.randn(3, 7, 5, requires_grad=True)
    frozen = q.detached()
    torch.testing.assert_close(frozen.log_prob(z), q.log_prob(z))
    grad_mean, grad_log_var, grad_z = grads(frozen.log_prob(z), (mean, log_var, z))
    assert grad_mean is None and grad_log_var is None
    torch.testing.assert_close(grad_z, -(z - mean) * torch.exp(-log_var))
    # through a reparameterized sample, the gradient reaches the parameters by the path only:
    # d/dmean log q(z(mean)) with q stopped is -(z - mean) / var = -eps / sigma per sample
    sample, eps = q.rsample(3)
    grad_mean, grad_log_var = grads(frozen.log_prob(sample), (mean, log_var))
    torch.testing.assert_close(grad_mean, (-eps * torch.exp(-0.5 * log_var)).sum(0))
    torch.testing.assert_close(grad_log_var, (-0.5 * eps.pow(2)).sum(0))


# ---------------------------------------------------------------- 2. MixturePrior


def mixture_prior() -> MixturePrior:
    prior = MixturePrior(latent_dim=2, components=3)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.7, -1.0, 1.5]))
        prior.means.copy_(torch.tensor([[-2.0, 1.0], [0.5, -1.5], [2.0, 2.5]]))
        prior.log_vars.copy_(torch.tensor([[-1.0, 0.3], [0.5, -0.5], [-0.2, 0.8]]))
    return prior


def reference_mixture(logits, means, log_vars) -> D.Distribution:
    return D.MixtureSameFamily(D.Categorical(logits=logits), normal(means, log_vars))


def test_mixture_prior_log_prob_matches_torch_in_value_and_gradient():
    prior = mixture_prior()
    z = 2.0 * torch.randn(4, 5, 2)
    reference = reference_mixture(prior.logits, prior.means, prior.log_vars)
    got = prior.log_prob(z)
    assert got.shape == (4, 5)
    torch.testing.assert_close(got, reference.log_prob(z))
    parameters = (prior.logits, prior.means, prior.log_vars)
    for name, grad, expected in zip(("logits", "means", "log_vars"), grads(got, parameters), grads(reference.log_prob(z), parameters)):
        assert grad is not None and grad.abs().min() > 0, f"no gradient reaches {name}"
        torch.testing.assert_close(grad, expected, msg=name)
    assert not prior.has_closed_form_kl
    assert prior.kl(DiagonalGaussian(torch.zeros(5, 2), torch.zeros(5, 2))) is None


def test_mixture_prior_samples_have_the_mixture_mean_and_covariance():
    prior = mixture_prior()
    weights = torch.softmax(prior.logits.detach(), 0)
    means, variances = prior.means.detach(), torch.exp(prior.log_vars.detach())
    mean = weights @ means
    second_moment = sum(w * (torch.diag(v) + torch.outer(m, m)) for w, m, v in zip(weights, means, variances))
    covariance = second_moment - torch.outer(mean, mean)

    state = torch.get_rng_state()
    n = 200_000
    draws = prior.sample(n, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state), "sampling with a generator drew from the global RNG"
    assert draws.shape == (n, 2) and draws.dtype == torch.float64
    assert_within_standard_errors(draws.mean(0), mean, (torch.diag(covariance) / n).sqrt(), "mixture mean")
    centred = draws - mean
    products = centred.unsqueeze(-1) * centred.unsqueeze(-2)  # [n, 2, 2]
    assert_within_standard_errors(products.mean(0), covariance, products.std(0) / math.sqrt(n), "mixture covariance")

    again = prior.sample(50, torch.Generator().manual_seed(7))
    assert torch.equal(again, prior.sample(50, torch.Generator().manual_seed(7)))
    assert not torch.isclose(again, prior.sample(50, torch.Generator().manual_seed(8))).all()


# ---------------------------------------------------------------- 3. VampPrior


DATA, LATENT, HIDDEN, K = 5, 2, [4], 3
PSEUDO = torch.tensor(  # some outside [0, 1], where the hard tanh clips them
    [[0.2, 0.9, -0.3, 0.5, 1.4], [0.7, 0.1, 0.4, 1.2, 0.6], [-0.5, 0.3, 0.8, 0.05, 0.95]], dtype=torch.float64
)


def tiny_vae(prior: str = "vamp", upper: bool = False, **model) -> VAE:
    upper_layers = [StochasticLayerConfig(hidden=[3], latent_dim=LATENT)] if upper else []
    cfg = ModelConfig(latent_dim=3 if upper else LATENT, hidden=HIDDEN, upper_layers=upper_layers, **model)
    return VAE(cfg, DATA, prior=PriorConfig(name=prior, components=K))


def vamp_vae(upper: bool = False, **model) -> VAE:
    vae = tiny_vae("vamp", upper, **model)
    perturb_(vae)
    with torch.no_grad():
        vae.prior.pseudo_inputs.copy_(PSEUDO)
    return vae


def test_vamp_prior_is_the_mixture_of_the_encoders_posteriors_of_the_pseudo_inputs():
    vae = vamp_vae()
    assert isinstance(vae.prior, VampPrior) and not vae.prior.has_closed_form_kl
    u = vae.prior.pseudo_inputs
    mean, log_var = vae.encoders[0](torch.nn.functional.hardtanh(u, 0.0, 1.0))
    reference = reference_mixture(torch.zeros(K), mean, log_var)
    z = 1.5 * torch.randn(4, 6, LATENT)
    got = vae.prior.log_prob(z)
    assert got.shape == (4, 6)
    torch.testing.assert_close(got, reference.log_prob(z))

    encoder = list(vae.encoders[0].parameters())
    got_grads, expected_grads = grads(got, [u, *encoder]), grads(reference.log_prob(z), [u, *encoder])
    for index, (grad, expected) in enumerate(zip(got_grads, expected_grads)):
        assert grad is not None, f"no gradient reaches {'the pseudo-inputs' if index == 0 else f'encoder tensor {index - 1}'}"
        torch.testing.assert_close(grad, expected)
    inside = (PSEUDO > 0) & (PSEUDO < 1)
    assert (got_grads[0][inside] != 0).all() and (got_grads[0][~inside] == 0).all()
    assert all(g is None for g in grads(got, vae.decoder.parameters()))


def test_vamp_prior_fixed_computes_the_components_once_and_only_without_gradient():
    vae = vamp_vae()
    z = 1.5 * torch.randn(4, 6, LATENT)
    expected = vae.prior.log_prob(z)
    passes = []
    vae.encoders[0].register_forward_hook(lambda *args: passes.append(1))
    with vae.prior.fixed():
        with torch.no_grad():
            first, second = vae.prior.log_prob(z), vae.prior.log_prob(z)
        assert len(passes) == 1, "the pseudo-inputs went through the encoder more than once"
        with_grad = vae.prior.log_prob(z)  # a gradient asked for: the components are recomputed
        assert len(passes) == 2 and with_grad.requires_grad
    assert torch.equal(first, second) and torch.equal(first, expected.detach())
    assert vae.prior._fixed is None
    vae.prior.log_prob(z)
    assert len(passes) == 3


def test_vamp_prior_of_two_layers_follows_the_encoders_means_to_the_top():
    vae = vamp_vae(upper=True)  # z_1 has 3 dimensions, z_2 (the prior's) 2
    first, second = vae.encoders
    u = torch.nn.functional.hardtanh(vae.prior.pseudo_inputs, 0.0, 1.0)
    mean_1 = first.mean(first.trunk(u))  # z_1 = mu_1(u), then q(z_2 | z_1 = mu_1(u))
    h = second.trunk(mean_1)
    mean_2, log_var_2 = second.mean(h), second.log_var(h)
    components = vae.prior.components()
    assert components.mean.shape == (K, LATENT)
    torch.testing.assert_close(components.mean, mean_2)
    torch.testing.assert_close(components.log_var, log_var_2)
    z = torch.randn(4, 6, LATENT)
    torch.testing.assert_close(vae.prior.log_prob(z), reference_mixture(torch.zeros(K), mean_2, log_var_2).log_prob(z))
    # and it is the prior of the top layer inside the bound
    x = torch.rand(6, DATA)
    sample = vae.sample_latents(x, 4)
    with_prior, without_prior = vae.generative_log_probs(x, sample.zs)[1], vae.generative_log_probs(x, sample.zs, top=False)[1]
    torch.testing.assert_close(with_prior - without_prior, reference_mixture(torch.zeros(K), mean_2, log_var_2).log_prob(sample.zs[-1]))


@pytest.mark.parametrize("upper", [False, True])
def test_vamp_prior_registers_the_pseudo_inputs_once_and_not_the_encoder(upper):
    vae = tiny_vae("vamp", upper)
    keys = list(vae.state_dict())
    assert [key for key in keys if key.startswith("prior.")] == ["prior.pseudo_inputs"]
    assert [key for key in keys if "pseudo" in key] == ["prior.pseudo_inputs"]
    assert [name for name, _ in vae.prior.named_parameters()] == ["pseudo_inputs"]
    assert list(vae.prior.children()) == []
    named = list(vae.named_parameters(remove_duplicate=False))
    assert len({id(p) for _, p in named}) == len(named), "a parameter is registered twice"
    assert len(keys) == len(named) + len(list(vae.buffers()))
    standard = tiny_vae("standard", upper)
    assert sum(p.numel() for _, p in named) == sum(p.numel() for p in standard.parameters()) + K * DATA
    # a state dict restores the prior, pseudo-inputs and encoder together
    perturb_(vae, skip="")
    copy = tiny_vae("vamp", upper)
    copy.load_state_dict(vae.state_dict())
    z = torch.randn(5, LATENT)
    torch.testing.assert_close(copy.prior.log_prob(z), vae.prior.log_prob(z))


# ---------------------------------------------------------------- 4. initialisation


NETS = {
    "mlp, two layers": (dict(upper=True), DATA, None),
    "conv": (dict(upper=False), (1, 12, 10), NetConfig(name="conv", channels=[3, 4], dense=6)),
}


@pytest.mark.parametrize("prior", ["vamp", "mog"])
@pytest.mark.parametrize("net", list(NETS))
def test_a_mixture_prior_leaves_the_networks_initialisation_as_it_is(prior, net):
    options, data_shape, net_cfg = NETS[net]
    upper = [StochasticLayerConfig(hidden=[3], latent_dim=2)] if options["upper"] else []
    cfg = ModelConfig(latent_dim=3, hidden=[4], upper_layers=upper)

    def build(kind: str) -> VAE:
        torch.manual_seed(123)
        return VAE(cfg, data_shape, prior=PriorConfig(name=kind, components=K), net=net_cfg)

    standard, mixture = build("standard"), build(prior)
    networks = {name: p for name, p in mixture.named_parameters() if not name.startswith("prior.")}
    assert len(list(mixture.prior.parameters())) > 0
    assert networks.keys() == dict(standard.named_parameters()).keys()
    for name, p in standard.named_parameters():
        assert torch.equal(p, networks[name]), f"{name} is initialised differently under prior={prior.value}"


# ---------------------------------------------------------------- 5. analytic or sampled KL


X = (torch.rand(4, DATA, generator=torch.Generator().manual_seed(5)) > 0.5).double()


@pytest.mark.parametrize("prior", ["mog", "vamp"])
@pytest.mark.parametrize("upper", [False, True])
def test_elbo_samples_the_kl_when_the_prior_has_no_closed_form(prior, upper):
    vae = tiny_vae(prior, upper)
    perturb_(vae, skip="")
    assert not objectives.analytic_kl(vae, KLMode.analytic)
    torch.manual_seed(1)
    analytic = objectives.elbo(vae, X, 3, KLMode.analytic)
    torch.manual_seed(1)
    sampled = objectives.elbo(vae, X, 3, KLMode.mc)
    assert analytic.shape == (4,) and torch.isfinite(analytic).all()
    assert torch.equal(analytic, sampled)


@pytest.mark.parametrize("upper", [False, True])
def test_standard_prior_elbo_analytic_and_sampled_agree_in_expectation(upper):
    vae = tiny_vae("standard", upper)
    perturb_(vae, scale=0.1)  # more would give p(z_1|z_2) tiny variances: heavy-tailed log-weights
    assert objectives.analytic_kl(vae, KLMode.analytic) and not objectives.analytic_kl(vae, KLMode.mc)
    rows = 20_000  # one x, many independent draws: every row has its own samples
    x = X[:1].expand(rows, DATA)
    torch.manual_seed(2)
    analytic = objectives.elbo(vae, x, 1, KLMode.analytic)
    torch.manual_seed(2)
    sampled = objectives.elbo(vae, x, 1, KLMode.mc)
    # the same draws of z (so the same log p(x|z)); the latent terms differ per draw ...
    difference = (analytic - sampled).detach()
    assert (difference.abs() > 1e-6).double().mean() > 0.99
    # ... and agree in expectation: E[log p(z) - log q(z)] = -KL
    assert_within_standard_errors(difference.mean(), torch.tensor(0.0), difference.std() / math.sqrt(rows), "analytic - sampled ELBO")


# ---------------------------------------------------------------- 6. unbiased estimators with a VampPrior


GROUPS, ROWS = 20, 500


def gradient_differences(vae: VAE, estimator: Estimator, objective: str, k: int) -> dict[str, torch.Tensor]:
    """Per parameter tensor, [GROUPS, numel]: the gradient of training_loss under ``estimator``
    minus the one under ``reparam``, each averaged over ROWS copies of x (each its own draw),
    from the same seed, so the same samples of z (a paired difference: lower variance)."""
    x = X[:1].expand(ROWS, DATA)
    named = dict(vae.named_parameters())
    out = {name: [] for name in named}
    for group in range(GROUPS):
        gradients = []
        for chosen in (estimator, Estimator.reparam):
            cfg = dataclasses.replace(vae.cfg, estimator=chosen, objective=objective, k=k, kl=KLMode.mc)
            torch.manual_seed(1000 + group)
            loss, _ = objective_for(cfg).training_loss(vae, x)
            values = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
            for name, value in zip(named, values):
                assert value is not None, f"{chosen.value}: no gradient reaches {name}"
            gradients.append(values)
        for name, a, b in zip(named, *gradients):
            out[name].append((a - b).flatten())
    return {name: torch.stack(rows) for name, rows in out.items()}


@pytest.mark.parametrize(("estimator", "objective", "k"), [(Estimator.dreg, "iwae", 4), (Estimator.stl, "elbo", 2)])
def test_estimators_are_unbiased_with_a_vamp_prior(estimator, objective, k):
    """The prior shares the encoder and owns the pseudo-inputs: dreg and stl must still have
    reparam's expected gradient for every tensor, the encoder's and pseudo-inputs' included."""
    vae = vamp_vae()
    assert {name for name, _ in vae.named_parameters()} >= {"prior.pseudo_inputs", "encoders.0.mean.weight"}
    differences = gradient_differences(vae, estimator, objective, k)
    failing = {}
    for name, rows in differences.items():
        t = rows.mean(0) / (rows.std(0) / math.sqrt(GROUPS)).clamp(min=MIN_STANDARD_ERROR)
        if not t.abs().max() < MAX_T:
            failing[name] = round(float(t.abs().max()), 1)
    assert not failing, f"|t| >= {MAX_T} in: {failing}"
    # not vacuous: the estimators differ per draw where q's parameters enter ...
    for name in ("encoders.0.mean.weight", "encoders.0.log_var.bias"):
        assert differences[name].abs().max() > 1e-8, f"{estimator.value} is reparam itself on {name}"
    # ... and only there: the gradient of p's own parameters (the decoder's, the pseudo-inputs')
    # is the same sum over the same samples, so equal to rounding in every draw
    for name, rows in differences.items():
        if not name.startswith("encoders."):
            assert rows.abs().max() < 1e-12, f"{estimator.value} changes the gradient of {name}, a parameter of p only"


# ---------------------------------------------------------------- 7. convolutional networks


SHAPES = [(1, 28, 28), (1, 28, 20), (2, 27, 13)]


def conv_vae(shape, decoder="bernoulli", channels=(4, 8), activation=Activation.relu, **model) -> VAE:
    cfg = ModelConfig(latent_dim=3, hidden=[7], decoder=decoder, **model)
    return VAE(cfg, shape, net=NetConfig(name="conv", channels=list(channels), dense=16, activation=activation))


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_networks_keep_the_sample_dimensions_and_read_every_pixel(shape):
    # softplus: a ReLU unit that is off for this one image would hide a pixel that is wired in
    vae = conv_vae(shape, decoder="gaussian_learned", activation=Activation.softplus)
    pixels = math.prod(shape)
    x = torch.rand(3, 2, pixels)
    features = vae.encoders[0].trunk(x)
    assert features.shape == (3, 2, 16)
    # one image at a time gives the same features: the batch does not mix
    torch.testing.assert_close(features[1, 0], vae.encoders[0].trunk(x[1, 0]))
    z = torch.randn(3, 2, 3)
    mean, log_var = vae.decoder.params(z)
    assert mean.shape == log_var.shape == (3, 2, pixels)
    torch.testing.assert_close(mean[2, 1], vae.decoder.params(z[2, 1])[0])

    log_w = conv_vae(shape).log_weights(torch.rand(5, pixels).round(), 4)
    assert log_w.shape == (4, 5) and torch.isfinite(log_w).all()

    # every pixel of every channel reaches the encoder's output ...
    image = torch.rand(pixels, requires_grad=True)
    mean_1, log_var_1 = vae.encoders[0](image)
    (sensitivity,) = torch.autograd.grad((mean_1 * torch.randn(3)).sum() + (log_var_1 * torch.randn(3)).sum(), image)
    assert (sensitivity != 0).all(), f"{int((sensitivity == 0).sum())} pixels do not reach the encoder"
    for pixel in (0, pixels // 2, pixels - 1):  # a one-pixel change changes the output
        changed = image.detach().clone()
        changed[pixel] += 0.5
        assert not torch.allclose(vae.encoders[0](changed)[0], mean_1)
    # ... and z reaches every pixel of the decoder's output
    z = torch.randn(3)
    steps = torch.cat([z.unsqueeze(0), z + 1e-3 * torch.eye(3)])
    means = vae.decoder.mean(steps)
    assert ((means[1:] - means[0]).abs().amax(0) > 0).all()


def activations_of(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, (nn.ReLU, nn.Softplus, nn.Tanh))}


def test_conv_trunks_take_net_activation_and_mlps_model_activation():
    model = ModelConfig(latent_dim=3, hidden=[7], activation=Activation.softplus)
    conv = VAE(model, (1, 12, 10), net=NetConfig(name="conv", channels=[3, 4], dense=6))
    assert activations_of(conv.encoders[0].trunk) == activations_of(conv.decoder.trunk) == {nn.ReLU}
    tanh = NetConfig(name="conv", channels=[3, 4], dense=6, activation=Activation.tanh)
    assert activations_of(VAE(model, (1, 12, 10), net=tanh).encoders[0].trunk) == {nn.Tanh}
    assert activations_of(VAE(model, (1, 12, 10), net=NetConfig()).encoders[0].trunk) == {nn.Softplus}


def test_a_conv_run_saved_before_net_activation_keeps_the_activation_it_trained_with():
    """Older conv runs trained with model.activation; today's ReLU default must not replace it."""
    older = {"name": "conv", "channels": [3, 4], "dense": 6}
    model = {"activation": "tanh"}
    assert from_plain(NetConfig, net_of_older_run(older, model)).activation is Activation.tanh
    assert from_plain(NetConfig, net_of_older_run(older, {})).activation is Activation.softplus  # the old default
    today = {**older, "activation": "relu"}
    assert net_of_older_run(today, model) == today
    assert net_of_older_run({"name": "mlp"}, model) == {"name": "mlp"}
    saved = OmegaConf.create({"net": older, "model": model})
    resumed = to_object(compose_saved(saved, CommandLine(), keeps="a resumed run keeps its saved config"))
    assert resumed.net.activation is Activation.tanh


@pytest.mark.parametrize("shape", SHAPES[1:])
def test_conv_layers_are_initialised_by_init_weights(shape):
    vae = conv_vae(shape, channels=(8, 16))
    convolutions = [m for m in vae.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convolutions) == 4  # two stages in the encoder, a transposed one and the head in the decoder
    for module in [*convolutions, *(m for m in vae.modules() if isinstance(m, nn.Linear))]:
        assert torch.equal(module.bias, torch.zeros_like(module.bias)), module
    for conv in convolutions:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(conv.weight)
        bound = math.sqrt(6.0 / (fan_in + fan_out))  # Glorot & Bengio's uniform
        assert conv.weight.abs().max() <= bound, conv
        if conv.weight.numel() >= 1000:  # std of U(-b, b) is b / sqrt 3; torch's default is 1 / sqrt(3 fan_in)
            torch.testing.assert_close(conv.weight.std(), torch.tensor(bound / math.sqrt(3)), rtol=0.06, atol=0, msg=str(conv))
    normal_init = conv_vae(shape, channels=(8, 16), init=Init.normal, init_std=0.01)
    for conv in (m for m in normal_init.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))):
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
        if conv.weight.numel() >= 1000:
            torch.testing.assert_close(conv.weight.std(), torch.tensor(0.01), rtol=0.06, atol=0, msg=str(conv))


# ---------------------------------------------------------------- 8. FLOP of a training step


def linear_products(module: nn.Module, rows: int) -> int:
    """Multiply-adds of ``rows`` passes through every Linear layer of ``module``."""
    return sum(rows * m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def previous_formula(vae: VAE, batch: int) -> int:
    """The count of the previous version: 6 x (q(z_1|x)'s products once per example, every
    other layer's once per sample of z)."""
    per_sample = [*vae.encoders[1:], *vae.generative_layers, vae.decoder]
    return 6 * (linear_products(vae.encoders[0], batch) + sum(linear_products(m, batch * vae.cfg.k) for m in per_sample))


@pytest.mark.parametrize("prior", ["standard", "vamp"])
@pytest.mark.parametrize("upper", [False, True])
def test_training_step_flops_of_an_mlp_vae_count_every_linear_layer(upper, prior):
    """N(0, I): exactly the previous version's count. VampPrior: that, once per step the
    encoders' pass over the K pseudo-inputs (along the means to the top layer), and per sample
    of z the mixture's product [z*z, z] [2d, K] (vaelab/probability/mixtures.py)."""
    layers = [StochasticLayerConfig(hidden=[6, 4], latent_dim=2)] if upper else []
    cfg = ModelConfig(latent_dim=3, hidden=[7, 5], k=3, upper_layers=layers, decoder="gaussian_learned")
    vae = VAE(cfg, 11, prior=PriorConfig(name=prior, components=K))
    assert len(vae.encoders) == (2 if upper else 1)
    pseudo_inputs = 6 * sum(linear_products(encoder, K) for encoder in vae.encoders) if prior == "vamp" else 0
    for batch in (4, 10):
        mixture = 6 * batch * cfg.k * 2 * vae.top_latent_dim * K if prior == "vamp" else 0
        assert training_step_flops(vae, batch) == previous_formula(vae, batch) + pseudo_inputs + mixture


@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_training_step_flops_of_a_conv_vae_count_the_convolutions_and_leave_no_trace(prior):
    cfg = ModelConfig(latent_dim=3, hidden=[7], k=3)
    vae = VAE(cfg, (1, 12, 10), prior=PriorConfig(name=prior, components=K), net=NetConfig(name="conv", channels=[3, 4], dense=6))
    state = torch.get_rng_state()
    flops = training_step_flops(vae, 4)
    assert torch.equal(torch.get_rng_state(), state), "training_step_flops drew from the global RNG"
    assert all(p.grad is None for p in vae.parameters())
    assert flops > previous_formula(vae, 4) > 0
    mlp = tiny_vae(prior)
    state = torch.get_rng_state()
    training_step_flops(mlp, 4)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in mlp.parameters())
