"""Every combination of parts trains and tests from the command line, with the presets too.

Each combination is a tiny ``python -m vaelab.fit`` on the real data (forked from one Python:
tests/helpers/, run_forked), then ``python -m vaelab.evaluate`` on its run directory. The
evaluation rebuilds the model from the checkpoint alone (a learned prior's pseudo-inputs or
mixture parameters, a conv network) and draws the same importance samples as the fit's test,
so its log-likelihood and ELBO must equal the fit's up to the fit's float32 mean over the
images (evaluate sums in float64): a part whose parameters were not saved, or rebuilt
differently, fails here.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from tests.helpers import PROJECT, TINY_FIT, Command, needs_frey, needs_mnist, run_forked

pytestmark = [pytest.mark.slow, needs_mnist, needs_frey]

# experiment= first: a preset sets many keys; the smoke budget's keys follow as overrides.
BUDGET = [
    "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=1",
    "eval.ll_samples=10", "trainer.accelerator=cpu", "trainer.compile=false", "eval.compile=false",
    "trainer.progress_bar=false", *[w for w in TINY_FIT if w.startswith("data.root=")],
]
SMALL_VAMP = ["prior=vamp", "prior.components=30"]
CASES = {
    "vamp": ["model=bernoulli", *SMALL_VAMP],
    "mog": ["model=bernoulli", "prior=mog"],
    "conv": ["model=bernoulli", "net=conv"],
    "conv-vamp": ["model=bernoulli", "net=conv", *SMALL_VAMP],
    "iwae_2layer-vamp-dreg": ["experiment=iwae_2layer", *SMALL_VAMP, "model.k=3", "model.estimator=dreg", "data.val_size=100"],
    "iwae_2layer-conv-mog": ["experiment=iwae_2layer", "net=conv", "prior=mog", "model.k=3", "data.val_size=100"],
    "frey-conv-vamp": ["data=frey", "model=gaussian_learned", "net=conv", *SMALL_VAMP],
    "frey-mog-stl": ["data=frey", "model=gaussian_learned", "prior=mog", "model.kl=mc", "model.estimator=stl"],
    "planar-iwae-dreg": ["model=bernoulli", "posterior=planar", "model.objective=iwae", "model.k=3", "model.estimator=dreg"],
    "iaf-conv-vamp": ["model=bernoulli", "posterior=iaf", "net=conv", *SMALL_VAMP],
    "frey-iaf-stl": ["data=frey", "model=gaussian_learned", "posterior=iaf", "model.kl=mc", "model.estimator=stl"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    fits = [Command([*words, *BUDGET, f"run.dir={root / name}"], root) for name, words in CASES.items()]
    evaluations = [
        Command([f"ckpt={root / name}", "eval.iwae_k=[1,5]", "eval.num_images=8"], root, module="vaelab.evaluate")
        for name in CASES
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    results = run_forked([fits, evaluations], env=env, timeout=600)
    return root, dict(zip(CASES, results[: len(CASES)])), dict(zip(CASES, results[len(CASES):]))


@pytest.mark.parametrize("name", list(CASES))
def test_parts_train_test_and_evaluate_to_the_same_numbers(runs, name):
    root, fits, evaluations = runs
    assert fits[name].returncode == 0, fits[name].stderr[-3000:]
    assert evaluations[name].returncode == 0, evaluations[name].stderr[-3000:]
    summary = json.loads((root / name / "summary.json").read_text())
    words = CASES[name]
    assert summary["prior"] == next((w.split("=")[1] for w in words if w.startswith("prior=")), "standard")
    assert summary["net"] == next((w.split("=")[1] for w in words if w.startswith("net=")), "mlp")
    assert summary["posterior"] == next((w.split("=")[1] for w in words if w.startswith("posterior=")), "gaussian")
    # a prior without a closed-form KL, or a flow posterior of a single layer, is validated with the KL sampled
    single_flow = summary["posterior"] != "gaussian" and "experiment=iwae_2layer" not in words
    assert summary["val_kl"] == ("analytic" if summary["prior"] == "standard" and not single_flow else "mc")
    assert math.isfinite(summary["test_ll"]) and summary["test_ll"] >= summary["test_elbo"]
    evaluated = json.loads((root / name / "eval.json").read_text())
    assert evaluated["test_ll"] == pytest.approx(summary["test_ll"], rel=1e-6, abs=0), name  # float32 rounding of the mean
    assert evaluated["test_elbo"] == pytest.approx(summary["test_elbo"], rel=1e-6, abs=0), name
    assert (root / name / "eval_samples.png").is_file()



def test_a_prior_without_a_closed_form_kl_says_the_elbo_samples_it(runs):
    _, fits, _ = runs
    assert "prior=mog has no closed-form KL to the posterior: the ELBO samples" in fits["mog"].stderr
    assert "closed-form KL" not in fits["conv"].stderr  # N(0, I) has one


def test_a_flow_posterior_says_once_that_the_elbo_samples_its_kl(runs):
    _, fits, _ = runs
    line = "posterior=planar (a flow) has no closed-form KL to the prior: the ELBO samples"
    assert fits["planar-iwae-dreg"].stderr.count(line) == 1
    assert "closed-form KL" not in fits["frey-iaf-stl"].stderr  # model.kl=mc asks for no closed form
