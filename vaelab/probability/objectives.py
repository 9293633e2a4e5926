"""The training objectives and their gradient estimators, as functions of a latent-variable model.

The model (:class:`LatentVariableModel`: vaelab's VAE, or any object with the same three
members) supplies samples of the posterior with their log q, the generative log-densities, and
its prior; the functions here make the bounds of the papers from them:

* the ELBO, mean_k log w (Kingma & Welling eq. 7), or with the top layer's KL in closed form
  where the prior has one, E[log p(x|z)] - KL(q || p) (eq. 10); otherwise that term is sampled;
* the importance-weighted bound L_k = log (1/k) sum_i w_i (Burda et al. eq. 8);
* the training loss of each gradient estimator (``reparam``, ``stl``, ``dreg``) with a KL weight
  (:mod:`vaelab.probability.estimators`), and the ELBO's loss with free bits (Kingma et al. 2016).

Every bound is per example, in nats: [batch].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from vaelab.config.schema import Estimator, KLMode, ModelConfig, Objective
from vaelab.probability.bounds import iwae_bound
from vaelab.probability.estimators import dreg_surrogate, weighted_log_weights


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
    has_closed_form_kl: bool  # the prior has a closed-form KL to q(z_L|.), and q(z_L|.) is Gaussian

    def sample_latents(self, x: Tensor, k: int, stop_q: bool = False, top: bool = True) -> LatentSample: ...

    def generative_log_probs(self, x: Tensor, zs: list[Tensor], top: bool = True) -> tuple[Tensor, Tensor | float]: ...


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
    log_likelihood, log_prior = model.generative_log_probs(x, sample.zs, top=not analytic)
    if not analytic:
        return log_likelihood, log_prior - sample.log_q
    return log_likelihood, log_prior - sample.log_q - model.prior.kl(sample.top)


def elbo(model: LatentVariableModel, x: Tensor, k: int, kl: KLMode) -> Tensor:
    """The SGVB estimate of the ELBO averaged over k samples: [batch]."""
    log_likelihood, log_ratio = elbo_terms(model, x, k, kl)
    return (log_likelihood + log_ratio).mean(0)


def iwae(model: LatentVariableModel, x: Tensor, k: int) -> Tensor:
    """The importance-weighted bound with k samples (Burda et al. eq. 8): [batch]."""
    sample = model.sample_latents(x, k)
    log_likelihood, log_prior = model.generative_log_probs(x, sample.zs)
    return iwae_bound(log_likelihood + log_prior - sample.log_q)


def training_loss(model: LatentVariableModel, x: Tensor, cfg: ModelConfig, kl_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The loss to minimise and the true bound per example: (scalar, [batch]).

    The loss is minus the batch mean of a surrogate whose value is the configured bound
    (``objective``, ``k``, ``kl``) with log p(z) - log q(z|x) weighted by ``kl_weight`` (a
    0-dim tensor; None is weight 1) and whose gradient is the configured ``estimator``'s. The
    bound is the same bound with weight 1, from the same samples, detached; with weight 1 and
    ``reparam`` or ``stl`` it is the surrogate itself.
    """
    if cfg.free_bits > 0:
        return free_bits_loss(model, x, cfg.k, cfg.free_bits, kl_weight)
    stop_q = cfg.estimator is not Estimator.reparam
    if cfg.objective is Objective.elbo:
        log_likelihood, log_ratio = elbo_terms(model, x, cfg.k, cfg.kl, stop_q)  # [k, batch] each
        bound = (log_likelihood + log_ratio).mean(0)
        surrogate = bound if kl_weight is None else weighted_log_weights(log_likelihood, log_ratio, kl_weight).mean(0)
        return -surrogate.mean(), bound.detach()
    sample = model.sample_latents(x, cfg.k, stop_q=stop_q)
    log_likelihood, log_prior = model.generative_log_probs(x, sample.zs)
    log_ratio = log_prior - sample.log_q  # [k, batch]
    bound = iwae_bound(log_likelihood + log_ratio)
    if cfg.estimator is Estimator.dreg:
        # The same log-weights once more with the samples detached, for p's gradient.
        weight = 1.0 if kl_weight is None else kl_weight
        fixed_z = [z.detach() for z in sample.zs]
        log_likelihood_fixed_z, log_prior_fixed_z = model.generative_log_probs(x, fixed_z)
        log_w_fixed_z = weighted_log_weights(log_likelihood_fixed_z, log_prior_fixed_z - sample.log_q.detach(), weight)
        log_w = weighted_log_weights(log_likelihood, log_ratio, weight)
        surrogate = dreg_surrogate(log_w_fixed_z, log_w, weight)
    elif kl_weight is None:
        surrogate = bound  # reparam, or stl (biased here: Tucker et al. sec. 3)
    else:
        surrogate = iwae_bound(weighted_log_weights(log_likelihood, log_ratio, kl_weight))
    return -surrogate.mean(), bound.detach()


def free_bits_kl(kl_per_dimension: Tensor, floor: float) -> Tensor:
    """sum_j max(floor, KL_j), KL_j the mean of dimension j's KL over every leading dimension
    (samples and batch) of ``kl_per_dimension`` [..., d]: Kingma et al. 2016 (IAF), appendix C,
    with one group per latent dimension. A dimension below the floor gets no gradient from its KL."""
    per_dimension = kl_per_dimension.reshape(-1, kl_per_dimension.shape[-1]).mean(0)
    return per_dimension.clamp(min=floor).sum()


def free_bits_loss(
    model: LatentVariableModel, x: Tensor, k: int, floor: float, kl_weight: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The ELBO's loss with free bits on the top layer's analytic KL (:func:`free_bits_kl`), and
    the true ELBO per example from the same samples, detached: (scalar, [batch]).

    Loss: -(mean log p(x|z_1) + w * mean of the layers below's log p - log q) + w * sum_j max(floor,
    KL_j), w the KL weight (None: 1). The prior must split its KL by dimension (``kl_per_dimension``).
    """
    sample = model.sample_latents(x, k, top=False)
    log_likelihood, log_prior = model.generative_log_probs(x, sample.zs, top=False)
    log_ratio_below = log_prior - sample.log_q  # 0.0 with one layer
    kl_dimensions = model.prior.kl_per_dimension(sample.top)  # [batch, d], or [k, batch, d] in a hierarchy
    bound = (log_likelihood + log_ratio_below - kl_dimensions.sum(-1)).mean(0)
    weight = 1.0 if kl_weight is None else kl_weight
    reconstruction = (log_likelihood + weight * log_ratio_below).mean()
    return -reconstruction + weight * free_bits_kl(kl_dimensions, floor), bound.detach()
