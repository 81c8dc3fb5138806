"""Functional-prior fitting speed, and SGHMC's overhead over the bare minibatch gradient.

Part 1, time per outer iteration of ``fit_functional_prior`` (one hidden tanh layer on 10-D
inputs, 100 measurement points, a GP target with an RBF kernel) against the width and the number
of function samples per side:

- ``wasserstein``: bayesact's iteration (batched function draws, critic of ``--critic-steps``
  Adagrad steps, RMSprop step);
- ``loop peer``: the same iteration with the BNN's functions drawn one weight sample at a time in
  a Python loop (eager PyTorch, as a straightforward port of the reference algorithm does), with
  the same critic and step; the ratio is peer / ours;
- ``nngp``: an iteration of ``method="nngp"`` (no critic).

Part 2, SGHMC: ``benchmarks/mcmc.py``'s ``sghmc_section`` (time per SGHMC step of a 1 x 100 tanh
BNN on diabetes, batch 32, 4 chains, vs the bare minibatch value-and-gradient of the same model).

    python benchmarks/functional_prior.py [--widths 50 100 200] [--functions 64 128 256]
        [--iters 5] [--critic-steps 200] [--output benchmarks/results/functional_prior.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import gpytorch
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bayesact.models import BNN
from bayesact.priors import GPPrior, fit_functional_prior

IN_DIM, NUM_POINTS = 10, 100


class _LoopSampler:
    """The BNN's prior functions drawn one weight sample at a time (the loop peer)."""

    def __init__(self, bnn: BNN) -> None:
        self.bnn = bnn

    def __getattr__(self, name: str):
        return getattr(self.bnn, name)

    def sample_functions(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat([self.bnn.sample_functions(x, 1) for _ in range(n)])


def seconds_per_iteration(width: int, functions: int, method: str, iters: int, critic_steps: int,
                          loop: bool = False) -> float:  # fmt: skip
    kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=IN_DIM))
    kernel.base_kernel.lengthscale = 3.0
    kernel.requires_grad_(False)
    target = GPPrior(kernel)
    bnn = BNN(IN_DIM, hidden=(width,), activation="tanh")
    x = torch.randn(NUM_POINTS, IN_DIM)
    model = _LoopSampler(bnn) if loop else bnn
    times = []
    for _ in range(iters + 1):  # the first iteration warms up
        start = time.perf_counter()
        fit_functional_prior(model, target, x, num_functions=functions, num_iters=1, method=method,
                             critic_steps=critic_steps, progress=False, seed=0)  # fmt: skip
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} "
            f"thread(s), load average {load:.1f} at the start")  # fmt: skip


def fitting_table(widths: list[int], functions: list[int], iters: int, critic_steps: int) -> str:
    lines = [
        f"Seconds per outer iteration ({NUM_POINTS} measurement points, {IN_DIM}-D inputs, "
        f"{critic_steps} critic steps; median of {iters}).",
        "",
        "| width | functions | wasserstein (ours) | loop peer | peer / ours | nngp |",
        "|---|---|---|---|---|---|",
    ]
    for width in widths:
        for n in functions:
            ours = seconds_per_iteration(width, n, "wasserstein", iters, critic_steps)
            peer = seconds_per_iteration(width, n, "wasserstein", iters, critic_steps, loop=True)
            nngp = seconds_per_iteration(width, n, "nngp", iters, critic_steps)
            row = f"| {width} | {n} | {ours:.3f} | {peer:.3f} | {peer / ours:.2f} | {nngp:.4f} |"
            print(row, flush=True)
            lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--functions", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--critic-steps", type=int, default=200)
    parser.add_argument("--sghmc-steps", type=int, default=2000, help="0 skips the SGHMC part")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = f"Machine: {machine()}."
    print(header)
    text = [header, "", "## Prior fitting", "", fitting_table(args.widths, args.functions, args.iters,
                                                                   args.critic_steps)]  # fmt: skip
    if args.sghmc_steps:
        from mcmc import sghmc_section

        section = sghmc_section(4, args.sghmc_steps)
        print(section)
        text += ["", "## SGHMC", "", section]
    if args.output:
        Path(args.output).write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
