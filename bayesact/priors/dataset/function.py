"""Datasets from any function prior plus observation noise."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._checks import check_protocol
from ..function.protocol import FunctionPrior
from ._common import (
    Parameter,
    XSampler,
    check_parameter,
    check_sizes,
    check_x_sampler,
    draw_parameter,
    sample_x,
    seeded,
)


class DatasetPrior:
    """Datasets D = {(x_i, y_i)}: x_i ~ ``x_sampler``, f ~ ``prior``, y_i = f(x_i) + σ ε_i, ε_i ~ N(0, 1).

    ``prior`` is any :class:`~bayesact.priors.FunctionPrior` (``sample_functions(x, n)``):
    :class:`~bayesact.models.BNN` (fresh random weights per dataset), :class:`~bayesact.priors.GPPrior`,
    the process models of :mod:`bayesact.models.processes`. Each dataset has its own inputs, so
    ``sample_functions`` is called once per dataset (a GP prior's Cholesky per dataset; for a
    batched GP path see :class:`GPDatasetPrior`). The noise std σ is a number or a distribution
    drawn once per dataset.

    Args:
        prior: the function prior (scalar output).
        x_sampler: a distribution over one input row (event shape (d,), e.g.
            ``Uniform(torch.zeros(d), torch.ones(d)).to_event(1)``), or a callable
            ``(batch_size, num_points) -> (batch_size, num_points, d)``.
        noise_std: σ >= 0, a number or a distribution on [0, ∞).
    """

    def __init__(self, prior: FunctionPrior, x_sampler: XSampler, noise_std: Parameter = 0.1) -> None:
        check_protocol(prior, FunctionPrior, "prior", "have sample_functions(x, n) (a FunctionPrior)")
        self.prior = prior
        self.x_sampler = check_x_sampler(x_sampler)
        self.noise_std = check_parameter(noise_std, "noise_std", allow_zero=True)

    def __repr__(self) -> str:
        return f"DatasetPrior({self.prior!r}, noise_std={self.noise_std!r})"

    def sample_batch(
        self, batch_size: int, num_points: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``batch_size`` datasets of ``num_points`` points: x (B, N, d) and y (B, N), drawn
        reproducibly from ``generator`` (torch's global stream is left unchanged), or from the
        global stream when it is ``None``."""
        batch_size, num_points = check_sizes(batch_size, num_points)
        with seeded(generator), torch.no_grad():
            x = sample_x(self.x_sampler, batch_size, num_points)
            f = torch.stack([self._function(x[b]) for b in range(batch_size)])
            sigma = draw_parameter(self.noise_std, batch_size, "noise_std", f.dtype, f.device)
            y = f + sigma.reshape(batch_size, 1) * torch.randn_like(f)
        return x, y

    def _function(self, x: Tensor) -> Tensor:
        draw: Any = self.prior.sample_functions(x, 1)
        if not isinstance(draw, Tensor) or draw.shape not in ((1, x.shape[0], 1), (1, x.shape[0])):
            raise ValueError(
                f"'prior'.sample_functions(x, 1) must return a tensor (1, {x.shape[0]}, 1) (one scalar "
                f"function), got {getattr(draw, 'shape', type(draw).__name__)}"
            )
        return draw.reshape(x.shape[0]).to(x.dtype)
