"""The top-down hierarchy (``hierarchy=topdown``): inference shares the generative model's
top-down path, as in the Ladder VAE (Sonderby et al. 2016) and NVAE / VDVAE.

The generative model is the bottom-up hierarchy's, p(z_L) prod_l p(z_l | z_{l+1}) p(x | z_1), on
the same keys (``model.latent_dim``, ``model.upper_layers``). The posterior is
q(z_L | x) prod_l q(z_l | z_{l+1}, x): a deterministic bottom-up pass gives features d_1..d_L of x
(the encoder trunk, then an MLP per layer with that layer's ``hidden`` sizes); then, from the
top, q(z_L | x) is a Gaussian on d_L, and each layer below combines the top-down p(z_l | z_{l+1})
at the sampled z_{l+1} with d_l by ``hierarchy.merge`` (:data:`MERGES`). Every layer's q and p
are diagonal Gaussians, so each layer's KL has a closed form given the layers above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vaelab.errors import ConfigError
from vaelab.models.hierarchies.hierarchy import HIERARCHIES
from vaelab.models.networks import mlp
from vaelab.models.posteriors import GaussianLayer
from vaelab.models.vae import VAE, _width
from vaelab.probability.distributions import DiagonalGaussian
from vaelab.probability.objectives import LatentSample
from vaelab.registry import part_name

if TYPE_CHECKING:
    from vaelab.config.schema import ModelConfig


def precision_weighted(prior: DiagonalGaussian, estimate: DiagonalGaussian) -> DiagonalGaussian:
    """The Ladder VAE's merge (Sonderby et al. 2016, eq. 17-18): sigma_q^2 = 1 / (sigma_p^-2 +
    sigma_d^-2), mu_q = (mu_d sigma_d^-2 + mu_p sigma_p^-2) sigma_q^2, written with log-variances."""
    log_var = -torch.logaddexp(-prior.log_var, -estimate.log_var)
    weight = torch.sigmoid(prior.log_var - estimate.log_var)  # sigma_d^-2 / (sigma_d^-2 + sigma_p^-2)
    return DiagonalGaussian(weight * estimate.mean + (1 - weight) * prior.mean, log_var)


def residual(prior: DiagonalGaussian, delta: DiagonalGaussian) -> DiagonalGaussian:
    """NVAE's residual Normal (Vahdat & Kautz 2020, eq. 2): q = N(mu_p + d_mu, (sigma_p d_sigma)^2),
    ``delta`` holding d_mu and log d_sigma^2."""
    return DiagonalGaussian(prior.mean + delta.mean, prior.log_var + delta.log_var)


@dataclass(frozen=True)
class MergeRule:
    """How q(z_l | z_{l+1}, x) is made from p(z_l | z_{l+1}) and a Gaussian head's output: the head
    reads d_l alone or d_l beside the top-down state (``with_state``), and ``combine`` its output
    with p (None: the head's Gaussian is q itself)."""

    with_state: bool
    combine: Callable[[DiagonalGaussian, DiagonalGaussian], DiagonalGaussian] | None


MERGES = {
    "precision": MergeRule(with_state=False, combine=precision_weighted),  # Ladder VAE
    "residual": MergeRule(with_state=True, combine=residual),  # NVAE
    "concat": MergeRule(with_state=True, combine=None),  # VDVAE: q from [state, activations]
}


@dataclass
class TopDownSample(LatentSample):
    """A :class:`LatentSample` of the top-down posterior, with what the same pass computed:
    ``log_prior`` sum_{l<L} log p(z_l | z_{l+1}) (0.0 where left out) and ``kl`` the closed-form
    sum_{l<L} KL(q(z_l|z_{l+1},x) || p(z_l|z_{l+1})) at the sampled z_{l+1} (0.0 unless left out)."""

    log_prior: Tensor | float = 0.0
    kl: Tensor | float = 0.0


@HIERARCHIES.register
class TopDownVAE(VAE):
    """A VAE whose posterior runs top-down through the generative path (module docstring)."""

    name = "topdown"

    def build_inference(self, trunk: nn.Module, sizes: list[int]) -> None:
        cfg, merge = self.cfg, self.hierarchy_cfg.merge.value
        if self.posterior_cfg.name != "gaussian":
            raise ConfigError(
                f"posterior={self.posterior_cfg.name} is a flow on q(z_1|x); hierarchy=topdown makes every layer's q from "
                "its merge: use posterior=gaussian"
            )
        self.merge = MERGES[merge]
        widths, bottom_up = [trunk.width], [trunk]
        for layer in cfg.upper_layers:
            bottom_up.append(mlp(widths[-1], layer.hidden, cfg.activation))
            widths.append(_width(layer.hidden, widths[-1]))
        self.bottom_up = nn.ModuleList(bottom_up)
        states = [_width(list(reversed(layer.hidden)), above) for layer, above in zip(cfg.upper_layers, sizes[1:])]
        heads = []
        for index, size in enumerate(sizes):
            reads_state = self.merge.with_state and index < len(states)
            heads.append(GaussianLayer(nn.Identity(), widths[index] + (states[index] if reads_state else 0), size))
        self.posterior_heads = nn.ModuleList(heads)

    def check_training(self, cfg: ModelConfig) -> None:
        if cfg.estimator.value != "reparam":
            raise ConfigError(
                f"model.estimator={cfg.estimator.value} needs log q with q's parameters stopped, which hierarchy=topdown "
                "does not build yet: use model.estimator=reparam"
            )
        if cfg.free_bits > 0:
            raise ConfigError(
                "model.free_bits floors the top layer's KL only, and hierarchy=topdown has a KL in every layer: "
                "set model.free_bits=0"
            )

    @property
    def has_closed_form_kl(self) -> bool:
        return self.prior.has_closed_form_kl  # every q and p below the top is a diagonal Gaussian

    @property
    def first_posterior_gaussian(self) -> bool:
        return False  # q(z_1|x) is a mixture over the layers above

    def encode(self, x: Tensor) -> tuple[Tensor, ...]:
        """The bottom-up features d_1..d_L of x, [batch, width_l] each: what every sample of q reuses."""
        features, h = [], x
        for step in self.bottom_up:
            h = step(h)
            features.append(h)
        return tuple(features)

    def top_posterior(self, features: tuple[Tensor, ...]) -> DiagonalGaussian:
        """q(z_L | x) on d_L: [batch, d_L]."""
        return GaussianLayer.distribution(self.posterior_heads[-1](features[-1]))

    def posterior_below(self, index: int, features: tuple[Tensor, ...], z_above: Tensor) -> tuple[DiagonalGaussian, DiagonalGaussian]:
        """p(z_l | z_{l+1}) and q(z_l | z_{l+1}, x) at z_{l+1} = ``z_above`` [..., batch, d_{l+1}], l = index + 1."""
        layer, head = self.generative_layers[index], self.posterior_heads[index]
        state = layer.trunk(z_above)
        prior = DiagonalGaussian(layer.mean(state), layer.log_var(state))
        bottom_up = features[index]
        if self.merge.with_state:
            bottom_up = torch.cat([bottom_up.expand(*state.shape[:-1], bottom_up.shape[-1]), state], dim=-1)
        estimate = GaussianLayer.distribution(head(bottom_up))
        return prior, (estimate if self.merge.combine is None else self.merge.combine(prior, estimate))

    def sample_latents(
        self, x: Tensor, k: int, first: tuple[Tensor, ...] | None = None, stop_q: bool = False, top: bool = True
    ) -> TopDownSample:
        """k joint samples z_L, ..., z_1 of q, top-down, with log q, log p(z_l|z_{l+1}) of the layers
        below the top and, without ``top``, their closed-form KLs in place of both (and log q(z_L|x)
        left out, as for the bottom-up model)."""
        if stop_q:
            raise ConfigError("hierarchy=topdown has no stopped log q yet: use model.estimator=reparam")  # check_training refuses it first
        features = self.encode(x) if first is None else first
        top_q = self.top_posterior(features)
        z, eps = top_q.rsample(k)  # [k, batch, d_L]
        log_q = top_q.log_prob_of_noise(eps) if top else 0.0
        log_prior: Tensor | float = 0.0
        kl: Tensor | float = 0.0
        zs = [z]
        for index in reversed(range(len(self.generative_layers))):
            prior, q = self.posterior_below(index, features, z)
            z, eps = q.rsample()
            if top:
                log_q = log_q + q.log_prob_of_noise(eps)
                log_prior = log_prior + prior.log_prob(z)
            else:
                kl = kl + q.kl(prior)
            zs.insert(0, z)
        return TopDownSample(zs, log_q, top_q, log_prior, kl)

    def log_joint(self, x: Tensor, sample: LatentSample, top: bool = True) -> tuple[Tensor, Tensor | float]:
        log_prior = sample.log_prior + (self.prior.log_prob(sample.zs[-1]) if top else 0.0)
        return self.decoder.log_prob(x, sample.zs[0]), log_prior

    def closed_form_kl(self, sample: LatentSample) -> Tensor:
        return self.prior.kl(sample.top) + sample.kl

    def top_posterior_along_means(self, x: Tensor) -> DiagonalGaussian:
        """q(z_L | x) itself, exactly (a VampPrior's components)."""
        return self.top_posterior(self.encode(x))

    def _descend_means(self, x: Tensor) -> list[Tensor]:
        """z_L, ..., z_1 following q's means down: [batch, d_l] each, z_1 first."""
        features = self.encode(x)
        zs = [self.top_posterior(features).mean]
        for index in reversed(range(len(self.generative_layers))):
            zs.insert(0, self.posterior_below(index, features, zs[0])[1].mean)
        return zs

    def posterior_means(
        self, x: Tensor, samples: int = 100, generator: torch.Generator | None = None, first: tuple[Tensor, ...] | None = None
    ) -> list[Tensor]:
        """E_q[z_l | x] for each layer: z_L's exactly, each layer below averaged over ``samples``
        top-down draws of the layers above (``generator``: those draws are its own)."""
        features = self.encode(x) if first is None else first
        q = self.top_posterior(features)
        expectations = [q.mean]
        z = q.rsample(samples, generator)[0]
        for index in reversed(range(len(self.generative_layers))):
            q = self.posterior_below(index, features, z)[1]
            expectations.insert(0, q.mean.mean(0))
            z = q.rsample(generator=generator)[0]
        return expectations

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at z_1 found by following q's means down from q(z_L|x)'s."""
        return self.decoder.mean(self._descend_means(x)[0])

    def posterior_mean_of_first_layer(self, x: Tensor) -> Tensor:
        """z_1 at the end of q's means followed down (E_q[z_1|x] only where the layers are linear)."""
        return self._descend_means(x)[0]

    def layer_kls(
        self, x: Tensor, generator: torch.Generator, first: tuple[Tensor, ...], draws: int = 1
    ) -> tuple[list[Tensor], list[Tensor], None]:
        """``draws`` top-down draws z_L..z_1 of q (``generator``'s, [draws, batch, d_l]), each
        layer's KL ([draws, batch]) in closed form given the draws above (the top's sampled where
        the prior has none), and None for q(z_1|x), which is not Gaussian."""
        q = self.top_posterior(first)
        z, eps = q.rsample(draws, generator)
        top = self.prior.kl(q) if self.has_closed_form_kl else q.log_prob_of_noise(eps) - self.prior.log_prob(z)
        zs, kls = [z], [top.expand(draws, *x.shape[:-1])]
        for index in reversed(range(len(self.generative_layers))):
            prior, q = self.posterior_below(index, first, zs[0])
            kls.insert(0, q.kl(prior))
            zs.insert(0, q.rsample(generator=generator)[0])
        return zs, kls, None

    def named_parts(self) -> list[tuple[str, nn.Module]]:
        net, sizes = part_name(self.network), self.latent_dims
        parts: list[tuple[str, nn.Module]] = [(f"encoder network ({net}): x -> bottom-up features d1", self.bottom_up[0])]
        for upper in range(1, len(sizes)):
            parts.append((f"bottom-up d{upper} -> d{upper + 1}", self.bottom_up[upper]))
        merge = self.hierarchy_cfg.merge.value
        for index, size in enumerate(sizes):
            given = f"z{index + 2}, x), {merge} merge" if index + 1 < len(sizes) else "x)"
            parts.append((f"stochastic layer z{index + 1} ({size}): q(z{index + 1}|{given}", self.posterior_heads[index]))
            if index + 1 < len(sizes):
                parts.append((f"stochastic layer z{index + 1} ({size}): p(z{index + 1}|z{index + 2})", self.generative_layers[index]))
        return parts + self.generative_parts()
