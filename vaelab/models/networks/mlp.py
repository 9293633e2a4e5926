"""Multi-layer perceptron trunks (``net=mlp``): Kingma & Welling's and Burda et al.'s networks."""

from __future__ import annotations

from torch import nn

from vaelab.config.schema import Activation, Init

ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.tanh: nn.Tanh,
    Activation.softplus: nn.Softplus,
    Activation.relu: nn.ReLU,
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
