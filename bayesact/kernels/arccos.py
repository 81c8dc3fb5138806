"""Rectified polynomials: the arc-cosine family in closed form.

φ(x) = Σ_i p_i·relu(x)^i + Σ_i q_i·relu(−x)^i with relu(x)^0 read as the step Θ(x), orders 0..8.
This covers ReLU, LeakyReLU, ABReLU a·min(x,0) + b·max(x,0), Abs, the identity, step, sign, ReQU
(relu²), PolyReLU and the monomials x, x², x³.

With u = √k11·x, v = √k22·y, corr(x, y) = ρ = cos θ, every term reduces to an orthant moment
M_ij(ρ) = E[relu(x)^i relu(y)^j]; relu(−v) flips the sign of ρ. The moments follow from Stein's lemma
E[x·g(x, y)] = E[∂_x g] + ρ·E[∂_y g]:

    M_00 = (π − θ)/(2π)
    M_ij = (i−1)·M_{i−2,j}·[i≥2] + [i=1]·s^j·m_j/√(2π) + ρ·( j·M_{i−1,j−1}·[j≥1]
           + [j=0]·s^{i−1}·m_{i−1}/√(2π) ),      s = sin θ,  m_j = E[relu(z)^j],

which reproduces Cho & Saul's arc-cosine kernels on the diagonal i = j ("Kernel Methods for Deep
Learning", NeurIPS 2009): 2π·M_11 = sin θ + (π − θ)cos θ, 2π·M_22 = 3 sin θ cos θ + (π − θ)(1 + 2cos²θ).
The NTK map uses φ' = Σ i·p_i·relu(x)^{i−1} − Σ i·q_i·relu(−x)^{i−1}; the derivative of a step is
dropped (a δ at 0), as neural-tangents does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from bayesact.kernels._numerics import (
    all_scalars,
    arccos,
    correlation,
    correlation_from_roots,
    rho_margin,
    root_features,
    safe_sqrt,
)
from bayesact.kernels.dual import DualActivation, PointData, Scratch, write_into

__all__ = ["ABReLUDual", "RectifiedPolynomialDual"]

Coefficient = float | Tensor
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _half_moment(j: int) -> float:
    """m_j = E[relu(z)^j] for z ~ N(0, 1) (m_0 = P(z > 0) = ½)."""
    return 2.0 ** (j / 2.0) * math.gamma((j + 1) / 2.0) / (2.0 * math.sqrt(math.pi))


def _power(x: Tensor | float, n: int) -> Tensor | float:
    return 1.0 if n == 0 else x if n == 1 else x**n


def _orthant_moments(
    orders: list[tuple[int, int]], rho: Tensor | float, s: Tensor | float, theta: Tensor | float
) -> dict[tuple[int, int], Tensor | float]:
    """M_ij(ρ) for the requested (i, j), given ρ, s = sin θ and θ = arccos ρ."""
    cache: dict[tuple[int, int], Tensor | float] = {}

    def moment(i: int, j: int) -> Tensor | float:
        if (i, j) in cache:
            return cache[(i, j)]
        if i == 0 and j == 0:
            out: Tensor | float = (math.pi - theta) / (2.0 * math.pi)
        elif i == 0:
            out = moment(j, 0)
        else:
            out = 0.0
            if i >= 2:
                out = out + (i - 1) * moment(i - 2, j)
            if i == 1:
                out = out + _power(s, j) * (_half_moment(j) * _INV_SQRT_2PI)
            if j >= 1:
                out = out + rho * (j * moment(i - 1, j - 1))
            else:
                out = out + rho * _power(s, i - 1) * (_half_moment(i - 1) * _INV_SQRT_2PI)
        cache[(i, j)] = out
        return out

    return {(i, j): moment(i, j) for i, j in orders}


def _derivative(coeffs: Mapping[int, Coefficient], sign: float) -> dict[int, Coefficient]:
    return {i - 1: (sign * i) * c for i, c in coeffs.items() if i >= 1}


class RectifiedPolynomialDual(DualActivation):
    """Closed-form dual of φ(x) = Σ_i p_i·relu(x)^i + Σ_i q_i·relu(−x)^i (orders 0..8).

    Args:
        positive: {order: p_i}, the coefficients of relu(x)^i (order 0 is the step Θ(x)).
        negative: {order: q_i}, the coefficients of relu(−x)^i.

    Examples: ReLU ``({1: 1}, {})``; LeakyReLU(α) ``({1: 1}, {1: -α})``; Abs ``({1: 1}, {1: 1})``;
    identity ``({1: 1}, {1: -1})``; x³ ``({3: 1}, {3: -1})``; a constant c is ``({0: c}, {0: c})``.
    Coefficients may be tensors (gradients reach them).
    """

    entry_cost = 24

    def __init__(
        self,
        positive: Mapping[int, Coefficient],
        negative: Mapping[int, Coefficient] | None = None,
    ) -> None:
        negative = {} if negative is None else negative
        for order in (*positive, *negative):
            if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= 8:
                raise ValueError(f"orders must be integers in 0..8, got {order!r}")
        self.positive = dict(positive)
        self.negative = dict(negative)

    def function(self, x: Tensor) -> Tensor:
        out = torch.zeros_like(x)
        for coeffs, y in ((self.positive, x), (self.negative, -x)):
            for i, c in coeffs.items():
                base = (y > 0).to(x.dtype) if i == 0 else torch.relu(y) ** i
                out = out + c * base
        return out

    def _expectation(
        self,
        p: Mapping[int, Coefficient],
        q: Mapping[int, Coefficient],
        r1: Tensor,
        r2: Tensor,
        same: tuple[Tensor | float, Tensor | float, Tensor | float],
        flipped: tuple[Tensor | float, Tensor | float, Tensor | float],
    ) -> Tensor:
        """Σ_ij r1^i r2^j [(p_i p_j + q_i q_j) M_ij(ρ) + (p_i q_j + q_i p_j) M_ij(−ρ)]."""
        orders = sorted(set(p) | set(q))
        pairs = [(i, j) for i in orders for j in orders]
        m_same = _orthant_moments(pairs, *same)
        m_flip = _orthant_moments(pairs, *flipped) if p and q else {}
        total: Tensor | float = 0.0
        for i, j in pairs:
            term: Tensor | float = 0.0
            if i in p and j in p:
                term = term + p[i] * p[j] * m_same[(i, j)]
            if i in q and j in q:
                term = term + q[i] * q[j] * m_same[(i, j)]
            if i in p and j in q:
                term = term + p[i] * q[j] * m_flip[(i, j)]
            if i in q and j in p:
                term = term + q[i] * p[j] * m_flip[(i, j)]
            total = total + _power(r1, i) * _power(r2, j) * term
        shape = torch.broadcast_shapes(r1.shape, r2.shape)
        if not isinstance(total, Tensor):  # constant in ρ and the variances (e.g. Ṫ of x ↦ x)
            return torch.full(shape, float(total), dtype=r1.dtype, device=r1.device)
        return total.expand(torch.broadcast_shapes(total.shape, shape))

    def _both(
        self,
        r1: Tensor,
        r2: Tensor,
        same: tuple[Tensor | float, Tensor | float, Tensor | float],
        flipped: tuple[Tensor | float, Tensor | float, Tensor | float],
        with_ntk: bool,
    ) -> tuple[Tensor, Tensor | None]:
        t = self._expectation(self.positive, self.negative, r1, r2, same, flipped)
        if not with_ntk:
            return t, None
        dp = _derivative(self.positive, 1.0)
        dq = _derivative(self.negative, -1.0)
        return t, self._expectation(dp, dq, r1, r2, same, flipped)

    def pair(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        features1: tuple[Tensor, ...],
        features2: tuple[Tensor, ...],
        with_ntk: bool,
    ) -> tuple[Tensor, Tensor | None]:
        _, rho = correlation(k11, k22, k12, rho_margin(k12.dtype))
        theta = arccos(rho)
        s = torch.sqrt((1.0 - rho) * (1.0 + rho))
        r1, r2 = safe_sqrt(k11), safe_sqrt(k22)
        return self._both(r1, r2, (rho, s, theta), (-rho, s, math.pi - theta), with_ntk)

    def point_data(self, k: Tensor, with_ntk: bool) -> PointData:
        # exact diagonal: ρ = 1, θ = 0 (and ρ = −1, θ = π for the flipped terms)
        r = safe_sqrt(k)
        t, t_dot = self._both(r, r, (1.0, 0.0, 0.0), (-1.0, 0.0, math.pi), with_ntk)
        return PointData(diag=t, diag_dot=t_dot)


class ABReLUDual(DualActivation):
    """Closed-form dual of ABReLU φ(x) = a·min(x, 0) + b·max(x, 0) (ReLU, LeakyReLU, |x|, identity).

    With θ = arccos ρ (Cho & Saul, NeurIPS 2009; neural-tangents' ``ABRelu``):
        T = (a − b)²/(2π)·√(k11·k22 − k12²) + [(a² + b²)/2 − (a − b)²·θ/(2π)]·k12
        Ṫ = (a² + b²)/2 − (a − b)²·θ/(2π)
    the special case of ``RectifiedPolynomialDual({1: b}, {1: −a})`` with fewer operations.
    """

    entry_cost = 12

    def __init__(self, a: Coefficient = 0.0, b: Coefficient = 1.0) -> None:
        self.a, self.b = a, b

    def function(self, x: Tensor) -> Tensor:
        return self.a * torch.clamp(x, max=0.0) + self.b * torch.clamp(x, min=0.0)

    def _maps(
        self, scale: Tensor, k12: Tensor, rho: Tensor | float, theta: Tensor | float, with_ntk: bool
    ) -> tuple[Tensor, Tensor | None]:
        diff = self.a - self.b
        gap = diff * diff
        mean = (self.a * self.a + self.b * self.b) / 2.0
        t_dot = mean - gap / (2.0 * math.pi) * theta
        sin = torch.sqrt((1.0 - rho) * (1.0 + rho)) if isinstance(rho, Tensor) else 0.0
        t = gap / (2.0 * math.pi) * (scale * sin) + t_dot * k12
        return t, (t_dot + torch.zeros_like(k12) if with_ntk else None)

    def pair(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        features1: tuple[Tensor, ...],
        features2: tuple[Tensor, ...],
        with_ntk: bool,
    ) -> tuple[Tensor, Tensor | None]:
        if features1 and features2:  # √k and 1/√k per point: no per-entry root or division
            scale, rho = correlation_from_roots(k12, features1, features2, rho_margin(k12.dtype))
        else:
            scale, rho = correlation(k11, k22, k12, rho_margin(k12.dtype))
        return self._maps(scale, k12, rho, arccos(rho), with_ntk)

    def works_in_place(self) -> bool:
        return all_scalars(self.a, self.b)

    def pair_inplace(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        features1: tuple[Tensor, ...],
        features2: tuple[Tensor, ...],
        with_ntk: bool,
        scratch: Scratch,
    ) -> tuple[Tensor, Tensor | None]:
        """``pair``'s operations in ``pair``'s order, in three scratch buffers and ``k12`` (T)."""
        margin = rho_margin(k12.dtype)
        diff = self.a - self.b
        slope = diff * diff / (2.0 * math.pi)  # (a − b)²/(2π)
        mean = (self.a * self.a + self.b * self.b) / 2.0
        rho, t_dot, tmp = scratch.buffer(0), scratch.buffer(1), scratch.buffer(2)
        torch.mul(k12, features1[1][..., 0], out=rho).mul_(features2[1][..., 0])
        rho.clamp_(-1.0 + margin, 1.0 - margin)
        torch.arccos(rho, out=t_dot).mul_(slope).neg_().add_(mean)  # Ṫ = mean − slope·θ
        sin = torch.neg(rho, out=tmp).add_(1.0)  # 1 − ρ
        sin.mul_(rho.add_(1.0)).sqrt_()  # sin θ = √((1 − ρ)(1 + ρ)); ρ is not needed after this
        scale = write_into(rho, torch.mul, features1[0][..., 0], features2[0][..., 0])  # √(k11·k22)
        scale_sin = scale.mul_(sin).mul_(slope)
        torch.add(scale_sin, torch.mul(t_dot, k12, out=tmp), out=k12)  # T = slope·√(k11k22)·sin θ + Ṫ·k12
        return k12, (t_dot if with_ntk else None)

    def point_data(self, k: Tensor, with_ntk: bool) -> PointData:
        t, t_dot = self._maps(k, k, 1.0, 0.0, with_ntk)  # ρ = 1, θ = 0: T = (a² + b²)k/2
        return PointData(diag=t, diag_dot=t_dot, features=root_features(k))
