"""The math: log-densities against torch.distributions, KL, and the bounds against a
linear-Gaussian model whose marginal likelihood is known in closed form."""

import math

import pytest
import torch
from torch import distributions as D

from tests.helpers import (
    DATA_DIM,
    SIGMA,
    closed_form_log_likelihood,
    linear_gaussian_vae,
    sample_x,
    set_posterior,
    two_layer_linear_vae,
)
from vaelab.config.schema import Activation, KLMode, ModelConfig
from vaelab.models.likelihoods import BernoulliLikelihood, Decoder, GaussianLikelihood
from vaelab.models.networks.mlp import MLPDecoderTrunk
from vaelab.models.vae import VAE
from vaelab.models.compiled import importance_estimates
from vaelab.probability import objectives
from vaelab.probability.bounds import ImportanceEstimates, estimate_log_likelihood, iwae_bound
from vaelab.probability.densities import (
    bernoulli_log_prob,
    gaussian_log_prob,
    gaussian_log_prob_of_noise,
    kl_to_standard_normal,
    standard_normal_log_prob,
)


pytestmark = pytest.mark.usefixtures("float64")  # conftest.py: double precision, seed 0


def test_gaussian_log_prob_matches_torch_distributions():
    x, mean, log_var = torch.randn(3, 7, 5).unbind(0)
    expected = D.Independent(D.Normal(mean, torch.exp(0.5 * log_var)), 1).log_prob(x)
    torch.testing.assert_close(gaussian_log_prob(x, mean, log_var), expected)


def test_gaussian_log_prob_of_noise_has_the_value_and_gradient_at_the_sample():
    mean, log_var = (torch.randn(7, 5, requires_grad=True) for _ in range(2))
    eps = torch.randn(3, 7, 5)
    z = mean + torch.exp(0.5 * log_var) * eps
    expected = D.Independent(D.Normal(mean, torch.exp(0.5 * log_var)), 1).log_prob(z)
    got = gaussian_log_prob_of_noise(eps, log_var)
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad(got.sum(), (mean, log_var), allow_unused=True, materialize_grads=True)
    expected_grads = torch.autograd.grad(expected.sum(), (mean, log_var))
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)


def test_standard_normal_log_prob_matches_torch_distributions():
    z = torch.randn(4, 6, 3)
    expected = D.MultivariateNormal(torch.zeros(3), torch.eye(3)).log_prob(z)
    torch.testing.assert_close(standard_normal_log_prob(z), expected)


@pytest.mark.parametrize("binary", [True, False])
def test_bernoulli_log_prob_matches_torch_distributions(binary):
    logits = 4 * torch.randn(6, 11)
    x = torch.bernoulli(torch.full((6, 11), 0.3)) if binary else torch.rand(6, 11)
    expected = D.Independent(D.Bernoulli(logits=logits, validate_args=False), 1).log_prob(x)
    torch.testing.assert_close(bernoulli_log_prob(x, logits), expected)


def test_bernoulli_log_prob_is_stable_for_large_logits():
    logits = torch.tensor([[1e4, -1e4]])
    x = torch.tensor([[1.0, 0.0]])
    assert bernoulli_log_prob(x, logits).item() == 0.0


def test_analytic_kl_matches_torch_distributions():
    mean, log_var = torch.randn(2, 9, 4).unbind(0)
    q = D.Independent(D.Normal(mean, torch.exp(0.5 * log_var)), 1)
    p = D.Independent(D.Normal(torch.zeros(4), torch.ones(4)), 1)
    torch.testing.assert_close(kl_to_standard_normal(mean, log_var), D.kl_divergence(q, p))


def test_monte_carlo_kl_agrees_with_analytic_kl():
    mean, log_var = torch.randn(2, 5, 3).unbind(0)
    z = mean + torch.exp(0.5 * log_var) * torch.randn(200_000, 5, 3)
    monte_carlo = (gaussian_log_prob(z, mean, log_var) - standard_normal_log_prob(z)).mean(0)
    torch.testing.assert_close(monte_carlo, kl_to_standard_normal(mean, log_var), atol=0.03, rtol=0.0)


def test_decoder_likelihoods_match_torch_distributions():
    z = torch.randn(3, 4, 2)
    x = torch.rand(4, 6)
    trunk = MLPDecoderTrunk(2, [5], 6, Activation.tanh)
    bernoulli = Decoder(trunk, BernoulliLikelihood(trunk.head))
    expected = D.Independent(D.Bernoulli(logits=bernoulli.params(z), validate_args=False), 1).log_prob(x)
    torch.testing.assert_close(bernoulli.log_prob(x, z), expected)
    torch.testing.assert_close(bernoulli.mean(z), torch.sigmoid(bernoulli.params(z)))
    for sigma in (0.3, None):
        trunk = MLPDecoderTrunk(2, [5], 6, Activation.relu)
        gaussian = Decoder(trunk, GaussianLikelihood(trunk.head, sigmoid_mean=True, sigma=sigma, var_floor=1e-2))
        mean, log_var = gaussian.params(z)
        std = torch.exp(0.5 * log_var).expand_as(mean)
        expected = D.Independent(D.Normal(mean, std), 1).log_prob(x)
        torch.testing.assert_close(gaussian.log_prob(x, z), expected)
        if sigma is None:
            assert (torch.exp(log_var) >= 1e-2).all()
        else:
            torch.testing.assert_close(std, torch.full_like(std, sigma))


def pin_heads(vae: VAE, mean_bias: torch.Tensor, var_bias: float) -> None:
    """This module's one reach into the model's parts (update it when they are renamed): zero
    every weight of q(z|x)'s heads and of the decoder's mean and variance heads, and set the
    heads' biases, so that q(z|x) = N(0, I) = p(z) for every x and the decoder's mean head
    outputs ``mean_bias`` and its variance head ``var_bias`` for every z."""
    heads = (vae.encoders[0].mean, vae.encoders[0].log_var, vae.decoder.likelihood.mean_head, vae.decoder.likelihood.var_head)
    with torch.no_grad():
        for head in heads:
            head.weight.zero_()
            head.bias.zero_()
        vae.decoder.likelihood.mean_head.bias.copy_(mean_bias)
        vae.decoder.likelihood.var_head.bias.fill_(var_bias)


@pytest.mark.parametrize("sigmoid_mean", [False, True], ids=["linear mean", "sigmoid mean"])
def test_learned_variance_is_floor_plus_softplus_where_the_floor_binds(sigmoid_mean):
    """gaussian_learned: var = var_floor + softplus(head), checked at two head outputs where a
    wrong formula shows. head = -60: softplus is 9e-27, so var equals var_floor to float64
    precision (var = softplus(head) gives 9e-27, var_floor * softplus(head) 2e-28).
    head = log(expm1(var_floor)): softplus is var_floor, so var = 2 var_floor
    (max(var_floor, softplus(head)) gives var_floor). var_floor is not the default 1e-3, so
    a hard-coded floor fails too; the mean is checked against the bias it is set to (through
    the sigmoid with model.sigmoid_mean), not against the decoder's own output.

    With q(z|x) = p(z) = N(0, I) the latent terms of every log-weight cancel exactly, and
    with the heads' weights 0 p(x|z) is the same for every z: each log-weight is log p(x|z),
    compared with torch.distributions.Normal summed over pixels (rtol 1e-12: float64
    rounding). Row 0 of x is the mean itself, where log p(x|z) = -D/2 log(2 pi var): the
    variance read back from it equals the expected one to 1e-12."""
    floor, data_dim = 0.02, 8
    cfg = ModelConfig(
        decoder="gaussian_learned", latent_dim=2, hidden=[5], var_floor=floor, sigmoid_mean=sigmoid_mean
    )
    vae = VAE(cfg, data_dim)
    mean_bias = torch.linspace(-1.0, 1.0, data_dim)
    mean = torch.sigmoid(mean_bias) if sigmoid_mean else mean_bias
    x = torch.stack([mean, mean + 0.3 * torch.randn(data_dim), torch.rand(data_dim)])
    for head, variance in ((-60.0, floor), (math.log(math.expm1(floor)), 2 * floor)):
        pin_heads(vae, mean_bias, head)
        with torch.no_grad():
            log_w = vae.log_weights(x, 4)
        expected = D.Normal(mean, math.sqrt(variance)).log_prob(x).sum(-1)
        torch.testing.assert_close(log_w, expected.expand(4, -1), rtol=1e-12, atol=0.0, msg=f"head {head}")
        read_back = math.exp(-2.0 * float(log_w[0, 0]) / data_dim) / (2.0 * math.pi)
        assert read_back == pytest.approx(variance, rel=1e-12), (head, read_back, variance)


# --- the linear-Gaussian VAE of tests/helpers/: log p(x) in closed form


def test_bounds_are_exact_when_q_is_the_true_posterior():
    """Then every log-weight equals log p(x): the constants of all densities are right."""
    vae = linear_gaussian_vae()
    set_posterior(vae)
    x = torch.randn(8, DATA_DIM) * 2
    exact = closed_form_log_likelihood(vae, x)
    with torch.no_grad():
        torch.testing.assert_close(objectives.elbo(vae, x, 3, KLMode.mc), exact)
        # The analytic-KL estimator is exact only in expectation.
        torch.testing.assert_close(objectives.elbo(vae, x, 100_000, KLMode.analytic), exact, atol=0.02, rtol=0.0)
        torch.testing.assert_close(objectives.iwae(vae, x, 7), exact)
        estimates = importance_estimates(vae, x, samples=10, chunk_size=3)
    torch.testing.assert_close(estimates.log_likelihood, exact)
    torch.testing.assert_close(estimates.elbo, exact)


def test_iwae_bound_grows_with_k_and_stays_below_log_likelihood():
    vae = linear_gaussian_vae()
    set_posterior(vae, log_var_shift=0.7, mean_shift=0.3)  # a wider, shifted q: L_k < log p(x)
    x = torch.randn(4, DATA_DIM) * 2
    exact = closed_form_log_likelihood(vae, x)
    replicates = 400
    with torch.no_grad():
        bounds = {k: torch.stack([objectives.iwae(vae, x, k) for _ in range(replicates)]).mean(0) for k in (1, 5, 50)}
        estimate = importance_estimates(vae, x, samples=200_000, chunk_size=20_000).log_likelihood
    assert (bounds[1] < bounds[5]).all() and (bounds[5] < bounds[50]).all()
    assert (bounds[50] < exact).all()
    torch.testing.assert_close(estimate, exact, atol=0.05, rtol=0.0)


def test_analytic_and_mc_elbo_agree_in_expectation():
    vae = linear_gaussian_vae()
    set_posterior(vae, log_var_shift=-0.5, mean_shift=0.5)
    x = torch.randn(4, DATA_DIM)
    with torch.no_grad():
        analytic = objectives.elbo(vae, x, 100_000, KLMode.analytic)
        mc = objectives.elbo(vae, x, 100_000, KLMode.mc)
    torch.testing.assert_close(analytic, mc, atol=0.02, rtol=0.0)


def test_iwae_bound_is_log_mean_exp():
    log_w = torch.randn(7, 3) * 10
    expected = torch.log(torch.exp(log_w - log_w.max(0).values).mean(0)) + log_w.max(0).values
    torch.testing.assert_close(iwae_bound(log_w), expected)


def fed_in_chunks(log_w: torch.Tensor, samples: int, chunk_size: int, iwae_k=()) -> ImportanceEstimates:
    """The estimates from the rows of a fixed [n, batch] matrix of log-weights, handed out in chunks."""
    used = 0

    def next_chunk(n: int) -> torch.Tensor:
        nonlocal used
        used += n
        return log_w[used - n : used]

    return estimate_log_likelihood(next_chunk, samples, chunk_size, iwae_k)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 100])
def test_streamed_estimates_equal_the_one_shot_formulas(chunk_size):
    log_w = torch.randn(23, 4) * 20
    estimates = fed_in_chunks(log_w, samples=20, chunk_size=chunk_size, iwae_k=[1, 3, 23])
    assert estimates.needed == 23 and estimates.missing == 0  # max(S, max k) samples per example
    torch.testing.assert_close(estimates.log_likelihood, torch.logsumexp(log_w[:20], 0) - math.log(20))
    torch.testing.assert_close(estimates.elbo, log_w[:20].mean(0))
    iwae = estimates.iwae
    torch.testing.assert_close(iwae[1], log_w.mean(0))
    groups = log_w[:21].reshape(7, 3, 4)  # 7 whole groups of 3 out of 23 samples
    torch.testing.assert_close(iwae[3], (torch.logsumexp(groups, 1) - math.log(3)).mean(0))
    torch.testing.assert_close(iwae[23], torch.logsumexp(log_w, 0) - math.log(23))
    alone = fed_in_chunks(log_w, samples=23, chunk_size=chunk_size)
    torch.testing.assert_close(alone.log_likelihood, torch.logsumexp(log_w, 0) - math.log(23))
    torch.testing.assert_close(alone.elbo, log_w.mean(0))


def test_estimates_are_refused_before_every_sample_is_in():
    estimates = ImportanceEstimates(samples=10, iwae_k=[4, 20])
    estimates.add(torch.randn(15, 2))
    assert estimates.missing == 5
    with pytest.raises(ValueError, match="only 15 of the 20 log-weights"):
        estimates.log_likelihood


# --- two stochastic layers, all linear: z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, diag(s1)),
# x | z1 ~ N(W z1 + b, s^2 I), so p(x) = N(W a + b, W (A A^T + diag(s1)) W^T + s^2 I)
# (the model and data from it: tests/helpers/).


def two_layer_closed_form(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    W, b = vae.decoder.likelihood.mean_head.weight, vae.decoder.likelihood.mean_head.bias
    A, a = vae.generative_layers[0].mean.weight, vae.generative_layers[0].mean.bias
    s1 = torch.diag(torch.exp(vae.generative_layers[0].log_var.bias))
    cov = W @ (A @ A.T + s1) @ W.T + SIGMA**2 * torch.eye(DATA_DIM)
    return D.MultivariateNormal(W @ a + b, cov).log_prob(x)


def test_two_layer_log_likelihood_estimate_matches_closed_form():
    vae = two_layer_linear_vae()
    x = sample_x(vae, 3)
    exact = two_layer_closed_form(vae, x)
    with torch.no_grad():
        estimates = importance_estimates(vae, x, samples=400_000, chunk_size=50_000)
        estimate, elbo = estimates.log_likelihood, estimates.elbo
        bounds = {10: torch.stack([objectives.iwae(vae, x, 10) for _ in range(200)]).mean(0)}
    torch.testing.assert_close(estimate, exact, atol=0.1, rtol=0.0)
    assert (elbo < bounds[10]).all() and (bounds[10] < exact).all()


def test_two_layer_analytic_top_kl_agrees_with_monte_carlo_elbo():
    """Same random numbers for both: they then differ only in the top layer's KL term,
    closed form against log q(z2|z1) - log p(z2) at the sampled z2."""
    vae = two_layer_linear_vae()
    with torch.no_grad():
        vae.encoders[1].mean.bias.fill_(0.5)  # q(z2|z1) away from the prior, so the KL matters
        vae.encoders[1].log_var.bias.fill_(-0.5)
    x = sample_x(vae, 4)
    with torch.no_grad():
        torch.manual_seed(5)
        analytic = objectives.elbo(vae, x, 100_000, KLMode.analytic)
        torch.manual_seed(5)
        mc = objectives.elbo(vae, x, 100_000, KLMode.mc)
    torch.testing.assert_close(analytic, mc, atol=0.02, rtol=0.0)


@pytest.mark.parametrize("build", [linear_gaussian_vae, two_layer_linear_vae], ids=["one layer", "two layers"])
def test_iwae_with_one_sample_equals_the_monte_carlo_elbo(build):
    vae = build()
    x = torch.randn(5, DATA_DIM)
    torch.manual_seed(3)
    iwae = objectives.iwae(vae, x, 1)
    torch.manual_seed(3)
    elbo = objectives.elbo(vae, x, 1, KLMode.mc)
    torch.testing.assert_close(iwae, elbo)


def test_likelihood_samples_have_the_likelihoods_mean_and_variance(float64):
    """Each likelihood's ``sample`` draws from its own distribution: over 20000 draws per pixel
    the mean is E[x|z] (``mean``) and the variance p(1-p) or sigma^2, within 5 standard errors."""
    z = torch.randn(1, 2).expand(20000, 2)
    trunk = MLPDecoderTrunk(2, [5], 6, Activation.tanh)
    for likelihood in (
        BernoulliLikelihood(trunk.head),
        GaussianLikelihood(trunk.head, sigmoid_mean=False, sigma=0.3, var_floor=1e-2),
        GaussianLikelihood(trunk.head, sigmoid_mean=True, sigma=None, var_floor=1e-2),
    ):
        decoder = Decoder(trunk, likelihood)
        with torch.no_grad():
            x, mean = decoder.sample(z), decoder.mean(z)[0]
            params = decoder.params(z[:1])
        variance = mean * (1 - mean) if isinstance(likelihood, BernoulliLikelihood) else torch.exp(params[1]).expand(1, 6)[0]
        torch.testing.assert_close(x.mean(0), mean, atol=float(5 * (variance / len(x)).sqrt().max()), rtol=0)
        torch.testing.assert_close(x.var(0), variance, atol=float(5 * variance.max() * (2 / len(x)) ** 0.5) + 1e-3, rtol=0)
        assert not torch.equal(x[:10], x[10:20])  # fresh draws
