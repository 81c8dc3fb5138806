"""Probability maps: functions from logits to points on the simplex along ``dim`` (gates, likelihoods).

All share one calling convention: ``x`` first, then the map's required arguments (``k`` of
``topk_softmax``, ``q`` and ``d`` of ``sdm``), then the keyword-only ``dim=-1`` and, where the map has
one, ``temperature=1.0``. They are registered (``kind="probability_map"``), so
``bayesact.activations.get("sparsemax")`` is a module applying the map (with a trainable, positive
temperature) and ``bayesact.activations.info("sparsemax")`` describes it; ``names()`` lists them with
``names("probability_map")``. A temperature must be finite and > 0 (a float or a tensor that broadcasts
against ``x``); anything else is a ``ValueError``.

The shift-invariant maps (softmax, sparsemax, top-k softmax) subtract the maximum along ``dim`` before
dividing by the temperature, so large finite logits and tiny temperatures neither overflow nor lose the
support to rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .registry import activation, nonnegative, positive, unit_interval

__all__ = ["sdm", "softmax", "sparsemax", "stablemax", "topk_softmax"]


def _check_dim_option(options: Mapping[str, Any]) -> None:
    dim = options["dim"]
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"'dim' must be an int, got {type(dim).__name__}")


def _check_k_option(options: Mapping[str, Any]) -> None:
    _check_dim_option(options)
    k = options["k"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"topk_softmax: 'k' must be an int >= 1, got {k!r}")


def _check_dim(x: Tensor, dim: int, name: str) -> None:
    n = x.dim()
    if n == 0 or not -n <= dim < n:
        raise ValueError(
            f"{name}: 'dim' must be in [{-max(n, 1)}, {max(n, 1) - 1}] for an input of shape "
            f"{tuple(x.shape)} (at least one dimension), got {dim}"
        )


def _shifted(x: Tensor, dim: int) -> Tensor:
    """x minus its maximum along ``dim`` (a constant per slice, so no gradient flows through it)."""
    return x - x.detach().amax(dim=dim, keepdim=True)


@activation(
    smoothness="C-inf", options=("dim",), option_check=_check_dim_option,
    constraints={"temperature": positive}, elementwise=False, kind="probability_map",
)
def softmax(x: Tensor, *, dim: int = -1, temperature: Tensor | float = 1.0) -> Tensor:
    """Softmax with temperature; temperature -> 0 gives the one-hot argmax, -> inf the uniform vector.

    Formula: p_i = exp(x_i / τ) / sum_j exp(x_j / τ)
    Paper: standard (Bridle, 1990); temperature gates in mixture-of-experts routers
    """
    _check_dim(x, dim, "softmax")
    return torch.softmax(_shifted(x, dim) / temperature, dim=dim)


@activation(
    smoothness="discontinuous", options=("k", "dim"), option_check=_check_k_option,
    constraints={"temperature": positive}, elementwise=False, kind="probability_map",
)
def topk_softmax(x: Tensor, k: int, *, dim: int = -1, temperature: Tensor | float = 1.0) -> Tensor:
    """Softmax over the k largest logits, zero elsewhere (k = size gives softmax); ties at the k-th are kept.

    Formula: p_i = exp(x_i/τ) / sum_{j in top-k} exp(x_j/τ) for i in top-k, else 0
    Paper: "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer" (Shazeer
        et al., ICLR 2017)
    """
    _check_dim(x, dim, "topk_softmax")
    size = x.shape[dim]
    if not k <= size:
        raise ValueError(f"topk_softmax: 'k' must be an int in [1, {size}], got {k!r}")
    z = _shifted(x, dim) / temperature
    kth = torch.topk(z, k, dim=dim).values.narrow(dim, k - 1, 1)
    masked = torch.where(z >= kth, z, torch.full_like(z, float("-inf")))
    return torch.softmax(masked, dim=dim)


class _Sparsemax(torch.autograd.Function):
    """Sparsemax along the last dimension with its closed-form Jacobian-vector product.

    Written with ``setup_context`` so that ``torch.func`` transforms (the fused path's vjp) apply.
    """

    @staticmethod
    def forward(z: Tensor) -> Tensor:
        z = z - z.amax(dim=-1, keepdim=True)  # the maximum becomes 0, so 1 + 1 * 0 > 0: k >= 1
        sorted_z, _ = torch.sort(z, dim=-1, descending=True)
        cumsum = sorted_z.cumsum(dim=-1)
        ks = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
        support = 1 + ks * sorted_z > cumsum
        k = support.sum(dim=-1, keepdim=True).clamp(min=1)  # the clamp guards NaN input only
        tau = (cumsum.gather(-1, k - 1) - 1) / k.to(z.dtype)
        return torch.clamp(z - tau, min=0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (p,) = ctx.saved_tensors
        support = (p > 0).to(grad.dtype)
        mean_on_support = (grad * support).sum(-1, keepdim=True) / support.sum(-1, keepdim=True)
        return support * (grad - mean_on_support)


@activation(
    smoothness="C0", options=("dim",), option_check=_check_dim_option,
    constraints={"temperature": positive}, elementwise=False, kind="probability_map",
)
def sparsemax(x: Tensor, *, dim: int = -1, temperature: Tensor | float = 1.0) -> Tensor:
    """Sparsemax: the Euclidean projection of x / τ onto the simplex (exact zeros allowed).

    Sort z = x/τ descending; k(z) = max{k : 1 + k z_(k) > sum_{j<=k} z_(j)};
    τ(z) = (sum_{j<=k(z)} z_(j) - 1) / k(z). The Jacobian is diag(s) - s sᵀ / |S| (s: support).
    Computed on z - max(z) (sparsemax is shift invariant), so the largest entry is always in the support.

    Formula: p = argmin_{p in Δ} ||p - x/τ||², i.e. p_i = max(x_i/τ - τ(x/τ), 0)
    Paper: "From Softmax to Sparsemax: A Sparse Model of Attention and Multi-Label Classification"
        (Martins & Astudillo, ICML 2016)
    """
    _check_dim(x, dim, "sparsemax")
    z = (_shifted(x, dim) / temperature).movedim(dim, -1)
    return _Sparsemax.apply(z).movedim(-1, dim)


@activation(
    smoothness="C1", options=("dim",), option_check=_check_dim_option, elementwise=False,
    kind="probability_map",
)
def stablemax(x: Tensor, *, dim: int = -1) -> Tensor:
    """StableMax: softmax with exp replaced by a C1 function of linear (not exponential) growth.

    Not translation invariant, unlike softmax.

    Formula: p_i = s(x_i) / sum_j s(x_j), s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0
    Paper: "Grokking at the Edge of Numerical Stability" (Prieto et al., ICLR 2025)
    """
    _check_dim(x, dim, "stablemax")
    # the clamp guards only the branch with a pole (x = 1); the selected branch at x = 0 is x + 1, so the
    # slope there is 1 whatever the torch version does with clamp's gradient at its boundary
    s = torch.where(x >= 0, x + 1, 1 / (1 - torch.clamp(x, max=0)))
    return s / s.sum(dim=dim, keepdim=True)


@activation(
    smoothness="C-inf", options=("dim",), option_check=_check_dim_option,
    constraints={"q": nonnegative, "d": unit_interval}, elementwise=False, kind="probability_map",
)
def sdm(x: Tensor, q: Tensor | float, d: Tensor | float, *, dim: int = -1) -> Tensor:
    """Similarity-distance-magnitude activation: softmax in base (2 + q), scaled by d.

    q >= 0 is a similarity count and d in [0, 1] a distance quantile (both from a kNN index in the
    paper); tensors broadcast against x. d = 0 gives the uniform vector; d·ln(2 + q) = 1 gives softmax.

    Formula: p_i = (2 + q)^(d x_i) / sum_j (2 + q)^(d x_j) = softmax(d ln(2 + q) x)_i
    Paper: "Similarity-Distance-Magnitude Universal Verification" (Schmaltz, 2025)
    """
    _check_dim(x, dim, "sdm")
    assert isinstance(q, Tensor) and isinstance(d, Tensor)  # the registry binds numbers to tensors
    return torch.softmax(x * (d * torch.log(2 + q)), dim=dim)
