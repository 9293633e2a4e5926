"""Likelihoods p(x | z_1), one module each; :mod:`.likelihood` says what a likelihood is."""

from vaelab.models.likelihoods.bernoulli import BernoulliLikelihood
from vaelab.models.likelihoods.continuous_bernoulli import ContinuousBernoulliLikelihood
from vaelab.models.likelihoods.gaussian import GaussianLikelihood, LearnedVarianceGaussianLikelihood
from vaelab.models.likelihoods.likelihood import LIKELIHOODS, Decoder, Likelihood, is_discrete
from vaelab.models.likelihoods.logistic import DiscretizedLogisticLikelihood

__all__ = [
    "LIKELIHOODS", "BernoulliLikelihood", "ContinuousBernoulliLikelihood", "Decoder", "DiscretizedLogisticLikelihood",
    "GaussianLikelihood", "LearnedVarianceGaussianLikelihood", "Likelihood", "is_discrete",
]
