"""Kernel matching: the distance between a BNN's own NNGP kernel and a target's covariance.

A fully connected BNN with a per-layer Gaussian prior has, at infinite width, the NNGP kernel
K_ψ(x, x') of :func:`bayesact.kernels.nngp` (exact in closed form or by quadrature, differentiable in
the per-layer stds ψ). Matching K_ψ to the target's covariance C at the measurement points is a
critic-free, deterministic alternative to Wasserstein matching for Gaussian targets.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bayesact import kernels

from ..function.protocol import FunctionPrior, FunctionPriorWithCovariance
from ..weight.gaussian import GaussianPrior

__all__ = [
    "NonFiniteTargetError",
    "bnn_nngp",
    "relative_frobenius",
    "relative_kernel_error",
    "target_covariance",
    "target_samples",
]


class NonFiniteTargetError(ValueError):
    """The target of a functional-prior fit gave NaN or inf function values or covariances."""


def bnn_nngp(bnn: Any, x: Tensor) -> Tensor:
    """The infinite-width kernel of ``bnn`` (a BNN with a :class:`GaussianPrior`) at x: (M, M).

    Same parameterisation as the BNN (h W / sqrt(fan_in) + b), so it is exactly
    ``kernels.nngp(x, activation=φ, depth=L-1, weight_std=[σ_w,0..σ_w,L-1], bias_std=[σ_b,l])``;
    for one hidden layer it is also the exact covariance of the finite-width network's outputs.
    """
    prior = bnn.prior
    if not isinstance(prior, GaussianPrior):
        raise ValueError(
            "the NNGP of a BNN needs a GaussianPrior (a hierarchical prior's functions are not a GP)"
        )
    if prior.num_layers is None:
        raise ValueError("the NNGP of a BNN needs its prior bound to the network's layers (num_layers None)")
    w = prior.weight_std.to(x.dtype)
    b = prior.bias_std.to(x.dtype)
    depth = prior.num_layers - 1
    return kernels.nngp(
        x,
        activation=bnn.activation,
        depth=depth,
        weight_std=[w[layer] for layer in range(depth + 1)],
        bias_std=[b[layer] for layer in range(depth + 1)],
    )


def target_covariance(target: FunctionPrior, x: Tensor, n: int) -> Tensor:
    """C(x, x): ``target.covariance(x)`` for a FunctionPriorWithCovariance (e.g. a GPPrior), else the second
    moment (1/(n·out)) Σ f fᵀ of n zero-mean draws from ``target.sample_functions(x, n)``."""
    if isinstance(target, FunctionPriorWithCovariance):
        with torch.no_grad():
            exact = target.covariance(x).to(x.dtype)
        if not bool(torch.isfinite(exact).all()):
            name = type(target).__name__
            raise NonFiniteTargetError(f"'target' ({name}) gave a covariance with NaN or inf")
        return exact
    f = target_samples(target, x, n)  # (n, M, out)
    f = f.permute(0, 2, 1).reshape(-1, x.shape[0])
    return f.T @ f / f.shape[0]


def target_samples(target: FunctionPrior, x: Tensor, n: int) -> Tensor:
    """``target.sample_functions(x, n)`` without gradients, checked: shape (n, M, out), finite, and
    returned in x's dtype."""
    with torch.no_grad():
        f = target.sample_functions(x, n)
    name = type(target).__name__
    if not isinstance(f, Tensor) or f.dim() != 3 or tuple(f.shape[:2]) != (n, x.shape[0]):
        shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
        expected = f"({n}, {x.shape[0]}, out)"
        raise ValueError(f"'target' ({name}).sample_functions must return shape {expected}, got {shape}")
    if not bool(torch.isfinite(f).all()):
        raise NonFiniteTargetError(f"'target' ({name}) returned function values with NaN or inf")
    return f.to(x.dtype)


def relative_kernel_error(bnn: Any, target: FunctionPrior, x: Tensor, n: int) -> Tensor:
    """‖K_ψ(x, x) − C(x, x)‖_F / ‖C(x, x)‖_F, differentiable in the prior's stds ψ.

    K_ψ is :func:`bnn_nngp`; C is :func:`target_covariance` (exact or from n target draws).
    """
    return relative_frobenius(bnn_nngp(bnn, x), target_covariance(target, x, n))


def relative_frobenius(estimate: Tensor, reference: Tensor) -> Tensor:
    """‖estimate − reference‖_F / ‖reference‖_F."""
    return torch.linalg.norm(estimate - reference) / torch.linalg.norm(reference).clamp_min(1e-12)
