"""The sweep folder: ``sweep.yaml``, one directory per run, and the table of runs.

``results.csv`` and ``results.json`` list every run (a :class:`RunRecord`): its parameters,
metric, status and run directory, and the best run. Both are rewritten whole after every
change, so an interrupted sweep leaves a complete table, and the folder continues the sweep
when the runner is started on it again. A run is read back as W&B would see it: its history
is ``metrics.csv`` (one row per logging call) and its summary the last value of every metric,
with the numbers of ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vaelab.errors import SweepError
from vaelab.files.atomic import write_atomically
from vaelab.evaluation.summary import SUMMARY_FILE
from vaelab.files.write_faults import writing

SWEEP_COPY = "sweep.yaml"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
OUTPUT_LOG = "output.log"  # a run's console output, in its directory
METRICS_FILE = "metrics.csv"
# Columns of summary.json worth a column in the table, after the sweep's metric.
SUMMARY_COLUMNS = ("test_elbo", "test_ll")
UNFINISHED = ("running", "interrupted")  # statuses of runs that a sweep started again continues


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

    def read_back(self, metric: dict | None) -> tuple[list[dict[str, float]], dict[str, Any]]:
        """Take the sweep's metric and the summary columns from what the run left; its history
        and summary."""
        history, summary = read_run(Path(self.run_dir))
        self.summary = {k: summary[k] for k in SUMMARY_COLUMNS if k in summary}
        if metric:
            value = summary.get(metric["name"])
            self.metric = value if finite(value) else None
        return history, summary


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


def read_run(run_dir: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """A run's history and summary, as W&B would hold them."""
    history = read_history(run_dir)
    return history, read_summary(run_dir, history)


def last_error(run_dir: Path) -> str | None:
    """Why a run failed: the last ``vaelab.fit: error:`` line of its output, else its last line."""
    try:
        text = (run_dir / OUTPUT_LOG).read_text(errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("vaelab.fit: error:")]
    line = errors[-1] if errors else (lines[-1] if lines else None)
    return line[:300] if line else None


# --- The table ------------------------------------------------------------------------------


def finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def maximizes(metric: dict | None) -> bool:
    """Whether the sweep's metric is to be maximized (W&B's default goal is minimize)."""
    return bool(metric) and metric.get("goal", "minimize") == "maximize"


def best_run(records: list[RunRecord], metric: dict | None) -> RunRecord | None:
    """The finished run with the best metric; None without a metric or a finished run."""
    scored = [r for r in records if r.status == "finished" and finite(r.metric)]
    if not metric or not scored:
        return None
    return (max if maximizes(metric) else min)(scored, key=lambda r: r.metric)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return value if isinstance(value, (int, float, str)) else json.dumps(value)


def write_table(out: Path, source: str, sweep: dict, extra: list[str], records: list[RunRecord]) -> None:
    """``results.csv`` and ``results.json`` in ``out``, rewritten whole."""
    metric = sweep.get("metric")
    best = best_run(records, metric)
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


# --- The folder -----------------------------------------------------------------------------


class SweepFolder:
    """The output folder of one sweep: its copy of the sweep file, run directories and table."""

    def __init__(self, out: Path, source: str, sweep: dict, extra: list[str]):
        self.out, self.source, self.sweep, self.extra = out, source, sweep, list(extra)
        self.records: list[RunRecord] = []

    def open(self) -> bool:
        """Create the folder, or continue the sweep already in it (True): every run it started
        is kept in :attr:`records`, those that did not end among them (:meth:`unfinished`)."""
        saved = self.out / SWEEP_COPY
        plain_sweep = json.loads(json.dumps(dict(self.sweep)))
        if (self.out / RESULTS_JSON).is_file():
            previous = yaml.safe_load(saved.read_text()) if saved.is_file() else None
            if previous != plain_sweep:
                raise SweepError(
                    f"{self.out} holds the results of a different sweep (its {SWEEP_COPY} differs from "
                    f"{self.source}): choose another --out"
                )
            document = json.loads((self.out / RESULTS_JSON).read_text())
            self.records = [RunRecord(**r) for r in document.get("runs", [])]
            return True
        with writing(self.out):
            self.out.mkdir(parents=True, exist_ok=True)
        write_atomically(saved, yaml.safe_dump(plain_sweep, sort_keys=False))
        return False

    def save(self) -> None:
        write_table(self.out, self.source, self.sweep, self.extra, self.records)

    def next_run_dir(self) -> Path:
        """``<out>/run-NNN``: the first number after the runs so far that no file uses."""
        taken = {p.name for p in self.out.iterdir()} | {r.name for r in self.records}
        index = len(self.records) + 1
        while f"run-{index:03d}" in taken:
            index += 1
        return self.out / f"run-{index:03d}"

    def unfinished(self) -> list[RunRecord]:
        """The runs an earlier runner started and did not see end: interrupted, or still
        ``running`` where the runner itself was killed."""
        return [r for r in self.records if r.status in UNFINISHED]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)
