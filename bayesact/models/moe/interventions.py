"""Do-interventions on a mixture-of-experts gate: mask experts off or force them on (MoTE, 2025).

Both are handlers in Pyro's style: use them as context managers (``with mask_experts(moe, [2]): ...``, which
affects the model, :meth:`~GaussianMoE.predict`, :meth:`~GaussianMoE.responsibilities` and fitting inside the
block) or call them like the model (``mask_experts(moe, [2])(x, y)`` runs the model under the intervention).
The router itself is left unchanged; only its output π(x) is replaced.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

import torch
from torch import Tensor

from .model import GaussianMoE

__all__ = ["force_experts", "mask_experts"]


class _GateIntervention:
    """π(x) -> π'(x) on ``moe``'s gate while active (re-entrant, nestable: inner ones apply last)."""

    def __init__(self, moe: GaussianMoE, experts: Iterable[int] | int, name: str):
        if not isinstance(moe, GaussianMoE):
            raise TypeError(f"'moe' must be a GaussianMoE, got {type(moe).__name__}")
        if isinstance(experts, int):
            experts = [experts]
        try:
            chosen = sorted({int(e) for e in experts})
        except (TypeError, ValueError):
            raise ValueError(f"'experts' must be an iterable of expert indices, got {experts!r}") from None
        k = moe.num_experts
        if not chosen or any(e < 0 or e >= k for e in chosen):
            raise ValueError(f"'experts' must be a non-empty set of indices in [0, {k - 1}], got {chosen}")
        self.moe = moe
        self.experts = tuple(chosen)
        self.name = name
        self._contexts: list[AbstractContextManager[None]] = []

    def _selected(self, weights: Tensor) -> Tensor:
        sel = torch.zeros(weights.shape[-1], dtype=weights.dtype, device=weights.device)
        sel[list(self.experts)] = 1
        return sel

    def apply(self, weights: Tensor) -> Tensor:
        raise NotImplementedError

    def __enter__(self) -> _GateIntervention:
        ctx = self.moe.intervened(self.apply)
        ctx.__enter__()
        self._contexts.append(ctx)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._contexts.pop().__exit__(exc_type, exc, tb)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model ``moe(*args, **kwargs)`` under the intervention."""
        with self:
            return self.moe(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{self.name}(experts={list(self.experts)})"


class _Mask(_GateIntervention):
    def apply(self, weights: Tensor) -> Tensor:
        keep = 1 - self._selected(weights)
        kept = weights * keep
        total = kept.sum(-1, keepdim=True)
        uniform = (keep / keep.sum()).expand_as(weights)
        return torch.where(total > 0, kept / torch.where(total > 0, total, torch.ones_like(total)), uniform)


class _Force(_GateIntervention):
    def apply(self, weights: Tensor) -> Tensor:
        sel = self._selected(weights)
        return (sel / sel.sum()).expand_as(weights)


def mask_experts(moe: GaussianMoE, experts: Iterable[int] | int) -> _GateIntervention:
    """Switch ``experts`` off: π'_k = 0 for k in the set, π'_j = π_j / Σ_{l ∉ set} π_l for the others.

    For the softmax family this is exactly setting the masked logits to −∞ before the softmax. Rows whose
    whole
    mass was on masked experts (possible with sparse gates) get the uniform distribution over the others.
    Masking every expert is refused.
    """
    intervention = _Mask(moe, experts, "mask_experts")
    if len(intervention.experts) == moe.num_experts:
        raise ValueError("'experts' must leave at least one expert unmasked")
    return intervention


def force_experts(moe: GaussianMoE, experts: Iterable[int] | int) -> _GateIntervention:
    """Always select ``experts``: π' is uniform on the set and 0 elsewhere, whatever x.

    This is the limit of setting the forced logits to +∞ (at equal rates) in a softmax or top-K gate; one
    forced
    expert gets π' = 1.
    """
    return _Force(moe, experts, "force_experts")
