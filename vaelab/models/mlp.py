"""Multi-layer perceptron trunks shared by encoders and decoders."""

from torch import nn

from vaelab.config.schema import Activation

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


def glorot_init_(module: nn.Module) -> None:
    """Glorot & Bengio (2010) uniform weights and zero biases for a Linear layer, the
    initialisation Burda et al. (section 5) use; other modules are left as they are."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
