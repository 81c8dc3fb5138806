"""Gated linear units: the last dimension is split in two halves, [gate, value] -> φ(gate) * value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._self_gated import arctan_gate
from .registry import activation

_GATES = {"arctan": arctan_gate, "sigmoid": torch.sigmoid, "gelu": torch.special.ndtr}


def split_gate_value(x: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """The two halves of the last dimension; ValueError when it is odd."""
    if x.dim() == 0 or x.shape[-1] % 2:
        raise ValueError(
            f"{name}: argument 'x' must have an even last dimension to split into [gate, value], "
            f"got shape {tuple(x.shape)}"
        )
    gate, value = x.chunk(2, dim=-1)
    return gate, value


def gate_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape of each half (what per-channel parameters align with); None for an odd last dimension."""
    if not shape or shape[-1] % 2:
        return None
    return (*shape[:-1], shape[-1] // 2)


@activation(smoothness="C-inf", elementwise=False, param_shape=gate_shape)
def glu(x: Tensor) -> Tensor:
    """Gated linear unit with a sigmoid gate; the first half of the last dimension is the gate.

    Formula: σ(gate) * value, [gate, value] = x split along the last dimension
    Paper: "Language Modeling with Gated Convolutional Networks" (Dauphin et al., ICML 2017)
    """
    gate, value = split_gate_value(x, "glu")
    return torch.sigmoid(gate) * value


@activation(smoothness="C0", elementwise=False, param_shape=gate_shape)
def reglu(x: Tensor) -> Tensor:
    """ReLU-gated linear unit.

    Formula: max(0, gate) * value, [gate, value] = x split along the last dimension
    Paper: "GLU Variants Improve Transformer" (Shazeer, 2020)
    """
    gate, value = split_gate_value(x, "reglu")
    return torch.relu(gate) * value


@activation(smoothness="C-inf", elementwise=False, param_shape=gate_shape)
def geglu(x: Tensor) -> Tensor:
    """GELU-gated linear unit.

    Formula: gate * Φ(gate) * value, [gate, value] = x split along the last dimension
    Paper: "GLU Variants Improve Transformer" (Shazeer, 2020)
    """
    gate, value = split_gate_value(x, "geglu")
    return F.gelu(gate) * value


@activation(smoothness="C-inf", elementwise=False, param_shape=gate_shape)
def swiglu(x: Tensor, *, beta: Tensor | float = 1.0) -> Tensor:
    """Swish-gated linear unit.

    Formula: gate * σ(beta * gate) * value, [gate, value] = x split along the last dimension
    Paper: "GLU Variants Improve Transformer" (Shazeer, 2020)
    """
    gate, value = split_gate_value(x, "swiglu")
    return gate * torch.sigmoid(beta * gate) * value


def _check_gate(options: Mapping[str, Any]) -> None:
    if options["gate"] not in _GATES:
        raise ValueError(f"xglu: 'gate' must be one of {sorted(_GATES)}, got {options['gate']!r}")


@activation(
    smoothness="C-inf", elementwise=False, options=("gate",), option_check=_check_gate, param_shape=gate_shape
)
def xglu(x: Tensor, *, alpha: Tensor | float = 0.0, gate: str = "arctan") -> Tensor:
    """First-order GLU with an expanded gate of range [-alpha, 1 + alpha] (arctan gate by default).

    ``gate`` picks g: "arctan" (arctan(u)/π + 1/2), "sigmoid" (σ(u)) or "gelu" (Φ(u)).

    Formula: ((1 + 2 alpha) * g(gate) - alpha) * value, [gate, value] = x split along the last dimension
    Paper: "Expanded Gating Ranges Improve Activation Functions" (Huang, 2024)
    """
    g, value = split_gate_value(x, "xglu")
    return ((1 + 2 * alpha) * _GATES[gate](g) - alpha) * value
