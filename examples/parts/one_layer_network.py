"""A network of your own: one hidden layer of ``width`` ReLU units each way. ``configs/net/one_layer.yaml`` picks it."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from vaelab.models.networks import Network


class DecoderTrunk(nn.Sequential):
    def __init__(self, latent_dim: int, width: int, data_dim: int):
        super().__init__(nn.Linear(latent_dim, width), nn.ReLU())
        self.width, self.data_dim = width, data_dim

    def head(self) -> nn.Module:
        return nn.Linear(self.width, self.data_dim)


class OneLayerNetwork(Network):
    name = "one_layer"

    @dataclass
    class Settings:
        width: int = 64

    def __init__(self, width: int = 64):
        self.width = width

    def encoder(self, image_shape: tuple[int, int, int]) -> nn.Module:
        trunk = nn.Sequential(nn.Linear(image_shape[0] * image_shape[1] * image_shape[2], self.width), nn.ReLU())
        trunk.width = self.width
        return trunk

    def decoder(self, latent_dim: int, image_shape: tuple[int, int, int]) -> nn.Module:
        return DecoderTrunk(latent_dim, self.width, image_shape[0] * image_shape[1] * image_shape[2])
