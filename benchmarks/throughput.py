"""Time per optimizer step of vaelab.fit against the best plain PyTorch loop, in one process.

    uv run python benchmarks/throughput.py [--steps 300] [--repeats 5] [--device cpu|cuda]

Scenarios: the default model (784-500-500-20 softplus, Bernoulli, analytic-KL ELBO, batch 100);
Burda et al.'s one-layer model (784-200-200-50 tanh, batch 20) with k=1 and k=50 (IWAE); the
default model with the VampPrior (``prior=vamp``: K=500 pseudo-inputs through the encoder every
step, log p(z) the logsumexp over their posteriors minus log K, the ELBO sampling
log p(z) - log q(z|x) with one sample); and the convolutional networks (``net=conv``: 4x4
stride-2 convolutions with 32 and 64 channels, a 256-unit dense layer, mirrored by transposed
convolutions; analytic-KL ELBO, batch 100); and the default model with a planar-flow posterior
(``posterior=planar``: 10 steps whose u, w, b come from the encoder's features, the ELBO
sampling log p(z) - log q(z|x) with the steps' log-determinants). For each, three loops train the same architecture
on the same MNIST images with dynamic binarization and fused Adam:
  - plain eager: a hand-written loop, the model and the bound written out inline (no vaelab
    code: ``PlainVAE`` and its VampPrior and planar-flow subclasses, MLP or convolutional networks);
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
    "VampPrior, default model": (["model=bernoulli", "prior=vamp"], 50 * 550),
    "conv, MNIST, batch 100": (["model=bernoulli", "net=conv"], 50 * 550),
    "planar flow, default model": (["model=bernoulli", "posterior=planar"], 50 * 550),
}


ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "relu": nn.ReLU}
MNIST_SHAPE = (1, 28, 28)  # channels, height, width of every scenario's images


def mlp(sizes: list[int], act: type[nn.Module], last_act: bool = True) -> nn.Sequential:
    """Linear layers of the given sizes, each followed by the activation (the last one only with ``last_act``)."""
    layers = [layer for a, b in zip(sizes, sizes[1:]) for layer in (nn.Linear(a, b), act())]
    return nn.Sequential(*(layers if last_act else layers[:-1]))


def mlp_networks(cfg: FitConfig, act: type[nn.Module]) -> tuple[nn.Module, int, nn.Module]:
    """net=mlp: encoder x -> features of the last hidden layer, decoder z -> logits (the hidden layers mirrored)."""
    m = cfg.model
    decoder = mlp([m.latent_dim, *reversed(m.hidden), 784], act, last_act=False)
    return mlp([784, *m.hidden], act), m.hidden[-1], decoder


class ConvDecoder(nn.Sequential):
    """net=conv's decoder: z [..., d] -> dense layers -> feature map -> 4x4 stride-2 transposed
    convolutions, the last one to the logits, cropped to the image: [..., 784]."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c, h, w = MNIST_SHAPE
        maps = super().forward(z.reshape(-1, z.shape[-1]))[:, :, :h, :w]
        return maps.reshape(*z.shape[:-1], c * h * w)


def conv_networks(cfg: FitConfig, act: type[nn.Module]) -> tuple[nn.Module, int, nn.Module]:
    """net=conv: 4x4 stride-2 padding-1 Conv2d stages with net.channels, an activation after each,
    flattened, Linear to net.dense + activation; the decoder mirrors it (Linear(d, dense) + act,
    Linear(dense, first map) + act, 4x4 stride-2 ConvTranspose2d stages, the last one to the
    logits without activation)."""
    channels, dense = cfg.net.channels, cfg.net.dense
    c, h, w = MNIST_SHAPE
    encoder: list[nn.Module] = [nn.Unflatten(1, MNIST_SHAPE)]
    for out in channels:
        encoder += [nn.Conv2d(c, out, 4, 2, 1), act()]
        c, h, w = out, h // 2, w // 2  # (h + 2 * 1 - 4) // 2 + 1
    encoder += [nn.Flatten(1), nn.Linear(c * h * w, dense), act()]
    start = (channels[-1], math.ceil(MNIST_SHAPE[1] / 2 ** len(channels)), math.ceil(MNIST_SHAPE[2] / 2 ** len(channels)))
    decoder: list[nn.Module] = [
        nn.Linear(cfg.model.latent_dim, dense), act(), nn.Linear(dense, math.prod(start)), act(), nn.Unflatten(1, start)
    ]
    back = [*reversed(channels), MNIST_SHAPE[0]]
    for a, b in zip(back, back[1:]):
        decoder += [nn.ConvTranspose2d(a, b, 4, 2, 1), act()]
    return nn.Sequential(*encoder), dense, ConvDecoder(*decoder[:-1])


def initialise_(module: nn.Module, cfg: FitConfig) -> None:
    """vaelab's initialisation (model.init): Glorot-uniform or N(0, init_std^2) weights and zero
    biases of every linear and (transposed) convolutional layer. The same value distribution
    matters for timing: the share of denormal floats, which are slow on the CPU, depends on it."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        if cfg.model.init.value == "glorot":
            nn.init.xavier_uniform_(module.weight)
        else:
            nn.init.normal_(module.weight, std=cfg.model.init_std)
        nn.init.zeros_(module.bias)


class PlainVAE(nn.Module):
    """The scenario's model written directly: an encoder (MLP or convolutional) to (mean,
    log-variance), a decoder to Bernoulli logits, the prior N(0, I); the bound is the
    ELBO (elbo objective; the KL analytic with model.kl=analytic, else sampled) or the
    importance-weighted bound (Burda et al. eq. 8) over k samples."""

    closed_form_kl = True  # the prior's KL to q has a closed form

    def __init__(self, cfg: FitConfig) -> None:
        super().__init__()
        m = cfg.model
        networks = conv_networks if cfg.net.name.value == "conv" else mlp_networks
        self.encoder, width, self.decoder = networks(cfg, ACTIVATIONS[m.activation.value])
        self.mean, self.log_var = nn.Linear(width, m.latent_dim), nn.Linear(width, m.latent_dim)
        self.k, self.iwae = m.k, m.objective.value == "iwae"
        self.analytic_kl = self.closed_form_kl and m.kl.value == "analytic"
        self.apply(lambda module: initialise_(module, cfg))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mean(h), self.log_var(h)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mean, log_var = self.posterior(x)
        eps = torch.randn(self.k, *mean.shape, device=x.device)
        z = mean + torch.exp(0.5 * log_var) * eps  # [k, B, Z]
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        if not self.iwae and self.analytic_kl:
            kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
            return -(log_px.mean(0) - kl).mean()
        log_qz = -0.5 * (LOG_2PI + log_var + eps.pow(2)).sum(-1)  # log q(z|x) from the noise
        log_w = log_px + self.log_prior(z) - log_qz  # [k, B]
        if not self.iwae:
            return -log_w.mean(0).mean()  # the ELBO with log p(z) - log q(z|x) sampled
        return -(torch.logsumexp(log_w, 0) - math.log(self.k)).mean()


class PlainVampVAE(PlainVAE):
    """With the VampPrior (Tomczak & Welling 2018, eq. 9): p(z) = (1/K) sum_k q(z | u_k), u_k =
    hardtanh(learned pseudo-input k, 0, 1), all K through the encoder every step; no closed-form
    KL, so the ELBO samples log p(z) - log q(z|x)."""

    closed_form_kl = False

    def __init__(self, cfg: FitConfig) -> None:
        super().__init__(cfg)
        p = cfg.prior
        self.pseudo_inputs = nn.Parameter(p.pseudo_init_mean + p.pseudo_init_std * torch.randn(p.components, 784))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        mean, log_var = self.posterior(F.hardtanh(self.pseudo_inputs, 0.0, 1.0))  # [K, Z] each
        log_components = -0.5 * (LOG_2PI + log_var + (z.unsqueeze(-2) - mean).pow(2) * torch.exp(-log_var)).sum(-1)
        return torch.logsumexp(log_components, -1) - math.log(len(self.pseudo_inputs))  # [k, B]


class PlainPlanarVAE(PlainVAE):
    """With a planar-flow posterior (Rezende & Mohamed 2015): z_0 = mean + sigma * eps, then K steps
    z += u_hat tanh(w^T z + b), u, w, b linear maps of the encoder's features, u_hat = u + (m(w^T u)
    - w^T u) w / ||w||^2, m(a) = softplus(a) - 1; log q(z_K) = log N(z_0) - sum_k log(h_k^2 + h'_k (1 + m_k)).
    The KL is sampled."""

    closed_form_kl = False

    def __init__(self, cfg: FitConfig) -> None:
        super().__init__(cfg)
        width, d, steps = cfg.model.hidden[-1], cfg.model.latent_dim, cfg.posterior.flow_length
        self.steps, self.latent_dim = steps, d
        self.u, self.w, self.b = nn.Linear(width, steps * d), nn.Linear(width, steps * d), nn.Linear(width, steps)
        for layer in (self.u, self.w, self.b):
            initialise_(layer, cfg)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        mean, log_var = self.mean(h), self.log_var(h)
        u = self.u(h).reshape(len(x), self.steps, self.latent_dim)
        w = self.w(h).reshape(len(x), self.steps, self.latent_dim)
        b = self.b(h)
        wu = (w * u).sum(-1, keepdim=True)
        one_plus_m = F.softplus(wu)  # 1 + w^T u_hat, kept apart from the -1 (see vaelab/probability/flows.py)
        u_hat = u + (one_plus_m - 1 - wu) * w / w.pow(2).sum(-1, keepdim=True)
        eps = torch.randn(self.k, *mean.shape, device=x.device)
        z = mean + torch.exp(0.5 * log_var) * eps  # [k, B, Z]
        log_qz = -0.5 * (LOG_2PI + log_var + eps.pow(2)).sum(-1)
        for step in range(self.steps):
            t = torch.tanh((w[:, step] * z).sum(-1) + b[:, step])
            log_qz = log_qz - torch.log(t.pow(2) + (1 - t.pow(2)) * one_plus_m[:, step, 0])
            z = z + u_hat[:, step] * t.unsqueeze(-1)
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_w = log_px + self.log_prior(z) - log_qz  # [k, B]
        if not self.iwae:
            return -log_w.mean(0).mean()
        return -(torch.logsumexp(log_w, 0) - math.log(self.k)).mean()


def plain_model(cfg: FitConfig) -> PlainVAE:
    if cfg.posterior.name.value == "planar":
        return PlainPlanarVAE(cfg)
    return PlainVampVAE(cfg) if cfg.prior.name.value == "vamp" else PlainVAE(cfg)


class PlainLoop:
    """A hand-written training loop over the scenario's model, eager or compiled."""

    def __init__(self, cfg: FitConfig, train: torch.Tensor, compiled: bool) -> None:
        torch.manual_seed(0)
        self.model = plain_model(cfg).to(train.device)
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
