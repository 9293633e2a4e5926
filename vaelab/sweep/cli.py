"""The command line of ``python -m vaelab.sweep``: read the options, check, run, report."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from vaelab.errors import ResultsWriteError, SweepError, run_command
from vaelab.training.interrupts import SignalStop
from vaelab.sweep.command import check_extra_words
from vaelab.sweep.engine import load_sweep
from vaelab.sweep.runner import Runner
from vaelab.sweep.runs import RESULTS_CSV

PROG = "vaelab.sweep"


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
    check_extra_words(args.overrides, sweep)
    out = args.out or default_out(path)
    runner = Runner(str(path), sweep, out, args.overrides)
    first = runner.preflight()
    if args.dry_run:
        print(" ".join(first))
        return 0
    method = sweep["method"] + (f" with {sweep['early_terminate']['type']}" if "early_terminate" in sweep else "")
    metric = f"{sweep['metric']['name']} ({sweep['metric']['goal']})" if "metric" in sweep else "none"
    try:
        earlier = runner.open()
        continuing = f"; continuing after {earlier} earlier runs" if earlier is not None else ""
        runner.log(f"sweep {path}: {method}, metric {metric}; results in {out}{continuing}")
        # Between runs a signal stops the sweep at once; during a run, the run gets it (process.py).
        with SignalStop("between runs", f"the table so far is in {out / RESULTS_CSV}; "
                                        f"continue the sweep with: {runner.continue_command()}"):
            return runner.run(args.count)
    except ResultsWriteError as error:  # the folder is found unwritable at once, or a later table write fails
        raise error.with_fix(f"{error.remedy}, or pass --out <a folder elsewhere>") from error


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, argv)
