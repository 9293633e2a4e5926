"""What a network is: the maker of the encoder's and the decoder's trunks, and the registry of networks.

An encoder trunk maps x [..., C*H*W] to features [..., trunk.width]; a decoder trunk maps z_1
[..., d] to features, and its ``head()`` is a new output layer from them to [..., C*H*W] (one per
parameter of the likelihood). A new network is one module of this package, or a file of your own
(``net.name=custom net.target=path/file.py:Class net.args.*``, docs/extending.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import nn

from vaelab.registry import Registry, users_part

if TYPE_CHECKING:
    from vaelab.config.schema import ModelConfig, NetConfig


class Network:
    """Makes the two trunks; ``name`` is what ``net.name`` calls it."""

    name: ClassVar[str]

    @classmethod
    def from_config(cls, net: NetConfig, model: ModelConfig) -> Network:
        """The network of the settings: ``cls(**net.args)`` (typed by a ``Settings`` dataclass where the class has one)."""
        return users_part(cls, "net.args", net.args)

    def encoder(self, image_shape: tuple[int, int, int]) -> nn.Module:
        """x [..., C*H*W] -> features [..., trunk.width]."""
        raise NotImplementedError

    def decoder(self, latent_dim: int, image_shape: tuple[int, int, int]) -> nn.Module:
        """z_1 [..., latent_dim] -> features; ``trunk.head()`` maps them to [..., C*H*W]."""
        raise NotImplementedError


NETWORKS: Registry[type[Network]] = Registry("net.name", "vaelab.models.networks", base=Network, custom=True)
