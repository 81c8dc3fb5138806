"""Prior-fitted networks (Müller et al., ICLR 2022): a transformer trained on datasets drawn from a
prior that outputs the posterior predictive distribution, as a bar ("Riemann") distribution."""

from bayesact.models.pfn.bar import BarDistribution
from bayesact.models.pfn.pfn import (
    PFN,
    StandardizedBorders,
    normal_borders,
    standardization,
    standardized_borders,
)
from bayesact.models.pfn.transformer import PFNLayer, PFNTransformer

__all__ = ["PFN", "BarDistribution", "PFNLayer", "PFNTransformer", "StandardizedBorders", "normal_borders",
           "standardization", "standardized_borders"]
