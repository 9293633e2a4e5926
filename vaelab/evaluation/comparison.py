"""The comparison of runs that ``python -m vaelab.compare`` prints and writes: one row per run
directory, blocks of runs under one protocol ranked by test log p(x), the published cell of a
preset's run beside it, and the runs' validation curves.

A run's test numbers come from its ``eval.json`` (``vaelab.evaluate``) where it has one, else from
``summary.json`` (the fit's test), with the protocol block of the same file; active units come
from eval.json only, training numbers (epochs, steps, seconds) from summary.json. Numbers that no
file holds are left empty, never estimated. Runs are ranked together only when their protocols
share :data:`vaelab.evaluation.protocol.COMPARABLE_KEYS`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vaelab.errors import VaelabError
from vaelab.files.atomic import replace_atomically, write_atomically
from vaelab.evaluation.protocol import COMPARABLE_KEYS, comparable_key
from vaelab.evaluation.published import PublishedNumber, published_for
from vaelab.evaluation.summary import SUMMARY_FILE

# The files of a run directory read here, as vaelab.fit and vaelab.evaluate name them (their
# modules import Lightning, which a table does not need).
EVAL_FILE = "eval.json"
METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.yaml"

TABLE_MD, TABLE_CSV, CURVES_PNG = "comparison.md", "comparison.csv", "comparison_curves.png"
CURVES_SIZE = (1200, 450)  # pixels of comparison_curves.png
TEST_KEYS = ("test_ll", "test_ll_se", "ll_samples", "test_elbo", "ess_mean", "ess_min",
             "pareto_k_mean", "pareto_k_max", "pareto_k_above_0.7")
TRAINING_KEYS = ("epochs", "steps", "train_seconds", "best_val_elbo")
UNRECORDED = ("protocol not recorded",)  # the key of runs from before summary.json had a protocol


class ComparisonError(VaelabError):
    """Folders without runs, or a run's file that cannot be read."""


@dataclass
class Curve:
    """A learning curve of a run: its values at the end of each epoch (1, 2, ...) and at the
    training seconds then, taken as train_seconds * epoch / epochs (metrics.csv has no clock)."""

    label: str  # the column of metrics.csv
    epochs: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass
class RunRow:
    """One run of the comparison: its numbers, the file each group of them came from, its
    protocol (of the test numbers' file), the published cell of its preset and its curve."""

    name: str
    run_dir: Path
    numbers: dict
    test_from: str
    protocol: dict | None
    published: PublishedNumber | None
    curve: Curve

    @property
    def key(self) -> tuple:
        return comparable_key(self.protocol) if self.protocol else UNRECORDED


@dataclass
class Block:
    """Runs under one protocol, best test log p(x) first; ``why``: why it is not ranked with
    the first block (empty for the first)."""

    key: tuple
    rows: list[RunRow]
    why: str = ""

    @property
    def heading(self) -> str:
        if self.key == UNRECORDED:
            return "protocol not recorded (summary.json of a vaelab before the protocol block)"
        p = dict(zip(COMPARABLE_KEYS, self.key))
        return (f"{p['data']}, {p['variant']}; {p['test_split']}, {p['test_images_scored']} test images scored, "
                f"S={p['ll_samples']} importance samples; checkpoint: {p['checkpoint_chosen_by']}")


# ---------------------------------------------------------------- finding and reading runs


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """The run directories (folders with summary.json) given or below the given folders (a
    sweep's folder, a folder of runs), each once, in path order."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise ComparisonError(f"no folder {path}: give run directories or a sweep's folder")
        below = [path] if (path / SUMMARY_FILE).is_file() else sorted(p.parent for p in path.rglob(SUMMARY_FILE))
        if not below:
            raise ComparisonError(f"no runs in {path}: no summary.json in it or below it (a run writes one when it finishes)")
        found += [p for p in below if p.resolve() not in {f.resolve() for f in found}]
    return found


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ComparisonError(f"cannot read {path}: {first_words(error)}; rerun the fit or vaelab.evaluate, or leave the run out") from error
    if not isinstance(value, dict):
        raise ComparisonError(f"cannot read {path}: not a JSON object; rerun the fit or vaelab.evaluate, or leave the run out")
    return value


def first_words(error: BaseException) -> str:
    return " ".join(str(error).split())[:120] or type(error).__name__


def _read_config(run_dir: Path) -> dict:
    try:
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return {}  # without a readable config there is no preset to match; the numbers stand
    return config if isinstance(config, dict) else {}


def _metrics_rows(run_dir: Path) -> list[dict]:
    try:
        with open(run_dir / METRICS_FILE, newline="") as file:
            return list(csv.DictReader(file))
    except OSError:
        return []


def _number(cell) -> float | None:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_curve(rows: list[dict], epochs: int | None, train_seconds: float | None) -> Curve:
    """``val/elbo`` per epoch from metrics.csv's rows; a run without validation: its training
    bound per epoch (``train/<bound>_epoch``)."""
    columns = list(rows[0]) if rows else []
    name = "val/elbo" if "val/elbo" in columns else next((c for c in columns if c.startswith("train/") and c.endswith("_epoch")), "")
    curve = Curve(name)
    for row in rows:
        value, epoch = _number(row.get(name)), _number(row.get("epoch"))
        if value is None or epoch is None:
            continue
        curve.epochs.append(epoch + 1)  # the row of epoch e (from 0) is written when e + 1 epochs are done
        curve.values.append(value)
        curve.seconds.append(train_seconds * (epoch + 1) / epochs if epochs and train_seconds is not None else math.nan)
    return curve


def _kl(rows: list[dict]) -> float | None:
    """The last validation KL that metrics.csv logs (``val/kl``, or another column named .../kl
    where it has none), if it logs one: for runs without eval.json's test KL."""
    logged = list(rows[0]) if rows else []
    columns = ["val/kl"] if "val/kl" in logged else [c for c in logged if c.rsplit("/", 1)[-1] == "kl"]
    values = [_number(row.get(c)) for row in rows for c in columns]
    values = [v for v in values if v is not None]
    return values[-1] if values else None


def read_run(run_dir: Path, name: str) -> RunRow:
    summary = _read_json(run_dir / SUMMARY_FILE)
    if summary is None:
        raise ComparisonError(f"no {SUMMARY_FILE} in {run_dir}: the run has not finished")
    evaluation = _read_json(run_dir / EVAL_FILE)
    tested = evaluation if evaluation is not None and "test_ll" in evaluation else summary
    numbers = {key: tested.get(key) for key in TEST_KEYS}
    numbers.update({key: summary.get(key) for key in TRAINING_KEYS})
    rows = _metrics_rows(run_dir)
    tested_kl = (evaluation or {}).get("test_kl")
    numbers["kl"] = tested_kl if tested_kl is not None else _kl(rows)
    numbers["kl_estimate"] = summary.get("val_kl")
    units, dims = (evaluation or {}).get("active_units"), (evaluation or {}).get("latent_dims")
    numbers["active_units"] = "+".join(map(str, units)) if units else None
    numbers["latent_dims"] = "+".join(map(str, dims)) if dims else None
    curve = read_curve(rows, summary.get("epochs"), summary.get("train_seconds"))
    protocol = tested.get("protocol") if isinstance(tested.get("protocol"), dict) else None
    return RunRow(name, run_dir, numbers, EVAL_FILE if tested is evaluation else SUMMARY_FILE,
                  protocol, published_for(_read_config(run_dir)), curve)


def run_names(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name, or its path below the folders' common parent where names repeat."""
    names = [p.name for p in run_dirs]
    if len(set(names)) == len(names):
        return names
    resolved = [p.resolve() for p in run_dirs]
    common = Path(os.path.commonpath(resolved))
    return [str(p.relative_to(common)) for p in resolved]


def read_runs(paths: list[Path]) -> list[RunRow]:
    run_dirs = find_run_dirs(paths)
    return [read_run(d, n) for d, n in zip(run_dirs, run_names(run_dirs))]


# ---------------------------------------------------------------- ranking


def rank(rows: list[RunRow]) -> list[Block]:
    """Blocks of runs sharing a protocol key, the most runs first (then in the order their first
    run was given), each sorted by test log p(x), best first (runs without one last)."""
    blocks: dict[tuple, list[RunRow]] = {}
    for row in rows:
        blocks.setdefault(row.key, []).append(row)
    ranked = [Block(key, sorted(members, key=_rank_key)) for key, members in blocks.items()]
    ranked.sort(key=lambda block: -len(block.rows))  # stable: ties keep the order given
    for block in ranked[1:]:
        block.why = why_apart(ranked[0].key, block.key)
    return ranked


def _rank_key(row: RunRow) -> tuple:
    ll = row.numbers.get("test_ll")
    return (0, -ll) if isinstance(ll, (int, float)) and math.isfinite(ll) else (1, 0.0)


def why_apart(first: tuple, other: tuple) -> str:
    """The line that says why a block is not ranked with the first: the protocol keys that differ."""
    if UNRECORDED in (first, other):
        return "not ranked with block 1: one of them has no recorded protocol, so they cannot be shown to be comparable"
    differ = [f'{name} is "{a}" (block 1: "{b}")' for name, a, b in zip(COMPARABLE_KEYS, other, first) if a != b]
    return "not ranked with block 1: the protocol differs in " + "; ".join(differ)


# ---------------------------------------------------------------- the table


def _fixed(value, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else ""


def _cells(row: RunRow, place: int) -> list[str]:
    n = row.numbers
    ll = _fixed(n["test_ll"]) + (f" ± {_fixed(n['test_ll_se'])}" if _fixed(n["test_ll_se"]) else "")
    units = f"{n['active_units']} of {n['latent_dims']}" if n["active_units"] else ""
    ess = f"{_fixed(n['ess_mean'], 1)} / {_fixed(n['ess_min'], 1)}" if _fixed(n["ess_mean"]) else ""
    khat = (f"{_fixed(n['pareto_k_mean'])} / {_fixed(n['pareto_k_max'])} ({n['pareto_k_above_0.7']})"
            if _fixed(n["pareto_k_mean"]) else "")
    published = f"{_fixed(row.published.test_ll)} ({row.published.cell})" if row.published else ""
    kl = _fixed(n["kl"]) or ""
    return [str(place), row.name, ll, str(n["ll_samples"] or ""), _fixed(n["test_elbo"]), kl, units, ess, khat,
            str(n["epochs"] if n["epochs"] is not None else ""), str(n["steps"] if n["steps"] is not None else ""),
            _fixed(n["train_seconds"], 1), published, row.test_from]


HEADERS = ["#", "run", "test log p(x) ± SE", "S", "test ELBO", "KL", "active units", "ESS mean / min",
           "k-hat mean / max (> 0.7)", "epochs", "steps", "train s", "published log p(x)", "test numbers from"]


def terminal_table(blocks: list[Block]) -> str:
    """The blocks as aligned text, each under its protocol and why it stands apart."""
    lines = []
    for index, block in enumerate(blocks, 1):
        table = [HEADERS] + [_cells(row, place) for place, row in enumerate(block.rows, 1)]
        widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
        lines += [f"block {index}: {block.heading}"] + ([block.why] if block.why else [])
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
        lines.append("")
    return "\n".join(lines)


def markdown(blocks: list[Block]) -> str:
    """comparison.md: a table per block, under its protocol, and the published cells' sources."""
    out = ["# Comparison of runs (vaelab.compare)", "",
           "Test numbers in nats per image; ranked by test log p(x) within a block only. "
           "ESS: effective sample size of the S importance weights per image; k-hat: Pareto k-hat "
           "(above 0.7: the estimate of log p(x) is unreliable for that image).", ""]
    sources = []
    for index, block in enumerate(blocks, 1):
        out += [f"## Block {index}: {block.heading}", ""] + ([block.why, ""] if block.why else [])
        out += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        for place, row in enumerate(block.rows, 1):
            out.append("| " + " | ".join(c.replace("|", "/") for c in _cells(row, place)) + " |")
            if row.published:
                sources.append(f"- {row.name}: {row.published.source}")
        out.append("")
    if sources:
        out += ["Published numbers (at the paper's full budget, not this run's):", ""] + sources + [""]
    return "\n".join(out)


CSV_COLUMNS = ["block", "rank", "run", "run_dir", *TEST_KEYS, "kl", "kl_estimate", "active_units", "latent_dims",
               *TRAINING_KEYS, "published_test_ll", "published_source", "test_numbers_from", *(f"protocol.{key}" for key in COMPARABLE_KEYS)]


def csv_text(blocks: list[Block]) -> str:
    """comparison.csv: one row per run, numbers at full precision, its block and protocol."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for index, block in enumerate(blocks, 1):
        for place, row in enumerate(block.rows, 1):
            writer.writerow({
                "block": index, "rank": place, "run": row.name, "run_dir": str(row.run_dir), **row.numbers,
                "published_test_ll": row.published.test_ll if row.published else None,
                "published_source": row.published.source if row.published else None,
                "test_numbers_from": row.test_from,
                **{f"protocol.{key}": value for key, value in zip(COMPARABLE_KEYS, block.key if block.key != UNRECORDED else ())},
            })
    return buffer.getvalue()


# ---------------------------------------------------------------- the picture


def draw_curves(blocks: list[Block], path: Path) -> None:
    """comparison_curves.png: the runs' curves overlaid, against epochs and against training
    seconds (a compute-matched view: runs of unequal step costs line up by time)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    width, height = CURVES_SIZE
    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(width / 100, height / 100), dpi=100)
    for index, block in enumerate(blocks, 1):
        for row in block.rows:
            if not row.curve.values:
                continue
            label = row.name + (f" [block {index}]" if len(blocks) > 1 else "")
            label += "" if row.curve.label == "val/elbo" else f" ({row.curve.label})"
            by_epoch.plot(row.curve.epochs, row.curve.values, marker="o", markersize=3, label=label)
            by_time.plot(row.curve.seconds, row.curve.values, marker="o", markersize=3, label=label)
    by_epoch.set(xlabel="epoch", ylabel="validation ELBO (nats)", title="against epochs")
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_time.set(xlabel="training seconds (train_seconds x epoch / epochs)", title="against training time")
    for axes in (by_epoch, by_time):
        axes.grid(alpha=0.3)
    if by_epoch.lines:
        by_epoch.legend(fontsize="small")
    figure.tight_layout()
    try:
        replace_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    finally:
        plt.close(figure)


def write_comparison(blocks: list[Block], out: Path) -> dict[str, Path]:
    """comparison.md, comparison.csv and comparison_curves.png in ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ComparisonError(f"cannot make the output folder {out}: {first_words(error)}; pass another --out") from error
    paths = {"markdown": out / TABLE_MD, "csv": out / TABLE_CSV, "curves": out / CURVES_PNG}
    write_atomically(paths["markdown"], markdown(blocks))
    write_atomically(paths["csv"], csv_text(blocks))
    draw_curves(blocks, paths["curves"])
    return paths
