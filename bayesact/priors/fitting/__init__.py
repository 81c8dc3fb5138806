"""Functional-prior fitting: tune a weight prior so that its network's functions match a function prior."""

from .fitting import FittedPrior, fit_functional_prior
from .measurement import mixed_measurement_sampler
from .protocol import HasActivation, HasWeightPrior, WeightSpacePrior
from .wasserstein import LipschitzCritic, wasserstein_distance

__all__ = [
    "FittedPrior",
    "HasActivation",
    "HasWeightPrior",
    "LipschitzCritic",
    "WeightSpacePrior",
    "fit_functional_prior",
    "mixed_measurement_sampler",
    "wasserstein_distance",
]
