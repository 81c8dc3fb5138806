"""The dual-activation interface: Gaussian expectations that drive the NNGP/NTK recursion.

For a 2×2 covariance Λ = [[k11, k12], [k12, k22]] and (u, v) ~ N(0, Λ), a dual activation gives

    T(Λ) = E[φ(u) φ(v)]        (the NNGP map)
    Ṫ(Λ) = E[φ'(u) φ'(v)]      (the NTK derivative map; Ṫ = ∂T/∂k12 by Price's theorem)

("Kernel Methods for Deep Learning", Cho & Saul, NeurIPS 2009; "Toward Deeper Understanding of
Neural Networks: The Power of Initialization and a Dual View on Expressivity", Daniely, Frostig &
Singer, NeurIPS 2016). The concrete duals, by module of ``bayesact.kernels``:

* ``arccos``: ``ABReLUDual``, ``RectifiedPolynomialDual`` (closed forms, the arc-cosine family)
* ``erf_gelu``: ``ErfDual``, ``GeluDual`` (closed forms)
* ``trig``: ``TrigDual`` (closed form, trigonometric series)
* ``gaussian``: ``GaussianDual``, ``ExpDual`` (closed forms)
* ``hermite``: ``HermiteDual`` (Hermite series, any elementwise activation)
* ``gauss_hermite``: ``GaussHermiteDual`` (two-dimensional Gauss–Hermite quadrature)

``resolve.dual_activation`` picks one for an activation; ``resolve.CLOSED_FORMS`` maps registry
names to the closed forms.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DualActivation", "PointData", "Scratch", "write_into"]


def write_into(out: Tensor, op: Callable[..., Tensor], a: Tensor, b: Tensor) -> Tensor:
    """``op(a, b)`` written into ``out`` (which it may alias), for a binary elementwise ``op`` such
    as ``torch.mul``; ``out`` may have more batch dimensions than ``a`` and ``b`` broadcast to (an
    ``out=`` of another shape would be resized), then the smaller result is computed and copied."""
    if torch.broadcast_shapes(a.shape, b.shape) == out.shape:
        return op(a, b, out=out)
    return out.copy_(op(a, b))


@dataclass
class PointData:
    """What a dual needs to know about each input point at one layer.

    Attributes:
        diag: T(k, k) = E[φ(u)²] for u ~ N(0, k), shape ``(..., n)``.
        diag_dot: Ṫ(k, k) = E[φ'(u)²], shape ``(..., n)``; ``None`` when the NTK is not needed.
        features: per-point tensors of shape ``(..., n, F)`` that ``pair`` consumes (for example
            Hermite coefficients); empty for closed forms.
    """

    diag: Tensor
    diag_dot: Tensor | None
    features: tuple[Tensor, ...] = ()


class Scratch:
    """Block-shaped buffers that ``pair_inplace`` writes into, reused across layers and blocks.

    ``buffer(i)`` is the i-th buffer with the current block's ``shape`` (a view of the first
    entries of one allocation of ``capacity`` entries, so a smaller last block needs no new memory).
    Reusing memory is what makes the no-grad recursion cheap: fresh block temporaries of a few MB
    come back from the allocator as new pages, and their page faults cost as much as the arithmetic.
    """

    def __init__(self, capacity: int, dtype: torch.dtype, device: torch.device) -> None:
        self.capacity = capacity
        self.dtype, self.device = dtype, device
        self.shape: tuple[int, ...] = ()
        self._buffers: list[Tensor] = []

    def buffer(self, i: int) -> Tensor:
        """The i-th buffer, of shape ``self.shape`` (uninitialised)."""
        while len(self._buffers) <= i:
            self._buffers.append(torch.empty(self.capacity, dtype=self.dtype, device=self.device))
        return self._buffers[i][: math.prod(self.shape)].view(self.shape)

    def owns(self, t: Tensor) -> bool:
        """Whether ``t`` is one of the buffers (so the caller may overwrite it)."""
        ptr = t.data_ptr()
        return any(b.data_ptr() == ptr for b in self._buffers) and t.shape == self.shape


class DualActivation(ABC):
    """T(Λ) = E[φ(u)φ(v)] and Ṫ(Λ) = E[φ'(u)φ'(v)] for one elementwise activation φ.

    Subclasses implement ``function`` (φ itself, used by Monte Carlo checks) and ``pair``; they may
    override ``point_data`` to precompute per-point quantities and exact diagonals.
    """

    #: approximate number of live temporaries per kernel entry in ``pair`` (sizes the blocks)
    entry_cost: int = 16
    #: a cap on the entries of one block (e.g. to keep a many-pass loop in cache); None: no cap
    block_entries: int | None = None
    #: whether ``fused=True`` compiles ``pair`` (False where it is already a tuned loop)
    fusable: bool = True

    @abstractmethod
    def function(self, x: Tensor) -> Tensor:
        """The activation φ applied elementwise."""

    @abstractmethod
    def pair(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        features1: tuple[Tensor, ...],
        features2: tuple[Tensor, ...],
        with_ntk: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """Return (T, Ṫ or None) elementwise; k11, k22, k12 and the features broadcast together."""

    def pair_inplace(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        features1: tuple[Tensor, ...],
        features2: tuple[Tensor, ...],
        with_ntk: bool,
        scratch: Scratch,
    ) -> tuple[Tensor, Tensor | None]:
        """``pair`` for the no-grad recursion, which owns ``k12`` (it may be overwritten) and
        overwrites whatever it gets back that is ``k12`` or a ``scratch`` buffer. Called only when
        nothing requires gradients, :meth:`works_in_place` is True and both feature tuples are
        non-empty (otherwise the recursion calls ``pair``); must give ``pair``'s values (the same
        operations in the same order give the same bits). Default: ``pair`` itself."""
        return self.pair(k11, k22, k12, features1, features2, with_ntk)

    def works_in_place(self) -> bool:
        """Whether ``pair_inplace`` works in ``scratch`` buffers (then the recursion sizes its blocks
        to stay in cache); False where it would make fresh temporaries (the default)."""
        return False

    def point_data(self, k: Tensor, with_ntk: bool) -> PointData:
        """Per-point data for variances ``k`` of shape ``(..., n)``; default: T(k, k) from ``pair``."""
        t, t_dot = self.pair(k, k, k, (), (), with_ntk)
        return PointData(diag=t, diag_dot=t_dot)
