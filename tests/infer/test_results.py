"""Results interop: predictive sites as Pyro's, model/posterior mismatch, SVI results used like
MCMC ones (log-likelihood, az.loo/az.compare, predictive), ArviZ dims/coords, safe save/load."""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Predictive

from bayesact.infer import Posterior, SVIResult, mcmc, predictive, svi
from bayesact.infer import posterior as posterior_module
from bayesact.infer.arviz_io import group_names, read_group

DT = torch.float64
Y = torch.tensor([0.3, 1.2, -0.4, 0.9, 2.1, 0.5], dtype=DT)
N = len(Y)


def normal_model(y: torch.Tensor | None = None, n: int = 6) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
    pyro.deterministic("mu_sq", mu**2)
    with pyro.plate("N", n):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def other_model(y: torch.Tensor | None = None, n: int = 6) -> None:
    loc = pyro.sample("loc", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
    with pyro.plate("N", n):
        pyro.sample("y", dist.Normal(loc, 1.0), obs=y)


@pytest.fixture(scope="module")
def post() -> Posterior:
    return mcmc(normal_model, Y, num_chains=2, num_warmup=150, num_samples=500, seed=0, progress=False)


@pytest.fixture(scope="module")
def fit() -> SVIResult:
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.99})
    return svi(normal_model, Y, num_steps=400, optimizer=optim, seed=0, progress=False)


def exact_elpd_loo() -> float:
    """Leave-one-out predictive density of the conjugate model: y_i | y_-i ~ N(m_i, 1 + 1/n)."""
    total = 0.0
    for i in range(N):
        rest = torch.cat([Y[:i], Y[i + 1 :]])
        var = 1.0 / N  # posterior variance with n - 1 points and a N(0, 1) prior
        total += float(dist.Normal(rest.sum() * var, math.sqrt(1.0 + var)).log_prob(Y[i]))
    return total


# -- predictive --------------------------------------------------------------------------------
def test_predictive_returns_the_sites_pyro_returns_without_plate_indices(post):
    reps = predictive(normal_model, post, None, 6, seed=1)
    flat = {"mu": post.samples["mu"].reshape(-1)}
    pyro_sites = set(Predictive(normal_model, posterior_samples=flat)(None, 6))
    assert "N" not in reps and set(reps) == pyro_sites == {"y", "mu_sq"}
    assert set(read_group(post.to_arviz(), "posterior_predictive")) == {"y", "mu_sq"}


def test_predictive_refuses_a_posterior_of_another_model(post):
    expected = (r"does not match model 'other_model': the model's latent site\(s\) \['loc'\] are missing"
                r".*site\(s\) \['mu', 'mu_sq'\] are not latent")
    with pytest.raises(ValueError, match=expected):
        predictive(other_model, post, None, 6)


# -- SVI results like MCMC results -------------------------------------------------------------
def test_svi_to_posterior_has_deterministic_sites_and_log_likelihood(fit):
    sv = fit.to_posterior(800, seed=0)
    assert sv.samples["mu"].shape == (1, 800) and sv.info["engine"] == "svi"
    torch.testing.assert_close(sv.samples["mu_sq"], sv.samples["mu"] ** 2)
    expected = dist.Normal(sv.samples["mu"][..., None], 1.0).log_prob(Y)
    torch.testing.assert_close(sv.log_likelihood["y"], expected)
    torch.testing.assert_close(sv.observed["y"], Y)
    idata = fit.to_arviz(200, seed=0)
    assert {"posterior", "log_likelihood", "observed_data"} <= set(group_names(idata))
    assert "mu_sq" in read_group(idata, "posterior")


def test_predictive_accepts_an_svi_result(fit):
    reps = predictive(normal_model, fit, None, 6, seed=2, num_samples=500)
    assert reps["y"].shape == (1, 500, 6) and set(reps) == {"y", "mu_sq"}
    # y_rep = μ + ε with μ from the guide (≈ the exact posterior N(Σy/7, 1/7)): Var = 1/7 + 1
    exact_var = 1.0 / (N + 1) + 1.0
    assert abs(float(reps["y"].var()) - exact_var) < 0.15  # 3000 draws: sd of the variance ≈ 0.04


def _elpd(loo: object) -> float:
    """elpd_loo on ArviZ 0.x (``elpd_loo``) and 1.x (``elpd``)."""
    return float(loo.elpd_loo if hasattr(loo, "elpd_loo") else loo.elpd)


def test_loo_and_compare_work_on_svi_next_to_mcmc(post, fit):
    exact = exact_elpd_loo()
    loo_mcmc = az.loo(post.to_arviz())
    loo_svi = az.loo(fit.to_arviz(2000, seed=0))
    # PSIS-LOO with 1000 (MCMC) / 2000 (guide) draws: Monte Carlo error ≈ 0.01; the guide's
    # mean and sd are within 0.05 of the exact posterior's (see test_outputs)
    assert abs(_elpd(loo_mcmc) - exact) < 0.05
    assert abs(_elpd(loo_svi) - exact) < 0.1
    table = az.compare({"mcmc": post.to_arviz(), "svi": fit.to_arviz(2000, seed=0)})
    assert set(table.index) == {"mcmc", "svi"}
    assert float(table["elpd_diff"].max()) < 0.1


# -- ArviZ coords and dims ---------------------------------------------------------------------
def test_to_arviz_names_dimensions_like_from_pyro(post):
    predictive(normal_model, post, None, 6, seed=1)
    idata = post.to_arviz(coords={"obs": np.arange(10, 16)}, dims={"y": ["obs"]})
    for group in ("log_likelihood", "posterior_predictive"):
        assert idata[group]["y"].dims == ("chain", "draw", "obs")
    assert idata["observed_data"]["y"].dims == ("obs",)
    np.testing.assert_array_equal(idata["observed_data"]["obs"].values, np.arange(10, 16))
    with pytest.raises(ValueError, match=r"dims\['y'\] has 2 name\(s\) but 'y' has 1 event dimension"):
        post.to_arviz(dims={"y": ["a", "b"]})
    with pytest.raises(ValueError, match="dims names 'z', which is not a variable"):
        post.to_arviz(dims={"z": ["a"]})


# -- save / load -------------------------------------------------------------------------------
def test_save_load_keeps_info_and_needs_no_netcdf(post, tmp_path, monkeypatch):
    def no_netcdf(*args, **kwargs):
        raise AssertionError("Posterior.save/load must not need ArviZ's netCDF I/O")

    monkeypatch.setattr(posterior_module.arviz_io, "load_netcdf", no_netcdf)
    monkeypatch.setattr(posterior_module.arviz_io, "from_numpy", no_netcdf)
    path = tmp_path / "post.bayesact"
    post.save(path)
    assert path.read_bytes().startswith(b"bayesact-safe/1 sha256=")
    back = Posterior.load(path)
    for key in ("engine", "method", "seed", "num_gradient_calls", "warmup_seconds", "checkpoint"):
        assert back.info[key] == post.info[key], key  # None values too (checkpoint=None)
    torch.testing.assert_close(back.info["inverse_mass"], post.info["inverse_mass"])
    torch.testing.assert_close(back.samples["mu"], post.samples["mu"], rtol=0, atol=0)
    torch.testing.assert_close(back.log_likelihood["y"], post.log_likelihood["y"], rtol=0, atol=0)
    assert back.samples["mu"].dtype == DT and back.sample_stats["diverging"].dtype == torch.bool


def test_load_refuses_a_corrupted_posterior_file(post, tmp_path):
    path = tmp_path / "post.bayesact"
    post.save(path)
    data = bytearray(path.read_bytes())
    data[-200] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"post\.bayesact' is corrupted"):
        Posterior.load(path)


def test_load_still_reads_netcdf_exports(post, tmp_path):
    pytest.importorskip("h5netcdf")
    path = tmp_path / "post.nc"
    post.to_arviz().to_netcdf(str(path))
    back = Posterior.load(path)
    torch.testing.assert_close(back.samples["mu"], post.samples["mu"])
