"""Signal-to-noise ratio of the encoder's gradient of the IWAE bound, reparam against dreg; and of
the encoder's and decoder's gradients of each objective at one budget of samples.

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

The regime it measured in, since the literature's scaling (reparam's SNR falling like
1/sqrt(k), dreg's not) assumes importance weights whose effective sample size grows with k:

* ``ESS``: the effective sample size (sum w)^2 / sum w^2 of the k weights per image, averaged over
  the minibatch and over fresh draws (k for perfect proposals; 1-3 means one sample carries the bound);
* the norms of the mean gradient and of its noise, ||E g|| and sqrt(E ||g - E g||^2), and their
  ratio, the whole-vector SNR, on the fixed minibatch and again over fresh minibatches of
  ``--batch`` training images (fresh binarization and z each draw), as Tucker et al. (2019)
  measure it during training;
* with ``--seeds``, every number for each seed (training, minibatch and draws), then their spread.

Then, on the same trained model and fixed minibatch, the objectives at one budget of 50 samples
per image (``OBJECTIVE_CELLS``): iwae (K=50), vr (alpha=0.5, K=50), ciwae (c=0.5, K=50), miwae
and piwae (M=5, K=10), and the 50-sample ELBO (miwae with K=1), each with reparam: the mean and
median per-parameter SNR of the encoder's gradient and of the decoder's (everything else: the
generative model). Rainforth et al. (2018), Figure 1 and section 4, is the reference for the shape:
the tighter the bound (iwae), the lower the encoder's SNR and the higher the decoder's; piwae
takes iwae's decoder gradient and miwae's encoder gradient.
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
from vaelab.config.schema import Estimator
from vaelab.data import build_datamodule
from vaelab.models.optim import build_optimizer
from vaelab.models.vae import VAE
from vaelab.objectives import objective_for
from vaelab.probability.importance_diagnostics import effective_sample_size

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KS = (1, 5, 50)
ESTIMATORS = ("reparam", "dreg")
# (label, objective and its settings): every cell draws 50 samples per image.
OBJECTIVE_CELLS = (
    ("iwae, K=50", {"objective": "iwae", "k": 50}),
    ("vr, alpha=0.5, K=50", {"objective": "vr", "k": 50, "alpha": 0.5}),
    ("ciwae, c=0.5, K=50", {"objective": "ciwae", "k": 50, "ciwae_mix": 0.5}),
    ("miwae, M=5, K=10", {"objective": "miwae", "m": 5, "k": 10}),
    ("piwae, M=5, K=10", {"objective": "piwae", "m": 5, "k": 10}),
    ("elbo, 50 samples (miwae M=50, K=1)", {"objective": "miwae", "m": 50, "k": 1}),
)


def encoder_gradient_moments(vae: VAE, x, draws: int, decoder: bool = False) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mean and standard deviation over ``draws`` draws of the loss gradient w.r.t. every encoder
    parameter (flattened, float64), and the median milliseconds per gradient. ``x``: one
    minibatch, or a function of the draw's index giving a fresh one. ``decoder``: of every other
    parameter (the generative model's) instead."""
    parameters = [p for name, p in vae.named_parameters() if name.startswith("encoders.") != decoder]
    total = sum(p.numel() for p in parameters)
    device = parameters[0].device
    sums = torch.zeros(total, dtype=torch.float64, device=device)
    squares = torch.zeros_like(sums)
    one = torch.tensor(1.0, device=device)
    milliseconds = []
    for _ in range(draws):
        start = time.perf_counter()
        vae.zero_grad(set_to_none=False)
        loss, _ = objective_for(vae.cfg).training_loss(vae, x(_) if callable(x) else x, one)
        loss.backward()
        gradient = torch.cat([p.grad.flatten() for p in parameters]).double()
        if device.type == "cuda":
            torch.cuda.synchronize()
        milliseconds.append(1000 * (time.perf_counter() - start))
        sums += gradient
        squares += gradient.square()
    mean = sums / draws
    variance = (squares / draws - mean.square()).clamp_min(0) * draws / (draws - 1)
    return mean, variance.sqrt(), statistics.median(milliseconds)


def mean_ess(vae: VAE, x: torch.Tensor, k: int, draws: int = 20) -> float:
    """The effective sample size of k importance weights, averaged over the images and ``draws`` draws."""
    with torch.no_grad():
        return torch.stack([effective_sample_size(vae.log_weights(x, k)) for _ in range(draws)]).mean().item()


def vector_snr(mean: torch.Tensor, std: torch.Tensor) -> tuple[float, float, float]:
    """||E g||, sqrt(E ||g - E g||^2) and their ratio, the SNR of the whole gradient vector."""
    signal, noise = mean.norm().item(), std.square().sum().sqrt().item()
    return signal, noise, signal / noise


def measure(cfg, args, device: torch.device, seed: int) -> dict:
    """Trains the preset for ``--train-steps`` from ``seed``, then measures every k and estimator."""
    torch.manual_seed(seed)
    data = build_datamodule(cfg.data, cfg.seed)
    data.prepare_data()
    data.setup("fit")
    train = data.train_data.to(device)
    vae = VAE(cfg.model, train.shape[1]).to(device)
    optimizer = build_optimizer(cfg.optim, vae.parameters())
    one = torch.tensor(1.0, device=device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = time.perf_counter()
    for _ in range(args.train_steps):
        index = torch.randint(len(train), (cfg.data.batch_size,), generator=generator).to(device)
        loss, _ = objective_for(vae.cfg).training_loss(vae, torch.bernoulli(train[index]), one)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained_seconds = time.perf_counter() - start
    batch = torch.bernoulli(train[: args.batch])  # one fixed minibatch: the same images for every seed

    def fresh(_: int) -> torch.Tensor:
        index = torch.randint(len(train), (args.batch,), generator=generator).to(device)
        return torch.bernoulli(train[index])

    rows = {"trained_seconds": trained_seconds}
    for k in KS:
        ess = mean_ess(vae, batch, k)
        for estimator in ESTIMATORS:
            vae.cfg = dataclasses.replace(cfg.model, objective="iwae", k=k, estimator=Estimator(estimator))
            mean, std, ms = encoder_gradient_moments(vae, batch, args.draws)
            kept = std > 0
            snr = mean[kept].abs() / std[kept]
            fixed = vector_snr(mean, std)
            fresh_mean, fresh_std, _ = encoder_gradient_moments(vae, fresh, args.draws)
            rows[k, estimator] = {
                "snr_mean": snr.mean().item(), "snr_median": snr.median().item(), "ms": ms, "ess": ess,
                "signal": fixed[0], "noise": fixed[1], "vector_snr": fixed[2],
                "fresh_vector_snr": vector_snr(fresh_mean, fresh_std)[2],
            }
    for label, settings in OBJECTIVE_CELLS:
        vae.cfg = dataclasses.replace(cfg.model, estimator=Estimator.reparam, **settings)
        for role, decoder in (("encoder", False), ("decoder", True)):
            mean, std, ms = encoder_gradient_moments(vae, batch, args.draws, decoder=decoder)
            kept = std > 0
            snr = mean[kept].abs() / std[kept]
            rows[label, role] = {"snr_mean": snr.mean().item(), "snr_median": snr.median().item(), "ms": ms}
    vae.cfg = cfg.model
    return rows


def print_seed(rows: dict, seed: int) -> None:
    print(f"seed {seed} ({rows['trained_seconds']:.0f} s of training)")
    print("|  k | ESS | estimator | SNR mean | SNR median | ||E g|| | noise norm | vector SNR | vector SNR, fresh minibatches | ms/gradient |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for k in KS:
        for estimator in ESTIMATORS:
            r = rows[k, estimator]
            print(
                f"| {k:>2} | {r['ess']:.2f} | {estimator} | {r['snr_mean']:.3f} | {r['snr_median']:.3f} | {r['signal']:.3g} | "
                f"{r['noise']:.3g} | {r['vector_snr']:.3f} | {r['fresh_vector_snr']:.3f} | {r['ms']:.1f} |"
            )
    print()
    print("objectives at 50 samples per image, reparam: per-parameter SNR of the encoder's and the decoder's gradient")
    print("| objective | encoder SNR mean | encoder SNR median | decoder SNR mean | decoder SNR median | ms/gradient |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, _ in OBJECTIVE_CELLS:
        e, d = rows[label, "encoder"], rows[label, "decoder"]
        print(f"| {label} | {e['snr_mean']:.3f} | {e['snr_median']:.3f} | {d['snr_mean']:.3f} | {d['snr_median']:.3f} | {e['ms']:.1f} |")
    print()


def print_spread(all_rows: dict[int, dict]) -> None:
    """Per estimator, the change of the mean per-parameter SNR from k=1 to the largest k, per seed."""
    print("change of the mean per-parameter SNR from k=1 to k=%d, per seed:" % KS[-1])
    for estimator in ESTIMATORS:
        changes = [100 * (rows[KS[-1], estimator]["snr_mean"] / rows[KS[0], estimator]["snr_mean"] - 1) for rows in all_rows.values()]
        listed = ", ".join(f"seed {seed}: {c:+.0f}%" for seed, c in zip(all_rows, changes))
        print(f"  {estimator}: {listed}   (min {min(changes):+.0f}%, max {max(changes):+.0f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=300, help="gradient draws per estimator and k")
    parser.add_argument("--train-steps", type=int, default=3000, help="steps of the preset's training first")
    parser.add_argument("--batch", type=int, default=5, help="images in the fixed minibatch the SNR is measured on")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of training, minibatch and draws")
    parser.add_argument("overrides", nargs="*", help="vaelab key=value overrides of experiment=iwae_1layer")
    args = parser.parse_args()
    os.environ.setdefault("VAELAB_DATA_DIR", str(SHARED_DATA))
    _, cfg = load_config(["experiment=iwae_1layer", *args.overrides])
    device = torch.device(args.device)
    print(
        f"device: {device}, torch threads: {torch.get_num_threads()}, load average: "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    print(
        f"model: experiment=iwae_1layer {' '.join(args.overrides)} after {args.train_steps} training steps "
        f"(objective {cfg.model.objective}, k={cfg.model.k}, {cfg.model.estimator.value})"
    )
    print(f"encoder gradient on one fixed minibatch of {args.batch} images, {args.draws} draws per cell; "
          f"noise floor of the SNR: {math.sqrt(2 / (math.pi * args.draws)):.3f}")
    print()
    all_rows = {seed: measure(cfg, args, device, seed) for seed in args.seeds}
    for seed, rows in all_rows.items():
        print_seed(rows, seed)
    print_spread(all_rows)


if __name__ == "__main__":
    main()
