"""The bottom-up hierarchy (``hierarchy=bottomup``, the default): q(z_1|x), then q(z_{l+1}|z_l)
(Burda et al. 2016, section 5), the :class:`~vaelab.models.vae.VAE` itself."""

from __future__ import annotations

from vaelab.models.hierarchies.hierarchy import HIERARCHIES
from vaelab.models.vae import VAE

HIERARCHIES.register(VAE)
