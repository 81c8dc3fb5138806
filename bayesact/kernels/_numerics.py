"""Small numerical guards shared by the dual activations (finite values and gradients at edge cases)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "all_scalars", "arccos", "arccos_poly", "arcsin", "arcsin_poly", "arcsin_with_slope", "correlation",
    "correlation_from_roots", "rho_margin", "root_features", "safe_sqrt", "tiny",
]


def all_scalars(*values: float | Tensor) -> bool:
    """Whether every value is a Python number or a 0-dim tensor (it broadcasts into any block
    without enlarging it, so an in-place update of the block is possible)."""
    return all(not isinstance(v, Tensor) or v.dim() == 0 for v in values)


def tiny(dtype: torch.dtype) -> float:
    """A floor for variances: far below any meaningful value, far above underflow."""
    return 1e-30 if dtype == torch.float64 else 1e-20


def rho_margin(dtype: torch.dtype) -> float:
    """How far correlations are kept from ±1 where arccos-type maps have infinite slopes."""
    return 8.0 * torch.finfo(dtype).eps


def safe_sqrt(x: Tensor) -> Tensor:
    """√x with x clamped to a tiny positive floor, so the gradient is finite (and 0 below the floor)."""
    return torch.sqrt(torch.clamp(x, min=tiny(x.dtype)))


def root_features(k: Tensor) -> tuple[Tensor, Tensor]:
    """Per-point features (√k, 1/√k) of variances k (..., n), each of shape (..., n, 1), so that the
    pair maps get √(k11·k22) and ρ from multiplications only (no per-entry square root or division).
    """
    root = safe_sqrt(k)
    return root.unsqueeze(-1), (1.0 / root).unsqueeze(-1)


def correlation_from_roots(
    k12: Tensor, features1: tuple[Tensor, ...], features2: tuple[Tensor, ...], margin: float
) -> tuple[Tensor, Tensor]:
    """``correlation`` from the ``root_features`` of both points: (√k11·√k22, clamped k12/√(k11k22))."""
    scale = features1[0][..., 0] * features2[0][..., 0]
    rho = torch.clamp(k12 * features1[1][..., 0] * features2[1][..., 0], -1.0 + margin, 1.0 - margin)
    return scale, rho


def correlation(k11: Tensor, k22: Tensor, k12: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """Return (√(k11·k22), ρ) with ρ = k12/√(k11·k22) clamped to [−1 + margin, 1 − margin].

    Zero variances (zero inputs without bias) give ρ = 0 and finite gradients. The clamp has zero
    gradient outside its range, which is the exact directional derivative when ρ is identically ±1
    (x2 = ±x1); inside the range nothing is changed.
    """
    scale = safe_sqrt(k11) * safe_sqrt(k22)
    rho = torch.clamp(k12 / scale, min=-1.0 + margin, max=1.0 - margin)
    return scale, rho


def _asin_tail_coefficients(degree: int) -> tuple[float, ...]:
    """Power coefficients of R(z) ≈ (arcsin(√z)/√z − 1)/z on [0, ¼], a degree-``degree`` polynomial.

    R is the Chebyshev interpolant (Chebyshev economization) of the Taylor series
    R(z) = Σ_{k≥1} c_k z^{k−1}, c_k = (2k)!/(4^k (k!)² (2k+1)), summed to 60 terms (exact in float64
    on [0, ¼]). Its singularity at z = 1 makes the Chebyshev coefficients fall like 13.9^{−j}, so
    degree 12 reaches the float64 rounding level (arcsin within 1 ulp on [−½, ½]) where the Taylor
    series needs about 24 terms; degree 6 suffices for float32.
    """
    taylor = [math.comb(2 * k, k) / (4**k * (2 * k + 1)) for k in range(1, 61)]

    def tail(z: np.ndarray) -> np.ndarray:
        acc = np.zeros_like(z)
        for c in reversed(taylor):
            acc = acc * z + c
        return acc

    fit = np.polynomial.Chebyshev.interpolate(tail, degree, domain=[0.0, 0.25])
    power = fit.convert(kind=np.polynomial.Polynomial, domain=[0.0, 0.25], window=[0.0, 0.25])
    return tuple(float(c) for c in power.coef)


_ASIN_TAIL = {torch.float64: _asin_tail_coefficients(12), torch.float32: _asin_tail_coefficients(6)}


def _asin_reduced(y: Tensor, z: Tensor) -> Tensor:
    """arcsin(y) for |y| ≤ ½ given z = y², as y + y·z·R(z): one short Horner loop of multiply-adds."""
    coeffs = _ASIN_TAIL.get(y.dtype, _ASIN_TAIL[torch.float64])
    acc = coeffs[-1] * z + coeffs[-2]
    for c in reversed(coeffs[:-2]):
        acc = acc * z + c
    return y + y * z * acc


def _reduce(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(p, large, x) with p = arcsin(y) for the reduced argument y of x ∈ [−1, 1].

    |x| ≤ ½: y = x; |x| > ½ ("large"): y = √((1 − |x|)/2) = sin(arccos(|x|)/2) ∈ [0, ½]. Both cases
    share one polynomial evaluation and one square root (no branch is evaluated twice).
    """
    a = x.abs()
    large = a > 0.5
    z = torch.where(large, (1.0 - a) * 0.5, x * x)
    y = torch.where(large, torch.sqrt(z), x)
    return _asin_reduced(y, z), large, x


def arcsin_poly(x: Tensor) -> Tensor:
    """arcsin on [−1, 1] from multiply-adds and one square root: arcsin|x| = π/2 − 2·arcsin(y) for
    |x| > ½ (vectorises when compiled, where float64 libm calls do not)."""
    p, large, x = _reduce(x)
    return torch.where(large, torch.copysign(math.pi / 2 - 2.0 * p, x), p)


def arccos_poly(x: Tensor) -> Tensor:
    """arccos on [−1, 1] like ``arcsin_poly``: 2·arcsin(y) for x > ½ (relative accuracy as θ → 0),
    π − 2·arcsin(y) for x < −½, π/2 − arcsin(x) in between."""
    p, large, x = _reduce(x)
    return torch.where(large, torch.where(x > 0, 2.0 * p, math.pi - 2.0 * p), math.pi / 2 - p)


def arcsin(x: Tensor) -> Tensor:
    """arcsin; inside ``torch.compile`` a multiply-add form that vectorises (float64 libm does not)."""
    if torch.compiler.is_compiling():
        return arcsin_poly(x)
    return torch.asin(x)


def arccos(x: Tensor) -> Tensor:
    """arccos; inside ``torch.compile`` the vectorising form ``arccos_poly``."""
    if torch.compiler.is_compiling():
        return arccos_poly(x)
    return torch.arccos(x)


def arcsin_with_slope(x: Tensor, slope: Callable[[], Tensor]) -> Tensor:
    """arcsin(x), x clamped to [−1, 1], whose derivative is ``slope`` = 1/√(1 − x²) as the caller computes it.

    Near |x| = 1, 1 − x² computed from a rounded x loses every digit (x rounds to ±1 in float32 once
    the variances reach ~1e7), and autograd's 1/√(1 − x²) becomes inf, inf·0 = NaN further back. The
    closed forms know 1 − x² as a ratio of positive terms (erf: (1+2b²k11)(1+2b²k22) − 4b⁴k12² over
    (1+2b²k11)(1+2b²k22)), so they pass the slope, finite and accurate, and the value keeps the
    polynomial/libm arcsin. The derivative also stays correct where rounding put |x| slightly above 1
    (a clamp would zero it there). ``slope`` is called only when x needs gradients.
    """
    if not x.requires_grad:
        return arcsin(torch.clamp(x, -1.0, 1.0))
    detached = x.detach()
    return arcsin(torch.clamp(detached, -1.0, 1.0)) + (x - detached) * slope()
