"""Warmup adaptation, batched over chains: dual averaging, Welford moments, Stan's windows.

All functions are pure: state in, state out. Shapes: ``C`` chains, ``D`` unconstrained dims.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "DualAveragingState",
    "WelfordState",
    "adaptation_windows",
    "dual_averaging_init",
    "dual_averaging_update",
    "welford_covariance",
    "welford_init",
    "welford_update",
]


class DualAveragingState(NamedTuple):
    """Per-chain state of Nesterov dual averaging on ``log(step_size)``."""

    log_step: torch.Tensor  # (C,) current iterate x_t
    log_step_avg: torch.Tensor  # (C,) weighted average x̄_t (the final step size)
    error_avg: torch.Tensor  # (C,) running average H̄_t of (target - accept)
    mu: torch.Tensor  # (C,) shrinkage point, log(10 ε₀)
    count: int  # type: ignore[assignment]  # t (the field shadows tuple.count)


def dual_averaging_init(step_size: torch.Tensor) -> DualAveragingState:
    """Start dual averaging at ``step_size`` (C,), shrinking towards ``log(10 ε₀)``."""
    log_step = step_size.log()
    zeros = torch.zeros_like(log_step)
    return DualAveragingState(log_step, zeros, zeros, log_step + math.log(10.0), 0)


def dual_averaging_update(
    state: DualAveragingState,
    accept_prob: torch.Tensor,
    target: float,
    gamma: float = 0.05,
    t0: float = 10.0,
    kappa: float = 0.75,
) -> DualAveragingState:
    """One step of dual averaging (Hoffman & Gelman 2014, Alg. 5; Nesterov 2009).

    H̄_t = (1 - 1/(t + t₀)) H̄_{t-1} + (δ - α_t)/(t + t₀),
    x_t = μ - √t/γ H̄_t,  x̄_t = t^{-κ} x_t + (1 - t^{-κ}) x̄_{t-1},

    with δ the target acceptance, α_t the mean acceptance probability of the last
    trajectory and x = log ε. A NaN acceptance counts as 0.
    """
    t = state.count + 1
    accept = torch.nan_to_num(accept_prob, nan=0.0).clamp(0.0, 1.0)
    w = 1.0 / (t + t0)
    error_avg = (1 - w) * state.error_avg + w * (target - accept)
    log_step = state.mu - math.sqrt(t) / gamma * error_avg
    eta = t ** (-kappa)
    log_step_avg = eta * log_step + (1 - eta) * state.log_step_avg
    return DualAveragingState(log_step, log_step_avg, error_avg, state.mu, t)


class WelfordState(NamedTuple):
    """Running mean and (co)variance sums per chain (Welford 1962)."""

    mean: torch.Tensor  # (C, D)
    m2: torch.Tensor  # (C, D) diagonal or (C, D, D) dense
    count: int  # type: ignore[assignment]  # the field shadows tuple.count


def welford_init(num_chains: int, dim: int, dense: bool, like: torch.Tensor) -> WelfordState:
    """Empty Welford accumulator for ``num_chains`` chains of dimension ``dim``."""
    mean = like.new_zeros(num_chains, dim)
    m2 = like.new_zeros(num_chains, dim, dim) if dense else like.new_zeros(num_chains, dim)
    return WelfordState(mean, m2, 0)


def welford_update(state: WelfordState, x: torch.Tensor) -> WelfordState:
    """Add one draw ``x`` (C, D) per chain: δ = x - m; m += δ/n; M2 += δ (x - m)."""
    n = state.count + 1
    delta = x - state.mean
    mean = state.mean + delta / n
    if state.m2.dim() == 3:
        m2 = state.m2 + delta[:, :, None] * (x - mean)[:, None, :]
    else:
        m2 = state.m2 + delta * (x - mean)
    return WelfordState(mean, m2, n)


def welford_covariance(state: WelfordState, regularize: bool = True) -> torch.Tensor:
    """Sample (co)variance, shrunk towards 1e-3·I as in Stan: (n/(n+5)) Σ + 1e-3 (5/(n+5)) I."""
    n = state.count
    cov = state.m2 / max(n - 1, 1)
    if not regularize:
        return cov
    shrink = n / (n + 5.0)
    eps = 1e-3 * 5.0 / (n + 5.0)
    if cov.dim() == 3:
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        return shrink * cov + eps * eye
    return shrink * cov + eps


def adaptation_windows(
    num_warmup: int, init_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> list[tuple[int, int]]:
    """Stan's slow adaptation windows as (start, end) iteration ranges, end exclusive.

    Warmup starts with a fast interval of ``init_buffer`` iterations (step size only), then
    slow windows of ``base_window``, 2·``base_window``, ... iterations that estimate the mass
    matrix, and ends with ``term_buffer`` fast iterations. As in Stan's
    ``windowed_adaptation::compute_next_window``, every window after the first that would
    leave too little room for the next one (its end plus twice its size passes the end of
    the slow phase, ``num_warmup - term_buffer``) is stretched to that end; the first window
    always has ``base_window`` iterations (so 170 warmup iterations give windows of 25 and 20).
    Below 20 warmup iterations there is no slow window; when the three buffers do not fit,
    Stan's 15% / 75% / 10% split (truncated to integers) gives one slow window.
    """
    if num_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - init_buffer - term_buffer
    end_slow = num_warmup - term_buffer
    start, size = init_buffer, base_window
    end = start + size
    windows = [(start, end)]
    while end < end_slow:
        start, size = end, 2 * size
        end = start + size
        if end + 2 * size > end_slow:
            end = end_slow
        windows.append((start, end))
    return windows
