"""Quadrature tables (Gauss–Hermite, Gaussian-weighted Gauss–Legendre panels) and φ, φ' at nodes."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from numpy.polynomial.hermite import hermgauss
from numpy.polynomial.legendre import leggauss
from torch import Tensor

__all__ = ["MAX_NODES", "gauss_hermite", "hermite_table", "values_and_slopes"]

MAX_NODES = 300

Activation = Callable[[Tensor], Tensor]


@lru_cache(maxsize=32)
def _gauss_hermite_np(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    if not 1 <= nodes <= MAX_NODES:  # numpy's rule overflows beyond about 350 nodes
        raise ValueError(f"Gauss–Hermite rules have 1..{MAX_NODES} nodes, got {nodes}")
    return hermgauss(nodes)


def gauss_hermite(nodes: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Physicists' rule: ∫ e^{−t²} g(t) dt ≈ Σ_i w_i g(t_i)."""
    t, w = _gauss_hermite_np(nodes)
    return torch.as_tensor(t, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device)


#: the coefficient rule: Gauss–Legendre panels on [−PANEL_RANGE, PANEL_RANGE], one edge at 0
PANEL_RANGE, PANEL_WIDTH, PANEL_NODES = 12.0, 0.5, 10


@lru_cache(maxsize=8)
def _panel_rule() -> tuple[np.ndarray, np.ndarray]:
    """Nodes x_q and weights ω_q with Σ_q ω_q g(x_q) ≈ E[g(z)], z ~ N(0, 1).

    Composite Gauss–Legendre on panels of width 0.5 over [−12, 12] (the Gaussian mass beyond is
    below 1e-32). Unlike a Gauss–Hermite rule it stays accurate for activations with a kink at 0
    (ReLU-like φ: the kink falls on a panel edge), and it is spectrally accurate for smooth φ.
    """
    g, gw = leggauss(PANEL_NODES)
    edges = np.linspace(-PANEL_RANGE, PANEL_RANGE, round(2 * PANEL_RANGE / PANEL_WIDTH) + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    x = ((lo + hi) / 2 + (hi - lo) / 2 * g).ravel()
    w = ((hi - lo) / 2 * gw).ravel() * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x, w


@lru_cache(maxsize=32)
def _hermite_table_np(degree: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes x_q, weights ω_q (Σ ω_q = 1) and H[q, j] = ω_q·He_j(x_q)/√(j!) for j = 0..degree.

    The normalised Hermite polynomials h_j = He_j/√(j!) are run through the three-term recurrence
    h_{j+1} = (x·h_j − √j·h_{j−1})/√(j+1) multiplied by √ω_q, which keeps every intermediate bounded
    (Hermite functions) where h_j alone would overflow.
    """
    x, omega = _panel_rule()
    root = np.sqrt(omega)
    table = np.empty((x.size, degree + 1))
    prev, cur = np.zeros_like(x), root.copy()
    table[:, 0] = cur
    for j in range(degree):
        prev, cur = cur, (x * cur - math.sqrt(j) * prev) / math.sqrt(j + 1)
        table[:, j + 1] = cur
    return x, omega, table * root[:, None]


def hermite_table(degree: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Torch copies of ``_hermite_table_np``: (x (Q,), ω (Q,), H (Q, degree + 1))."""
    return tuple(  # type: ignore[return-value]
        torch.as_tensor(a, dtype=dtype, device=device) for a in _hermite_table_np(degree)
    )


def values_and_slopes(
    function: Activation, z: Tensor, with_slope: bool
) -> tuple[Tensor, Tensor | None]:
    """φ(z) and, when asked, φ'(z) by autograd (keeping the graph when gradients are enabled).

    φ' is taken with ``create_graph`` so that gradients reach the activation's own parameters and z.
    Under ``torch.no_grad``, or when neither z nor φ's parameters need gradients, the results are
    detached. When z needs gradients, φ' is taken from a second evaluation of φ on z passed through
    ``_FiniteGradient``, so φ'' at large |z| is taken as 0 where an activation's autograd formula
    overflows (see there) while φ's own gradient φ' reaches z untouched.
    """
    if not with_slope:
        phi = function(z)
        _check_elementwise(phi, z)
        return phi, None
    grad_mode = torch.is_grad_enabled() and (z.requires_grad or _may_have_parameters(function))
    with torch.enable_grad():
        zz = _FiniteGradient.apply(z) if z.requires_grad else z.detach().requires_grad_(True)
        phi_zz = _per_node_parameters(function, z)(zz)
        _check_elementwise(phi_zz, z)
        phi = function(z) if z.requires_grad else phi_zz
        if phi_zz.requires_grad:
            (slope,) = torch.autograd.grad(
                phi_zz, zz, torch.ones_like(phi_zz), create_graph=grad_mode, allow_unused=True
            )
        else:
            slope = None
        if slope is None:  # φ does not depend on its input
            slope = torch.zeros_like(z)
    if not grad_mode:
        phi, slope = phi.detach(), slope.detach()
    return phi, slope


class _FiniteGradient(torch.autograd.Function):
    """Identity whose backward replaces non-finite gradient entries by 0.

    The NTK needs φ' at the quadrature nodes z = √k·x_q, so gradients w.r.t. z (and through z w.r.t.
    inputs and stds) need φ''. Autograd's double-backward formulas of activations built on exp
    overflow at large |z| (softplus, Mish, APA, AGLU: |z| > 88.7 in float32, > 709.8 in float64, the
    range exp covers) and return inf·0 = NaN exactly where the true φ'' is ~0 (the activation is linear or
    constant there to working precision), while φ and φ' themselves are finite. Nodes reach such |z| at
    ordinary input scales (k ≈ 50 in float32 puts the outer node at 12·√k ≈ 88). Mapping the non-finite
    entries to 0, the limiting value, keeps every other node's contribution exact; float64 finite
    differences of the kernels confirm the gradients (tests/kernels/test_gradient_scales.py). Only
    the φ' path passes it: φ's own gradient φ' (≈ 1 there for softplus) must still reach z.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))


def _per_node_parameters(function: Activation, z: Tensor) -> Activation:
    """φ whose scalar trainable parameters are expanded to z's shape behind ``_FiniteGradient``.

    The φ' path's gradient w.r.t. a parameter θ sums ∂φ'(z_q; θ)/∂θ over the nodes; an overflowing
    node (the same exp overflow as φ'') would make the whole sum NaN. Expanding θ per node lets the
    guard zero that node's term before the sum. Parameters with more than one entry (e.g. a rational's
    coefficient vectors) and fused modules are left as they are.
    """
    if not isinstance(function, torch.nn.Module) or getattr(function, "fused", False):
        return function
    expanded = {
        name: _FiniteGradient.apply(p.reshape(()).expand(z.shape))
        for name, p in function.named_parameters()
        if p.requires_grad and p.numel() == 1 and p.dim() <= 1
    }
    if not expanded:
        return function
    return functools.partial(torch.func.functional_call, function, expanded)


def _may_have_parameters(function: Activation) -> bool:
    """False only when φ is a module none of whose parameters require gradients."""
    if isinstance(function, torch.nn.Module):
        return any(p.requires_grad for p in function.parameters())
    return True


def _check_elementwise(phi: Tensor, z: Tensor) -> None:
    if not isinstance(phi, Tensor) or phi.shape != z.shape:
        shape = getattr(phi, "shape", type(phi).__name__)
        raise ValueError(
            f"activation must act elementwise: input of shape {tuple(z.shape)} gave {shape}"
        )
