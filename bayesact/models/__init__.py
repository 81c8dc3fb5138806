"""Pyro models: Bayesian neural networks and the observation models (likelihoods) they share."""

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

__all__ = [
    "BNN",
    "LIKELIHOODS",
    "Bernoulli",
    "Categorical",
    "Gaussian",
    "Likelihood",
    "MixtureLikelihood",
    "StudentT",
    "make_likelihood",
]
