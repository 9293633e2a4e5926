"""Posteriors: the Gaussian stochastic layers and the flows of z_1, one module each;
:mod:`.posterior` says what a posterior part is."""

from vaelab.models.posteriors.flow import Flow, FlowDistribution, FlowPosterior
from vaelab.models.posteriors.gaussian import GaussianLayer, GaussianParams, frozen
from vaelab.models.posteriors.iaf import MADE, InverseAutoregressiveFlow
from vaelab.models.posteriors.planar import PlanarFlow
from vaelab.models.posteriors.posterior import POSTERIORS

__all__ = [
    "MADE", "POSTERIORS", "Flow", "FlowDistribution", "FlowPosterior", "GaussianLayer", "GaussianParams",
    "InverseAutoregressiveFlow", "PlanarFlow", "frozen",
]
