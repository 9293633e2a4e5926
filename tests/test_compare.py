"""``python -m vaelab.compare`` (vaelab/compare.py, vaelab/evaluation/comparison.py) on the run
directories of real short fits laid out as a sweep's folder: the protocol blocks and why they
stand apart, the order, the numbers against summary.json and eval.json, the files it writes, the
published cells of presets (vaelab/evaluation/published.py) and the one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest
from omegaconf import OmegaConf
from PIL import Image

import vaelab
from tests.helpers import PROJECT, write_mnist
from vaelab.compare import main as compare_main
from vaelab.config.compose import compose, parse_command_line
from vaelab.evaluate import main as evaluate_main
from vaelab.evaluation.comparison import CURVES_SIZE, UNRECORDED, rank, read_runs
from vaelab.evaluation.protocol import BY_VALIDATION, LAST_EPOCH
from vaelab.evaluation.published import published_for

# Two epochs of 3 steps on 300 tiny MNIST images, tested on 50 images with 10 importance samples.
WORDS = [
    "model=bernoulli", "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2", "trainer.accelerator=cpu", "trainer.compile=false",
    "trainer.progress_bar=false", "data.val_size=100", "data.batch_size=50", "data.download=false",
    "model.hidden=[32]", "eval.batch_size=25", "eval.ll_samples=10", "eval.compile=false",
]  # fmt: skip
# run-001 and run-003 under one protocol (run-003 also evaluated), run-002 statically binarized
RUNS = {"run-001": ["model.latent_dim=4"], "run-002": ["model.latent_dim=4", "data.binarize=static"],
        "run-003": ["model.latent_dim=2", "seed=1"]}  # fmt: skip
NO_VALIDATION = ["model.latent_dim=4", "data.val_size=0"]  # tested at its last epoch: a protocol of its own


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep's folder of three real runs (and the results.csv a sweep writes beside them)."""
    root = tmp_path_factory.mktemp("compare")
    write_mnist(root / "data", n_train=300, n_test=50)
    folder = root / "sweep"
    for name, words in RUNS.items():
        vaelab.train(*WORDS, *words, f"data.root={root / 'data'}", f"run.dir={folder / name}")
    vaelab.train(*WORDS, *NO_VALIDATION, f"data.root={root / 'data'}", f"run.dir={root / 'no-validation'}")
    assert evaluate_main([f"ckpt={folder / 'run-003'}", "eval.iwae_k=[1,5]", "eval.num_images=4"]) == 0
    (folder / "results.csv").write_text("name,status\nrun-001,finished\n")
    return folder


def summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_runs_are_ranked_within_a_protocol_and_a_different_one_stands_apart(sweep, capsys):
    assert compare_main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    evaluation = json.loads((sweep / "run-003" / "eval.json").read_text())
    lls = {"run-001": summary(sweep / "run-001")["test_ll"], "run-003": evaluation["test_ll"]}
    order = sorted(lls, key=lls.get, reverse=True)

    rows = list(csv.DictReader(open(sweep / "comparison.csv")))  # --out defaults to the sweep's folder
    assert [(r["block"], r["rank"], r["run"]) for r in rows] == [("1", "1", order[0]), ("1", "2", order[1]), ("2", "1", "run-002")]
    by_name = {r["run"]: r for r in rows}
    # every number is the file's own (csv writes floats by repr, which reads back exactly)
    for name in ("run-001", "run-002"):
        s = summary(sweep / name)
        for key in ("test_ll", "test_ll_se", "test_elbo", "ess_mean", "pareto_k_max", "train_seconds", "best_val_elbo"):
            assert float(by_name[name][key]) == s[key], (name, key)
        assert by_name[name]["test_numbers_from"] == "summary.json" and by_name[name]["active_units"] == ""
        assert int(by_name[name]["epochs"]) == s["epochs"] == 2 and int(by_name[name]["steps"]) == s["steps"] == 6
    three = by_name["run-003"]
    assert three["test_numbers_from"] == "eval.json"
    for key in ("test_ll", "test_ll_se", "test_elbo", "ess_min", "pareto_k_mean"):
        assert float(three[key]) == evaluation[key], key
    assert (three["active_units"], three["latent_dims"]) == (str(evaluation["active_units"][0]), "2")
    assert float(three["kl"]) == evaluation["test_kl"]  # eval.json's test KL; the others have none
    for name in ("run-001", "run-002"):  # without eval.json: the last val/kl of metrics.csv
        last_kl = [r["val/kl"] for r in csv.DictReader(open(sweep / name / "metrics.csv")) if r.get("val/kl")][-1]
        assert float(by_name[name]["kl"]) == float(last_kl), name
    assert all(r["published_test_ll"] == "" for r in rows)  # no preset
    assert by_name["run-002"]["protocol.variant"].startswith("seeded static binarization")

    # the terminal and markdown tables: two blocks, the second with the key that differs
    for text in (printed, (sweep / "comparison.md").read_text()):
        assert text.count("lock 1: mnist, dynamic binarization") == 1 and text.count("lock 2: mnist, seeded static") == 1
        assert 'not ranked with block 1: the protocol differs in variant is "seeded static binarization' in text
        assert "test_split" not in text.split("not ranked")[1].split("\n")[0]  # only the variant differs
        assert text.index(order[0]) < text.index(order[1]) < text.index("run-002")
    table = (sweep / "comparison.md").read_text()
    assert f"| 1 | {order[0]} | {lls[order[0]]:.2f} ± " in table
    assert f"| {evaluation['active_units'][0]} of 2 |" in table
    with Image.open(sweep / "comparison_curves.png") as picture:
        assert picture.size == CURVES_SIZE


@pytest.mark.slow
def test_curves_and_a_run_without_a_protocol(sweep, tmp_path):
    """The curve is val/elbo of metrics.csv per epoch, at train_seconds * epoch / epochs; a run of
    a summary.json without a protocol block gets a block of its own."""
    old = tmp_path / "old"
    shutil.copytree(sweep / "run-001", old)
    s = summary(old)
    del s["protocol"]
    (old / "summary.json").write_text(json.dumps(s))
    blocks = rank(read_runs([sweep / "run-001", old]))
    assert [b.key == UNRECORDED for b in blocks] == [False, True]
    assert "no recorded protocol" in blocks[1].why
    curve = blocks[0].rows[0].curve
    rows = [r for r in csv.DictReader(open(old / "metrics.csv")) if r["val/elbo"]]
    assert curve.label == "val/elbo" and curve.epochs == [1.0, 2.0]
    assert curve.values == [float(r["val/elbo"]) for r in rows]
    assert curve.seconds == [s["train_seconds"] / 2, s["train_seconds"]]


@pytest.mark.slow
def test_a_run_without_validation_is_apart_and_its_curve_is_the_training_bound(sweep):
    run_dir = sweep.parent / "no-validation"
    assert summary(run_dir)["protocol"]["checkpoint_chosen_by"] == LAST_EPOCH
    blocks = rank(read_runs([sweep / "run-001", run_dir]))
    assert [[row.name for row in block.rows] for block in blocks] == [["run-001"], ["no-validation"]]
    assert blocks[1].why == f'not ranked with block 1: the protocol differs in checkpoint_chosen_by is "{LAST_EPOCH}" (block 1: "{BY_VALIDATION}")'
    curve = blocks[1].rows[0].curve
    assert curve.label == "train/elbo_epoch" and curve.epochs == [1.0, 2.0]


@pytest.mark.slow
def test_the_command_line_compares_run_directories(sweep, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "vaelab.compare", str(sweep / "run-002"), str(sweep / "run-001"), "--out", str(out)],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "block 2:" in done.stdout and f"written: {out / 'comparison.md'}" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.md", "comparison_curves.png"]


def test_published_cells_are_matched_by_the_presets_values():
    def cell(*words):
        return published_for(OmegaConf.to_container(compose(parse_command_line(list(words), flags=()))))

    assert cell("experiment=iwae_1layer").test_ll == -84.78  # the preset's own objective: IWAE, k=50
    assert cell("experiment=iwae_1layer", "model.objective=iwae", "model.k=5").test_ll == -85.54
    assert cell("experiment=iwae_1layer", "model.objective=elbo", "model.k=1").test_ll == -86.76
    assert cell("experiment=iwae_1layer", "model.k=1").test_ll == -86.76  # L_1 is the ELBO
    assert "Table 1" in cell("experiment=iwae_2layer").source and cell("experiment=iwae_2layer").test_ll == -82.90
    assert cell("experiment=iwae_2layer", "model.k=5") is None  # a cell docs/RESULTS.md does not quote
    assert cell("experiment=iwae_1layer", "data.binarize=static") is None  # not the paper's data
    assert cell("experiment=iwae_1layer", "model.latent_dim=20") is None
    assert cell("experiment=smoke") is None and cell("experiment=vampprior_mnist") is None


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no folder {path}: give run directories or a sweep's folder"),
        ("empty", "no runs in {path}: no summary.json in it or below it"),
        ("unreadable", "cannot read {path}/summary.json: Expecting"),
        ("bad option", "unrecognized arguments: --bogus; see --help"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case, message, tmp_path, capsys):
    path = tmp_path / "runs"
    words = [str(path)]
    if case != "missing":
        path.mkdir()
    if case == "unreadable":
        (path / "summary.json").write_text('{"test_ll": ')
    if case == "bad option":
        (path / "summary.json").write_text("{}")
        words.append("--bogus")
    assert compare_main(words) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaelab.compare: error: " + message.format(path=path)) and err.count("\n") == 1, err
