"""Diagnostic: what the first eager ``nngp``/``ntk`` call costs in a fresh process (our numbers only).

For relu and erf, nngp and ntk, depth 3, float32, d = 10 (the inputs of ``first_result.py``
section 3), each configuration runs in a new process (``OMP_NUM_THREADS`` = ``--threads``) and
reports, around its first call with default arguments (eager: ``fused="auto"`` never compiles on a
first call):

- minor page faults (``getrusage(RUSAGE_SELF).ru_minflt`` after − before),
- CPU time (``time.process_time``, user + system of all threads) and the system part,
- peak RSS (``ru_maxrss``) before and after, and the wall time (noisy on a shared machine),
- in a second fresh process, under a ``TorchDispatchMode``: the number of freshly allocated
  tensors of at least n·n elements ("n×n temporaries", the outputs included) and the bytes of
  all fresh allocations (outputs that do not alias an input or an ``out=`` argument).

Fault counts and CPU time do not depend much on the machine's load; wall time does.
``python benchmarks/kernel_first_call.py [--sizes 2000 5000] [--threads 1] [--repeats 3] [--out FILE]``
(``--kernels``/``--activations`` pick a subset). The header names the ``bayesact`` the children
imported (``PYTHONPATH=<an old checkout>`` measures an earlier version with the same script).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KERNELS, ACTIVATIONS = ("nngp", "ntk"), ("relu", "erf")


def _inputs(n: int) -> Any:
    import torch

    return torch.randn(n, 10, generator=torch.Generator().manual_seed(n))


def _measure(kernel: str, act: str, n: int) -> dict[str, float]:
    """The first call's faults, CPU time and RSS in this (fresh) process."""
    from bayesact import kernels as K

    x = _inputs(n)
    fn = getattr(K, kernel)
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = fn(x, activation=act, depth=3)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert out.shape == (n, n)
    return {
        "minflt": after.ru_minflt - before.ru_minflt,
        "cpu_s": cpu1 - cpu0,
        "sys_s": after.ru_stime - before.ru_stime,
        "wall_s": wall1 - wall0,
        "rss0_mb": before.ru_maxrss / 1024,  # KiB on Linux
        "rss1_mb": after.ru_maxrss / 1024,
    }


def _count(kernel: str, act: str, n: int) -> dict[str, float]:
    """Fresh allocations during the first call, seen by a TorchDispatchMode (a separate process:
    the mode's overhead must not enter the timed run)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    from bayesact import kernels as K

    stats = {"nxn": 0, "alloc_mb": 0.0}

    class Allocations(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            result = func(*args, **kwargs)
            seen = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                    if isinstance(t, torch.Tensor)}
            for t in tree_leaves(result):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                    seen.add(t.untyped_storage().data_ptr())
                    stats["alloc_mb"] += t.untyped_storage().nbytes() / 2**20
                    stats["nxn"] += t.numel() >= n * n
            return result

    x = _inputs(n)
    with Allocations():
        getattr(K, kernel)(x, activation=act, depth=3)
    return stats


def _child(spec: str) -> None:
    what, kernel, act, size = spec.split(":")
    out = (_measure if what == "measure" else _count)(kernel, act, int(size))
    print(json.dumps(out))


def _run(spec: str, threads: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, __file__, "--child", spec], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"child {spec} failed with status {proc.returncode}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000])
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the child processes")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per row (medians)")
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    parser.add_argument("--activations", nargs="+", choices=ACTIVATIONS, default=list(ACTIVATIONS))
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    import torch

    import bayesact

    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parent, check=False).stdout.strip()
    lines = [
        f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {git or '?'} (+ working tree), "
        f"torch {torch.__version__}, bayesact {bayesact.__version__} from {Path(bayesact.__file__).parent}, "
        f"{platform.machine()}, "
        f"{os.cpu_count()} cores, OMP_NUM_THREADS={args.threads}, load average {os.getloadavg()}",
        "",
        "| kernel | activation | n | minor faults | CPU s | of which system s | wall s (load-sensitive) "
        "| peak RSS before → after (MB) | n×n allocations | MB allocated |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for n in args.sizes:
        for kernel, act in ((k, a) for a in args.activations for k in args.kernels):
            runs = [_run(f"measure:{kernel}:{act}:{n}", args.threads) for _ in range(args.repeats)]
            m = {key: sorted(r[key] for r in runs)[len(runs) // 2] for key in runs[0]}
            c = _run(f"count:{kernel}:{act}:{n}", args.threads)
            lines.append(
                f"| {kernel} | {act} | {n} | {m['minflt']:.0f} | {m['cpu_s']:.3f} | {m['sys_s']:.3f} | "
                f"{m['wall_s']:.3f} | {m['rss0_mb']:.0f} → {m['rss1_mb']:.0f} | {c['nxn']:.0f} | "
                f"{c['alloc_mb']:.0f} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
