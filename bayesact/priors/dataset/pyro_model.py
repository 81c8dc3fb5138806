"""Datasets from a Pyro model run forward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro.infer import Predictive
from torch import Tensor

from ._common import check_sizes, seeded


class PyroDatasetPrior:
    """Datasets from any Pyro model ``model(num_points)`` that samples its inputs and outputs.

    The model is run forward (``pyro.infer.Predictive`` without observations) once per dataset
    (``parallel=True``: once for the whole batch, for a model whose sites broadcast over a leading
    sample dimension); the ``x_site`` value (N, d) or (N,) and the ``y_site`` value (N,) or (N, 1)
    of each run form one dataset. Any latent structure (hyperpriors, random architectures) is
    drawn afresh per dataset, as in the PFN paper's code, which accepts any Pyro model returning (x, y).

    Args:
        model: a Pyro model called as ``model(num_points)``.
        x_site: name of the sample (or deterministic) site holding x.
        y_site: name of the site holding y.
        parallel: vectorise the batch with Predictive's ``parallel=True``.
    """

    def __init__(self, model: Callable[[int], Any], *, x_site: str = "x", y_site: str = "y",
                 parallel: bool = False) -> None:
        if not callable(model):
            raise TypeError(f"'model' must be a Pyro model (a callable model(num_points)), "
                            f"got {type(model).__name__}")
        for name, value in (("x_site", x_site), ("y_site", y_site)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"'{name}' must be a site name (a non-empty str), got {value!r}")
        if not isinstance(parallel, bool):
            raise ValueError(f"'parallel' must be a bool, got {parallel!r}")
        self.model = model
        self.x_site = x_site
        self.y_site = y_site
        self.parallel = parallel

    def __repr__(self) -> str:
        name = getattr(self.model, "__qualname__", type(self.model).__name__)
        return f"PyroDatasetPrior({name}, x_site={self.x_site!r}, y_site={self.y_site!r})"

    def sample_batch(
        self, batch_size: int, num_points: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``batch_size`` model runs: x (B, N, d) and y (B, N), reproducible from ``generator``."""
        batch_size, num_points = check_sizes(batch_size, num_points)
        sites = [self.x_site, self.y_site]
        with seeded(generator), torch.no_grad():
            predictive = Predictive(self.model, num_samples=batch_size, return_sites=sites,
                                    parallel=self.parallel)
            out = predictive(num_points)
        for site in sites:
            if site not in out:
                raise ValueError(f"the model has no site {site!r} (x_site/y_site); sites: {sorted(out)}")
        x, y = out[self.x_site], out[self.y_site]
        b, n = batch_size, num_points
        if x.shape == (b, n):
            x = x.unsqueeze(-1)
        if y.shape == (b, n, 1):
            y = y.squeeze(-1)
        if x.dim() != 3 or x.shape[:2] != (b, n):
            raise ValueError(f"site {self.x_site!r} must have shape (num_points, d) = ({n}, d) per run, "
                             f"got {tuple(x.shape[1:])}")
        if y.shape != (b, n):
            raise ValueError(f"site {self.y_site!r} must have shape (num_points,) = ({n},) per run, "
                             f"got {tuple(y.shape[1:])}")
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        return x, y.to(x.dtype)
