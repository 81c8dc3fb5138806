"""GP vs Student-t process (NNGP kernel) on diabetes with gross outliers in the training targets.

scikit-learn's diabetes data, 10 seeded 90/10 splits (``_regression.diabetes_split``). In each split 5%
of the *training* targets (seeded) are shifted by +8 standard deviations; the test set stays clean.
``GP`` and ``StudentTProcess`` on an NNGP-ReLU kernel (depth 2, b_std 1) are fitted by type-II
maximum likelihood on the corrupted training set (Adam lr 0.05, reduce-on-plateau, up to ``--steps``
steps; the TP's rate b is fixed at 2 because it trades off against the kernel scale). Both are also
fitted on the clean training set for reference. Prints per-split test NLL and RMSE (original units),
mean ± sd and the paired difference TP − GP with its standard error, and saves a 1-D figure (BMI only,
same corruption) of the two predictive bands to docs/img/robust_regression.png.

For comparison, a Student-t *likelihood* (per-point heavy-tailed noise): a variational GP in GPyTorch
on the same kernel with ``StudentTLikelihood`` (all training inputs as fixed inducing points, 300 Adam
steps on the ELBO, test density by 2000 Monte Carlo draws of f); ``--no-t-likelihood`` skips it.

    python examples/robust_regression.py [--steps 150] [--splits 10] [--quick] [--no-t-likelihood]
                                         [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import gpytorch
import matplotlib.pyplot as plt
import torch
from scipy.stats import t as student_t

from bayesact.kernels import NNGPKernel
from bayesact.models import GP, StudentTProcess

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _regression import Split, diabetes_split

HERE = os.path.dirname(os.path.abspath(__file__))
OUTLIER_FRACTION = 0.05
OUTLIER_SHIFT = 8.0  # in standard deviations of the (clean) training targets
BMI = 2  # column of body-mass index in load_diabetes


def make_model(kind: str, depth: int) -> GP | StudentTProcess:
    kernel = NNGPKernel("relu", depth=depth, bias_std=1.0)
    if kind == "GP":
        return GP(kernel, noise=0.1).double()
    tp = StudentTProcess(kernel, concentration=2.0, rate=2.0, noise=0.1).double()
    tp.raw_rate.requires_grad_(False)  # b and the kernel's scale are not separately identifiable
    return tp


def corrupt(y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``y`` with a seeded 5% of its entries shifted by +8 (standardised units); also their indices."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    idx = torch.randperm(len(y), generator=gen)[: round(OUTLIER_FRACTION * len(y))]
    y = y.clone()
    y[idx] += OUTLIER_SHIFT
    return y, idx


def evaluate(
    model: GP | StudentTProcess, split: Split, y_train: torch.Tensor, steps: int
) -> tuple[float, float]:
    """Fit on (x_train, y_train) and return test (NLL, RMSE) in the original units of y."""
    model.fit(split.x_train, y_train, num_steps=steps, lr=0.05, progress=False)
    with torch.no_grad():
        pred = model.predict(split.x_test, split.x_train, y_train)
        nll = float(-pred.log_prob(split.y_test).mean()) + math.log(split.y_scale)
        rmse = float((pred.mean - split.y_test).pow(2).mean().sqrt()) * split.y_scale
    return nll, rmse


class StudentTLikelihoodGP(gpytorch.models.ApproximateGP):
    """Variational GP with the training inputs as fixed inducing points (for a Student-t likelihood)."""

    def __init__(self, x: torch.Tensor, depth: int) -> None:
        q = gpytorch.variational.CholeskyVariationalDistribution(x.shape[0])
        strategy = gpytorch.variational.VariationalStrategy(self, x, q, learn_inducing_locations=False)
        super().__init__(strategy)
        self.mean = gpytorch.means.ConstantMean()
        self.covar = NNGPKernel("relu", depth=depth, bias_std=1.0)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean(x), self.covar(x))


def evaluate_t_likelihood(split: Split, y_train: torch.Tensor, steps: int, depth: int) -> tuple[float, float]:
    """Variational GP + ``StudentTLikelihood`` (ELBO, Adam); test (NLL, RMSE) in the original units."""
    model = StudentTLikelihoodGP(split.x_train, depth).double()
    likelihood = gpytorch.likelihoods.StudentTLikelihood().double()
    elbo = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=len(y_train))
    optim = torch.optim.Adam([*model.parameters(), *likelihood.parameters()], lr=0.05)
    model.train()
    likelihood.train()
    for _ in range(steps):
        optim.zero_grad()
        loss = -elbo(model(split.x_train), y_train)
        loss.backward()
        optim.step()
    model.eval()
    with torch.no_grad():
        f = model(split.x_test)
        draws = f.rsample(torch.Size([2000]))
        noise = torch.distributions.StudentT(likelihood.deg_free, draws, likelihood.noise.sqrt())
        log_density = torch.logsumexp(noise.log_prob(split.y_test), 0) - math.log(2000)
        nll = float(-log_density.mean()) + math.log(split.y_scale)
        rmse = float((f.mean - split.y_test).pow(2).mean().sqrt()) * split.y_scale
    return nll, rmse


def summary(name: str, values: list[float]) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    return f"{name} {float(t.mean()):8.3f} ± {float(t.std()):.3f}"


def benchmark(splits: int, steps: int, depth: int, t_steps: int) -> None:
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in ("GP", "TP", "GP clean", "TP clean")}
    if t_steps:
        results["GP, t-lik."] = []
    print(f"{'split':>5} {'GP NLL':>8} {'TP NLL':>8} {'GP RMSE':>8} {'TP RMSE':>8} | clean: GP/TP NLL")
    for seed in range(splits):
        split = diabetes_split(seed, dtype=torch.float64)
        y_bad, _ = corrupt(split.y_train, seed)
        for kind in ("GP", "TP"):
            results[kind].append(evaluate(make_model(kind, depth), split, y_bad, steps))
            results[f"{kind} clean"].append(evaluate(make_model(kind, depth), split, split.y_train, steps))
        if t_steps:
            results["GP, t-lik."].append(evaluate_t_likelihood(split, y_bad, t_steps, depth))
        (g, gr), (t, tr) = results["GP"][-1], results["TP"][-1]
        print(f"{seed:5d} {g:8.3f} {t:8.3f} {gr:8.2f} {tr:8.2f} | "
              f"{results['GP clean'][-1][0]:.3f} / {results['TP clean'][-1][0]:.3f}"
              + (f" | t-lik. NLL {results['GP, t-lik.'][-1][0]:.3f}" if t_steps else ""), flush=True)
    print(f"\nmean ± sd over {splits} splits (NLL in nats per test point, RMSE in units of y):")
    for kind, rows in results.items():
        nll, rmse = zip(*rows, strict=True)
        print(f"  {kind:11s} {summary('NLL', list(nll))}   {summary('RMSE', list(rmse))}")
    for metric, col in (("NLL", 0), ("RMSE", 1)):
        for suffix in ("", " clean"):
            pairs = zip(results["TP" + suffix], results["GP" + suffix], strict=True)
            diff = torch.tensor([t[col] - g[col] for t, g in pairs])
            se = float(diff.std()) / math.sqrt(len(diff))
            label = "outliers" if not suffix else "clean"
            print(f"  paired TP − GP {metric:4s} ({label:8s}): {float(diff.mean()):+.3f} ± {se:.3f} (s.e.)")


def figure(out: str, steps: int) -> None:
    """Two panels (GP, TP) on BMI alone with the same 5% outliers: the 95% predictive bands."""
    split = diabetes_split(0, dtype=torch.float64)
    x, x_test = split.x_train[:, BMI:BMI + 1], split.x_test[:, BMI:BMI + 1]
    y_bad, idx = corrupt(split.y_train, 0)
    grid = torch.linspace(float(x.min()) - 0.3, float(x.max()) + 0.3, 200, dtype=torch.float64)[:, None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    inlier = torch.ones(len(y_bad), dtype=torch.bool)
    inlier[idx] = False
    for ax, kind, color in zip(axes, ("GP", "TP"), ("C0", "C1"), strict=True):
        model = make_model(kind, 2)
        model.fit(x, y_bad, num_steps=steps, lr=0.05, progress=False)
        with torch.no_grad():
            pred = model.predict(grid, x, y_bad)
            log_density = model.predict(x_test, x, y_bad).log_prob(split.y_test)
            nll = float(-log_density.mean()) + math.log(split.y_scale)
            if isinstance(model, GP):
                half = 1.96 * pred.stddev
            else:
                half = float(student_t.ppf(0.975, float(pred.df[0]))) * pred.scale
        s = split.y_scale
        ax.scatter(x[inlier, 0], y_bad[inlier] * s, s=6, c="0.55", label="training data")
        ax.scatter(x[~inlier, 0], y_bad[~inlier] * s, s=18, c="r", marker="x", label="outliers (+8 sd)")
        ax.scatter(x_test[:, 0], split.y_test * s, s=10, facecolors="none", edgecolors="k",
                   label="clean test")
        ax.plot(grid[:, 0], pred.mean * s, c=color, label="predictive mean")
        ax.fill_between(grid[:, 0], (pred.mean - half) * s, (pred.mean + half) * s, color=color, alpha=0.25,
                        label="95% predictive band")
        title = "GP" if kind == "GP" else "Student-t process"
        ax.set_title(f"{title}: test NLL {nll:.2f}")
        ax.set_xlabel("BMI (standardised)")
    axes[0].set_ylabel("disease progression (centred)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("Diabetes, BMI only, 5% of training targets shifted by +8 sd (NNGP-ReLU kernel, type-II ML)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out, dpi=120)
    print(f"saved {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="max Adam steps per fit")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 splits, 30 steps: a smoke run")
    parser.add_argument("--no-t-likelihood", action="store_true", help="skip the Student-t likelihood GP")
    parser.add_argument("--out", default=os.path.join(HERE, "..", "docs", "img", "robust_regression.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.splits, args.steps = 2, 30
    start = time.time()
    t_steps = 0 if args.no_t_likelihood else (30 if args.quick else 300)
    benchmark(args.splits, args.steps, args.depth, t_steps)
    figure(args.out, args.steps)
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
