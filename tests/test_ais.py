"""AIS and BDMC (vaelab/probability/ais.py, vaelab/evaluation/ais_scores.py) against the closed-form
log p(x) of the linear-Gaussian VAE of tests/helpers/, in float64, and ``vaelab.evaluate
eval.ais_steps=... eval.bdmc_images=...`` on a tiny fit. Tolerances: what seeds 0-4 gave, with
room (docs/testing.md#tolerances-and-waits).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.helpers import DATA_DIM, LATENT_DIM, SIGMA, TINY_FIT, closed_form_log_likelihood, linear_gaussian_vae, needs_mnist
from vaelab.config.schema import EvalConfig
from vaelab.errors import ConfigError
from vaelab.evaluate import EVAL_FILE, main
from vaelab.fit import main as fit_main
from vaelab.probability.ais import point_at, hmc_step, sigmoid_schedule
from vaelab.evaluation.ais_scores import AISSettings, ais_log_likelihoods, bdmc


def test_sigmoid_schedule_runs_from_0_to_1_symmetrically():
    betas = sigmoid_schedule(50)
    assert betas[0] == 0 and betas[-1] == 1 and len(betas) == 51
    assert bool((betas.diff() > 0).all())
    torch.testing.assert_close(betas + betas.flip(0), torch.ones(51, dtype=torch.float64), atol=1e-12, rtol=0)
    assert betas[1] < 1 / 50 / 4  # denser at the ends than a linear schedule
    with pytest.raises(ValueError):
        sigmoid_schedule(0)


def test_hmc_keeps_a_gaussian_target_with_a_step_too_large_for_leapfrog_alone(float64):
    """Started at exact samples of N(m, diag(s^2)), 10 transitions keep its mean and variance
    (20000 chains: 4 standard errors); with step 1.2 the leapfrog trajectory alone would not,
    so this needs the Metropolis correction."""
    m, s = torch.tensor([1.0, -2.0]), torch.tensor([0.7, 1.5])

    def log_prior(z):
        return torch.zeros(z.shape[:-1])

    def log_likelihood(z):
        return (-0.5 * ((z - m) / s).square()).sum(-1)

    point = point_at(m + s * torch.randn(20000, 2), log_prior, log_likelihood)
    step = torch.full((20000, 1), 1.2)
    accepted = []
    for _ in range(10):
        point, acceptance = hmc_step(point, 1.0, step, 3, log_prior, log_likelihood)
        accepted.append(acceptance.mean().item())
    z = point.z
    se = s / math.sqrt(len(z))
    assert bool(((z.mean(0) - m).abs() < 4 * se).all()), z.mean(0)
    assert bool(((z.var(0) / s**2 - 1).abs() < 4 * math.sqrt(2 / len(z))).all()), z.var(0)
    assert 0.05 < sum(accepted) / len(accepted) < 0.95  # a real test of the correction: some proposals rejected


def linear_gaussian_data(n: int):
    vae = linear_gaussian_vae()
    with torch.no_grad():
        x = vae.decoder.mean(torch.randn(n, LATENT_DIM)) + SIGMA * torch.randn(n, DATA_DIM)
    return vae, x, closed_form_log_likelihood(vae, x)


def test_ais_approaches_the_closed_form_as_the_steps_grow(float64):
    """Mean |AIS - log p(x)| over 10 images, 8 chains of 5 leapfrog steps: 0.6-1.7 nats at 10
    steps, 0.2-0.4 at 100 and 0.07-0.15 at 500 (seeds 0-3); the step size adapts toward
    acceptance 0.65 (0.74 on average over the 500 steps, from a step size of 0.05)."""
    vae, x, exact = linear_gaussian_data(10)
    errors = {}
    for steps in (10, 100, 500):
        scores = ais_log_likelihoods(vae, x, AISSettings(steps, chains=8, leapfrog=5, step_size=0.05))
        errors[steps] = (scores.log_likelihood - exact).abs().mean().item()
    assert errors[10] > 0.4 and errors[100] < errors[10] and errors[500] < errors[100] and errors[500] < 0.25, errors
    assert 0.55 < scores.acceptance.mean().item() < 0.9
    assert 0.1 < scores.step_size.mean().item() <= 1.0


def test_bdmc_brackets_the_closed_form(float64):
    """On 50 images simulated from the model (4 chains): with 10 steps the forward bound is ~2 nats
    below log p(x) on average and the reverse ~1.6 above (s.e. 0.5 and 0.2); with 100 steps on 20
    images both are within 0.25 of it (seeds 0-4: -0.22..+0.09), so the gap closes."""
    vae = linear_gaussian_vae()
    loose = bdmc(vae, 50, AISSettings(10, chains=4, leapfrog=5))
    exact = closed_form_log_likelihood(vae, loose.images)
    assert (loose.lower - exact).mean() < -0.5 and (loose.upper - exact).mean() > 0.5
    tight = bdmc(vae, 20, AISSettings(100, chains=4, leapfrog=5))
    exact = closed_form_log_likelihood(vae, tight.images)
    assert abs((tight.lower - exact).mean()) < 0.4 and abs((tight.upper - exact).mean()) < 0.25
    assert (tight.upper - tight.lower).mean() < 0.5 < (loose.upper - loose.lower).mean()
    assert 0.5 < tight.acceptance_forward.mean() <= 1 and 0.5 < tight.acceptance_reverse.mean() <= 1


def test_bdmc_needs_ais_steps():
    with pytest.raises(ConfigError, match="eval.bdmc_images"):
        EvalConfig(bdmc_images=5)
    with pytest.raises(ConfigError, match="eval.ais_steps"):
        EvalConfig(ais_steps=-1)


@pytest.mark.slow
@needs_mnist
def test_evaluate_reports_ais_and_bdmc(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert fit_main([*TINY_FIT, "model=bernoulli", f"run.dir={run_dir}"]) == 0
    words = [f"ckpt={run_dir}", "eval.ll_samples=10", "eval.ais_steps=5", "eval.ais_chains=2", "eval.ais_leapfrog=2",
             "eval.ais_images=4", "eval.bdmc_images=3", "eval.num_images=4", "eval.interpolation_pairs=1"]
    capsys.readouterr()
    assert main(words) == 0
    out = capsys.readouterr().out
    result = json.loads((run_dir / EVAL_FILE).read_text())
    ais, both = result["ais"], result["bdmc"]
    assert (ais["steps"], ais["chains"], ais["leapfrog"], ais["images"]) == (5, 2, 2, 4)
    assert math.isfinite(ais["test_ll"]) and ais["test_ll"] < 0 and 0 < ais["acceptance"] <= 1
    assert ais["minus_ll_samples"] == pytest.approx(ais["test_ll"] - ais["ll_samples_same_images"])
    assert both["images"] == 3 and both["gap"] == pytest.approx(both["upper"] - both["lower"])
    assert f"{ais['test_ll']:.2f}" in out and "AIS (5 steps x 2 chains)" in out and f"gap {both['gap']:.2f}" in out
    # without eval.ais_steps nothing is annealed
    assert main(words[:2]) == 0
    result = json.loads((run_dir / EVAL_FILE).read_text())
    assert result["ais"] is None and result["bdmc"] is None and "AIS" not in capsys.readouterr().out
