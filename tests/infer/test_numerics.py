"""Numerical failures while sampling: a potential that raises (a Cholesky of a matrix that is not
positive-definite) counts as a divergence, a non-finite gradient at a finite density is reported
with its site, and SGHMC stops at the first non-finite step."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesact.infer import mcmc, sghmc
from bayesact.infer.hmc_core import find_reasonable_step_size, make_metric, nuts_transition
from bayesact.infer.integrator import is_numerical_failure
from bayesact.infer.potential import build_potential

DT = torch.float64
# N(0, 1) truncated to |x| < 1: variance 1 - 2 φ(1) / (2 Φ(1) - 1)
PHI1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
TRUNCATED_VAR = 1 - 2 * PHI1 / math.erf(1 / math.sqrt(2))


def cholesky_model() -> None:
    """x ~ N(0, 1); the model factorises [[1, x], [x, 1]], which raises LinAlgError for |x| >= 1.
    The factor adds nothing to the density, so the posterior is N(0, 1) truncated to |x| < 1."""
    x = pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
    one = torch.ones_like(x)
    chol = torch.linalg.cholesky(torch.stack([torch.stack([one, x]), torch.stack([x, one])]))
    pyro.factor("f", 0.0 * chol.sum())


def failing_model() -> None:
    """Raises an error that is not numerical (a bug) for x > 5 (vmap cannot batch it: loop mode)."""
    x = pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
    if bool((x > 5.0).any()):
        raise RuntimeError("boom")


def nan_grad_model() -> None:
    """a, x ~ N(0, 1) with a finite density everywhere, but d/dx is NaN for x > 1 (0·∞ from
    the derivative of sqrt at 0): 15.9% of the mass is unreachable by gradient-based samplers."""
    pyro.sample("a", dist.Normal(torch.zeros(2, dtype=DT), 1.0).to_event(1))
    x = pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
    gate = torch.where(x > 1.0, 0.0 * x, 1.0 + 0.0 * x)
    pyro.factor("f", 0.0 * torch.sqrt(gate))


# -- the classification of errors ----------------------------------------------------------
def test_numerical_failures_are_linalg_and_validation_errors_only():
    with pytest.raises(torch.linalg.LinAlgError) as info:
        torch.linalg.cholesky(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    assert is_numerical_failure(info.value)
    assert is_numerical_failure(RuntimeError("cholesky_cuda: U(2,2) is zero, singular U."))
    assert is_numerical_failure(RuntimeError("the input is not positive-definite"))
    with pytest.raises(ValueError) as info:
        dist.Normal(torch.tensor(0.0), torch.tensor(-1.0), validate_args=True)
    assert is_numerical_failure(info.value)
    assert not is_numerical_failure(RuntimeError("shape mismatch"))
    assert not is_numerical_failure(ValueError("bad argument"))
    assert not is_numerical_failure(KeyError("x"))


# -- the potential: only the failing chains diverge ----------------------------------------
@pytest.mark.parametrize("capture", [True, False])
def test_potential_evaluates_chains_one_by_one_when_the_batch_raises(capture):
    pot = build_potential(cholesky_model, (), {}, dtype=DT, device=torch.device("cpu"), num_chains=3,
                          capture=capture)
    assert pot.mode == ("captured" if capture else "vmap")
    z = torch.tensor([[0.5], [1.5], [-0.2]], dtype=DT)
    u, g = pot.value_and_grad(z)
    const = 0.5 * math.log(2 * math.pi)
    assert u[0].item() == pytest.approx(0.125 + const, abs=1e-12)
    assert u[2].item() == pytest.approx(0.02 + const, abs=1e-12)
    assert torch.allclose(g[[0, 2]], z[[0, 2]], atol=1e-12)
    assert u[1].item() == math.inf and bool(g[1].isnan().all())


def test_errors_that_are_not_numerical_still_propagate():
    pot = build_potential(failing_model, (), {}, dtype=DT, device=torch.device("cpu"), num_chains=2,
                          capture=False)
    with pytest.raises(RuntimeError, match="boom"):
        pot.value_and_grad(torch.tensor([[0.5], [5.5]], dtype=DT))


def test_step_size_search_survives_a_raising_potential():
    """Regression: the step-size search doubled ε into |x| >= 1 and the LinAlgError aborted mcmc."""
    c = 8
    pot = build_potential(cholesky_model, (), {}, dtype=DT, device=torch.device("cpu"), num_chains=c)
    z = torch.full((c, 1), 0.95, dtype=DT)
    u, g = pot.value_and_grad(z)
    gen = torch.Generator().manual_seed(0)
    metric = make_metric(torch.ones(c, 1, dtype=DT))
    failed = []

    def value_and_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = pot.value_and_grad(x)
        failed.append(int(out[0].isinf().sum()))
        return out

    eps = find_reasonable_step_size(z, u, g, torch.full((c,), 4.0, dtype=DT), metric, value_and_grad, gen)
    assert sum(failed) > 0  # the search did step into the raising region
    assert bool(torch.isfinite(eps).all()) and bool((eps > 0).all())


def test_nuts_counts_a_raising_leaf_as_divergent_for_that_chain_only():
    c = 64
    pot = build_potential(cholesky_model, (), {}, dtype=DT, device=torch.device("cpu"), num_chains=c)
    z = torch.cat([torch.full((c // 2, 1), 0.99, dtype=DT), torch.full((c // 2, 1), -0.99, dtype=DT)])
    u, g = pot.value_and_grad(z)
    gen = torch.Generator().manual_seed(1)
    (z1, u1, _), stats = nuts_transition(z, u, g, torch.full((c,), 0.5, dtype=DT),
                                         make_metric(torch.ones(c, 1, dtype=DT)), pot.value_and_grad, gen)
    assert bool((z1.abs() < 1).all()) and bool(torch.isfinite(u1).all())
    assert 0 < int(stats.diverging.sum()) < c
    assert not bool((stats.nonfinite_grad >= 0).any())  # U = +inf there, not a gradient problem


def test_mcmc_samples_a_model_whose_potential_raises_in_a_region():
    """Regression: init at 0, then the step-size search and NUTS run into |x| >= 1 where the
    model raises LinAlgError; the region counts as zero density (divergent transitions)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = mcmc(cholesky_model, num_chains=4, num_warmup=40, num_samples=60, seed=3,
                    init={"x": 0.0}, dtype=DT, progress=False)
    assert bool((post.samples["x"].abs() < 1).all())
    assert int(post.sample_stats["diverging"].sum()) > 0


@pytest.mark.slow
def test_raising_region_is_zero_density_truncated_normal_moments():
    """The posterior is N(0, 1) truncated to |x| < 1: variance 0.2911, mean 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = mcmc(cholesky_model, num_chains=4, num_warmup=300, num_samples=1000, seed=3,
                    init={"x": 0.0}, dtype=DT, progress=False)
    x = post.samples["x"]
    assert bool((x.abs() < 1).all())
    # 4000 draws with an ESS of several hundred: sd of the variance estimate < 0.015
    assert x.var().item() == pytest.approx(TRUNCATED_VAR, abs=0.045)
    assert x.mean().item() == pytest.approx(0.0, abs=0.08)


def test_mcmc_samples_an_lkj_cholesky_model():
    """Regression: MultivariateNormal(covariance_matrix=L Lᵀ) with L ~ LKJCholesky raised a
    LinAlgError in the step-size search (extreme ε make L Lᵀ numerically singular)."""
    gen = torch.Generator().manual_seed(0)
    corr = torch.tensor([[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 1.0]], dtype=DT)
    y = torch.randn(20, 3, generator=gen, dtype=DT) @ torch.linalg.cholesky(corr).T

    def model(y: torch.Tensor) -> None:
        chol = pyro.sample("L", dist.LKJCholesky(3, torch.tensor(1.0, dtype=DT)))
        mvn = dist.MultivariateNormal(torch.zeros(3, dtype=DT), covariance_matrix=chol @ chol.T)
        pyro.sample("y", mvn.expand([y.shape[0]]).to_event(1), obs=y)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = mcmc(model, y, num_chains=4, num_warmup=30, num_samples=30, seed=0, dtype=DT, progress=False)
    assert bool(torch.isfinite(post.samples["L"]).all())


# -- non-finite gradients at a finite density ----------------------------------------------
@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_non_finite_gradient_is_reported_with_its_site(method):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = mcmc(nan_grad_model, method=method, num_chains=4, num_warmup=150, num_samples=200,
                    seed=0, dtype=DT, progress=False, **({"num_steps": 8} if method == "hmc" else {}))
    messages = [str(w.message) for w in caught if "non-finite gradient" in str(w.message)]
    assert len(messages) == 1
    count = post.info["nonfinite_grad"]
    flags = post.sample_stats["nonfinite_grad"]
    assert count > 0 and int(flags.sum()) == count
    assert post.info["nonfinite_grad_sites"] == {"x": count}
    assert f"{count} transitions" in messages[0] and "'x'" in messages[0]
    assert bool(post.sample_stats["diverging"][flags].all())
    assert float(post.samples["x"].max()) <= 1.0  # the region x > 1 is not explored


def test_finite_gradients_report_nothing():
    post = mcmc(lambda: pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0)), num_chains=2,
                num_warmup=50, num_samples=50, seed=0, dtype=DT, progress=False)
    assert post.info["nonfinite_grad"] == 0 and post.info["nonfinite_grad_sites"] == {}
    assert not bool(post.sample_stats["nonfinite_grad"].any())


# -- SGHMC ---------------------------------------------------------------------------------
def drifting_model(x: torch.Tensor) -> None:
    """w ~ N(0, 1) with a likelihood that pushes w up, and a NaN log-density for w > 2."""
    w = pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.factor("push", x * w + torch.where(w > 2.0, math.nan, 0.0))


def test_sghmc_stops_at_the_first_non_finite_step_during_burn_in():
    """Regression: non-finite values were only checked at recording steps, so a burn-in of 3000
    steps ran on NaNs and the stop was reported at step 3001."""
    x = torch.ones(10, dtype=DT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = sghmc(drifting_model, x, num_burnin=3000, num_samples=5, thinning=1, batch_size=5,
                     step_size=0.1, num_chains=2, seed=0, dtype=DT, progress=False, init={"w": 1.5})
    step = post.info["nonfinite_at"]
    assert step is not None and 1 <= step < 100
    assert post.info["steps_done"] < 100
    assert any(f"stopped at step {step}:" in str(w.message) for w in caught)


@pytest.mark.slow
def test_compiled_nuts_redoes_a_raising_leaf_eagerly():
    """compile=True: the example leaf that raises is compiled at a zero step instead (the NUTS
    steps used to fall back to eager with a warning); at run time a compiled leaf that raises is
    redone by the eager leaf, so the region counts as divergent as in the eager run."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = mcmc(cholesky_model, num_chains=4, num_warmup=40, num_samples=60, seed=3, init={"x": 0.0},
                    dtype=DT, progress=False, compile=True)
    assert post.info["potential_mode"].endswith("+compiled_leaf")
    assert not any("could not compile" in str(w.message) for w in caught)
    assert bool((post.samples["x"].abs() < 1).all())
    assert int(post.sample_stats["diverging"].sum()) > 0
