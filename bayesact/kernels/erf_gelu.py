"""Closed-form duals of erf and GELU (with the expanded-gate xGELU).

Erf: φ(x) = a·erf(b·x) + c ("Computing with Infinite Networks", Williams, NIPS 1996):
    T = a²·(2/π)·arcsin(2b²k12 / √((1 + 2b²k11)(1 + 2b²k22))) + c²
    Ṫ = a²·(4b²/π) / √((1 + 2b²k11)(1 + 2b²k22) − 4b⁴k12²)

GELU: φ(x) = x·Φ(x) ("Avoiding Kernel Fixed Points: Computing with ELU and GELU Infinite Networks",
Tsuchida, Pearce, van der Heide, Roosta & Gallagher, AAAI 2021), with P1 = (1 + k11)(1 + k22) and
Δ² = P1 − k12²:
    T = k12/4 + [k12·arcsin(k12/√P1) + (k12² + k11·k22·Δ²)/(P1·Δ)]/(2π)
    Ṫ = 1/4 + arcsin(k12/√P1)/(2π) + k12/(2πΔ)·(1/Δ² + (1 − k11·k22)/P1 + 1)
xGELU: φ(x) = x·[(1 + 2α)Φ(x) − α] = (1 + 2α)·GELU(x) − α·x ("Expanded Gating Ranges Improve
Activation Functions", Huang, 2024). By Stein's lemma E[GELU(u)·v] = k12/2, hence
    T = (1 + 2α)²·T_GELU − α(1 + α)·k12,   Ṫ = (1 + 2α)²·Ṫ_GELU − α(1 + α).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bayesact.kernels._numerics import all_scalars, arcsin_with_slope
from bayesact.kernels.dual import DualActivation, PointData, Scratch, write_into

__all__ = ["ErfDual", "GeluDual"]

Coefficient = float | Tensor


def _determinant(k11: Tensor, k22: Tensor, k12: Tensor) -> Tensor:
    """k11·k22 − k12², clamped at 0 (it is ≥ 0 for any covariance; rounding can make it negative)."""
    return torch.clamp(k11 * k22 - k12 * k12, min=0.0)


class ErfDual(DualActivation):
    """Closed-form dual of φ(x) = a·erf(b·x) + c (Williams, NIPS 1996)."""

    def __init__(self, a: Coefficient = 1.0, b: Coefficient = 1.0, c: Coefficient = 0.0) -> None:
        self.a, self.b, self.c = a, b, c

    def function(self, x: Tensor) -> Tensor:
        return self.a * torch.erf(self.b * x) + self.c

    def pair(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        features1: tuple[Tensor, ...],
        features2: tuple[Tensor, ...],
        with_ntk: bool,
    ) -> tuple[Tensor, Tensor | None]:
        b2 = 2.0 * self.b * self.b
        if features1 and features2:  # 1/√(1 + 2b²k) per point: no per-entry root or division
            inv_root = features1[0][..., 0] * features2[0][..., 0]
        else:
            inv_root = 1.0 / torch.sqrt((1.0 + b2 * k11) * (1.0 + b2 * k22))
        # (1 + 2b²k11)(1 + 2b²k22) − 4b⁴k12² = 1 + 2b²(k11 + k22) + 4b⁴(k11k22 − k12²) ≥ 1, so
        # 1 − arg² = gram·inv_root² and d arcsin(arg)/d arg = rsqrt(gram)/inv_root, finite at |arg| → 1
        cache: list[Tensor] = []

        def gram_root() -> Tensor:
            if not cache:
                cache.append(torch.rsqrt(1.0 + b2 * (k11 + k22) + b2 * b2 * _determinant(k11, k22, k12)))
            return cache[0]

        a2 = self.a * self.a
        t = a2 * (2.0 / math.pi) * arcsin_with_slope(b2 * k12 * inv_root, lambda: gram_root() / inv_root)
        t = t + self.c * self.c
        if not with_ntk:
            return t, None
        return t, a2 * (2.0 * b2 / math.pi) * gram_root()

    def works_in_place(self) -> bool:
        return all_scalars(self.a, self.b, self.c)

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
        """``pair``'s operations in ``pair``'s order, in two scratch buffers and ``k12`` (T)."""
        b2 = 2.0 * self.b * self.b
        a2 = self.a * self.a
        tmp, t_dot = scratch.buffer(0), scratch.buffer(1)
        if with_ntk:  # rsqrt(1 + 2b²(k11 + k22) + 4b⁴·max(k11k22 − k12², 0)), as in pair
            det = write_into(tmp, torch.mul, k11, k22).sub_(torch.mul(k12, k12, out=t_dot)).clamp_(min=0.0)
            det.mul_(b2 * b2)
            write_into(t_dot, torch.add, k11, k22).mul_(b2).add_(1.0).add_(det).rsqrt_()
            t_dot.mul_(a2 * (2.0 * b2 / math.pi))
        inv_root = write_into(tmp, torch.mul, features1[0][..., 0], features2[0][..., 0])
        k12.mul_(b2).mul_(inv_root).clamp_(-1.0, 1.0).asin_().mul_(a2 * (2.0 / math.pi))
        k12.add_(self.c * self.c)
        return k12, (t_dot if with_ntk else None)

    def point_data(self, k: Tensor, with_ntk: bool) -> PointData:
        t, t_dot = self.pair(k, k, k, (), (), with_ntk)
        inv_root = torch.rsqrt(1.0 + 2.0 * self.b * self.b * k).unsqueeze(-1)
        return PointData(diag=t, diag_dot=t_dot, features=(inv_root,))


class GeluDual(DualActivation):
    """Closed-form dual of xGELU φ(x) = x·[(1 + 2α)Φ(x) − α]; α = 0 is GELU (Tsuchida et al., 2021)."""

    def __init__(self, alpha: Coefficient = 0.0) -> None:
        self.alpha = alpha

    def function(self, x: Tensor) -> Tensor:
        gate = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
        return x * ((1.0 + 2.0 * self.alpha) * gate - self.alpha)

    def pair(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        features1: tuple[Tensor, ...],
        features2: tuple[Tensor, ...],
        with_ntk: bool,
    ) -> tuple[Tensor, Tensor | None]:
        p1 = (1.0 + k11) * (1.0 + k22)
        delta2 = 1.0 + k11 + k22 + _determinant(k11, k22, k12)  # = P1 − k12² ≥ 1
        delta = torch.sqrt(delta2)
        root_p1 = torch.sqrt(p1)
        asin = arcsin_with_slope(k12 / root_p1, lambda: root_p1 / delta)  # 1 − k12²/P1 = Δ²/P1
        t = k12 / 4.0 + (k12 * asin + (k12 * k12 + k11 * k22 * delta2) / (p1 * delta)) / (2.0 * math.pi)
        gate = 1.0 + 2.0 * self.alpha
        gain = gate * gate
        shift = self.alpha * (1.0 + self.alpha)
        t = gain * t - shift * k12
        if not with_ntk:
            return t, None
        t_dot = (
            0.25
            + asin / (2.0 * math.pi)
            + k12 / (2.0 * math.pi * delta) * (1.0 / delta2 + (1.0 - k11 * k22) / p1 + 1.0)
        )
        return t, gain * t_dot - shift
