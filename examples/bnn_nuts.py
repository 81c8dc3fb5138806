"""A Bayesian neural network on scikit-learn's diabetes data, sampled with 4 vectorized NUTS chains.

``bayesact.models.BNN(10, hidden=(50, 50))``: tanh, N(0, 1) weights scaled by 1/sqrt(fan_in),
N(0, 1) biases, HalfNormal(1) noise (learned). The 4 chains are one batch of the compiled
potential. Prints the ArviZ summary of the noise scale and of the network output f at test inputs
(weights are not identifiable, so their R-hat says little), test RMSE/NLL, and saves trace and
rank plots.

Run: ``python examples/bnn_nuts.py [--warmup 300 --samples 300 --out outputs/bnn_nuts]`` (about
4 minutes on 2 CPU cores, including about 35 s of ``torch.compile``; ``--no-compile`` skips it and
samples about 2x slower).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--tree-depth", type=int, default=6)
    parser.add_argument("--no-compile", action="store_true", help="do not torch.compile the potential")
    parser.add_argument("--quick", action="store_true", help="tiny settings, for a smoke run")
    parser.add_argument("--out", default="outputs/bnn_nuts")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.samples = 20, 20
    torch.set_num_threads(1)  # small tensors: one thread beats two contending ones
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()

    data = diabetes_split(seed=0)
    bnn = BNN(10, hidden=(50, 50), activation="tanh")
    post = mcmc(
        bnn, data.x_train, data.y_train, num_chains=4, num_warmup=args.warmup,
        num_samples=args.samples, max_tree_depth=args.tree_depth, seed=0,
        compile=not args.no_compile,
    )  # fmt: skip
    print(post)
    print(f"sampling {post.info['sampling_seconds']:.1f} s, {post.num_divergences} divergences")

    # function-space diagnostics: f at the test inputs, plus the noise scale
    f_test = predictive(bnn, post, data.x_test, None, seed=0)["f"][..., 0]  # (chain, draw, N_test)
    functions = az.convert_to_dataset({"noise_std": post.samples["noise_std"].numpy(),
                                       "f_test": f_test[..., :5].numpy()})  # fmt: skip
    summary = az.summary(functions)
    print(summary.to_string())
    rhat = az.rhat(az.convert_to_dataset({"f_test": f_test.numpy()}))["f_test"].values
    print(f"R-hat of f at all {f_test.shape[-1]} test inputs: max {rhat.max():.3f}")
    rmse, nll = predictive_metrics(f_test, post.samples["noise_std"], data.y_test, data.y_scale)
    print(f"test RMSE {rmse:.2f}, test NLL {nll:.3f} (original units of y)")

    idata = az.convert_to_dataset({"noise_std": post.samples["noise_std"].numpy(),
                                   "f_test": f_test[..., :2].numpy()})  # fmt: skip
    az.plot_trace(idata)
    plt.tight_layout()
    plt.savefig(os.path.join(args.out, "trace.png"), dpi=80)
    plt.close("all")
    az.plot_rank(idata)
    plt.tight_layout()
    plt.savefig(os.path.join(args.out, "rank.png"), dpi=80)
    plt.close("all")
    with open(os.path.join(args.out, "summary.txt"), "w") as fh:
        fh.write(summary.to_string() + "\n")
    print(f"plots and summary saved to {args.out}/; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
