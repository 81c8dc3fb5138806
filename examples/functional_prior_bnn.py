"""Main demo: a BNN whose weight prior is tuned to a GP, sampled with 4 vectorized NUTS chains.

The pipeline of "All You Need is a Good Functional Prior for Bayesian Deep Learning" (Tran,
Rossi, Milios, Filippone, JMLR 2022) on scikit-learn's diabetes data:

1. fit a GP with an ARD RBF kernel by marginal likelihood on the training split;
2. tune the per-layer weight/bias stds of a 10-50-1 tanh BNN so that its prior functions match the
   GP's (Wasserstein-1 distance estimated by a Lipschitz critic);
3. sample the BNN posterior with 4 vectorized NUTS chains;
4. print the ArviZ summary (noise scale, network outputs at test inputs) and test RMSE/NLL, and
   save the plots to ``docs/img/functional_prior_bnn.png``.

Run: ``python examples/functional_prior_bnn.py`` (about 2 minutes on 2 CPU cores, including about
30 s of ``torch.compile`` for the NUTS potential);
``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _regression import diabetes_split, predictive_metrics

from bayesact.infer import mcmc, predictive
from bayesact.models import BNN
from bayesact.priors import GaussianPrior, GPPrior, fit_functional_prior, mixed_measurement_sampler

HERE = os.path.dirname(os.path.abspath(__file__))


def slice_inputs(x_train: torch.Tensor, feature: int, num: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs along one feature (the others at their training mean, 0): for plotting functions."""
    grid = torch.linspace(float(x_train[:, feature].min()), float(x_train[:, feature].max()), num)
    x = torch.zeros(num, x_train.shape[1])
    x[:, feature] = grid
    return grid, x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--fit-iters", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--quick", action="store_true", help="tiny settings, for a smoke run")
    parser.add_argument("--out", default=os.path.join(HERE, "..", "docs", "img", "functional_prior_bnn.png"))
    args = parser.parse_args()
    if args.quick:
        args.fit_iters, args.warmup, args.samples = 5, 20, 20
    torch.manual_seed(0)
    torch.set_num_threads(1)  # small tensors: one thread beats two contending ones
    start = time.perf_counter()

    data = diabetes_split(seed=0)
    print(f"diabetes: {len(data.y_train)} train / {len(data.y_test)} test points, 10 features")

    # 1. the target GP: ARD RBF kernel fitted by marginal likelihood (training split only)
    gp = GPPrior.from_data(data.x_train, data.y_train, num_iters=10 if args.quick else 150, lr=0.1)
    lengthscales = gp.kernel.base_kernel.lengthscale.squeeze().tolist()
    print("GP lengthscales:", " ".join(f"{v:.2f}" for v in lengthscales))

    # 2. functional prior: match the BNN's prior functions to the GP's (Wasserstein-1)
    bnn = BNN(10, hidden=(args.width,), activation="tanh")
    fixed = BNN(10, hidden=(args.width,), activation="tanh", prior=GaussianPrior(2))  # N(0, 1), for plots
    x_measure = mixed_measurement_sampler(data.x_train, num_points=100)
    fitted = fit_functional_prior(bnn, gp, x_measure, num_iters=args.fit_iters, critic_steps=30, seed=0)
    print("fitted prior:", fitted.prior)

    # 3. posterior: 4 NUTS chains, vectorized
    post = mcmc(bnn, data.x_train, data.y_train, num_chains=4, num_warmup=args.warmup,
                num_samples=args.samples, max_tree_depth=6, seed=0, compile=True)  # fmt: skip
    print(post)

    # 4. diagnostics and test metrics
    outputs = predictive(bnn, post, data.x_test, None, seed=0)  # f and y at the test inputs
    idata = post.to_arviz()
    summary = az.summary(idata, var_names=["noise_std"])
    f_test = outputs["f"][..., 0]  # (chain, draw, N_test)
    f_summary = az.summary(az.convert_to_dataset({"f_test": f_test[..., :5].numpy()}))
    print(summary.to_string(), f_summary.to_string(), sep="\n")
    rhat = az.rhat(az.convert_to_dataset({"f_test": f_test.numpy()}))["f_test"].values
    print(f"R-hat of f at all {f_test.shape[-1]} test inputs: max {rhat.max():.3f}")
    rmse, nll = predictive_metrics(f_test, post.samples["noise_std"], data.y_test, data.y_scale)
    print(f"test RMSE {rmse:.2f}, test NLL {nll:.3f} (original units of y)")

    # plots: the fit's distance, prior functions along one feature, test predictions
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    axes[0].plot(fitted.history)
    axes[0].set(title="prior fit: W1 estimate", xlabel="iteration", ylabel="W1")
    grid, x_slice = slice_inputs(data.x_train, feature=2)  # BMI
    with torch.no_grad():
        draws = {"GP target": gp.sample_functions(x_slice, 8)[..., 0],
                 "BNN, N(0, 1) prior": fixed.sample_functions(x_slice, 8)[..., 0],
                 "BNN, fitted prior": bnn.sample_functions(x_slice, 8)[..., 0]}  # fmt: skip
    for ax, (title, f) in zip(axes[1:3], list(draws.items())[1:], strict=True):
        ax.plot(grid, draws["GP target"].T, color="0.7", lw=1)
        ax.plot(grid, f.T, lw=1)
        ax.set(title=f"{title} (grey: GP)", xlabel="BMI (standardised)", ylim=(-4, 4))
    mean = f_test.mean((0, 1))
    order = mean.argsort()
    lo, hi = f_test.reshape(-1, f_test.shape[-1]).quantile(torch.tensor([0.025, 0.975]), dim=0)
    axes[3].fill_between(range(len(order)), lo[order], hi[order], alpha=0.3, label="95% band of f")
    axes[3].plot(mean[order], label="posterior mean")
    axes[3].plot(data.y_test[order], ".", color="k", label="test y")
    axes[3].set(title=f"test set: RMSE {rmse:.1f}, NLL {nll:.2f}", xlabel="test point (sorted)")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"saved {os.path.relpath(args.out)}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
