"""Signal-to-noise ratio of the encoder's gradient of the IWAE bound, reparam against dreg.

    uv run python benchmarks/gradient_snr.py [--draws 300] [--train-steps 3000] [--batch 5] [--device cpu|cuda] [key=value ...]

Rainforth et al. (2018) show that the pathwise (reparam) gradient of the IWAE bound w.r.t.
the encoder's parameters has a signal-to-noise ratio that falls like 1/sqrt(k); Tucker et
al. (2019) show that the doubly reparameterized gradient (dreg) does not. This prints that
table for k in {1, 5, 50} on Burda et al.'s one-layer MNIST model (experiment=iwae_1layer;
key=value words override it).

The model is first trained for ``--train-steps`` steps of its preset (the IWAE bound with
k=50, reparam, Adam, batch 20; ``model.k=5`` makes this five times cheaper), so that the ratio
is measured on a partly trained encoder, not at initialisation. Then, on one fixed minibatch of training images (binarized once), each
estimator's gradient is drawn ``--draws`` times with fresh samples of z; for each encoder
parameter j, SNR_j = |mean g_j| / std g_j over the draws; the table shows the mean and median
over the encoder's parameters. With N draws, a parameter whose true gradient is 0 still shows
an SNR of about sqrt(2 / (pi N)) (printed as the noise floor): ratios near it are
indistinguishable from 0. Also printed: milliseconds per gradient (forward and backward),
comparable only within a run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import time
from pathlib import Path

import torch

from vaelab.config import load_config
from vaelab.config.schema import Estimator, Objective
from vaelab.data import build_datamodule
from vaelab.models.optim import build_optimizer
from vaelab.models.vae import VAE
from vaelab.probability import objectives

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KS = (1, 5, 50)
ESTIMATORS = ("reparam", "dreg")


def encoder_gradient_moments(vae: VAE, x: torch.Tensor, draws: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mean and standard deviation over ``draws`` draws of the loss gradient w.r.t. every encoder
    parameter (flattened, float64), and the median milliseconds per gradient."""
    parameters = [p for name, p in vae.named_parameters() if name.startswith("encoders.")]
    total = sum(p.numel() for p in parameters)
    sums = torch.zeros(total, dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(sums)
    one = torch.tensor(1.0, device=x.device)
    milliseconds = []
    for _ in range(draws):
        start = time.perf_counter()
        vae.zero_grad(set_to_none=False)
        loss, _ = objectives.training_loss(vae, x, vae.cfg, one)
        loss.backward()
        gradient = torch.cat([p.grad.flatten() for p in parameters]).double()
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        milliseconds.append(1000 * (time.perf_counter() - start))
        sums += gradient
        squares += gradient.square()
    mean = sums / draws
    variance = (squares / draws - mean.square()).clamp_min(0) * draws / (draws - 1)
    return mean, variance.sqrt(), statistics.median(milliseconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=300, help="gradient draws per estimator and k")
    parser.add_argument("--train-steps", type=int, default=3000, help="steps of the preset's training first")
    parser.add_argument("--batch", type=int, default=5, help="images in the fixed minibatch the SNR is measured on")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="vaelab key=value overrides of experiment=iwae_1layer")
    args = parser.parse_args()
    os.environ.setdefault("VAELAB_DATA_DIR", str(SHARED_DATA))
    _, cfg = load_config(["experiment=iwae_1layer", *args.overrides])
    device = torch.device(args.device)

    torch.manual_seed(args.seed)
    data = build_datamodule(cfg.data, cfg.seed)
    data.prepare_data()
    data.setup("fit")
    train = data.train_data.to(device)
    vae = VAE(cfg.model, train.shape[1]).to(device)
    optimizer = build_optimizer(cfg.optim, vae.parameters())
    one = torch.tensor(1.0, device=device)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    start = time.perf_counter()
    for _ in range(args.train_steps):
        index = torch.randint(len(train), (cfg.data.batch_size,), generator=generator).to(device)
        loss, _ = objectives.training_loss(vae, torch.bernoulli(train[index]), vae.cfg, one)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained_seconds = time.perf_counter() - start
    batch = torch.bernoulli(train[: args.batch])  # one fixed minibatch

    rows = {}
    for k in KS:
        for estimator in ESTIMATORS:
            vae.cfg = dataclasses.replace(cfg.model, objective=Objective.iwae, k=k, estimator=Estimator(estimator))
            mean, std, ms = encoder_gradient_moments(vae, batch, args.draws)
            kept = std > 0
            snr = mean[kept].abs() / std[kept]
            rows[k, estimator] = (snr.mean().item(), snr.median().item(), ms)

    print(
        f"device: {device}, torch threads: {torch.get_num_threads()}, load average: "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    print(
        f"model: experiment=iwae_1layer {' '.join(args.overrides)} after {args.train_steps} training steps "
        f"(objective {cfg.model.objective.value}, k={cfg.model.k}, {cfg.model.estimator.value}; {trained_seconds:.0f} s)"
    )
    print(f"encoder gradient on one fixed minibatch of {len(batch)} images, {args.draws} draws per cell; "
          f"noise floor of the SNR: {math.sqrt(2 / (math.pi * args.draws)):.3f}")
    print()
    print("|  k | reparam SNR mean | reparam SNR median | dreg SNR mean | dreg SNR median | ms/gradient reparam | ms/gradient dreg |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for k in KS:
        r, d = rows[k, "reparam"], rows[k, "dreg"]
        print(f"| {k:>2} | {r[0]:.3f} | {r[1]:.3f} | {d[0]:.3f} | {d[1]:.3f} | {r[2]:.1f} | {d[2]:.1f} |")


if __name__ == "__main__":
    main()
