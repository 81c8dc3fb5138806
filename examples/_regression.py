"""Shared by the functional-prior examples: diabetes splits and predictive metrics."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from sklearn.datasets import load_diabetes
from torch import Tensor


class Split(NamedTuple):
    """A train/test split standardised with the training statistics (y_scale undoes it)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    y_scale: float


def diabetes_split(seed: int, test_fraction: float = 0.1, dtype: torch.dtype = torch.float32) -> Split:
    """scikit-learn's diabetes data (442 x 10), a random split, inputs and target standardised."""
    x_all, y_all = load_diabetes(return_X_y=True)
    x_all, y_all = torch.as_tensor(x_all, dtype=dtype), torch.as_tensor(y_all, dtype=dtype)
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(seed))
    num_test = round(test_fraction * len(y_all))
    test, train = order[:num_test], order[num_test:]
    x_mean, x_std = x_all[train].mean(0), x_all[train].std(0)
    y_mean, y_std = y_all[train].mean(), y_all[train].std()
    return Split(
        (x_all[train] - x_mean) / x_std,
        (y_all[train] - y_mean) / y_std,
        (x_all[test] - x_mean) / x_std,
        (y_all[test] - y_mean) / y_std,
        float(y_std),
    )


def predictive_metrics(f: Tensor, noise_std: Tensor, y: Tensor, y_scale: float) -> tuple[float, float]:
    """Test RMSE of the predictive mean and mean test NLL of the Gaussian-mixture predictive.

    ``f``: network outputs (..., N) for S = prod(...) posterior draws; ``noise_std``: (...,). Both
    metrics are in the original units of y (RMSE times y_scale; NLL plus log y_scale).
    """
    f = f.reshape(-1, f.shape[-1]).double()
    sigma = noise_std.reshape(-1, 1).double()
    y = y.double()
    rmse = float(((f.mean(0) - y) ** 2).mean().sqrt()) * y_scale
    log_density = torch.distributions.Normal(f, sigma).log_prob(y)  # (S, N)
    log_predictive = torch.logsumexp(log_density, 0) - math.log(f.shape[0])
    nll = float(-log_predictive.mean()) + math.log(y_scale)
    return rmse, nll
