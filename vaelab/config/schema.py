"""Typed schema of a vaelab run.

OmegaConf checks types against these dataclasses while a config is composed (an unknown
key or a string where a number belongs fails there); ``__post_init__`` checks ranges when
the composed config is turned into these objects. Each ``help`` string is shown by
``python -m vaelab.fit --help``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from vaelab.errors import ConfigError


class DecoderKind(str, Enum):
    bernoulli = "bernoulli"
    gaussian = "gaussian"
    gaussian_learned = "gaussian_learned"
    continuous_bernoulli = "continuous_bernoulli"
    logistic = "logistic"


class PriorKind(str, Enum):
    standard = "standard"
    vamp = "vamp"
    mog = "mog"
    custom = "custom"


class PosteriorKind(str, Enum):
    gaussian = "gaussian"
    planar = "planar"
    iaf = "iaf"


class NetKind(str, Enum):
    mlp = "mlp"
    conv = "conv"


class Activation(str, Enum):
    tanh = "tanh"
    softplus = "softplus"
    relu = "relu"


class Init(str, Enum):
    glorot = "glorot"
    normal = "normal"


class KLMode(str, Enum):
    analytic = "analytic"
    mc = "mc"


class Estimator(str, Enum):
    reparam = "reparam"
    stl = "stl"
    dreg = "dreg"


class OptimizerKind(str, Enum):
    adam = "adam"
    adagrad = "adagrad"
    sgd = "sgd"


class LRSchedule(str, Enum):
    constant = "constant"
    burda = "burda"


class DatasetKind(str, Enum):
    mnist = "mnist"
    frey = "frey"
    binarized_mnist = "binarized_mnist"
    omniglot = "omniglot"
    caltech_silhouettes = "caltech_silhouettes"
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"


# Datasets whose files hold 0/1 already: nothing to binarize.
BINARY_DATASETS = (DatasetKind.binarized_mnist, DatasetKind.caltech_silhouettes)
# Datasets of continuous colour levels: nothing to binarize either.
COLOUR_DATASETS = (DatasetKind.cifar10,)


class Binarize(str, Enum):
    none = "none"
    dynamic = "dynamic"
    static = "static"


class AcceleratorKind(str, Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"
    cuda = "cuda"
    mps = "mps"


class LoggerKind(str, Enum):
    csv = "csv"
    wandb = "wandb"


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


def _require(condition: bool, key: str, value: object, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value} is invalid: expected {expected}")


def _help(text: str, default: object, lightning: bool = False, choices: str | None = None) -> object:
    """A dataclass field with a default and a help string for ``--help``; ``lightning``
    marks a ``trainer.*`` key that goes unchanged to ``pl.Trainer``'s argument of that name;
    ``choices`` names the registry (``module:attribute``) whose parts are the key's values."""
    metadata = {"help": text, "lightning": lightning, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class StochasticLayerConfig:
    hidden: list[int] = _help("deterministic layer sizes between this stochastic layer and the one below", [100, 100])
    latent_dim: int = _help("dimension of this stochastic layer", 50)

    def __post_init__(self) -> None:
        _require(self.latent_dim >= 1, "model.upper_layers[].latent_dim", self.latent_dim, "an integer >= 1")
        _require(all(h >= 1 for h in self.hidden), "model.upper_layers[].hidden", self.hidden, "layer sizes >= 1")


@dataclass
class ModelConfig:
    decoder: DecoderKind = _help(
        "likelihood p(x|z); continuous_bernoulli: a density on [0, 1]; logistic: a probability of the 256 levels j/255",
        DecoderKind.bernoulli,
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


@dataclass
class PriorConfig:
    """p(z_L), the prior over the top stochastic layer (``prior=`` picks a preset)."""

    name: PriorKind = _help(
        "standard: N(0, I); vamp: VampPrior, the mixture of the posteriors of learned pseudo-inputs "
        "(Tomczak & Welling 2018); mog: a mixture of diagonal Gaussians with learned weights, means and "
        "variances; custom: the class prior.target names",
        PriorKind.standard,
    )
    components: int = _help("vamp: pseudo-inputs K (Tomczak & Welling use 500); mog: mixture components", 500)
    pseudo_init_mean: float = _help("vamp: pseudo-inputs start as N(mean, std^2) draws (clipped to [0, 1])", 0.05)
    pseudo_init_std: float = _help("vamp: the standard deviation of those draws", 0.01)
    target: Optional[str] = _help(
        "custom: a prior class of your own, as path/to/file.py:ClassName or package.module:ClassName "
        "(docs/extending.md)", None,
    )
    args: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "custom: keyword arguments of prior.target's class", "lightning": False}
    )

    def __post_init__(self) -> None:
        _require(self.components >= 1, "prior.components", self.components, "an integer >= 1")
        _require(self.pseudo_init_std >= 0, "prior.pseudo_init_std", self.pseudo_init_std, "a standard deviation >= 0")
        if self.name is PriorKind.custom:
            _require(bool(self.target), "prior.target", self.target, "path/to/file.py:ClassName with prior.name=custom")
        else:
            _require(self.target is None, "prior.target", self.target, f"null unless prior.name=custom (it is {self.name.value})")


@dataclass
class PosteriorConfig:
    """q(z_1|x), the posterior of the layer next to x (``posterior=`` picks a preset); layers above stay Gaussian."""

    name: PosteriorKind = _help(
        "q(z_1|x) (the layers of model.upper_layers stay Gaussian): gaussian: a diagonal Gaussian (Kingma & Welling "
        "eq. 9); planar: planar flow (Rezende & Mohamed 2015), u, w, b of every step from the encoder's features; "
        "iaf: inverse autoregressive flow (Kingma et al. 2016). "
        "A flow's KL is sampled; reconstructions use the flow applied to the base mean; a VampPrior's "
        "components are the flow's base Gaussians q_0(z|u_k)",
        PosteriorKind.gaussian,
    )
    flow_length: int = _help("planar, iaf: number of flow steps (posterior=planar sets 10, posterior=iaf 2)", 10)
    iaf_hidden: list[int] = _help("iaf: hidden layer sizes of each step's autoregressive network (MADE)", [320, 320])
    context: int = _help("iaf: size of the context h that the encoder gives every step's network", 100)

    def __post_init__(self) -> None:
        _require(self.flow_length >= 1, "posterior.flow_length", self.flow_length, "an integer >= 1")
        _require(len(self.iaf_hidden) >= 1 and all(h >= 1 for h in self.iaf_hidden), "posterior.iaf_hidden", self.iaf_hidden, "one or more layer sizes >= 1")
        _require(self.context >= 1, "posterior.context", self.context, "an integer >= 1")

    @property
    def is_flow(self) -> bool:
        return self.name is not PosteriorKind.gaussian


@dataclass
class NetConfig:
    """The networks of the encoder q(z_1|x) and decoder p(x|z_1) (``net=`` picks a preset)."""

    name: NetKind = _help(
        "mlp: hidden layers model.hidden, the decoder mirrored; conv: 4x4 stride-2 convolutions with net.channels "
        "and a dense layer, mirrored by transposed convolutions (after Higgins et al. 2017)",
        NetKind.mlp,
    )
    channels: list[int] = _help("conv: channels of the stride-2 stages (each halves height and width)", [32, 64])
    dense: int = _help("conv: units of the dense layer between the convolutions and z", 256)
    activation: Activation = _help(
        "conv: the trunks' activation, ReLU as in Higgins et al. 2017 (net=mlp uses model.activation)", Activation.relu
    )

    def __post_init__(self) -> None:
        _require(len(self.channels) >= 1 and all(c >= 1 for c in self.channels), "net.channels", self.channels, "one or more channel counts >= 1")
        _require(self.dense >= 1, "net.dense", self.dense, "an integer >= 1")


@dataclass
class OptimConfig:
    name: OptimizerKind = _help("optimizer (torch.optim)", OptimizerKind.adam)
    lr: float = _help("learning rate", 1e-3)
    weight_decay: float = _help("L2 penalty (as in torch.optim)", 0.0)
    betas: list[float] = _help("Adam's decay rates of the moment estimates", [0.9, 0.999])
    eps: float = _help("Adam's epsilon", 1e-8)
    kl_warmup_epochs: float = _help(
        "the KL weight rises linearly from 0 to model.beta over this many epochs, updated every step (0: off)", 0.0
    )
    kl_cycles: int = _help(
        "cyclical KL annealing (Fu et al. 2019): M cycles over the run's steps, in each the KL weight rises "
        "linearly from 0 to model.beta, then stays there; updated every step (0: off; not with kl_warmup_epochs)", 0,
    )
    kl_cycle_ratio: float = _help("R of cyclical KL annealing: the fraction of each cycle spent rising", 0.5)
    schedule: LRSchedule = _help(
        "constant, or burda: lr * 10^(-i/7) for 3^i epochs, i = 0..7 (Burda et al. section 5; 3280 epochs)",
        LRSchedule.constant,
    )

    def __post_init__(self) -> None:
        _require(self.lr > 0, "optim.lr", self.lr, "a learning rate > 0")
        _require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a value >= 0")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas", self.betas, "two values in [0, 1)")
        _require(self.eps > 0, "optim.eps", self.eps, "a value > 0")
        warmup = self.kl_warmup_epochs
        _require(warmup >= 0 and math.isfinite(warmup), "optim.kl_warmup_epochs", warmup, "a number of epochs >= 0")
        _require(self.kl_cycles >= 0, "optim.kl_cycles", self.kl_cycles, "an integer >= 0")
        _require(0 < self.kl_cycle_ratio <= 1, "optim.kl_cycle_ratio", self.kl_cycle_ratio, "a fraction in (0, 1]")
        if self.kl_cycles > 0 and warmup > 0:
            raise ConfigError(
                "optim.kl_cycles and optim.kl_warmup_epochs are two schedules of the KL weight: set one of them to 0"
            )


@dataclass
class DataConfig:
    name: DatasetKind = _help(
        "dataset: mnist (60000/10000, LeCun et al.); frey (1965 faces, seeded split); binarized_mnist "
        "(Larochelle & Murray 2011's fixed binarization, 50000/10000/10000); omniglot (Burda et al. 2016's "
        "28x28, 24345/8070, validation carved from train); caltech_silhouettes (Marlin et al. 2010, split 1, "
        "4100/2264/2307); fashion_mnist (Xiao et al. 2017, 60000/10000 1x28x28 grey); cifar10 (Krizhevsky "
        "2009, 50000/10000 3x32x32 colour, binarize=none). Splits and sources: docs/data.md",
        DatasetKind.mnist,
    )
    root: str = _help(
        "folder holding the datasets' folders: MNIST/raw/, FreyFaces/, BinarizedMNIST/, Omniglot/, "
        "CaltechSilhouettes/, FashionMNIST/raw/, cifar-10-batches-py/ (env VAELAB_DATA_DIR)", "data",
    )
    download: bool = _help("download missing files when a network is reachable", True)
    batch_size: int = _help("training minibatch size per device", 100)
    val_size: int = _help(
        "examples carved from the training set for validation (configs/data/: 5000; frey 200; omniglot 1345); "
        "binarized_mnist and caltech_silhouettes validate on their official split: its size, or 0 for none", 5000,
    )
    test_size: Optional[int] = _help("frey only: examples held out for test (the others have their own test set)", None)
    binarize: Binarize = _help(
        "dynamic: a fresh draw each batch; static: one seeded draw, NOT the standard fixed binarization of "
        "the literature (that is data=binarized_mnist); none for binary datasets and cifar10", Binarize.dynamic,
    )
    split_seed: int = _help("seed of the validation/test split and of static binarization", 0)

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, "data.batch_size", self.batch_size, "an integer >= 1")
        _require(self.val_size >= 0, "data.val_size", self.val_size, "an integer >= 0")
        if self.name is DatasetKind.frey:
            _require(
                self.binarize is Binarize.none, "data.binarize", self.binarize.value,
                "none for frey (continuous grey levels)",
            )
            _require(
                self.test_size is not None and self.test_size >= 1, "data.test_size", self.test_size,
                "an integer >= 1 for frey",
            )
        else:
            _require(
                self.test_size is None, "data.test_size", self.test_size,
                f"null for {self.name.value} (it has its own test set)",
            )
        if self.name in BINARY_DATASETS:
            _require(
                self.binarize is Binarize.none, "data.binarize", self.binarize.value,
                f"none for {self.name.value} (its files are binary already)",
            )
        if self.name in COLOUR_DATASETS:
            _require(
                self.binarize is Binarize.none, "data.binarize", self.binarize.value,
                f"none for {self.name.value} (continuous colour levels)",
            )

    @property
    def binary(self) -> bool:
        """Whether the model sees 0/1 pixels: a binary dataset, or one binarized."""
        return self.name in BINARY_DATASETS or self.binarize is not Binarize.none


@dataclass
class TrainerConfig:
    """Keys marked ``lightning=True`` are passed to ``pl.Trainer`` as they are (a new
    Trainer option needs only a field here and a line in configs/trainer/*.yaml); the
    others are vaelab's training loop's own."""

    max_epochs: int = _help("number of training epochs", 50, lightning=True)
    accelerator: AcceleratorKind = _help("Lightning accelerator (auto: a GPU if there is one)", AcceleratorKind.auto, lightning=True)
    devices: int = _help("devices (GPUs or CPU processes) per node; -1: every GPU", 1, lightning=True)
    num_nodes: int = _help("number of nodes", 1, lightning=True)
    strategy: str = _help("Lightning strategy: auto, ddp, ...", "auto", lightning=True)
    precision: str = _help("Lightning precision, e.g. 32-true or bf16-mixed", "32-true", lightning=True)
    limit_val_batches: Optional[int] = _help(
        "validate on at most this many batches (null: all; 0: no validation)", None, lightning=True
    )
    limit_test_batches: Optional[int] = _help("test on at most this many batches (null: all)", None, lightning=True)
    gradient_clip_val: Optional[float] = _help("clip gradient norm to this value (null: off)", None)
    limit_train_batches: Optional[int] = _help("train on at most this many minibatches per epoch (null: all)", None)
    log_every_n_steps: int = _help("log the training bound every n optimizer steps", 50)
    progress_bar: bool = _help(
        "true: a bar of the epoch's optimizer steps when stdout is a terminal; either way one line "
        "per epoch (and only those, without carriage returns, in files and pipes); false: the lines only", True,
    )
    steps_per_call: int = _help(
        "optimizer steps per Lightning training_step call: Lightning's per-call work is shared by them; "
        "the numbers do not depend on it", 50,
    )
    compile: Optional[bool] = _help(
        "torch.compile the bound and its gradient (CUDA: as a CUDA graph); null: when the run is long "
        "enough to repay the compile time", None,
    )
    deterministic: bool = _help(
        "torch.use_deterministic_algorithms: needed for bitwise-equal runs and resumes on CUDA", False, lightning=True,
    )
    checkpoint_every_n_steps: Optional[int] = _help(
        "also write last.ckpt within an epoch every n optimizer steps (rounded up to whole calls; null: off)", None
    )
    checkpoint_every_minutes: Optional[float] = _help(
        "also write last.ckpt within an epoch every this many minutes of training (null: off); "
        "a kill loses at most this much work", 10.0,
    )

    early_stop_patience: Optional[int] = _help(
        "stop when val/elbo has not improved for this many epochs (Lightning's EarlyStopping; null: off; "
        "needs data.val_size > 0)", None,
    )

    def __post_init__(self) -> None:
        _require(self.max_epochs >= 1, "trainer.max_epochs", self.max_epochs, "an integer >= 1")
        _require(self.devices >= 1 or self.devices == -1, "trainer.devices", self.devices, "an integer >= 1, or -1")
        _require(self.num_nodes >= 1, "trainer.num_nodes", self.num_nodes, "an integer >= 1")
        _require(self.log_every_n_steps >= 1, "trainer.log_every_n_steps", self.log_every_n_steps, "an integer >= 1")
        _require(self.steps_per_call >= 1, "trainer.steps_per_call", self.steps_per_call, "an integer >= 1")
        every_n, minutes = self.checkpoint_every_n_steps, self.checkpoint_every_minutes
        _require(every_n is None or every_n >= 1, "trainer.checkpoint_every_n_steps", every_n, "null or an integer >= 1")
        _require(minutes is None or minutes > 0, "trainer.checkpoint_every_minutes", minutes, "null or a number > 0")
        for key in ("limit_train_batches", "limit_test_batches", "early_stop_patience"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"trainer.{key}", value, "null or an integer >= 1")
        val = self.limit_val_batches
        _require(val is None or val >= 0, "trainer.limit_val_batches", val, "null or an integer >= 0")
        clip = self.gradient_clip_val
        _require(clip is None or clip > 0, "trainer.gradient_clip_val", clip, "null or a value > 0")


@dataclass
class LoggerConfig:
    name: LoggerKind = _help("csv: metrics.csv; wandb: metrics.csv and Weights & Biases", LoggerKind.csv)
    project: str = _help("W&B project", "vaelab")
    entity: Optional[str] = _help("W&B entity (team or user); null: your default", None)
    mode: WandbMode = _help("W&B mode (the environment variable WANDB_MODE wins)", WandbMode.offline)


@dataclass
class EvalConfig:
    ll_samples: int = _help("importance samples per test image for log p(x) (Burda et al. use 5000)", 5000)
    chunk_size: int = _help("importance samples evaluated at once; bounds memory", 50)
    compile: Optional[bool] = _help(
        "torch.compile the log-weights of the importance-sampled estimates (same samples); "
        "null: on the CPU from 2*10^7 samples in all (images x ll_samples)", None
    )
    batch_size: int = _help("test images evaluated at once", 100)
    num_images: int = _help("images in the sample and reconstruction grids", 64)
    iwae_k: list[int] = _help(
        "vaelab.evaluate: report the IWAE bound L_k for each k (Burda et al. eq. 8), from groups of k samples", [1, 5, 50]
    )
    active_threshold: float = _help(
        "vaelab.evaluate: a latent unit is active if Cov_x(E_q[u|x]) exceeds this (Burda et al. section 5.2)", 0.01
    )
    posterior_mean_samples: int = _help(
        "vaelab.evaluate: samples of the layers below averaged for E_q[z_l|x] of layers l >= 2", 100
    )
    device: Optional[str] = _help("vaelab.evaluate: cpu, cuda, cuda:N or mps; null: from trainer.accelerator", None)
    interpolation_pairs: int = _help("vaelab.evaluate: pairs of test images interpolated, one row each", 8)
    interpolation_steps: int = _help("vaelab.evaluate: decoded points on each interpolation path, ends included", 10)
    manifold_size: int = _help("vaelab.evaluate: 2-D top latent: the learned manifold is an n x n grid", 20)
    ais_steps: int = _help(
        "vaelab.evaluate: annealed importance sampling (Wu et al. 2017) of log p(x), a stochastic lower bound, "
        "with this many intermediate distributions (sigmoid schedule); 0: off", 0
    )
    ais_chains: int = _help("vaelab.evaluate: AIS chains per image, started from the prior", 16)
    ais_leapfrog: int = _help("vaelab.evaluate: leapfrog steps per HMC transition of AIS", 10)
    ais_step_size: float = _help("vaelab.evaluate: initial HMC step size, adapted per chain toward acceptance 0.65", 0.05)
    ais_images: int = _help("vaelab.evaluate: AIS scores the first n of the evaluated test images", 100)
    bdmc_images: int = _help(
        "vaelab.evaluate: BDMC (Grosse et al. 2015) on n images simulated from the model, with the AIS settings: "
        "AIS's lower and reverse AIS's upper bound of their log p(x); 0: off", 0
    )

    track_test: bool = _help(
        "also score the test set's ELBO after every epoch (metric curve/test_elbo), for learning curves", False
    )
    collapse_diagnostics: bool = _help(
        "posterior-collapse diagnostics after every epoch on validation (docs/diagnostics.md): KL per stochastic "
        "layer, the reconstruction term, active units per layer, I_q(x; z_1); from their own seeded draws", False,
    )
    diagnostic_batches: Optional[int] = _help(
        "collapse diagnostics on the first n validation batches (null: all)", None
    )

    def __post_init__(self) -> None:
        _require(self.ll_samples >= 1, "eval.ll_samples", self.ll_samples, "an integer >= 1")
        _require(self.chunk_size >= 1, "eval.chunk_size", self.chunk_size, "an integer >= 1")
        _require(self.batch_size >= 1, "eval.batch_size", self.batch_size, "an integer >= 1")
        _require(self.num_images >= 1, "eval.num_images", self.num_images, "an integer >= 1")
        _require(all(k >= 1 for k in self.iwae_k), "eval.iwae_k", self.iwae_k, "a list of integers >= 1")
        _require(self.active_threshold >= 0, "eval.active_threshold", self.active_threshold, "a variance >= 0")
        _require(
            self.posterior_mean_samples >= 1, "eval.posterior_mean_samples", self.posterior_mean_samples, "an integer >= 1"
        )
        _require(
            self.device in (None, "cpu", "cuda", "mps") or (self.device.startswith("cuda:") and self.device[5:].isdigit()),
            "eval.device", self.device, "cpu, cuda, cuda:N, mps or null",
        )
        _require(self.interpolation_pairs >= 1, "eval.interpolation_pairs", self.interpolation_pairs, "an integer >= 1")
        _require(self.interpolation_steps >= 2, "eval.interpolation_steps", self.interpolation_steps, "an integer >= 2")
        _require(self.manifold_size >= 2, "eval.manifold_size", self.manifold_size, "an integer >= 2")
        _require(self.ais_steps >= 0, "eval.ais_steps", self.ais_steps, "an integer >= 0 (0: no AIS)")
        _require(self.ais_chains >= 1, "eval.ais_chains", self.ais_chains, "an integer >= 1")
        _require(self.ais_leapfrog >= 1, "eval.ais_leapfrog", self.ais_leapfrog, "an integer >= 1")
        _require(self.ais_step_size > 0, "eval.ais_step_size", self.ais_step_size, "a step size > 0")
        _require(self.ais_images >= 1, "eval.ais_images", self.ais_images, "an integer >= 1")
        _require(self.bdmc_images >= 0, "eval.bdmc_images", self.bdmc_images, "an integer >= 0 (0: no BDMC)")
        _require(
            self.bdmc_images == 0 or self.ais_steps >= 1, "eval.bdmc_images", self.bdmc_images,
            "0 unless eval.ais_steps >= 1 (BDMC anneals with the AIS settings)",
        )
        batches = self.diagnostic_batches
        _require(batches is None or batches >= 1, "eval.diagnostic_batches", batches, "null or an integer >= 1")


@dataclass
class RunConfig:
    dir: Optional[str] = _help("run directory (null: runs/<data>-<model>/<timestamp>)", None)
    resume: Optional[str] = _help("checkpoint file or run directory to continue", None)


@dataclass
class FitConfig:
    seed: int = _help("seed of initialisation, shuffling and sampling", 0)
    model: ModelConfig = field(default_factory=ModelConfig)
    posterior: PosteriorConfig = field(default_factory=PosteriorConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    net: NetConfig = field(default_factory=NetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.model.decoder is DecoderKind.logistic and self.data.binarize is not Binarize.none:
            raise ConfigError(
                f"model=logistic is a probability of the 256 grey levels but data.binarize={self.data.binarize.value}; "
                "add data.binarize=none"
            )
