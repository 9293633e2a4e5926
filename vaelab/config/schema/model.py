"""The settings of the model: ``model.*`` (likelihood, layers, objective and estimator), ``prior.*``,
``posterior.*`` and ``net.*``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from vaelab.config.schema.fields import _help, _require


class Activation(str, Enum):
    tanh = "tanh"
    softplus = "softplus"
    relu = "relu"
    leaky_relu = "leaky_relu"  # slope 0.01 below 0, as Lasagne's leaky_rectify (the Ladder VAE's code)


class Init(str, Enum):
    glorot = "glorot"
    normal = "normal"


class KLMode(str, Enum):
    analytic = "analytic"
    mc = "mc"


class LayerMerge(str, Enum):
    precision = "precision"
    residual = "residual"
    concat = "concat"


class Estimator(str, Enum):
    reparam = "reparam"
    stl = "stl"
    dreg = "dreg"


@dataclass
class StochasticLayerConfig:
    hidden: list[int] = _help("deterministic layer sizes between this stochastic layer and the one below", [100, 100])
    latent_dim: int = _help("dimension of this stochastic layer", 50)

    def __post_init__(self) -> None:
        _require(self.latent_dim >= 1, "model.upper_layers[].latent_dim", self.latent_dim, "an integer >= 1")
        _require(all(h >= 1 for h in self.hidden), "model.upper_layers[].hidden", self.hidden, "layer sizes >= 1")


@dataclass
class ModelConfig:
    decoder: str = _help(
        "likelihood p(x|z); continuous_bernoulli: a density on [0, 1]; logistic: a probability of the 256 levels j/255; "
        "or one of your own as path/file.py:Class (docs/extending.md)",
        "bernoulli", choices="vaelab.models.likelihoods:LIKELIHOODS",
    )
    decoder_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "the settings of a likelihood that declares them (model.decoder=path/file.py:Class)",
                  "lightning": False, "choices": None},
    )
    latent_dim: int = _help("dimension of z (of z_1, the layer next to x, in a hierarchy)", 20)
    hidden: list[int] = _help("hidden layer sizes of the encoder MLP; the decoder mirrors them", [500, 500])
    upper_layers: list[StochasticLayerConfig] = _help(
        "stochastic layers stacked above z_1, e.g. [{hidden: [100, 100], latent_dim: 50}]", []
    )
    activation: Activation = _help("hidden-layer activation", Activation.softplus)
    init: Init = _help("weights: glorot (uniform, Burda et al.) or normal N(0, init_std^2) (Kingma & Welling); biases 0", Init.glorot)
    init_std: float = _help("standard deviation of init=normal", 0.01)
    objective: str = _help(
        "training bound: elbo (K&W eq. 7/10), iwae (Burda et al. eq. 8), vr (Renyi, Li & Turner 2016), "
        "miwae, ciwae, piwae (Rainforth et al. 2018), or one of your own as path/file.py:Class; docs/objectives.md",
        "elbo", choices="vaelab.objectives:OBJECTIVES",
    )
    k: int = _help("samples per example: averaged for elbo, importance-weighted for iwae (per group for miwae, piwae)", 1)
    kl: KLMode = _help("KL term of the elbo objective (iwae always uses log-weights; vr, miwae, ciwae, piwae need mc)", KLMode.analytic)
    estimator: Estimator = _help(
        "gradient estimator: reparam (pathwise), stl (sticking the landing, Roeder et al. 2017; elbo with kl=mc, "
        "iwae, miwae), dreg (doubly reparameterized, Tucker et al. 2019; iwae, miwae)",
        Estimator.reparam,
    )
    alpha: float = _help("vr: the Renyi divergence's order, 0 <= alpha < 1 (0: the iwae bound; towards 1: the elbo)", 0.5)
    m: int = _help("miwae, piwae: the number M of IWAE bounds of k samples each that are averaged", 1)
    ciwae_mix: float = _help("ciwae: c in c * ELBO + (1 - c) * IWAE, 0 <= c <= 1", 0.5)
    objective_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "an objective of your own (model.objective=path/file.py:Class): its settings, as self.args",
                  "lightning": False, "choices": None},
    )
    beta: float = _help(
        "weight of the KL term (of log p(z) - log q(z|x) in the log-weights) in the training loss only; "
        "every reported bound has weight 1",
        1.0,
    )
    free_bits: float = _help(
        "free bits lambda, nats (Kingma et al. 2016, appendix C): the training loss takes sum_j max(lambda, KL_j), "
        "KL_j the batch-mean analytic KL of top-layer dimension j; bounds stay the true ELBO; needs objective=elbo, "
        "kl=analytic, prior=standard; 0: off",
        0.0,
    )
    sigma: float = _help("gaussian decoder: fixed standard deviation of p(x|z)", 0.1)
    var_floor: float = _help("gaussian_learned decoder: lower bound on each pixel's variance", 1e-3)
    sigmoid_mean: bool = _help("gaussian decoders: squash the mean to (0,1) with a sigmoid", False)
    mixtures: int = _help("logistic decoder: components K of each pixel's discretized logistic mixture (1: one logistic)", 1)
    log_scale_floor: float = _help("logistic decoder: lower bound (smooth) on each component's log-scale, data in [0, 1]", -7.0)

    def __post_init__(self) -> None:
        _require(self.latent_dim >= 1, "model.latent_dim", self.latent_dim, "an integer >= 1")
        _require(self.k >= 1, "model.k", self.k, "an integer >= 1")
        _require(all(h >= 1 for h in self.hidden), "model.hidden", self.hidden, "layer sizes >= 1")
        _require(self.sigma > 0, "model.sigma", self.sigma, "a standard deviation > 0")
        _require(self.var_floor > 0, "model.var_floor", self.var_floor, "a variance > 0")
        _require(self.init_std > 0, "model.init_std", self.init_std, "a standard deviation > 0")
        _require(self.beta >= 0 and math.isfinite(self.beta), "model.beta", self.beta, "a finite weight >= 0")
        _require(self.mixtures >= 1, "model.mixtures", self.mixtures, "an integer >= 1")
        _require(math.isfinite(self.log_scale_floor), "model.log_scale_floor", self.log_scale_floor, "a finite number")
        _require(self.free_bits >= 0 and math.isfinite(self.free_bits), "model.free_bits", self.free_bits, "nats >= 0")
        _require(math.isfinite(self.alpha), "model.alpha", self.alpha, "a finite number")
        _require(math.isfinite(self.ciwae_mix), "model.ciwae_mix", self.ciwae_mix, "a finite number")
        from vaelab.objectives import objective_for  # the objective checks its own settings

        objective_for(self)
        self.likelihood  # an unknown likelihood is one line here

    @property
    def likelihood(self) -> type:
        """The likelihood class ``decoder`` names (:mod:`vaelab.models.likelihoods`)."""
        from vaelab.models.likelihoods import LIKELIHOODS

        return LIKELIHOODS[self.decoder]


@dataclass
class PriorConfig:
    """p(z_L), the prior over the top stochastic layer (``prior=`` picks a preset)."""

    name: str = _help(
        "standard: N(0, I); vamp: VampPrior, the mixture of the posteriors of learned pseudo-inputs "
        "(Tomczak & Welling 2018); mog: a mixture of diagonal Gaussians with learned weights, means and "
        "variances; custom: the class prior.target names",
        "standard", choices="vaelab.models.priors:PRIORS",
    )
    components: int = _help("vamp: pseudo-inputs K (Tomczak & Welling use 500); mog: mixture components", 500)
    pseudo_init_mean: float = _help("vamp: pseudo-inputs start as N(mean, std^2) draws (clipped to [0, 1])", 0.05)
    pseudo_init_std: float = _help("vamp: the standard deviation of those draws", 0.01)
    target: Optional[str] = _help(
        "custom: a prior class of your own, as path/to/file.py:ClassName or package.module:ClassName "
        "(docs/extending.md)", None,
    )
    args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "the settings of a prior that declares them (prior.target's class, or a new one)", "lightning": False},
    )

    def __post_init__(self) -> None:
        _require(self.components >= 1, "prior.components", self.components, "an integer >= 1")
        _require(self.pseudo_init_std >= 0, "prior.pseudo_init_std", self.pseudo_init_std, "a standard deviation >= 0")
        from vaelab.models.priors import PRIORS  # the priors are registered where they are defined

        PRIORS.check(self.name, self.target, "prior.target")


@dataclass
class PosteriorConfig:
    """q(z_1|x), the posterior of the layer next to x (``posterior=`` picks a preset); layers above stay Gaussian."""

    name: str = _help(
        "q(z_1|x) (the layers of model.upper_layers stay Gaussian): gaussian: a diagonal Gaussian (Kingma & Welling "
        "eq. 9); planar: planar flow (Rezende & Mohamed 2015), u, w, b of every step from the encoder's features; "
        "iaf: inverse autoregressive flow (Kingma et al. 2016). "
        "A flow's KL is sampled; reconstructions use the flow applied to the base mean; a VampPrior's "
        "components are the flow's base Gaussians q_0(z|u_k); custom: the flow class posterior.target names",
        "gaussian", choices="vaelab.models.posteriors:POSTERIORS",
    )
    flow_length: int = _help("planar, iaf: number of flow steps (posterior=planar sets 10, posterior=iaf 2)", 10)
    iaf_hidden: list[int] = _help("iaf: hidden layer sizes of each step's autoregressive network (MADE)", [320, 320])
    context: int = _help("iaf: size of the context h that the encoder gives every step's network", 100)
    target: Optional[str] = _help(
        "custom: a flow class of your own (a vaelab.models.posteriors.Flow), as path/to/file.py:ClassName (docs/extending.md)", None
    )
    args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "the settings of a posterior that declares them (posterior.target's class, or a new one)", "lightning": False},
    )

    def __post_init__(self) -> None:
        from vaelab.models.posteriors import POSTERIORS  # the posteriors are registered where they are defined

        POSTERIORS.check(self.name, self.target, "posterior.target")
        _require(self.flow_length >= 1, "posterior.flow_length", self.flow_length, "an integer >= 1")
        _require(len(self.iaf_hidden) >= 1 and all(h >= 1 for h in self.iaf_hidden), "posterior.iaf_hidden", self.iaf_hidden, "one or more layer sizes >= 1")
        _require(self.context >= 1, "posterior.context", self.context, "an integer >= 1")


@dataclass
class NetConfig:
    """The networks of the encoder q(z_1|x) and decoder p(x|z_1) (``net=`` picks a preset)."""

    name: str = _help(
        "mlp: hidden layers model.hidden, the decoder mirrored; conv: 4x4 stride-2 convolutions with net.channels "
        "and a dense layer, mirrored by transposed convolutions (after Higgins et al. 2017); custom: the class "
        "net.target names", "mlp", choices="vaelab.models.networks:NETWORKS",
    )
    channels: list[int] = _help("conv: channels of the stride-2 stages (each halves height and width)", [32, 64])
    dense: int = _help("conv: units of the dense layer between the convolutions and z", 256)
    activation: Activation = _help(
        "conv: the trunks' activation, ReLU as in Higgins et al. 2017 (net=mlp uses model.activation)", Activation.relu
    )
    target: Optional[str] = _help("custom: a network class of your own, as path/to/file.py:ClassName (docs/extending.md)", None)
    args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "the settings of a network that declares them (net.target's class, or a new one)", "lightning": False},
    )

    def __post_init__(self) -> None:
        from vaelab.models.networks import NETWORKS  # the networks are registered where they are defined

        NETWORKS.check(self.name, self.target, "net.target")
        _require(len(self.channels) >= 1 and all(c >= 1 for c in self.channels), "net.channels", self.channels, "one or more channel counts >= 1")
        _require(self.dense >= 1, "net.dense", self.dense, "an integer >= 1")


@dataclass
class HierarchyConfig:
    """The order in which q visits the stochastic layers (``hierarchy=`` picks a preset); the
    layers are ``model.latent_dim`` (z_1) and ``model.upper_layers`` either way."""

    name: str = _help(
        "bottomup: q(z_1|x), then q(z_{l+1}|z_l) (Burda et al. 2016); topdown: q(z_L|x), then q(z_l|z_{l+1}, x) "
        "through the generative model's top-down path (Ladder VAE, NVAE, VDVAE; docs/models.md)",
        "bottomup", choices="vaelab.models.hierarchies:HIERARCHIES",
    )
    merge: LayerMerge = _help(
        "topdown: how q(z_l|z_{l+1}, x) combines p(z_l|z_{l+1}) with x's bottom-up features d_l: precision (the "
        "Ladder VAE's precision-weighted Gaussians), residual (NVAE's q = N(mu_p + d_mu, sigma_p d_sigma)), concat "
        "(VDVAE: q's parameters from [d_l, top-down state])", LayerMerge.precision,
    )

    def __post_init__(self) -> None:
        from vaelab.models.hierarchies import HIERARCHIES  # the hierarchies are registered where they are defined

        HIERARCHIES[self.name]
