"""``python -m vaelab.evaluate``: the estimators against closed forms, the pictures' geometry,
and the command on real checkpoints written by tiny in-process fits.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import (
    DATA_DIM,
    PROJECT,
    TINY_FIT,
    closed_form_elbo,
    closed_form_log_likelihood,
    linear_gaussian_vae,
    needs_frey,
    needs_mnist,
    set_posterior,
)
from vaelab.config.schema import ModelConfig, StochasticLayerConfig
from vaelab.evaluate import EVAL_FILE, main
from vaelab.fit import main as fit_main
from vaelab.models import compiled
from vaelab.models.compiled import importance_estimates, should_compile_estimates
from vaelab.models.vae import VAE
from vaelab.training.loggers import wandb_run_id
from vaelab.evaluation.pictures import PALETTE, lerp, manifold_points, slerp
from vaelab.evaluation.scores import active_units, bits_per_dim, score

ERROR_PREFIX = "vaelab.evaluate: error:"


# ================================================================ the estimators, in float64


# (the float64 fixture is in conftest.py)


def near_posterior_vae() -> VAE:
    """The linear-Gaussian VAE of tests/helpers/ with q near the exact posterior, but wider
    and shifted: every bound is strictly below log p(x), and the ELBO known in closed form."""
    vae = linear_gaussian_vae()
    set_posterior(vae, log_var_shift=0.7, mean_shift=0.3)
    return vae


def test_estimates_match_the_closed_forms(float64):
    """With S = 100000 samples, L_S equals log p(x) and the mean log-weight equals the closed-form
    ELBO within 0.05 nats; L_1 < L_5 < L_50 < log p(x) (what 20 seeds of this set-up gave:
    docs/testing.md#tolerances-and-waits)."""
    vae = near_posterior_vae()
    x = torch.randn(5, DATA_DIM) * 2
    exact, exact_elbo = closed_form_log_likelihood(vae, x), closed_form_elbo(vae, x).detach()
    scores = score(vae, x, ll_samples=100_000, iwae_k=[1, 5, 50], chunk_size=10_000, batch_size=3)
    torch.testing.assert_close(scores.ll, exact, atol=0.05, rtol=0.0)
    torch.testing.assert_close(scores.elbo, exact_elbo, atol=0.05, rtol=0.0)
    assert (exact - exact_elbo > 0.2).all(), "the premise: q is far enough from p(z|x) for a visible gap"
    iwae = scores.iwae
    torch.testing.assert_close(iwae[1], scores.elbo)  # the same 100000 log-weights
    assert (iwae[1] < iwae[5]).all() and (iwae[5] < iwae[50]).all() and (iwae[50] < exact).all()
    assert (scores.elbo < scores.ll).all()


def test_iwae_estimates_are_ordered_per_image_when_k_divides(float64):
    """From one stream of samples, L_k <= L_k' for every image when k divides k' (Jensen in
    each group), whatever the noise; L_S over all samples is the largest, L_1 the ELBO."""
    vae = near_posterior_vae()
    x = torch.randn(50, DATA_DIM) * 3
    scores = score(vae, x, ll_samples=60, iwae_k=[1, 2, 6, 30, 60], chunk_size=7, batch_size=16)
    chain = [scores.iwae[k] for k in (1, 2, 6, 30, 60)]
    for low, high in zip(chain, chain[1:]):
        assert (low <= high + 1e-12).all()
    torch.testing.assert_close(scores.iwae[60], scores.ll)
    torch.testing.assert_close(scores.iwae[1], scores.elbo)


def estimates_with_seed(vae: VAE, x: torch.Tensor, compile: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """L_S, the ELBO and L_5 from seed 3, and the generator's next draw."""
    torch.manual_seed(3)
    with torch.inference_mode():
        estimates = importance_estimates(vae, x, samples=20, chunk_size=10, iwae_k=[5], compiled=compile)
    return [estimates.log_likelihood, estimates.elbo, estimates.iwae[5]], torch.randn(3)


@pytest.mark.slow  # compiles the estimate
@pytest.mark.skipif(not compiled.has_cpp_compiler(), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_estimates_draw_the_same_samples(float64):
    """torch.compile changes the estimates only by rounding: the same noise, from torch's generator."""
    vae = linear_gaussian_vae()
    x = torch.randn(4, DATA_DIM)
    eager, after_eager = estimates_with_seed(vae, x, compile=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast, after_fast = estimates_with_seed(vae, x, compile=True)
    assert not [w for w in caught if "torch.compile failed" in str(w.message)], "compiled: fell back to eager"
    for a, b in zip(eager, fast):
        torch.testing.assert_close(a, b)
    assert torch.equal(after_eager, after_fast)  # as many draws from the generator


def test_compile_failure_falls_back_to_eager_with_one_warning(float64, monkeypatch):
    def broken(*args, **kwargs):
        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler\nmore detail")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(compiled, "_failed_devices", set())
    vae = linear_gaussian_vae()
    x = torch.randn(4, DATA_DIM)
    eager, after_eager = estimates_with_seed(vae, x, compile=False)
    with pytest.warns(UserWarning, match=r"torch.compile failed, .*eval.compile=false.*: no C\+\+ compiler$") as caught:
        fallen_back, after_fallback = estimates_with_seed(vae, x, compile=True)
    assert len(caught) == 1  # not once per chunk
    for a, b in zip(eager, fallen_back):
        assert torch.equal(a, b)
    assert torch.equal(after_eager, after_fallback)


def test_estimates_compile_by_themselves_on_a_cpu_from_twenty_million_samples(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(compiled, "has_cpp_compiler", lambda: True)
    assert should_compile_estimates(None, cpu, 2 * 10**7) and not should_compile_estimates(None, cpu, 2 * 10**7 - 1)
    assert not should_compile_estimates(None, torch.device("cuda"), 10**9)  # not measured there: only when asked
    assert should_compile_estimates(True, torch.device("cuda"), 1) and not should_compile_estimates(False, cpu, 10**9)
    monkeypatch.setattr(compiled, "has_cpp_compiler", lambda: False)
    assert not should_compile_estimates(None, cpu, 10**9)


def test_active_units_on_constructed_encoders(float64):
    """z_1 = (0, 0.005**0.5 s, 0.02**0.5 s, s + ...) for a +-1 signal s, so the variances over
    the data are 0, 0.005, 0.02 and >= 1; z_2 = A z_1 + a with A picking none, z_1[2] and 2 z_1[3]."""
    cfg = ModelConfig(
        decoder="gaussian", latent_dim=4, hidden=[], sigmoid_mean=False,
        upper_layers=[StochasticLayerConfig(hidden=[], latent_dim=3)],
    )
    vae = VAE(cfg, DATA_DIM)
    x = torch.randn(100, DATA_DIM)
    x[:, 0] = torch.tensor([1.0, -1.0]).repeat(50)  # mean 0, variance 1 exactly
    weights = torch.zeros(4, DATA_DIM)
    weights[1, 0], weights[2, 0] = 0.005**0.5, 0.02**0.5
    weights[3] = torch.tensor([1.0, 0.5, -0.5, 0.2, 0.0, 0.3])
    upper = torch.zeros(3, 4)
    upper[1, 2], upper[2, 3] = 1.0, 2.0
    with torch.no_grad():
        first, second = vae.encoders
        first.mean.weight.copy_(weights)
        first.mean.bias.copy_(torch.tensor([0.3, -1.0, 2.0, 0.0]))
        first.log_var.weight.zero_()
        first.log_var.bias.fill_(-2.0)  # q(z_1|x) has spread: E_q[z_2|x] is an average over it
        second.mean.weight.copy_(upper)
        second.mean.bias.copy_(torch.tensor([5.0, 0.0, -1.0]))
    scores = score(vae, x, ll_samples=2, iwae_k=[], batch_size=40, posterior_mean_samples=4000)
    means = scores.posterior_means
    torch.testing.assert_close(means[0], x @ weights.T + first.mean.bias.detach())
    # linear encoders: E_q[z_2|x] = A E_q[z_1|x] + a exactly; the Monte Carlo average of 4000
    # draws is within 5 standard errors (2 exp(-1) / sqrt(4000) = 0.012) of it
    torch.testing.assert_close(means[1], means[0] @ upper.T + second.mean.bias.detach(), atol=0.06, rtol=0.0)
    counts, variances = active_units(means, threshold=0.01)
    assert counts == [2, 2]
    torch.testing.assert_close(variances[0][:3], torch.tensor([0.0, 0.005, 0.02]))
    assert variances[0][3] > 1 and variances[1][0] < 1e-3 and variances[1][2] > 4
    assert variances[1][1].item() == pytest.approx(0.02, abs=1e-3)  # plus the Monte Carlo noise, 3e-5
    assert active_units(means, threshold=0.001)[0] == [3, 2]
    assert active_units(means, threshold=0.5)[0] == [1, 1]
    assert active_units(means, threshold=0.0)[0] == [3, 2]  # zero weights: E_q[u|x] is exactly constant
    assert len(vae.posterior_means(x[:3], samples=5)) == 2


def test_bits_per_dim_by_hand():
    # a uniform density on [0, 1]^D (log-density 0): 8 bits per 8-bit pixel
    assert bits_per_dim(0.0, 784) == pytest.approx(8.0, abs=1e-12)
    # each pixel one bit better than uniform: log-density D log 2 nats
    assert bits_per_dim(560 * math.log(2), 560) == pytest.approx(7.0, abs=1e-12)
    # -1000 nats on 560 pixels: 1000 / 560 nats = 1000 / (560 ln 2) bits worse than uniform
    assert bits_per_dim(-1000.0, 560) == pytest.approx(8 + 1000 / (560 * math.log(2)), abs=1e-12)
    assert bits_per_dim(-1000.0, 560) == pytest.approx(10.5762, abs=1e-4)


# ================================================================ interpolation and the manifold


def test_slerp_keeps_the_norm_and_the_great_circle():
    u0, u1 = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])
    t = torch.linspace(0, 1, 5)
    path = slerp(u0, u1, t)
    torch.testing.assert_close(path[0], u0)
    torch.testing.assert_close(path[-1], u1)
    torch.testing.assert_close(path.norm(dim=-1), torch.full((5,), 3.0))
    torch.testing.assert_close(path[2], torch.tensor([1.0, 1.0, 0.0]) * 3 / math.sqrt(2))
    # the straight line cuts the corner: its midpoint is 3 / sqrt(2) from the origin
    assert lerp(u0, u1, t)[2].norm().item() == pytest.approx(3 / math.sqrt(2))
    # unequal norms: the norm goes linearly; same direction: the straight line
    torch.testing.assert_close(slerp(u0, 2 * u1, t).norm(dim=-1), torch.linspace(3, 6, 5))
    torch.testing.assert_close(slerp(u0, 2 * u0, t), lerp(u0, 2 * u0, t))
    batch = torch.randn(4, 7)
    assert slerp(batch[:2], batch[2:], t).shape == (5, 2, 7)


def test_manifold_points_are_the_gaussian_quantiles_of_cell_centres():
    z = manifold_points(4)
    assert z.shape == (4, 4, 2)
    u = torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=torch.float64)
    torch.testing.assert_close(torch.special.ndtr(z[0, :, 0]), u)  # z_1 grows to the right
    torch.testing.assert_close(torch.special.ndtr(z[:, 0, 1]), u.flip(0))  # z_2 grows upwards
    torch.testing.assert_close(z.sum(dim=(0, 1)), torch.zeros(2, dtype=torch.float64))


# ================================================================ the command on real checkpoints

# name -> (fit words, image shape, labelled, stochastic layers, top latent dim)
RUNS = {
    "mnist": (["model=bernoulli"], (28, 28), True, 1, 20),
    "frey_2d": (["model=gaussian_learned", "data=frey", "model.latent_dim=2"], (28, 20), False, 1, 2),
    "mnist_2d_wandb": (["model=bernoulli", "model.latent_dim=2", "logger=wandb"], (28, 28), True, 1, 2),
    "two_layers": (["model=bernoulli", "model.upper_layers=[{hidden: [20], latent_dim: 2}]"], (28, 28), True, 2, 2),
}
MARKS = {"mnist": needs_mnist, "frey_2d": needs_frey, "mnist_2d_wandb": needs_mnist, "two_layers": needs_mnist}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Run directories of tiny fits, made on first use: name -> run dir."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            run_dir = tmp_path_factory.mktemp(name) / "run"
            with pytest.MonkeyPatch.context() as patch:
                for variable in ("WANDB_MODE", "WANDB_SWEEP_ID", "WANDB_RUN_ID"):
                    patch.delenv(variable, raising=False)
                assert fit_main([*TINY_FIT, *RUNS[name][0], f"run.dir={run_dir}"]) == 0
            made[name] = run_dir
        return made[name]

    return get


def grid_size(columns: int, rows: int, image_shape: tuple[int, int], padding: int = 2) -> tuple[int, int]:
    """(width, height) of make_grid with that many columns and rows."""
    height, width = image_shape
    return columns * (width + padding) + padding, rows * (height + padding) + padding


def picture(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def read_eval(run_dir: Path) -> dict:
    return json.loads((run_dir / EVAL_FILE).read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=MARKS[n]) for n in RUNS])
def test_evaluate_a_run_directory(name, fitted, capsys, monkeypatch):
    for variable in ("WANDB_MODE", "WANDB_SWEEP_ID", "WANDB_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    _, shape, labelled, layers, top_dim = RUNS[name]
    run_dir = fitted(name)
    capsys.readouterr()
    assert main([f"ckpt={run_dir}", "eval.ll_samples=20"]) == 0
    out = capsys.readouterr().out
    result = read_eval(run_dir)

    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert result["checkpoint"] == str(best) and result["checkpoint_choice"] == "best by validation ELBO"
    assert f"checkpoint: {best} (best by validation ELBO)" in out
    assert result["ll_samples"] == 20 and result["test_images"] == 200  # smoke: 2 test batches of 100
    for key in ("test_ll", "test_elbo", "test_ll_se"):
        assert math.isfinite(result[key]), (key, result[key])
    assert f"{result['test_ll']:.2f}" in out and f"{result['test_elbo']:.2f}" in out
    # the diagnostics of the same 20 weights per image
    assert 1.0 <= result["ess_min"] <= result["ess_mean"] <= 20.0
    assert result["pareto_k_mean"] <= result["pareto_k_max"]
    assert result["pareto_k_above_0.7"] == 0 or result["pareto_k_max"] > 0.7
    assert "Pareto k-hat of its weights" in out and f"(max {result['pareto_k_max']:.2f})" in out
    # per image L_S >= the mean log-weight of the same samples, so also on average
    assert result["test_ll"] >= result["test_elbo"] - 1e-4
    # 1 | 5 | 50: ordered per image (one stream of 50 samples), so on average
    iwae = result["test_iwae"]
    assert list(iwae) == ["1", "5", "50"] and all(math.isfinite(v) for v in iwae.values())
    assert iwae["1"] <= iwae["5"] + 1e-4 and iwae["5"] <= iwae["50"] + 1e-4, iwae
    # the ELBO's two terms, from their own draws: a KL >= 0, and recon - KL near the ELBO of the S samples
    assert result["test_kl"] >= 0
    assert abs(result["test_reconstruction"] - result["test_kl"] - result["test_elbo"]) < 2.0, result
    order = result["bound_order"]  # L_S = L_20 sits between L_5 and L_50 in the reported chain
    assert order["chain"] == "L_1 <= L_5 <= L_20 <= L_50"
    assert order["values"]["L_20"] == result["test_ll"] and order["values"]["L_50"] == iwae["50"]
    assert order["holds"] == (list(order["values"].values()) == sorted(order["values"].values()))
    if name.startswith("frey"):
        assert result["test_bits_per_dim"] == pytest.approx(bits_per_dim(result["test_ll"], 560))
        assert "bits/dim (8-bit convention)" in out and result["bits_per_dim"] is None
    else:  # a Bernoulli of binarized images: a probability of the stored values
        assert result["test_bits_per_dim"] is None and "8-bit convention" not in out
        assert result["bits_per_dim"] == pytest.approx(-result["test_ll"] / (784 * math.log(2)))
        assert "bits/dim (of the stored values)" in out
    assert len(result["active_units"]) == len(result["latent_dims"]) == len(result["unit_variances"]) == layers
    assert result["latent_dims"][-1] == top_dim
    for active, variances, threshold in zip(result["active_units"], result["unit_variances"], [0.01] * layers):
        assert active == sum(v > threshold for v in variances)

    names = {"samples", "reconstructions", "interpolation_linear", "interpolation_slerp"}
    if top_dim == 2:
        names |= {"manifold", "latent_scatter"}
    if layers > 1:
        names |= {"temperatures", "layer_reconstructions"}
    assert set(result["pictures"]) == names
    for picture_name, path in result["pictures"].items():
        assert Path(path) == run_dir / f"eval_{picture_name}.png"
    sizes = {
        "samples": grid_size(8, 8, shape),
        "reconstructions": grid_size(8, 16, shape),
        "interpolation_linear": grid_size(12, 8, shape),  # 8 pairs: input, 10 points, input
        "interpolation_slerp": grid_size(12, 8, shape),
        "manifold": (20 * shape[1], 20 * shape[0]),  # 20 x 20 decoder means, no gaps
        "latent_scatter": (700, 640) if labelled else (640, 640),
        "temperatures": grid_size(8, 4, shape),  # a row per temperature
        "layer_reconstructions": grid_size(8, 1 + layers, shape),  # the inputs, then 1 .. L layers kept
    }
    for picture_name in names:
        image = picture(run_dir / f"eval_{picture_name}.png")
        assert image.size == sizes[picture_name], picture_name
        low, high = image.convert("L").getextrema()
        assert high > low, f"eval_{picture_name}.png is one flat colour"
    if top_dim == 2:
        # the first 200 MNIST test images hold every digit; Frey has no labels: one colour. (Grey
        # is left out: the antialiased text has it too.)
        hues = {colour for colour in PALETTE if len(set(colour)) > 1}
        colours = {colour for _, colour in picture(run_dir / "eval_latent_scatter.png").getcolors(1 << 20)}
        assert colours & hues == (hues if labelled else {PALETTE[0]})
    # the fit's own pictures are left alone
    assert (run_dir / "samples.png").is_file() and (run_dir / "summary.json").is_file()

    if name.endswith("wandb"):
        runs = sorted((run_dir / "wandb").glob("offline-run-*"))
        assert len(runs) == 2, "the fit's offline W&B run, and the evaluation's, resumed with the same id"
        assert all(run.name.endswith(wandb_run_id(run_dir)) for run in runs)
        logged = list((runs[-1] / "files" / "media" / "images").rglob("*.png"))
        assert len(logged) == len(names)
        records = next(runs[-1].glob("run-*.wandb")).read_bytes()
        assert b"eval/test_ll" in records and b"eval/iwae_50" in records


@pytest.mark.slow
@needs_mnist
def test_fit_test_ll_and_evaluate_test_ll_agree_on_the_same_samples(fitted, tmp_path):
    """Same checkpoint, images, seed and chunks: vaelab.fit's test/ll and test/elbo equal
    vaelab.evaluate's test_ll and test_elbo up to float32 summation; another seed draws other
    samples and moves both by far more than that tolerance."""
    run_dir = tmp_path / "copy"
    shutil.copytree(fitted("mnist"), run_dir)
    fitted_numbers = json.loads((run_dir / "summary.json").read_text())
    assert fitted_numbers["ll_samples"] == 10
    assert main([f"ckpt={run_dir}", "eval.iwae_k=[1,5]"]) == 0  # max k <= S: no samples beyond the S
    evaluated = read_eval(run_dir)
    assert evaluated["test_images"] == 200 and evaluated["ll_samples"] == 10
    for key in ("test_ll", "test_elbo"):
        assert evaluated[key] == pytest.approx(fitted_numbers[key], abs=1e-3, rel=0), key
    # and the standard error and importance-sampling diagnostics of the same weights
    for key in ("test_ll_se", "ess_mean", "ess_min", "pareto_k_mean", "pareto_k_max", "pareto_k_above_0.7"):
        assert evaluated[key] == pytest.approx(fitted_numbers[key], rel=1e-4), key
    # under one protocol: the same data, splits, images scored, samples and checkpoint rule
    assert evaluated["protocol"] == fitted_numbers["protocol"]
    assert evaluated["protocol"]["checkpoint_chosen_by"] == "best validation ELBO"
    assert evaluated["protocol"]["test_images_scored"] == 200
    assert main([f"ckpt={run_dir}", "eval.iwae_k=[1,5]", "seed=1"]) == 0
    reseeded = read_eval(run_dir)
    for key in ("test_ll", "test_elbo"):
        assert abs(reseeded[key] - fitted_numbers[key]) > 1e-2, key


@pytest.mark.slow
@needs_mnist
def test_evaluate_a_checkpoint_file_with_overrides_reproducibly(fitted, tmp_path, capsys):
    source = fitted("mnist")
    run_dir = tmp_path / "copy"
    shutil.copytree(source, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    words = [f"ckpt={last}", "eval.ll_samples=7", "eval.iwae_k=[2,4]", "eval.num_images=16",
             "eval.device=cpu", "trainer.limit_test_batches=1", "eval.batch_size=30", "eval.chunk_size=3"]
    assert main(words) == 0
    first = read_eval(run_dir)
    assert first["checkpoint"] == str(last) and first["checkpoint_choice"] == "as given"
    assert first["device"] == "cpu" and first["test_images"] == 30 and first["ll_samples"] == 7
    assert list(first["test_iwae"]) == ["2", "4"] and first["test_iwae"]["2"] <= first["test_iwae"]["4"] + 1e-4
    assert picture(run_dir / "eval_samples.png").size == grid_size(8, 2, (28, 28))
    assert main(words) == 0  # same seed, same device: the same numbers
    second = read_eval(run_dir)
    assert {k: v for k, v in first.items() if k != "seconds"} == {k: v for k, v in second.items() if k != "seconds"}

    for best in (run_dir / "checkpoints").glob("best-*.ckpt"):
        best.unlink()
    capsys.readouterr()
    assert main([f"ckpt={run_dir}", "eval.ll_samples=5", "trainer.limit_test_batches=1"]) == 0
    assert read_eval(run_dir)["checkpoint"] == str(last)
    assert f"checkpoint: {last} (no best-*.ckpt in {run_dir / 'checkpoints'}: the last epoch's)" in capsys.readouterr().out


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), stderr
    return lines[0]


# case -> (words after ckpt=<run dir>, substrings of the error line)
BAD_INPUT = {
    "unknown key": (["eval.ll_sample=3"], ["unknown key 'eval.ll_sample'", "did you mean eval.ll_samples?"]),
    "bad type": (["eval.ll_samples=many"], ["bad value for eval.ll_samples"]),
    "bad range": (["eval.ll_samples=0"], ["eval.ll_samples=0 is invalid: expected an integer >= 1"]),
    "bad k": (["eval.iwae_k=[5,0]"], ["eval.iwae_k=[5, 0] is invalid"]),
    "bad device": (["eval.device=tpu"], ["eval.device=tpu is invalid: expected cpu, cuda, cuda:N, mps or null"]),
    "model key": (["model.latent_dim=3"], ["the model comes from the checkpoint: drop the override 'model.latent_dim=3'"]),
    "group": (["data=frey"], ["evaluation keeps the run's saved config: drop data="]),
    "not key=value": (["ll_samples"], ["cannot read 'll_samples'"]),
}


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_overrides_exit_2_with_one_line(case, fitted, capsys):
    run_dir = fitted("mnist")
    before = sorted((path.name, path.stat().st_mtime_ns) for path in run_dir.iterdir())
    words, expected = BAD_INPUT[case]
    capsys.readouterr()
    assert main([f"ckpt={run_dir}", *words]) == 2
    line = error_line(capsys.readouterr().err)
    for text in expected:
        assert text in line, line
    assert sorted((path.name, path.stat().st_mtime_ns) for path in run_dir.iterdir()) == before  # nothing written


def test_missing_or_broken_checkpoints_exit_2_with_one_line(tmp_path, capsys):
    def fails(words: list[str], *expected: str) -> None:
        assert main(words) == 2, words
        line = error_line(capsys.readouterr().err)
        for text in expected:
            assert text in line, (words, line)

    fails([], "say which run to evaluate: ckpt=<run dir> or ckpt=<file.ckpt>")
    missing = tmp_path / "no-such-run"
    fails([f"ckpt={missing}"], f"no checkpoint at {missing}")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails([f"ckpt={empty}"], f"no checkpoint in {empty / 'checkpoints'}: expected best-*.ckpt or last.ckpt")
    run_dir = tmp_path / "garbage"
    garbage = run_dir / "checkpoints" / "last.ckpt"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not a checkpoint")
    fails([f"ckpt={run_dir}"], f"{run_dir / 'config.yaml'} is missing, so the run's data and settings are unknown")
    (run_dir / "config.yaml").write_text("seed: 0\n")
    fails([f"ckpt={garbage}", "eval.device=cpu"], f"cannot load checkpoint {garbage}: not a readable checkpoint of vaelab.fit (")
    torch.save({"state_dict": {}}, garbage)  # a torch file, but not a Lightning checkpoint
    fails([f"ckpt={garbage}", "eval.device=cpu"], f"cannot load checkpoint {garbage}: not a readable checkpoint of vaelab.fit (")
    assert not (run_dir / EVAL_FILE).exists()

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m vaelab.evaluate ckpt=")
    for key in ("eval.ll_samples", "eval.iwae_k", "eval.active_threshold", "eval.device", "eval.manifold_size"):
        assert f"  {key} " in text, key


@pytest.mark.slow
def test_the_module_runs_as_a_command(tmp_path):
    missing = tmp_path / "nothing.ckpt"
    result = subprocess.run(
        [sys.executable, "-m", "vaelab.evaluate", f"ckpt={missing}"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_line(result.stderr) == f"{ERROR_PREFIX} no checkpoint at {missing}: pass ckpt=<run dir> of a vaelab.fit run or ckpt=<file.ckpt>"
