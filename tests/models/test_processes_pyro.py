"""Process models under Pyro inference: bayesact's captured NUTS without fallback warnings, Pyro's SVI
training the kernel's hyperparameters."""

from __future__ import annotations

import warnings

import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroSample

from bayesact import infer
from bayesact.kernels import NNGPKernel
from bayesact.models import GP, StudentTProcess


def _data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return x, torch.sin(2 * x.sum(-1)) + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["gp", "tp"])
def test_bayesact_mcmc_captures_the_process_model_without_warnings(kind: str) -> None:
    """The data checks (finite x, y; Cholesky info) read values: skipped while traced, so the potential's
    gradient is captured as a graph (before: 'could not capture ... using vmap' UserWarning)."""
    x, y = _data(8)
    tp = (GP if kind == "gp" else StudentTProcess)(NNGPKernel("relu", depth=1)).double()
    tp.noise = PyroSample(dist.LogNormal(torch.tensor(-2.0, dtype=torch.float64), 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*divergent")  # a 10-draw run may diverge
        post = infer.mcmc(tp, x, y, num_chains=2, num_warmup=10, num_samples=10, max_tree_depth=3, seed=0,
                          progress=False)  # fmt: skip
    assert post.info["potential_mode"] in ("captured", "compiled")
    assert torch.isfinite(post.samples["noise"]).all()
    # the checks still run on concrete values
    x_bad = x.clone()
    x_bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'x'.*NaN"):
        tp(x_bad, y)
