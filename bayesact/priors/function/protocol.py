"""The contract of a prior over functions, as typed protocols checked structurally at run time.

A function prior is anything with ``sample_functions(x, n)`` returning ``n`` function draws at the
inputs ``x`` (N, d) as a tensor (n, N, out): :class:`~bayesact.models.BNN`,
:class:`~bayesact.priors.GPPrior`, process models. One that knows its covariance in closed form also
has ``covariance(x)`` (:class:`FunctionPriorWithCovariance`); consumers (functional-prior fitting,
dataset priors) use it when present and estimate it from draws otherwise.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class FunctionPrior(Protocol):
    """A distribution over functions f: R^d -> R^out, known through its draws."""

    def sample_functions(self, x: Tensor, n: int) -> Tensor:
        """``n`` independent draws of f at the rows of ``x`` (N, d): a tensor of shape (n, N, out)."""
        ...


@runtime_checkable
class FunctionPriorWithCovariance(FunctionPrior, Protocol):
    """A :class:`FunctionPrior` with a known (prior) covariance over the inputs."""

    def covariance(self, x: Tensor) -> Tensor:
        """Cov[f(x_i), f(x_j)] for the rows of ``x`` (N, d): a dense tensor (N, N)."""
        ...
