"""Reference 2-D Gauss–Hermite quadrature of the dual maps (the neural-tangents recipe).

With the Cholesky change of variables u_i = √(2k11)·t_i,
v_ij = (k12/√(k11/2))·t_i + √(2(k22 − k12²/k11))·t_j and physicists' nodes/weights (t_i, w_i):

    T ≈ (1/π)·Σ_ij w_i w_j φ(u_i) φ(v_ij),     Ṫ: the same with φ'.

Cost deg² evaluations of φ per entry, so it serves as an independent check of ``HermiteDual``
rather than as the default. ("Neural Tangents: Fast and Easy Infinite Neural Networks in Python",
Novak et al., ICLR 2020, ``stax.ElementwiseNumerical``.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from bayesact.kernels._numerics import safe_sqrt
from bayesact.kernels._quadrature import gauss_hermite, values_and_slopes
from bayesact.kernels.dual import DualActivation, PointData

__all__ = ["GaussHermiteDual"]


class GaussHermiteDual(DualActivation):
    """Dual of an elementwise activation by a ``degree`` × ``degree`` Gauss–Hermite rule."""

    def __init__(self, function: Callable[[Tensor], Tensor], degree: int = 25) -> None:
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(f"quadrature degree must be a positive integer, got {degree!r}")
        self._function = function
        self.degree = degree
        self.entry_cost = 4 * degree * degree

    fusable = False

    def function(self, x: Tensor) -> Tensor:
        return self._function(x)

    def point_data(self, k: Tensor, with_ntk: bool) -> PointData:
        t, w = gauss_hermite(self.degree, k.dtype, k.device)
        phi, slope = values_and_slopes(self._function, safe_sqrt(2.0 * k).unsqueeze(-1) * t, with_ntk)
        scale = 1.0 / math.sqrt(math.pi)
        diag = (phi * phi) @ w * scale
        diag_dot = None if slope is None else (slope * slope) @ w * scale
        return PointData(diag=diag, diag_dot=diag_dot)

    def pair(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        features1: tuple[Tensor, ...],
        features2: tuple[Tensor, ...],
        with_ntk: bool,
    ) -> tuple[Tensor, Tensor | None]:
        t, w = gauss_hermite(self.degree, k12.dtype, k12.device)
        k11, k22, k12 = torch.broadcast_tensors(k11, k22, k12)
        half = safe_sqrt(k11 / 2.0)
        u = (2.0 * half)[..., None, None] * t[:, None]  # (..., deg, 1)
        slope_v = (k12 / half)[..., None, None] * t[:, None]
        resid = safe_sqrt(2.0 * torch.clamp(k22 - k12 * k12 / (2.0 * half * half), min=0.0))
        v = slope_v + resid[..., None, None] * t  # (..., deg, deg)
        phi_u, dphi_u = values_and_slopes(self._function, u, with_ntk)
        phi_v, dphi_v = values_and_slopes(self._function, v, with_ntk)
        weights = (w[:, None] * w) / math.pi
        out = (phi_u * phi_v * weights).sum(dim=(-2, -1))
        if not with_ntk:
            return out, None
        assert dphi_u is not None and dphi_v is not None
        return out, (dphi_u * dphi_v * weights).sum(dim=(-2, -1))
