"""The sampler drivers' API: dtype of the whole run, model keyword arguments, explicit options,
clear errors for bad input, sequential chains under Ctrl-C, warnings and progress bars."""

from __future__ import annotations

import inspect
import io
import math
import sys
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesact.infer.sampler as sampler_module
from bayesact.infer import mcmc, sghmc, svi
from bayesact.infer.phases import show_progress
from bayesact.models import BNN

F64 = torch.float64


# -- models: they create tensors with torch's default dtype, as users' models do -------------
def regression(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    s = pyro.sample("s", dist.HalfNormal(torch.tensor(1.0)))
    pyro.deterministic("w_sum", w.sum())
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, s), obs=y)


def regression_kwonly(x: torch.Tensor, *, y: torch.Tensor | None = None) -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, 0.5), obs=y)


def noisy(x: torch.Tensor, y: torch.Tensor, *, noise: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, noise), obs=y)


def data(n: int = 20, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=gen, dtype=F64)
    y = x @ torch.tensor([0.7, -1.2], dtype=F64) + 0.5 * torch.randn(n, generator=gen, dtype=F64)
    return x.to(dtype), y.to(dtype)


QUICK = dict(num_chains=2, num_warmup=20, num_samples=10, seed=0, progress=False)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# -- float64 end to end ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["nuts", "hmc"])
@pytest.mark.parametrize("chain_method", ["vectorized", "sequential"])
@pytest.mark.parametrize("how", ["float64 arguments", "dtype="])
def test_mcmc_runs_in_float64(method, chain_method, how):
    x, y = data(dtype=F64 if how == "float64 arguments" else torch.float32)
    extra = {"dtype": F64} if how == "dtype=" else {}
    post = quiet(mcmc, regression, x, y, method=method, chain_method=chain_method, num_steps=5
                 if method == "hmc" else None, **QUICK, **extra)
    for name in ("w", "s", "w_sum"):
        assert post.samples[name].dtype == F64, name
        assert bool(torch.isfinite(post.samples[name]).all())
    assert post.sample_stats["lp"].dtype == F64
    assert post.samples["w"].shape == (2, 10, 2)
    assert torch.get_default_dtype() == torch.float32  # restored after the run


def test_float64_run_matches_the_closed_form_posterior():
    # y ~ N(x w, 0.5²), w ~ N(0, I): the posterior mean is exact; float32 data, dtype=float64
    x, y = data(n=30)
    post = quiet(mcmc, regression_kwonly, x, y=y, dtype=F64, num_chains=4, num_warmup=150,
                 num_samples=250, seed=1, progress=False)
    x64, y64 = x.to(F64), y.to(F64)
    cov = torch.linalg.inv(torch.eye(2, dtype=F64) + x64.T @ x64 / 0.25)
    mean = cov @ x64.T @ y64 / 0.25
    draws = post.samples["w"].reshape(-1, 2)
    se = cov.diagonal().sqrt() / math.sqrt(draws.shape[0] / 4)  # ESS ≥ a quarter of the draws
    assert torch.all((draws.mean(0) - mean).abs() < 4 * se)


@pytest.mark.parametrize("how", ["float64 arguments", "dtype="])
def test_svi_runs_in_float64(how):
    x, y = data(dtype=F64 if how == "float64 arguments" else torch.float32)
    extra = {"dtype": F64} if how == "dtype=" else {}
    result = svi(regression, x, y, num_steps=5, progress=False, seed=0, **extra)
    draws = result.sample_posterior(3, seed=0)
    assert draws["w"].dtype == draws["s"].dtype == F64
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("how", ["float64 arguments", "dtype="])
def test_sghmc_runs_in_float64(how):
    x, y = data(dtype=F64 if how == "float64 arguments" else torch.float32)
    extra = {"dtype": F64} if how == "dtype=" else {}
    post = sghmc(regression, x, y, num_chains=2, num_burnin=10, num_samples=3, thinning=2,
                 batch_size=5, seed=0, progress=False, **extra)
    assert post.samples["w"].dtype == post.samples["s"].dtype == F64
    assert bool(torch.isfinite(post.samples["w"]).all())


def test_bnn_runs_in_float64_with_every_sampler_and_is_cast_in_place():
    x, y = data()
    bnn = BNN(2, hidden=(4,))
    assert all(p.dtype == torch.float32 for p in bnn.parameters())
    post = quiet(mcmc, bnn, x, y, dtype=F64, max_tree_depth=4, **QUICK)
    assert all(v.dtype == F64 for v in post.samples.values())
    assert all(p.dtype == F64 for p in bnn.parameters())  # documented: cast in place
    post = sghmc(BNN(2, hidden=(4,)), x.to(F64), y.to(F64), num_chains=2, num_burnin=10,
                 num_samples=3, thinning=2, batch_size=5, seed=0, progress=False)
    assert all(v.dtype == F64 for v in post.samples.values())
    result = svi(BNN(2, hidden=(4,)), x, y, dtype=F64, num_steps=3, progress=False, seed=0)
    assert all(v.dtype == F64 for v in result.sample_posterior(2, seed=0).values())


def test_pyro_gp_model_given_as_a_bound_method_runs_in_float64():
    import pyro.contrib.gp as gp
    from pyro.nn import PyroSample

    x = torch.linspace(0.0, 1.0, 12)
    y = torch.sin(6 * x)
    gpr = gp.models.GPRegression(x, y, gp.kernels.RBF(1))
    gpr.kernel.lengthscale = PyroSample(dist.LogNormal(torch.tensor(0.0), torch.tensor(1.0)))
    gpr.kernel.variance = PyroSample(dist.LogNormal(torch.tensor(0.0), torch.tensor(1.0)))
    gpr.noise = PyroSample(dist.LogNormal(torch.tensor(-2.0), torch.tensor(1.0)))
    post = quiet(mcmc, gpr.model, dtype=F64, **QUICK)
    assert {v.dtype for v in post.samples.values()} == {F64}
    assert gpr.X.dtype == gpr.y.dtype == F64  # the module's data attributes follow the run


# -- model keyword arguments and explicit options -------------------------------------------
def test_keyword_arguments_reach_the_model_like_pyro_mcmc_run():
    x, y = data(dtype=F64)
    positional = quiet(mcmc, regression, x, y, **QUICK)
    keyword = quiet(mcmc, regression, x, y=y, **QUICK)
    old_style = quiet(mcmc, regression, x, model_kwargs={"y": y}, **QUICK)
    for name in ("w", "s"):
        assert torch.equal(positional.samples[name], keyword.samples[name])
        assert torch.equal(positional.samples[name], old_style.samples[name])
    assert torch.equal(keyword.kwargs["y"], y)
    only_kw = quiet(mcmc, regression_kwonly, x, y=y, **QUICK)
    assert only_kw.observed["y"].shape == (20,)


def test_keyword_arguments_reach_the_model_in_svi_and_sghmc():
    x, y = data(dtype=F64)
    result = svi(regression_kwonly, x, y=y, num_steps=3, progress=False, seed=0)
    assert torch.equal(result.kwargs["y"], y)
    # sghmc minibatches the positional data; keyword arguments reach the model unchanged
    opts = dict(num_chains=2, num_burnin=5, num_samples=3, thinning=1, batch_size=5, seed=0, progress=False)
    keyword = sghmc(noisy, x, y, noise=torch.tensor(0.3), **opts)
    old_style = sghmc(noisy, x, y, model_kwargs={"noise": torch.tensor(0.3)}, **opts)
    assert torch.equal(keyword.samples["w"], old_style.samples["w"])
    assert float(keyword.kwargs["noise"]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="running the model failed"):
        sghmc(noisy, x, y, **opts)  # the model needs noise=


def test_every_sampler_option_is_an_explicit_keyword_only_parameter():
    params = inspect.signature(mcmc).parameters
    for name in ("compile", "capture", "adapt_mass_matrix", "trajectory_length", "checkpoint_every",
                 "sync_every", "max_delta_energy", "adapt_step_size", "jit_compile", "model_kwargs"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].annotation != inspect.Parameter.empty, name
        assert f"{name}:" in mcmc.__doc__, name
    params = inspect.signature(sghmc).parameters
    for name in ("clip_grad_norm", "checkpoint_every", "capture", "model_kwargs"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert f"{name}:" in sghmc.__doc__, name
    assert inspect.signature(svi).parameters["dtype"].kind is inspect.Parameter.KEYWORD_ONLY


def test_misspelt_option_is_a_type_error_naming_it_and_the_option():
    x, y = data(dtype=F64)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['num_sample'\].*'num_samples'"):
        mcmc(regression, x, y, num_sample=10)
    with pytest.raises(TypeError, match=r"\['thining'\].*'thinning'"):
        sghmc(regression, x, y, thining=10)
    with pytest.raises(TypeError, match=r"\['num_step'\].*'num_steps'"):
        svi(regression, x, y, num_step=10)
    with pytest.raises(TypeError, match="given twice"):
        mcmc(regression, x, y=y, model_kwargs={"y": y})


# -- bad input ---------------------------------------------------------------------------------
class CountingModel:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        self.calls += 1
        regression(x, y)


def test_checkpoint_in_a_missing_directory_fails_before_sampling(tmp_path):
    x, y = data(dtype=F64)
    path = tmp_path / "missing" / "run.ckpt"
    model = CountingModel()
    with pytest.raises(ValueError, match="checkpoint=.*does not exist"):
        mcmc(model, x, y, checkpoint=path, **QUICK)
    with pytest.raises(ValueError, match="checkpoint=.*does not exist"):
        sghmc(model, x, y, checkpoint=path, num_burnin=2, num_samples=2, thinning=1, batch_size=5,
              progress=False)
    with pytest.raises(ValueError, match="is a directory"):
        mcmc(model, x, y, checkpoint=tmp_path, **QUICK)
    assert model.calls == 0


def test_non_finite_data_is_named_with_its_count():
    x, y = data(dtype=F64)
    y_inf = y.clone()
    y_inf[[3, 7]] = math.inf
    with pytest.raises(ValueError, match="observed site 'y' has 2 infinite value"):
        mcmc(regression, x, y_inf, **QUICK)
    x_nan = x.clone()
    x_nan[4, 1] = math.nan
    with pytest.raises(ValueError, match=r"args\[0\] \(1 NaN\).*'y'"):
        mcmc(regression, x_nan, y, **QUICK)
    with pytest.raises(ValueError, match="observed site 'y' has 2 infinite value"):
        sghmc(regression, x, y_inf, num_burnin=2, num_samples=2, thinning=1, batch_size=5, progress=False)
    with pytest.raises(ValueError, match=r"minibatched data hold non-finite values: args\[0\] \(1 NaN\)"):
        sghmc(regression, x_nan, y, num_burnin=2, num_samples=2, thinning=1, batch_size=5, progress=False)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_delta_energy": 0.0}, "max_delta_energy must be a positive number"),
        ({"max_delta_energy": -5.0}, "max_delta_energy"),
        ({"max_delta_energy": math.nan}, "max_delta_energy"),
        ({"trajectory_length": math.nan, "method": "hmc"}, "trajectory_length must be a positive finite"),
        ({"trajectory_length": 0.0, "method": "hmc"}, "trajectory_length"),
        ({"trajectory_length": -1.0, "method": "hmc"}, "trajectory_length"),
        ({"sync_every": 0}, "sync_every must be an integer >= 1"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"step_size": math.inf}, "step_size"),
        ({"seed": -1}, "seed"),
        ({"init": {"w": torch.zeros(2), "s": 1.0, "v": 0.0}}, r"unknown site\(s\) \['v'\].*\['s', 'w'\]"),
        ({"init": {"w": torch.zeros(3), "s": 1.0}},
         r"init\['w'\] has shape \(3,\); expected .*\(2,\).*\(2, 2\)"),
        ({"init": {"w": torch.zeros(2)}}, r"missing latent site\(s\) \['s'\]"),
        ({"init": {"w": torch.zeros(2), "s": -1.0}}, r"init\['s'\] lies outside the support"),
        ({"init": "prior"}, "init must be"),
        ({"device": "gpu"}, "device must be a torch device"),
    ],
)
def test_options_outside_their_domain_raise_value_errors_naming_them(options, match):
    x, y = data(dtype=F64)
    with pytest.raises(ValueError, match=match):
        mcmc(regression, x, y, **{**QUICK, **options})


def test_init_errors_in_sghmc_name_the_site():
    x, y = data(dtype=F64)
    with pytest.raises(ValueError, match=r"init\['w'\] has shape \(3,\)"):
        sghmc(regression, x, y, init={"w": torch.zeros(3), "s": 1.0}, num_burnin=2, num_samples=2,
              thinning=1, batch_size=5, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_a_value_error_naming_device():
    x, y = data(dtype=F64)
    with pytest.raises(ValueError, match="device='cuda' is not available"):
        mcmc(regression, x, y, device="cuda", **QUICK)
    with pytest.raises(ValueError, match="device='cuda' is not available"):
        sghmc(regression, x, y, device="cuda", progress=False)
    with pytest.raises(ValueError, match="device='cuda' is not available"):
        svi(regression, x, y, device="cuda", progress=False)


def only_discrete() -> None:
    k = pyro.sample("k", dist.Bernoulli(torch.tensor(0.3)))
    pyro.sample("x", dist.Normal(k, 1.0), obs=torch.tensor(0.5))


def test_pyro_engine_rejects_a_model_whose_latents_are_all_discrete():
    with pytest.raises(ValueError, match=r"engine='pyro'.*every latent site.*discrete \(\['k'\]\)"):
        mcmc(only_discrete, engine="pyro", **QUICK)


# -- sequential chains under Ctrl-C ----------------------------------------------------------
def _interrupt_transition_at(monkeypatch, call: int) -> None:
    original = sampler_module._transition
    count = {"n": 0}

    def transition(*args, **kwargs):
        count["n"] += 1
        if count["n"] == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(sampler_module, "_transition", transition)


SEQ = dict(num_chains=3, num_warmup=10, num_samples=8, seed=4, progress=False, chain_method="sequential")


def test_sequential_interrupt_in_chain_2_keeps_every_completed_draw(monkeypatch):
    x, y = data(dtype=F64)
    full = quiet(mcmc, regression, x, y, **SEQ)
    # one _transition per iteration: chain 1 makes 18; chain 2's 10 warmup + 4 draws, then Ctrl-C
    _interrupt_transition_at(monkeypatch, 18 + 10 + 5)
    with pytest.warns(UserWarning, match="interrupted") as record:
        part = mcmc(regression, x, y, **SEQ)
    assert all(w.filename == __file__ for w in record)
    assert part.info["interrupted"] and part.info["chains_completed"] == 1
    assert part.samples["w"].shape == (1, 8, 2)  # the finished chain is not truncated
    assert torch.equal(part.samples["w"], full.samples["w"][:1])
    assert torch.equal(part.samples["w_sum"], full.samples["w_sum"][:1])
    assert part.info["interrupted_chain_draws"] == 4
    assert torch.equal(part.info["interrupted_chain"]["w"], full.samples["w"][1:2, :4])
    part.summary()  # no KeyError


def test_sequential_interrupt_in_the_first_chain_returns_its_draws(monkeypatch):
    x, y = data(dtype=F64)
    full = quiet(mcmc, regression, x, y, **SEQ)
    _interrupt_transition_at(monkeypatch, 10 + 4)
    part = quiet(mcmc, regression, x, y, **SEQ)
    assert part.info["interrupted"] and part.samples["w"].shape == (1, 3, 2)
    assert torch.equal(part.samples["w"], full.samples["w"][:1, :3])


def test_sequential_interrupt_while_setting_up_a_chain_keeps_the_completed_ones(monkeypatch):
    x, y = data(dtype=F64)
    original = sampler_module.build_potential
    calls = {"n": 0}

    def build(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(sampler_module, "build_potential", build)
    with pytest.warns(UserWarning, match="setting up chain 2"):
        part = mcmc(regression, x, y, **SEQ)
    assert part.samples["w"].shape == (2, 8, 2)


# -- warnings and progress bars ------------------------------------------------------------------
def funnel() -> None:
    v = pyro.sample("v", dist.Normal(torch.tensor(0.0), 3.0))
    pyro.sample("x", dist.Normal(torch.zeros(5), torch.exp(v / 2)).to_event(1))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"chain_method": "sequential"},
        {"engine": "pyro", "num_chains": 1},
    ],
    ids=["vectorized", "sequential", "pyro"],
)
def test_divergence_warnings_point_at_the_callers_line(options):
    opts = dict(num_chains=2, num_warmup=40, num_samples=60, seed=0, progress=False, max_tree_depth=4,
                target_accept=0.6, dtype=F64)
    with pytest.warns(UserWarning, match="divergent transitions") as record:
        post = mcmc(funnel, **{**opts, **options})
    assert post.num_divergences > 0
    assert [w.filename for w in record if "divergent" in str(w.message)] == [__file__]


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not show_progress(True)
    x, y = data(dtype=F64)
    quiet(mcmc, regression, x, y, **{**QUICK, "progress": True})
    svi(regression, x, y, num_steps=3, seed=0)
    assert sys.stderr.getvalue() == ""  # a log file gets no bars
    monkeypatch.setattr(sys, "stderr", _FakeTerminal())
    assert show_progress(True) and not show_progress(False)
    quiet(mcmc, regression, x, y, **{**QUICK, "progress": True})
    assert "warmup" in sys.stderr.getvalue()


def checked(x: torch.Tensor, y: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):  # data-dependent Python check: cannot be captured
        raise ValueError("x has NaN")
    regression(x, y)


def test_capture_fallback_warning_points_at_the_callers_line():
    x, y = data(dtype=F64)
    with pytest.warns(UserWarning, match="could not capture") as record:
        sghmc(checked, x, y, num_chains=2, num_burnin=2, num_samples=2, thinning=1, batch_size=5,
              seed=0, progress=False)
    assert {w.filename for w in record if "could not capture" in str(w.message)} == {__file__}


def test_numpy_integer_seeds_are_accepted():
    import numpy as np

    x, y = data(dtype=F64)
    a = quiet(mcmc, regression, x, y, **{**QUICK, "seed": 3})
    b = quiet(mcmc, regression, x, y, **{**QUICK, "seed": np.int64(3)})
    assert torch.equal(a.samples["w"], b.samples["w"])
    with pytest.raises(ValueError, match="seed must be None or an integer >= 0"):
        svi(regression, x, y, seed=1.5)


def test_keyword_arguments_reach_the_model_in_predictive_and_resume(tmp_path):
    from bayesact.infer import predictive, resume

    x, y = data(dtype=F64)
    post = quiet(mcmc, regression_kwonly, x, y=y, **QUICK)
    x_new = torch.randn(5, 2, dtype=F64)
    keyword = predictive(regression_kwonly, post, x_new, y=None, seed=1)
    old_style = predictive(regression_kwonly, post, x_new, model_kwargs={"y": None}, seed=1)
    assert keyword["y"].shape == (2, 10, 5)  # the new inputs, not the run's 20 points
    assert torch.equal(keyword["y"], old_style["y"])
    with pytest.raises(TypeError, match="unknown argument"):
        predictive(regression_kwonly, post, x_new, why=None)

    path = tmp_path / "run.ckpt"
    full = quiet(mcmc, regression_kwonly, x, y=y, **QUICK)
    part = quiet(mcmc, regression_kwonly, x, y=y, checkpoint=path, **{**QUICK, "num_samples": 10})
    resumed = quiet(resume, path, regression_kwonly, x, y=y, progress=False)
    assert torch.equal(resumed.samples["w"], part.samples["w"])
    assert torch.equal(resumed.samples["w"], full.samples["w"])
    with pytest.raises(ValueError, match="different values"):
        quiet(resume, path, regression_kwonly, x, y=-y, progress=False)
