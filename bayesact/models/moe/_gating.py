"""Gate construction for :class:`~bayesact.models.moe.GaussianMoE`: names, options and pinning."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from . import gates as _gates

__all__ = ["GATE_NAMES", "build_gate", "per_expert_gate_params", "random_start"]

#: the gate names ``GaussianMoE(gate=...)`` accepts ("dselect" is DSelect-k)
GATE_NAMES = (
    "softmax",
    "temperature",
    "activation",
    "topk",
    "dselect",
    "dselect_k",
    "sparsemax",
    "stablemax",
)


def build_gate(
    gate: str | nn.Module,
    in_dim: int,
    num_experts: int,
    gate_kwargs: Mapping[str, Any] | None,
    pin_gate: bool | None,
) -> nn.Module:
    """The gate module for ``gate``: a name in :data:`GATE_NAMES` (built by
    :func:`~bayesact.models.moe.gates.make_gate`
    with ``gate_kwargs``; pinned when translation invariant unless ``pin_gate=False``) or a module as
    given."""
    if pin_gate is not None and not isinstance(pin_gate, bool):
        raise ValueError(f"'pin_gate' must be a bool or None, got {pin_gate!r}")
    if isinstance(gate, nn.Module):
        if gate_kwargs:
            raise ValueError("'gate_kwargs' must be None when 'gate' is an nn.Module (configure the module)")
        if pin_gate is not None:
            raise ValueError("'pin_gate' must be None when 'gate' is an nn.Module (pin it in the module)")
        return gate
    if not isinstance(gate, str) or gate not in GATE_NAMES:
        raise ValueError(f"'gate' must be one of {GATE_NAMES} or an nn.Module, got {gate!r}")
    if gate_kwargs is not None and not isinstance(gate_kwargs, Mapping):
        raise ValueError(f"'gate_kwargs' must be a mapping of gate options or None, got {gate_kwargs!r}")
    name = "dselect_k" if gate == "dselect" else gate
    options = dict(gate_kwargs or {})
    if "pinned" in options and pin_gate is not None:
        raise ValueError("give the pinning once: 'pin_gate' or gate_kwargs['pinned'], not both")
    if "pinned" not in options and "pinned" in _gates.gate_options(name):
        probe = _make(name, in_dim, num_experts, options)
        invariant = bool(getattr(probe, "translation_invariant", False))
        if pin_gate and not invariant:
            raise ValueError(f"'pin_gate' is True but the {gate!r} gate is not translation invariant")
        options["pinned"] = invariant if pin_gate is None else pin_gate
    elif pin_gate:
        raise ValueError(f"'pin_gate' is True but the {gate!r} gate has no pinning")
    return _make(name, in_dim, num_experts, options)


def _make(name: str, in_dim: int, num_experts: int, options: dict[str, Any]) -> nn.Module:
    try:
        return _gates.make_gate(name, in_dim, num_experts, options)
    except TypeError as err:  # an option the gate does not take, or a required one missing
        raise ValueError(f"'gate_kwargs': {err}") from None


def per_expert_gate_params(gate: nn.Module) -> tuple[str, ...]:
    """The gate's parameters with one row per expert (K, or K - 1 when pinned): ``weight`` and ``bias`` of a
    linear-logit gate; none for other gates."""
    return ("weight", "bias") if isinstance(gate, _gates.LinearGate) else ()


def random_start(gate: nn.Module, param: str, shape: torch.Size, gen: torch.Generator) -> Tensor | None:
    """A random restart value (float64, CPU) for the gate's parameter ``param``, or None where the gate has
    no initialisation of its own (the caller perturbs the current value).

    DSelect-k selector logits (``z_bias``, ``z_weight``): z ~ U(-γ/100, γ/100), as Hazimeh et al. (2021)
    initialise them: every smooth-step S(z) starts in its linear part |z| < γ/2, where S' > 0. A wider start
    (e.g. N(0, 1) with γ = 1: |z| >= γ/2 with probability 0.62 per bit) saturates bits at S' = 0, and the
    selector never leaves its starting code.
    Paper: "DSelect-k: Differentiable Selection in the Mixture of Experts with Applications to Multi-Task
        Learning" (Hazimeh et al., NeurIPS 2021)
    """
    if isinstance(gate, _gates.DSelectKGate) and param in ("z_bias", "z_weight"):
        g = gate.gamma / 100
        return (2 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1) * g
    return None
