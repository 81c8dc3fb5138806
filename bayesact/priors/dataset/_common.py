"""Pieces shared by the dataset priors: seeded sampling, per-dataset parameters, input samplers."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from .._checks import check_int

#: observation noise or a hyperparameter: a number, or a distribution drawn once per dataset
Parameter = float | Distribution
#: inputs: a distribution over one row x (event (d,), or batch (d,)), or ``(batch_size, num_points) -> x``
XSampler = Distribution | Callable[[int, int], Tensor]


@contextlib.contextmanager
def seeded(generator: torch.Generator | None) -> Iterator[None]:
    """Run code that draws from torch's global random stream reproducibly from ``generator``.

    A seed is drawn from ``generator`` and the global stream is seeded with it inside a
    ``fork_rng`` block, so the caller's global stream is left as it was. ``None``: the global
    stream as it is (no fork).
    """
    if generator is None:
        yield
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"'generator' must be a torch.Generator or None, got {type(generator).__name__}")
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def check_sizes(batch_size: Any, num_points: Any) -> tuple[int, int]:
    return check_int(batch_size, "batch_size"), check_int(num_points, "num_points")


def check_parameter(value: Any, name: str, *, allow_zero: bool = False) -> Parameter:
    """``value`` if it is a finite number > 0 (>= 0 with ``allow_zero``) or a torch distribution."""
    if isinstance(value, Distribution):
        return value
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"'{name}' must be a finite number {bound} or a torch Distribution, got {value!r}")
    return float(value)


def draw_parameter(value: Parameter, batch_size: int, name: str, dtype: torch.dtype,
                   device: torch.device | None = None) -> Tensor:
    """One value per dataset: (batch_size, *s) with s the distribution's batch and event shape
    (() for a number). Distribution draws must be finite and >= 0."""
    if not isinstance(value, Distribution):
        return torch.full((batch_size,), float(value), dtype=dtype, device=device)
    draws = value.sample((batch_size,)).to(dtype=dtype, device=device)
    if not bool(torch.isfinite(draws).all()) or bool((draws < 0).any()):
        raise ValueError(f"'{name}' drew a negative or non-finite value; use a distribution on [0, inf)")
    return draws


def check_x_sampler(x_sampler: Any) -> XSampler:
    if isinstance(x_sampler, Distribution) or callable(x_sampler):
        return x_sampler
    raise TypeError(
        "'x_sampler' must be a torch Distribution over one input row (e.g. "
        "Uniform(torch.zeros(d), torch.ones(d)).to_event(1)) or a callable (batch_size, num_points) -> "
        f"tensor (batch_size, num_points, d), got {type(x_sampler).__name__}"
    )


def sample_x(x_sampler: XSampler, batch_size: int, num_points: int) -> Tensor:
    """Inputs (batch_size, num_points, d) from ``x_sampler`` (global random stream)."""
    if isinstance(x_sampler, Distribution):
        x = x_sampler.sample((batch_size, num_points))
        if x.dim() == 2:  # a scalar distribution: one input dimension
            x = x.unsqueeze(-1)
    else:
        x = x_sampler(batch_size, num_points)
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[:2] != (batch_size, num_points):
        raise ValueError(
            f"'x_sampler' must give inputs of shape ({batch_size}, {num_points}, d), got "
            f"{getattr(x, 'shape', type(x).__name__)}"
        )
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return x
