"""Posterior outputs (ArviZ, save/load, predictive), checkpoint/resume, SVI, engine='pyro'."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesact.infer import Posterior, mcmc, predictive, resume, svi
from bayesact.infer.arviz_io import group_names

DT = torch.float64
Y = torch.tensor([0.3, 1.2, -0.4, 0.9, 2.1, 0.5], dtype=DT)


def normal_model(y: torch.Tensor | None = None, n: int = 6) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
    pyro.deterministic("mu_sq", mu**2)
    with pyro.plate("data", n):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.fixture(scope="module")
def posterior() -> Posterior:
    torch.set_num_threads(1)
    return mcmc(normal_model, Y, num_chains=2, num_warmup=150, num_samples=300, seed=0, progress=False)


def test_posterior_shapes_stats_and_deterministic_sites(posterior):
    assert posterior.samples["mu"].shape == (2, 300)
    torch.testing.assert_close(posterior.samples["mu_sq"], posterior.samples["mu"] ** 2)
    for name in ("diverging", "tree_depth", "num_steps", "n_steps", "energy", "step_size",
                 "acceptance_rate", "lp", "energy_error", "reached_max_treedepth"):
        assert posterior.sample_stats[name].shape == (2, 300), name
    # lp = -U: for this model U(μ) = -log N(μ|0,1) - Σ log N(y|μ,1) (identity transform)
    mu = posterior.samples["mu"]
    lp = dist.Normal(0.0, 1.0).log_prob(mu) + dist.Normal(mu[..., None], 1.0).log_prob(Y).sum(-1)
    torch.testing.assert_close(posterior.sample_stats["lp"], lp)


def test_to_arviz_groups_and_pointwise_log_likelihood(posterior):
    idata = posterior.to_arviz()
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood"} <= set(group_names(idata))
    ll = torch.as_tensor(idata["log_likelihood"]["y"].values)
    mu = posterior.samples["mu"]
    torch.testing.assert_close(ll, dist.Normal(mu[..., None], 1.0).log_prob(Y))
    assert set(idata["sample_stats"].data_vars) >= {"diverging", "tree_depth", "n_steps", "energy", "lp"}
    torch.testing.assert_close(torch.as_tensor(idata["observed_data"]["y"].values), Y)


def test_summary_matches_conjugate_posterior(posterior):
    table = posterior.summary()
    for col in ("mean", "sd", "ess_bulk", "ess_tail", "r_hat"):
        assert col in table.columns
    n = len(Y)
    exact_mean, exact_sd = float(Y.sum()) / (n + 1), (1 / (n + 1)) ** 0.5
    ess = float(table.loc["mu", "ess_bulk"])
    assert abs(float(posterior.samples["mu"].mean()) - exact_mean) < 4 * exact_sd / math.sqrt(ess)


def test_save_and_load_round_trip(posterior, tmp_path):
    path = tmp_path / "post.nc"
    posterior.save(path)
    back = Posterior.load(path)
    torch.testing.assert_close(back.samples["mu"], posterior.samples["mu"])
    assert torch.equal(back.sample_stats["diverging"], posterior.sample_stats["diverging"])
    torch.testing.assert_close(back.sample_stats["num_steps"], posterior.sample_stats["num_steps"])
    torch.testing.assert_close(back.log_likelihood["y"], posterior.log_likelihood["y"])


def test_predictive_draws_from_the_likelihood_and_joins_arviz(posterior):
    reps = predictive(normal_model, posterior, None, 6, seed=1)
    assert reps["y"].shape == (2, 300, 6)
    # y_rep = μ + ε: its mean matches μ's and its variance is Var(μ) + 1 (4 standard errors)
    mu = posterior.samples["mu"]
    resid = reps["y"] - mu[..., None]
    assert abs(float(resid.mean())) < 4 / math.sqrt(resid.numel())
    assert abs(float(resid.var()) - 1.0) < 4 * math.sqrt(2 / resid.numel())
    assert "posterior_predictive" in group_names(posterior.to_arviz())


# -- checkpoint, interrupt, resume -------------------------------------------------------------
class _Interrupt:
    after: int | None = None
    calls = 0


def interruptible(y: torch.Tensor) -> None:
    _Interrupt.calls += 1
    if _Interrupt.after is not None and _Interrupt.calls > _Interrupt.after:
        raise KeyboardInterrupt
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2, dtype=DT), 1.0).to_event(1))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)


def test_interrupt_returns_draws_and_resume_completes_identically(tmp_path):
    y = torch.tensor([[0.2, -0.5], [1.0, 0.1], [0.4, 0.7]], dtype=DT)
    opts = dict(num_chains=2, num_warmup=40, num_samples=60, seed=3, progress=False,
                capture=False, checkpoint_every=10)
    _Interrupt.calls, _Interrupt.after = 0, None
    full = mcmc(interruptible, y, **opts)
    # capture=False: one model call per batched gradient, so the identical interrupted run
    # reaches the middle of its sampling phase after this many model calls
    after = _Interrupt.calls - full.info["sampling_gradient_calls"] // 2
    path = tmp_path / "run.ckpt"
    _Interrupt.calls, _Interrupt.after = 0, after  # the model raises on call after + 1
    with pytest.warns(UserWarning, match="interrupted"):
        part = mcmc(interruptible, y, checkpoint=path, **opts)
    assert part.info["interrupted"] and path.exists()
    done = part.num_draws
    assert 0 < done < 60 and part.samples["mu"].shape == (2, done, 2)
    torch.testing.assert_close(part.samples["mu"], full.samples["mu"][:, :done], rtol=0, atol=0)
    _Interrupt.after = None
    resumed = resume(path, progress=False)
    assert resumed.num_draws == 60 and not resumed.info["interrupted"]
    torch.testing.assert_close(resumed.samples["mu"], full.samples["mu"], rtol=0, atol=0)


def test_resume_rejects_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        resume(tmp_path / "nothing.ckpt")


# -- SVI ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("guide", ["normal", "lowrank"])
def test_svi_recovers_the_conjugate_posterior(guide):
    # a decaying learning rate (0.05 -> 0.001) lets the final iterate settle
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.99})
    result = svi(normal_model, Y, guide=guide, num_steps=400, optimizer=optim, seed=0,
                 progress=False)
    assert len(result.losses) == 400
    assert sum(result.losses[-50:]) < sum(result.losses[:50])
    draws = result.sample_posterior(2000, seed=0)["mu"]
    n = len(Y)
    exact_mean, exact_sd = float(Y.sum()) / (n + 1), (1 / (n + 1)) ** 0.5
    # the Gaussian family contains the exact posterior: mean and sd within 0.05
    # (SGD noise; the Monte Carlo error of 2000 draws is 0.009)
    assert abs(float(draws.mean()) - exact_mean) < 0.05
    assert abs(float(draws.std()) - exact_sd) < 0.05
    idata = result.to_arviz(num_samples=100, seed=0)
    assert idata["posterior"]["mu"].shape == (1, 100)


def nan_factor_model(y: torch.Tensor) -> None:
    s = pyro.sample("s", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
    pyro.factor("penalty", torch.log(-(s**2) - 1.0))  # log of a negative number: NaN
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(s, 1.0), obs=y)


def test_svi_nan_loss_names_step_and_site():
    with warnings.catch_warnings(), pyro.validation_enabled(False):
        warnings.simplefilter("ignore")
        with pytest.raises(FloatingPointError, match=r"at step 0 at model site 'penalty'"):
            svi(nan_factor_model, Y, num_steps=5, progress=False, seed=0)
    # with Pyro's validation on, its own NaN check fires first: still named with the step
    with pytest.raises(FloatingPointError, match=r"at step 0: .*log_factor"):
        svi(nan_factor_model, Y, num_steps=5, progress=False, seed=0)


def test_svi_bad_arguments():
    with pytest.raises(ValueError, match="guide must be one of"):
        svi(normal_model, Y, guide="flow", progress=False)
    with pytest.raises(ValueError, match="num_steps"):
        svi(normal_model, Y, num_steps=0, progress=False)


# -- engine="pyro" -----------------------------------------------------------------------------
def test_pyro_engine_runs_the_same_model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = mcmc(normal_model, Y, engine="pyro", num_chains=1, num_warmup=100, num_samples=200,
                    seed=0, progress=False)
    assert post.info["engine"] == "pyro"
    assert post.samples["mu"].shape == (1, 200)
    assert post.sample_stats["diverging"].shape == (1, 200)
    n = len(Y)
    assert abs(float(post.samples["mu"].mean()) - float(Y.sum()) / (n + 1)) < 0.2  # ≈ 5 MCSE
    assert "log_likelihood" in group_names(post.to_arviz())
