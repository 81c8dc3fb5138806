"""Benchmark: PFN forward pass against exact GP prediction (Cholesky) as the training set grows.

    python benchmarks/pfn.py                       # CPU table, n = 100, 200, 500, 1000, 2000
    python benchmarks/pfn.py --quick               # seconds-long smoke run (n = 50, small PFN)
    python benchmarks/pfn.py --device cuda         # the same on the GPU (skipped without CUDA)

Work (paper section 5.1 set-up): x ~ U[0, 1]^5, y from a GP with an RBF kernel (lengthscale 0.6,
outputscale 1, noise 1e-4), m = 500 query points, one dataset. Timed, each as one call under
``torch.no_grad()`` (median over ``--repeats`` after a warm-up round; the calls are interleaved in a
fresh random order per repeat, so a load change hits all of them):

- **PFN**: ``pfn.predict(x, y, x_test)`` of the reference's GP-mimicry model (emsize 256, 4 layers,
  4 heads, nhid 512, 1000 buckets), float32, and the predictive mean and variance from the bar
  distribution. Its weights are random (an untrained model does the same arithmetic as a trained one).
- **exact GP**: ``bayesact.models.GP(...).predict(x_test, x, y)``: the kernel matrix, its Cholesky
  factor, the solves and the predictive mean and variance at the m queries, float64 (float32 Cholesky
  fails at noise 1e-4 for the larger n; see ``--gp-dtype``). bayesact's GP runs at parity with
  GPyTorch's Cholesky path (``benchmarks/results/processes.md``).
- **exact GP + type-II ML**: ``GP.fit`` for ``--fit-steps`` Adam steps (lengthscale, outputscale,
  noise), then the prediction: what a GP costs when its hyperparameters are not known, which is what
  the PFN replaces (the paper's 200x figure is against MLE-II, not against a GP with known
  hyperparameters).

The crossover is the smallest n at which the PFN forward is faster than the exact GP prediction
(the GP costs O(n³ + n²m), the PFN O(L(n²E + nE·nhid) + L·m·n·E)): printed under the table, or
"none in range".
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

import gpytorch
import torch
from processes import _clock, load, machine  # benchmarks/processes.py (this script's folder)

from bayesact.models import GP, PFN

FEATURES, LENGTHSCALE, NOISE, TEST_POINTS = 5, 0.6, 1e-4, 500


def make_kernel(dtype: torch.dtype, device: torch.device) -> gpytorch.kernels.Kernel:
    kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()).to(dtype=dtype, device=device)
    kernel.base_kernel.lengthscale = LENGTHSCALE
    kernel.outputscale = 1.0
    return kernel


def gp_data(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One dataset of n training and TEST_POINTS query points from the section 5.1 GP (float64)."""
    gen = torch.Generator().manual_seed(n)
    x = torch.rand(n + TEST_POINTS, FEATURES, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        cov = make_kernel(torch.float64, torch.device("cpu"))(x).to_dense()
        cov = cov + NOISE * torch.eye(n + TEST_POINTS, dtype=torch.float64)
        chol = torch.linalg.cholesky(cov)
        y = chol @ torch.randn(n + TEST_POINTS, generator=gen, dtype=torch.float64)
    return x[:n].to(device), y[:n].to(device), x[n:].to(device)


def bench(n: int, pfn: PFN, device: torch.device, args: argparse.Namespace) -> dict[str, float]:
    x, y, x_test = gp_data(n, device)
    gp_dtype = getattr(torch, args.gp_dtype)
    xg, yg, xtg = (t.to(gp_dtype) for t in (x, y, x_test))
    xp, yp, xtp = (t.float() for t in (x, y, x_test))

    def pfn_call() -> object:
        dist = pfn.predict(xp, yp, xtp)
        return dist.mean, dist.variance

    def gp_call() -> object:
        gp = GP(make_kernel(gp_dtype, device), noise=NOISE).to(device)
        with torch.no_grad():
            pred = gp.predict(xtg, xg, yg)
            return pred.mean, pred.variance

    def fit_call() -> object:
        gp = GP(make_kernel(gp_dtype, device), noise=NOISE).to(device)
        gp.fit(xg, yg, num_steps=args.fit_steps, lr=0.05, progress=False)
        with torch.no_grad():
            pred = gp.predict(xtg, xg, yg)
            return pred.mean, pred.variance

    calls = {"pfn": pfn_call, "gp": gp_call}
    if args.fit_steps > 0:
        calls["fit"] = fit_call
    for fn in calls.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(args.repeats):
        order = list(calls)
        random.shuffle(order)
        for k in order:
            times[k].append(_clock(calls[k], device))
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 500, 1000, 2000])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per size (median reported)")
    parser.add_argument("--fit-steps", type=int, default=50,
                        help="Adam steps of the type-II ML column (0: off)")
    parser.add_argument("--gp-dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: two threads on a loaded 2-core machine wait "
                             "on each other, 150 ms instead of 1 ms for the n = 50 GP prediction)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="smoke run: n = 50, a small PFN, 1 repeat")
    parser.add_argument("--out", type=Path, default=None, help="also write the output to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: --device cuda skipped.")
        return 0
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    random.seed(0)
    torch.manual_seed(0)
    size = {"emsize": 256, "nlayers": 4, "nhead": 4, "nhid": 512, "num_buckets": 1000}
    if args.quick:
        args.sizes, args.repeats, args.fit_steps = [50], 1, 2
        size = {"emsize": 32, "nlayers": 2, "nhead": 2, "nhid": 64, "num_buckets": 100}
    pfn = PFN(FEATURES, **size).to(device)
    with torch.no_grad():
        for p in pfn.parameters():
            p.normal_(0.0, 0.05)
    lines = [
        f"Machine: {machine(device)}", f"Load average at start: {load()}",
        f"PFN {size}, float32; GP RBF(lengthscale {LENGTHSCALE}) + noise {NOISE}, {args.gp_dtype}; "
        f"{FEATURES} features, m = {TEST_POINTS} queries; median of {args.repeats} after a warm-up round",
        "",
    ]
    header = [
        "| n | PFN forward (s) | exact GP predict (s) | PFN / GP | GP + type-II ML, "
        f"{args.fit_steps} steps (s) | PFN / (GP + ML) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines + header), flush=True)
    rows, crossover = [], None
    for n in args.sizes:
        t = bench(n, pfn, device, args)
        fit = f"{t['fit']:.3f} | {t['pfn'] / t['fit']:.3f}" if "fit" in t else "– | –"
        rows.append(f"| {n} | {t['pfn']:.4f} | {t['gp']:.4f} | {t['pfn'] / t['gp']:.2f} | {fit} |")
        print(rows[-1], flush=True)
        if crossover is None and t["pfn"] < t["gp"]:
            crossover = n
    tail = ["", "Crossover (smallest n with the PFN forward faster than the exact GP prediction): "
            + (f"n = {crossover}" if crossover is not None else "none in range"),
            f"Load average at end: {load()}"]
    print("\n".join(tail), flush=True)
    if args.out:
        args.out.write_text("\n".join([*lines, *header, *rows, *tail]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
