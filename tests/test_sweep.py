"""Tests of the W&B sweep files in ``sweeps/`` and of ``python -m vaelab.sweep``, the offline runner.

The files are checked against W&B's sweep schema and engine (the package ``sweeps``), and the
runs they propose are composed as vaelab.fit would read them (no training). The runner is run
end to end on tiny budgets: a grid and a bayes sweep of real fits on the shared Frey faces,
and, with a stand-in program that only writes ``metrics.csv``, Hyperband early termination and
continuing a sweep in the same folder.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from omegaconf import OmegaConf

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # sweeps 0.2 declares a pydantic-v1 config key
    sweeps = pytest.importorskip(
        "sweeps", reason="W&B's sweep engine is not installed: uv sync --extra sweeps"
    )

from vaelab import sweep as runner  # noqa: E402
from vaelab.config import load_config  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((PROJECT / "sweeps").glob("*.yaml"))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FREY_FILE = SHARED / "FreyFaces" / "frey_rawface.mat"
needs_frey = pytest.mark.skipif(not FREY_FILE.is_file(), reason=f"real Frey faces not found: expected {FREY_FILE}")
# A fit of a few seconds: experiment=smoke with fewer batches still, on Frey faces (which
# load faster than MNIST).
TINY = [
    "experiment=smoke",
    "data=frey",
    "model=gaussian_learned",
    f"data.root={SHARED}",
    "eval.ll_samples=10",
    "trainer.progress_bar=false",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1",
]
VAELAB = ["${env}", "${interpreter}", "-m", "vaelab.fit"]
ERROR_PREFIX = "vaelab.sweep: error:"


def write_sweep(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path


def read_table(out: Path) -> tuple[list[dict[str, str]], dict]:
    with open(out / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return rows, json.loads((out / "results.json").read_text())


def assert_statuses(rows: list[dict[str, str]], expected: list[str]) -> None:
    """The runs' statuses, with the end of each unexpected run's output.log when they differ."""
    if [r["status"] for r in rows] != expected:
        logs = [(Path(r["run_dir"]) / "output.log") for r in rows]
        tails = "\n".join(f"--- {log}\n" + "\n".join(log.read_text().splitlines()[-15:]) for log in logs if log.is_file())
        pytest.fail(f"statuses {[r['status'] for r in rows]} != {expected}\n{tails}")


def proposals(config: dict, limit: int = 8) -> list:
    """Every run of a grid; else ``limit`` samples (bayes samples at random before any result)."""
    if config["method"] != "grid":
        return [sweeps.next_run(config, []) for _ in range(limit)]
    found, runs = [], []
    while len(found) < limit:
        proposal = sweeps.next_run(config, runs)
        if proposal is None:
            break
        found.append(proposal)
        runs.append(sweeps.SweepRun(name=str(len(runs)), state="finished", config=proposal.config))
    return found


# --- The shipped sweep files ----------------------------------------------------------------


def test_the_sweeps_of_the_issue_are_there():
    grids = {}
    for path in SWEEP_FILES:
        config = runner.load_sweep(path)
        if config["method"] == "grid":
            grids[path.stem] = [runner.param_values(p.config) for p in proposals(config, 100)]
    latent = {name: sorted(v["model.latent_dim"] for v in values) for name, values in grids.items()
              if all(list(v) == ["model.latent_dim"] for v in values)}
    assert sorted(latent.values()) == [[2, 5, 10, 20], [3, 5, 10, 20, 200]]  # K&W Figure 2
    iwae = [values for values in grids.values() if {"model.k", "model.objective"} <= set(values[0])]
    assert len(iwae) == 1
    assert sorted((v["model.objective"], v["model.k"]) for v in iwae[0]) == [
        (o, k) for o in ("elbo", "iwae") for k in (1, 5, 50)
    ]
    estimators = [values for values in grids.values() if "model.estimator" in values[0]]
    assert len(estimators) == 1
    assert sorted((v["model.estimator"], v["model.k"]) for v in estimators[0]) == [
        (e, k) for e in ("dreg", "reparam", "stl") for k in (5, 50)
    ]
    searches = [runner.load_sweep(p) for p in SWEEP_FILES]
    searches = [c for c in searches if c["method"] in ("bayes", "random") and "early_terminate" in c]
    assert any(
        c["parameters"]["optim.lr"]["distribution"] == "log_uniform_values" and "model.hidden" in c["parameters"]
        for c in searches
    )


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_file_validates_against_wandb_schema(path):
    raw = runner.yaml.safe_load(path.read_text())
    assert sweeps.schema_violations_from_proposed_config(raw) == []
    config = runner.load_sweep(path)  # the schema, then the engine's own checks
    assert config["metric"]["name"] in ("val/elbo", "test/ll", "test/elbo")
    assert config["metric"]["goal"] == "maximize"
    command = raw["command"]
    assert command[:4] == VAELAB and command[-1] == "${args_no_hyphens}"
    assert "logger=wandb" in command  # so runs under wandb agent report their metrics to W&B


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_file_commands_are_accepted_by_vaelab_fit(path, tmp_path):
    config = runner.load_sweep(path)
    for proposal in proposals(config):
        values = runner.param_values(proposal.config)
        command = runner.build_command(config, values, tmp_path / "run")
        assert command[:4] == ["/usr/bin/env", sys.executable, "-m", "vaelab.fit"]
        cfg, _ = load_config(runner.vaelab_words(command))  # raises ConfigError if vaelab.fit would
        assert cfg.logger.name.value == "wandb" and cfg.run.dir == str(tmp_path / "run")
        for name, value in values.items():  # each parameter reaches its key
            expected = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]))["v"]
            got = OmegaConf.select(cfg, name)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else getattr(got, "value", got)
            assert got == pytest.approx(expected), name


def test_command_macros_are_those_of_wandb_agent():
    utils = pytest.importorskip("wandb.sdk.launch.sweeps.utils")
    values = {"model.latent_dim": 5, "optim.lr": 0.00031, "model.hidden": "[200,200]", "big": 1e-05,
              "model.sigmoid_mean": False, "flag": True, "list": [1, 2], "none": None}
    theirs = utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    ours = runner.command_args(values)
    assert ours == {k: theirs[k] for k in ours}
    assert set(theirs) - set(ours) <= {"args_dict"}


# --- The offline runner on real fits --------------------------------------------------------


@needs_frey
def test_offline_grid_sweep_runs_and_names_the_best_run(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "grid.yaml", {
        "method": "grid",
        "metric": {"name": "val/elbo", "goal": "maximize"},
        "parameters": {"model.latent_dim": {"values": [2, 3, 4]}, "model.hidden": {"value": "[50]"}},
        "command": [*VAELAB, *TINY, "${args_no_hyphens}"],
    })
    out = tmp_path / "out"
    status = runner.main([str(sweep), "--out", str(out)])  # a grid runs until exhausted
    printed = capsys.readouterr().out
    rows, document = read_table(out)
    assert_statuses(rows, ["finished"] * 3)
    assert status == 0
    assert sorted(int(r["model.latent_dim"]) for r in rows) == [2, 3, 4]
    best = max(rows, key=lambda r: float(r["val/elbo"]))
    assert [r["run"] for r in rows if r["best"] == "yes"] == [best["run"]] == [document["best"]]
    assert f"best run: {best['run']}" in printed.splitlines()[-1]
    for row, record in zip(rows, document["runs"]):
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == out and record["params"]["model.hidden"] == "[50]"
        saved = OmegaConf.load(run_dir / "config.yaml")
        assert saved.model.latent_dim == int(row["model.latent_dim"]) and saved.model.hidden == [50]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert float(row["test_ll"]) == pytest.approx(summary["test_ll"])
        val = [float(r["val/elbo"]) for r in csv.DictReader(open(run_dir / "metrics.csv")) if r["val/elbo"]]
        assert float(row["val/elbo"]) == pytest.approx(val[-1])  # W&B's summary: the last value


@needs_frey
def test_bayes_sweep_proposes_from_earlier_results(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "bayes.yaml", {
        "method": "bayes",
        "metric": {"name": "val/elbo", "goal": "maximize"},
        "parameters": {
            "optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
            "model.hidden": {"values": ["[20]", "[50]"]},
        },
        "command": [*VAELAB, "${args_no_hyphens}"],
    })
    out = tmp_path / "out"
    status = runner.main([str(sweep), "--count", "3", "--out", str(out), *TINY])
    rows, document = read_table(out)
    runs = document["runs"]
    assert_statuses(rows, ["finished"] * 3)
    assert status == 0
    assert len({r["params"]["optim.lr"] for r in runs}) == 3
    assert all(1e-4 <= r["params"]["optim.lr"] <= 1e-2 for r in runs)
    # The engine fitted its Gaussian process to the earlier runs' metrics: with one result,
    # it expects exactly that value everywhere; with two, some finite value.
    assert runs[0]["predicted_metric"] is None
    assert runs[1]["predicted_metric"] == pytest.approx(runs[0]["metric"], rel=1e-6)
    assert math.isfinite(runs[2]["predicted_metric"])
    assert document["best"] in {r["name"] for r in runs}
    assert f"best run: {document['best']}" in capsys.readouterr().out


# --- The offline runner with a stand-in program ---------------------------------------------

FAKE_FIT = """\
import csv, json, sys, time
from pathlib import Path

args = dict(word.split("=", 1) for word in sys.argv[1:])
run_dir = Path(args["run.dir"])
run_dir.mkdir(parents=True, exist_ok=True)
slope, epochs = float(args["slope"]), int(args.get("epochs", 3))
with open(run_dir / "metrics.csv", "w") as file:
    file.write("epoch,step,val/elbo\\n")
for epoch in range(epochs):
    with open(run_dir / "metrics.csv", "a") as file:
        file.write(f"{epoch},{epoch},{slope * epoch - 100}\\n")
    time.sleep(float(args.get("sleep", 0)))
(run_dir / "summary.json").write_text(json.dumps({"test_ll": slope}))
"""


@pytest.fixture
def fake_fit(tmp_path):
    program = tmp_path / "fake_fit.py"
    program.write_text(FAKE_FIT)
    return ["${env}", "${interpreter}", str(program), "${args_no_hyphens}"]


def test_hyperband_stops_a_worse_run_while_it_trains(tmp_path, fake_fit, monkeypatch, capsys):
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.05)
    sweep = write_sweep(tmp_path / "hyperband.yaml", {
        "method": "grid",
        "metric": {"name": "val/elbo", "goal": "maximize"},
        "parameters": {"slope": {"values": [1.0, -1.0]}},
        "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 3},
        "command": fake_fit,
    })
    out = tmp_path / "out"
    assert runner.main([str(sweep), "--out", str(out), "epochs=40", "sleep=0.05"]) == 0
    rows, document = read_table(out)
    assert [r["status"] for r in rows] == ["finished", "stopped"]
    assert rows[1]["note"].startswith("stopped by hyperband")
    logged = list(csv.DictReader(open(Path(rows[1]["run_dir"]) / "metrics.csv")))
    assert 3 <= len(logged) < 40
    assert document["best"] == "run-001"


def test_a_sweep_continues_in_its_folder(tmp_path, fake_fit, capsys):
    config = {
        "method": "grid",
        "metric": {"name": "test_ll", "goal": "minimize"},
        "parameters": {"slope": {"values": [3, 1, 2]}},
        "command": fake_fit,
    }
    sweep = write_sweep(tmp_path / "grid.yaml", config)
    out = tmp_path / "out"
    assert runner.main([str(sweep), "--count", "2", "--out", str(out)]) == 0
    assert runner.main([str(sweep), "--count", "5", "--out", str(out)]) == 0
    rows, document = read_table(out)
    assert [r["run"] for r in rows] == ["run-001", "run-002", "run-003"]
    assert [r["slope"] for r in rows] == ["3", "1", "2"]
    assert document["best"] == "run-002"  # test_ll = slope, minimized
    printed = capsys.readouterr().out
    assert "continuing after 2 earlier runs" in printed and "the grid is exhausted" in printed
    # Another sweep cannot write into that folder.
    other = write_sweep(tmp_path / "other.yaml", {**config, "parameters": {"slope": {"values": [5]}}})
    assert runner.main([str(other), "--out", str(out)]) == 2
    assert "holds the results of a different sweep" in capsys.readouterr().err


def test_without_the_sweep_engine_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sweeps", None)  # import sweeps raises ImportError
    assert runner.main([str(SWEEP_FILES[0]), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(ERROR_PREFIX) and "uv sync --extra sweeps" in err


# --- Errors ---------------------------------------------------------------------------------

GOOD = {"method": "grid", "parameters": {"model.latent_dim": {"values": [3]}},
        "command": [*VAELAB, "${args_no_hyphens}"]}
INVALID = {
    "unknown method": ({**GOOD, "method": "grids"}, "method: 'grids' is not one of"),
    "no parameters": ({"method": "grid", "command": GOOD["command"]}, "'parameters' is a required property"),
    "misspelt section": ({**GOOD, "parametrs": {}}, "'parametrs' was unexpected"),
    "bad parameter": ({**GOOD, "parameters": {"optim.lr": {"min": 0.1}}}, "parameters.optim.lr:"),
    "min above max": ({**GOOD, "method": "random", "parameters": {"optim.lr": {"min": 0.1, "max": 0.01}}},
                      "min 0.1 is not less than max 0.01"),
    "bayes without metric": ({**GOOD, "method": "bayes"}, 'requires "metric"'),
    "grid of a continuous parameter": (
        {**GOOD, "parameters": {"optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}},
        "Grid search requires"),
    "hyperband without metric": ({**GOOD, "early_terminate": {"type": "hyperband", "min_iter": 3}},
                                 'requires "metric"'),
    "no command": ({k: v for k, v in GOOD.items() if k != "command"}, "no command"),
    "unknown vaelab key": ({**GOOD, "parameters": {"model.latnt_dim": {"values": [3]}}},
                           "did you mean model.latent_dim?"),
    "bad vaelab value": ({**GOOD, "parameters": {"model.latent_dim": {"values": [3, 0]}}}, "model.latent_dim=0"),
    "args with hyphens": ({**GOOD, "command": [*VAELAB, "${args}"]}, "${args_no_hyphens}"),
}


@pytest.mark.parametrize("config, message", INVALID.values(), ids=list(INVALID))
def test_invalid_sweep_file_is_one_line_and_exit_2(config, message, tmp_path, capsys):
    sweep = write_sweep(tmp_path / "bad.yaml", config)
    out = tmp_path / "out"
    assert runner.main([str(sweep), "--count", "1", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith(ERROR_PREFIX)
    assert message in captured.err
    assert not out.exists()  # nothing ran


@pytest.mark.parametrize("words, message", [
    (["missing.yaml"], "cannot read sweep file missing.yaml"),
    (["{bad}"], "not valid YAML"),
    (["{good}"], "pass --count N"),
    (["{good}", "--count", "0"], "expected a number of runs >= 1"),
    (["{good}", "--count", "1", "optim.lr=0.1"], "a parameter of the sweep"),
    (["{good}", "--count", "1", "run.dir=x"], "its own run.dir"),
    (["{good}", "--count", "1", "nonsense"], "cannot read 'nonsense'"),
    (["{good}", "--cuont", "1"], "unrecognized arguments"),
], ids=["missing", "yaml", "no count", "count 0", "swept key", "run.dir", "not key=value", "bad option"])
def test_bad_command_line_is_one_line_and_exit_2(words, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("method: [grid\n")
    write_sweep(tmp_path / "good.yaml", {**GOOD, "method": "random", "parameters": {"optim.lr": {"values": [0.1]}}})
    words = [w.format(bad="bad.yaml", good="good.yaml") for w in words]
    assert runner.main(words) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(ERROR_PREFIX) and message in err


def test_command_line_exit_status_of_an_invalid_file(tmp_path):
    sweep = write_sweep(tmp_path / "bad.yaml", INVALID["unknown vaelab key"][0])
    done = subprocess.run([sys.executable, "-m", "vaelab.sweep", str(sweep), "--dry-run"],
                          capture_output=True, text=True, cwd=PROJECT)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(ERROR_PREFIX) and "did you mean model.latent_dim?" in done.stderr
