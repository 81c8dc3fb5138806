"""Measurement-point samplers: where prior functions are compared during functional-prior fitting."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def mixed_measurement_sampler(
    x_train: Tensor,
    num_points: int = 100,
    *,
    real_fraction: float = 0.7,
    generator: torch.Generator | None = None,
) -> Callable[[], Tensor]:
    """A callable drawing fresh measurement sets: training inputs mixed with uniform box points.

    Each call returns ``num_points`` rows: a fraction ``real_fraction`` drawn without replacement from
    ``x_train`` and the rest uniform in the bounding box of ``x_train`` (training inputs only, so no
    test information leaks into the prior), shuffled. This is the UCI recipe of Tran et al. (JMLR
    2022), who used 70% real points and M = 100.
    """
    if not isinstance(x_train, Tensor) or x_train.dim() != 2 or x_train.shape[0] < 1:
        raise ValueError("'x_train' must be a tensor of shape (N, d) with N >= 1")
    if not 0.0 <= real_fraction <= 1.0:
        raise ValueError(f"'real_fraction' must be in [0, 1], got {real_fraction}")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"'num_points' must be an int >= 2, got {num_points!r}")
    num_real = min(round(real_fraction * num_points), x_train.shape[0])
    low, high = x_train.min(0).values, x_train.max(0).values

    def sample() -> Tensor:
        rows = torch.randperm(x_train.shape[0], generator=generator)[:num_real]
        shape = (num_points - num_real, x_train.shape[1])
        uniform = torch.rand(shape, generator=generator, dtype=x_train.dtype)
        box = low + (high - low) * uniform.to(x_train.device)
        points = torch.cat([x_train[rows.to(x_train.device)], box])
        return points[torch.randperm(num_points, generator=generator).to(x_train.device)]

    return sample
