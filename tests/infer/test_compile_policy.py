"""mcmc's compile policy: ``compile="auto"`` (eager at once, compiled when it pays), the switch
keeps the posterior, compile failures fall back with one warning, ``BAYESACT_COMPILE=0``."""

from __future__ import annotations

import threading
import uuid
import warnings
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

from bayesact import compilation
from bayesact.infer import compiled as compiled_steps
from bayesact.infer import mcmc, sampler
from bayesact.infer.nuts_tree import eager_kernels

from .sbc_models import normal_normal, simulate
from .test_sbc import chi2_p, ranks

N_OBS = 5


def _conjugate(y: torch.Tensor) -> None:
    """mu ~ N(0, 1), y_j ~ N(mu, 1): posterior N(Σy / (n + 1), 1 / (n + 1))."""
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


Y = torch.tensor([0.3, -1.2, 2.0, 0.7, 1.1], dtype=torch.float64)
POST_MEAN, POST_SD = float(Y.sum()) / (N_OBS + 1), (1.0 / (N_OBS + 1)) ** 0.5


def _bayesact_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "bayesact" in str(w.message)]


def _switch_at(monkeypatch: pytest.MonkeyPatch, iteration: int) -> None:
    """Make ``compile="auto"`` decide at ``iteration`` and compile in the caller's thread."""
    monkeypatch.setattr(sampler, "AUTO_PROBE_ITERATIONS", iteration)
    monkeypatch.setattr(sampler, "AUTO_MIN_SECONDS", 0.0)
    monkeypatch.setattr(sampler._AutoCompile, "background", False)


def test_compile_must_be_true_false_or_auto() -> None:
    with pytest.raises(ValueError, match="compile must be True, False or 'auto'"):
        mcmc(_conjugate, Y, compile="yes", num_samples=5, num_warmup=5, progress=False)


def test_auto_is_the_default_and_a_short_run_never_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_compile(*args, **kwargs):
        raise AssertionError("a short run must not compile")

    monkeypatch.setattr(sampler, "compile_nuts_kernels", must_not_compile)
    post = mcmc(_conjugate, Y, num_chains=2, num_warmup=50, num_samples=50, seed=0, progress=False)
    # (a run projected over AUTO_SCRIPT_MIN_SECONDS, as on a loaded machine, may trace its steps to
    # TorchScript: a few milliseconds, not a compile)
    assert post.info["potential_mode"] in ("captured", "captured+scripted_leaf")
    assert post.info["compile_seconds"] == 0.0 and post.info["compiled_from_iteration"] is None


def test_auto_switches_to_the_compiled_steps_and_keeps_the_posterior(monkeypatch: pytest.MonkeyPatch) -> None:
    # a stand-in compiler (the eager steps, counted) isolates the switching logic from Inductor;
    # the draws before and after the switch come from the same posterior (two-sample KS test)
    used = []

    def stand_in(graph, z, potential, grad, step_size, inverse_mass, depth, max_delta, counter):
        kernels = eager_kernels(graph, max_delta)

        def leaf(*args):
            used.append(1)
            counter.calls += 1
            return kernels.leaf(*args)

        def pair(*args):
            counter.calls += 2
            return kernels.pair(*args)

        return sampler.NutsKernels(leaf, pair, kernels.merge), 1.5

    warmup, draws = 200, 1600
    _switch_at(monkeypatch, warmup + draws // 2)
    monkeypatch.setattr(sampler, "compile_nuts_kernels", stand_in)
    post = mcmc(_conjugate, Y, num_chains=4, num_warmup=warmup, num_samples=draws, seed=1,
                progress=False, compile="auto")
    assert post.info["compiled_from_iteration"] == warmup + draws // 2
    assert post.info["compile_seconds"] == 1.5 and used
    mu = post.samples["mu"]
    before, after = mu[:, : draws // 2 : 4].reshape(-1), mu[:, draws // 2 :: 4].reshape(-1)
    assert stats.ks_2samp(before.numpy(), after.numpy()).pvalue > 1e-3
    for half in (before, after):  # and both match the exact posterior
        assert stats.kstest(half.numpy(), stats.norm(POST_MEAN, POST_SD).cdf).pvalue > 1e-3


def test_auto_compiles_a_short_run_whose_steps_this_machine_compiled_before(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    # a compile (here compile=True) leaves a record keyed by the gradient graph, its data and the
    # state's shape; "auto" then uses the warm threshold for the same model and data only
    monkeypatch.setenv(compilation.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(compilation, "_cache_dir", None)
    monkeypatch.setattr(sampler, "AUTO_MIN_SECONDS", 1e9)  # never compile without a record
    monkeypatch.setattr(sampler, "AUTO_WARM_GUESS_SECONDS", 0.0)
    monkeypatch.setattr(sampler._AutoCompile, "background", False)
    compiles = []

    def stand_in(graph, z, potential, grad, step_size, inverse_mass, depth, max_delta, counter):
        compiles.append(tuple(z.shape))
        return eager_kernels(graph, max_delta), 1.5

    monkeypatch.setattr(sampler, "compile_nuts_kernels", stand_in)
    run = {"num_chains": 2, "num_warmup": 20, "num_samples": 20, "progress": False}
    first = mcmc(_conjugate, Y, seed=0, compile="auto", **run)
    assert first.info["compile_seconds"] == 0.0 and not compiles  # no record yet: eager
    mcmc(_conjugate, Y, seed=0, compile=True, **run)
    assert len(list((tmp_path / "cache" / "records").glob("*.json"))) == 1
    again = mcmc(_conjugate, Y, seed=0, compile="auto", **run)
    assert again.info["compiled_from_iteration"] == sampler.AUTO_PROBE_ITERATIONS
    other_data = mcmc(_conjugate, Y + 1.0, seed=0, compile="auto", **run)
    other_chains = mcmc(_conjugate, Y, seed=0, compile="auto", **{**run, "num_chains": 3})
    assert other_data.info["compile_seconds"] == 0.0 and other_chains.info["compile_seconds"] == 0.0
    assert compiles == [(2, 1), (2, 1)]


def test_a_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = f"inductor exploded {uuid.uuid4().hex}"  # a reason never warned before in this process

    def broken(*args, **kwargs):
        raise RuntimeError(reason)

    monkeypatch.setattr(torch._inductor, "standalone_compile", broken)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        post = mcmc(_conjugate, Y, num_chains=2, num_warmup=100, num_samples=300, seed=2,
                    progress=False, compile=True)
    fallbacks = [w for w in record if issubclass(w.category, compilation.CompileFallbackWarning)]
    assert len(fallbacks) == 1 and reason in str(fallbacks[0].message)
    assert len(_bayesact_warnings(record)) == 1  # and no second warning of the sampler's own
    assert post.info["potential_mode"] == "captured" and post.info["compile_seconds"] == 0.0
    assert compilation.fallbacks()["nuts_leaf_pair"].endswith(reason)
    mu = post.samples["mu"]  # a right result: the exact posterior within Monte Carlo error
    assert abs(float(mu.mean()) - POST_MEAN) < 0.15 and abs(float(mu.std()) - POST_SD) < 0.1


def test_hmc_compile_failure_keeps_the_captured_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = f"no compiler here {uuid.uuid4().hex}"

    def broken(*args, **kwargs):
        raise RuntimeError(reason)

    monkeypatch.setattr(torch._inductor, "standalone_compile", broken)
    with pytest.warns(compilation.CompileFallbackWarning, match=reason):
        post = mcmc(_conjugate, Y, method="hmc", num_chains=2, num_warmup=50, num_samples=50, seed=3,
                    progress=False, compile=True)
    assert post.info["potential_mode"] == "captured"


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_bayesact_compile_0_runs_mcmc_uncompiled(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    def must_not_compile(*args, **kwargs):
        raise AssertionError("BAYESACT_COMPILE=0 must not compile")

    monkeypatch.setenv(compilation.ENV_VAR, "0")
    monkeypatch.setattr(sampler, "compile_nuts_kernels", must_not_compile)
    monkeypatch.setattr(torch._inductor, "standalone_compile", must_not_compile)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        post = mcmc(_conjugate, Y, method=method, num_chains=2, num_warmup=30, num_samples=30, seed=4,
                    progress=False, compile=True)
    assert not _bayesact_warnings(record)
    assert post.info["potential_mode"] == "captured" and post.info["compile_seconds"] == 0.0


@pytest.mark.slow
def test_sbc_ranks_stay_uniform_across_the_eager_to_compiled_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    # the real compiled NUTS steps (Inductor), switched in half way through sampling: the ranks
    # of the truth among the draws after the switch, and among all draws, are uniform
    reps, warmup, draws = 100, 100, 400
    truth = simulate(normal_normal, reps, 11)
    _switch_at(monkeypatch, warmup + draws // 2)
    post = mcmc(normal_normal, reps, truth["y"], num_chains=2, num_warmup=warmup, num_samples=draws,
                seed=11, progress=False, target_accept=0.9, max_tree_depth=4, compile="auto")
    assert post.info["compiled_from_iteration"] == warmup + draws // 2
    assert post.info["potential_mode"] == "captured+compiled_leaf"
    mu = post.samples["mu"]
    assert chi2_p(ranks(mu[:, draws // 2 :], truth["mu"]), 5) > 0.01
    assert chi2_p(ranks(mu, truth["mu"]), 5) > 0.01


def test_on_cpu_a_seeded_run_that_does_not_compile_is_bit_reproducible() -> None:
    """compile=False, and the default "auto" on a run too short to compile: the same draws bit
    for bit (an "auto" run that switches is not: the switch iteration depends on timing)."""
    runs = [mcmc(_conjugate, Y, num_chains=2, num_warmup=40, num_samples=40, seed=5, progress=False,
                 compile=policy) for policy in (False, False, "auto")]
    assert all(torch.equal(r.samples["mu"], runs[0].samples["mu"]) for r in runs[1:])


def test_a_failing_compile_key_never_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_key(*args, **kwargs):
        raise RuntimeError("cannot hash this graph")

    monkeypatch.setattr(sampler, "nuts_kernels_key", broken_key)
    _switch_at(monkeypatch, 5)
    monkeypatch.setattr(sampler, "AUTO_MIN_SECONDS", 1e9)  # decides from the (missing) record
    post = mcmc(_conjugate, Y, num_chains=2, num_warmup=30, num_samples=30, seed=0, progress=False)
    assert post.samples["mu"].shape == (2, 30) and post.info["compile_seconds"] == 0.0


def _small_bnn(x: torch.Tensor, y: torch.Tensor) -> None:
    """A 2-5-1 tanh network: NUTS trees several leaves deep, so the pair step does most work."""
    w1 = pyro.sample("w1", dist.Normal(torch.zeros(2, 5, dtype=x.dtype), 1.0).to_event(2))
    w2 = pyro.sample("w2", dist.Normal(torch.zeros(5, dtype=x.dtype), 1.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.ones((), dtype=x.dtype)))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(torch.tanh(x @ w1) @ w2, sigma), obs=y)


def _bnn_data(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2, generator=gen, dtype=dtype)
    return x, torch.sin(x[:, 0]) + 0.1 * torch.randn(20, generator=gen, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_auto_scripts_the_pair_step_and_the_draws_stay_the_same_bits(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    # on the CPU the TorchScript step runs eager's kernels: a seeded run that switches to it
    # gives exactly the draws of compile=False (so the same distribution, trivially)
    monkeypatch.setattr(sampler, "AUTO_SCRIPT_MIN_SECONDS", 0.0)
    monkeypatch.setattr(sampler, "AUTO_MIN_SECONDS", 1e9)
    x, y = _bnn_data(dtype)
    run = {"num_chains": 2, "num_warmup": 30, "num_samples": 30, "seed": 6, "progress": False,
           "max_tree_depth": 5}
    scripted = mcmc(_small_bnn, x, y, compile="auto", **run)
    eager = mcmc(_small_bnn, x, y, compile=False, **run)
    assert scripted.info["potential_mode"] == "captured+scripted_leaf"
    assert scripted.info["scripted_from_iteration"] == sampler.AUTO_PROBE_ITERATIONS
    assert scripted.info["script_seconds"] > 0 and scripted.info["compile_seconds"] == 0.0
    assert eager.info["scripted_from_iteration"] is None and eager.info["potential_mode"] == "captured"
    assert scripted.info["num_gradient_calls"] == eager.info["num_gradient_calls"]
    for name in ("w1", "w2", "sigma"):
        assert torch.equal(scripted.samples[name], eager.samples[name])


def test_a_short_run_is_not_scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_script(*args, **kwargs):
        raise AssertionError("a run projected under AUTO_SCRIPT_MIN_SECONDS must not be scripted")

    monkeypatch.setattr(sampler, "AUTO_SCRIPT_MIN_SECONDS", 1e9)
    monkeypatch.setattr(compilation, "torchscript", must_not_script)
    post = mcmc(_small_bnn, *_bnn_data(torch.float32), num_chains=2, num_warmup=20, num_samples=20,
                seed=7, progress=False, max_tree_depth=4)
    assert post.info["scripted_from_iteration"] is None


def test_a_scripting_failure_falls_back_to_the_eager_steps_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reason = f"torchscript exploded {uuid.uuid4().hex}"

    def broken(*args, **kwargs):
        raise RuntimeError(reason)

    monkeypatch.setattr(sampler, "AUTO_SCRIPT_MIN_SECONDS", 0.0)
    monkeypatch.setattr(sampler, "AUTO_MIN_SECONDS", 1e9)
    monkeypatch.setattr(compilation, "torchscript", broken)
    x, y = _bnn_data(torch.float32)
    run = {"num_chains": 2, "num_warmup": 20, "num_samples": 20, "seed": 8, "progress": False,
           "max_tree_depth": 4}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        post = mcmc(_small_bnn, x, y, compile="auto", **run)
    fallbacks = [w for w in record if issubclass(w.category, compilation.CompileFallbackWarning)]
    assert len(fallbacks) == 1 and reason in str(fallbacks[0].message)
    assert post.info["potential_mode"] == "captured" and post.info["scripted_from_iteration"] is None
    assert torch.equal(post.samples["w1"], mcmc(_small_bnn, x, y, compile=False, **run).samples["w1"])


def _raising_model() -> None:
    """x ~ N(0, 1), and a Cholesky that fails for |x| >= 1: the posterior is N(0, 1) on (-1, 1)."""
    x = pyro.sample("x", dist.Normal(torch.zeros((), dtype=torch.float64), 1.0))
    one = torch.ones((), dtype=torch.float64)
    cov = torch.stack([torch.stack([one, x]), torch.stack([x, one])])
    pyro.factor("chol", 0.0 * torch.linalg.cholesky(cov).sum())


def test_a_potential_that_can_raise_is_not_scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    # a TorchScript trace drops the error check that makes a failed Cholesky raise (an operation
    # without outputs): such a step would silently return NaN where the model raises, so it is
    # never scripted, and the raising region still counts as zero density
    monkeypatch.setattr(sampler, "AUTO_SCRIPT_MIN_SECONDS", 0.0)
    monkeypatch.setattr(sampler, "AUTO_MIN_SECONDS", 1e9)
    run = {"num_chains": 4, "num_warmup": 40, "num_samples": 60, "seed": 3, "init": {"x": 0.0},
           "progress": False}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        post = mcmc(_raising_model, compile="auto", **run)
    assert not [w for w in record if issubclass(w.category, compilation.CompileFallbackWarning)]
    assert post.info["potential_mode"] == "captured" and post.info["scripted_from_iteration"] is None
    assert bool((post.samples["x"].abs() < 1).all())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(post.samples["x"], mcmc(_raising_model, compile=False, **run).samples["x"])


class _Pair(NamedTuple):
    a: torch.Tensor
    b: torch.Tensor


def test_a_scripted_function_takes_and_returns_named_tuples_and_computes_the_same_bits() -> None:
    def step(p: _Pair, scale: torch.Tensor) -> tuple[_Pair, torch.Tensor]:
        return _Pair(torch.tanh(p.a) * scale, p.b.exp()), (p.a * p.b).sum(-1)

    gen = torch.Generator().manual_seed(0)
    example = (_Pair(torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)), torch.ones(3, 1))
    scripted = compiled_steps.ScriptedFunction(step, example, name=f"pair_{uuid.uuid4().hex}")
    assert scripted.compile_seconds > 0
    other = (_Pair(torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)),
             torch.full((3, 1), 2.0))
    (got, total), (want, want_total) = scripted(*other), step(*other)
    assert isinstance(got, _Pair) and torch.equal(got.a, want.a) and torch.equal(got.b, want.b)
    assert torch.equal(total, want_total)


def test_the_torchscript_nuts_step_needs_a_potential_graph_it_can_inspect() -> None:
    # a potential that is not an FX graph could hide an error check that a trace drops: refused
    z = torch.zeros(2, 1, dtype=torch.float64)

    def potential(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 0.5 * (x * x).sum(-1), x

    u, g = potential(z)
    with pytest.raises(compiled_steps.CompileFailed, match="operations without outputs"):
        compiled_steps.compile_nuts_kernels(potential, z, u, g, torch.full((2,), 0.1, dtype=torch.float64),
                                            torch.ones(2, 1, dtype=torch.float64), 3, 1000.0,
                                            sampler._Counter(potential), backend="torchscript")


def test_a_run_outside_the_main_thread_is_not_scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    # tracing captures warnings, and warning filters are process-wide: a worker thread's run keeps
    # the eager steps (same draws) and warns about nothing
    monkeypatch.setattr(sampler, "AUTO_SCRIPT_MIN_SECONDS", 0.0)
    monkeypatch.setattr(sampler, "AUTO_MIN_SECONDS", 1e9)
    x, y = _bnn_data(torch.float64)
    run = {"num_chains": 2, "num_warmup": 20, "num_samples": 20, "seed": 9, "progress": False,
           "max_tree_depth": 4}
    out: dict[str, object] = {}

    def work() -> None:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            out["post"] = mcmc(_small_bnn, x, y, compile="auto", **run)
        out["fallbacks"] = [w for w in record if issubclass(w.category, compilation.CompileFallbackWarning)]

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    post = out["post"]
    assert isinstance(post, sampler.Posterior) and not out["fallbacks"]
    assert post.info["scripted_from_iteration"] is None
    assert torch.equal(post.samples["w1"], mcmc(_small_bnn, x, y, compile=False, **run).samples["w1"])
