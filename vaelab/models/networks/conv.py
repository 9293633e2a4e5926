"""Convolutional trunks (``net=conv``) for images of any channels x height x width.

Architecture after Higgins et al. 2017 (beta-VAE, appendix A, their 64x64 networks) with as
many stride-2 stages as ``net.channels`` has entries, which suits 28-pixel images with two:
encoder: conv 4x4 stride 2 (padding 1) per stage, the activation after each, flattened, one
dense layer of ``net.dense`` units; decoder: the mirror image, dense layers up to the last
stage's feature map, 4x4 stride-2 transposed convolutions, the last of which is the
likelihood's head (one per parameter map), cropped to the image. Data stay flat outside the
network ([..., C*H*W]); the trunks reshape, keeping any leading sample dimensions.
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING

from torch import Tensor, nn

from vaelab.config.schema import Activation
from vaelab.errors import ConfigError
from vaelab.models.networks.mlp import ACTIVATIONS
from vaelab.models.networks.network import NETWORKS, Network
from vaelab.registry import no_args

if TYPE_CHECKING:
    from vaelab.config.schema import ModelConfig, NetConfig

KERNEL, STRIDE, PADDING = 4, 2, 1  # each stage halves the height and width (rounded down)


def _images(x: Tensor, shape: tuple[int, int, int]) -> tuple[Tensor, tuple[int, ...]]:
    """[..., C*H*W] -> [N, C, H, W] and the leading dimensions, to put back afterwards."""
    leading = x.shape[:-1]
    return x.reshape(-1, *shape), leading


class ConvEncoderTrunk(nn.Module):
    """x [..., C*H*W] -> features [..., net.dense]."""

    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], dense: int, activation: Activation):
        super().__init__()
        self.image_shape = image_shape
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        c, h, w = image_shape
        for out in channels:
            layers += [nn.Conv2d(c, out, KERNEL, STRIDE, PADDING), act()]
            c, h, w = out, (h + 2 * PADDING - KERNEL) // STRIDE + 1, (w + 2 * PADDING - KERNEL) // STRIDE + 1
        if h < 1 or w < 1:
            raise ConfigError(
                f"net.channels={channels} is invalid: {len(channels)} stride-2 stages shrink a {image_shape[1]}x{image_shape[2]} "
                "image to nothing; use fewer stages"
            )
        self.convs = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.Linear(c * h * w, dense), act())
        self.width = dense

    def forward(self, x: Tensor) -> Tensor:
        images, leading = _images(x, self.image_shape)
        features = self.convs(images).flatten(1)  # [N, c*h*w]
        return self.dense(features).reshape(*leading, self.width)


class ConvHead(nn.Module):
    """The decoder's last transposed convolution: one parameter map per call of ``head()``,
    cropped to the image and flattened: [..., C*H*W]."""

    def __init__(self, in_channels: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, image_shape[0], KERNEL, STRIDE, PADDING)
        self.image_shape = image_shape

    def forward(self, features: Tensor) -> Tensor:
        maps, leading = features  # maps: [N, c, h, w] from the trunk
        c, h, w = self.image_shape
        out = self.deconv(maps)[:, :, :h, :w]
        return out.reshape(*leading, c * h * w)


class ConvDecoderTrunk(nn.Module):
    """z [..., d] -> (feature maps [N, c, h, w], leading dimensions), for :class:`ConvHead`."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], channels: list[int], dense: int, activation: Activation):
        super().__init__()
        self.image_shape = image_shape
        act = ACTIVATIONS[activation]
        stages = len(channels)
        # the first map is small enough that the stride-2 stages cover the image; the head crops
        self.start = (channels[-1], math.ceil(image_shape[1] / 2**stages), math.ceil(image_shape[2] / 2**stages))
        self.dense = nn.Sequential(nn.Linear(latent_dim, dense), act(), nn.Linear(dense, math.prod(self.start)), act())
        layers: list[nn.Module] = []
        reversed_channels = list(reversed(channels))
        for c_in, c_out in zip(reversed_channels, reversed_channels[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, KERNEL, STRIDE, PADDING), act()]
        self.deconvs = nn.Sequential(*layers)
        self.out_channels = channels[0]

    def forward(self, z: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        leading = z.shape[:-1]
        maps = self.dense(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        return self.deconvs(maps), leading

    def head(self) -> nn.Module:
        return ConvHead(self.out_channels, self.image_shape)


@NETWORKS.register
class ConvNetwork(Network):
    """Stride-2 stages of ``net.channels``, a dense layer of ``net.dense`` units, ``net.activation``."""

    name = "conv"

    def __init__(self, channels: list[int], dense: int, activation: Activation):
        self.channels, self.dense, self.activation = list(channels), dense, activation

    @classmethod
    def from_config(cls, net: NetConfig, model: ModelConfig) -> Network:
        no_args(net.args, "net.args", "net=conv")
        return cls(net.channels, net.dense, net.activation)

    def encoder(self, image_shape: tuple[int, int, int]) -> nn.Module:
        return ConvEncoderTrunk(image_shape, self.channels, self.dense, self.activation)

    def decoder(self, latent_dim: int, image_shape: tuple[int, int, int]) -> nn.Module:
        return ConvDecoderTrunk(latent_dim, image_shape, self.channels, self.dense, self.activation)
