"""``python -m vaelab.sweep SWEEP.yaml [--count N] [--out DIR] [key=value ...]``: a W&B sweep, offline.

The sweep files in ``sweeps/`` are ordinary W&B sweep configurations: ``wandb sweep`` and
``wandb agent`` run them against a W&B server. This command runs the same files with no
server and no account. W&B's own open-source sweep engine (the package ``sweeps``: W&B's
search and early-termination algorithms) proposes every run from the sweep file and the
runs so far; each run is
launched as ``wandb agent`` would launch it: the sweep's ``command`` with its macros
expanded (``${env}``, ``${interpreter}`` = this Python, ``${args_no_hyphens}`` =
``key=value`` words, ...), as a subprocess, with ``run.dir=<out>/<run name>`` appended so
that the run writes where the runner reads. While a run trains, its ``metrics.csv`` is read
every few seconds and handed to the engine's Hyperband early termination when the sweep has
``early_terminate``; a run the engine stops is sent SIGTERM, as the agent does. A finished
run's metric history (``metrics.csv``) and summary (the last value of every metric, and
``summary.json``) go back to the engine, so ``bayes`` learns from them.

Results land in ``<out>/results.csv`` and ``<out>/results.json``: every run's parameters,
metric, status and run directory, and the best run, which is also printed at the end. Each
run's console output is in ``<run dir>/output.log``. Running again with the same ``--out``
continues the sweep (``--count`` more runs; an interrupted run is proposed again).

A sweep file that W&B's schema or engine rejects, or a proposed run that vaelab.fit would
reject (every combination of a grid; one draw otherwise), stops before any run with one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import yaml

from vaelab.config import load_config
from vaelab.errors import ConfigError, VaelabError, run_command
from vaelab.results.run_dir import write_atomically

PROG = "vaelab.sweep"
# W&B's command when a sweep file has none (wandb.sdk.launch.sweeps.utils.DEFAULT_SWEEP_COMMAND).
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
VAELAB_COMMAND = "[${env}, ${interpreter}, -m, vaelab.fit, ${args_no_hyphens}]"
ENVVAR_MACRO = re.compile(r"\$\{envvar\:([A-Z0-9_]*)\}")  # wandb's SWEEP_COMMAND_ENV_VAR_REGEX
# Environment variables through which wandb agent puts its runs into a W&B sweep: the
# runs of this runner belong to no W&B sweep, so they are not passed on.
AGENT_ENVIRONMENT = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH")
POLL_SECONDS = 2.0  # how often a running run's metrics.csv is read for early termination
KILL_AFTER_SECONDS = 30.0  # SIGKILL a stopped run that has not exited this long after SIGTERM
# Like wandb agent: give up once this many runs failed and no more runs finished than failed.
MAX_INITIAL_FAILURES = 5
OUTPUT_LOG = "output.log"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
SWEEP_COPY = "sweep.yaml"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
# Columns of summary.json worth a column in the table, after the sweep's metric.
SUMMARY_COLUMNS = ("test_elbo", "test_ll")


class SweepError(VaelabError):
    """A sweep file, option or output folder that the runner cannot use; one line."""


# --- W&B's sweep engine -------------------------------------------------------------------


def engine():
    """The package ``sweeps`` (W&B's sweep engine), or a one-line error saying how to install it."""
    try:
        with warnings.catch_warnings():
            # sweeps 0.2 declares a pydantic-v1 config key; pydantic 2 warns on import.
            warnings.simplefilter("ignore")
            import sweeps
    except ImportError as error:
        raise SweepError(
            "the offline sweep runner needs W&B's sweep engine, the package 'sweeps' "
            f"({error}): install it with `uv sync --extra sweeps`"
        ) from None
    return sweeps


def _where(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "the sweep"


def validate_sweep(config: object, source: str) -> dict:
    """Check a sweep configuration against W&B's sweep schema and engine; return it filled in.

    Every problem is a :class:`SweepError` of one line naming the file and the offending key.
    """
    sweeps = engine()
    import jsonschema
    from sweeps.config.schema import validator

    if not isinstance(config, dict):
        raise SweepError(f"{source}: a sweep file must hold a mapping (method:, parameters:, ...)")
    best = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if best is not None:
        where = _where(best.absolute_path)
        hint = ""
        if len(best.absolute_path) == 2 and best.absolute_path[0] == "parameters":
            hint = "; a parameter needs values: [...], value: x, or a distribution: with its min/max"
        raise SweepError(f"{source}: {where}: {best.message}{hint} (W&B sweep schema)")
    try:
        violations = sweeps.schema_violations_from_proposed_config(config)
    except ValueError as error:
        violations = [str(error)]
    if violations:
        raise SweepError(f"{source}: {violations[0]} (W&B sweep schema)")
    try:
        filled = sweeps.SweepConfig(config)
        # The engine's own checks: a grid needs discrete parameters, bayes a metric, ...
        sweeps.next_run(filled, [])
        if "early_terminate" in filled:
            sweeps.stop_runs(filled, [])
    except (ValueError, TypeError, AssertionError, jsonschema.ValidationError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        raise SweepError(f"{source}: {message} (W&B sweep engine)") from None
    command = filled.get("command", DEFAULT_COMMAND)
    if command == DEFAULT_COMMAND and not filled.get("program"):
        raise SweepError(f"{source}: no command: vaelab sweeps run command: {VAELAB_COMMAND}")
    return filled


def load_sweep(path: str | Path) -> dict:
    """Read and validate a sweep file; the validated configuration with W&B's defaults filled in."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SweepError(f"cannot read sweep file {path}: {error.strerror or error}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SweepError(f"{path}: not valid YAML{where}: {problem}") from None
    return validate_sweep(config, str(path))


# --- Commands, as wandb agent builds them --------------------------------------------------


def param_values(proposal_config: dict) -> dict[str, Any]:
    """``{name: value}`` from the engine's ``{name: {"value": value}}``, as plain JSON values
    (what wandb agent receives from the server): numpy numbers become Python numbers."""

    def plain(value: Any) -> Any:
        if hasattr(value, "tolist"):
            return value.tolist()
        raise TypeError(f"cannot pass {value!r} of type {type(value).__name__} to a run")

    values = {name: spec["value"] for name, spec in proposal_config.items()}
    return json.loads(json.dumps(values, default=plain))


def command_args(values: dict[str, Any]) -> dict[str, list[str]]:
    """The argument macros of a run, word for word as wandb agent makes them
    (``wandb.sdk.launch.sweeps.utils.create_sweep_command_args``)."""
    args, no_hyphens, no_booleans, no_equals, append, override = [], [], [], [], [], []
    for name, value in values.items():
        flag = f"{name}={value}"
        args.append("--" + flag)
        no_hyphens.append(flag)
        no_equals += [f"--{name}", str(value)]
        append.append("+" + flag)
        override.append("++" + flag)
        if isinstance(value, bool):
            if value:
                no_booleans.append("--" + name)
        else:
            no_booleans.append("--" + flag)
    return {
        "args": args,
        "args_no_equals": no_equals,
        "args_no_hyphens": no_hyphens,
        "args_no_boolean_flags": no_booleans,
        "args_json": [json.dumps(values)],
        "args_append_hydra": append,
        "args_override_hydra": override,
    }


def _expand_envvars(chunk: str) -> str:
    """``${envvar:NAME}`` becomes the variable's value (or NAME when unset), as in wandb."""
    return ENVVAR_MACRO.sub(lambda m: os.environ.get(m.group(1), m.group(1)), chunk)


def build_command(sweep: dict, values: dict[str, Any], run_dir: Path, extra: list[str] = ()) -> list[str]:
    """The argv of one run: the sweep's command with its macros expanded as wandb agent does,
    then the extra ``key=value`` words, then ``run.dir=<run_dir>``."""
    macros: dict[str, list[str]] = command_args(values)
    macros["interpreter"] = [sys.executable]
    macros["env"] = ["/usr/bin/env"] if os.name != "nt" else []
    macros["program"] = [sweep["program"]] if sweep.get("program") else []
    command = [_expand_envvars(str(chunk)) for chunk in sweep.get("command", DEFAULT_COMMAND)]
    if "${args_json_file}" in command:
        path = run_dir / "sweep-args.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(macros["args_json"][0])
        macros["args_json_file"] = [str(path)]
    words: list[str] = []
    for chunk in command:
        if chunk.startswith("${") and chunk.endswith("}"):
            words += macros.get(chunk[2:-1]) or []
        else:
            words.append(chunk)
    return [*words, *extra, f"run.dir={run_dir}"]


def vaelab_words(command: list[str]) -> list[str] | None:
    """The words after ``-m vaelab.fit`` (or ``.../vaelab/fit.py``); None for another program."""
    for i, word in enumerate(command):
        if word == "vaelab.fit" and i > 0 and command[i - 1] == "-m":
            return command[i + 1:]
        if word.replace("\\", "/").endswith("vaelab/fit.py"):
            return command[i + 1:]
    return None


def check_vaelab_command(command: list[str], source: str) -> None:
    """Compose a proposed run's config as vaelab.fit would (no training); a SweepError if it fails."""
    words = vaelab_words(command)
    if words is None:
        return
    hyphens = [w for w in words if w.startswith("-") and "=" in w]
    if hyphens:
        raise SweepError(
            f"{source}: vaelab.fit takes key=value words, not '{hyphens[0]}': put ${{args_no_hyphens}} "
            f"in the command, not ${{args}}: command: {VAELAB_COMMAND}"
        )
    try:
        load_config(words)
    except ConfigError as error:
        raise SweepError(f"{source}: vaelab.fit rejects the proposed run: {error}") from None


# --- Reading a run --------------------------------------------------------------------------


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """The rows of ``metrics.csv`` (one per logging call, as W&B's history), numbers only."""
    try:
        text = (run_dir / METRICS_FILE).read_text()
    except OSError:
        return []
    rows = []
    try:
        for row in csv.DictReader(io.StringIO(text)):
            values = {k: _number(v) for k, v in row.items() if k and v not in (None, "")}
            rows.append({k: v for k, v in values.items() if v is not None})
    except csv.Error:  # caught while Lightning rewrote the header: read again at the next poll
        pass
    return rows


def read_summary(run_dir: Path, history: list[dict[str, float]]) -> dict[str, Any]:
    """W&B's summary: the last value of every metric, with the numbers of ``summary.json``."""
    summary: dict[str, Any] = {}
    for row in history:
        summary.update(row)
    try:
        saved = json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        saved = {}
    summary.update({k: v for k, v in saved.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return summary


def _last_error(log: Path) -> str | None:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    errors = [line for line in lines if line.startswith("vaelab.fit: error:")]
    line = errors[-1] if errors else (lines[-1] if lines else None)
    return line[:300] if line else None


# --- The table ------------------------------------------------------------------------------

# status -> the W&B run state the engine sees
ENGINE_STATE = {"finished": "finished", "failed": "failed", "stopped": "killed", "interrupted": "killed",
                "running": "running"}


@dataclass
class RunRecord:
    """One row of the results table."""

    name: str
    status: str  # running, finished, failed, stopped (early termination), interrupted
    params: dict[str, Any]
    run_dir: str
    command: list[str]
    metric: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    seconds: float | None = None
    note: str | None = None  # why a run failed or was stopped
    predicted_metric: float | None = None  # bayes: the engine's prediction when it proposed the run


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_run(records: list[RunRecord], goal: str) -> RunRecord | None:
    """The finished run with the best metric (highest for maximize, lowest for minimize)."""
    scored = [r for r in records if r.status == "finished" and _finite(r.metric)]
    if not scored:
        return None
    return (max if goal == "maximize" else min)(scored, key=lambda r: r.metric)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return value if isinstance(value, (int, float, str)) else json.dumps(value)


def write_table(out: Path, source: str, sweep: dict, extra: list[str], records: list[RunRecord]) -> None:
    """``results.csv`` and ``results.json`` in ``out``, rewritten whole after every change."""
    metric = sweep.get("metric")
    goal = metric.get("goal", "minimize") if metric else "minimize"
    best = best_run(records, goal) if metric else None
    names = list(dict.fromkeys(name for r in records for name in r.params))
    metric_column = metric["name"] if metric else "metric"
    extras = [c for c in SUMMARY_COLUMNS if c != metric_column]
    header = ["run", "status", metric_column, *names, *extras, "best", "exit_code", "seconds", "run_dir", "note"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        writer.writerow([
            r.name, r.status, _cell(r.metric), *(_cell(r.params.get(n)) for n in names),
            *(_cell(r.summary.get(c)) for c in extras), "yes" if r is best else "",
            _cell(r.exit_code), _cell(None if r.seconds is None else round(r.seconds, 1)), r.run_dir, _cell(r.note),
        ])
    write_atomically(out / RESULTS_CSV, text.getvalue())
    document = {
        "sweep": source,
        "method": sweep["method"],
        "metric": metric,
        "extra": list(extra),
        "best": best.name if best else None,
        "runs": [asdict(r) for r in records],
    }
    write_atomically(out / RESULTS_JSON, json.dumps(document, indent=2) + "\n")


def _load_records(out: Path) -> list[RunRecord]:
    document = json.loads((out / RESULTS_JSON).read_text())
    return [RunRecord(**r) for r in document.get("runs", [])]


# --- The runner -----------------------------------------------------------------------------


def _engine_run(record: RunRecord, history: list[dict[str, float]] | None = None) -> Any:
    sweeps = engine()
    history = read_history(Path(record.run_dir)) if history is None else history
    summary = read_summary(Path(record.run_dir), history)
    state = ENGINE_STATE[record.status]
    # The aliases (sampledHistory, summaryMetrics): pydantic 2 ignores the field names here.
    return sweeps.SweepRun(
        name=record.name,
        state=state,
        config={k: {"value": v} for k, v in record.params.items()},
        sampledHistory=history,
        summaryMetrics=summary,
        stopped=record.status == "stopped",
        exitcode=record.exit_code,
    )


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _describe(record: RunRecord, metric: dict | None, searched: list[str]) -> str:
    params = " ".join(f"{k}={_format_value(record.params[k])}" for k in searched if k in record.params)
    value = f"{metric['name']}={_format_value(record.metric)}" if metric and record.metric is not None else ""
    parts = [record.name, record.status, value, params]
    if record.seconds is not None:
        parts.append(f"({record.seconds:.1f} s)")
    return "  ".join(p for p in parts if p)


def _check_extra(extra: list[str], sweep: dict) -> None:
    searched = set(sweep["parameters"])
    for word in extra:
        key = word.split("=", 1)[0]
        if "=" not in word or not key:
            raise SweepError(f"cannot read '{word}': extra words are key=value overrides, e.g. trainer.max_epochs=5")
        if key in searched:
            raise SweepError(f"'{word}' sets {key}, a parameter of the sweep: change it in the sweep file")
        if key == "run.dir":
            raise SweepError(f"'{word}': the runner gives each run its own run.dir below --out")


def _stop(process: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL if the run has not exited after KILL_AFTER_SECONDS (as wandb agent)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(KILL_AFTER_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


class Runner:
    """Proposes runs with W&B's engine, launches them, reads them back, writes the table."""

    def __init__(self, source: str, sweep: dict, out: Path, extra: list[str], log=None):
        self.sweeps = engine()
        self.source, self.sweep, self.out, self.extra = source, sweep, out, list(extra)
        self.log = log or (lambda line: print(line, flush=True))
        self.metric = sweep.get("metric")
        self.goal = self.metric.get("goal", "minimize") if self.metric else "minimize"
        self.early = "early_terminate" in sweep
        params = sweep["parameters"]
        self.searched = [k for k in params if "value" not in params[k]] or list(params)
        self.records: list[RunRecord] = []
        self.engine_runs: list[Any] = []
        self.env = {k: v for k, v in os.environ.items() if k not in AGENT_ENVIRONMENT}
        self.continued = False

    # the folder and its table
    def open(self) -> None:
        """Create the output folder, or continue the sweep already in it."""
        saved = self.out / SWEEP_COPY
        if (self.out / RESULTS_JSON).is_file():
            previous = yaml.safe_load(saved.read_text()) if saved.is_file() else None
            if previous != json.loads(json.dumps(dict(self.sweep))):
                raise SweepError(
                    f"{self.out} holds the results of a different sweep (its {SWEEP_COPY} differs from "
                    f"{self.source}): choose another --out"
                )
            kept = [r for r in _load_records(self.out) if r.status not in ("running", "interrupted")]
            self.records = kept
            self.engine_runs = [_engine_run(r) for r in kept]
            self.continued = True
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            write_atomically(saved, yaml.safe_dump(json.loads(json.dumps(dict(self.sweep))), sort_keys=False))

    def save(self) -> None:
        write_table(self.out, self.source, self.sweep, self.extra, self.records)

    def _next_name(self) -> str:
        taken = {p.name for p in self.out.iterdir()} | {r.name for r in self.records}
        index = len(self.records) + 1
        while f"run-{index:03d}" in taken:
            index += 1
        return f"run-{index:03d}"

    # proposals
    def propose(self) -> Any:
        with warnings.catch_warnings():  # scikit-learn's notes on fitting bayes' Gaussian process
            warnings.simplefilter("ignore")
            return self.sweeps.next_run(self.sweep, self.engine_runs)

    def predicted(self, proposal: Any) -> float | None:
        """Bayes: the metric the engine expects of a proposal, once it has runs to learn from."""
        info = proposal.search_info or {}
        value = info.get("predicted_value")
        learned = any(r.state in ("finished", "failed", "killed", "crashed") for r in self.engine_runs)
        if value is None or not learned or not _finite(float(value)):
            return None
        return -float(value) if self.goal == "maximize" else float(value)  # the engine minimises

    def command(self, proposal: Any, run_dir: Path) -> tuple[dict[str, Any], list[str]]:
        values = param_values(proposal.config)
        return values, build_command(self.sweep, values, run_dir, self.extra)

    def preflight(self, limit: int = 1000) -> list[str]:
        """Check proposed runs as vaelab.fit would read them, before any work: every combination
        of a grid (up to ``limit``), else one sample. The command of the first."""
        proposals, runs = [], []
        while len(proposals) < (limit if self.sweep["method"] == "grid" else 1):
            proposal = self.sweeps.next_run(self.sweep, runs)  # bayes: no results yet, so a random draw
            if proposal is None:
                break
            proposals.append(proposal)
            runs.append(self.sweeps.SweepRun(name=str(len(runs)), state="finished", config=proposal.config))
        commands = [self.command(p, self.out / f"run-{i + 1:03d}")[1] for i, p in enumerate(proposals)]
        for command in commands:
            check_vaelab_command(command, self.source)
        return commands[0]

    # one run
    def launch(self, proposal: Any) -> RunRecord:
        name = self._next_name()
        run_dir = self.out / name
        values, command = self.command(proposal, run_dir)
        record = RunRecord(name, "running", values, str(run_dir), command, predicted_metric=self.predicted(proposal))
        self.records.append(record)
        self.save()
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log(f"{_describe(record, None, self.searched)}  (output: {run_dir / OUTPUT_LOG})")
        started = time.monotonic()
        stopped = False
        with open(run_dir / OUTPUT_LOG, "w") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=self.env)
            try:
                stopped = self._watch(process, record)
                code = _stop(process) if stopped else process.wait()
            except KeyboardInterrupt:
                record.exit_code = _stop(process)
                record.status, record.seconds = "interrupted", time.monotonic() - started
                self._read_back(record)
                self.save()
                raise
        record.exit_code, record.seconds = code, time.monotonic() - started
        record.status = "stopped" if stopped else ("finished" if code == 0 else "failed")
        history = self._read_back(record)
        if record.status == "failed":
            record.note = _last_error(run_dir / OUTPUT_LOG)
        self.engine_runs.append(_engine_run(record, history))
        self.save()
        return record

    def _read_back(self, record: RunRecord) -> list[dict[str, float]]:
        history = read_history(Path(record.run_dir))
        summary = read_summary(Path(record.run_dir), history)
        record.summary = {k: summary[k] for k in SUMMARY_COLUMNS if k in summary}
        if self.metric:
            value = summary.get(self.metric["name"])
            record.metric = value if _finite(value) else None
        return history

    def _watch(self, process: subprocess.Popen, record: RunRecord) -> bool:
        """Wait for the run; True as soon as the engine's early termination stops it."""
        seen = None
        while True:
            try:
                process.wait(POLL_SECONDS)
                return False
            except subprocess.TimeoutExpired:
                pass
            if not self.early:
                continue
            metrics = Path(record.run_dir) / METRICS_FILE
            try:
                stamp = metrics.stat().st_mtime_ns
            except OSError:
                continue
            if stamp == seen:
                continue
            seen = stamp
            history = read_history(Path(record.run_dir))
            current = _engine_run(record, history)
            to_stop = self.sweeps.stop_runs(self.sweep, [*self.engine_runs, current])
            if any(run.name == record.name for run in to_stop):
                lines = (current.early_terminate_info or {}).get("lines", [])
                record.note = f"stopped by {self.sweep['early_terminate']['type']}: " + "; ".join(lines[-1:])
                return True

    # the sweep
    def run(self, count: int | None) -> int:
        """Run up to ``count`` runs (a grid: until it is exhausted); the exit status."""
        done = 0
        proposal = self.propose()
        while count is None or done < count:
            if proposal is None:
                self.log("the grid is exhausted: every combination has run")
                break
            record = self.launch(proposal)
            done += 1
            self.log(_describe(record, self.metric, self.searched))
            if record.note:
                self.log(f"  {record.note}")
            failed = sum(r.status == "failed" for r in self.records)
            finished = sum(r.status == "finished" for r in self.records)
            if failed >= MAX_INITIAL_FAILURES and failed >= finished:
                self.log(f"{failed} runs failed and only {finished} finished: stopping the sweep, as wandb agent does")
                break
            target = (self.metric or {}).get("target")
            if target is not None and record.status == "finished" and _finite(record.metric) and (
                record.metric >= target if self.goal == "maximize" else record.metric <= target
            ):
                self.log(f"{record.name} reached the metric's target {target}: the sweep is done")
                break
            if count is None or done < count:
                proposal = self.propose()
        return self.report()

    def report(self) -> int:
        self.log(f"results: {self.out / RESULTS_CSV}  {self.out / RESULTS_JSON}")
        finished = [r for r in self.records if r.status == "finished"]
        if self.metric:
            best = best_run(self.records, self.goal)
            if best is not None:
                params = " ".join(f"{k}={_format_value(best.params[k])}" for k in self.searched if k in best.params)
                self.log(f"best run: {best.name}  {self.metric['name']}={_format_value(best.metric)} "
                         f"({self.goal})  {params}  run dir: {best.run_dir}")
            else:
                self.log(f"best run: none: no finished run has logged {self.metric['name']}")
        return 0 if finished else 1


def default_out(path: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / "sweeps" / f"{path.stem}-{stamp}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other vaelab error
        raise SweepError(f"{message}; see --help")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m vaelab.sweep",
        description="Run a W&B sweep file offline: W&B's sweep engine proposes each run, which is "
        "launched as wandb agent would launch it; results go to a table in --out.",
        epilog="Extra key=value words are appended to every run's command (after the sweep's own words, "
        "so they win), e.g. data.root=../shared/data trainer.max_epochs=5.",
    )
    p.add_argument("sweep", help="a W&B sweep file, e.g. sweeps/lr-hidden-search.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra overrides for every run")
    p.add_argument("--count", type=int, help="number of runs (required for random and bayes; a grid "
                   "runs every combination left when omitted)")
    p.add_argument("--out", type=Path, help="output folder (default runs/sweeps/<file>-<time>); "
                   "an earlier sweep's folder continues that sweep")
    p.add_argument("--dry-run", action="store_true", help="validate, print the first run's command, exit")
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_intermixed_args(argv)
    path = Path(args.sweep)
    sweep = load_sweep(path)
    if args.count is not None and args.count < 1:
        raise SweepError(f"--count {args.count}: expected a number of runs >= 1")
    if args.count is None and sweep["method"] != "grid" and not args.dry_run:
        raise SweepError(f"a {sweep['method']} sweep never ends by itself: pass --count N")
    _check_extra(args.overrides, sweep)
    out = args.out or default_out(path)
    runner = Runner(str(path), sweep, out, args.overrides)
    first = runner.preflight()
    if args.dry_run:
        print(" ".join(first))
        return 0
    method = sweep["method"] + (f" with {sweep['early_terminate']['type']}" if "early_terminate" in sweep else "")
    metric = f"{sweep['metric']['name']} ({sweep['metric']['goal']})" if "metric" in sweep else "none"
    runner.open()
    earlier = f"; continuing after {len(runner.records)} earlier runs" if runner.continued else ""
    runner.log(f"sweep {path}: {method}, metric {metric}; results in {out}{earlier}")
    try:
        return runner.run(args.count)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the table so far is in {out / RESULTS_CSV}", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
