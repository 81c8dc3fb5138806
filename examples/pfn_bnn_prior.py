"""A PFN trained on a Bayesian-neural-network prior, against NUTS and SVI on the same datasets.

The paper's section 5.3 set-up (Müller et al., ICLR 2022, Fig. 5), as regression:
``bayesact.models.BNN(3, hidden=(5, 5))`` (tanh, N(0, 1) weights scaled by 1/sqrt(fan_in), N(0, 1)
biases), inputs x ~ N(0, I_3), y = f(x) + 0.1 ε. A PFN is trained on datasets drawn from that prior
(``bayesact.priors.DatasetPrior``, ``bayesact.infer.train_pfn``); then, on fresh datasets from the
same prior with n = 100 revealed points and m = 200 queries, each method's posterior predictive is
scored by its NLL per query point (nats; lower is better, the true PPD is the optimum):

- **PFN**: one forward pass per dataset (all datasets in one batch; the time is per dataset).
- **NUTS**: ``bayesact.infer.mcmc`` of the same BNN (noise fixed at 0.1), 4 vectorised chains,
  k warm-up + k kept iterations for each k in ``--nuts-budgets``; the PPD is the mean of
  N(y | f_s(x), 0.1²) over the draws s.
- **SVI**: ``bayesact.infer.svi`` with a mean-field normal guide (Bayes by backprop), one fit per
  step count in ``--svi-budgets``, the same Monte Carlo PPD from guide draws.

The speed-up at equal NLL is read off each baseline's budgets: the cheapest budget whose mean NLL
is at or below the PFN's on the same datasets brackets the time the baseline needs to match it.

The paper ran a Bernoulli-output BNN (and its baseline had no nonlinearity and scored hard labels;
see docs/pfn.md); this example keeps the Gaussian likelihood, whose NLL is scored exactly.

Run: ``python examples/pfn_bnn_prior.py`` (about 10 minutes on a shared 2-core CPU, most of it the
PFN's ``--train-steps``; NUTS and SVI run on the first ``--nuts-datasets`` / ``--svi-datasets`` of
the test datasets, once per budget; the defaults are sized for that machine); ``--out table.md``
also writes the table; ``--quick`` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch

from bayesact.infer import mcmc, predictive, svi, train_pfn
from bayesact.models import BNN, PFN, BarDistribution
from bayesact.priors import DatasetPrior

FEATURES, HIDDEN, NOISE = 3, (5, 5), 0.1


@dataclass
class MethodResult:
    """Per-dataset NLLs (nats per query point) and wall-clock seconds of one method."""

    name: str
    nll: torch.Tensor  # (datasets,)
    seconds: torch.Tensor  # (datasets,)


def make_bnn() -> BNN:
    """The prior network: 3 inputs, two tanh layers of 5, fixed noise std 0.1."""
    return BNN(FEATURES, hidden=HIDDEN, activation="tanh", noise_std=NOISE)


def make_prior(bnn: BNN) -> DatasetPrior:
    """Datasets from the BNN prior: x ~ N(0, I_3), y = f(x) + 0.1 ε, fresh weights per dataset."""
    x_dist = pyro.distributions.Normal(torch.zeros(FEATURES), torch.ones(FEATURES)).to_event(1)
    return DatasetPrior(bnn, x_dist, noise_std=NOISE)


def mc_ppd_nll(f: torch.Tensor, y: torch.Tensor) -> float:
    """−mean_i log mean_s N(y_i | f_s(x_i), σ²) from function draws f (..., m) flattened over draws."""
    f = f.reshape(-1, f.shape[-1]).double()
    logp = torch.distributions.Normal(f, NOISE).log_prob(y.double())
    return float(-(torch.logsumexp(logp, 0) - math.log(f.shape[0])).mean())


def run_pfn(pfn: PFN, x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor,
            y_te: torch.Tensor) -> MethodResult:
    pfn.predict(x_tr[:1], y_tr[:1], x_te[:1])  # warm-up
    start = time.perf_counter()
    dist = pfn.predict(x_tr, y_tr, x_te)
    nll = -dist.log_prob(y_te).mean(-1)
    seconds = (time.perf_counter() - start) / x_tr.shape[0]
    return MethodResult("PFN (one forward pass)", nll.double(), torch.full((x_tr.shape[0],), seconds))


def run_nuts(x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor,
             iters: int, args: argparse.Namespace) -> MethodResult:
    """NUTS with ``iters`` warm-up and ``iters`` kept iterations per chain, 4 chains."""
    nll, secs = [], []
    for b in range(x_tr.shape[0]):
        bnn = make_bnn()
        start = time.perf_counter()
        post = mcmc(bnn, x_tr[b], y_tr[b], num_chains=4, num_warmup=iters, num_samples=iters,
                    max_tree_depth=args.tree_depth, seed=b, progress=False)
        f = predictive(bnn, post, x_te[b], None, seed=b)["f"][..., 0]
        secs.append(time.perf_counter() - start)
        nll.append(mc_ppd_nll(f, y_te[b]))
        print(f"  NUTS {iters} + {iters}, dataset {b}: {secs[-1]:.1f} s, NLL {nll[-1]:.3f}", flush=True)
    label = f"NUTS (4 chains, {iters} + {iters}, depth ≤ {args.tree_depth})"
    return MethodResult(label, torch.tensor(nll), torch.tensor(secs))


def run_svi(x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor,
            steps: int, args: argparse.Namespace) -> MethodResult:
    """Mean-field SVI for ``steps`` Adam steps (lr 0.01), PPD from ``--ppd-draws`` guide draws."""
    nll, secs = [], []
    for b in range(x_tr.shape[0]):
        bnn = make_bnn()
        start = time.perf_counter()
        fit = svi(bnn, x_tr[b], y_tr[b], num_steps=steps, lr=0.01, progress=False, seed=b)
        post = fit.to_posterior(args.ppd_draws, seed=b)
        f = predictive(bnn, post, x_te[b], None, seed=b)["f"][..., 0]
        secs.append(time.perf_counter() - start)
        nll.append(mc_ppd_nll(f, y_te[b]))
    label = f"SVI (mean-field normal, {steps} steps)"
    return MethodResult(label, torch.tensor(nll), torch.tensor(secs))


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run(args: argparse.Namespace) -> str:
    """Train, compare, print and return the markdown report."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    prior = make_prior(make_bnn())
    gen = torch.Generator().manual_seed(args.seed)
    _, y_borders = prior.sample_batch(2000 if not args.quick else 200, 100, gen)
    borders = BarDistribution.borders_from_samples(y_borders, args.buckets)
    pfn = PFN(FEATURES, num_buckets=args.buckets, emsize=args.emsize, nlayers=args.nlayers, nhead=4,
              borders=borders)
    load_start = load_average()
    fit = train_pfn(pfn, prior, args.train_steps, batch_size=args.batch, seq_len=args.n + args.m,
                    lr=args.lr, progress=False, seed=args.seed)
    print(f"PFN trained: {args.train_steps} steps in {fit.seconds:.0f} s ({fit.datasets_per_second:.0f} "
          f"datasets/s), last-100-step loss {float(fit.losses[-100:].mean()):.3f}", flush=True)

    x, y = prior.sample_batch(args.datasets, args.n + args.m, torch.Generator().manual_seed(args.seed + 1))
    x_tr, y_tr, x_te, y_te = x[:, :args.n], y[:, :args.n], x[:, args.n:], y[:, args.n:]
    pfn_res = run_pfn(pfn, x_tr, y_tr, x_te, y_te)
    k_nuts, k_svi = min(args.nuts_datasets, args.datasets), min(args.svi_datasets, args.datasets)
    results = [pfn_res]
    families: dict[str, list[MethodResult]] = {"SVI": [], "NUTS": []}
    for steps in args.svi_budgets if k_svi > 0 else []:
        families["SVI"].append(run_svi(x_tr[:k_svi], y_tr[:k_svi], x_te[:k_svi], y_te[:k_svi], steps, args))
    for iters in args.nuts_budgets if k_nuts > 0 else []:
        families["NUTS"].append(run_nuts(x_tr[:k_nuts], y_tr[:k_nuts], x_te[:k_nuts], y_te[:k_nuts], iters,
                                         args))
    results += families["SVI"] + families["NUTS"]

    def stat(v: torch.Tensor) -> str:
        if len(v) < 2:
            return f"{float(v.mean()):.3f}"
        return f"{float(v.mean()):.3f} ± {float(v.std() / math.sqrt(len(v))):.3f}"

    pfn_s = float(pfn_res.seconds[0])
    lines = [
        f"BNN prior {FEATURES}-{HIDDEN[0]}-{HIDDEN[1]}-1 (tanh), noise {NOISE}; n = {args.n} revealed, "
        f"m = {args.m} queries; PFN emsize {args.emsize}, {args.nlayers} layers, {args.buckets} buckets, "
        f"{sum(p.numel() for p in pfn.parameters())} parameters, trained {args.train_steps} steps x "
        f"{args.batch} datasets in {fit.seconds:.0f} s; torch threads {args.threads}",
        f"Load average at start: {load_start}; at end: {load_average()}",
        "",
        "| method | datasets | seconds per dataset | NLL (its datasets) | PFN NLL (same datasets) "
        "| time / PFN time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        k = len(r.nll)
        lines.append(f"| {r.name} | {k} | {float(r.seconds.mean()):.4g} | {stat(r.nll)} | "
                     f"{stat(pfn_res.nll[:k])} | {float(r.seconds.mean()) / pfn_s:.3g} |")
    lines.append("")
    for family, runs in families.items():
        if not runs:
            continue
        k = len(runs[0].nll)
        target = float(pfn_res.nll[:k].mean())
        reached = [r for r in runs if float(r.nll.mean()) <= target]
        ratios = [float(r.seconds.mean()) / pfn_s for r in runs]
        if reached and reached[0] is runs[0]:
            lines.append(f"- {family}: already its cheapest budget reaches the PFN's NLL ({target:.3f}) on "
                         f"these {k} datasets, so at equal NLL the PFN is at most {ratios[0]:.3g}x faster.")
        elif reached:
            i = runs.index(reached[0])
            lines.append(f"- {family}: reaches the PFN's NLL ({target:.3f}) between {runs[i - 1].name} and "
                         f"{reached[0].name}: at equal NLL the PFN is {ratios[i - 1]:.3g}x to "
                         f"{ratios[i]:.3g}x faster.")
        else:
            lines.append(f"- {family}: every budget tried is worse than the PFN "
                         f"({target:.3f}); at equal NLL the PFN is at least {ratios[-1]:.3g}x faster.")
    report = "\n".join(lines)
    print(report, flush=True)
    return report


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--emsize", type=int, default=64)
    parser.add_argument("--nlayers", type=int, default=3)
    parser.add_argument("--buckets", type=int, default=200)
    parser.add_argument("--n", type=int, default=100, help="revealed (training) points per dataset")
    parser.add_argument("--m", type=int, default=200, help="query points per dataset")
    parser.add_argument("--datasets", type=int, default=100, help="fresh test datasets (PFN)")
    parser.add_argument("--nuts-datasets", type=int, default=20, help="the first k of them also get NUTS")
    parser.add_argument("--svi-datasets", type=int, default=20, help="the first k of them also get SVI")
    parser.add_argument("--nuts-budgets", type=int, nargs="+", default=[5, 10, 30, 100],
                        help="NUTS runs with k warm-up + k kept iterations per chain, for each k")
    parser.add_argument("--tree-depth", type=int, default=5, help="NUTS maximum tree depth")
    parser.add_argument("--svi-budgets", type=int, nargs="+", default=[30, 100, 300, 1000],
                        help="SVI runs with this many Adam steps each")
    parser.add_argument("--ppd-draws", type=int, default=400, help="SVI guide draws for the PPD")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings, a seconds-long smoke run")
    parser.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_steps, args.batch, args.emsize, args.nlayers, args.buckets = 20, 8, 32, 1, 20
        args.n, args.m, args.datasets, args.nuts_datasets, args.svi_datasets = 20, 10, 4, 1, 1
        args.nuts_budgets, args.tree_depth, args.svi_budgets, args.ppd_draws = [10], 3, [20], 40
    for name in ("train_steps", "batch", "n", "m", "datasets", "ppd_draws", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("nuts_budgets", "svi_budgets"):
        if min(getattr(args, name)) < 1:
            parser.error(f"--{name.replace('_', '-')} must all be >= 1")
        setattr(args, name, sorted(getattr(args, name)))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    report = run(args)
    if args.out is not None:
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
