"""Tests of the W&B sweep files in ``sweeps/`` and of ``python -m vaelab.sweep``, the offline runner.

The files are checked against W&B's sweep schema and engine (the package ``sweeps``), and the
runs they propose are composed as vaelab.fit would read them (no training). The runner is run
end to end on tiny budgets: a grid sweep of real fits on the shared Frey faces, and, with a
stand-in program that only writes ``metrics.csv`` and ``summary.json`` (each real fit is a new
Python process of several seconds), a bayes sweep, Hyperband early termination and continuing a
sweep in the same folder.
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

import yaml  # noqa: E402

from tests.helpers import PROJECT, TINY_FIT, needs_frey  # noqa: E402
from vaelab.compare import main as compare_main  # noqa: E402
from vaelab.config import load_config  # noqa: E402
from vaelab.sweep import process  # noqa: E402
from vaelab.sweep.cli import main  # noqa: E402
from vaelab.sweep.command import build_command, param_values, vaelab_words  # noqa: E402
from vaelab.sweep.engine import load_sweep  # noqa: E402

SWEEP_FILES = sorted((PROJECT / "sweeps").glob("*.yaml"))
# The tiny fit of tests/helpers/ on Frey faces (which load faster than MNIST), fewer batches still.
TINY_FREY = [*TINY_FIT, "data=frey", "model=gaussian_learned", "trainer.limit_val_batches=2",
             "trainer.limit_test_batches=1"]
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


def test_sweep_files_hold_the_latent_grids_the_iwae_k_grid_and_an_lr_search():
    grids = {}
    for path in SWEEP_FILES:
        config = load_sweep(path)
        if config["method"] == "grid":
            grids[path.stem] = [param_values(p.config) for p in proposals(config, 100)]
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
    searches = [load_sweep(p) for p in SWEEP_FILES]
    searches = [c for c in searches if c["method"] in ("bayes", "random") and "early_terminate" in c]
    assert any(
        c["parameters"]["optim.lr"]["distribution"] == "log_uniform_values" and "model.hidden" in c["parameters"]
        for c in searches
    )


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_file_validates_against_wandb_schema(path):
    raw = yaml.safe_load(path.read_text())
    assert sweeps.schema_violations_from_proposed_config(raw) == []
    config = load_sweep(path)  # the schema, then the engine's own checks
    assert config["metric"]["name"] in ("val/elbo", "test/ll", "test/elbo")
    assert config["metric"]["goal"] == "maximize"
    command = raw["command"]
    assert command[:4] == VAELAB and command[-1] == "${args_no_hyphens}"
    assert "logger=wandb" in command  # so runs under wandb agent report their metrics to W&B


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_file_commands_are_accepted_by_vaelab_fit(path, tmp_path):
    config = load_sweep(path)
    for proposal in proposals(config):
        values = param_values(proposal.config)
        command = build_command(config, values, tmp_path / "run")
        assert command[:4] == ["/usr/bin/env", sys.executable, "-m", "vaelab.fit"]
        cfg, _ = load_config(vaelab_words(command))  # raises ConfigError if vaelab.fit would
        assert cfg.logger.name.value == "wandb" and cfg.run.dir == str(tmp_path / "run")
        for name, value in values.items():  # each parameter reaches its key; a group choice, its file's name
            expected = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]))["v"]
            got = OmegaConf.select(cfg, f"{name}.name" if name in ("prior", "net") else name)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else getattr(got, "value", got)
            assert got == pytest.approx(expected), name


def test_command_macros_expand_word_for_word_as_in_wandb_agent(tmp_path, monkeypatch):
    """Every macro of a W&B sweep command, in the formats wandb agent writes (W&B's docs,
    "command macros"): --key=value, key=value, --key value, booleans as bare flags, JSON, Hydra."""
    values = {"model.latent_dim": 5, "optim.lr": 0.00031, "model.hidden": "[200,200]", "big": 1e-05,
              "model.sigmoid_mean": False, "flag": True, "list": [1, 2], "none": None}
    words = ["model.latent_dim=5", "optim.lr=0.00031", "model.hidden=[200,200]", "big=1e-05",
             "model.sigmoid_mean=False", "flag=True", "list=[1, 2]", "none=None"]
    expected = {
        "args": ["--" + w for w in words],
        "args_no_hyphens": words,
        "args_no_equals": ["--model.latent_dim", "5", "--optim.lr", "0.00031", "--model.hidden", "[200,200]",
                           "--big", "1e-05", "--model.sigmoid_mean", "False", "--flag", "True", "--list", "[1, 2]",
                           "--none", "None"],
        # False leaves its flag out, True is the bare flag
        "args_no_boolean_flags": ["--model.latent_dim=5", "--optim.lr=0.00031", "--model.hidden=[200,200]",
                                  "--big=1e-05", "--flag", "--list=[1, 2]", "--none=None"],
        "args_json": ['{"model.latent_dim": 5, "optim.lr": 0.00031, "model.hidden": "[200,200]", "big": 1e-05, '
                      '"model.sigmoid_mean": false, "flag": true, "list": [1, 2], "none": null}'],
        "args_append_hydra": ["+" + w for w in words],
        "args_override_hydra": ["++" + w for w in words],
    }
    run_dir = tmp_path / "run"
    for macro, macro_words in expected.items():
        assert build_command({"command": ["${" + macro + "}"]}, values, run_dir) == [*macro_words, f"run.dir={run_dir}"]
    # The other macros: this Python, /usr/bin/env, the program, environment variables, the JSON file.
    monkeypatch.setenv("VAELAB_SWEEP_TEST", "from-env")
    sweep = {"program": "train.py", "command": ["${env}", "${interpreter}", "${program}", "--x=${envvar:VAELAB_SWEEP_TEST}",
                                                "${envvar:UNSET_VARIABLE}", "${args_json_file}", "${unknown}"]}
    assert build_command(sweep, values, run_dir, ["extra=1"]) == [
        "/usr/bin/env", sys.executable, "train.py", "--x=from-env", "UNSET_VARIABLE", str(run_dir / "sweep-args.json"),
        "extra=1", f"run.dir={run_dir}",
    ]
    assert sweep["command"][3] == "--x=${envvar:VAELAB_SWEEP_TEST}"  # the sweep itself is left as it was


# --- The offline runner on real fits --------------------------------------------------------


@pytest.mark.slow
@needs_frey
def test_offline_grid_sweep_runs_and_names_the_best_run(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "grid.yaml", {
        "method": "grid",
        "metric": {"name": "val/elbo", "goal": "maximize"},
        "parameters": {"model.latent_dim": {"values": [2, 3]}, "model.hidden": {"value": "[50]"}},
        "command": [*VAELAB, *TINY_FREY, "${args_no_hyphens}"],
    })
    out = tmp_path / "out"
    status = main([str(sweep), "--out", str(out)])  # a grid runs until exhausted
    printed = capsys.readouterr().out
    rows, document = read_table(out)
    assert_statuses(rows, ["finished"] * 2)
    assert status == 0
    assert sorted(int(r["model.latent_dim"]) for r in rows) == [2, 3]
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
    # vaelab.compare on the sweep's folder: one protocol, the runs ranked by their test log p(x)
    assert compare_main([str(out)]) == 0
    compared = list(csv.DictReader(open(out / "comparison.csv")))
    by_ll = sorted(rows, key=lambda r: float(r["test_ll"]), reverse=True)
    assert [(r["block"], r["rank"]) for r in compared] == [("1", "1"), ("1", "2")]
    assert [Path(r["run_dir"]) for r in compared] == [Path(r["run_dir"]) for r in by_ll]
    assert [float(r["test_ll"]) for r in compared] == [json.loads((Path(r["run_dir"]) / "summary.json").read_text())["test_ll"] for r in by_ll]


# --- The offline runner with a stand-in program ---------------------------------------------

FAKE_FIT = """\
import csv, json, sys, time
from pathlib import Path

args = dict(word.split("=", 1) for word in sys.argv[1:])
run_dir = Path(args["run.dir"])
run_dir.mkdir(parents=True, exist_ok=True)
slope, epochs = float(args["slope"]), int(args.get("epochs", 3))
level = -100 + 1000 * float(args.get("optim.lr", 0))  # a bayes sweep's parameter moves it
with open(run_dir / "metrics.csv", "w") as file:
    file.write("epoch,step,val/elbo\\n")
for epoch in range(epochs):
    with open(run_dir / "metrics.csv", "a") as file:
        file.write(f"{epoch},{epoch},{slope * epoch + level}\\n")
    time.sleep(float(args.get("sleep", 0)))
(run_dir / "summary.json").write_text(json.dumps({"test_ll": slope}))
"""


@pytest.fixture
def fake_fit(tmp_path):
    program = tmp_path / "fake_fit.py"
    program.write_text(FAKE_FIT)
    return ["${env}", "${interpreter}", str(program), "${args_no_hyphens}"]


def test_bayes_sweep_proposes_from_earlier_results(tmp_path, fake_fit, capsys):
    sweep = write_sweep(tmp_path / "bayes.yaml", {
        "method": "bayes",
        "metric": {"name": "val/elbo", "goal": "maximize"},
        "parameters": {
            "optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
            "model.hidden": {"values": ["[20]", "[50]"]},
        },
        "command": fake_fit,
    })
    out = tmp_path / "out"
    status = main([str(sweep), "--count", "3", "--out", str(out), "slope=0.5"])
    rows, document = read_table(out)
    runs = document["runs"]
    assert_statuses(rows, ["finished"] * 3)
    assert status == 0
    assert len({r["params"]["optim.lr"] for r in runs}) == 3
    assert all(1e-4 <= r["params"]["optim.lr"] <= 1e-2 for r in runs)
    # The stand-in's last val/elbo is 0.5 * 2 - 100 + 1000 * lr: the metric each run reported.
    for run in runs:
        assert run["metric"] == pytest.approx(-99 + 1000 * run["params"]["optim.lr"]), run
    # The engine fitted its Gaussian process to the earlier runs' metrics: with one result,
    # it expects exactly that value everywhere; with two, some finite value.
    assert runs[0]["predicted_metric"] is None
    assert runs[1]["predicted_metric"] == pytest.approx(runs[0]["metric"], rel=1e-6)
    assert math.isfinite(runs[2]["predicted_metric"])
    assert document["best"] in {r["name"] for r in runs}
    assert f"best run: {document['best']}" in capsys.readouterr().out


def test_hyperband_stops_a_worse_run_while_it_trains(tmp_path, fake_fit, monkeypatch, capsys):
    monkeypatch.setattr(process, "POLL_SECONDS", 0.05)
    sweep = write_sweep(tmp_path / "hyperband.yaml", {
        "method": "grid",
        "metric": {"name": "val/elbo", "goal": "maximize"},
        "parameters": {"slope": {"values": [1.0, -1.0]}},
        "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 3},
        "command": fake_fit,
    })
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "epochs=40", "sleep=0.05"]) == 0
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
    assert main([str(sweep), "--count", "2", "--out", str(out)]) == 0
    assert main([str(sweep), "--count", "5", "--out", str(out)]) == 0
    rows, document = read_table(out)
    assert [r["run"] for r in rows] == ["run-001", "run-002", "run-003"]
    assert [r["slope"] for r in rows] == ["3", "1", "2"]
    assert document["best"] == "run-002"  # test_ll = slope, minimized
    printed = capsys.readouterr().out
    assert "continuing after 2 earlier runs" in printed and "the grid is exhausted" in printed
    # Another sweep cannot write into that folder.
    other = write_sweep(tmp_path / "other.yaml", {**config, "parameters": {"slope": {"values": [5]}}})
    assert main([str(other), "--out", str(out)]) == 2
    assert "holds the results of a different sweep" in capsys.readouterr().err


def test_without_the_sweep_engine_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sweeps", None)  # import sweeps raises ImportError
    assert main([str(SWEEP_FILES[0]), "--dry-run"]) == 2
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
    assert main([str(sweep), "--count", "1", "--out", str(out)]) == 2
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
    assert main(words) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(ERROR_PREFIX) and message in err


@pytest.mark.slow
def test_command_line_exit_status_of_an_invalid_file(tmp_path):
    sweep = write_sweep(tmp_path / "bad.yaml", INVALID["unknown vaelab key"][0])
    done = subprocess.run([sys.executable, "-m", "vaelab.sweep", str(sweep), "--dry-run"],
                          capture_output=True, text=True, cwd=PROJECT)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(ERROR_PREFIX) and "did you mean model.latent_dim?" in done.stderr


# --- Interrupted sweeps: the runner stopped during a run, and started again ---------------

# A real fit of a few seconds on tiny MNIST files, deterministic, so that a continued run can be
# compared bit for bit; data.root is added by tiny_mnist_words.
TINY_MNIST_FIT = [
    "experiment=smoke", "trainer.progress_bar=false", "data.val_size=100", "eval.ll_samples=10",
    "trainer.max_epochs=2", "trainer.limit_train_batches=10", "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1", "trainer.steps_per_call=3", "trainer.log_every_n_steps=1",
    "trainer.checkpoint_every_n_steps=null", "trainer.checkpoint_every_minutes=null", "trainer.accelerator=cpu",
    "trainer.deterministic=true", "trainer.compile=false", "model.hidden=[32]", "data.batch_size=50",
]
HOLD_AT_STEP = 13  # inside epoch 1: a checkpoint there can only be the signal's
# `python HELD_RUN -m vaelab.fit ...`: vaelab.fit, but the run whose directory ends in $HOLD_RUN is
# held after step $HOLD_AT_STEP (once: until $HOLD_MARKER exists) until vaelab has a signal.
HELD_RUN = """\
import os, runpy, sys, time
from pathlib import Path

if os.environ.get("HOLD_RUN"):
    from vaelab.training import interrupts
    from vaelab.training.resume import SignalCheckpoint

    marker, check = Path(os.environ["HOLD_MARKER"]), SignalCheckpoint.on_train_batch_end

    def hold_then_check(self, trainer, *args):
        held = str(trainer.default_root_dir).endswith(os.environ["HOLD_RUN"])
        if held and trainer.global_step == int(os.environ["HOLD_AT_STEP"]) and not marker.exists():
            marker.write_text("held")
            deadline = time.monotonic() + 120
            while not interrupts.active().requested and time.monotonic() < deadline:
                time.sleep(0.01)
        check(self, trainer, *args)

    SignalCheckpoint.on_train_batch_end = hold_then_check
assert sys.argv[1:3] == ["-m", "vaelab.fit"], sys.argv
sys.argv = ["vaelab.fit", *sys.argv[3:]]
runpy.run_module("vaelab.fit", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def held_grid(tmp_path_factory) -> Path:
    """A grid of two real fits (model.latent_dim 2, 3), launched through HELD_RUN."""
    from tests.helpers import write_mnist

    root = tmp_path_factory.mktemp("held-grid")
    write_mnist(root / "data", n_train=600, n_test=100)
    (root / "held_run.py").write_text(HELD_RUN)
    return write_sweep(root / "grid.yaml", {
        "method": "grid",
        "metric": {"name": "val/elbo", "goal": "maximize"},
        "parameters": {"model.latent_dim": {"values": [2, 3]}},
        "command": ["${env}", "${interpreter}", str(root / "held_run.py"), "-m", "vaelab.fit", *TINY_MNIST_FIT,
                    f"data.root={root / 'data'}", "${args_no_hyphens}"],
    })


def sweep_process(sweep: Path, out: Path, **env: str) -> subprocess.Popen:
    """``python -m vaelab.sweep SWEEP --out OUT`` in its own process group, as a terminal starts it."""
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith(("VAELAB_", "HOLD_"))}
    return subprocess.Popen([sys.executable, "-m", "vaelab.sweep", str(sweep), "--out", str(out)],
                            env={**environment, "PYTHONPATH": str(PROJECT), **env}, cwd=out.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def uninterrupted_grid(held_grid) -> Path:
    out = held_grid.parent / "uninterrupted"
    process = sweep_process(held_grid, out)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stdout[-2000:] + stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_a_sweep_stopped_during_a_run_continues_that_run_from_its_checkpoint(held_grid, uninterrupted_grid, how):
    """Ctrl-C: the runner passes SIGINT on to run-002, which saves at step 13; the runner records
    it as interrupted and exits 130 with the command that continues. kill -9 of the runner: the
    run gets SIGTERM (it dies with its parent) and saves. Started again, the sweep continues
    run-002 in its directory, and it ends as in the sweep never interrupted."""
    import signal
    import time

    import torch

    from tests.helpers import metrics_rows

    out = held_grid.parent / how.replace(" ", "")
    out.mkdir()
    marker = out.parent / f"held-{out.name}"
    process = sweep_process(held_grid, out, HOLD_RUN="run-002", HOLD_AT_STEP=str(HOLD_AT_STEP), HOLD_MARKER=str(marker))
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "run-002 was not held"
        time.sleep(0.05)
    if how == "ctrl-c":
        os_killpg(process.pid, signal.SIGINT)  # to the runner's process group, as a terminal does
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, stdout[-2000:] + stderr[-2000:]
        assert stderr.splitlines()[-1] == (f"vaelab.sweep: interrupted by SIGINT: run-002 stopped (its checkpoint "
                                           f"kept); continue the sweep with: python -m vaelab.sweep {held_grid} --out {out}")
        rows, _ = read_table(out)
        assert [(r["run"], r["status"]) for r in rows] == [("run-001", "finished"), ("run-002", "interrupted")]
    else:
        process.kill()
        process.communicate(timeout=60)
    saved = torch.load(out / "run-002" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    if how == "ctrl-c":
        assert saved["global_step"] == HOLD_AT_STEP
    # (after kill -9 the run may still be saving: the runner started again waits for it)

    again = sweep_process(held_grid, out)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert f"run-002  {'interrupted' if how == 'ctrl-c' else 'running'}: continuing it from its checkpoint" in stdout
    rows, document = read_table(out)
    assert_statuses(rows, ["finished", "finished"])
    assert [r["run"] for r in rows] == ["run-001", "run-002"] and [r["model.latent_dim"] for r in rows] == ["2", "3"]
    assert [Path(r["run_dir"]) for r in rows] == [out / "run-001", out / "run-002"]
    assert sorted(p.name for p in out.glob("run-*")) == ["run-001", "run-002"]
    assert torch.load(out / "run-002" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=False)["global_step"] == 20
    for run in ("run-001", "run-002"):
        assert metrics_rows(uninterrupted_grid / run) == metrics_rows(out / run), run
        whole, continued = (json.loads((o / run / "summary.json").read_text()) for o in (uninterrupted_grid, out))
        assert (whole["test_elbo"], whole["test_ll"]) == (continued["test_elbo"], continued["test_ll"]), run
    expected, _ = read_table(uninterrupted_grid)
    assert [r["val/elbo"] for r in rows] == [r["val/elbo"] for r in expected]


def os_killpg(pid: int, signum: int) -> None:
    import os

    os.killpg(pid, signum)


@pytest.mark.slow
def test_an_interrupted_run_without_a_checkpoint_restarts_from_scratch_in_its_slot(tmp_path, fake_fit):
    """Ctrl-C during run-002 of a stand-in program (no checkpoints): it is recorded as interrupted;
    started again, the sweep says it restarts run-002 from scratch, in run-002, and runs on."""
    import signal
    import time

    sweep = write_sweep(tmp_path / "grid.yaml", {
        "method": "grid", "metric": {"name": "test_ll", "goal": "minimize"},
        "parameters": {"slope": {"values": [3, 1, 2]}}, "command": fake_fit,
    })
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "vaelab.sweep", str(sweep), "--out", str(out), "epochs=3", "sleep=1"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "run-002" / "metrics.csv").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    os_killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "run-002 stopped (no checkpoint yet)" in stderr.splitlines()[-1]
    rows, _ = read_table(out)
    assert [r["status"] for r in rows] == ["finished", "interrupted"]
    again = subprocess.run([sys.executable, "-m", "vaelab.sweep", str(sweep), "--out", str(out), "epochs=3"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"run-002  interrupted with no checkpoint: restarting it from scratch in {out / 'run-002'}" in again.stdout
    rows, _ = read_table(out)
    assert [(r["run"], r["slope"], r["status"]) for r in rows] == [
        ("run-001", "3", "finished"), ("run-002", "1", "finished"), ("run-003", "2", "finished")]
    assert len(list(csv.DictReader(open(out / "run-002" / "metrics.csv")))) == 3  # from scratch: 3 epochs, once
