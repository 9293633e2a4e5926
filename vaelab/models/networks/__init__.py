"""Networks: the deterministic trunks of the encoder q(z_1|x) and the decoder p(x|z_1).

A trunk maps its input to features; the stochastic layer (a posterior, or a likelihood) adds
its own output layers. An encoder trunk has ``width``, the size of its features; a decoder
trunk has ``head()``, a new output layer from its features to one value per data dimension.
The layers between stochastic layers of a hierarchy are always MLPs (they map vectors).
"""

from __future__ import annotations

from torch import nn

from vaelab.config.schema import ModelConfig, NetConfig, NetKind
from vaelab.models.networks.conv import ConvDecoderTrunk, ConvEncoderTrunk
from vaelab.models.networks.mlp import MLPDecoderTrunk, MLPEncoderTrunk, init_weights_, mlp

__all__ = ["decoder_trunk", "encoder_trunk", "init_weights_", "mlp"]


def encoder_trunk(net: NetConfig, model: ModelConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    """x [..., C*H*W] -> features [..., trunk.width]."""
    data_dim = image_shape[0] * image_shape[1] * image_shape[2]
    if net.name is NetKind.conv:
        return ConvEncoderTrunk(image_shape, net.channels, net.dense, net.activation)
    if net.name is NetKind.mlp:
        return MLPEncoderTrunk(data_dim, model.hidden, model.activation)
    raise NotImplementedError(f"net.name={net.name.value} has no branch in encoder_trunk")


def decoder_trunk(net: NetConfig, model: ModelConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    """z_1 [..., d] -> features, which each ``trunk.head()`` maps to [..., C*H*W]; the MLP
    decoder mirrors the encoder's hidden layers."""
    data_dim = image_shape[0] * image_shape[1] * image_shape[2]
    if net.name is NetKind.conv:
        return ConvDecoderTrunk(model.latent_dim, image_shape, net.channels, net.dense, net.activation)
    if net.name is NetKind.mlp:
        return MLPDecoderTrunk(model.latent_dim, list(reversed(model.hidden)), data_dim, model.activation)
    raise NotImplementedError(f"net.name={net.name.value} has no branch in decoder_trunk")
