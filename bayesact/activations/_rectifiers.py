"""Rectifier family: ReLU and its piecewise relatives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .registry import Smoothness, activation, nonnegative, positive, smoothness_of_power_series

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _c1_when(param: str, value: float) -> Any:
    def rule(values: Mapping[str, Any]) -> Smoothness:
        return "C1" if bool((values[param] == value).all()) else "C0"

    return rule


@activation(smoothness="C0", native=True)
def relu(x: Tensor) -> Tensor:
    """Rectified linear unit.

    Formula: max(0, x)
    Paper: "Rectified Linear Units Improve Restricted Boltzmann Machines" (Nair & Hinton, ICML 2010)
    """
    return torch.relu(x)


@activation(smoothness="C0")
def leaky_relu(x: Tensor, *, negative_slope: Tensor | float = 0.01) -> Tensor:
    """Leaky ReLU.

    Formula: x for x >= 0, negative_slope * x for x < 0
    Paper: "Rectifier Nonlinearities Improve Neural Network Acoustic Models" (Maas, Hannun, Ng, 2013)
    """
    return torch.where(x >= 0, x, negative_slope * x)


@activation(smoothness=lambda v: "C-inf" if bool((v["a"] == v["b"]).all()) else "C0")
def abrelu(x: Tensor, *, a: Tensor | float = 0.0, b: Tensor | float = 1.0) -> Tensor:
    """Asymmetric ReLU: slope ``a`` left of zero, ``b`` right of it (ReLU, leaky ReLU and |x| are cases).

    Formula: a * min(x, 0) + b * max(x, 0)
    Paper: neural-tangents' ABRelu layer ("Neural Tangents: Fast and Easy Infinite Neural Networks
        in Python", Novak et al., ICLR 2020)
    """
    return torch.where(x >= 0, b * x, a * x)


@activation(smoothness="C0", name="abs")
def abs_(x: Tensor) -> Tensor:
    """Absolute value.

    Formula: |x|
    Paper: "Neural Tangents: Fast and Easy Infinite Neural Networks in Python" (Novak et al., ICLR 2020)
    """
    return torch.abs(x)


@activation(smoothness="C-inf", native=True)
def identity(x: Tensor) -> Tensor:
    """Identity (a linear network).

    Formula: x
    Paper: none (the linear-network baseline)
    """
    return x


@activation(smoothness=_c1_when("alpha", 1.0), constraints={"alpha": nonnegative})
def elu(x: Tensor, *, alpha: Tensor | float = 1.0) -> Tensor:
    """Exponential linear unit (C1 only for alpha = 1).

    Formula: x for x > 0, alpha * (exp(x) - 1) for x <= 0
    Paper: "Fast and Accurate Deep Network Learning by Exponential Linear Units (ELUs)" (Clevert,
        Unterthiner, Hochreiter, ICLR 2016)
    """
    return torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0.0)))


@activation(smoothness="C0")
def selu(x: Tensor) -> Tensor:
    """Scaled ELU with the self-normalising constants (alpha ≈ 1.6733, scale ≈ 1.0507).

    Formula: scale * (x for x > 0, alpha * (exp(x) - 1) for x <= 0)
    Paper: "Self-Normalizing Neural Networks" (Klambauer, Unterthiner, Mayr, Hochreiter, NeurIPS 2017)
    """
    return _SELU_SCALE * torch.where(x > 0, x, _SELU_ALPHA * torch.expm1(torch.clamp(x, max=0.0)))


@activation(smoothness="C1")
def relu2(x: Tensor) -> Tensor:
    """Squared ReLU (ReQU).

    Formula: max(0, x)^2
    Paper: "Primer: Searching for Efficient Transformers for Language Modeling" (So et al., NeurIPS
        2021); "ReLU² Wins: Discovering Efficient Activation Functions for Sparse LLMs" (2024)
    """
    return torch.square(torch.relu(x))


@activation(smoothness="C0")
def crrelu(x: Tensor, *, eps: Tensor | float = 0.01) -> Tensor:
    """Correction regularized ReLU.

    Formula: max(0, x) + eps * x * exp(-x^2 / 2)
    Paper: "A Method on Searching Better Activation Functions" (2024)
    """
    return torch.relu(x) + eps * x * torch.exp(-0.5 * x * x)


@activation(smoothness="C1", constraints={"beta": positive})
def smelu(x: Tensor, *, beta: Tensor | float = 1.0) -> Tensor:
    """Smooth ReLU: a quadratic bridge of half-width beta between the two linear pieces.

    Formula: 0 for x <= -beta; (x + beta)^2 / (4 beta) for |x| <= beta; x for x >= beta
    Paper: "Smooth activations and reproducibility in deep networks" (Shamir, Lin, Coviello, 2020)
    """
    quadratic = torch.square(x + beta) / (4 * beta)
    return torch.where(x >= beta, x, torch.where(x <= -beta, torch.zeros_like(x), quadratic))


def _polyrelu_smoothness(values: Mapping[str, Any]) -> Smoothness:
    return smoothness_of_power_series(values["coeffs"])


@activation(smoothness=_polyrelu_smoothness, event_dims={"coeffs": 1})
def polyrelu(x: Tensor, *, coeffs: Tensor | tuple[float, ...] = (0.0, 1.0, 0.0, 0.0)) -> Tensor:
    """PolyReLU: a polynomial in ReLU(x); the default coefficients give exactly ReLU.

    ``coeffs`` has shape (r + 1,) or (r + 1, *channel_shape) for per-channel coefficients.

    Formula: sum_{i=0..r} coeffs[i] * max(0, x)^i  (r = 3 in the paper)
    Paper: "Polynomial Composition Activations: Unleashing the Dynamics of Large Language Models"
        (Zhuo et al., 2024)
    """
    assert isinstance(coeffs, Tensor)  # the registry binds tuples to tensors
    r = torch.relu(x)
    out = coeffs[-1] * torch.ones_like(x)
    for c in coeffs[:-1].flip(0):
        out = out * r + c
    return out
