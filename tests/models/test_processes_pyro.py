"""Process models under Pyro inference: bayesact's captured NUTS without fallback warnings, Pyro's SVI
training the kernel's hyperparameters."""

from __future__ import annotations

import warnings

import gpytorch
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroSample

from bayesact import infer
from bayesact.kernels import NNGPKernel
from bayesact.models import GP, BurrXII, ScaleMixtureProcess, StudentTProcess


def _data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return x, torch.sin(2 * x.sum(-1)) + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["gp", "tp", "sm"])
def test_bayesact_mcmc_captures_the_process_model_without_warnings(kind: str) -> None:
    """The data checks (finite x, y; Cholesky info) read values: skipped while traced, so the potential's
    gradient is captured as a graph (before: 'could not capture ... using vmap' UserWarning)."""
    x, y = _data(8)
    kernel = NNGPKernel("relu", depth=1)
    tp: GP | StudentTProcess | ScaleMixtureProcess
    if kind == "sm":  # the latent is σ²
        tp = ScaleMixtureProcess(kernel, BurrXII(torch.tensor(2.0, dtype=torch.float64), 2.0)).double()
    else:
        tp = (GP if kind == "gp" else StudentTProcess)(kernel).double()
    tp.noise = PyroSample(dist.LogNormal(torch.tensor(-2.0, dtype=torch.float64), 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*divergent")  # a 10-draw run may diverge
        post = infer.mcmc(tp, x, y, num_chains=2, num_warmup=10, num_samples=10, max_tree_depth=3, seed=0,
                          progress=False)  # fmt: skip
    assert post.info["potential_mode"].split("+")[0] in ("captured", "compiled")
    assert torch.isfinite(post.samples["noise"]).all()
    # the checks still run on concrete values
    x_bad = x.clone()
    x_bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'x'.*NaN"):
        tp(x_bad, y)


def _pyro_svi(model: GP | StudentTProcess, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    return [svi.step(x, y) for _ in range(steps)]


def _values(tp: StudentTProcess) -> dict[str, float]:
    kernel = tp.kernel
    assert isinstance(kernel, gpytorch.kernels.ScaleKernel)
    return {"lengthscale": kernel.base_kernel.lengthscale.item(), "outputscale": kernel.outputscale.item(),
            "concentration": tp.concentration.item(), "rate": tp.rate.item()}  # fmt: skip


def test_pyro_svi_trains_the_kernel_hyperparameters_even_with_a_used_param_store() -> None:
    """Pyro's SVI with an autoguide optimises the GPyTorch kernel's lengthscale and outputscale and the
    model's own hyperparameters. Before the fix this held only for an empty parameter store: a second model
    fitted without ``pyro.clear_param_store()`` found the first one's tensors under the same names, SVI
    optimised those, and none of its own parameters moved."""
    x, y = _data(20)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    for _ in range(2):  # the second model meets the first one's entries in the store
        kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()).double()
        tp = StudentTProcess(kernel).double()
        tp.noise = PyroSample(dist.LogNormal(torch.tensor(-3.0, dtype=torch.float64), 1.0))
        before = _values(tp)
        losses = _pyro_svi(tp, x, y, 60)
        after = _values(tp)
        assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 1.0
        for name, value in before.items():
            assert abs(after[name] - value) > 1e-2 * value, name
        store = pyro.get_param_store()
        assert store._params["kernel$$$base_kernel.raw_lengthscale"] is kernel.base_kernel.raw_lengthscale


@pytest.mark.filterwarnings("ignore:.*divergent")
def test_mcmc_on_a_pyrosample_prior_after_pyro_svi() -> None:
    """Claiming the store does not disturb NUTS on a PyroSample prior run after an SVI fit of the same model:
    the kernel keeps its fitted values and the latent is sampled."""
    x, y = _data(8)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    tp = GP(NNGPKernel("relu", depth=1)).double()
    tp.noise = PyroSample(dist.LogNormal(torch.tensor(-2.0, dtype=torch.float64), 1.0))
    _pyro_svi(tp, x, y, 20)
    fitted = [p.detach().clone() for p in tp.kernel.parameters()]
    post = infer.mcmc(tp, x, y, num_chains=2, num_warmup=10, num_samples=10, max_tree_depth=3, seed=0,
                      progress=False)  # fmt: skip
    assert post.samples["noise"].shape == (2, 10) and bool((post.samples["noise"] > 0).all())
    assert all(torch.equal(a, b) for a, b in zip(fitted, tp.kernel.parameters(), strict=True))
