"""Shared helpers for the kernel tests."""

from __future__ import annotations

import torch
from torch import Tensor

from bayesact import activations as A
from bayesact.kernels import CLOSED_FORMS


def rel_frobenius(actual: Tensor, expected: Tensor) -> float:
    """‖A − E‖_F / max(‖E‖_F, 1e-12), the neural-tangents test metric."""
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-12))


def erf_maps(k11: Tensor, k22: Tensor, k12: Tensor) -> tuple[Tensor, Tensor]:
    """erf's dual maps written out (Williams 1997): T = (2/π)·arcsin(2k12/√((1+2k11)(1+2k22))) and
    Ṫ = (4/π)/√((1+2k11)(1+2k22) − 4k12²), for the by-hand recursions."""
    den = torch.sqrt((1 + 2 * k11) * (1 + 2 * k22))
    t = 2 / torch.pi * torch.asin(2 * k12 / den)
    t_dot = 4 / torch.pi / torch.sqrt((1 + 2 * k11) * (1 + 2 * k22) - 4 * k12**2)
    return t, t_dot


def elementwise_names() -> list[str]:
    return [n for n in A.names() if A.info(n).elementwise]


def quadrature_names() -> list[str]:
    return [n for n in elementwise_names() if n not in CLOSED_FORMS]


def closed_form_names() -> list[str]:
    return sorted(CLOSED_FORMS)


#: W_std per activation where the default 1.5 would make the test degenerate (siren: sin(30x))
WEIGHT_STD = {"siren": 0.05}


def inputs(n: int = 5, m: int = 3, d: int = 3, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1234)
    return (
        torch.randn(n, d, generator=g, dtype=dtype),
        torch.randn(m, d, generator=g, dtype=dtype),
    )
