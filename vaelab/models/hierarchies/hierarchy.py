"""What a hierarchy is: the order in which the posterior visits the stochastic layers. A hierarchy
is a :class:`~vaelab.models.vae.VAE` (its generative model, p(z_L) prod_l p(z_l|z_{l+1}) p(x|z_1),
on ``model.latent_dim`` and ``model.upper_layers``) with its own inference; ``hierarchy.name``
picks one from :data:`HIERARCHIES`."""

from __future__ import annotations

from vaelab.models.vae import VAE
from vaelab.registry import Registry

HIERARCHIES: Registry[type[VAE]] = Registry("hierarchy.name", "vaelab.models.hierarchies", base=VAE)
