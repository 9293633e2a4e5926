"""Learning curves and the table of docs/RESULTS.md, from the runs of docs/reproduce_cpu.sh.

    uv run python docs/plot_results.py [RUNS]     (default RUNS: runs/results)

Draws docs/figures/kw_latent_sweep.png (test-set ELBO, scored after every epoch with
``eval.track_test=true``, against training examples seen, for each latent size, as in
Kingma & Welling's Figure 2) and prints one Markdown row per run.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

FIGURES = Path(__file__).resolve().parent / "figures"


def curve(run_dir: Path, key: str) -> tuple[list[int], list[float]]:
    """(training examples seen, the metric ``key``) at the end of each epoch."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    summary = json.loads((run_dir / "summary.json").read_text())
    examples_per_step = cfg.data.batch_size
    steps_per_epoch = summary["steps"] / summary["epochs"]
    with open(run_dir / "metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get(key)]
    seen = [int((int(row["epoch"]) + 1) * steps_per_epoch * examples_per_step) for row in rows]
    return seen, [float(row[key]) for row in rows]


def plot_latent_sweep(runs: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, data in zip(axes, ("mnist", "frey")):
        for run_dir in sorted(runs.glob(f"kingma_{data}-nz*"), key=lambda p: int(p.name.split("nz")[1])):
            if (run_dir / "summary.json").is_file():
                seen, elbo = curve(run_dir, "curve/test_elbo")
                ax.plot(seen, elbo, label=f"$N_z$ = {run_dir.name.split('nz')[1]}")
        ax.set_xscale("log")
        ax.set_xlabel("training examples seen")
        ax.set_ylabel("test ELBO (nats)")
        ax.set_title({"mnist": "MNIST", "frey": "Frey faces"}[data])
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    FIGURES.mkdir(exist_ok=True)
    path = FIGURES / "kw_latent_sweep.png"
    fig.savefig(path, dpi=110)
    return path


def table(runs: Path) -> list[str]:
    rows = ["| run | epochs | steps | train s | test ELBO | test log-likelihood (samples) |", "|---|---|---|---|---|---|"]
    for run_dir in sorted(runs.iterdir()):
        if (run_dir / "summary.json").is_file():
            s = json.loads((run_dir / "summary.json").read_text())
            rows.append(
                f"| {run_dir.name} | {s['epochs']} | {s['steps']} | {s['train_seconds']:.0f} | "
                f"{s['test_elbo']:.2f} | {s['test_ll']:.2f} ({s['ll_samples']}) |"
            )
    return rows


def main() -> None:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/results")
    print(f"figure: {plot_latent_sweep(runs)}")
    print("\n".join(table(runs)))


if __name__ == "__main__":
    main()
