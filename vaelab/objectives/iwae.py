"""The importance-weighted bound L_k = log (1/k) sum_i w_i (Burda et al. 2016, eq. 8), with the
pathwise (``reparam``), sticking-the-landing (``stl``) or doubly reparameterized (``dreg``,
Tucker et al. 2019) gradient."""

from __future__ import annotations

from torch import Tensor

from vaelab.objectives.objective import OBJECTIVES, TrainingObjective, elbo_terms_of
from vaelab.probability.bounds import iwae_bound
from vaelab.probability.estimators import dreg_surrogate, weighted_log_weights
from vaelab.probability.objectives import LatentVariableModel, iwae


@OBJECTIVES.register
class IWAE(TrainingObjective):
    name = "iwae"
    estimators = ("reparam", "stl", "dreg")
    samples_its_kl = False  # made of log-weights, but configs of the ELBO's model.kl=analytic train it unchanged

    def warning(self) -> str | None:
        if self.estimator == "stl" and self.k > 1:
            return (
                f"model.estimator=stl on the iwae objective with k={self.k} has a biased encoder gradient "
                "(Tucker et al. 2019, section 3); model.estimator=dreg is its unbiased counterpart"
            )
        return None

    def bound(self, model: LatentVariableModel, x: Tensor) -> Tensor:
        return iwae(model, x, self.k)

    def loss_bound_and_terms(
        self, model: LatentVariableModel, x: Tensor, kl_weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        sample = model.sample_latents(x, self.k, stop_q=self.estimator != "reparam")
        log_likelihood, log_prior = model.log_joint(x, sample)
        log_ratio = log_prior - sample.log_q  # [k, batch]
        bound = iwae_bound(log_likelihood + log_ratio)
        if self.estimator == "dreg":
            surrogate = dreg_from_sample(model, x, sample, log_likelihood, log_ratio, kl_weight)
        elif kl_weight is None:
            surrogate = bound  # reparam, or stl (biased here: Tucker et al. sec. 3)
        else:
            surrogate = iwae_bound(weighted_log_weights(log_likelihood, log_ratio, kl_weight))
        return -surrogate.mean(), bound.detach(), elbo_terms_of(log_likelihood, log_ratio)


def dreg_from_sample(model, x: Tensor, sample, log_likelihood: Tensor, log_ratio: Tensor, kl_weight: Tensor | None) -> Tensor:
    """The DReG surrogate (:func:`dreg_surrogate`) of the log-weights of ``sample`` (drawn with
    log q's parameters stopped): [k, batch] -> [batch]."""
    weight = 1.0 if kl_weight is None else kl_weight
    # The same log-weights once more with the samples detached, for p's gradient.
    fixed_z = [z.detach() for z in sample.zs]
    log_likelihood_fixed_z, log_prior_fixed_z = model.generative_log_probs(x, fixed_z)
    log_w_fixed_z = weighted_log_weights(log_likelihood_fixed_z, log_prior_fixed_z - sample.log_q.detach(), weight)
    log_w = weighted_log_weights(log_likelihood, log_ratio, weight)
    return dreg_surrogate(log_w_fixed_z, log_w, weight)
