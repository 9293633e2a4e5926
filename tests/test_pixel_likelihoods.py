"""The normalised likelihoods of grey levels: the continuous Bernoulli (Loaiza-Ganem &
Cunningham 2019) and the discretized logistic mixture on the 256 levels j/255 (Salimans et al.
2017), against torch.distributions and closed forms in float64, and as decoders of a run.

Tolerances (float64): identities 1e-10 absolute (torch.distributions' own CB formula is the
looser side: 3e-13 here); Gauss-Legendre quadrature with 20 panels of 50 nodes on [0, 1] is
exact to rounding for these exponentials, 1e-12; probabilities summed over the 256 bins 1e-12.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from tests.helpers import TINY_FIT, needs_frey, needs_mnist
from vaelab.config.compose import load_config
from vaelab.config.schema import Binarize, ModelConfig
from vaelab.errors import ConfigError
from vaelab.evaluate import EVAL_FILE
from vaelab.evaluate import main as evaluate_main
from vaelab.fit import main as fit_main
from vaelab.models.likelihoods import LIKELIHOODS, DiscretizedLogisticLikelihood
from vaelab.models.vae import VAE
from vaelab.probability import pixel_densities as pd
from vaelab.evaluation.scores import bits_per_dim, discrete_bits_per_dim

LEVELS = torch.arange(256, dtype=torch.float64) / 255
# logits from lambda ~ 1e-13 to 1 - 1e-13, and around lambda = 1/2 on both sides of the series' switch
NEAR_HALF = [0.0, 1e-8, -1e-6, 1e-3, -5e-3, 9.99e-3, -1.001e-2, 0.05, -0.0999, 0.1001]


def cb_logits(wide: float) -> torch.Tensor:
    return torch.cat([torch.linspace(-wide, wide, 121), torch.tensor(NEAR_HALF)])


def quadrature(panels: int = 20, nodes: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite Gauss-Legendre nodes and weights on [0, 1]."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    points = np.concatenate([(t + 1) / (2 * panels) + j / panels for j in range(panels)])
    return torch.tensor(points), torch.tensor(np.tile(w / (2 * panels), panels))


# ---------------------------------------------------------------- continuous Bernoulli


def test_continuous_bernoulli_log_density_matches_torch(float64):
    logits = cb_logits(10.0)  # torch's own formula loses digits beyond (its probabilities round)
    x = torch.rand(len(logits))
    expected = D.ContinuousBernoulli(logits=logits).log_prob(x)
    got = torch.stack([pd.continuous_bernoulli_log_prob(x[i : i + 1], logits[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(pd.continuous_bernoulli_mean(logits), D.ContinuousBernoulli(logits=logits).mean, atol=1e-10, rtol=0)


def test_continuous_bernoulli_integrates_to_one_and_its_mean_is_not_lambda(float64):
    logits = cb_logits(40.0)
    t, w = quadrature()
    log_density = pd.continuous_bernoulli_log_prob(t[None, :, None], logits[:, None, None].expand(-1, len(t), 1))  # D = 1
    density = log_density.exp()
    torch.testing.assert_close(density @ w, torch.ones(len(logits)), atol=1e-12, rtol=0)
    mean = (density * t) @ w
    torch.testing.assert_close(pd.continuous_bernoulli_mean(logits), mean, atol=1e-12, rtol=0)
    assert pd.continuous_bernoulli_mean(torch.tensor(2.0)) < torch.sigmoid(torch.tensor(2.0)) - 0.1


def test_continuous_bernoulli_in_float32_near_one_half():
    """The series near lambda = 1/2: float32 within 1e-6 of float64, and finite gradients at 0."""
    logits = torch.tensor(NEAR_HALF + [-0.3, 0.3], requires_grad=True)
    log_norm = pd.continuous_bernoulli_log_norm(logits)
    torch.testing.assert_close(log_norm.double(), pd.continuous_bernoulli_log_norm(logits.detach().double()), atol=1e-6, rtol=0)
    mean = pd.continuous_bernoulli_mean(logits)
    torch.testing.assert_close(mean.double(), pd.continuous_bernoulli_mean(logits.detach().double()), atol=3e-6, rtol=0)
    (log_norm.sum() + mean.sum()).backward()
    assert bool(torch.isfinite(logits.grad).all())


# ---------------------------------------------------------------- discretized logistic


def test_discretized_logistic_sums_to_one_over_the_256_bins(float64):
    for mu in (-0.5, 0.0, 0.3, 1.0, 1.5):
        for log_scale in (-7.0, -3.0, 0.0, 2.0):
            log_p = pd.discretized_logistic_log_probs(LEVELS[:, None], torch.full((256, 1), mu), torch.full((256, 1), log_scale))
            total = torch.logsumexp(log_p.squeeze(-1), 0).exp()
            torch.testing.assert_close(total, torch.tensor(1.0), atol=1e-12, rtol=0, msg=f"mu={mu}, log s={log_scale}")
    # a mixture of 3 with random parameters, per dimension: D = 256 copies, one level each
    means, log_scales, logits = torch.randn(1, 3) * 0.5 + 0.5, torch.rand(1, 3) * -5, torch.randn(1, 3)
    log_p = torch.stack([
        pd.discretized_logistic_mixture_log_prob(level.view(1), means, log_scales, logits) for level in LEVELS
    ])
    torch.testing.assert_close(torch.logsumexp(log_p, 0).exp(), torch.tensor(1.0), atol=1e-12, rtol=0)


def test_discretized_logistic_bins_by_hand(float64):
    """Edge bins to -inf and +inf, an interior bin, against sigmoid differences; the bins
    centred on j/255, 1/255 wide."""
    mu, log_s = torch.tensor([[0.4]]), torch.tensor([[-2.5]])
    cdf = lambda edge: torch.sigmoid((edge - mu) / math.exp(-2.5))  # noqa: E731
    for j, expected in [(0, cdf(0.5 / 255)), (255, 1 - cdf(254.5 / 255)), (100, cdf(100.5 / 255) - cdf(99.5 / 255))]:
        got = pd.discretized_logistic_log_probs(torch.tensor([[j / 255]]), mu, log_s).exp()
        torch.testing.assert_close(got, expected, atol=1e-14, rtol=1e-12, msg=f"bin {j}")


def test_discretized_logistic_far_in_a_tail_where_the_difference_underflows(float64):
    """sigmoid(a) - sigmoid(b) is 0 in float64 there; the log-probability is -b + log(1 - e^-(a - b))."""
    mu, log_s, x = torch.tensor([[0.0]]), torch.tensor([[-7.0]]), torch.tensor([[0.5]])
    a, b = (x + 0.5 / 255 - mu) * math.exp(7.0), (x - 0.5 / 255 - mu) * math.exp(7.0)
    assert float(torch.sigmoid(a) - torch.sigmoid(b)) == 0.0  # the premise
    expected = -b + torch.log1p(-torch.exp(-(a - b)))  # sigmoid(-b) - sigmoid(-a) to 1e-200
    torch.testing.assert_close(pd.discretized_logistic_log_probs(x, mu, log_s), expected, atol=0, rtol=1e-12)


def test_a_mixture_of_one_is_the_single_logistic(float64):
    x = torch.rand(4, 30).mul(255).round() / 255
    means, log_scales = torch.randn(4, 30, 1), torch.randn(4, 30, 1) - 2
    single = pd.discretized_logistic_mixture_log_prob(x, means, log_scales, None)
    by_hand = pd.discretized_logistic_log_probs(x, means.squeeze(-1), log_scales.squeeze(-1)).sum(-1)
    torch.testing.assert_close(single, by_hand, atol=1e-12, rtol=0)
    # K = 1 with a logit, and K = 2 of the same component, are the same distribution
    torch.testing.assert_close(pd.discretized_logistic_mixture_log_prob(x, means, log_scales, torch.randn(4, 30, 1)), single)
    twice = pd.discretized_logistic_mixture_log_prob(x, means.repeat(1, 1, 2), log_scales.repeat(1, 1, 2), torch.randn(4, 30, 2))
    torch.testing.assert_close(twice, single)
    assert DiscretizedLogisticLikelihood(lambda: torch.nn.Linear(3, 30), 1, -7.0).logit_heads is None


def test_discretized_logistic_mean_and_samples_on_the_levels(float64):
    means, log_scales, logits = torch.randn(5, 2) * 0.6 + 0.5, torch.rand(5, 2) * -4, torch.randn(5, 2)
    log_p = pd.discretized_logistic_log_probs(LEVELS[:, None, None], means, log_scales) + F.log_softmax(logits, -1)
    expected = (torch.logsumexp(log_p, -1).exp() * LEVELS[:, None]).sum(0)  # sum_j j/255 P(j)
    torch.testing.assert_close(pd.discretized_logistic_mixture_mean(means, log_scales, logits), expected, atol=1e-12, rtol=0)
    draws = pd.discretized_logistic_mixture_sample(means.expand(1000, 5, 2), log_scales.expand(1000, 5, 2), logits.expand(1000, 5, 2))
    levels = draws * 255
    assert bool(((levels - levels.round()).abs() < 1e-9).all()) and draws.min() >= 0 and draws.max() <= 1


def test_logistic_decoder_of_a_three_channel_image(float64):
    """C x H x W data of any channel count: each dimension an independent mixture."""
    vae = VAE(ModelConfig(decoder="logistic", mixtures=2, latent_dim=4, hidden=[16]), (3, 4, 5))
    x = torch.randint(0, 256, (2, 60)) / 255
    log_w = vae.log_weights(x, k=3)
    assert log_w.shape == (3, 2) and bool(torch.isfinite(log_w).all())
    mean = vae.reconstruct(x)
    assert mean.shape == (2, 60) and mean.min() >= 0 and mean.max() <= 1


def test_logistic_refuses_binarized_data():
    with pytest.raises(ConfigError, match=r"^model.decoder=logistic .* data.binarize=dynamic; add data.binarize=none$"):
        load_config(["model=logistic"])
    with pytest.raises(ConfigError, match=r"model.mixtures=0 is invalid"):
        load_config(["model=logistic", "data.binarize=none", "model.mixtures=0"])
    assert load_config(["experiment=kingma_mnist_logistic"])[1].data.binarize is Binarize.none


# ---------------------------------------------------------------- bits per dimension, on runs


def test_bits_per_dim_only_for_discrete_likelihoods():
    assert discrete_bits_per_dim(-784 * math.log(2), 784, LIKELIHOODS["logistic"], False) == pytest.approx(1.0, abs=1e-12)
    assert discrete_bits_per_dim(-100.0, 784, LIKELIHOODS["bernoulli"], True) == pytest.approx(100 / (784 * math.log(2)))
    for decoder in ("bernoulli", "continuous_bernoulli", "gaussian_learned"):
        assert discrete_bits_per_dim(-100.0, 784, LIKELIHOODS[decoder], False) is None


def fit_and_evaluate(run_dir, words: list[str]) -> tuple[dict, dict]:
    assert fit_main([*TINY_FIT, "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", *words, f"run.dir={run_dir}"]) == 0
    assert evaluate_main([f"ckpt={run_dir}", "eval.ll_samples=10", "eval.iwae_k=[1]"]) == 0
    return json.loads((run_dir / "summary.json").read_text()), json.loads((run_dir / EVAL_FILE).read_text())


@pytest.mark.slow
@needs_mnist
def test_logistic_run_reports_bits_per_dim(tmp_path, capsys):
    summary, result = fit_and_evaluate(tmp_path / "run", ["model=logistic", "data.binarize=none", "model.mixtures=2"])
    assert summary["bits_per_dim"] == pytest.approx(-summary["test_ll"] / (784 * math.log(2)), rel=1e-12)
    assert result["test_ll"] == pytest.approx(summary["test_ll"], rel=1e-6)  # the same samples
    assert result["bits_per_dim"] == pytest.approx(-result["test_ll"] / (784 * math.log(2)), rel=1e-12)
    assert result["test_bits_per_dim"] is None  # no 8-bit conversion of what is already a probability
    assert 0 < result["bits_per_dim"] < 8  # better than uniform on the 256 levels after 3 steps
    assert f"({summary['bits_per_dim']:.3f} bits/dim)" in capsys.readouterr().out


@pytest.mark.slow
@needs_frey
def test_continuous_bernoulli_run_on_frey_has_no_discrete_bits(tmp_path):
    summary, result = fit_and_evaluate(tmp_path / "run", ["data=frey", "model=continuous_bernoulli"])
    assert summary["bits_per_dim"] is None and result["bits_per_dim"] is None
    assert result["test_bits_per_dim"] == pytest.approx(bits_per_dim(result["test_ll"], 560))
    assert (tmp_path / "run" / "samples.png").is_file()
