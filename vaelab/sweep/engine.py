"""W&B's sweep engine (the package ``sweeps``): the sweep file, proposals, early termination.

The engine is W&B's own open-source one: its search methods (grid, random, bayes) and
Hyperband early termination propose and stop runs here as on W&B's server. This module
checks a sweep file against W&B's schema and engine, and keeps the engine's view of the runs
so far: their parameters, state, metric history and summary.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from vaelab.errors import SweepError
from vaelab.sweep.command import require_command
from vaelab.sweep.runs import RunRecord, finite, maximizes

# status in the table -> the W&B run state the engine sees
ENGINE_STATE = {"finished": "finished", "failed": "failed", "stopped": "killed", "interrupted": "killed",
                "running": "running"}


def sweep_engine():
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
    sweeps = sweep_engine()
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
    require_command(filled, source)
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


class Engine:
    """W&B's engine over one sweep: the runs it has been told of, its proposals and stops."""

    def __init__(self, sweep: dict):
        self.sweeps = sweep_engine()
        self.sweep = sweep
        self.runs: list[Any] = []  # sweeps.SweepRun, one per run that ended or is to continue

    def _engine_run(self, record: RunRecord, history: list[dict[str, float]], summary: dict[str, Any]) -> Any:
        # The aliases (sampledHistory, summaryMetrics): pydantic 2 ignores the field names here.
        return self.sweeps.SweepRun(
            name=record.name,
            state=ENGINE_STATE[record.status],
            config={k: {"value": v} for k, v in record.params.items()},
            sampledHistory=history,
            summaryMetrics=summary,
            stopped=record.status == "stopped",
            exitcode=record.exit_code,
        )

    def tell(self, record: RunRecord, history: list[dict[str, float]], summary: dict[str, Any]) -> None:
        """A run ended (or, unfinished, is to continue): its history and summary inform the next
        proposals (bayes) and stops. A run told again replaces what the engine knew of it."""
        self.runs = [run for run in self.runs if run.name != record.name]
        self.runs.append(self._engine_run(record, history, summary))

    def propose(self) -> Any:
        """The engine's next run (``.config``: the parameters), or None when a grid is exhausted."""
        with warnings.catch_warnings():  # scikit-learn's notes on fitting bayes' Gaussian process
            warnings.simplefilter("ignore")
            return self.sweeps.next_run(self.sweep, self.runs)

    def predicted(self, proposal: Any) -> float | None:
        """Bayes: the metric the engine expects of a proposal, once it has runs to learn from."""
        value = (proposal.search_info or {}).get("predicted_value")
        learned = any(r.state in ("finished", "failed", "killed", "crashed") for r in self.runs)
        if value is None or not learned or not finite(float(value)):
            return None
        return -float(value) if maximizes(self.sweep.get("metric")) else float(value)  # the engine minimises

    def stop_reason(self, record: RunRecord, history: list[dict[str, float]], summary: dict[str, Any]) -> str | None:
        """Early termination: why the engine stops this running run now, or None to let it go on."""
        current = self._engine_run(record, history, summary)
        if not any(run.name == record.name for run in self.sweeps.stop_runs(self.sweep, [*self.runs, current])):
            return None
        lines = (current.early_terminate_info or {}).get("lines", [])
        return f"stopped by {self.sweep['early_terminate']['type']}: " + "; ".join(lines[-1:])

    def first_proposals(self, limit: int = 1000) -> list[Any]:
        """What the engine proposes before any result: every combination of a grid (up to
        ``limit``), else one draw (bayes with no results draws at random)."""
        proposals, runs = [], []
        while len(proposals) < (limit if self.sweep["method"] == "grid" else 1):
            proposal = self.sweeps.next_run(self.sweep, runs)
            if proposal is None:
                break
            proposals.append(proposal)
            runs.append(self.sweeps.SweepRun(name=str(len(runs)), state="finished", config=proposal.config))
        return proposals
