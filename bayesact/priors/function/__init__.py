"""Function priors: distributions over functions, known through draws at given inputs."""

from .gp import GPPrior
from .protocol import FunctionPrior, FunctionPriorWithCovariance

__all__ = ["FunctionPrior", "FunctionPriorWithCovariance", "GPPrior"]
