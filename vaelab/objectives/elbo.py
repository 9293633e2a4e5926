"""The ELBO (Kingma & Welling 2014): the k-sample mean log-weight (eq. 7), or with the top
layer's KL in closed form where the prior has one (eq. 10); optionally with free bits."""

from __future__ import annotations

from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.objectives.objective import FREE_BITS_NEED, OBJECTIVES, TrainingObjective, elbo_terms_of
from vaelab.probability.estimators import weighted_log_weights
from vaelab.probability.objectives import LatentVariableModel, elbo, elbo_terms


@OBJECTIVES.register
class ELBO(TrainingObjective):
    """The evidence lower bound; ``model.kl`` picks the closed-form or the sampled KL, ``stl``
    (Roeder et al. 2017) stops log q's parameter gradient and needs the sampled KL."""

    name = "elbo"
    estimators = ("reparam", "stl")
    samples_its_kl = False

    def check(self) -> None:
        cfg = self.cfg
        analytic = cfg.kl.value == "analytic"
        if cfg.free_bits > 0 and not analytic:
            raise ConfigError(FREE_BITS_NEED)
        if self.estimator == "stl" and analytic:
            raise ConfigError(
                "model.estimator=stl needs model.kl=mc: it stops the gradient of log q(z|x), which the analytic KL "
                "does not sample"
            )
        if self.estimator == "dreg":
            raise ConfigError(
                "model.estimator=dreg is defined for model.objective=iwae (Tucker et al. 2019); "
                "for the elbo use model.estimator=stl with model.kl=mc"
            )

    def check_model(self, model: LatentVariableModel, parts: str) -> None:
        if self.cfg.free_bits > 0 and not (model.prior.has_per_dimension_kl and model.has_closed_form_kl):
            raise ConfigError(
                f"model.free_bits needs a KL that splits by latent dimension; that of {parts} does not (a "
                "mixture's or a flow's KL has no per-dimension terms): use prior=standard with a Gaussian top "
                "layer, or model.free_bits=0"
            )

    @property
    def bound_name(self) -> str:
        return "elbo"

    @property
    def reports_own_bound(self) -> bool:
        return False  # validation scores the ELBO always

    def bound(self, model: LatentVariableModel, x: Tensor) -> Tensor:
        return elbo(model, x, self.k, self.cfg.kl)

    def loss_bound_and_terms(
        self, model: LatentVariableModel, x: Tensor, kl_weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        if self.cfg.free_bits > 0:
            return free_bits_loss(model, x, self.k, self.cfg.free_bits, kl_weight)
        stop_q = self.estimator != "reparam"
        log_likelihood, log_ratio = elbo_terms(model, x, self.k, self.cfg.kl, stop_q)  # [k, batch] each
        bound = (log_likelihood + log_ratio).mean(0)
        surrogate = bound if kl_weight is None else weighted_log_weights(log_likelihood, log_ratio, kl_weight).mean(0)
        return -surrogate.mean(), bound.detach(), elbo_terms_of(log_likelihood, log_ratio)


def free_bits_kl(kl_per_dimension: Tensor, floor: float) -> Tensor:
    """sum_j max(floor, KL_j), KL_j the mean of dimension j's KL over every leading dimension
    (samples and batch) of ``kl_per_dimension`` [..., d]: Kingma et al. 2016 (IAF), appendix C,
    with one group per latent dimension. A dimension below the floor gets no gradient from its KL."""
    per_dimension = kl_per_dimension.reshape(-1, kl_per_dimension.shape[-1]).mean(0)
    return per_dimension.clamp(min=floor).sum()


def free_bits_loss(
    model: LatentVariableModel, x: Tensor, k: int, floor: float, kl_weight: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The ELBO's loss with free bits on the top layer's analytic KL (:func:`free_bits_kl`), the
    true ELBO per example from the same samples, detached, and its two terms: (scalar, [batch], [2, batch]).

    Loss: -(mean log p(x|z_1) + w * mean of the layers below's log p - log q) + w * sum_j max(floor,
    KL_j), w the KL weight (None: 1). The prior must split its KL by dimension (``kl_per_dimension``).
    """
    sample = model.sample_latents(x, k, top=False)
    log_likelihood, log_prior = model.log_joint(x, sample, top=False)
    log_ratio_below = log_prior - sample.log_q  # 0.0 with one layer
    kl_dimensions = model.prior.kl_per_dimension(sample.top)  # [batch, d], or [k, batch, d] in a hierarchy
    bound = (log_likelihood + log_ratio_below - kl_dimensions.sum(-1)).mean(0)
    weight = 1.0 if kl_weight is None else kl_weight
    reconstruction = (log_likelihood + weight * log_ratio_below).mean()
    terms = elbo_terms_of(log_likelihood, log_ratio_below - kl_dimensions.sum(-1))
    return -reconstruction + weight * free_bits_kl(kl_dimensions, floor), bound.detach(), terms
