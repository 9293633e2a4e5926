"""Networks: the deterministic trunks of the encoder q(z_1|x) and the decoder p(x|z_1), one module each.

A trunk maps its input to features; the stochastic layer (a posterior, or a likelihood) adds
its own output layers (:mod:`.network` says what a network is). The layers between stochastic
layers of a hierarchy are always MLPs (they map vectors).
"""

from __future__ import annotations

from vaelab.models.networks.conv import ConvNetwork
from vaelab.models.networks.mlp import MLPNetwork, init_weights_, mlp
from vaelab.models.networks.network import NETWORKS, Network

__all__ = ["NETWORKS", "ConvNetwork", "MLPNetwork", "Network", "build_network", "init_weights_", "mlp"]


def build_network(net, model) -> Network:
    """The network ``net.name`` names (or with ``net.name=custom``, ``net.target``)."""
    return NETWORKS.chosen(net.name, net.target, "net.target").from_config(net, model)
