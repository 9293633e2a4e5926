"""End-to-end tests of ``python -m vaelab.fit``: train, test, write a run directory.

The fits run in-process through ``vaelab.fit.main`` on the real datasets of the shared
folder with a tiny budget (``experiment=smoke`` shrunk further); the bad-input cases run as
processes of their own (forked from one Python that has made the imports), all at once, to check
the exit status and the one-line error on stderr.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import distributions as D

from tests.helpers import (
    DATA_DIM, MNIST_FILES, MNIST_RAW, PROJECT, SHARED_DATA, TINY_FIT, Command, closed_form_elbo,
    closed_form_log_likelihood, linear_gaussian_vae, needs_frey, needs_mnist, run_forked, set_posterior, write_mnist,
)
from vaelab.config import load_config
from vaelab.config.compose import GROUPS, group_options
from vaelab.config.plain import to_plain
from vaelab.config.schema import Binarize, DataConfig, EvalConfig, OptimConfig
from vaelab.data import build_datamodule
from vaelab.fit import main
from vaelab.models.module import VAEModule
from vaelab.objectives import objective_for
from vaelab.probability import objectives

NEEDS = {"mnist": needs_mnist, "frey": needs_frey}
IMAGE_SHAPE = {"mnist": (28, 28), "frey": (28, 20)}

# The tiny fit of tests/helpers/ with 5 training batches, 20 importance samples per test image.
TINY = [*TINY_FIT, "trainer.limit_train_batches=5", "eval.ll_samples=20"]
# Fewer batches again, for the tests that fit several times.
TINIER = [*TINY, "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=1"]

ERROR_PREFIX = "vaelab.fit: error:"


def fit(run_dir: Path, *words: str, base: list[str] = TINY) -> int:
    """``python -m vaelab.fit`` in-process into ``run_dir``; returns the exit status."""
    return main([*base, f"run.dir={run_dir}", *words])


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def checkpoints(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ckpt"))


def error_line(stderr: str) -> str:
    """The last non-empty line of stderr, checked to be the CLI's one-line error."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert lines[-1].startswith(ERROR_PREFIX), f"last stderr line is not the CLI error: {lines[-1]!r}"
    assert "Traceback" not in stderr, stderr
    return lines[-1]


def grid_size(count: int, image_shape: tuple[int, int], rows_per_image: int = 1) -> tuple[int, int]:
    """(width, height) of torchvision's make_grid of ``count`` images 8 per row, padding 2."""
    per_row = min(8, count)
    rows = (count // per_row) * rows_per_image
    height, width = image_shape
    return per_row * (width + 2) + 2, rows * (height + 2) + 2


# ---------------------------------------------------------------- every model x data pair


@pytest.mark.slow
@pytest.mark.parametrize("data", [pytest.param(d, marks=NEEDS[d]) for d in ("mnist", "frey")])
@pytest.mark.parametrize("model", ["bernoulli", "gaussian", "gaussian_learned"])
def test_fit_writes_a_complete_run_directory(model, data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    if (model, data) == ("bernoulli", "frey"):
        with pytest.warns(UserWarning, match="model=bernoulli on continuous data"):
            status = fit(run_dir, f"model={model}", f"data={data}")
    else:
        status = fit(run_dir, f"model={model}", f"data={data}")
    assert status == 0

    # summary.json: the headline numbers, all finite
    summary = read_summary(run_dir)
    for key in ("test_elbo", "test_ll", "ll_samples", "epochs", "train_seconds", "best_checkpoint"):
        assert key in summary, f"summary.json lacks {key}"
    for key in ("test_elbo", "test_ll", "train_seconds", "best_val_elbo"):
        assert isinstance(summary[key], float) and math.isfinite(summary[key]), (key, summary[key])
    assert summary["ll_samples"] == 20
    assert summary["epochs"] == 1
    assert summary["steps"] == 5
    assert summary["train_seconds"] > 0
    assert (summary["model"], summary["data"], summary["seed"]) == (model, data, 0)
    assert Path(summary["run_dir"]) == run_dir
    best = Path(summary["best_checkpoint"])
    assert best.is_file() and best.parent == run_dir / "checkpoints", best
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # log of a mean of importance weights >= mean of their logs, per image (Jensen), so also
    # after averaging over the test images
    assert summary["test_ll"] >= summary["test_elbo"] - 1e-3, summary
    # ... which any log-weights satisfy. The numbers are those recomputed independently from the
    # same samples, to 1e-3 nats: above the fit's float32 rounding, below what another seed's
    # samples or a wrong density or bound change (docs/testing.md#tolerances-and-waits).
    recomputed = recomputed_test_numbers(Path(summary["best_checkpoint"]), [*TINY, f"model={model}", f"data={data}"])
    assert recomputed == pytest.approx((summary["test_elbo"], summary["test_ll"]), abs=1e-3, rel=0), summary

    # config.yaml: the resolved config, reloadable
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.model.decoder == model
    assert saved.data.name == data
    assert saved.data.root == str(SHARED_DATA)
    assert saved.trainer.limit_train_batches == 5 and saved.eval.ll_samples == 20
    assert saved.run.dir == str(run_dir)

    # metrics.csv: the validation ELBO of the epoch, and the test numbers of the summary
    rows = read_metrics(run_dir)
    assert "val/elbo" in rows[0], f"no val/elbo column: {list(rows[0])}"
    val = [float(row["val/elbo"]) for row in rows if row["val/elbo"]]
    assert len(val) == 1 and math.isfinite(val[0])
    assert val[0] == pytest.approx(summary["best_val_elbo"])
    test_rows = [row for row in rows if row.get("test/elbo")]
    assert len(test_rows) == 1
    assert float(test_rows[0]["test/elbo"]) == pytest.approx(summary["test_elbo"])
    assert float(test_rows[0]["test/ll"]) == pytest.approx(summary["test_ll"])

    # pictures: 64 prior samples in an 8x8 grid; 8 rows of inputs, each above its reconstructions
    for name, rows_per_image in (("samples", 1), ("reconstructions", 2)):
        path = run_dir / f"{name}.png"
        assert summary["images"][name] == str(path)
        with Image.open(path) as image:
            image.load()
            assert image.size == grid_size(64, IMAGE_SHAPE[data], rows_per_image), (name, image.size)
            low, high = image.convert("L").getextrema()
            assert high > low, f"{name}.png is a single flat colour"

    # the closing lines name the run directory and the test numbers
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-3] == f"run directory: {run_dir}"
    assert f"test ELBO: {summary['test_elbo']:.2f} nats" in out[-2]
    assert f"test log-likelihood (20 importance samples): {summary['test_ll']:.2f} nats" in out[-2]
    assert out[-1].startswith("epochs: 1 ") and f"best checkpoint: {best}" in out[-1]


def q_and_likelihood(vae) -> tuple:
    """This module's one reach into the model's internals (update it when they are renamed):
    x -> (mean, log-variance) of q(z|x), and z -> p(x|z) as a torch.distributions object,
    from the decoder's outputs (logits, or mean and log-variance)."""

    def likelihood(z: torch.Tensor) -> D.Distribution:
        if vae.cfg.decoder == "bernoulli":
            return D.Bernoulli(logits=vae.decoder.params(z), validate_args=False)  # grey levels too (frey)
        mean, log_var = vae.decoder.params(z)
        return D.Normal(mean, torch.exp(0.5 * log_var).expand_as(mean))

    return vae.encoders[0], likelihood


def recomputed_test_numbers(checkpoint: Path, words: list[str]) -> tuple[float, float]:
    """The test ELBO and L_S of a one-layer fit, recomputed from its best checkpoint without
    vaelab's densities or bounds: the fit's importance samples drawn again (torch's generator
    seeded with ``seed``, batches of eval.batch_size test images up to limit_test_batches,
    chunks of eval.chunk_size samples, as vaelab.fit's test and vaelab.evaluate draw them),
    log w = log p(x|z) + log N(z; 0, I) - log q(z|x) with torch.distributions in float64, the
    ELBO the mean log w, L_S = logsumexp - log S, both averaged over the images."""
    _, cfg = load_config(words)
    data = build_datamodule(cfg.data, cfg.seed, cfg.eval.batch_size)
    data.setup("test")
    e, limit = cfg.eval, cfg.trainer.limit_test_batches
    images = data.test_data[: None if limit is None else limit * e.batch_size]
    vae = VAEModule.load_from_checkpoint(checkpoint, map_location="cpu").vae.double().eval()
    encoder, likelihood = q_and_likelihood(vae)
    torch.manual_seed(cfg.seed)
    elbos, lls = [], []
    with torch.no_grad():
        for x in images.double().split(e.batch_size):
            mean, log_var = encoder(x)
            # the fit draws float32 noise, [chunk, batch, latent] per chunk
            starts = range(0, e.ll_samples, e.chunk_size)
            eps = torch.cat([torch.randn(min(e.chunk_size, e.ll_samples - s), *mean.shape, dtype=torch.float32) for s in starts])
            z = mean + torch.exp(0.5 * log_var) * eps.double()
            q = D.Normal(mean, torch.exp(0.5 * log_var))
            log_w = likelihood(z).log_prob(x).sum(-1) + D.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
            elbos.append(log_w.mean(0))
            lls.append(torch.logsumexp(log_w, 0) - math.log(e.ll_samples))
    return float(torch.cat(elbos).mean()), float(torch.cat(lls).mean())


def test_reported_bounds_match_the_closed_forms_of_a_linear_gaussian_vae(tmp_path):
    """What a fit reports, from VAEModule's validation and test steps as trainer.fit and
    vaelab.fit run them, on the linear-Gaussian VAE (tests/helpers/), whose log p(x) and
    ELBO are closed forms (q shifted off the posterior, so they differ by 1.6 nats on average):
    test/ll is the mean closed-form log p(x), test/elbo and val/elbo the mean closed-form ELBO.
    Tolerances, over 25 test images with S = 2000 samples each: L_S's bias is below 0.01 nats
    here and the ELBO's standard error about 0.015, tolerance 0.1; val/elbo (one sample,
    analytic KL) over 200 copies of the 25 images has a standard error of about 0.04,
    tolerance 0.2. The last 5 test images (a batch of their own; the others come 10 to a batch)
    lie far out, so the mean of the batch means instead of the mean over images misses by
    11 nats; L_S and the ELBO swapped miss by 1.6; a bound that only satisfies
    test/ll >= test/elbo fails."""
    torch.manual_seed(0)
    vae = linear_gaussian_vae().double()
    set_posterior(vae, log_var_shift=0.7, mean_shift=0.3)
    with torch.no_grad():
        x = torch.randn(25, DATA_DIM, dtype=torch.float64) * 2 + torch.linspace(0, 1, DATA_DIM, dtype=torch.float64)
        x[20:] *= 2.0
        exact_ll, exact_elbo = float(closed_form_log_likelihood(vae, x).mean()), float(closed_form_elbo(vae, x).mean())
    write_mnist(tmp_path)  # files for prepare_data; the splits are then replaced by x
    datamodule = build_datamodule(
        DataConfig(root=str(tmp_path), download=False, binarize=Binarize.none, val_size=5), seed=0, eval_batch_size=10
    )
    datamodule.train_data, datamodule.val_data, datamodule.test_data = x, x.repeat(200, 1), x
    module = VAEModule(
        model=to_plain(vae.cfg), optim=to_plain(OptimConfig()),
        eval=to_plain(EvalConfig(ll_samples=2000, chunk_size=500, batch_size=10)), data_dim=DATA_DIM, image_shape=(2, 3),
    ).double()
    module.vae.load_state_dict(vae.state_dict())
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    torch.manual_seed(1)
    validated = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    assert tested["test/ll"] == pytest.approx(exact_ll, abs=0.1)
    assert tested["test/elbo"] == pytest.approx(exact_elbo, abs=0.1)
    assert validated["val/elbo"] == pytest.approx(exact_elbo, abs=0.2)


# ---------------------------------------------------------------- --cfg and --help


def test_cfg_prints_the_composed_config_and_trains_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["--cfg", "model=gaussian", "data=frey", "model.latent_dim=5", f"run.dir={run_dir}"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.model.latent_dim == 5
    assert printed.model.decoder == "gaussian" and printed.model.sigma == 0.1
    assert printed.data.name == "frey" and printed.data.test_size == 200
    assert printed.run.dir == str(run_dir)
    assert not run_dir.exists()
    assert list(tmp_path.iterdir()) == []


def test_cfg_validates_before_printing(tmp_path, capsys):
    assert main(["--cfg", "model.latent_dim=0", f"run.dir={tmp_path / 'run'}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert error_line(captured.err) == f"{ERROR_PREFIX} model.latent_dim=0 is invalid: expected an integer >= 1"


def test_help_lists_usage_groups_and_keys(tmp_path, capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m vaelab.fit")
    lines = text.splitlines()
    assert {"bernoulli", "gaussian", "gaussian_learned"} <= set(group_options("model"))
    for group in GROUPS:
        options = group_options(group)
        assert options, group
        assert any(line.replace(",", " ").split() == [group, *options] for line in lines), (group, text)
    for key in ("model.latent_dim", "optim.lr", "data.root", "eval.ll_samples", "run.resume"):
        assert f"  {key} " in text


# ---------------------------------------------------------------- bad input, in processes of their own


def _truncated_mnist(root: Path) -> Path:
    """A data root whose MNIST/raw/ holds the first 1000 bytes of each real .gz file."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        with open(MNIST_RAW / name, "rb") as file:
            (raw / name).write_bytes(file.read(1000))
    return root


# case -> (extra words, substrings the error line must hold, whether a run directory may exist)
BAD_INPUT = {
    "latent_dim=0": (["model.latent_dim=0"], ["model.latent_dim=0 is invalid", "integer >= 1"]),
    "unknown model": (["model=foo"], ["unknown model 'foo'", "bernoulli, continuous_bernoulli, gaussian, gaussian_learned, logistic"]),
    "misspelt key": (["model.latnt_dim=3"], ["unknown key 'model.latnt_dim'", "did you mean model.latent_dim?"]),
    "negative lr": (["optim.lr=-1"], ["optim.lr=-1.0 is invalid", "learning rate > 0"]),
    "missing data": (
        ["data.root={tmp}/no-such-folder", "data.download=false"],
        ["MNIST file(s) not found", "{tmp}/no-such-folder/MNIST/raw/train-images-idx3-ubyte.gz", "data.download=true"],
    ),
    "truncated mnist": (
        ["data.root={tmp}/truncated", "data.download=false"],
        ["MNIST file {tmp}/truncated/MNIST/raw/train-images-idx3-ubyte.gz is truncated"],
    ),
    "top-down flow": (["hierarchy=topdown", "posterior=planar"], ["posterior=planar is a flow", "use posterior=gaussian"]),
    "top-down dreg": (
        ["hierarchy=topdown", "model.objective=iwae", "model.k=2", "model.estimator=dreg"],
        ["model.estimator=dreg needs log q with q's parameters stopped", "model.estimator=reparam"],
    ),
    "top-down merge": (["hierarchy=topdown", "hierarchy.merge=sum"], ["hierarchy.merge", "expected one of [precision, residual, concat]"]),
}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Runs ``python -m vaelab.fit`` once per BAD_INPUT case, all at once, as processes that
    share one Python start-up (tests/helpers/, run_forked); returns case -> (tmp, result)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
    env.pop("VAELAB_DATA_DIR", None)
    folders, commands = {}, []
    for case, (words, _) in BAD_INPUT.items():
        tmp = folders[case] = tmp_path_factory.mktemp("bad")
        if case == "truncated mnist":
            _truncated_mnist(tmp / "truncated")
        argv = [*TINY, f"run.dir={tmp / 'run'}", *(word.format(tmp=tmp) for word in words)]
        commands.append(Command(argv, cwd=tmp))
    results = run_forked([commands], env=env, timeout=300)
    return {case: (folders[case], result) for case, result in zip(BAD_INPUT, results)}


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_no_checkpoint(case, bad_input_runs):
    tmp, result = bad_input_runs[case]
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result.stderr)
    for expected in BAD_INPUT[case][1]:
        assert expected.format(tmp=tmp) in line, line
    assert "summary.json" not in result.stdout
    assert checkpoints(tmp) == []
    if case != "truncated mnist":  # a config error or a missing file stops before the run starts
        assert not (tmp / "run").exists(), sorted(p.name for p in (tmp / "run").iterdir())
    else:  # the files are found but cannot be read: at most an empty run directory
        assert not (tmp / "run").exists() or list((tmp / "run").iterdir()) == []


# ---------------------------------------------------------------- resume




@pytest.fixture
def first_session(tmp_path):
    """A run directory after one epoch of a fit."""
    run_dir = tmp_path / "run"
    assert fit(run_dir, "trainer.max_epochs=1", base=TINIER) == 0
    summary = read_summary(run_dir)
    assert summary["epochs"] == 1 and summary["steps"] == 3
    return run_dir


def check_resumed(run_dir: Path, before: dict, first_rows: list[dict[str, str]], out: str) -> None:
    """The run in ``run_dir`` went on from ``before`` (one epoch of 3 batches) to two epochs."""
    summary = read_summary(run_dir)
    assert Path(summary["run_dir"]) == run_dir
    assert out.strip().splitlines()[-3] == f"run directory: {run_dir}"
    epoch_lines = [line.split("  ")[:2] for line in out.splitlines() if line.startswith("epoch ")]
    assert epoch_lines == [["epoch 2/2", "step 6"]], out  # this session's one epoch, at the run's step
    assert summary["epochs"] == 2
    assert summary["steps"] == 6  # 3 batches per epoch, the first epoch's not repeated
    assert summary["train_seconds"] >= before["train_seconds"]
    assert math.isfinite(summary["test_elbo"]) and summary["test_ll"] >= summary["test_elbo"] - 1e-3
    assert Path(summary["best_checkpoint"]).is_file()
    assert Path(summary["best_checkpoint"]).parent == run_dir / "checkpoints"
    # Lightning stores the 0-based index of the epoch a checkpoint was saved in: 1 is the second
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 6)
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.trainer.max_epochs == 2 and saved.run.dir == str(run_dir)

    rows = read_metrics(run_dir)
    val = {int(row["epoch"]): float(row["val/elbo"]) for row in rows if row.get("val/elbo")}
    first_val = [float(row["val/elbo"]) for row in first_rows if row.get("val/elbo")]
    assert sorted(val) == [0, 1], rows
    assert val[0] == pytest.approx(first_val[0])  # the first session's row survived
    assert len(rows) > len(first_rows)


@pytest.mark.slow
@needs_mnist
def test_resume_continues_the_same_run(first_session, capsys):
    run_dir = first_session
    before, first_rows = read_summary(run_dir), read_metrics(run_dir)
    capsys.readouterr()
    assert main([f"run.resume={run_dir}", "trainer.max_epochs=2"]) == 0
    check_resumed(run_dir, before, first_rows, capsys.readouterr().out)


@pytest.mark.slow
@needs_mnist
def test_resume_a_moved_run_directory(first_session, tmp_path, capsys):
    run_dir = tmp_path / "moved"
    shutil.move(first_session, run_dir)
    before, first_rows = read_summary(run_dir), read_metrics(run_dir)
    capsys.readouterr()
    assert main([f"run.resume={run_dir}", "trainer.max_epochs=2"]) == 0
    check_resumed(run_dir, before, first_rows, capsys.readouterr().out)
    lasts = sorted(path.name for path in (run_dir / "checkpoints").iterdir() if path.name.startswith("last"))
    assert lasts == ["last.ckpt"]


def test_resume_from_a_missing_directory_fails_in_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main([f"run.resume={missing}", "trainer.max_epochs=2"]) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"{ERROR_PREFIX} cannot resume: no checkpoint at {missing}"), line
    assert "run.resume=<run dir>" in line
    assert not missing.exists()


@pytest.mark.slow
@needs_mnist
def test_cfg_with_resume_prints_the_saved_config_with_overrides(first_session, capsys):
    run_dir = first_session
    files = {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")}
    capsys.readouterr()
    assert main(["--cfg", f"run.resume={run_dir}", "trainer.max_epochs=2"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.trainer.max_epochs == 2
    assert printed.trainer.limit_train_batches == 3 and printed.eval.ll_samples == 20  # kept from the run
    assert printed.run.dir == str(run_dir) and printed.run.resume == str(run_dir)
    assert {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")} == files


@pytest.mark.slow
@needs_mnist
def test_resume_refuses_group_choices(first_session, capsys):
    run_dir = first_session
    files = {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")}
    capsys.readouterr()
    assert main([f"run.resume={run_dir}", "model=gaussian", "trainer.max_epochs=2"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "a resumed run keeps its saved config: drop model=" in line, line
    assert {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")} == files


# ---------------------------------------------------------------- reproducibility


@pytest.mark.slow
@needs_mnist
def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    numbers = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert fit(tmp_path / name, f"seed={seed}", "trainer.accelerator=cpu", base=TINIER) == 0
        summary = read_summary(tmp_path / name)
        numbers[name] = (summary["test_elbo"], summary["test_ll"], summary["best_val_elbo"])
    assert numbers["a"] == numbers["b"]  # exactly: same seed, same CPU
    assert all(x != y for x, y in zip(numbers["a"], numbers["c"])), numbers


# ---------------------------------------------------------------- divergence


@pytest.mark.slow
@needs_mnist
def test_divergence_stops_with_one_line_and_no_checkpoint(tmp_path, capsys):
    words = ["optim.name=sgd", "optim.lr=1e30", "trainer.limit_train_batches=3"]
    # the premise: one SGD step of this size sends the training bound to NaN/inf
    node, cfg = load_config([*TINY, *words])
    torch.manual_seed(0)
    data = build_datamodule(cfg.data, cfg.seed)
    data.setup("fit")
    module = VAEModule(
        to_plain(node.model), to_plain(node.optim), to_plain(node.eval),
        data_dim=784, image_shape=(28, 28),
    )
    optimizer = module.configure_optimizers()
    batch = torch.bernoulli(data.train_data[:100])
    bounds = []
    for _ in range(2):
        loss, bound = objective_for(module.model_cfg).training_loss(module.vae, batch, torch.tensor(1.0))
        bounds.append(bound.mean().item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert math.isfinite(bounds[0]) and not math.isfinite(bounds[1]), bounds

    run_dir = tmp_path / "run"
    assert fit(run_dir, *words) == 2
    line = error_line(capsys.readouterr().err)
    assert "the training loss became NaN or infinite in epoch 0" in line, line
    assert "lower optim.lr" in line
    assert checkpoints(tmp_path) == []
    assert not (run_dir / "summary.json").exists()


@pytest.mark.slow
@needs_mnist
def test_default_model_beats_minus_142_nats_after_one_epoch(tmp_path):
    """A working trainer's bar: the default bernoulli model on MNIST, one full epoch, test ELBO > -142.

    The ELBO estimate is the mean log-weight; 10 samples per image over the 10000 test
    images give it to about 0.1 nats, well inside the margin (docs/testing.md#tolerances-and-waits).
    """
    words = ["model=bernoulli", "trainer.max_epochs=1", "eval.ll_samples=10", "trainer.progress_bar=false"]
    assert main([*words, f"data.root={SHARED_DATA}", f"run.dir={tmp_path / 'run'}"]) == 0
    summary = read_summary(tmp_path / "run")
    assert summary["epochs"] == 1 and summary["steps"] == 550
    assert summary["test_elbo"] > -142.0, summary


@pytest.mark.slow
@needs_mnist
def test_a_conv_vae_leaves_the_mean_image_plateau_within_300_steps(tmp_path):
    """net=conv with its default activation: by step 300 the training ELBO is far above the
    mean image's, about -206 nats, where a model that ignores z sits. With softplus (the former
    default) it stayed there for about 1200 steps (docs/RESULTS.md, priors and networks)."""
    words = [
        "model=bernoulli", "net=conv", "trainer.max_epochs=1", "trainer.limit_train_batches=300",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "eval.ll_samples=10",
        "trainer.compile=false", "trainer.progress_bar=false",
    ]  # fmt: skip
    assert main([*words, f"data.root={SHARED_DATA}", f"run.dir={tmp_path / 'run'}"]) == 0
    elbo = {int(row["step"]): float(row["train/elbo"]) for row in read_metrics(tmp_path / "run") if row.get("train/elbo")}
    assert max(elbo) == 299 and elbo[49] < -200, elbo  # it starts on the plateau ...
    assert elbo[299] > -175, elbo  # ... and has left it, by about 60 nats (docs/testing.md#tolerances-and-waits)


@pytest.mark.slow
@needs_mnist
def test_track_test_scores_the_test_set_after_every_epoch(tmp_path):
    run_dir = tmp_path / "run"
    assert fit(run_dir, "eval.track_test=true", "trainer.max_epochs=2", base=TINIER) == 0
    rows = read_metrics(run_dir)
    curve = {int(row["epoch"]): float(row["curve/test_elbo"]) for row in rows if row.get("curve/test_elbo")}
    val = {int(row["epoch"]) for row in rows if row.get("val/elbo")}
    assert sorted(curve) == [0, 1] and sorted(val) == [0, 1]
    assert all(math.isfinite(value) for value in curve.values())


# ---------------------------------------------------------------- KL weight


@pytest.mark.slow
@needs_mnist
def test_kl_weight_changes_the_loss_and_no_logged_bound(tmp_path):
    """model.beta and optim.kl_warmup_epochs weight the training loss only. The weight in
    force is logged per step (train/kl_weight, linear over the warm-up). Two runs with the same
    seed see the same parameters and samples at step 0, so their logged train/elbo agree there
    although their weights (0 and 1) differ, and differ later, once their training has. The
    validation and test bounds of a checkpoint do not depend on the beta it is loaded with."""
    words = ["trainer.max_epochs=2", "trainer.log_every_n_steps=1", "trainer.accelerator=cpu"]
    assert fit(tmp_path / "weighted", *words, "model.beta=0.5", "optim.kl_warmup_epochs=1", base=TINIER) == 0
    assert fit(tmp_path / "plain", *words, base=TINIER) == 0

    def column(run: str, key: str) -> list[float]:
        return [float(row[key]) for row in read_metrics(tmp_path / run) if row.get(key)]

    # 3 batches an epoch: the weight is 0.5 * min(1, epoch + batch / 3) at each of the 6 steps
    assert column("weighted", "train/kl_weight") == pytest.approx([0, 1 / 6, 1 / 3, 0.5, 0.5, 0.5])
    assert column("plain", "train/kl_weight") == [1.0] * 6
    weighted, plain = column("weighted", "train/elbo"), column("plain", "train/elbo")
    assert len(weighted) == len(plain) == 6
    assert weighted[0] == plain[0]
    assert all(w != p for w, p in zip(weighted[1:], plain[1:]))

    node, cfg = load_config([*TINIER, "model.beta=0.5"])
    data = build_datamodule(cfg.data, cfg.seed, cfg.eval.batch_size)
    checkpoint = tmp_path / "weighted" / "checkpoints" / "last.ckpt"
    scores = []
    for beta in (0.5, 1.0):
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]["model"]
        module = VAEModule.load_from_checkpoint(checkpoint, map_location="cpu", model={**saved, "beta": beta})
        trainer = pl.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=2, limit_test_batches=1,
        )
        pl.seed_everything(5, verbose=False)
        validated = trainer.validate(module, datamodule=data, verbose=False)[0]
        tested = trainer.test(module, datamodule=data, verbose=False)[0]
        scores.append((module.model_cfg.beta, validated["val/elbo"], tested["test/ll"], tested["test/elbo"]))
    assert scores[0][0] == 0.5 and scores[1][0] == 1.0
    assert scores[0][1:] == scores[1][1:]
