"""``summary.json``: a run's headline numbers, and the lines printed at its end."""

from __future__ import annotations

import json
from pathlib import Path

from vaelab.files.atomic import write_atomically

SUMMARY_FILE = "summary.json"


def write_summary(run_dir: Path, summary: dict) -> Path:
    path = run_dir / SUMMARY_FILE
    write_atomically(path, json.dumps(summary, indent=2) + "\n")
    return path


def summary_lines(summary: dict) -> list[str]:
    """The closing lines of a fit: where the run is and its test numbers."""
    bits = summary.get("bits_per_dim")
    return [
        f"run directory: {summary['run_dir']}",
        f"test ELBO: {summary['test_elbo']:.2f} nats   "
        f"test log-likelihood ({summary['ll_samples']} importance samples): {summary['test_ll']:.2f} nats"
        + (f" (s.e. {summary['test_ll_se']:.2f})" if summary.get("test_ll_se") else "")
        + (f" ({bits:.3f} bits/dim)" if bits is not None else ""),
        f"epochs: {summary['epochs']}   training time: {summary['train_seconds']:.1f} s   "
        f"best checkpoint: {summary['best_checkpoint']}",
    ]
