"""Weight priors: distributions over an MLP's weights and biases, layer by layer."""

from .base import WeightPrior
from .gaussian import GaussianPrior
from .hierarchical import HierarchicalPrior

__all__ = ["GaussianPrior", "HierarchicalPrior", "WeightPrior"]
