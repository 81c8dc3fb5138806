"""Infinite-width kernels: NNGP and NTK of deep MLPs for every elementwise activation.

```python
from bayesact import kernels, activations as A

K = kernels.nngp(x, activation="relu", depth=3, weight_std=1.4, bias_std=0.1)
K, Theta = kernels.nngp_ntk(x, z, activation=A.get("leaky_relu", negative_slope=0.1), depth=2)
gp_kernel = kernels.NNGPKernel("tanh", depth=3)          # a gpytorch kernel with learnable stds
K_mc = kernels.empirical_nngp(x, activation="tanh", depth=3, width=512, n_networks=200)
```

Closed forms where they exist (arc-cosine family, erf, GELU/xGELU, trigonometric series, Gaussian),
Hermite quadrature for every other elementwise activation; conventions follow neural-tangents'
``stax.serial(*[Dense(W_std, b_std), act] * depth, Dense(W_std, b_std))`` in the NTK parameterization.
"""

from bayesact.kernels.arccos import ABReLUDual, RectifiedPolynomialDual
from bayesact.kernels.dual import DualActivation, PointData, Scratch
from bayesact.kernels.empirical import empirical_nngp, empirical_nngp_ntk, empirical_ntk
from bayesact.kernels.erf_gelu import ErfDual, GeluDual
from bayesact.kernels.gauss_hermite import GaussHermiteDual
from bayesact.kernels.gaussian import ExpDual, GaussianDual
from bayesact.kernels.hermite import DEFAULT_HERMITE_DEGREE, HermiteDual
from bayesact.kernels.nngp_kernel import NNGPKernel
from bayesact.kernels.ntk_kernel import NTKKernel
from bayesact.kernels.recursion import (
    DEFAULT_BIAS_STD,
    DEFAULT_WEIGHT_STD,
    KernelOverflowWarning,
    nngp,
    nngp_ntk,
    ntk,
)
from bayesact.kernels.resolve import CLOSED_FORMS, dual_activation
from bayesact.kernels.trig import TrigDual

__all__ = [
    "CLOSED_FORMS",
    "DEFAULT_BIAS_STD",
    "DEFAULT_HERMITE_DEGREE",
    "DEFAULT_WEIGHT_STD",
    "ABReLUDual",
    "DualActivation",
    "ErfDual",
    "ExpDual",
    "GaussHermiteDual",
    "GaussianDual",
    "GeluDual",
    "HermiteDual",
    "KernelOverflowWarning",
    "NNGPKernel",
    "NTKKernel",
    "PointData",
    "RectifiedPolynomialDual",
    "Scratch",
    "TrigDual",
    "dual_activation",
    "empirical_nngp",
    "empirical_nngp_ntk",
    "empirical_ntk",
    "nngp",
    "nngp_ntk",
    "ntk",
]
