"""Benchmark: bayesact's GP / Student-t process / scale mixture against GPyTorch's ExactGP (same kernel).

    python benchmarks/processes.py                      # CPU table, n = 500, 2000, 5000, float32 and float64
    python benchmarks/processes.py --quick              # seconds-long smoke run (n = 100, eager kernel)
    python benchmarks/processes.py --device cuda        # n = 20000 on the GPU (skipped without CUDA)

Work: y = sin(x·1) + noise on n × 10 Gaussian inputs, kernel ``NNGPKernel("relu", depth=3)`` (W_std = 1.5,
b_std = 0.1, noise 1e-2, mean 0). One kernel object per dtype is shared by every model, so the
hyperparameters and the kernel evaluation are identical. Timed, each as one call (wall time of whatever
the call does, the kernel matrix included):

- log marginal + gradient: ``-model.log_marginal(x, y)`` and ``.backward()`` for GP, TP and the
  importance-sampling ``ScaleMixtureProcess`` (InverseGamma prior = the TP, 1000 σ² draws); GPyTorch:
  ``-mll(model(x), y) * n`` and ``.backward()`` with ``ExactMarginalLogLikelihood`` in train mode;
- predict: mean and variance at 500 test points under ``torch.no_grad()``; GPyTorch:
  ``model.eval(); likelihood(model(x_test))`` with ``fast_pred_var(False)``, its prediction cache cleared
  before each call ("cold", the same work as ours: factorise, then predict) and, for information, kept
  ("warm": only the cross-covariance work).

GPyTorch is forced onto Cholesky: ``max_cholesky_size(10**9)`` and ``fast_computations(False, False,
False)``. The calls of all models are interleaved within each repeat, in a fresh random order per
repeat (so a load change hits all of them and none always follows the same call), and the median over
``--repeats`` is reported after one warm-up round (which also pays ``torch.compile`` with ``--fused``;
its time is printed). The "kernel" column is the kernel matrix alone with its gradient,
the part every model shares.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gpytorch
import pyro.distributions as dist
import torch

from bayesact.kernels import NNGPKernel
from bayesact.models import GP, ScaleMixtureProcess, StudentTProcess

W_STD, B_STD, DEPTH, FEATURES, NOISE, TEST_POINTS = 1.5, 0.1, 3, 10, 1e-2, 500
CONCENTRATION, RATE, IS_SAMPLES = 2.0, 2.0, 1000
TARGETS = {"tp_gp": 1.1, "gp_gpytorch": 1.0, "is_tp": 1.2}


class ExactModel(gpytorch.models.ExactGP):
    """GPyTorch's exact GP with a constant mean and the given kernel."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, likelihood: gpytorch.likelihoods.Likelihood,
                 kernel: gpytorch.kernels.Kernel) -> None:
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = kernel

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def load() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def machine(device: torch.device) -> str:
    from kernels import machine as cpu_machine  # benchmarks/kernels.py (this script's folder)

    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return f"{cpu_machine()}{gpu}, gpytorch {gpytorch.__version__}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _backward(loss: torch.Tensor, modules: list[torch.nn.Module]) -> None:
    for m in modules:
        m.zero_grad(set_to_none=True)
    loss.backward()


def bench(n: int, dtype: torch.dtype, device: torch.device, args: argparse.Namespace) -> dict[str, object]:
    """Median times (s) of every timed call at one size and dtype, plus the two log marginals."""
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, FEATURES, generator=gen, dtype=torch.float64)
    y = torch.sin(x.sum(-1) / FEATURES**0.5) + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    x_test = torch.randn(TEST_POINTS, FEATURES, generator=gen, dtype=torch.float64)
    x, y, x_test = (t.to(dtype=dtype, device=device) for t in (x, y, x_test))

    kernel = NNGPKernel("relu", depth=DEPTH, weight_std=W_STD, bias_std=B_STD, fused=args.fused)
    kernel = kernel.to(dtype=dtype, device=device)
    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    exact = ExactModel(x, y, likelihood, kernel).to(dtype=dtype, device=device)
    likelihood.noise = NOISE  # after the dtype change: noise set in float64
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, exact)
    noise = float(likelihood.noise.detach())  # its constraint rounds 1e-2 by 2e-10: use the exact value
    gp = GP(kernel, noise=noise).to(device)
    tp = StudentTProcess(kernel, concentration=CONCENTRATION, rate=RATE, noise=noise).to(device)
    prior = dist.InverseGamma(torch.tensor(CONCENTRATION, dtype=dtype, device=device),
                              torch.tensor(RATE, dtype=dtype, device=device))
    smp = ScaleMixtureProcess(kernel, prior, noise=noise, num_samples=IS_SAMPLES).to(device)

    def gpyt_lm() -> torch.Tensor:
        exact.train()
        likelihood.train()
        loss = -mll(exact(x), y) * n
        _backward(loss, [exact])
        return loss

    def ours_lm(model: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            loss = -model.log_marginal(x, y)  # type: ignore[operator]
            _backward(loss, [model])
            return loss
        return run

    def ours_pred(model: torch.nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                pred = model.predict(x_test, x, y)  # type: ignore[operator]
                return pred.mean, pred.variance
        return run

    def gpyt_pred(cold: bool) -> Callable[[], object]:
        def run() -> object:
            if cold:
                exact.train()  # clears the prediction cache (factor of the training covariance)
            exact.eval()
            likelihood.eval()
            with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
                pred = likelihood(exact(x_test))
                return pred.mean, pred.variance
        return run

    def kernel_only() -> None:
        kernel.zero_grad(set_to_none=True)
        kernel(x, x).to_dense().sum().backward()

    calls: dict[str, Callable[[], object]] = {
        "kernel": kernel_only,
        "gp": ours_lm(gp), "tp": ours_lm(tp), "is": ours_lm(smp), "gpytorch": gpyt_lm,
        "gp_pred": ours_pred(gp), "tp_pred": ours_pred(tp),
        "gpytorch_pred": gpyt_pred(cold=True), "gpytorch_pred_warm": gpyt_pred(cold=False),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    with gpytorch.settings.max_cholesky_size(10**9), gpytorch.settings.fast_computations(False, False, False):
        t0 = time.perf_counter()
        ours_value = float(-ours_lm(gp)().detach())  # warm-up round (compiles with --fused); values checked
        theirs_value = float(-gpyt_lm().detach())
        for fn in calls.values():
            fn()
        warmup = time.perf_counter() - t0
        order = list(calls)
        rng = random.Random(n)
        for _ in range(args.repeats):
            rng.shuffle(order)  # a fresh call order per round: no model always runs after the same one
            for name in order:
                times[name].append(_clock(calls[name], device))
    out: dict[str, object] = {name: statistics.median(ts) for name, ts in times.items()}
    out.update(ours_value=ours_value, theirs_value=theirs_value, warmup=warmup)
    return out


def _ratio(num: float, den: float, target: float) -> str:
    r = num / den
    return f"{r:.2f}× {'✓' if r <= target else '✗'}"


HEADER = [
    "| n | dtype | kernel+grad (s) | GP lm+grad (s) | TP lm+grad (s) | IS lm+grad (s) | GPyTorch lm+grad (s) "
    "| GP pred (s) | TP pred (s) | GPyTorch pred cold / warm (s) | TP/GP lm (≤1.1) | TP/GP pred (≤1.1) "
    "| GP/GPyTorch lm (≤1) | GP/GPyTorch pred cold (≤1) | IS/TP lm (≤1.2) |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|",
]


def row(n: int, dtype_name: str, t: dict) -> str:
    return (
        f"| {n} | {dtype_name} | {t['kernel']:.3f} | {t['gp']:.3f} | {t['tp']:.3f} | {t['is']:.3f} "
        f"| {t['gpytorch']:.3f} | {t['gp_pred']:.3f} | {t['tp_pred']:.3f} "
        f"| {t['gpytorch_pred']:.3f} / {t['gpytorch_pred_warm']:.3f} "
        f"| {_ratio(t['tp'], t['gp'], TARGETS['tp_gp'])} "
        f"| {_ratio(t['tp_pred'], t['gp_pred'], TARGETS['tp_gp'])} "
        f"| {_ratio(t['gp'], t['gpytorch'], TARGETS['gp_gpytorch'])} "
        f"| {_ratio(t['gp_pred'], t['gpytorch_pred'], TARGETS['gp_gpytorch'])} "
        f"| {_ratio(t['is'], t['tp'], TARGETS['is_tp'])} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="training set sizes (default 500 2000 5000; 20000 with --device cuda)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per size (median reported)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True,
                        help="compiled kernel (NNGPKernel(fused=True)); --no-fused: eager")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: n = 100, float64, 1 repeat, eager kernel")
    parser.add_argument("--out", type=Path, default=None, help="also write the output to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.quick:
        args.sizes, args.dtypes, args.repeats, args.fused = args.sizes or [100], ["float64"], 1, False
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: --device cuda skipped.")
        return 0
    device = torch.device(args.device)
    sizes = args.sizes or ([20000] if device.type == "cuda" else [500, 2000, 5000])
    lines = [f"Machine: {machine(device)}", f"Load average at start: {load()}",
             f"Kernel: NNGPKernel('relu', depth={DEPTH}, fused={args.fused}); median of {args.repeats} "
             f"after a warm-up round; IS with {IS_SAMPLES} σ² draws", ""]
    print("\n".join(lines), flush=True)
    rows, checks = list(HEADER), []
    print("\n".join(HEADER), flush=True)
    for n in sizes:
        for dtype_name in args.dtypes:
            t = bench(n, getattr(torch, dtype_name), device, args)
            rows.append(row(n, dtype_name, t))
            print(rows[-1], flush=True)
            ours, theirs = float(t["ours_value"]), float(t["theirs_value"])  # type: ignore[arg-type]
            checks.append(f"n={n} {dtype_name}: bayesact {ours:.6g}, GPyTorch {theirs:.6g}, relative "
                          f"difference {abs(ours - theirs) / abs(theirs):.1e} (warm-up {t['warmup']:.1f} s)")
            print(checks[-1], flush=True)
    tail = ["", "log p(y) of GP vs GPyTorch (same data, kernel and noise): " + "; ".join(checks) + ".",
            f"Load average at end: {load()}"]
    print("\n".join(tail), flush=True)
    if args.out:
        args.out.write_text("\n".join([*lines, *rows, *tail]) + "\n")
    tol = {"float32": 1e-4, "float64": 1e-9}
    bad = [c for c, d in zip(checks, [dt for _ in sizes for dt in args.dtypes], strict=True)
           if float(c.split("relative difference ")[1].split(" ")[0]) > tol[d]]
    if bad:
        print("log marginals disagree beyond tolerance: " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
