"""AIS and BDMC bounds on log p(x) of a trained VAE, for ``vaelab.evaluate`` (eval.ais_steps, eval.bdmc_images).

The chains start from the generative model's own p(z_1..z_L) (z_L from the prior, then each
p(z_l|z_{l+1})), as Wu et al. 2017 do, so no posterior density is needed; the annealing and the
HMC transitions are :mod:`vaelab.probability.ais`'s, over all layers' latents side by side.

* ``ais_log_likelihoods``: per test image, forward AIS's log p-hat(x), a stochastic lower bound.
* ``annealed_bounds``: both, as eval.json's ``ais`` and ``bdmc``.
* ``bdmc``: on images simulated from the model, (z, x) ~ p(z) p(x|z), the forward bound and the
  reverse bound started at the exact posterior sample z (Grosse et al. 2015): they bracket log
  p(x) of each simulated image, so their gap bounds AIS's error on such data.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import torch
from torch import Tensor

from vaelab.config.schema import FitConfig
from vaelab.evaluation.scores import mean, std_error
from vaelab.models.vae import VAE
from vaelab.probability.ais import AnnealingResult, ais_log_marginal, anneal, reverse_ais_upper_bound, sigmoid_schedule


class AISSettings(NamedTuple):
    """The budget: ``steps`` intermediate distributions, ``chains`` per image, ``leapfrog`` steps
    per HMC transition from a step size of ``step_size``, adapted per chain."""

    steps: int
    chains: int
    leapfrog: int = 10
    step_size: float = 0.05


class AISScores(NamedTuple):
    """Per image [N]: log p-hat(x), and each image's mean over chains of the HMC acceptance rate
    and the final step size."""

    log_likelihood: Tensor
    acceptance: Tensor
    step_size: Tensor


class BDMCScores(NamedTuple):
    """Per simulated image [N]: the forward (lower) and reverse (upper) bounds of log p(x), and
    the mean acceptance rates of each direction; and the simulated images [N, D]."""

    lower: Tensor
    upper: Tensor
    acceptance_forward: Tensor
    acceptance_reverse: Tensor
    images: Tensor


def latent_sizes(vae: VAE) -> list[int]:
    """Dimensions of z_1..z_L, in the order they sit side by side in the flat AIS state."""
    return list(vae.latent_dims)


def log_densities(vae: VAE, x: Tensor):
    """log p(z_1..z_L) and log p(x|z_1) as functions of the flat state z [..., sum of latent sizes]."""
    sizes = latent_sizes(vae)

    def log_prior(z: Tensor) -> Tensor:
        return vae.generative_log_probs(x, list(z.split(sizes, dim=-1)))[1]

    def log_likelihood(z: Tensor) -> Tensor:
        return vae.decoder.log_prob(x, z[..., : sizes[0]])

    return log_prior, log_likelihood


def sample_generative_latents(vae: VAE, n: int) -> Tensor:
    """n draws of (z_1..z_L) from the generative model, flat: [n, sum of latent sizes]."""
    parameter = next(vae.parameters())
    z = vae.prior.sample(n).to(parameter.device, parameter.dtype)
    zs = [z]
    for layer in reversed(vae.generative_layers):
        z = layer.distribution(layer(z)).rsample()[0]
        zs.insert(0, z)
    return torch.cat(zs, dim=-1)


def _forward(vae: VAE, x: Tensor, settings: AISSettings) -> AnnealingResult:
    log_prior, log_likelihood = log_densities(vae, x)
    z = sample_generative_latents(vae, settings.chains * len(x)).reshape(settings.chains, len(x), -1)
    return anneal(z, log_prior, log_likelihood, sigmoid_schedule(settings.steps), settings.leapfrog, settings.step_size)


def ais_log_likelihoods(vae: VAE, data: Tensor, settings: AISSettings, batch_size: int = 100) -> AISScores:
    """Forward AIS on each row of ``data`` [N, D], in batches, on the device and dtype of ``vae``; on the CPU."""
    parameter = next(vae.parameters())
    results = []
    with torch.no_grad():
        for x in data.split(batch_size):
            forward = _forward(vae, x.to(parameter.device, parameter.dtype), settings)
            results.append((ais_log_marginal(forward), forward.acceptance.mean(0), forward.step_size.mean(0)))
    return AISScores(*(torch.cat([r[i].cpu() for r in results]) for i in range(3)))


def bdmc(vae: VAE, images: int, settings: AISSettings, batch_size: int = 100) -> BDMCScores:
    """BDMC's bounds on ``images`` images simulated from ``vae``: forward AIS from the prior and
    reverse AIS from the simulating z (its exact posterior sample), ``settings.chains`` chains each."""
    results = []
    with torch.no_grad():
        for n in [min(batch_size, images - start) for start in range(0, images, batch_size)]:
            z = sample_generative_latents(vae, n)
            x = vae.decoder.sample(z[..., : latent_sizes(vae)[0]])
            forward = _forward(vae, x, settings)
            log_prior, log_likelihood = log_densities(vae, x)
            reverse = anneal(
                z.expand(settings.chains, *z.shape).clone(), log_prior, log_likelihood,
                sigmoid_schedule(settings.steps).flip(0), settings.leapfrog, settings.step_size,
            )
            results.append((ais_log_marginal(forward), reverse_ais_upper_bound(reverse), forward.acceptance.mean(0), reverse.acceptance.mean(0), x))
    return BDMCScores(*(torch.cat([r[i].cpu() for r in results]) for i in range(5)))


def annealed_bounds(vae: VAE, test: Tensor, ll: Tensor, cfg: FitConfig) -> dict:
    """eval.json's ``ais`` (forward AIS on the first eval.ais_images test images, beside L_S on the
    same images) and ``bdmc`` (both bounds on eval.bdmc_images simulated images, or None); seeded
    anew, after every other draw, so no other number depends on them."""
    e = cfg.eval
    settings = AISSettings(e.ais_steps, e.ais_chains, e.ais_leapfrog, e.ais_step_size)
    budget = {"steps": e.ais_steps, "chains": e.ais_chains, "leapfrog": e.ais_leapfrog, "step_size": e.ais_step_size, "schedule": "sigmoid"}
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    n = min(e.ais_images, len(test))
    forward = ais_log_likelihoods(vae, test[:n], settings, e.batch_size)
    ais = {
        **budget, "images": n, "test_ll": mean(forward.log_likelihood), "test_ll_se": std_error(forward.log_likelihood),
        "ll_samples_same_images": mean(ll[:n]), "minus_ll_samples": mean(forward.log_likelihood - ll[:n].double()),
        "acceptance": mean(forward.acceptance), "final_step_size": mean(forward.step_size),
        "seconds": time.perf_counter() - started,
    }
    if not e.bdmc_images:
        return {"ais": ais, "bdmc": None}
    started = time.perf_counter()
    both = bdmc(vae, e.bdmc_images, settings, e.batch_size)
    return {"ais": ais, "bdmc": {
        **budget, "images": e.bdmc_images, "lower": mean(both.lower), "upper": mean(both.upper),
        "gap": mean(both.upper.double() - both.lower.double()),
        "acceptance_forward": mean(both.acceptance_forward), "acceptance_reverse": mean(both.acceptance_reverse),
        "seconds": time.perf_counter() - started,
    }}
