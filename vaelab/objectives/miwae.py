"""MIWAE (Rainforth et al. 2018, "Tighter variational bounds are not necessarily better"): the
mean of M IWAE bounds of K samples each (``model.m``, ``model.k``), M*K samples per example. M = 1
is the IWAE bound, K = 1 the M-sample ELBO."""

from __future__ import annotations

from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.objectives.iwae import IWAE
from vaelab.objectives.objective import OBJECTIVES, elbo_terms_of
from vaelab.probability.bounds import in_groups, iwae_bound
from vaelab.probability.estimators import dreg_surrogate, weighted_log_weights
from vaelab.probability.objectives import LatentVariableModel


def miwae_bound(log_weights: Tensor, m: int) -> Tensor:
    """[M*K, batch] -> [batch]: the mean over M groups of K samples of each group's L_K."""
    return iwae_bound(in_groups(log_weights, m)).mean(0)


@OBJECTIVES.register
class MIWAE(IWAE):
    name = "miwae"
    samples_its_kl = True

    def check(self) -> None:
        super().check()
        if self.cfg.m < 1:
            raise ConfigError(f"model.m={self.cfg.m} is invalid: expected an integer >= 1 (the number of IWAE bounds averaged)")
        self.m = self.cfg.m

    @property
    def bound_name(self) -> str:
        return f"miwae{self.m}x{self.k}"

    def warning(self) -> str | None:
        biased = super().warning()
        return biased.replace("the iwae objective", "the miwae objective") if biased else None

    def bound(self, model: LatentVariableModel, x: Tensor) -> Tensor:
        sample = model.sample_latents(x, self.m * self.k)
        log_likelihood, log_prior = model.log_joint(x, sample)
        return miwae_bound(log_likelihood + log_prior - sample.log_q, self.m)

    def loss_bound_and_terms(
        self, model: LatentVariableModel, x: Tensor, kl_weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        sample = model.sample_latents(x, self.m * self.k, stop_q=self.estimator != "reparam")
        log_likelihood, log_prior = model.log_joint(x, sample)
        log_ratio = log_prior - sample.log_q  # [m*k, batch]
        bound = miwae_bound(log_likelihood + log_ratio, self.m)
        weight = 1.0 if kl_weight is None else kl_weight
        if self.estimator == "dreg":
            # DReG of each group's L_K, on the same log-weights with the samples detached for p's gradient.
            fixed_z = [z.detach() for z in sample.zs]
            log_likelihood_fixed_z, log_prior_fixed_z = model.generative_log_probs(x, fixed_z)
            log_w_fixed_z = weighted_log_weights(log_likelihood_fixed_z, log_prior_fixed_z - sample.log_q.detach(), weight)
            log_w = weighted_log_weights(log_likelihood, log_ratio, weight)
            surrogate = dreg_surrogate(in_groups(log_w_fixed_z, self.m), in_groups(log_w, self.m), weight).mean(0)
        elif kl_weight is None:
            surrogate = bound
        else:
            surrogate = miwae_bound(weighted_log_weights(log_likelihood, log_ratio, kl_weight), self.m)
        return -surrogate.mean(), bound.detach(), elbo_terms_of(log_likelihood, log_ratio)
