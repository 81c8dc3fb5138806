"""Pyro models: Bayesian neural networks, GP/Student-t process regression and the likelihoods they share."""

from .bnn import BNN
from .likelihoods import (
    LIKELIHOODS,
    Bernoulli,
    Categorical,
    Gaussian,
    Likelihood,
    MixtureLikelihood,
    StudentT,
    make_likelihood,
)
from .pfn import PFN, BarDistribution
from .processes import GP, BurrXII, ScaleMixtureProcess, StudentTProcess, StudentTProcessClassifier

__all__ = [
    "BNN",
    "GP",
    "LIKELIHOODS",
    "PFN",
    "BarDistribution",
    "Bernoulli",
    "BurrXII",
    "Categorical",
    "Gaussian",
    "Likelihood",
    "MixtureLikelihood",
    "ScaleMixtureProcess",
    "StudentT",
    "StudentTProcess",
    "StudentTProcessClassifier",
    "make_likelihood",
]
