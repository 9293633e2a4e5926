"""``python -m vaelab.compare DIR... [--out DIR]``: compare finished runs side by side.

``DIR`` is a run directory (a folder with ``summary.json``) or a folder of them (a sweep's
folder: every run directory below it). A table on stdout and ``comparison.md``,
``comparison.csv`` and ``comparison_curves.png`` in ``--out`` (default: the one folder given
when it is not itself a run, e.g. the sweep's folder; else the current directory). Runs are
ranked by test log p(x) only within a block of one protocol (vaelab.evaluation.protocol); see
vaelab.evaluation.comparison for which file each number comes from. Every user error is one line
on stderr and exit status 2. Documented in docs/compare.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaelab.errors import ConfigError, run_command
from vaelab.evaluation.comparison import rank, read_runs, terminal_table, write_comparison
from vaelab.evaluation.summary import SUMMARY_FILE

PROG = "vaelab.compare"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other vaelab error
        raise ConfigError(f"{message}; see --help")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m vaelab.compare",
        description="Compare finished runs: test log p(x) +- standard error, ELBO, KL, active units, "
        "ESS and Pareto k-hat, epochs, steps and training time, the published number beside a "
        "preset's run; runs are ranked within blocks of one protocol. Writes comparison.md, "
        "comparison.csv and comparison_curves.png (validation ELBO against epochs and training seconds).",
        epilog="Numbers of a run's eval.json (python -m vaelab.evaluate) are preferred to its summary.json's; "
        "the last column says which file the test numbers came from.",
    )
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                   help="a run directory, or a folder of them such as a sweep's folder")
    p.add_argument("--out", type=Path, help="folder for the three files (default: the one DIR given when it "
                   "is not a run directory itself, e.g. a sweep's folder; else the current directory)")
    return p


def default_out(dirs: list[Path]) -> Path:
    if len(dirs) == 1 and not (dirs[0] / SUMMARY_FILE).is_file():
        return dirs[0]
    return Path.cwd()


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    blocks = rank(read_runs(args.dirs))
    print(terminal_table(blocks), end="")
    paths = write_comparison(blocks, args.out or default_out(args.dirs))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
