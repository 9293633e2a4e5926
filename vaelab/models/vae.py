"""The variational autoencoder, with one or more stochastic layers z_1 (next to x) ... z_L.

Generative model: p(z_L) = N(0, I), p(z_l | z_{l+1}) diagonal Gaussians, p(x | z_1) the
decoder. Recognition model: q(z_1 | x), q(z_{l+1} | z_l). With one layer this is Kingma &
Welling's model; with more, Burda et al.'s (section 5). Every bound is per example, in nats.
"""

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from vaelab.config.schema import Estimator, KLMode, ModelConfig, Objective
from vaelab.models.compiled import compiled_log_weights
from vaelab.models.decoders import build_decoder
from vaelab.models.gaussian_layer import GaussianLayer, reparameterize_with_noise
from vaelab.models.mlp import init_linear_
from vaelab.probability.bounds import ImportanceEstimates, estimate_log_likelihood, iwae_bound
from vaelab.probability.estimators import dreg_surrogate, weighted_log_weights
from vaelab.probability.densities import (
    gaussian_log_prob,
    gaussian_log_prob_of_noise,
    kl_to_standard_normal,
    standard_normal_log_prob,
)

Posterior = tuple[Tensor, Tensor]


def _frozen(module: nn.Module) -> Callable[..., tuple[Tensor, Tensor]]:
    """``module``'s forward with its parameters detached: gradients reach its inputs only."""
    parameters = {name: parameter.detach() for name, parameter in module.named_parameters()}
    return lambda *inputs: torch.func.functional_call(module, parameters, inputs)


class VAE(nn.Module):
    """Auto-Encoding Variational Bayes model with a stack of Gaussian stochastic layers."""

    def __init__(self, cfg: ModelConfig, data_dim: int):
        super().__init__()
        self._compiled_log_weights = None  # built once, at the first compiled estimate
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

    def _sample_posterior(
        self, x: Tensor, k: int, first: Posterior | None = None, stop_q: bool = False, top: bool = True
    ) -> tuple[list[Tensor], Tensor | float, Posterior]:
        """k samples of z_1..z_L from q, their log q, and the top layer's q parameters.

        log q comes from the noise of each reparameterized sample (same value and gradient,
        fewer operations). With ``stop_q``, log q is evaluated from the samples with q's
        parameters stopped: its gradient reaches q's parameters only through the samples (the
        path term of Roeder et al. 2017), and still reaches each z_l, also where z_l is the
        input of q(z_{l+1}|z_l). Without ``top``, log q leaves out the top layer's term.
        """
        mean, log_var = self.encoders[0](x) if first is None else first
        z, eps = reparameterize_with_noise(mean, log_var, k)  # [k, batch, latent_1]
        last = len(self.encoders) - 1
        log_q: Tensor | float = 0.0
        if top or last > 0:
            log_q = gaussian_log_prob(z, mean.detach(), log_var.detach()) if stop_q else gaussian_log_prob_of_noise(eps, log_var)
        zs = [z]
        for index, encoder in enumerate(self.encoders[1:], start=1):
            mean, log_var = encoder(z)
            z_next, eps = reparameterize_with_noise(mean, log_var)
            if top or index < last:
                if stop_q:
                    log_q = log_q + gaussian_log_prob(z_next, *_frozen(encoder)(z))
                else:
                    log_q = log_q + gaussian_log_prob_of_noise(eps, log_var)
            z = z_next
            zs.append(z)
        return zs, log_q, (mean, log_var)

    def _generative_log_probs(self, x: Tensor, zs: list[Tensor], top: bool = True) -> tuple[Tensor, Tensor | float]:
        """log p(x|z_1) and log p(z_1..z_L) = log N(z_L; 0, I) + sum_l log p(z_l|z_{l+1});
        without ``top``, the latter leaves out log N(z_L; 0, I)."""
        log_prior = standard_normal_log_prob(zs[-1]) if top else 0.0
        for index, prior in enumerate(self.priors):
            mean, log_var = prior(zs[index + 1])
            log_prior = log_prior + gaussian_log_prob(zs[index], mean, log_var)
        return self.decoder.log_prob(x, zs[0]), log_prior

    def log_weights(self, x: Tensor, k: int, posterior: Posterior | None = None) -> Tensor:
        """log w = log p(x, z_1..z_L) - log q(z_1..z_L | x) for k samples from q: [k, batch].

        ``posterior`` may pass q(z_1|x)'s parameters, computed once for many calls.
        """
        zs, log_q, _ = self._sample_posterior(x, k, posterior)
        log_likelihood, log_prior = self._generative_log_probs(x, zs)
        return log_likelihood + log_prior - log_q

    def _elbo_terms(self, x: Tensor, k: int, kl: KLMode, stop_q: bool = False) -> tuple[Tensor, Tensor]:
        """Per sample, log p(x|z_1) and the latent term whose mean is minus the KL: [k, batch] each.

        ``mc``: log p(z) - log q(z|x). ``analytic``: the same for the layers below the top,
        minus the top layer's KL(q(z_L|.) || N(0, I)) in closed form (Kingma & Welling eq. 10).
        """
        analytic = kl is KLMode.analytic
        zs, log_q, (top_mean, top_log_var) = self._sample_posterior(x, k, None, stop_q, top=not analytic)
        log_likelihood, log_prior = self._generative_log_probs(x, zs, top=not analytic)
        if not analytic:
            return log_likelihood, log_prior - log_q
        # One layer: the KL is [batch] and broadcasts over the samples (the other terms are 0).
        return log_likelihood, log_prior - log_q - kl_to_standard_normal(top_mean, top_log_var)

    def elbo(self, x: Tensor, k: int, kl: KLMode) -> Tensor:
        """SGVB estimate of the ELBO averaged over k samples: [batch].

        ``mc``: mean_k log w (Kingma & Welling eq. 7). ``analytic``: the top layer's
        KL(q(z_L|.) || N(0, I)) in closed form, the other terms sampled; with one layer this
        is mean_k log p(x|z) - KL(q(z|x) || p(z)) (eq. 10).
        """
        log_likelihood, log_ratio = self._elbo_terms(x, k, kl)
        return (log_likelihood + log_ratio).mean(0)

    def iwae(self, x: Tensor, k: int) -> Tensor:
        """Importance-weighted bound with k samples (Burda et al. eq. 8): [batch]."""
        return iwae_bound(self.log_weights(x, k))

    def training_loss(self, x: Tensor, kl_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The loss to minimise, and the true bound per example: (scalar, [batch]).

        The loss is minus the batch mean of the configured bound (``objective``, ``k``,
        ``kl``) with log p(z) - log q(z|x) weighted by ``kl_weight`` (a 0-dim tensor; None is
        weight 1), and its gradient is the configured ``estimator``'s
        (vaelab.probability.estimators). The bound is the same bound with weight 1, from the
        same samples, detached; with weight 1 and ``reparam`` or ``stl`` it is the loss's own.
        """
        cfg = self.cfg
        stop_q = cfg.estimator is not Estimator.reparam
        if cfg.objective is Objective.elbo:
            log_likelihood, log_ratio = self._elbo_terms(x, cfg.k, cfg.kl, stop_q)  # [k, batch] each
            bound = (log_likelihood + log_ratio).mean(0)
            if kl_weight is not None:
                surrogate = weighted_log_weights(log_likelihood, log_ratio, kl_weight).mean(0)
                return -surrogate.mean(), bound.detach()
            return -bound.mean(), bound.detach()
        zs, log_q, _ = self._sample_posterior(x, cfg.k, None, stop_q)
        log_likelihood, log_prior = self._generative_log_probs(x, zs)
        log_ratio = log_prior - log_q  # [k, batch]
        bound = iwae_bound(log_likelihood + log_ratio)
        if cfg.estimator is Estimator.dreg:
            # The same log-weights once more with the samples detached, for p's gradient.
            weight = 1.0 if kl_weight is None else kl_weight
            log_likelihood_fixed_z, log_prior_fixed_z = self._generative_log_probs(x, [z.detach() for z in zs])
            log_w_fixed_z = weighted_log_weights(log_likelihood_fixed_z, log_prior_fixed_z - log_q.detach(), weight)
            log_w = weighted_log_weights(log_likelihood, log_ratio, weight)
            return -dreg_surrogate(log_w_fixed_z, log_w, weight).mean(), bound.detach()
        # reparam, or stl (biased here: Tucker et al. sec. 3)
        if kl_weight is not None:
            return -iwae_bound(weighted_log_weights(log_likelihood, log_ratio, kl_weight)).mean(), bound.detach()
        return -bound.mean(), bound.detach()

    def estimate_log_likelihood(
        self, x: Tensor, samples: int, chunk_size: int, iwae_k: Iterable[int] = (), compiled: bool = False
    ) -> ImportanceEstimates:
        """Importance-sampled log p(x) (L_S), ELBO and L_k of each k from one stream of samples
        of q, drawn ``chunk_size`` at a time: see :class:`ImportanceEstimates`. ``compiled``:
        the log-weights under ``torch.compile`` (:mod:`vaelab.models.compiled`), same samples."""
        first = self.encoders[0](x)  # q(z_1|x), computed once for every chunk
        if compiled and self._compiled_log_weights is None:
            self._compiled_log_weights = compiled_log_weights(self)
        log_weights = self._compiled_log_weights if compiled else self.log_weights
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
