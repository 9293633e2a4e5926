"""The bounds of a latent-variable model, as functions of it.

The model (:class:`LatentVariableModel`: vaelab's VAE, or any object with the same three
members) supplies samples of the posterior with their log q, the generative log-densities, and
its prior; the functions here make the bounds of the papers from them:

* the ELBO, mean_k log w (Kingma & Welling eq. 7), or with the top layer's KL in closed form
  where the prior has one, E[log p(x|z)] - KL(q || p) (eq. 10); otherwise that term is sampled;
* the importance-weighted bound L_k = log (1/k) sum_i w_i (Burda et al. eq. 8).

The training objectives built on them, with their gradient estimators, are :mod:`vaelab.objectives`.
Every bound is per example, in nats: [batch].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from vaelab.config.schema import KLMode
from vaelab.probability.bounds import iwae_bound


@dataclass
class LatentSample:
    """k joint samples z_1..z_L of the posterior ([k, batch, d_l] each), the sum of their log q
    ([k, batch]; without the top layer's term where it was left out, 0.0 if nothing is left), and
    the top layer's posterior q(z_L | .) (for a closed-form KL)."""

    zs: list[Tensor]
    log_q: Tensor | float
    top: object


class LatentVariableModel(Protocol):
    prior: object  # a vaelab.models.priors.Prior: log_prob, kl and kl_per_dimension (None without a closed form)
    has_closed_form_kl: bool  # the layers it leaves out with top=False have a closed-form KL

    def sample_latents(self, x: Tensor, k: int, stop_q: bool = False, top: bool = True) -> LatentSample: ...

    def generative_log_probs(self, x: Tensor, zs: list[Tensor], top: bool = True) -> tuple[Tensor, Tensor | float]: ...

    def log_joint(self, x: Tensor, sample: LatentSample, top: bool = True) -> tuple[Tensor, Tensor | float]: ...

    def closed_form_kl(self, sample: LatentSample) -> Tensor: ...


def analytic_kl(model: LatentVariableModel, kl: KLMode) -> bool:
    """Whether the ELBO takes the top layer's KL in closed form: asked for, and there is one (the
    prior has one and the top layer's posterior is Gaussian, not a flow)."""
    return kl is KLMode.analytic and model.has_closed_form_kl


def elbo_terms(model: LatentVariableModel, x: Tensor, k: int, kl: KLMode, stop_q: bool = False) -> tuple[Tensor, Tensor]:
    """Per sample, log p(x|z_1) and the latent term whose mean is minus the KL: [k, batch] each.

    Sampled: log p(z) - log q(z|x). Analytic (:func:`analytic_kl`): the same for the layers
    below the top, minus the top layer's KL(q(z_L|.) || p(z_L)) in closed form (with one layer
    a [batch] tensor that broadcasts over the samples). ``stop_q``: log q with q's parameters
    stopped (``stl``).
    """
    analytic = analytic_kl(model, kl)
    sample = model.sample_latents(x, k, stop_q=stop_q, top=not analytic)
    log_likelihood, log_prior = model.log_joint(x, sample, top=not analytic)
    if not analytic:
        return log_likelihood, log_prior - sample.log_q
    return log_likelihood, log_prior - sample.log_q - model.closed_form_kl(sample)


def elbo(model: LatentVariableModel, x: Tensor, k: int, kl: KLMode) -> Tensor:
    """The SGVB estimate of the ELBO averaged over k samples: [batch]."""
    log_likelihood, log_ratio = elbo_terms(model, x, k, kl)
    return (log_likelihood + log_ratio).mean(0)


def iwae(model: LatentVariableModel, x: Tensor, k: int) -> Tensor:
    """The importance-weighted bound with k samples (Burda et al. eq. 8): [batch]."""
    sample = model.sample_latents(x, k)
    log_likelihood, log_prior = model.log_joint(x, sample)
    return iwae_bound(log_likelihood + log_prior - sample.log_q)
