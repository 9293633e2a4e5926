"""Priors p(z_L) over the top stochastic layer, one module each; :mod:`.prior` says what a prior is."""

from vaelab.models.priors.mixture import MixturePrior
from vaelab.models.priors.prior import PRIORS, Prior
from vaelab.models.priors.standard import StandardNormalPrior
from vaelab.models.priors.vamp import VampPrior

__all__ = ["PRIORS", "MixturePrior", "Prior", "StandardNormalPrior", "VampPrior"]
