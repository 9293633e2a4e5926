"""Time per optimizer step of vaelab.fit against the best plain PyTorch loop, in one process.

    uv run python benchmarks/throughput.py [--steps 300] [--repeats 5] [--device cpu|cuda]

Scenarios: the default model (784-500-500-20 softplus, Bernoulli, analytic-KL ELBO, batch 100)
and Burda et al.'s one-layer model (784-200-200-50 tanh, batch 20) with k=1 and k=50 (IWAE).
For each, three loops train the same architecture on the same MNIST images with dynamic
binarization and fused Adam:
  - plain eager: a hand-written loop, the bound written out inline;
  - plain compiled: the same loop with its loss ``torch.compile``d (inductor's own RNG);
  - vaelab: ``vaelab.fit``'s trainer, with the settings the full-length run of that scenario
    gets by default (``trainer.compile`` decided as for that run).
They alternate: every vaelab epoch of ``--steps`` steps is followed by ``--steps`` steps of each
plain loop (in alternating order), so machine-load drifts hit all three alike. The first round
(compilation, warm caches) is not counted. Prints medians in ms per step and the ratio of
vaelab's median to the faster plain loop's; the last line is the worst scenario's ratio.
"""

from __future__ import annotations

import argparse
import math
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
from vaelab.config.schema import FitConfig
from vaelab.fit import build_run
from vaelab.models.compiled import should_compile, training_step_flops

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LOG_2PI = math.log(2 * math.pi)

# name: (vaelab overrides, optimizer steps of the full-length run at these settings)
SCENARIOS = {
    "default model, batch 100": (["model=bernoulli"], 50 * 550),
    "Burda 1-layer, batch 20, k=1": (["experiment=iwae_1layer", "model.k=1"], 3280 * 3000),
    "Burda 1-layer, batch 20, k=50": (["experiment=iwae_1layer", "model.k=50"], 3280 * 3000),
}


class PlainVAE(nn.Module):
    """The scenario's model written directly: MLP encoder to (mean, log-variance), MLP
    decoder to Bernoulli logits; the bound is the analytic-KL ELBO (k=1, elbo objective)
    or the importance-weighted bound (Burda et al. eq. 8) over k samples."""

    def __init__(self, cfg: FitConfig) -> None:
        super().__init__()
        m = cfg.model
        act = {"tanh": nn.Tanh, "softplus": nn.Softplus, "relu": nn.ReLU}[m.activation.value]
        sizes = [784, *m.hidden]
        self.encoder = nn.Sequential(*[layer for a, b in zip(sizes, sizes[1:]) for layer in (nn.Linear(a, b), act())])
        self.mean, self.log_var = nn.Linear(sizes[-1], m.latent_dim), nn.Linear(sizes[-1], m.latent_dim)
        back = [m.latent_dim, *reversed(m.hidden)]
        self.decoder = nn.Sequential(
            *[layer for a, b in zip(back, back[1:]) for layer in (nn.Linear(a, b), act())], nn.Linear(back[-1], 784)
        )
        self.k, self.iwae = m.k, m.objective.value == "iwae"

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        mean, log_var = self.mean(h), self.log_var(h)
        eps = torch.randn(self.k, *mean.shape, device=x.device)
        z = mean + torch.exp(0.5 * log_var) * eps  # [k, B, Z]
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        if not self.iwae:
            kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
            return -(log_px.mean(0) - kl).mean()
        log_pz = -0.5 * (LOG_2PI + z.pow(2)).sum(-1)
        log_qz = -0.5 * (LOG_2PI + log_var + eps.pow(2)).sum(-1)
        log_w = log_px + log_pz - log_qz
        return -(torch.logsumexp(log_w, 0) - math.log(self.k)).mean()


class PlainLoop:
    """A hand-written training loop over the scenario's model, eager or compiled."""

    def __init__(self, cfg: FitConfig, train: torch.Tensor, compiled: bool) -> None:
        torch.manual_seed(0)
        self.model = PlainVAE(cfg).to(train.device)
        o = cfg.optim
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=True)
        self.loss = torch.compile(self.model.loss) if compiled else self.model.loss
        self.train, self.batch_size = train, cfg.data.batch_size
        self.order = torch.randperm(len(train), device=train.device)
        self.position = 0

    def seconds(self, steps: int) -> float:
        _sync(self.train.device)
        start = time.perf_counter()
        for _ in range(steps):
            if self.position + self.batch_size > len(self.train):
                self.position = 0
            x = torch.bernoulli(self.train[self.order[self.position : self.position + self.batch_size]])
            self.position += self.batch_size
            loss = self.loss(x)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        _sync(self.train.device)
        return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Interleave(pl.Callback):
    """Times each vaelab training epoch and runs the plain loops between epochs."""

    def __init__(self, cfg: FitConfig, steps: int) -> None:
        self.cfg, self.steps = cfg, steps
        self.times: dict[str, list[float]] = {"plain eager": [], "plain compiled": [], "vaelab": []}

    def on_train_epoch_start(self, trainer, module) -> None:
        _sync(module.device)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        _sync(module.device)
        self.times["vaelab"].append(time.perf_counter() - self._start)
        if not hasattr(self, "loops"):
            train = trainer.datamodule.train_data
            self.loops = {
                "plain eager": PlainLoop(self.cfg, train, compiled=False),
                "plain compiled": PlainLoop(self.cfg, train, compiled=True),
            }
        names = list(self.loops) if trainer.current_epoch % 2 == 0 else list(reversed(self.loops))
        for name in names:
            self.times[name].append(self.loops[name].seconds(self.steps))


def run_scenario(overrides: list[str], full_run_steps: int, steps: int, repeats: int, device: str, run_dir: Path):
    words = [
        *overrides, "trainer.progress_bar=false", "trainer.limit_val_batches=0", f"trainer.limit_train_batches={steps}",
        f"trainer.max_epochs={repeats + 1}", f"trainer.accelerator={device}", f"run.dir={run_dir}",
    ]
    resolved = build_run(compose(parse_command_line(words)))  # the scenario's settings and model
    step_flops = training_step_flops(resolved.module.vae, resolved.cfg.data.batch_size)
    compiled = should_compile(resolved.cfg.trainer.compile, torch.device(device), full_run_steps, step_flops)
    run = build_run(compose(parse_command_line([*words, f"trainer.compile={str(compiled).lower()}"])))
    timer = Interleave(run.cfg, steps)
    run.trainer.callbacks.insert(0, timer)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    per_step = {name: [1000 * s / steps for s in seconds[1:]] for name, seconds in timer.times.items()}
    return compiled, per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per timed round")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (medians are compared)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--only", default=None, help="run only scenarios whose name contains this")
    args = parser.parse_args()
    os.environ.setdefault("VAELAB_DATA_DIR", str(SHARED_DATA))
    warnings.filterwarnings("ignore")
    print(f"device: {args.device}, torch {torch.__version__}, threads: {torch.get_num_threads()}, "
          f"{args.steps} steps per round, {args.repeats} rounds (+1 warm-up)")
    ratios = {}
    for index, (name, (overrides, full_steps)) in enumerate(SCENARIOS.items()):
        if args.only and args.only not in name:
            continue
        run_dir = Path("runs") / "benchmark-throughput" / str(index)
        compiled, per_step = run_scenario(overrides, full_steps, args.steps, args.repeats, args.device, run_dir)
        medians = {loop: statistics.median(ms) for loop, ms in per_step.items()}
        best = min(medians["plain eager"], medians["plain compiled"])
        ratios[name] = medians["vaelab"] / best
        print(f"\n{name} (vaelab compiles: {compiled}); ms per step, rounds then median:")
        for loop, ms in per_step.items():
            print(f"  {loop:15s} {' '.join(f'{v:7.3f}' for v in ms)}   median {medians[loop]:7.3f}")
        print(f"  ratio vaelab / best plain loop: {ratios[name]:.3f}")
    worst = max(ratios, key=ratios.get)
    print(f"\nworst scenario: {worst}")
    print(f"ratio vaelab / best plain loop: {ratios[worst]:.3f}")


if __name__ == "__main__":
    main()
