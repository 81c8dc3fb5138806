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

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import Tensor

__all__ = ["DualActivation", "PointData"]


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

    def point_data(self, k: Tensor, with_ntk: bool) -> PointData:
        """Per-point data for variances ``k`` of shape ``(..., n)``; default: T(k, k) from ``pair``."""
        t, t_dot = self.pair(k, k, k, (), (), with_ntk)
        return PointData(diag=t, diag_dot=t_dot)
