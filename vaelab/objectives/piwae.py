"""PIWAE (Rainforth et al. 2018): the generative model trained on the IWAE bound of all M*K
samples, the inference network on MIWAE(M, K), from the same samples."""

from __future__ import annotations

from torch import Tensor

from vaelab.objectives.miwae import MIWAE, miwae_bound
from vaelab.objectives.objective import OBJECTIVES, elbo_terms_of
from vaelab.probability.bounds import iwae_bound
from vaelab.probability.estimators import weighted_log_weights
from vaelab.probability.objectives import LatentVariableModel


@OBJECTIVES.register
class PIWAE(MIWAE):
    """The bound reported is the generative model's, L_{M*K}. Every parameter that p(x, z) uses
    (the decoder's, the prior's: a VampPrior's encoder too) gets the gradient of L_{M*K} through
    p; every parameter of q gets MIWAE's gradient through z and log q."""

    name = "piwae"
    estimators = ("reparam",)

    @property
    def bound_name(self) -> str:
        return f"piwae{self.m}x{self.k}"

    @property
    def reports_own_bound(self) -> bool:
        return self.m * self.k > 1

    def bound(self, model: LatentVariableModel, x: Tensor) -> Tensor:
        sample = model.sample_latents(x, self.m * self.k)
        log_likelihood, log_prior = model.log_joint(x, sample)
        return iwae_bound(log_likelihood + log_prior - sample.log_q)

    def loss_bound_and_terms(
        self, model: LatentVariableModel, x: Tensor, kl_weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        sample = model.sample_latents(x, self.m * self.k)
        log_likelihood, log_prior = model.log_joint(x, sample)
        log_ratio = log_prior - sample.log_q  # [m*k, batch]
        weight = 1.0 if kl_weight is None else kl_weight
        log_w = weighted_log_weights(log_likelihood, log_ratio, weight)
        # The same log-weights at the samples detached, with log q detached: only p's parameters reach them.
        fixed_z = [z.detach() for z in sample.zs]
        log_likelihood_fixed_z, log_prior_fixed_z = model.generative_log_probs(x, fixed_z)
        log_w_fixed_z = weighted_log_weights(log_likelihood_fixed_z, log_prior_fixed_z - sample.log_q.detach(), weight)
        # p: grad L_{MK}; q: grad MIWAE, whose p-part the fixed-z MIWAE takes away again. Its value is L_{MK}.
        surrogate = iwae_bound(log_w_fixed_z) + miwae_bound(log_w, self.m) - miwae_bound(log_w_fixed_z, self.m)
        bound = iwae_bound(log_likelihood + log_ratio)
        return -surrogate.mean(), bound.detach(), elbo_terms_of(log_likelihood, log_ratio)
