"""BNN posteriors under bayesact's samplers: 95% bands cover the true function on a 1-D toy."""

from __future__ import annotations

import arviz as az
import pytest
import torch

from bayesact.infer import mcmc, predictive, sghmc
from bayesact.models import BNN
from bayesact.priors import GaussianPrior

NOISE = 0.2


def true_function(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(2.0 * x) + 0.3 * x


def toy_data(n: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n noisy observations on [-2, 2]; test inputs on a grid inside the data range."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 1, generator=g) * 4 - 2)
    y = true_function(x[:, 0]) + NOISE * torch.randn(n, generator=g)
    x_test = torch.linspace(-1.9, 1.9, 50).unsqueeze(-1)
    return x, y, x_test


def band_coverage(f: torch.Tensor, x_test: torch.Tensor) -> float:
    """Fraction of test inputs where the true function is inside the central 95% band of f."""
    draws = f.reshape(-1, f.shape[-1])  # (draws, N_test)
    lo, hi = draws.quantile(torch.tensor([0.025, 0.975]), dim=0)
    truth = true_function(x_test[:, 0])
    return float(((truth >= lo) & (truth <= hi)).float().mean())


def toy_bnn() -> BNN:
    # stds of a prior that suits the toy (as a fitted functional prior would): wiggly enough for sin(2x)
    return BNN(1, hidden=(20,), activation="tanh", noise_std=NOISE,
               prior=GaussianPrior(2, weight_std=torch.tensor([2.0, 1.5]), bias_std=torch.tensor([1.0, 0.5])))


@pytest.mark.slow
def test_nuts_bands_cover_the_true_function() -> None:
    """4 NUTS chains x 150 draws (about 2 minutes on 2 busy cores: slow); the 95% band of f covers
    the truth at >= 90% of 50 test points (the issue's criterion). Failure means a biased or badly
    mixing sampler: a band that misses the truth at over 10% of a dense grid inside the data.
    Measured: 94% coverage."""
    torch.manual_seed(0)
    x, y, x_test = toy_data()
    bnn = toy_bnn()
    post = mcmc(bnn, x, y, num_chains=4, num_warmup=150, num_samples=150, max_tree_depth=6, seed=0,
                progress=False)
    f = predictive(bnn, post, x_test, None, seed=0)["f"][..., 0]
    assert f.shape == (4, 150, 50)
    assert float(az.rhat(az.convert_to_dataset({"f": f.numpy()}))["f"].max()) < 1.1  # measured 1.02
    assert band_coverage(f, x_test) >= 0.9
    # the band is informative, not trivially wide: mean width below 4 noise sds (measured 0.36)
    draws = f.reshape(-1, 50)
    width = draws.quantile(0.975, dim=0) - draws.quantile(0.025, dim=0)
    assert float(width.mean()) < 4 * NOISE


def test_sghmc_bands_cover_the_true_function() -> None:
    """Scale-adapted SGHMC (4 chains, minibatches of 10 of the 30 points, the paper's step size and
    momentum decay): the 95% band of f covers the truth at >= 90% of 50 test points, and R-hat on f
    at the test inputs (``predict=``) is below 1.1. Measured: 96% coverage, R-hat 1.075; 18 s."""
    x, y, x_test = toy_data()
    bnn = toy_bnn()
    post = sghmc(bnn, x, y, num_chains=4, num_burnin=2000, num_samples=50, thinning=40, batch_size=10,
                 seed=0, progress=False, predict=("f", x_test))  # fmt: skip
    f = post.samples["f"][..., 0]
    assert f.shape == (4, 50, 50)
    assert float(az.rhat(az.convert_to_dataset({"f": f.numpy()}))["f"].max()) < 1.1
    assert band_coverage(f, x_test) >= 0.9
