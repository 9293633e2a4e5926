"""The offline sweep: W&B's engine proposes a run, a supervised process trains it, the folder
records it, and the engine learns from it; a line is printed for each run and for the best.
A sweep started again on its folder first continues the runs it did not see end, each in its
own directory from its checkpoint (``run.resume``), or from scratch where there is none."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaelab.training.interrupts import Interrupted, signal_name
from vaelab.files.write_faults import writing
from vaelab.sweep.command import build_command, check_vaelab_command, param_values, vaelab_words, write_args_json_file
from vaelab.sweep.engine import Engine
from vaelab.training.run_lock import wait_for_writer
from vaelab.sweep.process import KILL_AFTER_SECONDS, supervise
from vaelab.sweep.runs import (
    METRICS_FILE,
    OUTPUT_LOG,
    RESULTS_CSV,
    RESULTS_JSON,
    RunRecord,
    SweepFolder,
    best_run,
    finite,
    last_error,
    maximizes,
    read_run,
)

# Like wandb agent: give up once this many runs failed and no more runs finished than failed.
MAX_INITIAL_FAILURES = 5


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a vaelab.fit run directory holds a checkpoint to continue from."""
    return any((run_dir / "checkpoints").glob("*.ckpt"))


def _format_value(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class Runner:
    """Runs one sweep into its folder: proposals from the engine, one supervised run at a time."""

    def __init__(self, source: str, sweep: dict, out: Path, extra: list[str], log: Callable[[str], None] | None = None):
        self.source, self.sweep, self.out, self.extra = source, sweep, out, list(extra)
        self.log = log or (lambda line: print(line, flush=True))
        self.engine = Engine(sweep)
        self.folder = SweepFolder(out, source, sweep, extra)
        self.metric = sweep.get("metric")
        params = sweep["parameters"]
        self.searched = [k for k in params if "value" not in params[k]] or list(params)  # for the printed lines

    def command(self, proposal: Any, run_dir: Path) -> tuple[dict[str, Any], list[str]]:
        values = param_values(proposal.config)
        return values, build_command(self.sweep, values, run_dir, self.extra)

    def preflight(self) -> list[str]:
        """Check the runs the engine proposes first as vaelab.fit would read them, before any
        work: every combination of a grid, else one draw. The command of the first."""
        proposals = self.engine.first_proposals()
        commands = [self.command(p, self.out / f"run-{i + 1:03d}")[1] for i, p in enumerate(proposals)]
        for command in commands:
            check_vaelab_command(command, self.source)
        return commands[0]

    def open(self) -> int | None:
        """Create the output folder (None), or continue the sweep in it: the number of earlier
        runs kept, each told to the engine (the unfinished ones as running, so it proposes
        their parameters no more)."""
        if not self.folder.open():
            return None
        for record in self.folder.records:
            self.engine.tell(record, *read_run(Path(record.run_dir)))
        return len(self.folder.records)

    def continue_command(self) -> str:
        """The command line that continues this sweep."""
        return " ".join(["python -m vaelab.sweep", self.source, "--out", str(self.out), *self.extra])

    # one run
    def launch(self, proposal: Any) -> RunRecord:
        """Run one proposal to its end; its record, in the table and told to the engine."""
        run_dir = self.folder.next_run_dir()
        values, command = self.command(proposal, run_dir)
        record = RunRecord(run_dir.name, "running", values, str(run_dir), command,
                           predicted_metric=self.engine.predicted(proposal))
        self.folder.records.append(record)
        self.folder.save()
        with writing(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
            write_args_json_file(self.sweep, values, run_dir)
        self.log(f"{self.describe(record, with_metric=False)}  (output: {run_dir / OUTPUT_LOG})")
        return self._supervise(record, command)

    def resume(self, record: RunRecord) -> RunRecord:
        """Run an unfinished run to its end in its own directory: from its checkpoint with
        ``run.resume`` (it ends as it would have uninterrupted), else from scratch."""
        run_dir = Path(record.run_dir)
        words = vaelab_words(record.command)
        was = record.status
        if not wait_for_writer(run_dir, KILL_AFTER_SECONDS):  # the run of a runner killed, still stopping
            self.log(f"{record.name}: another process still writes into {run_dir}; continuing it anyway")
        if words is not None and has_checkpoint(run_dir):
            command = [*record.command[: len(record.command) - len(words)], f"run.resume={run_dir}"]
            self.log(f"{record.name}  {was}: continuing it from its checkpoint ({command[-1]})")
            append = True
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            with writing(run_dir):
                run_dir.mkdir(parents=True)
                write_args_json_file(self.sweep, record.params, run_dir)
            command, append = record.command, False
            self.log(f"{record.name}  {was} with no checkpoint: restarting it from scratch in {run_dir}")
        record.status, record.note = "running", None
        self.folder.save()
        return self._supervise(record, command, append)

    def _supervise(self, record: RunRecord, command: list[str], append: bool = False) -> RunRecord:
        run_dir = Path(record.run_dir)
        should_stop = self._early_termination(record) if "early_terminate" in self.sweep else None
        ended = supervise(command, run_dir / OUTPUT_LOG, should_stop, append=append)
        earlier = record.seconds if append and record.seconds is not None else 0.0
        record.status, record.exit_code, record.seconds = ended.status, ended.exit_code, earlier + ended.seconds
        record.note = ended.stop_reason or (last_error(run_dir) if record.status == "failed" else None)
        history, summary = record.read_back(self.metric)
        if ended.interrupted:
            self.folder.save()
            kept = "its checkpoint kept" if has_checkpoint(run_dir) else "no checkpoint yet"
            raise Interrupted(ended.signals[0], f"interrupted by {signal_name(ended.signals[0])}: {record.name} "
                              f"stopped ({kept}); continue the sweep with: {self.continue_command()}")
        self.engine.tell(record, history, summary)
        self.folder.save()
        return record

    def _early_termination(self, record: RunRecord) -> Callable[[], str | None]:
        """The check for :func:`supervise`: the engine's stop reason, asked each time the run's
        ``metrics.csv`` has changed."""
        run_dir, seen = Path(record.run_dir), None

        def should_stop() -> str | None:
            nonlocal seen
            try:
                stamp = (run_dir / METRICS_FILE).stat().st_mtime_ns
            except OSError:
                return None
            if stamp == seen:
                return None
            seen = stamp
            return self.engine.stop_reason(record, *read_run(run_dir))

        return should_stop

    # the sweep
    def run(self, count: int | None) -> int:
        """Run up to ``count`` runs (a grid: until it is exhausted); the exit status."""
        for record in self.folder.unfinished():  # runs of an earlier start, not counted in count
            self.resume(record)
            self.log(self.describe(record))
            if record.note:
                self.log(f"  {record.note}")
        done = 0
        proposal = self.engine.propose()
        while count is None or done < count:
            if proposal is None:
                self.log("the grid is exhausted: every combination has run")
                break
            record = self.launch(proposal)
            done += 1
            self.log(self.describe(record))
            if record.note:
                self.log(f"  {record.note}")
            if self._should_end(record):
                break
            if count is None or done < count:
                proposal = self.engine.propose()
        return self.report()

    def _should_end(self, record: RunRecord) -> bool:
        """Whether the sweep ends after this run: too many failures, or the metric's target met."""
        failed, finished = self.folder.count("failed"), self.folder.count("finished")
        if failed >= MAX_INITIAL_FAILURES and failed >= finished:
            self.log(f"{failed} runs failed and only {finished} finished: stopping the sweep, as wandb agent does")
            return True
        target = (self.metric or {}).get("target")
        if target is not None and record.status == "finished" and finite(record.metric) and (
            record.metric >= target if maximizes(self.metric) else record.metric <= target
        ):
            self.log(f"{record.name} reached the metric's target {target}: the sweep is done")
            return True
        return False

    # the lines printed
    def params_line(self, record: RunRecord) -> str:
        return " ".join(f"{k}={_format_value(record.params[k])}" for k in self.searched if k in record.params)

    def describe(self, record: RunRecord, with_metric: bool = True) -> str:
        shown = with_metric and self.metric and record.metric is not None
        value = f"{self.metric['name']}={_format_value(record.metric)}" if shown else ""
        parts = [record.name, record.status, value, self.params_line(record)]
        if record.seconds is not None:
            parts.append(f"({record.seconds:.1f} s)")
        return "  ".join(p for p in parts if p)

    def report(self) -> int:
        """The closing lines: where the table is, and the best run; exit status 1 if none finished."""
        self.log(f"results: {self.out / RESULTS_CSV}  {self.out / RESULTS_JSON}")
        if self.metric:
            best = best_run(self.folder.records, self.metric)
            if best is not None:
                goal = "maximize" if maximizes(self.metric) else "minimize"
                self.log(f"best run: {best.name}  {self.metric['name']}={_format_value(best.metric)} "
                         f"({goal})  {self.params_line(best)}  run dir: {best.run_dir}")
            else:
                self.log(f"best run: none: no finished run has logged {self.metric['name']}")
        return 0 if self.folder.count("finished") else 1
