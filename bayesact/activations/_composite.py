"""Activations built from others: mixtures of activations and PolyNorm (not elementwise)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .registry import Constraint, Smoothness, activation, min_smoothness, spec

simplex = Constraint(
    "on the simplex (entries >= 0 summing to 1 along the first dimension)",
    lambda v: (v >= 0).all() & (torch.abs(v.sum(0) - 1) <= 1e-5).all(),
    to_value=lambda raw: torch.softmax(raw, dim=0),
    # log of the weights (0 as the smallest normal number, so the raw value stays finite)
    to_raw=lambda v: torch.log(torch.clamp(v, min=torch.finfo(v.dtype).tiny)),
)


def _check_mixture_names(options: Mapping[str, Any]) -> None:
    names = options["names"]
    if isinstance(names, str) or not isinstance(names, Sequence) or len(names) == 0:
        raise TypeError("mixture: 'names' must be a non-empty sequence of activation names")
    for component in names:
        entry = spec(component)  # ValueError with the closest names if unknown
        if not entry.elementwise or component == "mixture":
            raise ValueError(f"mixture: component {component!r} must be an elementwise activation")


def _mixture_smoothness(values: Mapping[str, Any]) -> Smoothness:
    weights = values["weights"].reshape(len(values["names"]), -1)
    used = [n for n, w in zip(values["names"], weights, strict=True) if bool((w != 0).any())]
    return min_smoothness([spec(n).info().smoothness for n in used] or ["C-inf"])


def _check_weight_count(values: Mapping[str, Any]) -> None:
    if values["weights"].shape[0] != len(values["names"]):
        raise ValueError(
            f"mixture: 'weights' has {values['weights'].shape[0]} entries for "
            f"{len(values['names'])} components"
        )


def mixture_of(x: Tensor, weights: Tensor, components: Sequence[Tensor]) -> Tensor:
    """sum_k weights[k] * components[k] (shared by the functional and the module)."""
    out = torch.zeros_like(x)
    for w, y in zip(weights, components, strict=True):
        out = out + w * y
    return out


@activation(
    smoothness=_mixture_smoothness,
    options=("names",),
    option_check=_check_mixture_names,
    values_check=_check_weight_count,
    constraints={"weights": simplex},
    event_dims={"weights": 1},
    default_factories={"weights": lambda o: torch.full((len(o["names"]),), 1 / len(o["names"]))},
)
def mixture(
    x: Tensor,
    *,
    weights: Tensor | tuple[float, ...] | None = None,
    names: Sequence[str] = ("gelu", "tanh"),
) -> Tensor:
    """Convex mixture of registered activations (each with its default parameters); equal weights by default.

    ``bayesact.activations.get("mixture", names=..., weights=...)`` gives the trainable version whose
    components keep their own parameters (``module.components``).

    Formula: sum_k weights[k] * φ_k(x), weights on the simplex
    Paper: "Sample complexity of data-driven tuning of model hyperparameters in neural networks with
        structured parameter-dependent dual function" (2025) studies the two-component case
    """
    outputs = []
    for name in names:
        entry = spec(name)
        outputs.append(entry.fn(x, **entry.bind({}, dtype=x.dtype, device=x.device)))
    return mixture_of(x, weights, outputs)  # type: ignore[arg-type]


def _check_polynorm(options: Mapping[str, Any]) -> None:
    if isinstance(options["dim"], bool) or not isinstance(options["dim"], int):
        raise TypeError("polynorm: 'dim' must be an int")
    if not isinstance(options["eps"], int | float) or not options["eps"] > 0:
        raise ValueError("polynorm: 'eps' must be a number > 0")


@activation(
    smoothness="C-inf",
    options=("dim", "eps"),
    option_check=_check_polynorm,
    event_dims={"coeffs": 1},
    elementwise=False,
)
def polynorm(
    x: Tensor,
    *,
    coeffs: Tensor | tuple[float, ...] = (0.0, 1 / 3, 1 / 3, 1 / 3),
    dim: int = -1,
    eps: float = 1e-6,
) -> Tensor:
    """PolyNorm: normalised powers of x mixed by trainable weights (not elementwise).

    ``coeffs[0]`` is the bias b and ``coeffs[i]`` weights N(x^i); N normalises over ``dim`` (the hidden
    dimension), so the output depends on the whole hidden vector.

    Formula: b + sum_{i=1..r} w_i * N(x^i), N(u) = u / sqrt(mean_dim(u^2) + eps)
    Paper: "Polynomial Composition Activations: Unleashing the Dynamics of Large Language Models"
        (Zhuo et al., 2024)
    """
    out = coeffs[0] * torch.ones_like(x)
    power = torch.ones_like(x)
    for c in coeffs[1:]:
        power = power * x
        out = out + c * power * torch.rsqrt(torch.mean(power * power, dim=dim, keepdim=True) + eps)
    return out
