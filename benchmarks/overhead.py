"""Overhead of bayesact's default potential-and-gradient over bare ``torch.autograd.grad``.

For each model and chain count (1 and 4), times one call of

* **ours**: the potential-and-gradient that ``mcmc`` uses by default (no compilation):
  ``Potential.value_and_grad``, the model's vmapped gradient captured once with ``make_fx``
  and simplified (:mod:`bayesact.infer.graph_passes`), run as generated Python code;
* **captured, not simplified**: the same capture before simplification (the previous default);
* **bare autograd**: a hand-written torch log density of the same joint on the same flat vector,
  ``torch.autograd.grad`` of its sum over chains (the floor any Pyro-model path is held to).

Models: the one-hidden-layer tanh BNN (D = 4, H = 50, N = 200 synthetic points,
``first_result.tanh_bnn``) and the diabetes BNN 10-50-50-1 (``_mcmc_models.bnn_model``),
float32. Repeats are interleaved (each repeat times every method in turn, a block of calls each),
so load changes hit all methods alike; the table gives the median time per call and the median
over repeats of the per-repeat ratio to bare autograd. The load average is printed at the start
and the end.

Usage: ``nice -n 5 python benchmarks/overhead.py [--repeats 15] [--calls 50] [--threads 1]
[--out benchmarks/results/overhead.md]``; ``--quick`` is a smoke test.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from _mcmc_models import HIDDEN, bnn_bare_potential, bnn_model, diabetes  # noqa: E402
from first_result import H1, synthetic, tanh_bnn  # noqa: E402

from bayesact.infer.potential import build_potential  # noqa: E402

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
Fn = Callable[[], object]


Density = Callable[[torch.Tensor], torch.Tensor]


def tanh_bnn_bare_potential(x: torch.Tensor, y: torch.Tensor) -> tuple[Density, int]:
    """U(z) of ``tanh_bnn`` on the flat vector (w1, b1, w2, b2, log sigma), batched over chains."""
    d = x.shape[-1]
    sizes = [d * H1, H1, H1, 1, 1]

    def potential(z: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2, log_s = torch.split(z, sizes, dim=-1)
        c = z.shape[0]
        h = torch.tanh(torch.baddbmm(b1[:, None, :], x.expand(c, *x.shape), w1.view(c, d, H1)))
        f = torch.bmm(h, w2[:, :, None])[..., 0] + b2
        s = log_s.exp()
        log_lik = -0.5 * (((y - f) / s) ** 2).sum(-1) - y.shape[-1] * (log_s[:, 0] + HALF_LOG_2PI)
        weights = z[:, :-1]
        log_prior = -0.5 * (weights**2).sum(-1) - weights.shape[-1] * HALF_LOG_2PI
        log_prior = log_prior + (0.5 * math.log(2 / math.pi) - 0.5 * s**2 + log_s)[:, 0]
        return -(log_lik + log_prior)

    return potential, sum(sizes)


def methods(model: Callable, x: torch.Tensor, y: torch.Tensor, bare: Callable, chains: int) -> dict[str, Fn]:
    from torch.fx.experimental.proxy_tensor import make_fx

    pot = build_potential(model, (x, y), {}, dtype=torch.float32, device=torch.device("cpu"),
                          num_chains=chains)
    assert pot.mode == "captured", pot.mode
    z = torch.randn(chains, pot.dim, generator=torch.Generator().manual_seed(0)) * 0.3
    raw = make_fx(pot._vmapped_value_and_grad)(z)

    def bare_grad() -> object:
        zz = z.detach().requires_grad_(True)
        u = bare(zz)
        (g,) = torch.autograd.grad(u.sum(), zz)
        return u.detach(), g

    ours_u, ours_g = pot.value_and_grad(z)
    bare_u, bare_g = bare_grad()  # type: ignore[misc]
    # the same log density: values and gradients agree to float32 rounding
    assert torch.allclose(ours_u, bare_u, rtol=1e-4, atol=1e-2), (ours_u, bare_u)
    assert torch.allclose(ours_g, bare_g, rtol=1e-3, atol=1e-2)
    return {"ours": lambda: pot.value_and_grad(z), "captured, not simplified": lambda: raw(z),
            "bare autograd": bare_grad}


def time_block(fn: Fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 repeats of 5 calls")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    repeats, calls = (3, 5) if args.quick else (args.repeats, args.calls)
    torch.set_num_threads(args.threads)
    x1, y1 = synthetic()
    x2, y2 = diabetes()
    models = {
        f"tanh BNN D=4 H={H1} N=200": (tanh_bnn, x1, y1, tanh_bnn_bare_potential(x1, y1)[0]),
        f"diabetes BNN 10-{HIDDEN}-{HIDDEN}-1 N=442": (bnn_model, x2, y2, bnn_bare_potential(x2, y2)[0]),
    }
    lines = ["# Default potential-and-gradient vs bare torch.autograd.grad", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch "
             f"{torch.__version__}, Python {platform.python_version()}, {args.threads} torch thread(s), "
             f"float32; {repeats} interleaved repeats of {calls} calls", "",
             f"load average (start): {load()}", "",
             "| model | chains | ours (ms) | captured, not simplified (ms) | bare autograd (ms) "
             "| ours / bare | not simplified / bare |", "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for label, (model, x, y, bare) in models.items():
        for chains in (1, 4):
            fns = methods(model, x, y, bare, chains)
            for fn in fns.values():  # warm up
                time_block(fn, max(calls // 5, 2))
            times: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(repeats):
                for key, fn in fns.items():
                    times[key].append(time_block(fn, calls))
            bare_times = times["bare autograd"]
            ratio = {k: statistics.median(a / b for a, b in zip(times[k], bare_times, strict=True))
                     for k in fns}
            med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            raw = "captured, not simplified"
            row = (f"| {label} | {chains} | {med['ours']:.3f} | {med[raw]:.3f} | "
                   f"{med['bare autograd']:.3f} | {ratio['ours']:.2f} | {ratio[raw]:.2f} |")
            lines.append(row)
            print(row, flush=True)
    tail = ["", f"load average (end): {load()}", ""]
    print("\n".join(tail), flush=True)
    if args.out is not None:
        args.out.write_text("\n".join(lines + tail))


if __name__ == "__main__":
    main()
