"""Dataset priors built from others: hyperpriors (a prior per dataset) and mixtures."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from bayesact.infer.pfn_training import DatasetSampler

from .._checks import check_protocol
from ._common import check_sizes, seeded


class HyperDatasetPrior:
    """A dataset prior whose hyperparameters are drawn per dataset: θ ~ p(θ), D ~ ``build(**θ)``.

    For each dataset every entry of ``hyperpriors`` is drawn (a tensor of the distribution's
    shape) and ``build`` turns the draws into a dataset prior (anything with ``sample_batch``,
    e.g. a :class:`DatasetPrior` around a GP prior with that lengthscale), which samples that
    one dataset. ``build`` runs once per dataset; for GP hyperpriors :class:`GPDatasetPrior`
    with distributions as hyperparameters does the same in one batched pass.

    Args:
        build: ``build(**theta) -> dataset prior``, keyword names = the keys of ``hyperpriors``.
        hyperpriors: name -> torch distribution.
    """

    def __init__(self, build: Callable[..., DatasetSampler], hyperpriors: Mapping[str, Distribution]) -> None:
        if not callable(build):
            raise TypeError(f"'build' must be a callable build(**hyperparameters), "
                            f"got {type(build).__name__}")
        if not isinstance(hyperpriors, Mapping) or not hyperpriors:
            raise ValueError(f"'hyperpriors' must be a non-empty mapping name -> Distribution, "
                             f"got {hyperpriors!r}")
        for name, value in hyperpriors.items():
            if not isinstance(name, str) or not isinstance(value, Distribution):
                raise ValueError(f"'hyperpriors' must map names to torch Distributions, "
                                 f"got {name!r}: {value!r}")
        self.build = build
        self.hyperpriors = dict(hyperpriors)

    def __repr__(self) -> str:
        return f"HyperDatasetPrior({getattr(self.build, '__qualname__', self.build)!r}, {self.hyperpriors!r})"

    def sample_batch(
        self, batch_size: int, num_points: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``batch_size`` datasets, each from its own hyperparameter draw: x (B, N, d), y (B, N)."""
        batch_size, num_points = check_sizes(batch_size, num_points)
        xs, ys = [], []
        with seeded(generator):
            for _ in range(batch_size):
                theta = {name: dist.sample() for name, dist in self.hyperpriors.items()}
                prior: Any = self.build(**theta)
                check_protocol(prior, DatasetSampler, "build", "return a dataset prior (with sample_batch)")
                x, y = prior.sample_batch(1, num_points)
                xs.append(x)
                ys.append(y)
        return _stack(xs, "build(...) priors"), _stack(ys, "build(...) priors")


class MixtureDatasetPrior:
    """Each dataset from component c ~ Categorical(``weights``) of ``priors`` (all with the same d).

    With ``per_batch=True`` one component is drawn per call and gives the whole batch, so the
    components may differ in input dimension (e.g. GPs on 1 to 5 inputs for a PFN that pads
    narrower datasets).

    Args:
        priors: dataset priors (anything with ``sample_batch``).
        weights: mixture weights >= 0 (normalised; default: equal).
        per_batch: draw the component once per batch instead of once per dataset.
    """

    def __init__(self, priors: Sequence[DatasetSampler], weights: Sequence[float] | None = None, *,
                 per_batch: bool = False) -> None:
        if isinstance(priors, str | bytes) or not isinstance(priors, Sequence) or not priors:
            raise ValueError(f"'priors' must be a non-empty sequence of dataset priors, got {priors!r}")
        for i, prior in enumerate(priors):
            check_protocol(prior, DatasetSampler, f"priors[{i}]", "be a dataset prior (with sample_batch)")
        self.priors = list(priors)
        if weights is None:
            weights = [1.0] * len(self.priors)
        w = torch.as_tensor(list(weights), dtype=torch.float64) if isinstance(weights, Sequence) else None
        if w is None or w.shape != (len(self.priors),) or not bool(torch.isfinite(w).all()) \
                or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(
                f"'weights' must be {len(self.priors)} finite numbers >= 0 with a positive sum, "
                f"got {weights!r}"
            )
        self.weights = w / w.sum()
        if not isinstance(per_batch, bool):
            raise ValueError(f"'per_batch' must be a bool, got {per_batch!r}")
        self.per_batch = per_batch

    def __repr__(self) -> str:
        return f"MixtureDatasetPrior({self.priors!r}, weights={self.weights.tolist()})"

    def sample_batch(
        self, batch_size: int, num_points: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``batch_size`` datasets, each from a component drawn with probability ``weights``."""
        batch_size, num_points = check_sizes(batch_size, num_points)
        with seeded(generator):
            if self.per_batch:
                chosen = int(torch.multinomial(self.weights, 1))
                return self.priors[chosen].sample_batch(batch_size, num_points)
            component = torch.multinomial(self.weights, batch_size, replacement=True)
            parts: list[tuple[Tensor, Tensor, Tensor]] = []
            for c, prior in enumerate(self.priors):
                index = (component == c).nonzero().squeeze(-1)
                if index.numel():
                    x, y = prior.sample_batch(int(index.numel()), num_points)
                    parts.append((index, x, y))
        dims = {x.shape[-1] for _, x, _ in parts}
        if len(dims) > 1:
            raise ValueError(f"the mixture's 'priors' give different input dimensions {sorted(dims)}")
        dtype = parts[0][1].dtype
        for _, x, y in parts:
            dtype = torch.promote_types(dtype, torch.promote_types(x.dtype, y.dtype))
        device = parts[0][1].device
        d = dims.pop()
        x_out = torch.empty(batch_size, num_points, d, dtype=dtype, device=device)
        y_out = torch.empty(batch_size, num_points, dtype=dtype, device=device)
        for index, x, y in parts:
            x_out[index.to(device)] = x.to(dtype=dtype, device=device)
            y_out[index.to(device)] = y.to(dtype=dtype, device=device)
        return x_out, y_out


def _stack(parts: list[Tensor], what: str) -> Tensor:
    shapes = {tuple(p.shape[1:]) for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"the {what} give datasets of different shapes {sorted(shapes)}")
    dtype = parts[0].dtype
    for p in parts:
        dtype = torch.promote_types(dtype, p.dtype)
    return torch.cat([p.to(dtype) for p in parts])
