"""Euclidean HMC building blocks, batched over chains: metric, momentum, leapfrog, U-turn.

Chains are the leading dimension ``C`` of every tensor. References: Neal (2011), "MCMC using
Hamiltonian dynamics"; Leimkuhler & Reich (2004) (velocity Verlet); Betancourt (2017),
"A Conceptual Introduction to Hamiltonian Monte Carlo", arXiv:1701.02434 (generalised U-turn).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = [
    "IntegratorState",
    "Metric",
    "PotentialAndGrad",
    "is_numerical_failure",
    "is_turning",
    "kinetic_energy",
    "leapfrog",
    "make_metric",
    "sample_momentum",
    "velocity",
]

PotentialAndGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class IntegratorState(NamedTuple):
    """Position ``z`` (C, D), momentum ``r`` (C, D), potential ``U(z)`` (C,), ``∇U(z)`` (C, D)."""

    z: torch.Tensor
    r: torch.Tensor
    potential: torch.Tensor
    grad: torch.Tensor


class Metric(NamedTuple):
    """Euclidean metric: the inverse mass matrix M⁻¹ (the posterior covariance estimate).

    ``inverse_mass`` is (C, D) for a diagonal metric or (C, D, D) for a dense one;
    ``momentum_factor`` A satisfies A Aᵀ = M so that r = A ξ with ξ ~ N(0, I).
    """

    inverse_mass: torch.Tensor
    momentum_factor: torch.Tensor

    @property
    def dense(self) -> bool:
        return self.inverse_mass.dim() == 3


def make_metric(inverse_mass: torch.Tensor) -> Metric:
    """Metric from M⁻¹: diagonal (C, D) or dense (C, D, D)."""
    if inverse_mass.dim() == 2:
        return Metric(inverse_mass, inverse_mass.rsqrt())
    # M = Σ⁻¹ with Σ = L Lᵀ, so A = L⁻ᵀ gives A Aᵀ = L⁻ᵀ L⁻¹ = Σ⁻¹.
    chol = torch.linalg.cholesky(inverse_mass)
    eye = torch.eye(inverse_mass.shape[-1], dtype=inverse_mass.dtype, device=inverse_mass.device)
    factor = torch.linalg.solve_triangular(chol.mT, eye.expand_as(chol), upper=True)
    return Metric(inverse_mass, factor)


def velocity(metric: Metric, r: torch.Tensor) -> torch.Tensor:
    """dz/dt = M⁻¹ r."""
    if metric.dense:
        return (metric.inverse_mass @ r.unsqueeze(-1)).squeeze(-1)
    return metric.inverse_mass * r


def kinetic_energy(metric: Metric, r: torch.Tensor) -> torch.Tensor:
    """K(r) = ½ rᵀ M⁻¹ r, per chain."""
    return 0.5 * (r * velocity(metric, r)).sum(-1)


def sample_momentum(metric: Metric, generator: torch.Generator) -> torch.Tensor:
    """r ~ N(0, M), one row per chain."""
    factor = metric.momentum_factor
    shape = factor.shape[:2]
    xi = torch.randn(shape, generator=generator, dtype=factor.dtype, device=factor.device)
    if metric.dense:
        return (factor @ xi.unsqueeze(-1)).squeeze(-1)
    return factor * xi


def leapfrog(
    state: IntegratorState,
    step_size: torch.Tensor,
    metric: Metric,
    potential_and_grad: PotentialAndGrad,
) -> IntegratorState:
    """One velocity-Verlet step with per-chain (signed) step size ``step_size`` (C, 1).

    r ← r - ε/2 ∇U(z);  z ← z + ε M⁻¹ r;  r ← r - ε/2 ∇U(z).
    A chain with ε = 0 keeps its state exactly.
    """
    half = 0.5 * step_size
    r = torch.addcmul(state.r, half, state.grad, value=-1.0)
    z = torch.addcmul(state.z, step_size, velocity(metric, r))
    potential, grad = potential_and_grad(z)
    r = torch.addcmul(r, half, grad, value=-1.0)
    return IntegratorState(z, r, potential, grad)


def is_numerical_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised while evaluating a potential, marks a numerically invalid point.

    Such a point counts as having zero density (U = +inf, a divergence) instead of aborting the
    run, as Pyro's ``potential_grad`` does: ``torch.linalg.LinAlgError`` (a Cholesky of a matrix
    that is not positive-definite, a singular solve), any ``RuntimeError`` whose message says
    "singular" or "not positive-definite" (the wording of older torch and GPU solvers), and the
    ``ValueError`` of a distribution's argument validation ("... but found invalid values").
    Anything else (a bug in the model, a shape mismatch) propagates.
    """
    if isinstance(exc, torch.linalg.LinAlgError):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc)
        return "singular" in msg or "not positive-definite" in msg
    if isinstance(exc, ValueError):
        return "but found invalid values" in str(exc)
    return False


def is_turning(
    v_minus: torch.Tensor, v_plus: torch.Tensor, rho: torch.Tensor
) -> torch.Tensor:
    """Generalised U-turn (Betancourt 2017): stop when v₋·ρ ≤ 0 or v₊·ρ ≤ 0.

    ``v`` are the end velocities M⁻¹r and ``rho`` the sum of momenta over the trajectory;
    shapes broadcast over leading dimensions, the last is D.
    """
    return ((v_minus * rho).sum(-1) <= 0) | ((v_plus * rho).sum(-1) <= 0)
