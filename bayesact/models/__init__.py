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
from .moe import GaussianMoE, force_experts, mask_experts, relabel, simulate_moe, voronoi_loss
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
    "GaussianMoE",
    "Likelihood",
    "MixtureLikelihood",
    "ScaleMixtureProcess",
    "StudentT",
    "StudentTProcess",
    "StudentTProcessClassifier",
    "force_experts",
    "make_likelihood",
    "mask_experts",
    "relabel",
    "simulate_moe",
    "voronoi_loss",
]
