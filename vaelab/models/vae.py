"""The variational autoencoder, assembled from parts: a prior, posteriors, a likelihood, networks.

Generative model: p(z_L) the prior (:mod:`vaelab.models.priors`), p(z_l | z_{l+1}) diagonal
Gaussians, p(x | z_1) the decoder (a network trunk and a likelihood,
:mod:`vaelab.models.likelihoods`). Recognition model: q(z_1 | x) on the encoder network, then
q(z_{l+1} | z_l) (:mod:`vaelab.models.posteriors`); q(z_1 | x) may be a normalizing flow
(:mod:`vaelab.models.posteriors.flow`, ``posterior=planar|iaf``), the layers above stay Gaussian. With one layer and N(0, I) this is Kingma
& Welling's model; with more, Burda et al.'s (section 5). The bounds built from these members
are in :mod:`vaelab.probability.objectives`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaelab.config.schema import HierarchyConfig, ModelConfig, NetConfig, PosteriorConfig, PriorConfig
from vaelab.models.likelihoods import Decoder
from vaelab.models.networks import build_network, init_weights_, mlp
from vaelab.models.posteriors import POSTERIORS, GaussianLayer, GaussianParams
from vaelab.models.priors import PRIORS, Prior, StandardNormalPrior
from vaelab.probability.distributions import DiagonalGaussian
from vaelab.probability.objectives import LatentSample
from vaelab.registry import part_name


def image_shape_of(data_shape: int | tuple[int, ...]) -> tuple[int, int, int]:
    """channels x height x width of the data: D alone is 1 x 1 x D, (H, W) is one channel."""
    if isinstance(data_shape, int):
        return (1, 1, data_shape)
    shape = tuple(int(n) for n in data_shape)
    return (1, *shape) if len(shape) == 2 else shape  # type: ignore[return-value]


class VAE(nn.Module):
    """Auto-Encoding Variational Bayes model with a stack of Gaussian stochastic layers, inferred
    bottom-up (``hierarchy=bottomup``); :mod:`vaelab.models.hierarchies` has the other orders.

    ``data_shape``: D, (H, W) or (C, H, W); data reach the model flat, [..., C*H*W].
    """

    name = "bottomup"

    def __init__(
        self, cfg: ModelConfig, data_shape: int | tuple[int, ...], prior: PriorConfig | None = None,
        net: NetConfig | None = None, posterior: PosteriorConfig | None = None, hierarchy: HierarchyConfig | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.prior_cfg = prior or PriorConfig()
        self.net_cfg = net or NetConfig()
        self.posterior_cfg = posterior or PosteriorConfig()
        self.hierarchy_cfg = hierarchy or HierarchyConfig()
        self.image_shape = image_shape_of(data_shape)
        self.data_dim = math.prod(self.image_shape)
        self.network = build_network(self.net_cfg, cfg)  # not a module: it makes the trunks and names them
        trunk = self.network.encoder(self.image_shape)
        self.latent_dims = sizes = [cfg.latent_dim] + [layer.latent_dim for layer in cfg.upper_layers]  # z_1 .. z_L
        self.build_inference(trunk, sizes)
        # p(z_1|z_2), ... mirror the upper layers' networks, and the decoder p(x|z_1).
        generative = []
        for below, layer in enumerate(cfg.upper_layers):
            hidden = list(reversed(layer.hidden))
            generative.append(GaussianLayer(mlp(sizes[below + 1], hidden, cfg.activation), _width(hidden, sizes[below + 1]), sizes[below]))
        self.generative_layers = nn.ModuleList(generative)
        trunk = self.network.decoder(cfg.latent_dim, self.image_shape)
        self.decoder = Decoder(trunk, cfg.likelihood.from_config(cfg, trunk.head))
        self.apply(lambda module: init_weights_(module, cfg.init, cfg.init_std))
        # the prior last, so its own initial draws leave the networks' initialisation as it is
        self.prior = build_prior(self.prior_cfg, self.top_latent_dim, self.data_dim, self.top_posterior_along_means)

    def build_inference(self, trunk: nn.Module, sizes: list[int]) -> None:
        """q's layers on the encoder trunk: q(z_1|x), then q(z_{l+1}|z_l) (Burda et al. section 5)."""
        cfg = self.cfg
        encoders = [build_posterior(self.posterior_cfg, cfg, trunk)]
        for below, (layer, above) in enumerate(zip(cfg.upper_layers, sizes[1:])):
            encoders.append(GaussianLayer(mlp(sizes[below], layer.hidden, cfg.activation), _width(layer.hidden, sizes[below]), above))
        self.encoders = nn.ModuleList(encoders)

    def check_training(self, cfg: ModelConfig) -> None:
        """Raise a one-line ConfigError for a training setting this hierarchy cannot take."""

    @property
    def top_latent_dim(self) -> int:
        """Dimension of z_L, the layer whose distribution is the prior."""
        return self.latent_dims[-1]

    @property
    def first_posterior_gaussian(self) -> bool:
        """Whether q(z_1|x) is a diagonal Gaussian (not a flow, nor a mixture over layers above)."""
        return self.encoders[0].gaussian

    def encode(self, x: Tensor) -> GaussianParams:
        """The parameters of q(z_1|x), for many calls of :meth:`log_weights` on the same x."""
        return self.encoders[0](x)

    def sample_latents(
        self, x: Tensor, k: int, first: GaussianParams | None = None, stop_q: bool = False, top: bool = True
    ) -> LatentSample:
        """k joint samples of z_1..z_L from q, the sum of their log q, and q(z_L|.).

        log q comes from the noise of each reparameterized sample (same value and gradient,
        fewer operations). With ``stop_q``, log q is evaluated from the samples with q's
        parameters stopped: its gradient reaches q's parameters only through the samples (the
        path term of Roeder et al. 2017), and still reaches each z_l, also where z_l is the
        input of q(z_{l+1}|z_l). Without ``top``, log q leaves out the top layer's term.
        """
        q = self.encoders[0].distribution(self.encode(x) if first is None else first)
        z, eps = q.rsample(k)  # [k, batch, latent_1]
        last = len(self.encoders) - 1
        log_q: Tensor | float = 0.0
        if top or last > 0:
            log_q = q.stopped_log_prob(z, eps) if stop_q else q.log_prob_of_noise(eps)
        zs = [z]
        for index, encoder in enumerate(self.encoders[1:], start=1):
            q = encoder.distribution(encoder(z))
            z_next, eps = q.rsample()
            if top or index < last:
                log_q = log_q + (encoder.frozen(z).log_prob(z_next) if stop_q else q.log_prob_of_noise(eps))
            z = z_next
            zs.append(z)
        return LatentSample(zs, log_q, q)

    def generative_log_probs(self, x: Tensor, zs: list[Tensor], top: bool = True) -> tuple[Tensor, Tensor | float]:
        """log p(x|z_1) and log p(z_1..z_L) = log p(z_L) + sum_l log p(z_l|z_{l+1}); without
        ``top``, the latter leaves out the prior's log p(z_L)."""
        log_prior = self.prior.log_prob(zs[-1]) if top else 0.0
        for index, layer in enumerate(self.generative_layers):
            log_prior = log_prior + layer.distribution(layer(zs[index + 1])).log_prob(zs[index])
        return self.decoder.log_prob(x, zs[0]), log_prior

    def log_weights(self, x: Tensor, k: int, first: GaussianParams | None = None) -> Tensor:
        """log w = log p(x, z_1..z_L) - log q(z_1..z_L | x) for k samples from q: [k, batch].

        ``first`` may pass q(z_1|x)'s parameters, computed once for many calls.
        """
        sample = self.sample_latents(x, k, first)
        log_likelihood, log_prior = self.log_joint(x, sample)
        return log_likelihood + log_prior - sample.log_q

    def log_joint(self, x: Tensor, sample: LatentSample, top: bool = True) -> tuple[Tensor, Tensor | float]:
        """:meth:`generative_log_probs` of a sample of :meth:`sample_latents` (a model whose
        sampling pass computes p(z)'s parameters reuses them)."""
        return self.generative_log_probs(x, sample.zs, top)

    def closed_form_kl(self, sample: LatentSample) -> Tensor:
        """The closed-form KL of the layers that ``sample_latents(top=False)`` left out: here the
        top layer's, KL(q(z_L|.) || p(z_L)), [batch]."""
        return self.prior.kl(sample.top)

    @property
    def has_closed_form_kl(self) -> bool:
        """Whether KL(q(z_L|.) || p(z_L)) has a closed form: the prior has one and q(z_L|.) is
        Gaussian (a flow posterior on a single layer is not)."""
        return self.prior.has_closed_form_kl and (len(self.encoders) > 1 or self.encoders[0].gaussian)

    def top_posterior_along_means(self, x: Tensor) -> DiagonalGaussian:
        """q(z_L | z_{L-1}) at z_{L-1} = mu_{L-1}(... mu_1(x)), the encoders' mean path; q(z_1|x) for
        one layer. With a flow posterior mu_1 is the flow of the base mean, and for one layer
        this is the flow's base Gaussian q_0(z_1|x), whose density is exact (the VampPrior's components)."""
        params = self.encoders[0](x)
        if len(self.encoders) == 1:
            return self.encoders[0].base(params)
        params = self.encoders[1](self.encoders[0].distribution(params).mean)
        for encoder in self.encoders[2:]:
            params = encoder(params[0])
        return GaussianLayer.distribution(params)

    def posterior_means(
        self, x: Tensor, samples: int = 100, generator: torch.Generator | None = None, first: GaussianParams | None = None
    ) -> list[Tensor]:
        """E_q[z_l | x] for each stochastic layer l: [batch, latent_l] each.

        z_1: the encoder's mean, exactly (a flow posterior: the flow applied to the base mean,
        :class:`~vaelab.models.posteriors.flow.FlowDistribution`). Above: E_{q(z_{l-1}|x)}[mu_l(z_{l-1})], averaged over
        ``samples`` joint draws of the layers below (following the means upwards instead,
        mu_l(mu_{l-1}(...)), is exact only for linear encoders). ``generator``: those draws are its own;
        ``first``: q(z_1|x)'s parameters, if computed already.
        """
        q = self.encoders[0].distribution(self.encoders[0](x) if first is None else first)
        expectations = [q.mean]
        if len(self.encoders) > 1:
            z = q.rsample(samples, generator)[0]
            for encoder in self.encoders[1:]:
                q = encoder.distribution(encoder(z))
                expectations.append(q.mean.mean(0))
                z = q.rsample(generator=generator)[0]
        return expectations

    def decode(self, z_top: Tensor) -> Tensor:
        """E[x | z_L] along the generative means: z_L -> mean of p(z_{L-1}|z_L) -> ... -> x."""
        z = z_top
        for layer in reversed(self.generative_layers):
            z = layer(z)[0]
        return self.decoder.mean(z)

    def layer_kls(
        self, x: Tensor, generator: torch.Generator, first: GaussianParams, draws: int = 1
    ) -> tuple[list[Tensor], list[Tensor], object]:
        """``draws`` joint draws z_1..z_L of q (``generator``'s, [draws, batch, d_l] each), each
        layer's KL term at them ([draws, batch]: log q - log p sampled below the top, the top's in
        closed form where it has one) and q(z_1|x) (``first``: its parameters) for the mutual information."""
        q = first_q = self.encoders[0].distribution(first)
        z, noise = q.rsample(draws, generator)
        zs, log_qs = [z], [q.log_prob_of_noise(noise)]
        for encoder in self.encoders[1:]:
            q = encoder.distribution(encoder(zs[-1]))
            z, eps = q.rsample(generator=generator)
            zs.append(z)
            log_qs.append(q.log_prob_of_noise(eps))
        kl = []
        for index, layer in enumerate(self.generative_layers):
            kl.append(log_qs[index] - layer.distribution(layer(zs[index + 1])).log_prob(zs[index]))
        top = self.prior.kl(q) if self.has_closed_form_kl else log_qs[-1] - self.prior.log_prob(zs[-1])
        return zs, [*kl, top.expand(draws, *x.shape[:-1])], first_q

    def named_parts(self) -> list[tuple[str, nn.Module | nn.Parameter]]:
        """(what it is, its module) for each part, in the console's order; a parameter held by two
        parts counts in the first."""
        net, first = part_name(self.network), self.encoders[0]
        parts: list[tuple[str, nn.Module | nn.Parameter]] = [
            (f"encoder network ({net}): x -> features of q(z1|x)", first.trunk),
            (f"stochastic layer z1 ({first.out_features}): mean and log-variance of q(z1|x)", nn.ModuleList([first.mean, first.log_var])),
        ]
        flow = getattr(first, "flow", None)
        if flow is not None:
            parts.append((f"posterior flow ({flow.describe()}) on z1", flow))
        for upper in range(1, len(self.encoders)):
            size = self.latent_dims[upper]
            parts.append((f"stochastic layer z{upper + 1} ({size}): q(z{upper + 1}|z{upper})", self.encoders[upper]))
            parts.append((f"stochastic layer z{upper + 1} ({size}): p(z{upper}|z{upper + 1})", self.generative_layers[upper - 1]))
        return parts + self.generative_parts()

    def generative_parts(self) -> list[tuple[str, nn.Module]]:
        """The decoder's parts and the prior, for :meth:`named_parts`."""
        net = part_name(self.network)
        return [
            (f"decoder network ({net}): z1 -> features of p(x|z1)", self.decoder.trunk),
            (f"likelihood ({part_name(self.decoder.likelihood)}): output layers of p(x|z1)", self.decoder.likelihood),
            (f"prior: {self.prior.describe()}", self.prior),
        ]

    def posterior_mean_of_first_layer(self, x: Tensor) -> Tensor:
        """E_q[z_1|x] (a flow: its base mean's image): [batch, latent_1]."""
        return self.encoders[0].distribution(self.encoders[0](x)).mean

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the posterior mean of z_1, E[x | z_1 = E_q[z_1|x]] (a flow: its base mean's image)."""
        return self.decoder.mean(self.posterior_mean_of_first_layer(x))

    @torch.no_grad()
    def sample_at_temperatures(self, n: int, temperatures: list[float], generator: torch.Generator | None = None) -> Tensor:
        """Decoder means of n ancestral draws of the generative model, each layer's standard
        deviation times its temperature (``temperatures``: z_1 first; NVAE's and VDVAE's per-layer
        temperature): [n, C*H*W]. The top layer's temperature scales an N(0, I) prior's draws;
        other priors are drawn as they are. ``generator`` (CPU): the draws are its own."""
        parameter = next(self.parameters())
        z = self.prior.sample(n, generator)
        if isinstance(self.prior, StandardNormalPrior):
            z = temperatures[-1] * z
        z = z.to(parameter)
        for index in reversed(range(len(self.generative_layers))):
            mean, log_var = self.generative_layers[index](z)
            eps = torch.randn(mean.shape, generator=generator).to(parameter)
            z = mean + temperatures[index] * torch.exp(0.5 * log_var) * eps
        return self.decoder.mean(z)

    @torch.no_grad()
    def reconstruct_from_top_layers(self, x: Tensor, kept: int, seed: int = 0) -> Tensor:
        """Decoder means where the top ``kept`` layers are one draw of q(z|x) (seeded: the global
        RNG is left as it was) and each layer below the mean of p(z_l | z_{l+1}): what the top
        layers encode. [batch, C*H*W]."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            zs = self.sample_latents(x, 1).zs
        z = zs[-kept][0]
        for index in reversed(range(len(self.latent_dims) - kept)):
            z = self.generative_layers[index](z)[0]
        return self.decoder.mean(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decoder means E[x | z_L] of n draws of the prior: [n, C*H*W]."""
        parameter = next(self.parameters())
        return self.decode(self.prior.sample(n, generator).to(parameter.device, parameter.dtype))


def _width(hidden: list[int], in_features: int) -> int:
    return hidden[-1] if hidden else in_features


def build_posterior(cfg: PosteriorConfig, model: ModelConfig, trunk: nn.Module) -> GaussianLayer:
    """q(z_1|x) on the encoder trunk: the posterior ``posterior.name`` names (or with ``posterior.name=custom``, a flow ``posterior.target`` names)."""
    return POSTERIORS.chosen(cfg.name, cfg.target, "posterior.target").posterior(cfg, model, trunk)


def build_prior(cfg: PriorConfig, latent_dim: int, data_dim: int, posterior_of) -> Prior:
    """The prior ``prior.name`` names (or with ``prior.name=custom``, ``prior.target``) over a ``latent_dim``-dimensional top layer."""
    return PRIORS.chosen(cfg.name, cfg.target, "prior.target").from_config(cfg, latent_dim, data_dim, posterior_of)
