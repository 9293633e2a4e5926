"""Multi-layer perceptron trunks (``net=mlp``): Kingma & Welling's and Burda et al.'s networks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from vaelab.config.schema import Activation, Init
from vaelab.models.networks.network import NETWORKS, Network
from vaelab.registry import no_args

if TYPE_CHECKING:
    from vaelab.config.schema import ModelConfig, NetConfig

ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.tanh: nn.Tanh,
    Activation.softplus: nn.Softplus,
    Activation.relu: nn.ReLU,
    Activation.leaky_relu: nn.LeakyReLU,
}


def mlp(in_features: int, hidden: list[int], activation: Activation) -> nn.Sequential:
    """Linear layers of the given sizes, each followed by the activation."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), ACTIVATIONS[activation]()]
        in_features = width
    return nn.Sequential(*layers)


class MLPEncoderTrunk(nn.Sequential):
    """x [..., D] -> features [..., width]: the hidden layers of q(z_1|x)."""

    def __init__(self, data_dim: int, hidden: list[int], activation: Activation):
        super().__init__(*mlp(data_dim, hidden, activation))
        self.width = hidden[-1] if hidden else data_dim


class MLPDecoderTrunk(nn.Sequential):
    """z [..., d] -> features [..., width]; ``head()`` maps them to one value per data dimension."""

    def __init__(self, latent_dim: int, hidden: list[int], data_dim: int, activation: Activation):
        super().__init__(*mlp(latent_dim, hidden, activation))
        self.width = hidden[-1] if hidden else latent_dim
        self.data_dim = data_dim

    def head(self) -> nn.Module:
        """A new output layer: features -> [..., D] (one per parameter of the likelihood)."""
        return nn.Linear(self.width, self.data_dim)


@NETWORKS.register
class MLPNetwork(Network):
    """Hidden layers ``model.hidden`` with ``model.activation``; the decoder mirrors them."""

    name = "mlp"

    def __init__(self, hidden: list[int], activation: Activation):
        self.hidden, self.activation = list(hidden), activation

    @classmethod
    def from_config(cls, net: NetConfig, model: ModelConfig) -> Network:
        no_args(net.args, "net.args", "net=mlp")
        return cls(model.hidden, model.activation)

    def encoder(self, image_shape: tuple[int, int, int]) -> nn.Module:
        return MLPEncoderTrunk(image_shape[0] * image_shape[1] * image_shape[2], self.hidden, self.activation)

    def decoder(self, latent_dim: int, image_shape: tuple[int, int, int]) -> nn.Module:
        data_dim = image_shape[0] * image_shape[1] * image_shape[2]
        return MLPDecoderTrunk(latent_dim, list(reversed(self.hidden)), data_dim, self.activation)


def init_weights_(module: nn.Module, init: Init, std: float) -> None:
    """Initialise a linear or convolutional layer's weights (Glorot & Bengio's uniform
    heuristic, as Burda et al. section 5, or N(0, std^2), as Kingma & Welling section 5) and
    zero its bias; other modules (activations, containers, priors' parameters) are left as they are."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        if init is Init.glorot:
            nn.init.xavier_uniform_(module.weight)
        else:
            nn.init.normal_(module.weight, std=std)
        nn.init.zeros_(module.bias)
