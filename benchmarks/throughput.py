"""Time per optimizer step of vaelab.fit against the best plain PyTorch loop, in one process.

    uv run python benchmarks/throughput.py [--threads 1,2] [--steps N] [--repeats 5] [--only KEY] [--device cpu|cuda]

Scenarios (``SCENARIOS``; a key for ``--only``): the default model (784-500-500-20 softplus,
Bernoulli, analytic-KL ELBO, batch 100); Burda et al.'s one-layer model (784-200-200-50 tanh,
batch 20) with k=1 and k=50 (IWAE); the default model with the VampPrior (``prior=vamp``: K=500
pseudo-inputs through the encoder every step), with a mixture-of-Gaussians prior (``prior=mog``,
K=10), with a planar-flow posterior (``posterior=planar``, 10 steps) and with an IAF posterior
(``posterior=iaf``: 2 MADE steps of 320-320 units on a 100-unit context), the KL sampled in
each; the convolutional networks (``net=conv``, ReLU); Kingma & Welling's MNIST model (784-500-20
tanh, Adagrad with weight decay) on grey levels under the continuous Bernoulli
(``experiment=kingma_mnist_cb``) and under a discretized logistic mixture of 5 components
(``experiment=kingma_mnist_logistic model.mixtures=5 optim.lr=0.002``: at the preset's 0.02 the
mixture diverges within 30 steps, eager too); Burda et al.'s two-layer model
(``experiment=iwae_2layer``, k=5); and the default model with a second layer (10 units, 256
hidden) inferred top-down with the Ladder VAE's merge (``hierarchy=topdown``). Each runs at every ``--threads`` count. Three loops train the
same model on the same MNIST images with the run's binarization and optimizer (fused):
  - plain eager: a hand-written loop, the model and the bound written out inline (no vaelab
    code: ``PlainVAE`` and its subclasses, one per part), from vaelab's initial parameters;
  - plain compiled: the same loop with its loss ``torch.compile``d (inductor's own RNG);
  - vaelab: ``vaelab.fit``'s trainer, with the settings the full-length run of that scenario
    gets by default (``trainer.compile`` decided as for that run).
Before timing, the plain model at vaelab's parameters is checked to give vaelab's training loss
from the same minibatch and noise, with the same number of parameters and FLOP.
They alternate: every vaelab epoch of ``--steps`` steps (default: each scenario's own, about
equal time) is followed by as many steps of each plain loop (in alternating order), so
machine-load drifts hit all three alike. The first round (compilation, warm caches) is not
counted. Prints each round's ms per step and their medians, the ratio of vaelab to the faster
plain loop (by median) as the median over rounds of the round's vaelab time over that loop's
in the same round (a load spike that slows one round moves one ratio, not a median of its
own), a table of all ratios, the total wall time, and last the worst ratio and its scenario.
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
from torch.utils.flop_counter import FlopCounterMode

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LOG_2PI = math.log(2 * math.pi)

DEFAULT_REPEATS = 5
# key: (name, vaelab overrides, optimizer steps of the full-length run at these settings, steps per timed round)
SCENARIOS = {
    "default": ("default model, batch 100", ["model=bernoulli"], 50 * 550, 40),
    "burda-k1": ("Burda 1-layer, batch 20, k=1", ["experiment=iwae_1layer", "model.k=1"], 3280 * 3000, 100),
    "burda-k50": ("Burda 1-layer, batch 20, k=50", ["experiment=iwae_1layer", "model.k=50"], 3280 * 3000, 10),
    "vamp": ("VampPrior, default model", ["model=bernoulli", "prior=vamp"], 50 * 550, 12),
    "conv": ("conv, MNIST, batch 100", ["model=bernoulli", "net=conv"], 50 * 550, 10),
    "planar": ("planar flow, default model", ["model=bernoulli", "posterior=planar"], 50 * 550, 18),
    "iaf": ("IAF posterior, default model", ["model=bernoulli", "posterior=iaf"], 50 * 550, 18),
    "mog": ("mixture prior (K=10), default model", ["model=bernoulli", "prior=mog"], 50 * 550, 25),
    "cb": ("continuous Bernoulli, Kingma MNIST", ["experiment=kingma_mnist_cb"], 1000 * 550, 30),
    "logistic": ("logistic mixture (K=5), Kingma MNIST", ["experiment=kingma_mnist_logistic", "model.mixtures=5", "optim.lr=0.002"], 1000 * 550, 5),
    "2layer": ("Burda 2-layer, batch 20, k=5", ["experiment=iwae_2layer", "model.k=5"], 3280 * 3000, 60),
    "topdown": (
        "top-down (Ladder), 2 layers, default model",
        ["model=bernoulli", "hierarchy=topdown", "model.upper_layers=[{hidden: [256], latent_dim: 10}]"], 50 * 550, 30,
    ),
}


ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "relu": nn.ReLU}
MNIST_SHAPE = (1, 28, 28)  # channels, height, width of every scenario's images
HALF_BIN = 0.5 / 255  # grey levels are j / 255: a bin of the discretized logistic is 1/255 wide
IAF_GATE_OFFSET = 2.0  # sigmoid(s + 2): each IAF step starts near the identity (Kingma et al. sec. 4)


def mlp(sizes: list[int], act: type[nn.Module], last_act: bool = True) -> nn.Sequential:
    """Linear layers of the given sizes, each followed by the activation (the last one only with ``last_act``)."""
    layers = [layer for a, b in zip(sizes, sizes[1:]) for layer in (nn.Linear(a, b), act())]
    return nn.Sequential(*(layers if last_act else layers[:-1]))


def mlp_networks(cfg: FitConfig, heads: int) -> tuple[nn.Module, int, nn.Module, list[nn.Module]]:
    """net=mlp: encoder x -> features of the last hidden layer; decoder z -> features (the hidden
    layers mirrored) and ``heads`` output layers to one value per pixel."""
    m, act = cfg.model, ACTIVATIONS[cfg.model.activation.value]
    decoder = mlp([m.latent_dim, *reversed(m.hidden)], act)
    return mlp([784, *m.hidden], act), m.hidden[-1], decoder, [nn.Linear(m.hidden[0], 784) for _ in range(heads)]


class ConvDecoder(nn.Sequential):
    """net=conv's decoder: z [..., d] -> dense layers -> feature map -> 4x4 stride-2 transposed
    convolutions, the last one to the logits, cropped to the image: [..., 784]."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c, h, w = MNIST_SHAPE
        maps = super().forward(z.reshape(-1, z.shape[-1]))[:, :, :h, :w]
        return maps.reshape(*z.shape[:-1], c * h * w)


def conv_networks(cfg: FitConfig, heads: int) -> tuple[nn.Module, int, nn.Module, list[nn.Module]]:
    """net=conv: 4x4 stride-2 padding-1 Conv2d stages with net.channels, net.activation after each,
    flattened, Linear to net.dense + activation; the decoder mirrors it (Linear(d, dense) + act,
    Linear(dense, first map) + act, 4x4 stride-2 ConvTranspose2d stages, the last one to the
    logits without activation). One head only: the whole decoder gives the logits."""
    if heads != 1:
        raise NotImplementedError("the plain conv decoder has one output map")
    channels, dense, act = cfg.net.channels, cfg.net.dense, ACTIVATIONS[cfg.net.activation.value]
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
    return nn.Sequential(*encoder), dense, ConvDecoder(*decoder[:-1]), []


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + log_var + (z - mean).pow(2) * torch.exp(-log_var)).sum(-1)


def mixture_log_density(z: torch.Tensor, means: torch.Tensor, log_vars: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """log sum_k pi_k N(z; m_k, diag(exp(s_k))) with the quadratic form in matrix products,
    sum_d (z - m)^2 P = (z*z) P^T - 2 z (m*P)^T + sum_d m^2 P, P = exp(-s): no [k, B, K, d]
    tensor. In float64 on z and m centred on the mean of the means, as vaelab's (float32's terms
    cancel where z is near a narrow component, docs/speed.md)."""
    centre = means.detach().double().mean(0)
    flat, means, log_vars = z.reshape(-1, z.shape[-1]).double() - centre, means.double() - centre, log_vars.double()
    precision = torch.exp(-log_vars)  # [K, d]
    quadratic = (flat * flat) @ precision.T - 2 * flat @ (means * precision).T + (means.pow(2) * precision).sum(-1)
    log_components = log_weights.double() - 0.5 * (z.shape[-1] * LOG_2PI + log_vars.sum(-1) + quadratic)  # [k * B, K]
    return torch.logsumexp(log_components, -1).to(z.dtype).reshape(z.shape[:-1])


class PlainVAE(nn.Module):
    """The scenario's model written directly: an encoder (MLP or convolutional) to (mean,
    log-variance), a decoder to Bernoulli logits, the prior N(0, I); the bound is the
    ELBO (elbo objective; the KL analytic with model.kl=analytic, else sampled) or the
    importance-weighted bound (Burda et al. eq. 8) over k samples. Subclasses change one part
    each: the prior, the posterior, the likelihood or the number of stochastic layers. Modules
    are created in vaelab's order (encoder, flow, upper layers, decoder, likelihood, prior), so
    that the two models' parameters pair off one to one (:func:`copy_parameters`)."""

    closed_form_kl = True  # the prior's KL to q has a closed form
    same_flops = True  # the same matrix products as vaelab (checked by same_model_check)
    heads = 1  # decoder output layers (maps of 784 values)

    def __init__(self, cfg: FitConfig) -> None:
        super().__init__()
        m = cfg.model
        networks = conv_networks if cfg.net.name == "conv" else mlp_networks
        self.encoder, width, decoder, heads = networks(cfg, self.heads)
        self.mean, self.log_var = nn.Linear(width, m.latent_dim), nn.Linear(width, m.latent_dim)
        self.build_posterior(cfg, width)
        self.build_layers(cfg)
        self.decoder = decoder
        self.output_heads = nn.ModuleList(heads)
        self.build_prior(cfg)
        self.k, self.iwae = m.k, m.objective == "iwae"
        self.analytic_kl = self.closed_form_kl and m.kl.value == "analytic"

    def build_posterior(self, cfg: FitConfig, width: int) -> None:
        pass

    def build_layers(self, cfg: FitConfig) -> None:
        pass

    def build_prior(self, cfg: FitConfig) -> None:
        pass

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)

    def flow(self, h: torch.Tensor, z: torch.Tensor, log_qz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) beyond its Gaussian: z and log q(z|x) after the posterior's flow (none here)."""
        return z, log_qz

    def latent_log_ratio(self, z: torch.Tensor, log_qz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_1 (the decoder's input) and log p(z) - log q(z|x) of the layers above z_1 and z_1 itself."""
        return z, self.log_prior(z) - log_qz

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.decoder(z)
        logits = self.output_heads[0](h) if len(self.output_heads) else h
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        mean, log_var = self.mean(h), self.log_var(h)
        eps = torch.randn(self.k, *mean.shape, device=x.device)
        z = mean + torch.exp(0.5 * log_var) * eps  # [k, B, Z]
        if not self.iwae and self.analytic_kl:
            kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
            return -(self.log_likelihood(x, z).mean(0) - kl).mean()
        log_qz = -0.5 * (LOG_2PI + log_var + eps.pow(2)).sum(-1)  # log q(z|x) from the noise
        z, log_qz = self.flow(h, z, log_qz)
        z, log_ratio = self.latent_log_ratio(z, log_qz)
        log_w = self.log_likelihood(x, z) + log_ratio  # [k, B]
        if not self.iwae:
            return -log_w.mean(0).mean()  # the ELBO with log p(z) - log q(z|x) sampled
        return -(torch.logsumexp(log_w, 0) - math.log(self.k)).mean()


class PlainVampVAE(PlainVAE):
    """With the VampPrior (Tomczak & Welling 2018, eq. 9): p(z) = (1/K) sum_k q(z | u_k), u_k =
    hardtanh(learned pseudo-input k, 0, 1), all K through the encoder every step, the mixture
    in matrix products (:func:`mixture_log_density`); no closed-form KL, so the ELBO samples
    log p(z) - log q(z|x)."""

    closed_form_kl = False

    def build_prior(self, cfg: FitConfig) -> None:
        p, self.prior = cfg.prior, nn.Module()  # a child, so that its parameters come last, as vaelab's
        self.prior.pseudo_inputs = nn.Parameter(p.pseudo_init_mean + p.pseudo_init_std * torch.randn(p.components, 784))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        h, K = self.encoder(F.hardtanh(self.prior.pseudo_inputs, 0.0, 1.0)), len(self.prior.pseudo_inputs)
        return mixture_log_density(z, self.mean(h), self.log_var(h), torch.full((K,), -math.log(K), device=z.device))


class PlainMixturePriorVAE(PlainVAE):
    """With a learned mixture of K diagonal Gaussians as the prior (``prior=mog``): log p(z) =
    logsumexp_k (log softmax(logits)_k + log N(z; m_k, diag(exp(s_k)))) in matrix products
    (:func:`mixture_log_density`); the KL is sampled."""

    closed_form_kl = False

    def build_prior(self, cfg: FitConfig) -> None:
        K, d, self.prior = cfg.prior.components, cfg.model.latent_dim, nn.Module()  # its parameters last, as vaelab's
        self.prior.logits = nn.Parameter(torch.zeros(K))
        self.prior.means = nn.Parameter(torch.randn(K, d))
        self.prior.log_vars = nn.Parameter(torch.zeros(K, d))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        p = self.prior
        return mixture_log_density(z, p.means, p.log_vars, torch.log_softmax(p.logits, 0))


class PlainPlanarVAE(PlainVAE):
    """With a planar-flow posterior (Rezende & Mohamed 2015): z_0 = mean + sigma * eps, then K steps
    z += u_hat tanh(w^T z + b), u, w, b linear maps of the encoder's features, u_hat = u + (m(w^T u)
    - w^T u) w / ||w||^2, m(a) = softplus(a) - 1; log q(z_K) = log N(z_0) - sum_k log(h_k^2 + h'_k (1 + m_k)).
    The KL is sampled."""

    closed_form_kl = False

    def build_posterior(self, cfg: FitConfig, width: int) -> None:
        d, steps = cfg.model.latent_dim, cfg.posterior.flow_length
        self.steps, self.latent_dim = steps, d
        self.u, self.w, self.b = nn.Linear(width, steps * d), nn.Linear(width, steps * d), nn.Linear(width, steps)

    def flow(self, h: torch.Tensor, z: torch.Tensor, log_qz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.u(h).reshape(len(h), self.steps, self.latent_dim)
        w = self.w(h).reshape(len(h), self.steps, self.latent_dim)
        b = self.b(h)
        wu = (w * u).sum(-1, keepdim=True)
        one_plus_m = F.softplus(wu)  # 1 + w^T u_hat, kept apart from the -1 (see vaelab/probability/flows.py)
        u_hat = u + (one_plus_m - 1 - wu) * w / w.pow(2).sum(-1, keepdim=True)
        for step in range(self.steps):
            t = torch.tanh((w[:, step] * z).sum(-1) + b[:, step])
            log_qz = log_qz - torch.log(t.pow(2) + (1 - t.pow(2)) * one_plus_m[:, step, 0])
            z = z + u_hat[:, step] * t.unsqueeze(-1)
        return z, log_qz


class PlainIAFVAE(PlainVAE):
    """With an inverse autoregressive flow (Kingma et al. 2016, ``posterior=iaf``): a context
    c = Linear(h); each step a MADE (Germain et al. 2015) of z and c gives (m, s), sigma =
    sigmoid(s + 2), z = sigma * z + (1 - sigma) * m, log q -= sum log sigma; every second step
    reads z in reverse order. The KL is sampled."""

    closed_form_kl = False

    def build_posterior(self, cfg: FitConfig, width: int) -> None:
        p, d = cfg.posterior, cfg.model.latent_dim
        act = ACTIVATIONS[cfg.model.activation.value]
        self.context = nn.Linear(width, p.context)
        self.mades = nn.ModuleList()
        inputs = torch.arange(1, d + 1)
        for _ in range(p.flow_length):
            made, degrees, before = nn.Module(), inputs, d
            made.hidden, masks = nn.ModuleList(), []
            for size in p.iaf_hidden:  # hidden unit j has degree j mod (d - 1) + 1
                units = torch.arange(size) % max(d - 1, 1) + 1
                made.hidden.append(nn.Linear(before, size))
                masks.append((units[:, None] >= degrees[None, :]).float())
                degrees, before = units, size
            made.context = nn.Linear(p.context, p.iaf_hidden[0])
            made.m, made.s = nn.Linear(before, d), nn.Linear(before, d)
            for index, mask in enumerate(masks):
                made.register_buffer(f"mask{index}", mask)
            made.register_buffer("out_mask", (inputs[:, None] > degrees[None, :]).float())
            made.act = act()
            self.mades.append(made)

    def flow(self, h: torch.Tensor, z: torch.Tensor, log_qz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.context(h)
        for index, made in enumerate(self.mades):
            z = z.flip(-1) if index % 2 else z
            out = made.act(F.linear(z, made.hidden[0].weight * made.mask0, made.hidden[0].bias) + made.context(c))
            for j, layer in enumerate(made.hidden[1:], start=1):
                out = made.act(F.linear(out, layer.weight * getattr(made, f"mask{j}"), layer.bias))
            m = F.linear(out, made.m.weight * made.out_mask, made.m.bias)
            s = F.linear(out, made.s.weight * made.out_mask, made.s.bias) + IAF_GATE_OFFSET
            sigma = torch.sigmoid(s)
            z = sigma * z + (1 - sigma) * m
            log_qz = log_qz - F.logsigmoid(s).sum(-1)
            z = z.flip(-1) if index % 2 else z
        return z, log_qz


class PlainHierarchyVAE(PlainVAE):
    """Burda et al.'s stochastic layers above z_1 (section 5, ``model.upper_layers``): q(z_{l+1}|z_l)
    and p(z_l|z_{l+1}) diagonal Gaussians on MLPs, one sample of each per sample of z_1, log q from
    the noise, p(z_L) = N(0, I); no closed-form KL (the KL of z_1 depends on z_2)."""

    closed_form_kl = False

    def build_layers(self, cfg: FitConfig) -> None:
        m, act = cfg.model, ACTIVATIONS[cfg.model.activation.value]
        sizes = [m.latent_dim, *(layer.latent_dim for layer in m.upper_layers)]

        def gaussian_layer(a: int, hidden: list[int], b: int) -> nn.Module:
            layer = nn.Module()
            layer.trunk = mlp([a, *hidden], act)
            layer.mean, layer.log_var = nn.Linear(hidden[-1] if hidden else a, b), nn.Linear(hidden[-1] if hidden else a, b)
            return layer

        self.up = nn.ModuleList(gaussian_layer(a, l.hidden, b) for a, l, b in zip(sizes, m.upper_layers, sizes[1:]))
        self.down = nn.ModuleList(
            gaussian_layer(b, list(reversed(l.hidden)), a) for a, l, b in zip(sizes, m.upper_layers, sizes[1:])
        )

    def latent_log_ratio(self, z: torch.Tensor, log_qz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zs = [z]
        for layer in self.up:
            h = layer.trunk(zs[-1])
            log_var = layer.log_var(h)
            eps = torch.randn_like(log_var)
            zs.append(layer.mean(h) + torch.exp(0.5 * log_var) * eps)
            log_qz = log_qz - 0.5 * (LOG_2PI + log_var + eps.pow(2)).sum(-1)
        log_p = self.log_prior(zs[-1])
        for below, layer in enumerate(self.down):
            h = layer.trunk(zs[below + 1])
            log_p = log_p + gaussian_log_density(zs[below], layer.mean(h), layer.log_var(h))
        return z, log_p - log_qz


class PlainLadderVAE(PlainVAE):
    """The top-down hierarchy with the Ladder VAE's merge (``hierarchy=topdown``, Sonderby et al.
    2016): bottom-up features d_1..d_L of x, q(z_L|x) on d_L, then from the top each p(z_l|z_{l+1})
    and q's precision-weighted product of it with a Gaussian on d_l; every KL in closed form (the
    ELBO) or log p - log q sampled. Modules in vaelab's order: bottom-up MLPs, q's heads, p's layers."""

    def __init__(self, cfg: FitConfig) -> None:
        nn.Module.__init__(self)
        m, act = cfg.model, ACTIVATIONS[cfg.model.activation.value]
        sizes = [m.latent_dim, *(layer.latent_dim for layer in m.upper_layers)]
        self.encoder, width, decoder, heads = mlp_networks(cfg, self.heads)
        widths, self.bottom_up = [width], nn.ModuleList()
        for layer in m.upper_layers:
            self.bottom_up.append(mlp([widths[-1], *layer.hidden], act))
            widths.append(layer.hidden[-1] if layer.hidden else widths[-1])
        self.heads_q = nn.ModuleList(nn.ModuleList([nn.Linear(w, d), nn.Linear(w, d)]) for w, d in zip(widths, sizes))
        self.down = nn.ModuleList()
        for below, layer in zip(sizes, m.upper_layers):
            hidden = list(reversed(layer.hidden))
            width_p = hidden[-1] if hidden else layer.latent_dim
            self.down.append(nn.ModuleList([mlp([layer.latent_dim, *hidden], act), nn.Linear(width_p, below), nn.Linear(width_p, below)]))
        self.decoder, self.output_heads = decoder, nn.ModuleList(heads)
        self.k, self.iwae = m.k, m.objective == "iwae"
        self.analytic_kl = m.kl.value == "analytic" and not self.iwae

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.encoder(x)]
        for step in self.bottom_up:
            features.append(step(features[-1]))
        mean, log_var = (head(features[-1]) for head in self.heads_q[-1])
        eps = torch.randn(self.k, *mean.shape, device=x.device)
        z = mean + torch.exp(0.5 * log_var) * eps
        if self.analytic_kl:
            latent = -0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(-1)  # -KL, [B]
        else:
            latent = self.log_prior(z) + 0.5 * (LOG_2PI + log_var + eps.pow(2)).sum(-1)
        for index in reversed(range(len(self.down))):
            trunk, mean_head, log_var_head = self.down[index]
            h = trunk(z)
            mean_p, log_var_p = mean_head(h), log_var_head(h)
            mean_d, log_var_d = (head(features[index]) for head in self.heads_q[index])
            log_var_q = -torch.logaddexp(-log_var_p, -log_var_d)
            weight = torch.sigmoid(log_var_p - log_var_d)
            mean_q = weight * mean_d + (1 - weight) * mean_p
            eps = torch.randn(mean_q.shape, device=x.device)
            z = mean_q + torch.exp(0.5 * log_var_q) * eps
            if self.analytic_kl:
                ratio = torch.exp(log_var_q - log_var_p)
                latent = latent - 0.5 * (ratio + (mean_q - mean_p).pow(2) * torch.exp(-log_var_p) - 1 - (log_var_q - log_var_p)).sum(-1)
            else:
                latent = latent + gaussian_log_density(z, mean_p, log_var_p) + 0.5 * (LOG_2PI + log_var_q + eps.pow(2)).sum(-1)
        log_w = self.log_likelihood(x, z) + latent  # [k, B]
        if not self.iwae:
            return -log_w.mean(0).mean()
        return -(torch.logsumexp(log_w, 0) - math.log(self.k)).mean()


class PlainContinuousBernoulliVAE(PlainVAE):
    """With the continuous Bernoulli likelihood (Loaiza-Ganem & Cunningham 2019, eq. 2-3): the
    Bernoulli's log-density of the grey levels plus log C(l) = log(l / tanh(l / 2)) per pixel, its
    Taylor series (log 2 + u^2/3 - 7u^4/90 + 62u^6/2835, u = l/2) where |l| < 0.01."""

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        logits = self.output_heads[0](self.decoder(z))
        small = logits.abs() < 1e-2
        a = torch.where(small, torch.ones_like(logits), logits.abs())
        u2 = (0.5 * logits).pow(2)
        series = math.log(2.0) + u2 * (1.0 / 3.0 + u2 * (-7.0 / 90.0 + u2 * (62.0 / 2835.0)))
        log_norm = torch.where(small, series, torch.log(a) - torch.log(torch.tanh(0.5 * a)))
        bernoulli = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        return bernoulli + log_norm.sum(-1)


class PlainLogisticVAE(PlainVAE):
    """With the discretized logistic mixture (Salimans et al. 2017, section 2.1) of K components
    per pixel on the levels j/255: K mean heads, K log-scale heads (log s = floor + softplus(raw -
    floor)), K mixture-logit heads for K > 1; log P(bin) = log sigmoid(a) + log sigmoid(-b) +
    log(1 - e^-(a - b)) at the bin's standardised edges a, b, the end bins open."""

    def __init__(self, cfg: FitConfig) -> None:
        self.mixtures, self.floor = cfg.model.mixtures, cfg.model.log_scale_floor
        self.heads = 3 * self.mixtures if self.mixtures > 1 else 2
        super().__init__(cfg)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h, K = self.decoder(z), self.mixtures
        maps = [head(h) for head in self.output_heads]
        means = torch.stack(maps[:K], -1)  # [..., 784, K]
        log_scales = self.floor + F.softplus(torch.stack(maps[K : 2 * K], -1) - self.floor)
        x = x.unsqueeze(-1)
        inv_scale = torch.exp(-log_scales)
        a = (x - means + HALF_BIN) * inv_scale
        b = (x - means - HALF_BIN) * inv_scale
        first, last = x < HALF_BIN, x > 1 - HALF_BIN
        delta = 2 * HALF_BIN * inv_scale
        log1mexp = torch.where(delta < math.log(2.0), torch.log(-torch.expm1(-delta)), torch.log1p(-torch.exp(-delta)))
        zero = torch.zeros_like(a)
        log_p = (
            torch.where(last, zero, F.logsigmoid(a)) + torch.where(first, zero, F.logsigmoid(-b))
            + torch.where(first | last, zero, log1mexp)
        )
        if K == 1:
            return log_p.squeeze(-1).sum(-1)
        return torch.logsumexp(log_p + F.log_softmax(torch.stack(maps[2 * K :], -1), -1), -1).sum(-1)


def plain_model(cfg: FitConfig) -> PlainVAE:
    """The plain model of the scenario's one non-default part."""
    parts = {
        PlainVampVAE: cfg.prior.name == "vamp",
        PlainMixturePriorVAE: cfg.prior.name == "mog",
        PlainPlanarVAE: cfg.posterior.name == "planar",
        PlainIAFVAE: cfg.posterior.name == "iaf",
        PlainHierarchyVAE: len(cfg.model.upper_layers) > 0 and cfg.hierarchy.name == "bottomup",
        PlainLadderVAE: cfg.hierarchy.name == "topdown" and cfg.hierarchy.merge.value == "precision",
        PlainContinuousBernoulliVAE: cfg.model.decoder == "continuous_bernoulli",
        PlainLogisticVAE: cfg.model.decoder == "logistic",
    }
    chosen = [cls for cls, used in parts.items() if used]
    if cfg.model.objective not in ("elbo", "iwae"):
        raise NotImplementedError(f"no plain loop for model.objective={cfg.model.objective}")
    if len(chosen) > 1 or (cfg.model.decoder not in ("bernoulli", "continuous_bernoulli", "logistic")):
        raise NotImplementedError(f"no plain model combines {[cls.__name__ for cls in chosen]} / {cfg.model.decoder}")
    return (chosen[0] if chosen else PlainVAE)(cfg)


@torch.no_grad()
def copy_parameters(plain: nn.Module, vae: nn.Module) -> None:
    """vaelab's parameters into the plain model, one to one in creation order: the same model
    size by construction, and the same starting point (step times depend on the values:
    denormal floats are slow on the CPU)."""
    mine, theirs = list(plain.parameters()), list(vae.parameters())
    shapes = [tuple(p.shape) for p in mine], [tuple(p.shape) for p in theirs]
    if shapes[0] != shapes[1]:
        raise AssertionError(f"the plain model's parameters {shapes[0]} are not vaelab's {shapes[1]}")
    for a, b in zip(mine, theirs):
        a.copy_(b)


def plain_optimizer(cfg: FitConfig, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The run's optimizer (optim.name, lr, weight decay, Adam's betas and eps), fused where torch has a fused kernel."""
    o = cfg.optim
    kwargs: dict = dict(lr=o.lr, weight_decay=o.weight_decay)
    if o.name.value == "adam":
        cls, kwargs = torch.optim.Adam, {**kwargs, "betas": tuple(o.betas), "eps": o.eps}
    else:
        cls = {"adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}[o.name.value]
    try:
        return cls(parameters, fused=True, **kwargs)
    except RuntimeError:
        return cls(parameters, **kwargs)


class PlainLoop:
    """A hand-written training loop over the scenario's model, eager or compiled, from vaelab's initial parameters."""

    def __init__(self, cfg: FitConfig, train: torch.Tensor, initial: nn.Module, compiled: bool) -> None:
        self.model = plain_model(cfg).to(train.device)
        copy_parameters(self.model, initial)
        self.optimizer = plain_optimizer(cfg, list(self.model.parameters()))
        self.loss = torch.compile(self.model.loss) if compiled else self.model.loss
        self.train, self.batch_size = train, cfg.data.batch_size
        self.binarize = cfg.data.binarize.value == "dynamic"
        self.order = torch.randperm(len(train), device=train.device)
        self.position = 0

    def seconds(self, steps: int) -> float:
        _sync(self.train.device)
        start = time.perf_counter()
        for _ in range(steps):
            if self.position + self.batch_size > len(self.train):
                self.position = 0
            x = self.train[self.order[self.position : self.position + self.batch_size]]
            x = torch.bernoulli(x) if self.binarize else x
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


def same_model_check(cfg: FitConfig, module, train: torch.Tensor) -> str:
    """The plain model at vaelab's parameters against vaelab's training loss: the same value from
    the same noise and minibatch, and the same FLOP of matrix products and convolutions."""
    plain = plain_model(cfg).to(train.device)
    copy_parameters(plain, module.vae)
    x = train[: cfg.data.batch_size]
    devices = [train.device] if train.device.type == "cuda" else []
    results = []
    for loss_of in (lambda x: module.objective.training_loss(module.vae, x)[0], plain.loss):
        with torch.random.fork_rng(devices=devices), FlopCounterMode(display=False) as counter:
            torch.manual_seed(1)
            batch = torch.bernoulli(x) if cfg.data.binarize.value == "dynamic" else x
            results.append((loss_of(batch).item(), counter.get_total_flops()))
    (ours, our_flops), (theirs, their_flops) = results
    if not math.isclose(ours, theirs, rel_tol=1e-4) or (plain.same_flops and our_flops != their_flops):
        raise AssertionError(f"plain loss {theirs} ({their_flops} FLOP) is not vaelab's {ours} ({our_flops} FLOP)")
    parameters = sum(p.numel() for p in plain.parameters())
    flops = f"{3 * our_flops / 1e6:.0f}" + ("" if plain.same_flops else f" (plain {3 * their_flops / 1e6:.0f})")
    return f"same model: {parameters} parameters, loss {ours:.4f} (plain {theirs:.4f}), {flops} MFLOP per step"


class Interleave(pl.Callback):
    """Times each vaelab training epoch and runs the plain loops between epochs."""

    def __init__(self, cfg: FitConfig, steps: int) -> None:
        self.cfg, self.steps = cfg, steps
        self.times: dict[str, list[float]] = {"plain eager": [], "plain compiled": [], "vaelab": []}
        self.before_first: list[float] = []  # seconds from the epoch's start to its first training call (counted in vaelab's)

    def on_train_start(self, trainer, module) -> None:
        train = trainer.datamodule.train_data
        self.check = same_model_check(self.cfg, module, train)
        self.loops = {
            "plain eager": PlainLoop(self.cfg, train, module.vae, compiled=False),
            "plain compiled": PlainLoop(self.cfg, train, module.vae, compiled=True),
        }

    def on_train_epoch_start(self, trainer, module) -> None:
        _sync(module.device)
        self._start = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self._first = time.perf_counter()  # the epoch's bookkeeping before its first step ends here

    def on_train_epoch_end(self, trainer, module) -> None:
        _sync(module.device)
        end = time.perf_counter()
        self.times["vaelab"].append(end - self._start)
        self.before_first.append(self._first - self._start)
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
    check = f"{timer.check}; epoch start to first step {1000 * statistics.median(timer.before_first[1:]):.1f} ms"
    return compiled, check, per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per timed round (default: each scenario's own)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed rounds (medians are compared)")
    parser.add_argument("--threads", default="1,2", help="torch thread counts to run every scenario at, comma-separated")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--only", default=None, help="run only scenarios whose key or name contains this")
    args = parser.parse_args()
    os.environ.setdefault("VAELAB_DATA_DIR", str(SHARED_DATA))
    warnings.filterwarnings("ignore")
    began = time.perf_counter()
    print(f"device: {args.device}, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}, "
          f"{args.repeats} rounds (+1 warm-up) per scenario")
    ratios = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for index, (key, (name, overrides, full_steps, own_steps)) in enumerate(SCENARIOS.items()):
            if args.only and args.only not in key and args.only not in name:
                continue
            torch._dynamo.reset()  # each scenario compiles afresh: no recompile limit across scenarios
            steps = args.steps or own_steps
            run_dir = Path("runs") / "benchmark-throughput" / f"{index}-{threads}"
            compiled, check, per_step = run_scenario(overrides, full_steps, steps, args.repeats, args.device, run_dir)
            medians = {loop: statistics.median(ms) for loop, ms in per_step.items()}
            best = min(("plain eager", "plain compiled"), key=medians.get)
            # each round's vaelab time over the same round's plain time: a disturbed round moves one pair
            paired = [ours / theirs for ours, theirs in zip(per_step["vaelab"], per_step[best])]
            ratios[key, threads] = statistics.median(paired)
            print(f"\n{name} [{key}], {threads} thread{'s' * (threads > 1)}, {steps} steps per round "
                  f"(vaelab compiles: {compiled}); {check}; ms per step, rounds then median:")
            for loop, ms in per_step.items():
                print(f"  {loop:15s} {' '.join(f'{v:7.2f}' for v in ms)}   median {medians[loop]:7.2f}")
            print(f"  vaelab / {best}, per round: {' '.join(f'{r:7.3f}' for r in paired)}")
            print(f"  ratio vaelab / best plain loop (median of the rounds' ratios): {ratios[key, threads]:.3f}"
                  f"; of the medians: {medians['vaelab'] / medians[best]:.3f}", flush=True)
    print("\nratios vaelab / best plain loop:")
    thread_counts = sorted({t for _, t in ratios})
    print(f"  {'scenario':14s} " + " ".join(f"{t} thr".rjust(6) for t in thread_counts))
    for key in dict.fromkeys(k for k, _ in ratios):
        print(f"  {key:14s} " + " ".join(f"{ratios[key, t]:6.3f}" if (key, t) in ratios else " " * 6 for t in thread_counts))
    print(f"total wall time: {time.perf_counter() - began:.0f} s")
    (key, threads), worst = max(ratios.items(), key=lambda item: item[1])
    print(f"worst ratio {worst:.2f}: {key} ({threads} thread{'s' * (threads > 1)})")


if __name__ == "__main__":
    main()
