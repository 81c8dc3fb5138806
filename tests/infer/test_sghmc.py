"""Scale-adapted SGHMC: conjugate posterior, unbiased minibatch gradients, Gibbs hook,
interrupt/resume, predictive function values, bad input."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesact.infer import resume, sghmc
from bayesact.infer.minibatch import MinibatchPotential

DT = torch.float64


# -- conjugate Bayesian linear regression ------------------------------------------------------
def _regression_data(n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, 2, generator=g, dtype=DT)
    x = torch.stack([base[:, 0], 0.6 * base[:, 0] + 0.8 * base[:, 1]], -1)  # correlated columns
    y = x @ torch.tensor([1.0, -0.5], dtype=DT) + torch.randn(n, generator=g, dtype=DT)
    return x, y


def linear_model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=DT), 1.0).to_event(1))
    f = pyro.deterministic("f", x @ w)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(f, 1.0), obs=y)


def test_conjugate_regression_posterior_mean_and_covariance():
    x, y = _regression_data()
    x_test = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=DT)
    # exact posterior: w | y ~ N(Σ Xᵀy, Σ), Σ = (I + XᵀX)⁻¹ (unit noise, unit prior)
    cov = torch.linalg.inv(torch.eye(2, dtype=DT) + x.T @ x)
    mean = cov @ x.T @ y
    # 16 vectorized chains cost about as much per step as 4 on this tiny model: more ESS
    post = sghmc(linear_model, x, y, num_chains=16, num_burnin=2000, num_samples=510, thinning=10,
                 num_discard=10, batch_size=20, step_size=0.02, momentum_decay=0.05, seed=0,
                 progress=False, predict=("f", x_test))
    w = post.samples["w"]
    assert w.shape == (16, 500, 2) and post.info["likelihood_scale"] == 5.0
    assert post.info["scaled_sites"] == ["y"]
    idata_summary = post.summary(var_names=["w"])
    # means: SGHMC's stationary mean is exact for a Gaussian target (linear drift, zero-mean
    # gradient noise). ArviZ's mcse_mean underrates the error of these underdamped chains:
    # over 6 runs (seeds, 4 and 16 chains) the errors had RMS 2 mcse, so the tolerance is
    # 4 standard errors of 2 mcse each
    mcse = idata_summary["mcse_mean"].to_numpy()
    assert np.all(np.abs(w.reshape(-1, 2).mean(0).numpy() - mean.numpy()) < 8 * mcse)
    # covariance: SGHMC has no Metropolis step, so its bias must fit in the tolerance. With
    # ε = 0.02, α = 0.05, N/B = 5 the minibatch noise changes the variances by about -2% (the
    # -ε⁴ term cancels most of the gradient noise ε⁴ M⁻² Var(g)); the discretisation bias grows
    # like ε²: measured over 3 seeds with 4 chains, variance ratios 0.91-1.04 and correlation
    # -0.54 ± 0.02 (exact -0.57) at ε = 0.02, but +0.16 at ε = 0.1 (so the test can fail).
    # The Monte Carlo error of a variance at bulk ESS ≈ 700 is √(2/ESS) ≈ 5%, of the
    # correlation (1 - ρ²)/√ESS ≈ 0.025: tolerances 15% on variances and 0.1 on the
    # correlation (about 3 standard errors plus the bias).
    emp = torch.cov(w.reshape(-1, 2).T)
    torch.testing.assert_close(emp.diag(), cov.diag(), rtol=0.15, atol=0)
    corr = lambda c: float(c[0, 1] / c.diag().prod().sqrt())  # noqa: E731
    assert abs(corr(emp) - corr(cov)) < 0.1
    assert float(idata_summary["r_hat"].max()) < 1.05
    # predictive function values at test inputs: exactly x_test @ w at every draw
    assert post.samples["f"].shape == (16, 500, 2)
    torch.testing.assert_close(post.samples["f"], w @ x_test.T)
    assert {"lp", "step_size", "grad_norm"} <= set(post.sample_stats)
    assert float(post.summary(var_names=["f"])["r_hat"].max()) < 1.05


# -- minibatch gradients -----------------------------------------------------------------------
def noisy_regression(x: torch.Tensor, y: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=DT), 1.0).to_event(1))
    s = pyro.sample("s", dist.HalfNormal(torch.tensor(1.0, dtype=DT)))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, s), obs=y)


def _reference_potential(z: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # independent float64 closed form: U = -log N(w|0,1) - log HalfNormal(s|1) - log s - Σ log N(y|xw,s)
    w, log_s = z[:2], z[2]
    s = log_s.exp()
    prior = -0.5 * (w**2).sum() - math.log(2 * math.pi)
    half_normal = 0.5 * math.log(2 / math.pi) - 0.5 * s**2
    lik = (-0.5 * ((y - x @ w) / s) ** 2 - log_s - 0.5 * math.log(2 * math.pi)).sum()
    return -(prior + half_normal + log_s + lik)


@pytest.mark.parametrize("batch_size", [2, 3])
def test_minibatch_gradients_average_to_the_full_gradient(batch_size):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, generator=g, dtype=DT)
    y = torch.randn(6, generator=g, dtype=DT)
    mb = MinibatchPotential(noisy_regression, (x, y), {}, batch_size, 2, DT, torch.device("cpu"))
    assert mb.per_chain and mb.potential.likelihood_scale == 6 / batch_size
    z = torch.tensor([[0.3, -0.7, 0.2], [-1.0, 0.5, -0.4]], dtype=DT)
    values, grads = [], []
    for rows in itertools.combinations(range(6), batch_size):  # every batch, equally likely
        u, gr = mb.value_and_grad(z, torch.tensor(rows).expand(2, batch_size))
        values.append(u)
        grads.append(gr)
    for c in range(2):
        zc = z[c].clone().requires_grad_(True)
        ref = _reference_potential(zc, x, y)
        (ref_grad,) = torch.autograd.grad(ref, zc)
        torch.testing.assert_close(torch.stack(values)[:, c].mean(), ref.detach())
        torch.testing.assert_close(torch.stack(grads)[:, c].mean(0), ref_grad)
        assert float((torch.stack(grads)[:, c] - ref_grad).abs().max()) > 1e-3  # batches differ


def checked_regression(x: torch.Tensor, y: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):  # data-dependent Python check: vmap cannot batch x
        raise ValueError("x has NaN")
    noisy_regression(x, y)


def test_models_that_cannot_vmap_their_data_share_one_minibatch():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 2, generator=g, dtype=DT), torch.randn(6, generator=g, dtype=DT)
    mb = MinibatchPotential(checked_regression, (x, y), {}, 3, 2, DT, torch.device("cpu"))
    assert not mb.per_chain and mb.mode != "loop"
    ref = MinibatchPotential(noisy_regression, (x, y), {}, 3, 2, DT, torch.device("cpu"))
    z = torch.tensor([[0.3, -0.7, 0.2], [-1.0, 0.5, -0.4]], dtype=DT)
    rows = torch.tensor([4, 0, 2])
    u, gr = mb.value_and_grad(z, rows)
    u_ref, g_ref = ref.value_and_grad(z, rows.expand(2, 3))
    torch.testing.assert_close(u, u_ref)
    torch.testing.assert_close(gr, g_ref)
    assert mb.draw_indices(torch.Generator().manual_seed(0)).shape == (3,)


# -- Gibbs updates (hierarchical BNN) ----------------------------------------------------------
class _RecordingBNN:
    """A BNN whose Gibbs hook records what it was given and what it returned."""

    def __init__(self, bnn) -> None:
        self.bnn = bnn
        self.calls: list[tuple[dict, dict]] = []

    def __call__(self, *args, **kwargs):
        return self.bnn(*args, **kwargs)

    @property
    def gibbs_sites(self) -> tuple[str, ...]:
        return self.bnn.gibbs_sites

    def gibbs_update(self, values):
        out = self.bnn.gibbs_update(values)
        self.calls.append(({k: v.clone() for k, v in values.items()}, out))
        return out


def test_gibbs_hook_resamples_hierarchical_variances():
    from bayesact.models import BNN
    from bayesact.priors import HierarchicalPrior

    g = torch.Generator().manual_seed(2)
    x = torch.linspace(-2, 2, 40, dtype=DT)[:, None]
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(40, generator=g, dtype=DT)
    model = _RecordingBNN(BNN(1, hidden=(8,), prior=HierarchicalPrior(2), noise_std=0.1).double())
    names = model.gibbs_sites
    assert len(names) == 4
    post = sghmc(model, x, y, num_chains=2, num_burnin=100, num_samples=6, thinning=25,
                 batch_size=10, gibbs_every=50, seed=4, progress=False)
    assert post.info["gibbs_sites"] == list(names)
    assert len(model.calls) == (100 + 6 * 25) // 50  # every 50 steps
    for name in names:
        draws = post.samples[name]  # (chain, draw)
        assert draws.shape == (2, 6) and bool((draws > 0).all())
        # draw k is taken at step 125 + 25k: the value returned by the last Gibbs call, never
        # moved by the dynamics in between (the call at step 100 + 50j serves draws 2j-1, 2j)
        for k in range(6):
            call = (100 + 25 * (k + 1)) // 50 - 1
            torch.testing.assert_close(draws[:, k], model.calls[call][1][name].to(DT))
        returned = torch.stack([out[name] for _, out in model.calls])
        assert bool((returned[1:] != returned[:-1]).all())  # resampled at every call
    # the hook gets the current weights: at steps 150, 200, 250 they are those of draws 1, 3, 5
    for k in (1, 3, 5):
        given = model.calls[(125 + 25 * k) // 50 - 1][0]
        torch.testing.assert_close(given["layers.0.weight"], post.samples["layers.0.weight"][:, k])


# -- interrupt and resume ----------------------------------------------------------------------
class _Interrupt:
    after: int | None = None
    calls = 0


def interruptible(x: torch.Tensor, y: torch.Tensor) -> None:
    _Interrupt.calls += 1
    if _Interrupt.after is not None and _Interrupt.calls > _Interrupt.after:
        raise KeyboardInterrupt
    noisy_regression(x, y)  # no deterministic sites: no model replays after the run


def test_interrupt_returns_draws_and_resume_completes_identically(tmp_path):
    x, y = _regression_data(30)
    opts = dict(num_chains=2, num_burnin=40, num_samples=20, thinning=5, batch_size=10, seed=3,
                progress=False, capture=False, checkpoint_every=7)
    _Interrupt.calls, _Interrupt.after = 0, None
    full = sghmc(interruptible, x, y, **opts)
    path = tmp_path / "run.ckpt"
    # capture=False: one model call per step, after a fixed number of set-up calls
    setup = _Interrupt.calls - (40 + 20 * 5)
    _Interrupt.calls, _Interrupt.after = 0, setup + 40 + 53  # raises inside step 94
    with pytest.warns(UserWarning, match="interrupted"):
        part = sghmc(interruptible, x, y, checkpoint=path, **opts)
    assert part.info["interrupted"] and part.info["steps_done"] == 93 and path.exists()
    assert part.num_draws == 10
    torch.testing.assert_close(part.samples["w"], full.samples["w"][:, :10], rtol=0, atol=0)
    _Interrupt.after = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        resumed = resume(path, progress=False)
    assert resumed.num_draws == 20 and not resumed.info["interrupted"]
    torch.testing.assert_close(resumed.samples["w"], full.samples["w"], rtol=0, atol=0)


# -- bad input ---------------------------------------------------------------------------------
def no_data_model() -> None:
    pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 31}, "batch_size"),
        ({"num_chains": 0}, "num_chains"),
        ({"thinning": 0}, "thinning"),
        ({"num_samples": 5, "num_discard": 5}, "num_discard"),
        ({"step_size": -1.0}, "step_size"),
        ({"momentum_decay": 1.5}, "momentum_decay"),
        ({"predict": ("w", torch.zeros(2, 2, dtype=DT))}, "predict"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(kwargs, match):
    x, y = _regression_data(30)
    with pytest.raises(ValueError, match=match):
        sghmc(linear_model, x, y, **{"num_burnin": 1, "num_samples": 10, "thinning": 1,
                                     "progress": False, **kwargs})


def test_model_without_minibatchable_arguments_is_rejected():
    with pytest.raises(ValueError, match="args"):
        sghmc(no_data_model, num_burnin=1, num_samples=1, thinning=1, progress=False)
