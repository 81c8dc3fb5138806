"""The GPU suite in one command: the ``gpu``-marked tests and the GPU table of every benchmark.

    python benchmarks/gpu_suite.py                    # on a CUDA machine: writes benchmarks/results/gpu.md
    python benchmarks/gpu_suite.py --dry-run          # on any machine: every step, tiny, on the CPU

Steps, each in its own subprocess with its own time limit (a crash or a timeout in one step is
recorded and the suite goes on; the report is rewritten after every step, so what finished is kept):

1. ``pytest -m gpu`` (the tests that need a CUDA device);
2. MCMC: the diabetes BNN (10-50-50-1, tanh) with 1, 64 and 1024 vectorised NUTS chains, 100 warmup
   + 100 draws, depth 6: wall time per draw per chain (``--step mcmc`` of this script);
3. kernels: ``benchmarks/kernels.py --gpu`` (NNGP/NTK relu and erf at n = 20,000, eager and fused, as a
   fraction of the device's measured copy bandwidth);
4. fused activations: ``benchmarks/activations.py --device cuda`` on 10⁸ elements, as a fraction of the
   measured streaming bandwidth;
5. processes: ``benchmarks/processes.py --device cuda`` (GP / TP / scale mixture vs GPyTorch, n = 20,000);
6. PFN training throughput: datasets per second of ``bayesact.infer.train_pfn`` (``--step pfn``).

The default limits add up to under 8 minutes on one H100/H200. ``--dry-run`` runs every step on the
CPU with tiny sizes and short limits (minutes on 2 cores, in CI), so the suite cannot rot unnoticed;
its report goes to ``--out`` (default: a temporary file, never over ``gpu.md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "gpu.md"


@dataclass(frozen=True)
class Step:
    """One step of the suite: a command and its time limit, on the device and in a dry run."""

    name: str
    command: tuple[str, ...]
    limit_s: float
    dry_command: tuple[str, ...]
    dry_limit_s: float


def steps(python: str) -> list[Step]:
    me = str(Path(__file__).resolve())
    bench = str(HERE)
    return [
        Step("gpu tests", (python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"), 120,
             (python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "--collect-only", "tests"),
             120),
        Step("mcmc chains", (python, me, "--step", "mcmc"), 150,
             (python, me, "--step", "mcmc", "--dry-run"), 120),
        Step("kernels", (python, f"{bench}/kernels.py", "--sizes", "500", "--dtypes", "float32",
                         "--activations", "relu", "erf", "--repeats", "3", "--gpu", "--gpu-n", "20000"), 90,
             (python, f"{bench}/kernels.py", "--sizes", "64", "--dtypes", "float32", "--activations", "relu",
              "--repeats", "1"), 120),
        Step("activations", (python, f"{bench}/activations.py", "--device", "cuda", "--n", "1e8",
                             "--reps", "5", "--names", "relu", "gelu", "tanh", "swish", "mish", "swiglu"), 60,
             (python, f"{bench}/activations.py", "--device", "cpu", "--n", "1e4", "--reps", "1",
              "--names", "relu"), 120),
        Step("processes", (python, f"{bench}/processes.py", "--device", "cuda", "--repeats", "3"), 90,
             (python, f"{bench}/processes.py", "--quick"), 120),
        Step("pfn training", (python, me, "--step", "pfn"), 60,
             (python, me, "--step", "pfn", "--dry-run"), 120),
    ]


def device_line() -> str:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        where = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        where = "no CUDA device (CPU dry run)"
    return (f"{where}; torch {torch.__version__}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}")


def run_step(step: Step, dry_run: bool) -> tuple[str, float, str]:
    """(status, seconds, output tail) of one step; status is ``ok``, ``failed (rc N)`` or ``timeout``."""
    command = step.dry_command if dry_run else step.command
    limit = step.dry_limit_s if dry_run else step.limit_s
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=limit, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return f"timeout after {limit:.0f} s", time.perf_counter() - start, out
    seconds = time.perf_counter() - start
    status = "ok" if proc.returncode == 0 else f"failed (rc {proc.returncode})"
    output = proc.stdout if proc.returncode == 0 else proc.stdout + "\n" + proc.stderr
    return status, seconds, output


def report(results: list[tuple[Step, str, float, str]], dry_run: bool, header: str) -> str:
    lines = [
        "# GPU suite" + (" (dry run on the CPU: tiny sizes, checks that every step runs)" if dry_run else ""),
        "",
        f"Device: {header}",
        "",
        "Produced by `python benchmarks/gpu_suite.py`" + (" --dry-run" if dry_run else "") + ".",
        "",
        "| step | status | seconds |",
        "|---|---|---:|",
    ]
    lines += [f"| {step.name} | {status} | {seconds:.1f} |" for step, status, seconds, _ in results]
    for step, status, _, output in results:
        tail = "\n".join(output.strip().splitlines()[-60:])
        lines += ["", f"## {step.name} ({status})", "", "```text" if not _is_markdown(tail) else "",
                  tail, "```" if not _is_markdown(tail) else ""]
    return "\n".join(lines) + "\n"


def _is_markdown(text: str) -> bool:
    return any(line.startswith("|") for line in text.splitlines())


def mcmc_step(dry_run: bool) -> None:
    """Vectorised NUTS chains of the diabetes BNN: seconds per draw per chain."""
    import torch

    sys.path.insert(0, str(HERE))
    from _mcmc_models import bnn_model, diabetes

    from bayesact.infer import mcmc

    device = torch.device("cpu" if dry_run else "cuda")
    chains, iters = ((1, 2), 3) if dry_run else ((1, 64, 1024), 100)
    x, y = (t.to(device) for t in diabetes())
    print("| chains | warmup + draws | warmup s | sampling s | ms per draw per chain | potential |")
    print("|---:|---:|---:|---:|---:|---|")
    for c in chains:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            post = mcmc(bnn_model, x, y, num_chains=c, num_warmup=iters, num_samples=iters, max_tree_depth=6,
                        seed=0, progress=False)
        info = post.info
        s = float(info["sampling_seconds"])
        print(f"| {c} | {iters} + {iters} | {float(info['warmup_seconds']):.2f} | {s:.2f} | "
              f"{s / (iters * c) * 1e3:.4f} | {info.get('potential_mode', '?')} |", flush=True)


def pfn_step(dry_run: bool) -> None:
    """Datasets per second of PFN training (``train_pfn``) on a 1-D RBF GP dataset prior (bf16 on the GPU)."""
    from bayesact.infer import train_pfn
    from bayesact.models import PFN
    from bayesact.priors import GPDatasetPrior

    device = "cpu" if dry_run else "cuda"
    # the batched-Cholesky GP prior, on the training device (lengthscale as in the PFN paper's 1-D GP)
    prior = GPDatasetPrior(1, kernel="rbf", lengthscale=0.6, outputscale=1.0, noise_std=0.1, device=device)
    size = {"emsize": 32, "nlayers": 1, "nhead": 2, "num_buckets": 50} if dry_run else {
        "emsize": 256, "nlayers": 4, "nhead": 4, "num_buckets": 1000}
    steps, batch, seq = (2, 4, 20) if dry_run else (100, 64, 100)
    result = train_pfn(PFN(1, **size), prior, steps, batch_size=batch, seq_len=seq, device=device,
                       progress=False, seed=0)
    print("| PFN (emsize, layers) | steps | batch | seq_len | seconds | datasets/s | final loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| {size['emsize']}, {size['nlayers']} | {result.steps_done} | {batch} | {seq} | "
          f"{result.seconds:.2f} | {result.datasets_per_second:.1f} | {float(result.losses[-1]):.3f} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"report (default {RESULTS.relative_to(ROOT)}; a temporary file with --dry-run)")
    parser.add_argument("--only", nargs="*", default=None, help="only these steps (report names)")
    parser.add_argument("--step", choices=["mcmc", "pfn"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "mcmc":
        mcmc_step(args.dry_run)
        return 0
    if args.step == "pfn":
        pfn_step(args.dry_run)
        return 0
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("No CUDA device: run with --dry-run to check the suite on the CPU.")
        return 1
    out = args.out or (Path(tempfile.gettempdir()) / "gpu_suite_dry_run.md" if args.dry_run else RESULTS)
    header = device_line()
    results: list[tuple[Step, str, float, str]] = []
    for step in steps(sys.executable):
        if args.only is not None and step.name not in args.only:
            continue
        print(f"[gpu_suite] {step.name} ...", flush=True)
        status, seconds, output = run_step(step, args.dry_run)
        print(f"[gpu_suite] {step.name}: {status} in {seconds:.1f} s", flush=True)
        results.append((step, status, seconds, output))
        out.write_text(report(results, args.dry_run, header))
    print(f"[gpu_suite] report: {out}")
    return 0 if all(status == "ok" for _, status, _, _ in results) else 2


if __name__ == "__main__":
    sys.exit(main())
