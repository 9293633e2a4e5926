"""The top-down hierarchy (``hierarchy=topdown``): its merges against their formulas, its log q and
log p against a plain loop over the layers, each layer's closed-form KL against a Monte Carlo
estimate, and, for an all-linear Gaussian model with L = 1, 2, 3 layers, the ELBO and the
importance-sampled log p(x) against their closed forms (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as D

from vaelab.config.schema import HierarchyConfig, KLMode, LayerMerge, ModelConfig, StochasticLayerConfig
from vaelab.models.hierarchies import TopDownVAE, precision_weighted, residual
from vaelab.probability.distributions import DiagonalGaussian
from vaelab.probability.objectives import elbo_terms, iwae

DATA_DIM, SIGMA = 4, 0.6
SIZES = {1: [2], 2: [2, 2], 3: [2, 2, 1]}  # z_1 .. z_L of each depth


def topdown_vae(merge: LayerMerge, sizes: list[int], hidden: list[int] | None = None, decoder: str = "gaussian") -> TopDownVAE:
    hidden = [] if hidden is None else hidden
    cfg = ModelConfig(
        decoder=decoder, latent_dim=sizes[0], hidden=hidden, sigma=SIGMA, activation="tanh",
        upper_layers=[StochasticLayerConfig(hidden=hidden, latent_dim=size) for size in sizes[1:]],
    )
    return TopDownVAE(cfg, DATA_DIM, hierarchy=HierarchyConfig(name="topdown", merge=merge))


def linear_gaussian(merge: LayerMerge, depth: int) -> TopDownVAE:
    """Every network linear, every variance independent of the layer above: then p(x, z) and
    q(z|x) are Gaussians. Parameters drawn small, so q stays broad and near the prior."""
    vae = topdown_vae(merge, SIZES[depth])
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.copy_(0.4 * torch.randn_like(parameter))
        for layer in vae.generative_layers:
            layer.log_var.weight.zero_()
        vae.decoder.likelihood.mean_head.weight.mul_(0.5)  # x tells little: the posterior stays near the prior
        for head in vae.posterior_heads:
            head.mean.weight.mul_(0.2)
            head.log_var.weight[:, DATA_DIM:].zero_()  # the top-down state's columns (every d_l is x itself here)
            head.log_var.weight.mul_(0.25)
            # broad, so importance sampling converges (a residual q's variance is relative to p's already)
            head.log_var.bias.add_(0.0 if merge is LayerMerge.residual else 1.0)
    return vae


def affine(f, d_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, c) with f(v) = B v + c for an affine f of [d_in] vectors, read off at 0 and the unit vectors."""
    c = f(torch.zeros(d_in))
    return torch.stack([f(e) - c for e in torch.eye(d_in)], dim=1), c


def chain(mean: torch.Tensor, var: torch.Tensor, links: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Mean and covariance of (v_0, v_1, ...) with v_0 ~ N(mean, diag(var)) and each next block
    v = B v_last + c + N(0, diag(d)) for the links (B, c, d)."""
    m, cov, last = mean, torch.diag(var), slice(0, len(mean))
    for B, c, d in links:
        n = len(m)
        cross = B @ cov[last, :]  # Cov(v_new, everything so far)
        block = B @ cov[last, last] @ B.T + torch.diag(d)
        cov = torch.cat([torch.cat([cov, cross.T], 1), torch.cat([cross, block], 1)], 0)
        m = torch.cat([m, B @ m[last] + c])
        last = slice(n, n + len(c))
    return m, cov


def generative_joint(vae: TopDownVAE):
    """p over (z_L, ..., z_1, x): mean and covariance."""
    links = []
    for index in reversed(range(len(vae.generative_layers))):
        layer = vae.generative_layers[index]
        links.append((layer.mean.weight, layer.mean.bias, torch.exp(layer.log_var.bias)))
    B, c = affine(vae.decoder.mean, vae.latent_dims[0])
    links.append((B, c, torch.full((DATA_DIM,), SIGMA**2)))
    return chain(torch.zeros(vae.latent_dims[-1]), torch.ones(vae.latent_dims[-1]), links)


def posterior_joint(vae: TopDownVAE, x: torch.Tensor):
    """q over (z_L, ..., z_1) for one image x [D]."""
    features = vae.encode(x[None])
    top = vae.top_posterior(features)
    links = []
    for index in reversed(range(len(vae.generative_layers))):
        def q_mean(z, index=index):
            return vae.posterior_below(index, features, z[None])[1].mean[0]

        B, c = affine(q_mean, vae.latent_dims[index + 1])
        q_at = [vae.posterior_below(index, features, z[None])[1].log_var[0] for z in (torch.zeros(len(B.T)), torch.randn(len(B.T)))]
        assert torch.allclose(q_at[0], q_at[1], atol=1e-12)  # the premise: q's variance does not depend on z_{l+1}
        links.append((B, c, torch.exp(q_at[0])))
    return chain(top.mean[0], torch.exp(top.log_var[0]), links)


def model_data(vae: TopDownVAE, n: int) -> torch.Tensor:
    """n images drawn from the model's own p(x)."""
    mean, cov = generative_joint(vae)
    return D.MultivariateNormal(mean[-DATA_DIM:], cov[-DATA_DIM:, -DATA_DIM:]).sample((n,))


def closed_forms(vae: TopDownVAE, x: torch.Tensor) -> tuple[float, float]:
    """(log p(x), ELBO) = (log N(x; ...), E_q[log p(z, x)] + H[q]) for one image x [D]."""
    mean, cov = generative_joint(vae)
    n = len(mean) - DATA_DIM
    log_px = D.MultivariateNormal(mean[n:], cov[n:, n:]).log_prob(x)
    q_mean, q_cov = posterior_joint(vae, x)
    point = torch.cat([q_mean, x]) - mean
    spread = torch.zeros_like(cov)
    spread[:n, :n] = q_cov
    precision = torch.linalg.inv(cov)
    expected_log_joint = -0.5 * (
        len(mean) * math.log(2 * math.pi) + torch.logdet(cov) + point @ precision @ point + torch.trace(precision @ spread)
    )
    entropy = 0.5 * (n * math.log(2 * math.pi * math.e) + torch.logdet(q_cov))
    return float(log_px), float(expected_log_joint + entropy)


@pytest.mark.parametrize("merge", list(LayerMerge))
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_linear_gaussian_elbo_and_log_likelihood_equal_their_closed_forms(float64, merge, depth):
    """The ELBO with every layer's KL in closed form and with it sampled agrees with the closed form
    within 4 standard errors of 20000 samples; L_k at k = 200000 with log p(x) within 0.03 nats (its error here was at most 0.013)."""
    vae = linear_gaussian(merge, depth)
    x = model_data(vae, 1)
    with torch.no_grad():
        for index in range(len(x)):
            log_px, closed_elbo = closed_forms(vae, x[index])
            assert closed_elbo < log_px
            for kl in (KLMode.analytic, KLMode.mc):
                log_likelihood, log_ratio = elbo_terms(vae, x[index : index + 1], 20000, kl)
                per_sample = (log_likelihood + log_ratio)[:, 0]
                se = per_sample.std() / math.sqrt(len(per_sample))
                assert abs(per_sample.mean() - closed_elbo) < 4 * se, (kl, per_sample.mean(), closed_elbo, se)
            bound = iwae(vae, x[index : index + 1], 200000)[0]
            assert abs(bound - log_px) < 0.03, (bound, log_px, closed_elbo)


def test_precision_weighted_merge_is_the_product_of_the_two_gaussians(float64):
    """sigma_q^2 = 1 / (1/sigma_p^2 + 1/sigma_d^2), mu_q = sigma_q^2 (mu_p/sigma_p^2 + mu_d/sigma_d^2), at
    log-variances far apart too; and the normalised product N(mu_p, s_p) N(mu_d, s_d) is that Gaussian."""
    prior = DiagonalGaussian(torch.randn(3, 5), 4 * torch.randn(3, 5))
    estimate = DiagonalGaussian(torch.randn(3, 5), 4 * torch.randn(3, 5))
    merged = precision_weighted(prior, estimate)
    p_prec, d_prec = torch.exp(-prior.log_var), torch.exp(-estimate.log_var)
    var = 1 / (p_prec + d_prec)
    torch.testing.assert_close(merged.log_var, torch.log(var), rtol=0, atol=1e-12)
    torch.testing.assert_close(merged.mean, var * (prior.mean * p_prec + estimate.mean * d_prec), rtol=0, atol=1e-12)
    z = torch.randn(3, 5)
    product = prior.log_prob(z) + estimate.log_prob(z)
    normaliser = DiagonalGaussian(prior.mean, torch.logaddexp(prior.log_var, estimate.log_var)).log_prob(estimate.mean)
    torch.testing.assert_close(merged.log_prob(z), product - normaliser, rtol=0, atol=1e-10)


def test_residual_normal_at_zero_delta_is_the_prior_and_shifts_and_scales_it(float64):
    prior = DiagonalGaussian(torch.randn(4, 3), torch.randn(4, 3))
    same = residual(prior, DiagonalGaussian(torch.zeros(4, 3), torch.zeros(4, 3)))
    assert torch.equal(same.mean, prior.mean) and torch.equal(same.log_var, prior.log_var)
    shifted = residual(prior, DiagonalGaussian(torch.ones(4, 3), torch.full((4, 3), math.log(0.25))))
    torch.testing.assert_close(shifted.mean, prior.mean + 1)
    torch.testing.assert_close(torch.exp(0.5 * shifted.log_var), 0.5 * torch.exp(0.5 * prior.log_var))  # sigma_p * d_sigma


def plain_log_weights(vae: TopDownVAE, x: torch.Tensor, k: int, merge: LayerMerge) -> torch.Tensor:
    """log p(x, z) - log q(z|x) written out: bottom-up features, then from the top each layer's p and
    q by its merge's formula, densities from torch.distributions; noise drawn in the model's order."""
    features, h = [], x
    for step in vae.bottom_up:
        h = step(h)
        features.append(h)
    top = vae.posterior_heads[-1]
    mean, log_var = top.mean(features[-1]), top.log_var(features[-1])
    z = mean + torch.exp(0.5 * log_var) * torch.randn(k, *mean.shape)
    log_q = D.Normal(mean, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)
    log_p = D.Normal(0.0, 1.0).log_prob(z).sum(-1)
    z1 = z
    for index in reversed(range(len(vae.generative_layers))):
        layer, head = vae.generative_layers[index], vae.posterior_heads[index]
        state = layer.trunk(z1)
        mean_p, var_p = layer.mean(state), torch.exp(layer.log_var(state))
        d = features[index].expand(k, *features[index].shape)
        if merge is LayerMerge.precision:
            mean_d, var_d = head.mean(d), torch.exp(head.log_var(d))
            var_q = 1 / (1 / var_p + 1 / var_d)
            mean_q = var_q * (mean_p / var_p + mean_d / var_d)
        else:
            both = torch.cat([d, state], -1)
            mean_q, var_q = head.mean(both), torch.exp(head.log_var(both))
            if merge is LayerMerge.residual:
                mean_q, var_q = mean_p + mean_q, var_p * var_q
        z_next = mean_q + var_q.sqrt() * torch.randn(mean_q.shape)
        log_q = log_q + D.Normal(mean_q, var_q.sqrt()).log_prob(z_next).sum(-1)
        log_p = log_p + D.Normal(mean_p, var_p.sqrt()).log_prob(z_next).sum(-1)
        z1 = z_next
    return vae.decoder.log_prob(x, z1) + log_p - log_q


@pytest.mark.parametrize("merge", list(LayerMerge))
def test_log_weights_equal_a_plain_loop_over_the_layers(float64, merge):
    vae = topdown_vae(merge, [3, 2, 2], hidden=[5], decoder="bernoulli")
    x = torch.bernoulli(torch.full((4, DATA_DIM), 0.5))
    torch.manual_seed(1)
    model = vae.log_weights(x, 6)
    torch.manual_seed(1)
    plain = plain_log_weights(vae, x, 6, merge)
    torch.testing.assert_close(model, plain, rtol=0, atol=1e-10)
    assert model.std(0).min() > 0  # the samples differ


@pytest.mark.parametrize("merge", list(LayerMerge))
def test_each_layers_closed_form_kl_equals_its_monte_carlo_estimate(float64, merge):
    """KL(q(z_l|z_{l+1},x) || p(z_l|z_{l+1})) at a fixed z_{l+1}, against the mean of log q - log p over
    40000 draws of q: within 4 standard errors."""
    vae = topdown_vae(merge, [3, 2, 2], hidden=[5], decoder="bernoulli")
    x = torch.bernoulli(torch.full((2, DATA_DIM), 0.5))
    features = vae.encode(x)
    with torch.no_grad():
        for index in range(len(vae.generative_layers)):
            z_above = torch.randn(2, vae.latent_dims[index + 1])
            prior, q = vae.posterior_below(index, features, z_above)
            z = q.rsample(40000)[0]
            sampled = q.log_prob(z) - prior.log_prob(z)
            se = sampled.std(0) / math.sqrt(len(z))
            assert torch.all((sampled.mean(0) - q.kl(prior)).abs() < 4 * se), (index, sampled.mean(0), q.kl(prior), se)


def test_temperature_zero_follows_the_means_and_temperature_one_draws(float64):
    vae = topdown_vae(LayerMerge.precision, [3, 2, 2], hidden=[5], decoder="bernoulli")
    cold = vae.sample_at_temperatures(4, [0.0, 0.0, 0.0], torch.Generator().manual_seed(0))
    torch.testing.assert_close(cold, vae.decode(torch.zeros(4, 2)), rtol=0, atol=1e-12)
    warm = vae.sample_at_temperatures(4, [1.0, 1.0, 1.0], torch.Generator().manual_seed(0))
    assert (warm[0] - warm[1]).abs().max() > 1e-3  # the draws differ
    top_only = vae.sample_at_temperatures(4, [0.0, 0.0, 1.0], torch.Generator().manual_seed(0))
    z_top = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(top_only, vae.decode(z_top), rtol=0, atol=1e-12)


def test_reconstructions_from_the_top_layers_keep_q_above_and_p_means_below(float64):
    vae = topdown_vae(LayerMerge.residual, [3, 2, 2], hidden=[5], decoder="bernoulli")
    x = torch.bernoulli(torch.full((4, DATA_DIM), 0.5))
    state = torch.get_rng_state()
    kept = [vae.reconstruct_from_top_layers(x, top, seed=3) for top in (1, 2, 3)]
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    torch.manual_seed(3)
    zs = vae.sample_latents(x, 1).zs
    torch.testing.assert_close(kept[2], vae.decoder.mean(zs[0][0]), rtol=0, atol=1e-12)  # every layer q's
    torch.testing.assert_close(kept[0], vae.decode(zs[2][0]), rtol=0, atol=1e-12)  # only z_3: p's means below
    below = vae.generative_layers[0](zs[1][0])[0]
    torch.testing.assert_close(kept[1], vae.decoder.mean(below), rtol=0, atol=1e-12)
