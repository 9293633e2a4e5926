"""What a likelihood p(x | z_1) is, the registry of likelihoods, and the decoder that holds one.

A likelihood owns its output layers (one ``head()`` of the decoder trunk per parameter map)
and turns the trunk's features into its parameters, ``params(h)``. Given those parameters it
has ``log_prob(x, params)``, the exact log-density summed over the data dimensions (every
constant included), ``mean(params)``, E[x|z], and ``sample(params)``. ``model.decoder`` names
one; a new likelihood is one module of this package, or a file of your own
(``model.decoder=path/file.py:Class model.decoder_args.*``, docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn

from vaelab.registry import Registry, users_part

if TYPE_CHECKING:
    from vaelab.config.schema import ModelConfig

Head = Callable[[], nn.Module]


class Likelihood(nn.Module):
    """p(x | z_1) on the decoder trunk's features; what it is a probability of, the code that
    reports its numbers asks here (never its name)."""

    name: ClassVar[str]
    # A probability of binary data: of grey levels it is a cross-entropy, not a normalised density.
    binary_data: ClassVar[bool] = False
    # A probability of the 256 grey levels j/255 as stored (bits per dimension); binarized data are refused.
    grey_levels: ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: ModelConfig, head: Head) -> Likelihood:
        """The likelihood of the settings: ``cls(head, **model.decoder_args)`` (typed by a ``Settings``
        dataclass where the class declares one)."""
        return users_part(cls, "model.decoder_args", cfg.decoder_args, head=head)

    def params(self, h: Tensor) -> object:
        raise NotImplementedError

    def log_prob(self, x: Tensor, params: object) -> Tensor:
        raise NotImplementedError

    def mean(self, params: object) -> Tensor:
        raise NotImplementedError

    def sample(self, params: object) -> Tensor:
        raise NotImplementedError


def is_discrete(likelihood: type[Likelihood], binary: bool) -> bool:
    """Whether log p(x|z) is the log-probability of the data as stored: a likelihood of the 256
    levels, or one of binary data on binary data (binarized, or binary files). Others are densities."""
    return likelihood.grey_levels or (likelihood.binary_data and binary)


LIKELIHOODS: Registry[type[Likelihood]] = Registry("model.decoder", "vaelab.models.likelihoods", base=Likelihood)


class Decoder(nn.Module):
    """p(x | z_1): a network trunk and a likelihood on its features."""

    def __init__(self, trunk: nn.Module, likelihood: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.likelihood = likelihood

    def params(self, z: Tensor) -> object:
        return self.likelihood.params(self.trunk(z))

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z), [*z.shape[:-1]]."""
        return self.likelihood.log_prob(x, self.params(z))

    def mean(self, z: Tensor) -> Tensor:
        """E[x|z], [*z.shape[:-1], D]."""
        return self.likelihood.mean(self.params(z))

    def sample(self, z: Tensor) -> Tensor:
        return self.likelihood.sample(self.params(z))
