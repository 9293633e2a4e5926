"""The numbers of ``vaelab.evaluate``: a trained VAE scored image by image on a test set.

* ``score``: per image, log p(x) estimated by importance sampling (L_S), the ELBO estimate and
  the IWAE bounds L_k, all from one stream of samples of q(z|x) per image
  (:class:`~vaelab.probability.bounds.ImportanceEstimates`, the estimator of ``vaelab.fit``'s
  ``test/ll`` too), and the posterior expectations E_q[z_l|x] of every stochastic layer
  (:meth:`~vaelab.models.vae.VAE.posterior_means`).
* with every L_S, how far it can be trusted: the effective sample size and Pareto k-hat of
  each image's S weights (:mod:`~vaelab.probability.importance_diagnostics`), summarised by
  ``importance_diagnostics``, with ``unreliable_estimate_warning`` where k-hat > 0.7.
* ``active_units``: Burda et al.'s count of the latent units that the data use (section 5.2).
* ``discrete_bits_per_dim``: -log P(x) / (D log 2) where the likelihood is a probability of the
  stored values (``vaelab.models.likelihoods.is_discrete``), else None.
* ``bits_per_dim``: nats per image of a density on [0, 1] put on the 8-bit scale of the
  density-estimation literature (a convention, not a bound here: see its docstring).
* ``mean`` and ``std_error``: over the images, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from vaelab.config.schema import KLMode
from vaelab.models.likelihoods import Likelihood, is_discrete
from vaelab.models.compiled import importance_estimates, should_compile_estimates
from vaelab.models.vae import VAE
from vaelab.probability.objectives import elbo_terms
from vaelab.probability.importance_diagnostics import JUDGED_FROM, UNRELIABLE_K


class ImportanceScores(NamedTuple):
    """Per image, on the CPU: L_S, the ELBO estimate, k -> L_k, and the effective sample size
    and Pareto k-hat (None for S < 10) of the S weights behind L_S, [N] each."""

    ll: Tensor
    elbo: Tensor
    iwae: dict[int, Tensor]
    ess: Tensor
    pareto_k: Tensor | None


@dataclass
class Scores:
    """Per-image results on the CPU: those of :class:`ImportanceScores`, ``posterior_means``:
    E_q[z_l|x] per layer, [N, latent_l], and the ELBO's two terms, ``kl`` (KL(q(z|x) || p(z)) of
    all layers) and ``reconstruction`` (E_q[log p(x|z_1)]), [N] each; ``layer_kl``: each layer's
    KL term (:meth:`~vaelab.models.vae.VAE.layer_kls`), z_1 first, [N] each."""

    ll: Tensor
    elbo: Tensor
    iwae: dict[int, Tensor]
    ess: Tensor
    pareto_k: Tensor | None
    posterior_means: list[Tensor]
    kl: Tensor
    reconstruction: Tensor
    layer_kl: list[Tensor]


def score(
    vae: VAE,
    data: Tensor,
    ll_samples: int,
    iwae_k: list[int],
    chunk_size: int = 50,
    batch_size: int = 100,
    posterior_mean_samples: int = 100,
    compile: bool | None = None,
) -> Scores:
    """Score every row of ``data`` [N, D] in batches, on the device and in the dtype of ``vae``:
    :func:`importance_scores`, then the posterior expectations, then the ELBO's terms from
    ``posterior_mean_samples`` draws of q per image (each set of draws after the one before, so
    adding one changes none before it). The KL is in closed form for the top layer where the
    prior and posterior have one, sampled otherwise, as the fit's validation ELBO takes it."""
    importance = importance_scores(vae, data, ll_samples, iwae_k, chunk_size, batch_size, compile)
    batches = _batches(vae, data, batch_size)
    with _evaluating(vae), torch.inference_mode():
        means = [vae.posterior_means(x, posterior_mean_samples) for x in batches]
        terms = [elbo_terms(vae, x, posterior_mean_samples, KLMode.analytic) for x in batches]
        layer_kl = [layer_kl_means(vae, x, posterior_mean_samples) for x in batches]
    return Scores(
        *importance,
        posterior_means=[torch.cat([m.cpu() for m in layer]) for layer in zip(*means)],
        kl=torch.cat([(-log_ratio).expand_as(log_likelihood).mean(0).cpu() for log_likelihood, log_ratio in terms]),
        reconstruction=torch.cat([log_likelihood.mean(0).cpu() for log_likelihood, _ in terms]),
        layer_kl=[torch.cat(layer) for layer in zip(*layer_kl)],
    )


LAYER_KL_SEED = 19  # the per-layer KL's own generator: its draws leave every other number as it was


def layer_kl_means(vae: VAE, x: Tensor, draws: int) -> list[Tensor]:
    """Each layer's KL term of :meth:`~vaelab.models.vae.VAE.layer_kls`, averaged over ``draws``
    joint draws of q per image: [batch] per layer, on the CPU."""
    generator = torch.Generator(device=x.device).manual_seed(LAYER_KL_SEED)
    return [kl.double().mean(0).cpu() for kl in vae.layer_kls(x, generator, vae.encode(x), draws)[1]]


def importance_scores(
    vae: VAE,
    data: Tensor,
    ll_samples: int,
    iwae_k: Iterable[int] = (),
    chunk_size: int = 50,
    batch_size: int = 100,
    compile: bool | None = None,
) -> ImportanceScores:
    """Per row of ``data`` [N, D], on the CPU: L_S, the ELBO estimate, k -> L_k and the
    diagnostics of L_S, all from one stream of samples per image (:func:`~vaelab.models.compiled.importance_estimates`).

    The samples of all batches are drawn in the order ``vaelab.fit``'s test draws them, so with
    the same seed, ``batch_size``, ``chunk_size`` and max(iwae_k) <= S, L_S and the ELBO are those
    of its ``test/ll`` and ``test/elbo``. ``compile``: ``eval.compile``, decided as the fit's test
    decides it. ``vaelab.evaluate`` and ``Model.log_likelihood`` of ``vaelab.api`` score here.
    """
    batches = _batches(vae, data, batch_size)
    compiled = should_compile_estimates(compile, next(vae.parameters()).device, len(batches) * batch_size * ll_samples)
    with _evaluating(vae), torch.inference_mode():
        estimates = [importance_estimates(vae, x, ll_samples, chunk_size, iwae_k, compiled) for x in batches]
    return ImportanceScores(
        torch.cat([e.log_likelihood.cpu() for e in estimates]),
        torch.cat([e.elbo.cpu() for e in estimates]),
        {k: torch.cat([e.iwae[k].cpu() for e in estimates]) for k in sorted(set(iwae_k))},
        torch.cat([e.ess.cpu() for e in estimates]),
        torch.cat([e.pareto_k for e in estimates]) if ll_samples >= 10 else None,
    )


def importance_diagnostics(ess: Tensor, pareto_k: Tensor | None) -> dict[str, float | int | None]:
    """The summary of per-image diagnostics that summary.json and eval.json report: the mean and
    smallest effective sample size, the mean and largest Pareto k-hat, and how many images have
    k-hat above 0.7."""
    has_k = pareto_k is not None
    return {
        "ess_mean": mean(ess),
        "ess_min": ess.double().min().item(),
        "pareto_k_mean": mean(pareto_k) if has_k else None,
        "pareto_k_max": pareto_k.max().item() if has_k else None,
        "pareto_k_above_0.7": int((pareto_k > UNRELIABLE_K).sum()) if has_k else None,
    }


def unreliable_estimate_warning(diagnostics: dict, samples: int, images: int) -> str | None:
    """One line when some image's Pareto k-hat exceeds 0.7 (Vehtari et al.'s threshold), else None;
    None too below 100 samples, where the fit of the largest weights has under 20 points."""
    worst = diagnostics["pareto_k_max"]
    if worst is None or worst <= UNRELIABLE_K or samples < JUDGED_FROM:
        return None
    return (
        f"the importance weights behind log p(x) are heavy-tailed on {diagnostics['pareto_k_above_0.7']} of "
        f"{images} images (Pareto k-hat up to {worst:.2f} > {UNRELIABLE_K}), so L_{samples} is unreliable there; "
        "raise eval.ll_samples, or train a posterior closer to the true one (longer, or model.objective=iwae)"
    )


def _batches(vae: VAE, data: Tensor, batch_size: int) -> list[Tensor]:
    parameter = next(vae.parameters())
    return [x.to(parameter.device, parameter.dtype) for x in data.split(batch_size)]


@contextmanager
def _evaluating(vae: VAE) -> Iterator[None]:
    """``vae`` in eval mode inside the block, as it was after it."""
    was_training = vae.training
    vae.eval()
    try:
        yield
    finally:
        vae.train(was_training)


def bound_order(elbo: float, iwae: dict[int, float], ll: float, samples: int) -> dict:
    """The check L_1 <= L_k <= L_S of Burda et al.'s bounds (eq. 8 and their Theorem 1), which
    holds in expectation: the test means of the ELBO (L_1), of each L_k and of L_S in order of k,
    and whether they are ordered. Out of order, the estimates are too noisy to tell the bounds apart."""
    bounds = sorted({1: elbo, **iwae, samples: ll}.items())
    values = [value for _, value in bounds]
    return {
        "chain": " <= ".join(f"L_{k}" for k, _ in bounds),
        "values": {f"L_{k}": value for k, value in bounds},
        "holds": all(a <= b for a, b in zip(values, values[1:])),
    }


def bound_order_warning(order: dict) -> str | None:
    """One line when the means of the bounds are out of order, else None."""
    if order["holds"]:
        return None
    pairs = list(order["values"].items())
    low, high = next((a, b) for a, b in zip(pairs, pairs[1:]) if a[1] > b[1])
    return (
        f"the test means of the bounds are out of order ({low[0]} {low[1]:.2f} > {high[0]} {high[1]:.2f}; in expectation "
        f"{order['chain']}): at these samples the estimates cannot tell them apart; raise eval.ll_samples or test more images"
    )


def active_units(posterior_means: list[Tensor], threshold: float = 0.01) -> tuple[list[int], list[Tensor]]:
    """Per layer: the number of units whose E_q[u|x] varies over x by more than ``threshold``
    (Burda et al. section 5.2), and every unit's variance (divisor N, as numpy.var in their
    code; in float64)."""
    variances = [means.double().var(dim=0, unbiased=False) for means in posterior_means]
    return [int((v > threshold).sum()) for v in variances], variances


def discrete_bits_per_dim(ll_nats: float, data_dim: int, likelihood: type[Likelihood], binary: bool) -> float | None:
    """bpd = -ll / (D log 2), the bits per dimension of a code built from p(x) (the number of
    PixelCNN++ and of the 8-bit literature), for a discrete likelihood; None for a density, whose
    nats are not a probability of the stored values."""
    if not is_discrete(likelihood, binary):
        return None
    return -ll_nats / (data_dim * math.log(2))


def bits_per_dim(ll_nats: float, data_dim: int) -> float:
    """Bits per dimension of 8-bit data from a log-density in nats of the data scaled to [0, 1].

    bpd = (-ll / D + log 256) / log 2.

    The convention of the density-estimation literature for 8-bit images (Theis, van den Oord &
    Bethge 2016, *A note on the evaluation of generative models*, section 3.1; Dinh et al. 2017,
    *Real NVP*; Papamakarios et al. 2017, *MAF*): pixel values x in {0, ..., 255}, modelled by a
    density on y = x / 256 in [0, 1]^D. Going back to the integer scale multiplies the density by
    the Jacobian 256^-D, i.e. subtracts D log 256 nats, and the result is divided by D log 2 to
    turn nats per image into bits per pixel; for uniformly dequantised data (x + u, u ~ U[0, 1))
    it bounds the discrete negative log-probability. A uniform density on [0, 1]^D (ll = 0) gives
    exactly 8 bits/dim.

    Two caveats for vaelab's numbers, stated so they are not over-read: the data are scaled by
    1/255, not 1/256, so the exact change of variables to the integer scale would use log 255 (the
    conventional number is higher by log2(256/255) = 0.0056 bits/dim); and the test images are not
    dequantised, so the density is read at the grid points x / 255 and is not a bound on a discrete
    probability (a model with narrow peaks on the grid could score arbitrarily well;
    ``model.var_floor`` limits this for ``gaussian_learned``).
    """
    return (-ll_nats / data_dim + math.log(256)) / math.log(2)


def mean(values: Tensor) -> float:
    """The exact mean of per-image values, summed in float64."""
    return values.double().mean().item()


def std_error(values: Tensor) -> float | None:
    """The standard error of that mean, std / sqrt(N) over the images; None for one image."""
    return (values.double().std() / math.sqrt(len(values))).item() if len(values) > 1 else None
