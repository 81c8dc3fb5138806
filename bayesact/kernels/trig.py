"""Closed-form dual of constant + linear + trigonometric series (sin, SIREN, Fourier, Snake).

φ(x) = c0 + ℓ·x + Σ_k [α_k·cos(ω_k x) + β_k·sin(ω_k x)]. With V∓_jk = ω_j²k11 + ω_k²k22 ∓ 2ω_jω_k·k12
(the variances of ω_j u ∓ ω_k v), E[cos A cos B] = ½(e^{−Var(A−B)/2} + e^{−Var(A+B)/2}),
E[sin A sin B] = ½(e^{−Var(A−B)/2} − e^{−Var(A+B)/2}), E[sin A cos B] = 0 and Stein's lemma
E[u·sin(ωv)] = ω·k12·e^{−ω²k22/2} give

    T = c0² + ℓ²k12 + c0·Σ_k α_k(e_k(k11) + e_k(k22)) + ℓ·k12·Σ_k ω_kβ_k(e_k(k11) + e_k(k22))
        + ½·Σ_jk [(α_jα_k + β_jβ_k)·e^{−V−_jk/2} + (α_jα_k − β_jβ_k)·e^{−V+_jk/2}],

with e_k(κ) = exp(−ω_k²κ/2). φ' = ℓ + Σ_k ω_k(β_k cos − α_k sin) is again such a series, which gives
Ṫ. For a·sin(bx + c) this is neural-tangents' ``Sin`` kernel ("Neural Tangents: Fast and Easy Infinite
Neural Networks in Python", Novak et al., ICLR 2020); Snake_a(x) = x + sin²(ax)/a = x + 1/(2a) −
cos(2ax)/(2a) ("Neural Networks Fail to Learn Periodic Functions and How to Fix It", Ziyin, Hartwig &
Ueda, NeurIPS 2020).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from bayesact.kernels.dual import DualActivation

__all__ = ["TrigDual"]

Coefficient = float | Tensor


def _as_list(values: Sequence[Coefficient] | Tensor | None, size: int) -> list[Coefficient]:
    if values is None:
        return [0.0] * size
    items: list[Coefficient] = list(values.unbind(0)) if isinstance(values, Tensor) else list(values)
    if len(items) != size:
        raise ValueError(f"expected {size} trigonometric coefficients, got {len(items)}")
    return items


class TrigDual(DualActivation):
    """Closed-form dual of φ(x) = c0 + ℓ·x + Σ_k [α_k cos(ω_k x) + β_k sin(ω_k x)].

    Args:
        frequencies: ω_k (a sequence or 1-D tensor).
        cos: α_k (defaults to zeros).
        sin: β_k (defaults to zeros).
        constant: c0.
        linear: ℓ.
    """

    def __init__(
        self,
        frequencies: Sequence[Coefficient] | Tensor,
        cos: Sequence[Coefficient] | Tensor | None = None,
        sin: Sequence[Coefficient] | Tensor | None = None,
        constant: Coefficient = 0.0,
        linear: Coefficient = 0.0,
    ) -> None:
        omega: list[Coefficient] = (
            list(frequencies.unbind(0)) if isinstance(frequencies, Tensor) else list(frequencies)
        )
        self.omega = omega
        self.alpha = _as_list(cos, len(omega))
        self.beta = _as_list(sin, len(omega))
        self.constant = constant
        self.linear = linear
        self.entry_cost = 8 + 4 * len(omega)

    def function(self, x: Tensor) -> Tensor:
        out = self.constant + self.linear * x
        for w, a, b in zip(self.omega, self.alpha, self.beta, strict=True):
            out = out + a * torch.cos(w * x) + b * torch.sin(w * x)
        return out + torch.zeros_like(x)

    @staticmethod
    def _expectation(
        omega: list[Coefficient],
        alpha: list[Coefficient],
        beta: list[Coefficient],
        constant: Coefficient,
        linear: Coefficient,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
    ) -> Tensor:
        total = constant * constant + linear * linear * k12
        for w, a, b in zip(omega, alpha, beta, strict=True):
            marginals = torch.exp(-0.5 * w * w * k11) + torch.exp(-0.5 * w * w * k22)
            total = total + (constant * a + linear * w * b * k12) * marginals
        for wj, aj, bj in zip(omega, alpha, beta, strict=True):
            for wk, ak, bk in zip(omega, alpha, beta, strict=True):
                # exponents −V∓/2 ≤ 0 (Cauchy–Schwarz), so no overflow even for large ω
                base = -0.5 * (wj * wj * k11 + wk * wk * k22)
                cross = wj * wk * k12
                total = total + 0.5 * (
                    (aj * ak + bj * bk) * torch.exp(base + cross)
                    + (aj * ak - bj * bk) * torch.exp(base - cross)
                )
        return total

    def pair(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        features1: tuple[Tensor, ...],
        features2: tuple[Tensor, ...],
        with_ntk: bool,
    ) -> tuple[Tensor, Tensor | None]:
        t = self._expectation(
            self.omega, self.alpha, self.beta, self.constant, self.linear, k11, k22, k12
        )
        if not with_ntk:
            return t, None
        d_alpha = [w * b for w, b in zip(self.omega, self.beta, strict=True)]
        d_beta = [-w * a for w, a in zip(self.omega, self.alpha, strict=True)]
        t_dot = self._expectation(self.omega, d_alpha, d_beta, self.linear, 0.0, k11, k22, k12)
        return t, t_dot
