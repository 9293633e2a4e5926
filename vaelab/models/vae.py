"""The variational autoencoder, with one or more stochastic layers z_1 (next to x) ... z_L.

Generative model: p(z_L) = N(0, I), p(z_l | z_{l+1}) diagonal Gaussians, p(x | z_1) the
decoder. Recognition model: q(z_1 | x), q(z_{l+1} | z_l). With one layer this is Kingma &
Welling's model; with more, Burda et al.'s (section 5). Every bound is per example, in nats.
"""

from typing import Iterable

from torch import Tensor, nn

from vaelab.config.schema import KLMode, ModelConfig, Objective
from vaelab.models.compiled import compiled_log_weights
from vaelab.models.decoders import build_decoder
from vaelab.models.gaussian_layer import GaussianLayer, reparameterize
from vaelab.models.mlp import init_linear_
from vaelab.probability.bounds import ImportanceEstimates, estimate_log_likelihood, iwae_bound
from vaelab.probability.densities import (
    gaussian_log_prob,
    kl_to_standard_normal,
    standard_normal_log_prob,
)

Posterior = tuple[Tensor, Tensor]


class VAE(nn.Module):
    """Auto-Encoding Variational Bayes model with a stack of Gaussian stochastic layers."""

    def __init__(self, cfg: ModelConfig, data_dim: int):
        super().__init__()
        self.cfg = cfg
        hidden = [cfg.hidden] + [layer.hidden for layer in cfg.upper_layers]
        sizes = [data_dim, cfg.latent_dim] + [layer.latent_dim for layer in cfg.upper_layers]
        # q(z_1|x), q(z_2|z_1), ...; p(z_1|z_2), ... mirror them, and the decoder p(x|z_1).
        self.encoders = nn.ModuleList(
            GaussianLayer(sizes[i], hidden[i], sizes[i + 1], cfg.activation) for i in range(len(hidden))
        )
        self.priors = nn.ModuleList(
            GaussianLayer(sizes[i + 1], list(reversed(hidden[i])), sizes[i], cfg.activation)
            for i in range(1, len(hidden))
        )
        self.decoder = build_decoder(cfg, data_dim)
        self.apply(lambda module: init_linear_(module, cfg.init, cfg.init_std))

    @property
    def top_latent_dim(self) -> int:
        """Dimension of z_L, the layer whose prior is N(0, I)."""
        return self.encoders[-1].mean.out_features

    def _sample_posterior(self, x: Tensor, k: int, first: Posterior | None) -> tuple[list[Tensor], Tensor, Posterior]:
        """k samples of z_1..z_L from q, their log q, and the top layer's q parameters."""
        mean, log_var = self.encoders[0](x) if first is None else first
        z = reparameterize(mean, log_var, k)
        zs, log_q = [z], gaussian_log_prob(z, mean, log_var)
        for encoder in self.encoders[1:]:
            mean, log_var = encoder(z)
            z = reparameterize(mean, log_var)
            zs.append(z)
            log_q = log_q + gaussian_log_prob(z, mean, log_var)
        return zs, log_q, (mean, log_var)

    def _log_joint_below_top(self, x: Tensor, zs: list[Tensor]) -> Tensor:
        """log p(x|z_1) + sum_l log p(z_l|z_{l+1}): every generative term but log p(z_L)."""
        log_p = self.decoder.log_prob(x, zs[0])
        for index, prior in enumerate(self.priors):
            mean, log_var = prior(zs[index + 1])
            log_p = log_p + gaussian_log_prob(zs[index], mean, log_var)
        return log_p

    def log_weights(self, x: Tensor, k: int, posterior: Posterior | None = None) -> Tensor:
        """log w = log p(x, z_1..z_L) - log q(z_1..z_L | x) for k samples from q: [k, batch].

        ``posterior`` may pass q(z_1|x)'s parameters, computed once for many calls.
        """
        zs, log_q, _ = self._sample_posterior(x, k, posterior)
        return self._log_joint_below_top(x, zs) + standard_normal_log_prob(zs[-1]) - log_q

    def elbo(self, x: Tensor, k: int, kl: KLMode) -> Tensor:
        """SGVB estimate of the ELBO averaged over k samples: [batch].

        ``mc``: mean_k log w (Kingma & Welling eq. 7). ``analytic``: the top layer's
        KL(q(z_L|.) || N(0, I)) in closed form, the other terms sampled; with one layer this
        is mean_k log p(x|z) - KL(q(z|x) || p(z)) (eq. 10).
        """
        if kl is KLMode.mc:
            return self.log_weights(x, k).mean(0)
        zs, log_q, (top_mean, top_log_var) = self._sample_posterior(x, k, None)
        log_q_below_top = log_q - gaussian_log_prob(zs[-1], top_mean, top_log_var)
        top_kl = kl_to_standard_normal(top_mean, top_log_var)
        if top_kl.dim() < log_q.dim():  # one layer: q(z_1|x) has no sample dimension
            top_kl = top_kl.unsqueeze(0)
        return (self._log_joint_below_top(x, zs) - log_q_below_top - top_kl).mean(0)

    def iwae(self, x: Tensor, k: int) -> Tensor:
        """Importance-weighted bound with k samples (Burda et al. eq. 8): [batch]."""
        return iwae_bound(self.log_weights(x, k))

    def training_bound(self, x: Tensor) -> Tensor:
        """The bound the configured objective maximises: [batch]."""
        if self.cfg.objective is Objective.iwae:
            return self.iwae(x, self.cfg.k)
        return self.elbo(x, self.cfg.k, self.cfg.kl)

    def estimate_log_likelihood(
        self, x: Tensor, samples: int, chunk_size: int, iwae_k: Iterable[int] = (), compiled: bool = False
    ) -> ImportanceEstimates:
        """Importance-sampled log p(x) (L_S), ELBO and L_k of each k from one stream of samples
        of q, drawn ``chunk_size`` at a time: see :class:`ImportanceEstimates`. ``compiled``:
        the log-weights under ``torch.compile`` (:mod:`vaelab.models.compiled`), same samples."""
        first = self.encoders[0](x)  # q(z_1|x), computed once for every chunk
        log_weights = compiled_log_weights(self) if compiled else self.log_weights
        return estimate_log_likelihood(lambda n: log_weights(x, n, first), samples, chunk_size, iwae_k)

    def posterior_means(self, x: Tensor) -> list[Tensor]:
        """E_q[z_l] of each layer, following the means upwards: [batch, latent_l] each."""
        means, h = [], x
        for encoder in self.encoders:
            h = encoder(h)[0]
            means.append(h)
        return means

    def decode_from_top(self, z_top: Tensor) -> Tensor:
        """E[x | z_L] along the generative means: z_L -> mean of p(z_{L-1}|z_L) -> ... -> x."""
        z = z_top
        for prior in reversed(self.priors):
            z = prior(z)[0]
        return self.decoder.mean(z)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the posterior mean of z_1, E[x | z_1 = mu_1(x)]."""
        return self.decoder.mean(self.encoders[0](x)[0])
