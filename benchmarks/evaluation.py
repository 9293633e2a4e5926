"""Speed of the test-set log-likelihood estimate (fit's ``test/ll``, evaluate's ``test_ll``)
against this machine's matrix-multiply peak, in one process.

    uv run python benchmarks/evaluation.py [--images 100] [--samples 5000] [--repeats 5]
        [--chunk-size 50] [--batch-size 100] [--threads N] [--modes eager,compiled]
        [--priors standard,vamp,mog]

The default model (784-500-500-20 softplus, Bernoulli decoder; Glorot-initialised: the work
does not depend on the weights' values) estimates log p(x) of ``--images`` random binary
images with ``--samples`` importance samples each, through ``vaelab.models.compiled.importance_estimates``
in batches and chunks as ``vaelab.evaluate`` and ``vaelab.fit`` do: eagerly and compiled
(``eval.compile``). Interleaved with it, on the same minutes of a shared machine: ``torch.mm``
of the decoder's own shapes ([chunk x batch, 20] x [20, 500], then x [500, 500], then
x [500, 784]), the matmul peak for this work, and one 2048^3 product.

``--priors``: the same model (the same weights: the prior is built last) with p(z) = N(0, I)
(``standard``, the one the FLOP and peak figures are about), the VampPrior (``vamp``, its 500
pseudo-inputs set to 500 random images, so that the components differ) and a mixture of 10
Gaussians (``mog``); each round times every prior on the same samples, one after the other
(in reverse order every second round), and each prior's time is reported as the median over
the rounds of its ratio to N(0, I)'s in the same round. The VampPrior scores every chunk of
samples under its 500 components, the encoder's pass over the pseudo-inputs included (the
matrix products of vaelab/probability/mixtures.py, docs/speed.md).

FLOPs are those of the matrix products, 2 x in x out per linear layer: the decoder's per
sample, the encoder's per image (1.3 MFLOP each for this model, so 65 TFLOP for 10000 test
images x 5000 samples). Prints each repeat, then medians and bests: ms per (image x 1000 samples),
achieved GFLOP/s, its fraction of the matmul peak measured just before it (a shared machine's
load moves both), the projected time of the full test set, and eager / compiled time.

On a shared machine, ``--threads 1`` measures one core's work robustly: the times are then the
thread's CPU time (``time.thread_time``), which other processes' time slices do not inflate;
otherwise they are wall-clock times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from vaelab.config.schema import ModelConfig, PriorConfig
from vaelab.models.compiled import importance_estimates
from vaelab.models.vae import VAE

FULL_TEST = (10_000, 5000)  # images, samples: the default test/ll


def linear_flops(module: nn.Module) -> int:
    return sum(2 * m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def flops_per_image(vae: VAE, samples: int) -> int:
    """Matmul FLOPs of one image's estimate: q(z_1|x) once, every other layer per sample."""
    per_sample = linear_flops(vae.decoder) + sum(linear_flops(m) for m in [*vae.encoders[1:], *vae.generative_layers])
    return linear_flops(vae.encoders[0]) + samples * per_sample


clock = time.perf_counter  # time.thread_time with --threads 1


def model_with_prior(cfg: ModelConfig, prior: str) -> VAE:
    """The benchmark's model with ``prior`` (its networks' weights the same for every prior)."""
    torch.manual_seed(0)
    components = {"vamp": 500, "mog": 10}.get(prior, 1)  # configs/prior/*.yaml's
    vae = VAE(cfg, 784, prior=PriorConfig(name=prior, components=components)).eval()
    if prior == "vamp":  # the posteriors of random images, not of 500 copies of one near-blank image
        with torch.no_grad():
            vae.prior.pseudo_inputs.copy_(torch.bernoulli(torch.full_like(vae.prior.pseudo_inputs, 0.13)))
    return vae


def estimate_seconds(vae: VAE, images: torch.Tensor, samples: int, chunk_size: int, batch_size: int, compiled: bool) -> float:
    torch.manual_seed(0)
    started = clock()
    with torch.inference_mode():
        for x in images.split(batch_size):
            importance_estimates(vae, x, samples, chunk_size, compiled=compiled).log_likelihood.sum().item()
    return clock() - started


def matmul_gflops(shapes: list[tuple[int, int, int]], seconds: float = 1.0) -> float:
    """GFLOP/s of running the products [m, k] x [k, n] one after the other, for about ``seconds``."""
    operands = [(torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)

    def once() -> None:
        for a, b, out in operands:
            torch.mm(a, b, out=out)

    once()
    reps, started = 0, clock()
    while (elapsed := clock() - started) < seconds:
        once()
        reps += 1
    return reps * flops / elapsed / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--priors", default="standard,vamp,mog", help="the first is the reference of the ratios")
    args = parser.parse_args()
    global clock
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.get_num_threads() == 1:
        clock = time.thread_time
    modes, priors = args.modes.split(","), args.priors.split(",")

    cfg = ModelConfig()
    vaes = {prior: model_with_prior(cfg, prior) for prior in priors}
    vae = vaes[priors[0]]
    torch.manual_seed(0)
    images = torch.bernoulli(torch.full((args.images, 784), 0.13))  # MNIST's mean pixel
    work = flops_per_image(vae, args.samples) * args.images
    rows = args.chunk_size * args.batch_size
    widths = [cfg.latent_dim, *reversed(cfg.hidden), 784]
    decoder_shapes = [(rows, k, n) for k, n in zip(widths, widths[1:])]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads ({clock.__name__}), load average {os.getloadavg()[0]:.1f}; "
        f"{args.images} images x {args.samples} samples, batch {args.batch_size}, chunk {args.chunk_size}: "
        f"{work / 1e12:.3f} TFLOP"
    )

    for mode in modes:  # warm-up: the compiled mode compiles here
        for prior in priors:
            started = time.perf_counter()
            estimate_seconds(vaes[prior], images[: args.batch_size], min(args.samples, 2 * args.chunk_size), args.chunk_size,
                             args.batch_size, mode == "compiled")
            print(f"warm-up {mode}, {prior}: {time.perf_counter() - started:.1f} s")

    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    prior_seconds = {(mode, prior): [] for mode in modes for prior in priors[1:]}
    fractions: dict[str, list[float]] = {mode: [] for mode in modes}  # of the peak measured just before
    peak: list[float] = []
    square: list[float] = []
    for repeat in range(args.repeats):
        line = []
        for mode in modes:
            peak.append(matmul_gflops(decoder_shapes, seconds=0.5))
            took = {}
            for prior in priors if repeat % 2 == 0 else priors[::-1]:  # alternate, so that a drift in load favours none
                took[prior] = estimate_seconds(vaes[prior], images, args.samples, args.chunk_size, args.batch_size, mode == "compiled")
            seconds[mode].append(took[priors[0]])
            fractions[mode].append(work / seconds[mode][-1] / 1e9 / peak[-1])
            line.append(f"{mode} {seconds[mode][-1]:.2f} s ({fractions[mode][-1]:.0%} of {peak[-1]:.0f} GFLOP/s)")
            for prior in priors[1:]:
                prior_seconds[mode, prior].append(took[prior])
                line.append(f"{prior} {took[prior]:.2f} s ({took[prior] / seconds[mode][-1]:.2f}x)")
        square.append(matmul_gflops([(2048, 2048, 2048)]))
        print(f"repeat {repeat + 1}: " + ", ".join(line) + f"; 2048^3: {square[-1]:.0f} GFLOP/s")

    full_images, full_samples = FULL_TEST
    print(f"\n{args.repeats} repeats, load average now {os.getloadavg()[0]:.1f}; matmul peak at the decoder's shapes: "
          f"median {statistics.median(peak):.0f}, best {max(peak):.0f} GFLOP/s; 2048^3: best {max(square):.0f}")
    for mode in modes:
        for name, t in (("median", statistics.median(seconds[mode])), ("best", min(seconds[mode]))):
            per_k = t * 1e3 / (args.images * args.samples / 1000)
            full = t * flops_per_image(vae, full_samples) * full_images / work
            print(f"{mode:>9} {name:>6}: {per_k:6.2f} ms per (image x 1000 samples), {work / t / 1e9:5.0f} GFLOP/s; "
                  f"full test set ({full_images} x {full_samples}): {full / 60:.1f} min")
        print(f"{mode:>9}: median fraction of the matmul peak measured just before: {statistics.median(fractions[mode]):.0%}")
        for prior in priors[1:]:
            times = prior_seconds[mode, prior]
            ratios = [t / reference for t, reference in zip(times, seconds[mode])]
            print(f"{mode:>9} {prior:>6}: median {statistics.median(times):.2f} s, best {min(times):.2f} s; "
                  f"time / {priors[0]}'s, median of the rounds' ratios: {statistics.median(ratios):.2f}, "
                  f"best / best {min(times) / min(seconds[mode]):.2f}")
    if len(modes) == 2:
        ratios = [a / b for a, b in zip(seconds[modes[0]], seconds[modes[1]])]
        print(f"{modes[0]} / {modes[1]} time, median of the repeats' ratios: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
