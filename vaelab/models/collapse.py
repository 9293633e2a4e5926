"""Posterior-collapse diagnostics of a :class:`~vaelab.models.vae.VAE` on a data split, per epoch.

For each stochastic layer l (z_1 next to x): its KL term (the top layer's analytic where the
prior has a closed form, else sampled log q - log p; below, the sampled log q(z_l|z_{l-1}) -
log p(z_l|z_{l+1})), so that the reconstruction term E_q[log p(x|z_1)] minus their sum is the
one-sample ELBO; its active units, Burda et al.'s (section 5.2) count of units with Cov_x(E_q[u|x])
above a threshold; and I_q(x; z_1), the mutual information of the data and the code next to them
(:mod:`vaelab.probability.mutual_information`). Draws come from a generator of their own, so
that scoring them changes no number of the training run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from vaelab.models.vae import VAE
from vaelab.probability.distributions import DiagonalGaussian
from vaelab.probability.mutual_information import mutual_information

DIAGNOSTIC_SEED = 18  # of the diagnostics' generator, offset by the DDP rank: the same draws every epoch


@dataclass
class BatchDiagnostics:
    """One batch's terms: ``reconstruction`` log p(x|z_1) and ``kl`` per layer, [batch] each, one
    sample z ~ q; ``mutual_information`` of z_1 on this batch (0-dim; None for a flow q(z_1|x));
    ``posterior_means`` E_q[z_l|x] per layer, [batch, latent_l]."""

    reconstruction: Tensor
    kl: list[Tensor]
    mutual_information: Tensor | None
    posterior_means: list[Tensor]


def batch_diagnostics(vae: VAE, x: Tensor, generator: torch.Generator, mean_samples: int = 100) -> BatchDiagnostics:
    """The diagnostics' terms of the batch ``x``, every draw from ``generator`` (z_1..z_L in the
    order :meth:`VAE.sample_latents` draws them, then those of :meth:`VAE.posterior_means`).
    ``mutual_information`` is None where q(z_1|x) is a flow (its density at another x's sample
    would need the flow's inverse)."""
    params = vae.encode(x)
    zs, kl, first = vae.layer_kls(x, generator, params)
    zs, kl = [z[0] for z in zs], [term[0] for term in kl]  # the one draw
    gaussian = isinstance(first, DiagonalGaussian)
    return BatchDiagnostics(
        reconstruction=vae.decoder.log_prob(x, zs[0]),
        kl=kl,
        mutual_information=mutual_information(first.mean, first.log_var, zs[0]) if gaussian else None,
        posterior_means=vae.posterior_means(x, mean_samples, generator, first=params),
    )


class UnitVariances(Metric):
    """Every unit's variance over the examples seen, divisor N, in float64 (Cov_x(E_q[u|x])'s
    diagonal, as :func:`vaelab.evaluation.scores.active_units`): sums of m and m^2 and the count,
    added up across DDP ranks."""

    full_state_update = False

    def __init__(self, units: int):
        super().__init__()
        self.add_state("total", torch.zeros(units, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("squares", torch.zeros(units, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, means: Tensor) -> None:
        means = means.double()
        self.total += means.sum(0)
        self.squares += means.square().sum(0)
        self.count += len(means)

    def compute(self) -> Tensor:
        mean = self.total / self.count
        return (self.squares / self.count - mean.square()).clamp(min=0.0)


class CollapseDiagnostics(nn.Module):
    """The diagnostics' running means over a split, exact across DDP ranks (torchmetrics): the
    metrics ``recon``, ``kl_z{l}``, ``mi_z1`` (weighted by batch size, as He et al.; not with
    ``mutual_information=False``, for a flow q(z_1|x)) and the unit variances behind
    ``active_units_z{l}``, l = 1..L."""

    def __init__(self, latent_dims: list[int], mutual_information: bool = True):
        super().__init__()
        self.reconstruction = MeanMetric()
        self.kl = nn.ModuleList([MeanMetric() for _ in latent_dims])
        self.mutual_information = MeanMetric() if mutual_information else None
        self.variances = nn.ModuleList([UnitVariances(units) for units in latent_dims])

    def update(self, terms: BatchDiagnostics) -> None:
        self.reconstruction.update(terms.reconstruction)
        for metric, kl in zip(self.kl, terms.kl):
            metric.update(kl)
        if self.mutual_information is not None:
            self.mutual_information.update(terms.mutual_information, weight=len(terms.reconstruction))
        for metric, means in zip(self.variances, terms.posterior_means):
            metric.update(means)

    def means(self) -> dict[str, MeanMetric]:
        """The mean metrics by their name, for Lightning to reduce and log at the epoch's end."""
        named = {"recon": self.reconstruction}
        if self.mutual_information is not None:
            named["mi_z1"] = self.mutual_information
        named.update({f"kl_z{layer}": metric for layer, metric in enumerate(self.kl, start=1)})
        return named

    def active_units(self, threshold: float) -> dict[str, int]:
        """``active_units_z{l}``: the units whose variance exceeds ``threshold`` (none where no
        example was seen); then a fresh start."""
        counts = {}
        for layer, metric in enumerate(self.variances, start=1):
            variances = metric.compute() if metric.update_called else None
            if variances is not None and not bool(torch.isnan(variances).any()):
                counts[f"active_units_z{layer}"] = int((variances > threshold).sum())
            metric.reset()
        return counts
