"""The 1-D figure of Tran et al. (JMLR 2022): prior and posterior functions, GP vs BNN.

A one-hidden-layer, 100-unit tanh BNN; target: an RBF GP (lengthscale 1, outputscale 1) on
[-2, 2]. Top row: prior draws of the GP, of the BNN with the fixed N(0, 1) prior, and of the BNN
with the prior fitted by Wasserstein matching. Bottom row: posterior means and 95% bands of f on
a toy regression with a gap in the data (exact GP posterior; the two BNNs with 4 NUTS chains).

Run: ``python examples/functional_prior_1d.py`` (a few minutes on 2 CPU cores); saves
``docs/img/functional_prior_1d.png``.
"""

from __future__ import annotations

import argparse
import os

import gpytorch
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from bayesact.infer import mcmc, predictive
from bayesact.models import BNN
from bayesact.priors import GaussianPrior, GPPrior, fit_functional_prior

HERE = os.path.dirname(os.path.abspath(__file__))
NOISE = 0.1


def toy_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """30 noisy observations of sin(2x) + 0.3x on [-2, -0.5] and [0.5, 2] (a gap in the middle)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(30, 1, generator=g) * 1.5 + 0.5
    x[::2] *= -1
    y = torch.sin(2 * x[:, 0]) + 0.3 * x[:, 0] + NOISE * torch.randn(30, generator=g)
    return x, y


def gp_posterior(target: GPPrior, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor):
    """Exact GP posterior mean and 95% band of f at x_test (float64)."""
    x, y, x_test = x.double(), y.double(), x_test.double()
    k = target.kernel
    with torch.no_grad():
        kxx = k(x).to_dense() + NOISE**2 * torch.eye(len(x), dtype=x.dtype)
        kxs = k(x, x_test).to_dense()
        kss = k(x_test).to_dense()
    factor = torch.linalg.cholesky(kxx)
    mean = kxs.T @ torch.cholesky_solve(y[:, None], factor)[:, 0]
    var = (kss - kxs.T @ torch.cholesky_solve(kxs, factor)).diagonal().clamp_min(0)
    return mean, mean - 1.96 * var.sqrt(), mean + 1.96 * var.sqrt()


def bnn_posterior(bnn: BNN, x, y, x_test, warmup: int, samples: int):
    post = mcmc(bnn, x, y, num_chains=4, num_warmup=warmup, num_samples=samples, max_tree_depth=7, seed=0)
    f = predictive(bnn, post, x_test, None, seed=0)["f"][..., 0].reshape(-1, len(x_test))
    lo, hi = f.quantile(torch.tensor([0.025, 0.975]), dim=0)
    return f.mean(0), lo, hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--out", default=os.path.join(HERE, "..", "docs", "img", "functional_prior_1d.png"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())
    kernel.base_kernel.lengthscale, kernel.outputscale = 1.0, 1.0
    target = GPPrior(kernel)
    x_grid = torch.linspace(-2, 2, 40).unsqueeze(-1)
    fixed = BNN(1, hidden=(100,), activation="tanh", prior=GaussianPrior(2), noise_std=NOISE)
    fitted_bnn = BNN(1, hidden=(100,), activation="tanh", noise_std=NOISE)
    fitted = fit_functional_prior(
        fitted_bnn, target, x_grid, num_iters=args.fit_iters, critic_steps=100, seed=0
    )
    print("fitted prior:", fitted.prior)

    x_plot = torch.linspace(-3, 3, 120).unsqueeze(-1)
    x, y = toy_data()
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharex=True)
    models = {"GP (RBF)": target, "BNN, N(0, 1) prior": fixed, "BNN, fitted prior": fitted_bnn}
    for col, (title, model) in enumerate(models.items()):
        with torch.no_grad():
            draws = model.sample_functions(x_plot, 10)[..., 0]
        axes[0, col].plot(x_plot[:, 0], draws.T, lw=1)
        axes[0, col].set(title=f"prior: {title}", ylim=(-4, 4))
        if col == 0:
            mean, lo, hi = gp_posterior(target, x, y, x_plot)
        else:
            mean, lo, hi = bnn_posterior(model, x, y, x_plot, args.warmup, args.samples)
        axes[1, col].fill_between(x_plot[:, 0], lo, hi, alpha=0.3)
        axes[1, col].plot(x_plot[:, 0], mean)
        axes[1, col].plot(x[:, 0], y, "k.", ms=4)
        axes[1, col].set(title=f"posterior: {title}", ylim=(-4, 4))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"saved {os.path.relpath(args.out)}")


if __name__ == "__main__":
    main()
