"""Benchmark: PFN forward pass against exact GP prediction (Cholesky) as the training set grows.

    python benchmarks/pfn.py                       # CPU table, n = 100, 200, 500, 1000, 2000
    python benchmarks/pfn.py --quick               # seconds-long smoke run (n = 50, small PFN)
    python benchmarks/pfn.py --device cuda         # the same on the GPU (skipped without CUDA)
    python benchmarks/pfn.py --train --pfns-python /work/venv-pfns/bin/python   # training throughput vs pfns
    python benchmarks/pfn.py --bnn                 # PPD speed on the BNN prior (examples/pfn_bnn_prior.py)

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

``--train``: training throughput of ``bayesact.infer.train_pfn`` against the ``pfns`` 0.4.2 package
(automl/PFNs) on the same GP prior (the section 5.1 one above), model size (emsize, layers, heads,
nhid, the same bar borders), batch, sequence length, steps, Adam with linear warm-up and cosine
decay, gradient clip 1, float32 without mixed precision, data drawn in the training process,
threads pinned equal. pfns runs in its own interpreter (``--pfns-python``, see
``benchmarks/_pfns_peer.py``); the two runs alternate for ``--rounds`` rounds in random order.
Reported: datasets/s (median over rounds) over the training loop (pfns: from its first batch on;
bayesact: ``TrainResult.seconds``) and each whole call (set-up included), the ratio, and
the mean NLL per query point of each trained model on the same held-out datasets (n = 10, 50, 90
of N = 100). ``--bnn`` runs ``examples/pfn_bnn_prior.py`` (PFN vs NUTS vs SVI on the paper's BNN
prior) with its own options after ``--``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gpytorch
import torch
from processes import _clock, load, machine  # benchmarks/processes.py (this script's folder)

from bayesact.infer import train_pfn
from bayesact.models import GP, PFN, BarDistribution
from bayesact.priors import GPDatasetPrior

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


PEER = Path(__file__).resolve().parent / "_pfns_peer.py"
EVAL_N = (10, 50, 90)


def train_ours(args: argparse.Namespace, borders: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               seed: int) -> dict[str, float]:
    prior = GPDatasetPrior(FEATURES, kernel="rbf", lengthscale=LENGTHSCALE, outputscale=1.0,
                           noise_std=NOISE**0.5)
    torch.manual_seed(seed)
    pfn = PFN(FEATURES, num_buckets=None, emsize=args.emsize, nlayers=args.nlayers, nhead=args.nhead,
              nhid=args.nhid, borders=borders, query_self_attention=False)
    start = time.perf_counter()
    fit = train_pfn(pfn, prior, args.steps, batch_size=args.batch, seq_len=args.seq_len, lr=args.lr,
                    warmup=args.warmup, progress=False, seed=seed, amp=False)
    call_seconds = time.perf_counter() - start
    with torch.no_grad():
        nll = [-pfn(x[:, :n], y[:, :n], x[:, n:]).log_prob(y[:, n:]) for n in EVAL_N]
    tail = max(1, args.steps_per_epoch)
    return {"seconds": fit.seconds, "call_seconds": call_seconds,
            "datasets_per_second": args.steps * args.batch / fit.seconds,
            "final_loss": float(fit.losses[-tail:].mean()), "eval_nll": float(torch.cat(
                [v.flatten() for v in nll]).mean())}


def train_peer(args: argparse.Namespace, data_file: str, seed: int) -> dict[str, float]:
    opts = {"features": FEATURES, "emsize": args.emsize, "nlayers": args.nlayers, "nhead": args.nhead,
            "nhid": args.nhid, "batch": args.batch, "seq-len": args.seq_len, "steps": args.steps,
            "warmup": args.warmup, "threads": args.threads, "seed": seed,
            "steps-per-epoch": args.steps_per_epoch, "lengthscale": LENGTHSCALE, "noise": NOISE**0.5,
            "lr": args.lr}
    cmd = [args.pfns_python, str(PEER), "--data", data_file]
    for k, v in opts.items():
        cmd += [f"--{k}", str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PFNS_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"the pfns peer failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return json.loads(line[len("PFNS_RESULT "):])


def train_table(args: argparse.Namespace) -> list[str]:
    """Training throughput and loss of bayesact's train_pfn and pfns 0.4.2, alternating rounds."""
    prior = GPDatasetPrior(FEATURES, kernel="rbf", lengthscale=LENGTHSCALE, outputscale=1.0,
                           noise_std=NOISE**0.5)
    gen = torch.Generator().manual_seed(12345)
    _, y_b = prior.sample_batch(1000, args.seq_len, gen)
    borders = BarDistribution.borders_from_samples(y_b.float(), args.buckets)
    x, y = (t.float() for t in prior.sample_batch(args.eval_datasets, 100, gen))
    names = ["bayesact train_pfn"] + (["pfns 0.4.2"] if args.pfns_python else [])
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    lines = [f"Load average at start: {load()}"]
    with tempfile.TemporaryDirectory() as tmp:
        data_file = str(Path(tmp) / "data.pt")
        torch.save({"borders": borders, "eval_x": x, "eval_y": y, "eval_n": torch.tensor(EVAL_N)}, data_file)
        for r in range(args.rounds):
            order = list(names)
            random.shuffle(order)
            for name in order:
                res = (train_ours(args, borders, x, y, r) if name == names[0]
                       else train_peer(args, data_file, r))
                runs[name].append(res)
                print(f"  round {r} {name}: {res['datasets_per_second']:.1f} datasets/s, "
                      f"eval NLL {res['eval_nll']:.3f} (load {load()})", flush=True)
    lines += [
        f"Load average at end: {load()}",
        f"GP prior: {FEATURES} features, RBF lengthscale {LENGTHSCALE}, noise std {NOISE**0.5:.3g}; model "
        f"emsize {args.emsize}, {args.nlayers} layers, {args.nhead} heads, nhid {args.nhid}, "
        f"{args.buckets} buckets; batch {args.batch}, seq_len {args.seq_len}, {args.steps} steps, lr "
        f"{args.lr}, warm-up {args.warmup}; {args.threads} thread(s); {args.rounds} round(s), "
        f"median; eval: {args.eval_datasets} held-out datasets x n = {', '.join(map(str, EVAL_N))}",
        "",
        "| trainer | datasets/s | training loop (s) | whole call (s) | loss of the last steps | "
        "held-out NLL per query |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
    for k, m in med.items():
        lines.append(f"| {k} | {m['datasets_per_second']:.1f} | {m['seconds']:.1f} | "
                     f"{m['call_seconds']:.1f} | {m['final_loss']:.3f} | {m['eval_nll']:.3f} |")
    if len(med) == 2:
        ratio = med[names[0]]["datasets_per_second"] / med[names[1]]["datasets_per_second"]
        lines += ["", f"Throughput ratio bayesact / pfns: {ratio:.2f}x"]
    else:
        lines += ["", "pfns not run: no --pfns-python given (install pfns==0.4.2 into its own venv)"]
    return lines


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
    parser.add_argument("--train", action="store_true", help="training throughput vs pfns 0.4.2 instead")
    parser.add_argument("--pfns-python", default=os.environ.get("BAYESACT_PFNS_PYTHON"),
                        help="interpreter with pfns==0.4.2 installed (its own venv)")
    parser.add_argument("--emsize", type=int, default=64)
    parser.add_argument("--nlayers", type=int, default=4)
    parser.add_argument("--nhead", type=int, default=4)
    parser.add_argument("--nhid", type=int, default=128)
    parser.add_argument("--buckets", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--steps-per-epoch", type=int, default=10,
                        help="pfns steps its lr schedule once per epoch: epochs = steps / this")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--eval-datasets", type=int, default=128)
    parser.add_argument("--bnn", nargs=argparse.REMAINDER, default=None,
                        help="run examples/pfn_bnn_prior.py with the options that follow")
    args = parser.parse_args(argv)
    if args.bnn is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
        import pfn_bnn_prior  # examples/pfn_bnn_prior.py

        bnn_args = [a for a in args.bnn if a != "--"]
        return pfn_bnn_prior.main(bnn_args + (["--quick"] if args.quick else []))
    if args.train:
        torch.set_num_threads(args.threads)
        random.seed(0)
        if args.quick:
            args.emsize, args.nlayers, args.nhead, args.nhid, args.buckets = 32, 1, 2, 64, 20
            args.batch, args.seq_len, args.steps, args.steps_per_epoch, args.warmup = 4, 100, 4, 2, 1
            args.rounds, args.eval_datasets = 1, 4
        if args.steps % args.steps_per_epoch:
            parser.error("--steps must be a multiple of --steps-per-epoch")
        lines = [f"Machine: {machine(torch.device('cpu'))}", *train_table(args)]
        print("\n".join(lines), flush=True)
        if args.out:
            args.out.write_text("\n".join(lines) + "\n")
        return 0
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
