"""Benchmark: NNGP/NTK kernels of bayesact against neural-tangents (JAX) on the same work.

    python benchmarks/kernels.py                         # CPU table, n = 1000, 2000, 5000
    python benchmarks/kernels.py --nt-python /path/to/python   # peer in another interpreter
    python benchmarks/kernels.py --gpu                   # add the CUDA table (n = 20000)

Work: depth-3 MLP kernels (``stax.serial(*[Dense(1, W_std, b_std), act] * 3, Dense(1, W_std,
b_std))`` with W_std = 1.5, b_std = 0.1) on n × 10 Gaussian inputs, the full n × n matrix, for relu
and erf (closed forms) and tanh (bayesact: degree-64 Hermite series; neural-tangents:
``ElementwiseNumerical(deg=25)``, its recommended setting, tiled with ``nt.batch``).

neural-tangents needs JAX. It is imported lazily; when it is not importable here, pass the path of
an interpreter that has it (``--nt-python`` or ``BAYESACT_NT_PYTHON``) and it runs there, in the
same benchmark run, on the same inputs (shared through .npy files). Without it the peer column is
left empty with a note. Times are the best of ``--repeats`` runs after one warm-up call; the fused
path's first-call (compile) time is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bayesact import kernels as K

ACTIVATIONS = ("relu", "erf", "tanh")
W_STD, B_STD, DEPTH, FEATURES = 1.5, 0.1, 3, 10

PEER_SCRIPT = r"""
import json, sys, time
import numpy as np
import jax
spec = json.loads(sys.argv[1])
jax.config.update("jax_enable_x64", spec["dtype"] == "float64")
import jax.numpy as jnp
import neural_tangents as nt
from neural_tangents import stax
act = {"relu": stax.Relu(), "erf": stax.Erf(),
       "tanh": stax.ElementwiseNumerical(jnp.tanh, deg=25)}[spec["activation"]]
layers = []
for _ in range(spec["depth"]):
    layers += [stax.Dense(1, spec["w"], spec["b"]), act]
_, _, kernel_fn = stax.serial(*layers, stax.Dense(1, spec["w"], spec["b"]))
x = jnp.asarray(np.load(spec["x"]))
if spec["activation"] == "tanh":
    fn = nt.batch(kernel_fn, batch_size=spec["tile"], store_on_device=False)
else:
    fn = jax.jit(kernel_fn, static_argnames="get")
t0 = time.perf_counter()
out = fn(x, None, spec["kernel"]); out = np.asarray(out)
first = time.perf_counter() - t0
best = float("inf")
for _ in range(spec["repeats"]):
    t0 = time.perf_counter(); out = np.asarray(fn(x, None, spec["kernel"]))
    best = min(best, time.perf_counter() - t0)
if spec.get("save"):
    np.save(spec["save"], out)
print(json.dumps({"first": first, "best": best, "jax": jax.__version__}))
"""


def _timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return first, best


def _peer_command(nt_python: str | None) -> list[str] | None:
    if nt_python:
        return [nt_python, "-c", PEER_SCRIPT]
    try:
        import neural_tangents  # noqa: F401
    except Exception:  # any import failure means: no peer here
        return None
    return [sys.executable, "-c", PEER_SCRIPT]


def _run_peer(cmd: list[str], spec: dict, timeout: float) -> dict | None:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run(
            [*cmd, json.dumps(spec)], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": tail[0][:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def cpu_table(args: argparse.Namespace) -> list[str]:
    peer = _peer_command(args.nt_python)
    rows = [
        "| activation | kernel | n | dtype | eager (s) | fused (s) | fused compile (s) "
        "| neural-tangents (s) | NT / best ours |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    agreement: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="bayesact_bench_"))
    for n in args.sizes:
        x64 = torch.randn(n, FEATURES, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            x = x64.to(dtype)
            x_path = tmp / f"x_{n}_{dtype_name}.npy"
            np.save(x_path, x.numpy())
            for act in args.activations:
                for kernel, fn in (("nngp", K.nngp), ("ntk", K.ntk)):
                    kw = {"activation": act, "depth": DEPTH, "weight_std": W_STD, "bias_std": B_STD}
                    reps = args.repeats if n <= 2000 else 1
                    with torch.no_grad():
                        _, eager = _timed(lambda fn=fn, kw=kw, x=x: fn(x, fused=False, **kw), reps)
                        first, fused = _timed(lambda fn=fn, kw=kw, x=x: fn(x, fused=True, **kw), reps)
                        ours = fn(x, fused=False, **kw) if n == min(args.sizes) else None
                    peer_cell, ratio = "–", "–"
                    if peer is not None and not (act == "tanh" and n > args.nt_tanh_max):
                        save = tmp / f"nt_{n}_{dtype_name}_{act}_{kernel}.npy"
                        spec = {"activation": act, "kernel": kernel, "depth": DEPTH, "w": W_STD,
                                "b": B_STD, "x": str(x_path), "dtype": dtype_name, "repeats": reps,
                                "tile": 250, "save": str(save) if ours is not None else ""}
                        res = _run_peer(peer, spec, args.peer_timeout)
                        if res is None or "error" in res:
                            peer_cell = f"failed: {res.get('error') if res else '?'}"
                        else:
                            peer_cell = f"{res['best']:.3f}"
                            ratio = f"{res['best'] / min(eager, fused):.2f}×"
                            if ours is not None:
                                theirs = torch.from_numpy(np.load(save)).to(torch.float64)
                                err = float((ours.double() - theirs).norm() / theirs.norm())
                                agreement.append(f"{act} {kernel} {dtype_name} n={n}: {err:.1e}")
                    elif act == "tanh" and n > args.nt_tanh_max:
                        peer_cell = "not run (deg-25 2-D quadrature: minutes)"
                    rows.append(
                        f"| {act} | {kernel} | {n} | {dtype_name} | {eager:.3f} | {fused:.3f} "
                        f"| {max(first - fused, 0.0):.1f} | {peer_cell} | {ratio} |"
                    )
                    print(rows[-1], flush=True)
    if peer is None:
        rows.append("")
        rows.append("neural-tangents is not importable here and no --nt-python was given: "
                    "peer column skipped.")
    if agreement:
        rows.append("")
        rows.append("Relative Frobenius difference bayesact vs neural-tangents (same inputs): "
                    + "; ".join(agreement) + ".")
    return rows


def gpu_table(args: argparse.Namespace) -> list[str]:
    if not torch.cuda.is_available():
        return ["No CUDA device: GPU table skipped."]
    dev = torch.device("cuda")
    n = args.gpu_n
    x = torch.randn(n, FEATURES, device=dev)
    big = torch.empty(2**28, device=dev)  # 1 GiB copy: achievable bandwidth
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        big.clone()
    torch.cuda.synchronize()
    bandwidth = 5 * 2 * big.numel() * 4 / (time.perf_counter() - t0)
    del big
    rows = [f"GPU: {torch.cuda.get_device_name()}, copy bandwidth {bandwidth / 1e9:.0f} GB/s",
            "", "| activation | kernel | n | eager (s) | fused (s) | fused GB/s | fraction of copy BW |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for act in args.activations:
        for kernel, fn in (("nngp", K.nngp), ("ntk", K.ntk)):
            kw = {"activation": act, "depth": DEPTH, "weight_std": W_STD, "bias_std": B_STD}

            def run(fused: bool, fn: Callable = fn, kw: dict = kw) -> None:
                fn(x, fused=fused, **kw)
                torch.cuda.synchronize()

            with torch.no_grad():
                _, eager = _timed(lambda: run(False), args.repeats)
                _, fused = _timed(lambda: run(True), args.repeats)
            # floor traffic: the K⁰ Gram matrix written and read, the outputs written
            outputs = 1 if kernel == "nngp" else 2
            moved = (2 + outputs) * n * n * 4
            rows.append(f"| {act} | {kernel} | {n} | {eager:.3f} | {fused:.3f} | "
                        f"{moved / fused / 1e9:.0f} | {moved / fused / bandwidth:.2f} |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--activations", nargs="+", default=list(ACTIVATIONS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nt-python", default=os.environ.get("BAYESACT_NT_PYTHON"))
    parser.add_argument("--nt-tanh-max", type=int, default=1000,
                        help="largest n for neural-tangents' tanh quadrature")
    parser.add_argument("--peer-timeout", type=float, default=600.0)
    parser.add_argument("--gpu", action="store_true", help="also run the CUDA table")
    parser.add_argument("--gpu-n", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=None, help="write the tables to this file")
    args = parser.parse_args()
    lines = [f"Machine: {machine()}", "", *cpu_table(args)]
    if args.gpu:
        lines += ["", *gpu_table(args)]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
