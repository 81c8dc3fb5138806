"""Periodic activations: sine, SIREN, Snake and learnable Fourier series."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .registry import activation, positive


@activation(smoothness="C-inf")
def sin(x: Tensor) -> Tensor:
    """Sine.

    Formula: sin(x)
    Paper: "Implicit Neural Representations with Periodic Activation Functions" (Sitzmann et al.,
        NeurIPS 2020)
    """
    return torch.sin(x)


@activation(smoothness="C-inf", constraints={"omega0": positive})
def siren(x: Tensor, *, omega0: Tensor | float = 30.0) -> Tensor:
    """SIREN sine with frequency omega0 (use with SIREN's uniform weight initialisation).

    Formula: sin(omega0 * x)
    Paper: "Implicit Neural Representations with Periodic Activation Functions" (Sitzmann et al.,
        NeurIPS 2020)
    """
    return torch.sin(omega0 * x)


@activation(smoothness="C-inf", constraints={"a": positive})
def snake(x: Tensor, *, a: Tensor | float = 1.0) -> Tensor:
    """Snake: identity plus a periodic ripple of frequency a (a -> 0 gives x).

    Formula: x + sin(a x)^2 / a
    Paper: "Neural Networks Fail to Learn Periodic Functions and How to Fix It" (Ziyin, Hartwig, Ueda,
        NeurIPS 2020)
    """
    return x + torch.square(torch.sin(a * x)) / a


def _check_fourier_shape(values: Mapping[str, Any]) -> None:
    shape = tuple(values["coeffs"].shape)
    if shape[0] != 2:
        raise ValueError(f"fourier: 'coeffs' must have shape (2, K, ...), got {shape}")


@activation(smoothness="C-inf", event_dims={"coeffs": 2}, values_check=_check_fourier_shape)
def fourier(
    x: Tensor,
    *,
    coeffs: Tensor | tuple[tuple[float, ...], tuple[float, ...]] = (
        (0.0, 0.0, 0.0, 0.0),
        (1.0, 0.0, 0.0, 0.0),
    ),
) -> Tensor:
    """Learnable Fourier series (the FKAN activation); the default is sin(x).

    ``coeffs`` has shape (2, K) or (2, K, *channel_shape): row 0 holds the cosine coefficients a_k,
    row 1 the sine coefficients b_k, for k = 1..K.

    cos(kx) and sin(kx) come from cos(x) and sin(x) by the angle-addition recurrence.

    Formula: sum_{k=1..K} a_k cos(k x) + b_k sin(k x)
    Paper: "Implicit Neural Representations with Fourier Kolmogorov-Arnold Networks" (Mehrabian et al.,
        2024)
    """
    assert isinstance(coeffs, Tensor)  # the registry binds tuples to tensors
    cos1, sin1 = torch.cos(x), torch.sin(x)
    cos_k, sin_k = cos1, sin1
    out = coeffs[0, 0] * cos_k + coeffs[1, 0] * sin_k
    for k in range(1, coeffs.shape[1]):  # angle addition: one sin and one cos for all harmonics
        cos_k, sin_k = cos_k * cos1 - sin_k * sin1, sin_k * cos1 + cos_k * sin1
        out = out + coeffs[0, k] * cos_k + coeffs[1, k] * sin_k
    return out
