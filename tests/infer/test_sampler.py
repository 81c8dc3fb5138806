"""End-to-end tests of bayesact.infer.mcmc against closed forms (float64, fixed seeds).

Tolerances are 4 Monte Carlo standard errors (MCSE from ArviZ's bulk ESS), which a correct
sampler violates with probability ≈ 6e-5 per compared quantity.
"""

from __future__ import annotations

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import integrate

from bayesact.infer import mcmc

DT = torch.float64


def mcse_and_ess(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate MCSE of the mean and bulk ESS of draws shaped (chain, draw, k)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = az.convert_to_dataset({"x": draws})
        ess = az.ess(ds, method="bulk")["x"].values
    sd = draws.reshape(-1, draws.shape[-1]).std(0)
    return sd / np.sqrt(ess), ess


# -- conjugate Bayesian linear regression (TyXe's setting: n=20, d=2, α=1, β=100) -----------
ALPHA, BETA = 1.0, 100.0


def linreg(x: torch.Tensor, y: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=DT), ALPHA**-0.5).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, BETA**-0.5), obs=y)


def linreg_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2, generator=gen, dtype=DT)
    y = x @ torch.tensor([0.7, -1.2], dtype=DT) + BETA**-0.5 * torch.randn(20, generator=gen, dtype=DT)
    return x, y


@pytest.mark.parametrize("dense_mass", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_conjugate_linear_regression_matches_closed_form(dense_mass):
    x, y = linreg_data()
    cov = torch.linalg.inv(ALPHA * torch.eye(2, dtype=DT) + BETA * x.T @ x)
    mean = BETA * cov @ x.T @ y
    post = mcmc(linreg, x, y, num_chains=4, num_warmup=200, num_samples=400, seed=0,
                progress=False, dense_mass=dense_mass)
    draws = post.samples["w"].numpy()
    assert draws.shape == (4, 400, 2)
    mcse, ess = mcse_and_ess(draws)
    flat = draws.reshape(-1, 2)
    assert np.all(np.abs(flat.mean(0) - mean.numpy()) < 4 * mcse)
    # covariance entries: Var(ŝ_ij) ≈ (Σ_ii Σ_jj + Σ_ij²) / ESS for Gaussian draws
    emp = np.cov(flat, rowvar=False)
    c = cov.numpy()
    se = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / ess.min())
    assert np.all(np.abs(emp - c) < 4 * se)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = az.rhat(az.convert_to_dataset({"w": draws}))["w"].values  # unrounded
    assert np.all(rhat < 1.01)
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(post.summary().columns)
    assert post.num_divergences == 0


# -- a constrained site -----------------------------------------------------------------------
Y_SCALE = torch.tensor([0.8, -1.9, 0.4, 2.2, -0.3, 1.1, -1.4, 0.6], dtype=DT)


def halfnormal_scale(y: torch.Tensor) -> None:
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(1.0, dtype=DT)))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(0.0, sigma), obs=y)


def halfnormal_posterior_moments(y: np.ndarray) -> tuple[float, float]:
    """Mean and sd of p(σ | y) ∝ exp(-σ²/2) σ^{-n} exp(-Σy²/(2σ²)) by quadrature."""
    n, s = len(y), float((y**2).sum())

    def dens(t: float) -> float:
        return math.exp(-(t**2) / 2 - n * math.log(t) - s / (2 * t**2))

    z = integrate.quad(dens, 0, np.inf)[0]
    m1 = integrate.quad(lambda t: t * dens(t), 0, np.inf)[0] / z
    m2 = integrate.quad(lambda t: t * t * dens(t), 0, np.inf)[0] / z
    return m1, math.sqrt(m2 - m1**2)


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_constrained_site_respects_support_and_matches_quadrature(method):
    post = mcmc(halfnormal_scale, Y_SCALE, method=method, num_chains=4, num_warmup=200,
                num_samples=500, seed=1, progress=False, num_steps=6 if method == "hmc" else None)
    sigma = post.samples["sigma"].numpy()
    assert (sigma > 0).all()
    mean, sd = halfnormal_posterior_moments(Y_SCALE.numpy())
    mcse, _ = mcse_and_ess(sigma[..., None])
    assert abs(sigma.mean() - mean) < 4 * mcse[0]
    assert abs(sigma.std() - sd) < 0.1 * sd  # sd of σ: ±10% (≈4 MCSE of the sd at ESS≈1000)


# -- chains and seeds ------------------------------------------------------------------------
def normal_mean(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.zeros(3, dtype=DT), 1.0).to_event(1))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)


def test_vectorized_and_sequential_chains_sample_the_same_distribution():
    y = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, 1.0], [1.0, -0.5, 1.5]], dtype=DT)
    exact_mean = y.sum(0) / (1 + y.shape[0])  # conjugate: N(Σy/(n+1), 1/(n+1))
    exact_sd = (1 / (1 + y.shape[0])) ** 0.5
    kwargs = dict(num_chains=2, num_warmup=100, num_samples=300, progress=False)
    vec = mcmc(normal_mean, y, chain_method="vectorized", seed=5, **kwargs).samples["mu"].numpy()
    seq = mcmc(normal_mean, y, chain_method="sequential", seed=6, **kwargs).samples["mu"].numpy()
    assert vec.shape == seq.shape == (2, 300, 3)
    m1, _ = mcse_and_ess(vec)
    m2, _ = mcse_and_ess(seq)
    diff = vec.reshape(-1, 3).mean(0) - seq.reshape(-1, 3).mean(0)
    assert np.all(np.abs(diff) < 4 * np.sqrt(m1**2 + m2**2))
    for draws, m in ((vec, m1), (seq, m2)):
        assert np.all(np.abs(draws.reshape(-1, 3).mean(0) - exact_mean.numpy()) < 4 * m)
        assert np.all(np.abs(draws.reshape(-1, 3).std(0) - exact_sd) < 0.1 * exact_sd)


def test_fixed_seed_gives_identical_draws():
    y = torch.tensor([[0.5, -1.0, 2.0]], dtype=DT)
    a = mcmc(normal_mean, y, num_chains=2, num_warmup=30, num_samples=20, seed=11, progress=False)
    b = mcmc(normal_mean, y, num_chains=2, num_warmup=30, num_samples=20, seed=11, progress=False)
    c = mcmc(normal_mean, y, num_chains=2, num_warmup=30, num_samples=20, seed=12, progress=False,
             capture=False)
    assert torch.equal(a.samples["mu"], b.samples["mu"])
    assert torch.equal(a.sample_stats["step_size"], b.sample_stats["step_size"])
    assert not torch.equal(a.samples["mu"], c.samples["mu"])


def test_float32_runs_and_reports_dtype():
    y = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float32)
    post = mcmc(normal_mean, y, num_chains=2, num_warmup=50, num_samples=50, seed=0, progress=False)
    assert post.samples["mu"].dtype == torch.float32
    assert torch.isfinite(post.samples["mu"]).all()


# -- bad input and divergences ----------------------------------------------------------------
def test_bad_inputs_raise_value_errors_naming_the_problem():
    y = torch.zeros(3, 3, dtype=DT)
    with pytest.raises(ValueError, match="model must be a callable"):
        mcmc(42, y)
    with pytest.raises(ValueError, match="no latent sample sites"):
        mcmc(lambda y: y + 1, y, progress=False)
    with pytest.raises(ValueError, match="no latent sample sites"):
        mcmc(torch.nn.Linear(3, 1), y.float(), progress=False)
    with pytest.raises(ValueError, match="num_chains"):
        mcmc(normal_mean, y, num_chains=0)
    with pytest.raises(ValueError, match="method"):
        mcmc(normal_mean, y, method="gibbs")
    with pytest.raises(ValueError, match="target_accept"):
        mcmc(normal_mean, y, target_accept=1.5)
    bad = y.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="observed site 'y' has 1 NaN"):
        mcmc(normal_mean, bad, progress=False)
    with pytest.raises(TypeError, match="unknown argument"):
        mcmc(normal_mean, y, num_sample=10)


def discrete_model() -> None:
    k = pyro.sample("k", dist.Bernoulli(0.3))
    pyro.sample("x", dist.Normal(k, 1.0), obs=torch.tensor(0.5))


def test_discrete_latent_site_is_a_clear_error():
    with pytest.raises(ValueError, match="latent site 'k' is discrete"):
        mcmc(discrete_model, progress=False)


def funnel() -> None:
    # Neal's funnel (centred): the neck makes NUTS diverge at any practical step size.
    v = pyro.sample("v", dist.Normal(torch.tensor(0.0, dtype=DT), 3.0))
    pyro.sample("x", dist.Normal(torch.zeros(5, dtype=DT), torch.exp(v / 2)).to_event(1))


def test_divergences_are_reported_not_hidden():
    with pytest.warns(UserWarning, match="divergent transitions"):
        post = mcmc(funnel, num_chains=2, num_warmup=40, num_samples=60, seed=0, progress=False,
                    max_tree_depth=4, target_accept=0.6)
    div = post.sample_stats["diverging"]
    assert div.dtype == torch.bool and div.shape == (2, 60)
    assert post.num_divergences == int(div.sum()) > 0
    idata = post.to_arviz()
    assert int(idata.sample_stats["diverging"].sum()) == post.num_divergences
