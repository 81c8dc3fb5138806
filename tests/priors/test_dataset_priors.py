"""Dataset priors: shapes, reproducibility, the GP covariance (Monte Carlo), noise, hyperpriors,
Pyro models, mixtures and argument checks."""

from __future__ import annotations

import math

import gpytorch
import pyro
import pyro.distributions as pdist
import pytest
import torch
from torch.distributions import Gamma, Independent, Uniform

from bayesact.infer.pfn_training import DatasetSampler
from bayesact.models import BNN
from bayesact.priors import GPPrior
from bayesact.priors.dataset import (
    DatasetPrior,
    GPDatasetPrior,
    HyperDatasetPrior,
    MixtureDatasetPrior,
    PyroDatasetPrior,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit_box(d: int) -> Independent:
    return Independent(Uniform(torch.zeros(d), torch.ones(d)), 1)


class SinePrior:
    """A function prior with a single function f(x) = sin(3 x_1) (noise tests need f known)."""

    def sample_functions(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return torch.sin(3 * x[:, :1]).expand(n, -1, -1)


def regression_model(num_points: int) -> None:
    slope = pyro.sample("slope", pdist.Normal(0.0, 1.0))
    x = pyro.sample("x", pdist.Uniform(-1.0, 1.0).expand([num_points, 2]).to_event(2))
    pyro.sample("y", pdist.Normal(slope * x.sum(-1), 0.1).to_event(1))


def gp_kernel(name: str, lengthscale: float, outputscale: float) -> gpytorch.kernels.Kernel:
    base = gpytorch.kernels.RBFKernel() if name == "rbf" else gpytorch.kernels.MaternKernel(nu=2.5)
    kernel = gpytorch.kernels.ScaleKernel(base).double()
    kernel.base_kernel.lengthscale = lengthscale
    kernel.outputscale = outputscale
    return kernel


def all_priors(d: int = 2) -> dict[str, DatasetSampler]:
    return {
        "gp": DatasetPrior(GPPrior(gp_kernel("rbf", 0.5, 1.0)), unit_box(d), 0.1),
        "bnn": DatasetPrior(BNN(d, hidden=(8,)), pdist.Normal(torch.zeros(d), 1.0).to_event(1),
                            Gamma(2.0, 20.0)),
        "fast_gp": GPDatasetPrior(d, kernel="matern52", lengthscale=Gamma(3.0, 6.0), noise_std=0.1),
        "pyro": PyroDatasetPrior(regression_model),
        "hyper": HyperDatasetPrior(lambda ls: GPDatasetPrior(d, lengthscale=float(ls)),
                                   {"ls": Gamma(3.0, 6.0)}),
        "mixture": MixtureDatasetPrior([GPDatasetPrior(d, kernel="rbf"),
                                        GPDatasetPrior(d, kernel="matern12")]),
    }


# ------------------------------------------------------------------------------------------
# shapes and reproducibility
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(all_priors()))
def test_shapes_reproducible_and_global_stream_untouched(name: str) -> None:
    prior = all_priors()[name]
    assert isinstance(prior, DatasetSampler)
    state = torch.get_rng_state()
    x, y = prior.sample_batch(5, 7, gen(3))
    assert torch.equal(torch.get_rng_state(), state)  # sampling from a generator keeps the global stream
    assert x.shape == (5, 7, 2) and y.shape == (5, 7)
    assert x.dtype == y.dtype and bool(torch.isfinite(y).all())
    x2, y2 = prior.sample_batch(5, 7, gen(3))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    _, y3 = prior.sample_batch(5, 7, gen(4))
    assert not torch.equal(y, y3)
    assert not torch.equal(y[0], y[1])  # datasets of a batch differ


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype: torch.dtype) -> None:
    fast = GPDatasetPrior(1, dtype=dtype)
    assert fast.sample_batch(2, 3, gen(0))[1].dtype == dtype
    box = Independent(Uniform(torch.zeros(1, dtype=dtype), torch.ones(1, dtype=dtype)), 1)
    x, y = DatasetPrior(SinePrior(), box, 0.1).sample_batch(2, 3, gen(0))
    assert x.dtype == y.dtype == dtype


def test_each_dataset_has_its_own_inputs() -> None:
    x, _ = DatasetPrior(SinePrior(), unit_box(1), 0.0).sample_batch(3, 4, gen(0))
    assert not torch.equal(x[0], x[1])


# ------------------------------------------------------------------------------------------
# the GP's covariance, by Monte Carlo
# ------------------------------------------------------------------------------------------
X_FIXED = torch.tensor([[0.0, 0.0], [0.3, 0.1], [0.5, 0.9], [1.0, 0.4]], dtype=torch.float64)


def fixed_inputs(batch_size: int, num_points: int) -> torch.Tensor:
    return X_FIXED[:num_points].expand(batch_size, -1, -1).clone()


def assert_covariance(y: torch.Tensor, sigma: torch.Tensor) -> None:
    """Empirical E[y yᵀ] within 5 standard errors of Σ entrywise; SE_ij = √((Σ_ii Σ_jj + Σ_ij²)/B)."""
    b = y.shape[0]
    emp = y.T @ y / b
    se = ((sigma.diag()[:, None] * sigma.diag()[None, :] + sigma.square()) / b).sqrt()
    assert bool(((emp - sigma).abs() < 5 * se).all()), (emp, sigma)
    assert y.mean(0).abs().max() < 5 * (sigma.diag().max() / b).sqrt()


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_fast_gp_prior_has_the_kernel_covariance(kernel: str) -> None:
    # 5 SE of a diagonal entry ≈ 0.09 < σ² = 0.25: a missing noise term fails
    prior = GPDatasetPrior(2, kernel=kernel, lengthscale=0.4, outputscale=1.5, noise_std=0.5,
                           x_sampler=fixed_inputs, dtype=torch.float64)
    x, y = prior.sample_batch(20000, 4, gen(0))
    assert torch.equal(x[0], X_FIXED)
    with torch.no_grad():
        sigma = gp_kernel(kernel, 0.4, 1.5)(X_FIXED).to_dense() + 0.5**2 * torch.eye(4, dtype=torch.float64)
    assert_covariance(y, sigma)


def test_function_prior_path_has_the_kernel_covariance() -> None:
    k = gp_kernel("rbf", 0.4, 1.0)
    prior = DatasetPrior(GPPrior(k), fixed_inputs, noise_std=0.6)  # 5 SE ≈ 0.15 < σ² = 0.36
    _, y = prior.sample_batch(3000, 4, gen(1))
    with torch.no_grad():
        sigma = k(X_FIXED).to_dense() + 0.6**2 * torch.eye(4, dtype=torch.float64)
    assert_covariance(y, sigma)


def test_ard_lengthscales_scale_each_dimension() -> None:
    prior = GPDatasetPrior(2, lengthscale=Gamma(torch.tensor([2.0, 50.0]), torch.tensor([4.0, 1.0])),
                           x_sampler=fixed_inputs, dtype=torch.float64)
    _, _, hyper = prior.sample_with_hyperparameters(200, 4, gen(0))
    assert hyper["lengthscale"].shape == (200, 2)
    assert hyper["lengthscale"][:, 0].mean() < 1.0 < 10.0 < hyper["lengthscale"][:, 1].mean()
    ard = GPDatasetPrior(3, lengthscale=Gamma(3.0, 6.0), ard=True)
    ls = ard.sample_with_hyperparameters(4, 2, gen(0))[2]["lengthscale"]
    assert ls.shape == (4, 3) and len(set(ls.flatten().tolist())) == 12
    k = ard.kernel_matrix(torch.tensor([[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]], dtype=torch.float64),
                          torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64),
                          torch.tensor([2.0], dtype=torch.float64))
    assert torch.allclose(k[0, 0, 1], torch.tensor(2.0 * math.exp(-1.5), dtype=torch.float64))


def test_process_models_as_function_priors() -> None:
    """The process models of bayesact.models.processes are function priors: a Student-t process
    with σ² ~ InverseGamma(3, 2) (E[σ²] = 1) and a unit-outputscale RBF kernel gives
    E[f(x)²] = E[σ²]·k(x, x) = 1 per dataset (one σ² per dataset; Monte Carlo, 4 SE with
    Var[f²] = 3 E[σ⁴] − 1 = 5)."""
    from bayesact.models.processes import GP, StudentTProcess

    kernel = gp_kernel("rbf", 0.4, 1.0).float()
    _, y = DatasetPrior(GP(kernel), unit_box(2), 0.0).sample_batch(3, 6, gen(0))
    assert y.shape == (3, 6) and bool(torch.isfinite(y).all())
    tp = StudentTProcess(gp_kernel("rbf", 0.4, 1.0).float(), concentration=3.0, rate=2.0)
    _, y = DatasetPrior(tp, unit_box(2), 0.0).sample_batch(3000, 3, gen(1))
    assert abs(float(y[:, 0].square().mean()) - 1.0) < 4 * math.sqrt(5 / 3000)


# ------------------------------------------------------------------------------------------
# observation noise
# ------------------------------------------------------------------------------------------
def test_noise_is_added_with_the_given_std() -> None:
    x, y = DatasetPrior(SinePrior(), unit_box(1), noise_std=0.3).sample_batch(400, 50, gen(0))
    residual = y - torch.sin(3 * x[..., 0])
    n = residual.numel()
    assert abs(float(residual.mean())) < 4 * 0.3 / math.sqrt(n)
    # var of the sample variance of N(0, s²): 2 s⁴ / n
    assert abs(float(residual.square().mean()) - 0.09) < 4 * math.sqrt(2 / n) * 0.09
    x0, y0 = DatasetPrior(SinePrior(), unit_box(1), noise_std=0.0).sample_batch(3, 5, gen(0))
    assert torch.equal(y0, torch.sin(3 * x0[..., 0]))


def test_noise_distribution_is_drawn_per_dataset() -> None:
    noise = Gamma(4.0, 20.0)  # mean 0.2, E[σ²] = (a(a+1))/b² = 0.05
    x, y = DatasetPrior(SinePrior(), unit_box(1), noise_std=noise).sample_batch(4000, 20, gen(0))
    residual = y - torch.sin(3 * x[..., 0])
    per_dataset = residual.square().mean(1)
    # E[mean r²] = E[σ²] = 0.05; the per-dataset variances vary with σ (not one shared σ)
    se = float(per_dataset.std()) / math.sqrt(4000)
    assert abs(float(per_dataset.mean()) - 0.05) < 4 * se
    assert per_dataset.std() > 3 * 0.05 * math.sqrt(2 / 20)  # a fixed σ² = 0.05 would give ≈ 0.016


# ------------------------------------------------------------------------------------------
# hyperpriors
# ------------------------------------------------------------------------------------------
def test_fast_gp_hyperparameters_differ_per_dataset_and_are_used() -> None:
    prior = GPDatasetPrior(1, lengthscale=Gamma(3.0, 6.0), outputscale=Gamma(2.0, 2.0),
                           noise_std=Gamma(2.0, 20.0), dtype=torch.float64)
    _, y, hyper = prior.sample_with_hyperparameters(3000, 10, gen(0))
    for name in ("lengthscale", "outputscale", "noise_std"):
        assert hyper[name][:200].unique().numel() == 200  # (float32 draws: few ties among 3000)
    # E[y_i² / (s + σ²)] = 1 given each dataset's own s and σ
    ratio = y.square() / (hyper["outputscale"] + hyper["noise_std"].square())[:, None]
    per_dataset = ratio.mean(1)
    assert abs(float(per_dataset.mean()) - 1.0) < 4 * float(per_dataset.std()) / math.sqrt(3000)


def test_hyper_dataset_prior_draws_per_dataset() -> None:
    drawn: list[float] = []

    def build(scale: torch.Tensor) -> GPDatasetPrior:
        drawn.append(float(scale))
        return GPDatasetPrior(1, outputscale=float(scale), noise_std=0.0, dtype=torch.float64)

    prior = HyperDatasetPrior(build, {"scale": Gamma(2.0, 2.0)})
    _, y = prior.sample_batch(2000, 5, gen(0))
    assert len(drawn) == 2000 and len(set(drawn[:200])) == 200
    ratio = (y.square() / torch.tensor(drawn, dtype=torch.float64)[:, None]).mean(1)
    assert abs(float(ratio.mean()) - 1.0) < 4 * float(ratio.std()) / math.sqrt(2000)
    drawn.clear()
    prior.sample_batch(3, 5, gen(0))
    first = list(drawn)
    drawn.clear()
    prior.sample_batch(3, 5, gen(0))
    assert drawn == first


# ------------------------------------------------------------------------------------------
# Pyro models and mixtures
# ------------------------------------------------------------------------------------------
def test_pyro_dataset_prior_returns_the_model_sites() -> None:
    x, y = PyroDatasetPrior(regression_model).sample_batch(6, 8, gen(5))
    # the same run by hand: the seed the prior draws from the generator, then Predictive
    seed = int(torch.randint(0, 2**62, (), generator=gen(5)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = pyro.infer.Predictive(regression_model, num_samples=6, return_sites=["x", "y"])(8)
    assert torch.equal(x, out["x"]) and torch.equal(y, out["y"])
    # each run has its own slope: y ≈ slope · (x_1 + x_2) with a different slope per dataset
    slopes = (y * x.sum(-1)).sum(1) / x.sum(-1).square().sum(1)
    assert slopes.unique().numel() == 6


def test_pyro_dataset_prior_one_dimensional_x_and_parallel() -> None:
    def model(num_points: int) -> None:
        with pyro.plate("points", num_points, dim=-1):
            x = pyro.sample("inputs", pdist.Uniform(0.0, 1.0))
            pyro.sample("targets", pdist.Normal(x, 0.01))

    prior = PyroDatasetPrior(model, x_site="inputs", y_site="targets", parallel=True)
    x, y = prior.sample_batch(4, 9, gen(0))
    assert x.shape == (4, 9, 1) and y.shape == (4, 9)
    assert (y - x[..., 0]).abs().max() < 0.1
    with pytest.raises(ValueError, match="no site 'z'"):
        PyroDatasetPrior(model, x_site="inputs", y_site="z").sample_batch(2, 3, gen(0))


def constant_prior(value: float) -> DatasetPrior:
    class Constant:
        def sample_functions(self, x: torch.Tensor, n: int) -> torch.Tensor:
            return torch.full((n, x.shape[0], 1), value, dtype=x.dtype)

    return DatasetPrior(Constant(), unit_box(1), 0.0)


def test_mixture_picks_components_with_their_weights() -> None:
    prior = MixtureDatasetPrior([constant_prior(-1.0), constant_prior(1.0)], weights=[1.0, 3.0])
    _, y = prior.sample_batch(4000, 3, gen(0))
    assert bool((y.abs() == 1).all()) and bool((y == y[:, :1]).all())  # whole datasets from one component
    share = float((y[:, 0] > 0).double().mean())
    assert abs(share - 0.75) < 4 * math.sqrt(0.75 * 0.25 / 4000)


def test_mixture_per_batch_draws_one_component_per_call_and_allows_other_dimensions() -> None:
    prior = MixtureDatasetPrior([GPDatasetPrior(1), GPDatasetPrior(3)], weights=[1.0, 3.0], per_batch=True)
    g = gen(0)
    dims = [prior.sample_batch(4, 5, g)[0].shape[-1] for _ in range(400)]
    assert set(dims) == {1, 3}
    share = dims.count(3) / 400
    assert abs(share - 0.75) < 4 * math.sqrt(0.75 * 0.25 / 400)
    with pytest.raises(ValueError, match="different input dimensions"):
        MixtureDatasetPrior([GPDatasetPrior(1), GPDatasetPrior(3)]).sample_batch(40, 5, gen(0))


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="'batch_size'"):
        GPDatasetPrior(1).sample_batch(0, 5, gen(0))
    with pytest.raises(ValueError, match="'num_points'"):
        GPDatasetPrior(1).sample_batch(2, 2.5, gen(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'noise_std'"):
        DatasetPrior(SinePrior(), unit_box(1), noise_std=-1.0)
    with pytest.raises(ValueError, match="'kernel'"):
        GPDatasetPrior(1, kernel="cosine")
    with pytest.raises(ValueError, match="'lengthscale'"):
        GPDatasetPrior(1, lengthscale=0.0)
    with pytest.raises(ValueError, match="'num_features'"):
        GPDatasetPrior(0)
    with pytest.raises(TypeError, match="'x_sampler'"):
        DatasetPrior(SinePrior(), "uniform", 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'x_sampler'"):
        DatasetPrior(SinePrior(), lambda b, n: torch.zeros(b, n), 0.1).sample_batch(2, 3, gen(0))
    with pytest.raises(TypeError, match="'prior'"):
        DatasetPrior(object(), unit_box(1), 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'weights'"):
        MixtureDatasetPrior([constant_prior(0.0)], weights=[1.0, 2.0])
    with pytest.raises(TypeError, match="'priors\\[1\\]'"):
        MixtureDatasetPrior([constant_prior(0.0), object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="'hyperpriors'"):
        HyperDatasetPrior(lambda: constant_prior(0.0), {})
    with pytest.raises(TypeError, match="'generator'"):
        GPDatasetPrior(1).sample_batch(2, 3, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'x_sampler' gives 1 input dimensions, num_features is 2"):
        GPDatasetPrior(2, x_sampler=unit_box(1)).sample_batch(2, 3, gen(0))
