"""What functional-prior fitting needs from the network whose weight prior it tunes, as protocols.

:class:`~bayesact.models.BNN` satisfies them structurally; so does any network that draws its
functions through a :class:`~bayesact.priors.WeightPrior`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor

from ..function.protocol import FunctionPrior
from ..weight.base import WeightPrior


@runtime_checkable
class HasWeightPrior(Protocol):
    """A network with a tunable weight prior and a known input dimension."""

    @property
    def prior(self) -> WeightPrior:
        """The weight prior whose hyperparameters fitting tunes (``sample_functions`` must draw through
        :meth:`WeightPrior.rsample_layer`, so that it is differentiable in them)."""
        ...

    @property
    def in_dim(self) -> int:
        """The number of input features d: measurement points have shape (M, d)."""
        ...


@runtime_checkable
class HasActivation(Protocol):
    """A network with one elementwise activation φ, needed for its NNGP kernel (``method="nngp"``)."""

    @property
    def activation(self) -> Callable[[Tensor], Tensor]:
        """φ, applied after every hidden layer."""
        ...


class WeightSpacePrior(FunctionPrior, HasWeightPrior, Protocol):
    """A function prior induced by a weight prior: the ``bnn`` argument of fitting (for typing)."""
