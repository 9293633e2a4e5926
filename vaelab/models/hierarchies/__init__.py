"""Hierarchies: the order in which q visits the stochastic layers, one module each;
:mod:`.hierarchy` says what a hierarchy is."""

from vaelab.models.hierarchies.bottomup import VAE
from vaelab.models.hierarchies.hierarchy import HIERARCHIES
from vaelab.models.hierarchies.topdown import MERGES, TopDownVAE, precision_weighted, residual

__all__ = ["HIERARCHIES", "MERGES", "VAE", "TopDownVAE", "precision_weighted", "residual"]
