"""Epoch time of vaelab.fit's training loop against a plain PyTorch loop, in one process.

    uv run python benchmarks/throughput.py [--repeats 3] [--device cpu|cuda] [key=value ...]

Both train the same model (MNIST, 784-500-500-20 softplus, Bernoulli decoder, analytic-KL
ELBO with one sample, Adam 1e-3, batch 100, dynamic binarization) for one epoch over the
same training images; epochs alternate so that drifts in machine load hit all alike.

Two plain loops are timed: one with ``torch.optim.Adam``'s default implementation, as a
plain loop is usually written, and one with the fused Adam that vaelab uses where torch
has it. Prints each epoch's seconds, the medians, and the ratios vaelab / plain for both
(the target, <= 1.05, is against the first; the second isolates the framework's own
overhead). Extra key=value words go to vaelab's config, e.g. ``trainer.progress_bar=false``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from vaelab.config.compose import compose, parse_command_line
from vaelab.fit import build_run

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class EpochTimer(pl.Callback):
    """Wall time from the start to the end of each training epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self._start)

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()


def plain_epoch(train: torch.Tensor, fused: bool, latent_dim: int = 20, seed: int = 0) -> float:
    """One epoch of a hand-written PyTorch loop over the same model; returns seconds."""
    torch.manual_seed(seed)
    device = train.device
    encoder = nn.Sequential(nn.Linear(784, 500), nn.Softplus(), nn.Linear(500, 500), nn.Softplus()).to(device)
    to_mean, to_log_var = nn.Linear(500, latent_dim).to(device), nn.Linear(500, latent_dim).to(device)
    decoder = nn.Sequential(
        nn.Linear(latent_dim, 500), nn.Softplus(), nn.Linear(500, 500), nn.Softplus(), nn.Linear(500, 784)
    ).to(device)
    modules = [encoder, to_mean, to_log_var, decoder]
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=True) if fused else torch.optim.Adam(params, lr=1e-3)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for begin in range(0, len(train), 100):
        x = torch.bernoulli(train[order[begin : begin + 100]])
        h = encoder(x)
        mean, log_var = to_mean(h), to_log_var(h)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        log_px = -F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum(-1)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
        loss = -(log_px - kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def vaelab_epochs(epochs: int, overrides: list[str], run_dir: Path) -> tuple[list[float], torch.Tensor]:
    """Train vaelab's default bernoulli model for ``epochs`` epochs; seconds per epoch and the train data."""
    words = [
        "model=bernoulli", "data=mnist", f"trainer.max_epochs={epochs}", "trainer.limit_val_batches=0",
        f"run.dir={run_dir}", *overrides,
    ]
    run = build_run(compose(parse_command_line(words)))
    timer = EpochTimer()
    run.trainer.callbacks.insert(0, timer)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    return timer.seconds, run.datamodule.train_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="epochs of each loop (medians are compared)")
    parser.add_argument("overrides", nargs="*", help="vaelab key=value overrides")
    args = parser.parse_args()
    os.environ.setdefault("VAELAB_DATA_DIR", str(SHARED_DATA))
    warnings.filterwarnings("ignore")
    run_dir = Path("runs") / "benchmark-throughput"

    # Warm-up: one vaelab epoch (also loads the data) and one plain epoch, not counted.
    _, train = vaelab_epochs(1, [*args.overrides, "trainer.progress_bar=false"], run_dir / "warmup")
    plain_epoch(train, fused=False)
    plain_epoch(train, fused=True)
    plain, plain_fused, ours = [], [], []
    for repeat in range(args.repeats):
        plain.append(plain_epoch(train, fused=False, seed=repeat))
        plain_fused.append(plain_epoch(train, fused=True, seed=repeat))
        seconds, _ = vaelab_epochs(1, [*args.overrides, f"seed={repeat}"], run_dir / f"run{repeat}")
        ours += seconds
    ratio = statistics.median(ours) / statistics.median(plain)
    overhead = statistics.median(ours) / statistics.median(plain_fused)
    print(f"device: {train.device}, torch threads: {torch.get_num_threads()}, batches per epoch: {len(train) // 100}")
    print("plain PyTorch, default Adam, epoch seconds:", " ".join(f"{s:.2f}" for s in plain))
    print("plain PyTorch, fused Adam,   epoch seconds:", " ".join(f"{s:.2f}" for s in plain_fused))
    print("vaelab.fit,                  epoch seconds:", " ".join(f"{s:.2f}" for s in ours))
    print(f"ratio vaelab / plain (default Adam, medians): {ratio:.3f}   target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'}")
    print(f"ratio vaelab / plain (fused Adam, the same optimizer): {overhead:.3f}   (framework overhead alone)")


if __name__ == "__main__":
    main()
