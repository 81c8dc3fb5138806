"""Reproduction of Tran et al. (JMLR 2022)'s UCI experiment on scikit-learn's diabetes data.

10 random 90/10 splits; one hidden layer of 100 tanh units; Gaussian likelihood with a fixed noise
variance: the paper fixes 0.1 on standardised y (right for Boston), which on diabetes is far below
the data's noise (about 0.45), so here it is the GP's noise variance fitted by marginal likelihood on
the training split (``--noise paper`` uses 0.1). Priors compared, all sampled the same way (4 vectorized
scale-adapted SGHMC chains):

- ``fixed``: the fixed N(0, 1) prior (FG in the paper);
- ``wasserstein``: per-layer Gaussian prior fitted by Wasserstein matching (GPi-G) to a GP with an
  ARD RBF kernel whose hyperparameters maximise the marginal likelihood of the training split;
- ``nngp``: the same prior family fitted by matching the BNN's NNGP kernel to the same GP.

Prints a markdown table of test RMSE and NLL (mean ± std over splits, original units). Results of
finished splits are kept in ``--results`` (JSON lines), so an interrupted run resumes where it stopped.

Run: ``python examples/reproduce_functional_prior.py [--splits 10]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _regression import diabetes_split, predictive_metrics

from bayesact.infer import predictive, sghmc
from bayesact.models import BNN
from bayesact.priors import GPPrior, fit_functional_prior, mixed_measurement_sampler

NOISE_STD = math.sqrt(0.1)
PRIORS = ("fixed", "wasserstein", "nngp")


def run_split(seed: int, args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(seed)
    data = diabetes_split(seed)
    gp = GPPrior.from_data(data.x_train, data.y_train, num_iters=150, lr=0.1)
    x_measure = mixed_measurement_sampler(data.x_train, num_points=100)
    noise_std = NOISE_STD if args.noise == "paper" else math.sqrt(gp.noise_variance)
    out: dict[str, float] = {"split": seed, "noise_std": noise_std}
    for name in PRIORS:
        bnn = BNN(10, hidden=(100,), activation="tanh", noise_std=noise_std)
        start = time.perf_counter()
        if name != "fixed":
            fit_functional_prior(bnn, gp, x_measure, method=name, num_iters=args.fit_iters,
                                 critic_steps=args.critic_steps, progress=False, seed=seed)  # fmt: skip
        fit_seconds = time.perf_counter() - start
        post = sghmc(bnn, data.x_train, data.y_train, num_chains=4, num_burnin=args.burnin,
                     num_samples=args.samples, thinning=args.thinning, num_discard=args.discard,
                     seed=seed, progress=False)  # fmt: skip
        f = predictive(bnn, post, data.x_test, None, seed=seed)["f"][..., 0]
        rmse, nll = predictive_metrics(f, torch.full(f.shape[:2], noise_std), data.y_test, data.y_scale)
        out |= {f"{name}_rmse": rmse, f"{name}_nll": nll, f"{name}_fit_s": fit_seconds,
                f"{name}_total_s": time.perf_counter() - start}  # fmt: skip
        print(f"split {seed} {name:11s} RMSE {rmse:6.2f}  NLL {nll:.3f}  ({out[f'{name}_total_s']:.0f} s)")
    return out


def table(rows: list[dict[str, float]]) -> str:
    lines = ["| prior | test RMSE | test NLL |", "|---|---|---|"]
    for name in PRIORS:
        rmse = torch.tensor([r[f"{name}_rmse"] for r in rows])
        nll = torch.tensor([r[f"{name}_nll"] for r in rows])
        cells = f"{rmse.mean():.2f} ± {rmse.std():.2f} | {nll.mean():.3f} ± {nll.std():.3f}"
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--fit-iters", type=int, default=100)
    parser.add_argument("--critic-steps", type=int, default=50)
    parser.add_argument("--burnin", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--thinning", type=int, default=200)
    parser.add_argument("--discard", type=int, default=10)
    parser.add_argument("--noise", choices=("gp", "paper"), default="gp")
    parser.add_argument("--results", default="outputs/reproduce_functional_prior.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    rows = []
    if os.path.exists(args.results):
        with open(args.results) as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    done = {int(r["split"]) for r in rows}
    for seed in range(args.splits):
        if seed in done:
            continue
        row = run_split(seed, args)
        rows.append(row)
        with open(args.results, "a") as fh:  # kept across interruptions
            fh.write(json.dumps(row) + "\n")
    rows = [r for r in rows if int(r["split"]) < args.splits]
    print(f"\n{len(rows)} splits, diabetes (442 x 10), 1 x 100 tanh, noise: {args.noise}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
