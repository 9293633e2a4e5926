"""Multi-layer perceptron trunks shared by encoders and decoders."""

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


def init_linear_(module: nn.Module, init: Init, std: float) -> None:
    """Initialise a Linear layer's weights (Glorot & Bengio's uniform heuristic, as Burda et
    al. section 5, or N(0, std^2), as Kingma & Welling section 5) and zero its bias; other
    modules are left as they are."""
    if isinstance(module, nn.Linear):
        if init is Init.glorot:
            nn.init.xavier_uniform_(module.weight)
        else:
            nn.init.normal_(module.weight, std=std)
        nn.init.zeros_(module.bias)
