"""Smoke test of ``benchmarks/pfn_mimicry.py --quick``; its exact-GP reference checked against GPyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import gpytorch
import torch

from ._scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pfn_mimicry.py"


def load_benchmark() -> ModuleType:
    return load_script("benchmarks/pfn_mimicry.py")


def test_pfn_mimicry_quick_writes_table_json_and_figure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path), "--model-dir", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = (tmp_path / "pfn_mimicry.md").read_text()
    assert "## d = 1" in text and "## d = 5" in text
    rows = [line for line in text.splitlines() if line.startswith("| 20 | ")]
    assert len(rows) >= 2  # the n = 20 row of both final tables
    assert (tmp_path / "pfn_mimicry.png").stat().st_size > 1000
    for d in (1, 5):
        run = json.loads((tmp_path / f"pfn_mimicry_d{d}.json").read_text())
        assert list(run["final"]) == ["0", "5", "20"]
        assert [p["steps"] for p in run["curve"]] == [4, 8]
        for v in run["final"].values():
            assert 0.0 <= v["pfn_cover"] <= 1.0 and 0.0 <= v["gp_cover"] <= 1.0
            assert v["gap"] == v["gap"]  # not NaN
    # the stored model can be evaluated again without training
    again = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--load", "--dims", "1", "--out", str(tmp_path / "again"),
         "--model-dir", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "loaded" in again.stdout


def test_exact_gp_predictive_matches_gpytorch_exact_gp() -> None:
    """The benchmark's float64 Cholesky GP predictive (noise included) equals GPyTorch's ExactGP."""
    bench = load_benchmark()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 15, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 15, generator=gen, dtype=torch.float64)
    x_test = torch.rand(2, 7, 3, generator=gen, dtype=torch.float64)
    ls, s, sigma = 0.6, 1.3, 0.05
    mean, var = bench.exact_gp_predictive(x, y, x_test, lengthscale=ls, outputscale=s, noise_std=sigma)

    class Model(gpytorch.models.ExactGP):
        def __init__(self, xt: torch.Tensor, yt: torch.Tensor, lik: gpytorch.likelihoods.Likelihood) -> None:
            super().__init__(xt, yt, lik)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, t: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
            return gpytorch.distributions.MultivariateNormal(self.mean_module(t), self.covar_module(t))

    for b in range(2):
        lik = gpytorch.likelihoods.GaussianLikelihood().double()
        model = Model(x[b], y[b], lik).double()
        model.covar_module.base_kernel.lengthscale = ls
        model.covar_module.outputscale = s
        lik.noise = sigma**2
        model.eval()
        lik.eval()
        with torch.no_grad(), gpytorch.settings.fast_computations(False, False, False):
            pred = lik(model(x_test[b]))
        torch.testing.assert_close(mean[b], pred.mean, rtol=1e-6, atol=1e-7)  # GPyTorch: ~1e-7 relative
        torch.testing.assert_close(var[b], pred.variance, rtol=1e-6, atol=1e-7)  # GPyTorch: ~1e-7 relative
    # n = 0: the prior predictive N(0, s + σ²)
    m0, v0 = bench.exact_gp_predictive(x[:, :0], y[:, :0], x_test, lengthscale=ls, outputscale=s,
                                       noise_std=sigma)
    assert bool((m0 == 0).all()) and torch.allclose(v0, torch.full_like(v0, s + sigma**2))
