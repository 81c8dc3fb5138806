"""Cheaper float32 elementwise math for graphs compiled on the CPU.

A BNN's gradient spends most of its non-matmul time in ``tanh``: on the CPU, ATen's float32
``tanh`` (and the Inductor kernels that call it) costs some 7 ns an element, as much as the
network's matrix products. The rational approximation below needs a dozen multiply-adds and
one division, which Inductor vectorises; XLA (and so NumPyro and JAX) uses a rational
approximation of the same kind for float32 ``tanh``.

Only float32 tensors on the CPU are rewritten; float64, other devices and eager runs keep
ATen's ``tanh``. The gradient is unaffected in form: ``tanh``'s backward is written with the
forward output, ``1 - y²``.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["REALIZE_OPCOUNT", "TANH_CLAMP", "FastMath", "rational_tanh"]

aten = torch.ops.aten

#: |x| beyond which float32 tanh(x) rounds to ±1 within the approximation's error.
TANH_CLAMP = 9.0

# tanh(x) ≈ x·P(x²)/Q(x²) on |x| ≤ 9, P of degree 6 and Q of degree 3 in x², Q(0) = 1.
# Fitted here by Sanathanan-Koerner iteration with Lawson reweighting on the relative error
# (float64 fit: max relative error 6.6e-9; evaluated in float32: max error 5.3 ulp, 3.2e-7).
_P = (
    0.999999993385509,
    0.13084015836167529,
    0.0031039626622624424,
    1.1154376873325635e-05,
    -2.0225511254754478e-08,
    5.278089809471436e-11,
    -8.489083446689137e-14,
)
_Q = (1.0, 0.46417342937749795, 0.02449520396064737, 0.000254615467781439)


def _horner(t: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    acc = torch.full_like(t, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        acc = acc * t + c
    return acc


def rational_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) ≈ clamp(x)·P(x²)/Q(x²) clamped to [-1, 1] (float32 error ≤ 5.3 ulp, 3.2e-7).

    P and Q are the degree-(13, 6) odd/even minimax-style rational fit of tanh on [-9, 9]
    (coefficients in this module); NaN stays NaN.
    """
    c = x.clamp(-TANH_CLAMP, TANH_CLAMP)
    t = c * c
    return (c * _horner(t, _P) / _horner(t, _Q)).clamp(-1.0, 1.0)


#: Inductor inlines a pointwise result into every consumer unless its body has more than this
#: many operations (50 on the CPU); the rational tanh has about 30, and a BNN layer's output
#: has three consumers in the gradient (next layer, tanh's backward, weight gradient), so it
#: is stored once instead.
REALIZE_OPCOUNT = 20


class FastMath:
    """A ``make_fx`` decomposition table (``.table``) that rewrites float32 CPU ``tanh`` into
    :func:`rational_tanh` and counts the rewrites (``.rewrites``); empty when not ``enabled``."""

    def __init__(self, enabled: bool = True) -> None:
        self.rewrites = 0
        self.table: dict[Any, Any] = {aten.tanh.default: self._tanh} if enabled else {}

    def _tanh(self, x: torch.Tensor) -> Any:
        if x.dtype != torch.float32 or x.device.type != "cpu":
            return NotImplemented  # traced as ATen's tanh
        self.rewrites += 1
        return rational_tanh(x)

    def inductor_settings(self) -> dict[str, Any]:
        """Inductor config overrides for the graph traced with ``table``."""
        return {"realize_opcount_threshold": REALIZE_OPCOUNT} if self.rewrites else {}
