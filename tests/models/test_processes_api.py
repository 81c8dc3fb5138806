"""Process models as Pyro models (bayesact MCMC, Pyro SVI/NUTS), type-II ML fitting, dtypes and bad input."""

from __future__ import annotations

import gpytorch
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroSample

from bayesact import infer
from bayesact.kernels import NNGPKernel
from bayesact.models import GP, BurrXII, ScaleMixtureProcess, StudentTProcess
from bayesact.priors.function.protocol import FunctionPrior, FunctionPriorWithCovariance


def _data(n: int = 12, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, 2, generator=gen, dtype=dtype)
    return x, torch.sin(2 * x.sum(-1)) + 0.1 * torch.randn(n, generator=gen, dtype=dtype)


def _models() -> list[GP | StudentTProcess | ScaleMixtureProcess]:
    return [
        GP(NNGPKernel("relu", depth=2)),
        StudentTProcess(NNGPKernel("relu", depth=2)),
        ScaleMixtureProcess(NNGPKernel("relu", depth=2), BurrXII(2.0, 2.0), num_samples=200),
    ]


def test_models_are_function_priors_with_prior_draws() -> None:
    x, _ = _data()
    for model in _models():
        assert isinstance(model, FunctionPrior) and isinstance(model, pyro.nn.PyroModule)
        assert model.sample_functions(x, 5).shape == (5, 12, 1)
    gp = GP(NNGPKernel("relu", depth=2)).double()
    assert isinstance(gp, FunctionPriorWithCovariance)
    torch.manual_seed(0)
    f = gp.sample_functions(x, 20000)[..., 0]
    emp = torch.cov(f.T)
    cov = gp.covariance(x).detach()
    torch.testing.assert_close(emp, cov, rtol=0, atol=0.05 * cov.max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype: torch.dtype) -> None:
    """float32 and float64 inputs: every output in the input's dtype and finite."""
    x, y = _data(dtype=dtype)
    for model in _models():
        lm = model.log_marginal(x, y)
        assert lm.dtype == dtype and torch.isfinite(lm)
        grads = torch.autograd.grad(lm, list(model.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)
        for full in (False, True):
            pred = model.predict(x[:4] + 0.1, x, y, full_cov=full)
            lp = pred.log_prob(y[:4])
            assert lp.dtype == dtype and torch.isfinite(lp).all()
        assert model.sample_functions(x, 3).dtype == dtype
        assert torch.as_tensor(pyro.poutine.trace(model).get_trace(x, y).log_prob_sum()).dtype == dtype


def test_fit_increases_marginal_likelihood_and_keeps_domain() -> None:
    x, y = _data()
    tp = StudentTProcess(NNGPKernel("relu", depth=2), noise=0.5).double()
    before = tp.log_marginal(x, y).item()
    losses = tp.fit(x, y, num_steps=150, lr=0.05, progress=False)
    assert 1 <= len(losses) <= 150 and losses[-1] < losses[0]
    assert tp.log_marginal(x, y).item() > before
    for name in ("noise", "concentration", "rate"):
        assert getattr(tp, name).item() > 0
    # every hyperparameter moved (kernel stds, noise, a, b, mean)
    assert all(p.abs().item() > 0 for p in tp.parameters())


def test_fit_selects_on_validation() -> None:
    x, y = _data(20)
    gp = GP(NNGPKernel("relu", depth=2), noise=0.3).double()
    val = (x[15:], y[15:])

    def val_nll() -> float:
        return -gp.predict(val[0], x[:15], y[:15]).log_prob(val[1]).mean().item()

    start = val_nll()
    gp.fit(x[:15], y[:15], num_steps=60, lr=0.05, validation=val, progress=False)
    assert val_nll() <= start
    with pytest.raises(TypeError, match="validation"):
        gp.fit(x, y, num_steps=2, validation=x, progress=False)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:.*divergent")
def test_bayesact_mcmc_samples_a_pyrosample_hyperparameter() -> None:
    x, y = _data(8)
    tp = StudentTProcess(NNGPKernel("relu", depth=1)).double()
    tp.concentration = PyroSample(dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    post = infer.mcmc(tp, x, y, num_chains=2, num_warmup=20, num_samples=10, max_tree_depth=4, seed=0,
                      progress=False, capture=False)  # fmt: skip
    a = post.samples["concentration"]
    assert a.shape == (2, 10) and bool((a > 0).all()) and torch.isfinite(a).all()


def test_pyro_svi_and_nuts_run() -> None:
    x, y = _data(8)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    tp = StudentTProcess(NNGPKernel("relu", depth=1)).double()
    tp.noise = PyroSample(dist.LogNormal(torch.tensor(-3.0, dtype=torch.float64), 1.0))
    svi = SVI(tp, AutoNormal(tp), pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(5)]
    assert all(torch.isfinite(torch.tensor(losses)))
    # the σ² latent of the scale mixture with Pyro's own NUTS
    sm = ScaleMixtureProcess(NNGPKernel("relu", depth=1), BurrXII(2.0, 2.0)).double()
    mcmc = MCMC(NUTS(sm, max_tree_depth=3), num_samples=10, warmup_steps=10, disable_progbar=True)
    mcmc.run(x, y)
    assert mcmc.get_samples()["scale"].shape == (10,)
    # a plain torch distribution as the scale prior works in the Pyro model too
    ig = torch.distributions.InverseGamma(torch.tensor(2.0, dtype=torch.float64), torch.tensor(2.0))
    sm_torch = ScaleMixtureProcess(NNGPKernel("relu", depth=1), ig).double()
    trace = pyro.poutine.trace(sm_torch).get_trace(x, y)
    assert trace.nodes["scale"]["fn"].support is ig.support
    assert torch.isfinite(torch.as_tensor(trace.log_prob_sum()))


class _Negative(gpytorch.kernels.Kernel):
    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params: object
    ) -> torch.Tensor:
        return -2.0 * (x1 @ x2.mT + 1.0)


def test_bad_input() -> None:
    x, y = _data()
    kernel = NNGPKernel("relu", depth=1)
    gp = GP(kernel)
    with pytest.raises(TypeError, match="kernel"):
        GP(lambda a, b: a @ b.T)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise"):
            GP(kernel, noise=bad)
        with pytest.raises(ValueError, match="concentration"):
            StudentTProcess(kernel, concentration=bad)
        with pytest.raises(ValueError, match="rate"):
            StudentTProcess(kernel, rate=bad)
    with pytest.raises(ValueError, match="mean"):
        GP(kernel, mean=float("nan"))
    with pytest.raises(ValueError, match="num_samples"):
        ScaleMixtureProcess(kernel, BurrXII(1.0, 1.0), num_samples=0)
    with pytest.raises(TypeError, match="num_samples"):
        ScaleMixtureProcess(kernel, BurrXII(1.0, 1.0), num_samples=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scale_prior"):
        ScaleMixtureProcess(kernel, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale_prior"):
        ScaleMixtureProcess(kernel, dist.InverseGamma(torch.ones(2), torch.ones(2)))
    with pytest.raises(ValueError, match="'y'"):
        gp.log_marginal(x, y[:-1])
    with pytest.raises(ValueError, match="'x'"):
        gp.log_marginal(x[:, 0], y)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="'y'.*NaN"):
            gp.log_marginal(x, torch.cat([y[:-1], torch.tensor([bad])]))
        x_bad = x.clone()
        x_bad[0, 0] = bad
        with pytest.raises(ValueError, match="'x'.*NaN"):
            gp.fit(x_bad, y, num_steps=1, progress=False)
    with pytest.raises(ValueError, match="x_new"):
        gp.predict(x[:, :1], x, y)
    with pytest.raises(ValueError, match="'n'"):
        gp.sample_functions(x, 0)
    with pytest.raises(ValueError, match="num_steps"):
        gp.fit(x, y, num_steps=0)
    with pytest.raises(ValueError, match="'y'"):
        gp(x, y[:3])
    with pytest.raises(ValueError, match="noise"):
        gp.noise = -1.0


def test_non_factorisable_covariance_names_the_jitter() -> None:
    x, y = _data()
    gp = GP(_Negative(), noise=1e-3).double()
    with pytest.raises(ValueError, match=r"K\(x, x\) \+ noise\*I does not factorise.*jitter up to"):
        gp.log_marginal(x, y)


def test_setting_a_hyperparameter_is_exact_and_learnable() -> None:
    tp = StudentTProcess(NNGPKernel("relu", depth=1))
    tp.rate = 0.25
    assert abs(float(tp.rate) - 0.25) < 1e-6
    assert tp.raw_rate.requires_grad


def test_student_t_process_is_a_target_for_fit_functional_prior() -> None:
    from bayesact.models import BNN
    from bayesact.priors import fit_functional_prior

    x, _ = _data()
    tp = StudentTProcess(NNGPKernel("relu", depth=1))
    fitted = fit_functional_prior(BNN(2, hidden=(8,)), tp, x.float(), num_functions=8, num_iters=2,
                                  critic_steps=2, progress=False, seed=0)  # fmt: skip
    assert fitted is not None


def test_state_dict_round_trip_keeps_hyperparameter_values() -> None:
    """The raw parameters are relative to the initial values, so the state carries those too."""
    src = StudentTProcess(NNGPKernel("relu", depth=1), concentration=5.0, rate=0.3, noise=0.2, mean=1.0)
    dst = StudentTProcess(NNGPKernel("relu", depth=1))
    dst.load_state_dict(src.state_dict())
    for name in ("concentration", "rate", "noise", "mean"):
        assert float(getattr(dst, name)) == float(getattr(src, name))
