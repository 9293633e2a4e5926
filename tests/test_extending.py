"""A prior of one's own, outside vaelab (examples/laplace_prior.py, docs/extending.md).

Fast: the Laplace prior's density against ``torch.distributions.Laplace``, its samples' moments,
its generator, its quantile function, and a VAE that builds it from ``PriorConfig(name=custom)``.
Slow (they start ``python -m vaelab.fit`` processes, forked from one Python start-up as in
tests/test_fit.py, on tiny MNIST files written here): every bad ``prior.target``/``prior.args`` is
one line on stderr with exit status 2, and a real tiny fit with the custom prior from the command
line, then ``vaelab.evaluate`` and ``run.resume`` on its run directory, which rebuild the prior
from the saved config.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import distributions as D

from tests.helpers import PROJECT, TINY_FIT, Command, run_forked, write_mnist
from vaelab.config.schema import KLMode, ModelConfig, PriorConfig
from vaelab.models.priors import Prior
from vaelab.targets import load_class
from vaelab.models.vae import VAE
from vaelab.probability import objectives
from vaelab.evaluation.pictures import manifold_problem

EXAMPLE = PROJECT / "examples" / "laplace_prior.py"
TARGET = f"{EXAMPLE}:LaplacePrior"  # absolute: whatever the working directory
RELATIVE_TARGET = "examples/laplace_prior.py:LaplacePrior"  # as a user types it, from the project root
ERROR_PREFIX = "vaelab.fit: error:"

# The class as vaelab loads it (the same module object the VAE's prior comes from).
LaplacePrior = load_class(TARGET, "prior.target")


# ---------------------------------------------------------------- the prior itself (fast)


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_log_prob_is_torch_laplace_summed_over_coordinates(scale, float64):
    prior = LaplacePrior(latent_dim=4, scale=scale)
    z = 3.0 * torch.randn(5, 7, 4)
    expected = D.Laplace(torch.zeros(4), torch.full((4,), scale)).log_prob(z).sum(-1)
    actual = prior.log_prob(z)
    assert actual.shape == (5, 7)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_samples_have_the_laplace_moments_and_cdf():
    """200000 draws of 3 coordinates, scale 0.5: mean 0, variance 2 b^2 = 0.5, E|z| = b, and the
    empirical CDF at a few points. Tolerances are about 6 standard errors: mean sqrt(0.5 / n) =
    0.0016 (tol 0.01); variance sqrt(20 b^4 / n) = 0.0025 (tol 0.015); E|z| b / sqrt(n) = 0.0011
    (tol 0.007); a CDF value at most 0.5 / sqrt(n) = 0.0011 (tol 0.007)."""
    n, scale = 200_000, 0.5
    prior = LaplacePrior(latent_dim=3, scale=scale)
    draws = prior.sample(n, torch.Generator().manual_seed(1))
    assert draws.shape == (n, 3) and draws.dtype == torch.get_default_dtype()
    assert torch.isfinite(draws).all()
    z = draws.double()
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=0.01)
    torch.testing.assert_close(z.var(0), torch.full((3,), 2 * scale**2, dtype=torch.float64), rtol=0, atol=0.015)
    torch.testing.assert_close(z.abs().mean(0), torch.full((3,), scale, dtype=torch.float64), rtol=0, atol=0.007)
    laplace = D.Laplace(torch.tensor(0.0, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    for point in (-1.0, -0.2, 0.0, 0.3, 1.5):
        empirical = (z <= point).double().mean(0)
        expected = laplace.cdf(torch.tensor(point, dtype=torch.float64)).expand(3)
        torch.testing.assert_close(empirical, expected, rtol=0, atol=0.007)


def test_sample_uses_the_generator_and_only_it():
    prior = LaplacePrior(latent_dim=5, scale=2.0)
    global_state = torch.get_rng_state()
    a = prior.sample(100, torch.Generator().manual_seed(7))
    b = prior.sample(100, torch.Generator().manual_seed(7))
    c = prior.sample(100, torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), global_state), "sample(n, generator) drew from the global generator"
    assert a.shape == (100, 5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_icdf_inverts_the_laplace_cdf(float64):
    scale = 0.7
    prior = LaplacePrior(latent_dim=2, scale=scale)
    laplace = D.Laplace(torch.tensor(0.0), torch.tensor(scale))
    u = torch.linspace(1e-6, 1 - 1e-6, 1001)
    z = prior.icdf(u)
    torch.testing.assert_close(laplace.cdf(z), u, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z, laplace.icdf(u), rtol=1e-9, atol=1e-12)
    grid = torch.linspace(-6.0, 6.0, 241)
    torch.testing.assert_close(prior.icdf(laplace.cdf(grid)), grid, rtol=1e-9, atol=1e-9)
    assert prior.icdf(torch.tensor([0.5])).item() == 0.0
    # both tails stay exact far out: F^-1(1e-300) = b log(2e-300), F^-1(1 - 2^-52) = -b log(2^-51)
    torch.testing.assert_close(prior.icdf(torch.tensor([1e-300])), torch.tensor([scale * math.log(2e-300)]))
    torch.testing.assert_close(prior.icdf(torch.tensor([1 - 2.0**-52])), torch.tensor([scale * 51 * math.log(2)]))


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_a_scale_that_is_not_positive_and_finite_is_a_value_error(scale):
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        LaplacePrior(latent_dim=2, scale=scale)


def test_the_prior_has_no_closed_form_kl_and_default_scale_one():
    prior = LaplacePrior(latent_dim=3)
    assert isinstance(prior, Prior)
    assert prior.scale == 1.0
    assert not prior.has_closed_form_kl
    assert list(prior.parameters()) == [] and prior.state_dict() == {}


# ---------------------------------------------------------------- in a VAE, from the config (fast)


def custom_vae(latent_dim: int = 3) -> VAE:
    cfg = ModelConfig(latent_dim=latent_dim, hidden=[16])
    prior = PriorConfig(name="custom", target=TARGET, args={"scale": 0.5})
    return VAE(cfg, 12, prior=prior)


def test_a_vae_with_prior_name_custom_builds_the_laplace_prior():
    torch.manual_seed(0)
    vae = custom_vae()
    assert type(vae.prior) is LaplacePrior
    assert vae.prior.scale == 0.5 and vae.prior.latent_dim == 3
    assert objectives.analytic_kl(vae, KLMode.analytic) is False
    x = torch.bernoulli(torch.full((4, 12), 0.5))
    # with no closed form, kl=analytic samples the KL: the same numbers as kl=mc from the same noise
    torch.manual_seed(1)
    analytic = objectives.elbo(vae, x, 3, KLMode.analytic)
    torch.manual_seed(1)
    sampled = objectives.elbo(vae, x, 3, KLMode.mc)
    assert analytic.shape == (4,) and torch.isfinite(analytic).all()
    torch.testing.assert_close(analytic, sampled, rtol=0, atol=0)
    assert vae.sample(6, torch.Generator().manual_seed(0)).shape == (6, 12)


def test_a_2d_laplace_prior_can_draw_the_manifold():
    assert manifold_problem(custom_vae(latent_dim=2)) is None


# ---------------------------------------------------------------- the command line (slow: processes)


NOT_A_PRIOR = "class NotAPrior:\n    def __init__(self, latent_dim):\n        pass\n"
BROKEN = "import no_such_module_for_vaelab_tests\n"

# case -> (words after the tiny fit's, substrings the one error line must hold)
BAD_PRIOR = {
    "unknown argument": (
        ["prior.name=custom", f"prior.target={RELATIVE_TARGET}", "prior.args.scal=0.5"],
        ["prior.args: LaplacePrior got an unexpected keyword argument 'scal'", "it takes latent_dim, scale"],
    ),
    "bad value": (
        ["prior.name=custom", f"prior.target={RELATIVE_TARGET}", "prior.args.scale=-1"],
        ["prior.args: LaplacePrior(", "scale=-1) failed", "scale must be a finite number > 0"],
    ),
    "missing file": (
        ["prior.name=custom", "prior.target=examples/no_such_prior.py:LaplacePrior"],
        ["prior.target=examples/no_such_prior.py:LaplacePrior", f"no file {PROJECT / 'examples' / 'no_such_prior.py'}"],
    ),
    "missing class": (
        ["prior.name=custom", "prior.target=examples/laplace_prior.py:GammaPrior"],
        ["prior.target=examples/laplace_prior.py:GammaPrior", "has no class GammaPrior"],
    ),
    "target without name=custom": (
        [f"prior.target={RELATIVE_TARGET}"],
        [f"prior.target={RELATIVE_TARGET} is invalid", "null unless prior.name=custom (it is standard)"],
    ),
    "not a Prior": (
        ["prior.name=custom", "prior.target={tmp}/not_a_prior.py:NotAPrior"],
        ["prior.target={tmp}/not_a_prior.py:NotAPrior", "NotAPrior is not a vaelab.models.priors.Prior"],
    ),
    "file that fails to import": (
        ["prior.name=custom", "prior.target={tmp}/broken.py:LaplacePrior"],
        ["cannot import {tmp}/broken.py", "ModuleNotFoundError", "no_such_module_for_vaelab_tests"],
    ),
}


def tiny_fit_words(data_root: Path) -> list[str]:
    """tests.helpers.TINY_FIT on tiny MNIST files (60 training images, 20 test images)."""
    return [
        *TINY_FIT, f"data.root={data_root}", "data.download=false", "data.val_size=20",
        "data.batch_size=10", "eval.batch_size=10",
    ]


def forked_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
    env.pop("VAELAB_DATA_DIR", None)
    return env


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-mnist")
    write_mnist(root, n_train=60, n_test=20)
    return root


@pytest.fixture(scope="module")
def bad_prior_runs(tmp_path_factory, tiny_data):
    """``python -m vaelab.fit`` once per BAD_PRIOR case, all at once, from the project root
    (so the relative prior.target resolves); returns case -> (tmp, result)."""
    folders, commands = {}, []
    for case, (words, _) in BAD_PRIOR.items():
        tmp = folders[case] = tmp_path_factory.mktemp("bad-prior")
        (tmp / "not_a_prior.py").write_text(NOT_A_PRIOR)
        (tmp / "broken.py").write_text(BROKEN)
        argv = [*tiny_fit_words(tiny_data), f"run.dir={tmp / 'run'}", *(word.format(tmp=tmp) for word in words)]
        commands.append(Command(argv, cwd=PROJECT))
    results = run_forked([commands], env=forked_env(), timeout=300)
    return {case: (folders[case], result) for case, result in zip(BAD_PRIOR, results)}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_PRIOR))
def test_a_bad_custom_prior_is_one_line_and_exit_status_2(case, bad_prior_runs):
    tmp, result = bad_prior_runs[case]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line:\n{result.stderr[-3000:]}"
    line = lines[0]
    assert line.startswith(ERROR_PREFIX), line
    for expected in BAD_PRIOR[case][1]:
        assert expected.format(tmp=tmp) in line, line
    assert not (tmp / "run").exists(), "a bad prior must stop before the run directory is made"


@pytest.mark.slow
def test_fit_evaluate_and_resume_with_a_custom_prior_from_the_command_line(tmp_path, tiny_data):
    """The README's command with a tiny budget, run from the project root with the relative path;
    then vaelab.evaluate and run.resume rebuild the prior (scale 0.5) from the saved config."""
    run_dir, first_summary = tmp_path / "run", tmp_path / "first-summary.json"
    fit = [
        *tiny_fit_words(tiny_data), f"run.dir={run_dir}", "model=bernoulli", "model.latent_dim=2",
        "prior.name=custom", f"prior.target={RELATIVE_TARGET}", "prior.args.scale=0.5",
    ]
    keep_first_summary = f"import shutil; shutil.copy({str(run_dir / 'summary.json')!r}, {str(first_summary)!r})"
    stages = [
        [Command(fit, cwd=PROJECT)],
        # max(eval.iwae_k) <= eval.ll_samples (10): evaluate then draws the fit's test samples
        [Command([f"ckpt={run_dir}", "eval.iwae_k=[1,5]"], cwd=PROJECT, module="vaelab.evaluate")],
        # the resume rewrites summary.json: its process first keeps the first session's aside
        [Command([f"run.resume={run_dir}", "trainer.max_epochs=2"], cwd=PROJECT, before=keep_first_summary)],
    ]
    fitted, evaluated, resumed = run_forked(stages, env=forked_env(), timeout=300)

    assert fitted.returncode == 0, fitted.stderr[-3000:]
    summary = json.loads(first_summary.read_text())
    assert math.isfinite(summary["test_ll"]) and math.isfinite(summary["test_elbo"])
    assert summary["prior"] == "custom" and summary["val_kl"] == "mc"
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.prior.name == "custom" and saved.prior.target == RELATIVE_TARGET and saved.prior.args.scale == 0.5

    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((run_dir / "eval.json").read_text())
    # the same checkpoint, seed and samples (vaelab/evaluate.py's docstring): the fit's log-likelihood,
    # which it is only if the prior was rebuilt with scale 0.5
    assert results["test_ll"] == pytest.approx(summary["test_ll"], abs=1e-3)
    assert (run_dir / "eval_manifold.png").is_file()  # drawn through LaplacePrior.icdf

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 2
