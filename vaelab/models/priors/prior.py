"""What a prior p(z_L) over the top stochastic layer is, and the registry of priors.

Every prior is a :class:`Prior`: ``log_prob(z)`` [...] for z [..., d]; ``sample(n, generator)``,
n draws [n, d]; ``kl(q)``, KL(q || p) in closed form for a diagonal-Gaussian posterior where one
exists, else None (then the bounds sample log p(z) - log q(z|x)); and ``icdf(u)``, the quantile
function per coordinate where the prior factorises (for the 2-D manifold picture), else None;
``fixed()``, a context of unchanging parameters (the test-set estimate's chunks). A new prior is one module of this package (or a file of your own, docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from vaelab.probability.distributions import DiagonalGaussian
from vaelab.registry import Registry, part_name, users_part

if TYPE_CHECKING:
    from vaelab.config.schema import PriorConfig

PosteriorOf = Callable[[Tensor], DiagonalGaussian]  # the model's q(z_L | inputs), for the VampPrior


class Prior(nn.Module):
    """The interface of a prior over a ``latent_dim``-dimensional z.

    ``name`` is what ``prior.name`` calls it; :meth:`from_config` builds it. A prior of the user's
    (``prior.name=custom prior.target=...``) or a new built-in one with ``prior.args`` (and an
    optional ``Settings`` dataclass that types them) needs no ``from_config`` of its own.
    """

    name: ClassVar[str]

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    @classmethod
    def from_config(cls, cfg: PriorConfig, latent_dim: int, data_dim: int, posterior_of: PosteriorOf) -> Prior:
        """The prior of ``cfg`` over a ``latent_dim``-dimensional top layer: ``cls(latent_dim, **prior.args)``."""
        return users_part(cls, "prior.args", cfg.args, latent_dim=latent_dim)

    def describe(self) -> str:
        """The prior in a few words, for the console's table of parts."""
        return part_name(self)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z), summed over the last dimension: [...] for z [..., d]."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws, [n, d]; with ``generator`` (a CPU generator) the draws are its own."""
        raise NotImplementedError

    def fixed(self) -> AbstractContextManager:
        """A context in which the parameters do not change and no gradient is taken (the
        test-set estimate's chunks): a prior computed from the model may compute it once."""
        return nullcontext()

    def kl(self, q: DiagonalGaussian) -> Tensor | None:
        """KL(q || p) in closed form, [...]; None where there is none (the bound samples it)."""
        return None

    @property
    def has_closed_form_kl(self) -> bool:
        """Whether the class gives :meth:`kl` a closed form (it overrides it)."""
        return type(self).kl is not Prior.kl

    def kl_per_dimension(self, q: DiagonalGaussian) -> Tensor | None:
        """KL(q || p) in closed form term by term, [..., d], where p factorises over dimensions
        (free bits need it); None where it does not (a mixture's KL does not split by dimension)."""
        return None

    @property
    def has_per_dimension_kl(self) -> bool:
        """Whether the class gives :meth:`kl_per_dimension` a closed form (it overrides it)."""
        return type(self).kl_per_dimension is not Prior.kl_per_dimension

    def icdf(self, u: Tensor) -> Tensor | None:
        """The quantiles of each coordinate's marginal at u in (0, 1), if the prior factorises into
        identical coordinates; else None."""
        return None


PRIORS: Registry[type[Prior]] = Registry("prior.name", "vaelab.models.priors", base=Prior, custom=True)
