"""The shipped small PFN (GP regression on 1-5 inputs with hyperpriors): predict in one forward
pass and compare with the exact GP that knows each dataset's true hyperparameters.

    python examples/pfn_gp.py            # table of NLLs, and outputs/pfn_gp_1d.png

The PFN was trained by examples/train_pfn_gp.py on the prior of examples/pfn_gp_1to5d.toml
(Müller et al., "Transformers Can Do Bayesian Inference", ICLR 2022). It approximates the
posterior predictive that *averages over* the hyperparameters; the oracle GP is told the
hyperparameters each dataset was drawn with, so it is a (slightly optimistic) reference.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from bayesact.models import PFN
from bayesact.pfn_train import build_prior, load_config
from bayesact.priors import GPDatasetPrior, MixtureDatasetPrior

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "pfn_gp_1to5d.toml"
WEIGHTS = ROOT / "bayesact" / "models" / "pfn" / "weights" / "gp_1to5d.pfn"


def oracle_gp_nll(prior: GPDatasetPrior, x: torch.Tensor, y: torch.Tensor, hyper: dict[str, torch.Tensor],
                  n: int) -> torch.Tensor:
    """−log p(y* | x*, D, θ) of the exact GP with each dataset's own hyperparameters θ: (B,)."""
    x, y = x.double(), y.double()
    k = prior.kernel_matrix(x, hyper["lengthscale"].double(), hyper["outputscale"].double())
    noise = hyper["noise_std"].double().square()[:, None]
    eye = torch.eye(n, dtype=torch.float64)
    chol = torch.linalg.cholesky(k[:, :n, :n] + noise[..., None] * eye)
    cross = k[:, n:, :n]
    mean = (cross @ torch.cholesky_solve(y[:, :n, None], chol)).squeeze(-1)
    v = torch.linalg.solve_triangular(chol, cross.transpose(1, 2), upper=False)
    var = k.diagonal(dim1=1, dim2=2)[:, n:] + noise - v.square().sum(1)
    return (0.5 * torch.log(2 * math.pi * var) + (y[:, n:] - mean).square() / (2 * var)).mean(1)


def evaluate(pfn: PFN, num_datasets: int = 256, seq_len: int = 60, sizes: tuple[int, ...] = (5, 20, 50),
             seed: int = 123) -> list[dict[str, float]]:
    """PFN, oracle-GP and prior-predictive NLL per query point on fresh datasets, per input width d
    and training-set size n (all datasets of seq_len points; the queries are the last seq_len − n)."""
    prior = build_prior(load_config(CONFIG)["prior"])
    assert isinstance(prior, MixtureDatasetPrior)
    rows = []
    gen = torch.Generator().manual_seed(seed)
    pfn.eval()
    for component in prior.priors:
        assert isinstance(component, GPDatasetPrior)
        x, y, hyper = component.sample_with_hyperparameters(num_datasets, seq_len, gen)
        for n in sizes:
            with torch.no_grad():
                nll = -pfn(x[:, :n], y[:, :n], x[:, n:]).log_prob(y[:, n:]).mean(1)
            gp = oracle_gp_nll(component, x, y, hyper, n)
            var = (hyper["outputscale"] + hyper["noise_std"].square())[:, None]  # prior predictive given θ
            prior_nll = (0.5 * torch.log(2 * math.pi * var) + y[:, n:].square() / (2 * var)).mean(1)
            rows.append({"d": component.num_features, "n": n, "pfn": float(nll.mean()),
                         "pfn_se": float(nll.std() / math.sqrt(num_datasets)), "oracle_gp": float(gp.mean()),
                         "prior": float(prior_nll.mean())})
    return rows


def plot_1d(pfn: PFN, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prior = GPDatasetPrior(1, kernel="matern52", lengthscale=0.3, outputscale=1.0, noise_std=0.1)
    x, y = prior.sample_batch(1, 12, torch.Generator().manual_seed(4))
    grid = torch.linspace(0, 1, 200).reshape(1, -1, 1)
    with torch.no_grad():
        pred = pfn.predict(x, y, grid)
        lo, hi = pred.icdf(torch.full_like(pred.mean, 0.025)), pred.icdf(torch.full_like(pred.mean, 0.975))
    # the exact GP with the true hyperparameters, for comparison
    xg = torch.cat([x, grid], 1).double()
    one = torch.ones(1, dtype=torch.float64)
    k = prior.kernel_matrix(xg, 0.3 * one.reshape(1, 1), one)[0]
    n = x.shape[1]
    chol = torch.linalg.cholesky(k[:n, :n] + 0.01 * torch.eye(n, dtype=torch.float64))
    mean = k[n:, :n] @ torch.cholesky_solve(y[0, :, None].double(), chol)
    sd = (1.01 - torch.linalg.solve_triangular(chol, k[:n, n:], upper=False).square().sum(0)).sqrt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.fill_between(grid[0, :, 0], lo[0], hi[0], alpha=0.3, label="PFN 95% interval")
    ax.plot(grid[0, :, 0], pred.mean[0], label="PFN mean")
    ax.plot(grid[0, :, 0], mean[:, 0], "k--", lw=1, label="exact GP (true hyperparameters)")
    ax.plot(grid[0, :, 0], mean[:, 0] - 1.96 * sd, "k:", lw=1)
    ax.plot(grid[0, :, 0], mean[:, 0] + 1.96 * sd, "k:", lw=1)
    ax.scatter(x[0, :, 0], y[0], color="k", s=12, zorder=3, label="data")
    ax.legend(fontsize=8)
    ax.set_title("shipped PFN, 12 points from a Matérn-5/2 GP (ℓ = 0.3)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    pfn = PFN.load(WEIGHTS)
    size = WEIGHTS.stat().st_size / 1e6
    print(f"PFN: {sum(p.numel() for p in pfn.parameters())} parameters, {size:.1f} MB")
    t0 = time.perf_counter()
    rows = evaluate(pfn)
    print(f"evaluated 5 x 256 datasets x 3 sizes in {time.perf_counter() - t0:.1f} s")
    print("  d   n   PFN NLL (± SE)   oracle GP   prior predictive")
    for r in rows:
        print(f"  {r['d']}  {r['n']:2d}   {r['pfn']:6.3f} ± {r['pfn_se']:.3f}   {r['oracle_gp']:8.3f}   "
              f"{r['prior']:8.3f}")
    plot_1d(pfn, ROOT / "outputs" / "pfn_gp_1d.png")
    print("wrote outputs/pfn_gp_1d.png")


if __name__ == "__main__":
    main()
