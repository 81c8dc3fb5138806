"""GP mimicry of a prior-fitted network (Müller et al. 2022, Fig. 4a; bayesact issue 14).

    nice -n 5 python benchmarks/pfn_mimicry.py --dims 1 --steps 2400     # train + evaluate, 1-D
    nice -n 5 python benchmarks/pfn_mimicry.py --dims 5 --steps 2400     # the same, 5-D
    python benchmarks/pfn_mimicry.py --report                            # merge the runs: .md + figure
    python benchmarks/pfn_mimicry.py --dims 1 --load model_dir           # evaluate saved models only
    python benchmarks/pfn_mimicry.py --quick --out /tmp/x                # seconds-long smoke run
    python benchmarks/pfn_mimicry.py --device cuda --emsize 512 --nlayers 6 ...   # paper size on a GPU

Prior (paper §5.1): x ~ U[0, 1]^d, y = f(x) + σε, f ~ GP(0, s·exp(-‖x - x'‖²/2ℓ²)) with fixed
ℓ = 0.6, s = 1 and noise variance σ² = 1e-4 (``--lengthscale``, ``--outputscale``, ``--noise-std``),
for d = 1 and d = 5. A ``bayesact.models.PFN`` is trained on it with ``bayesact.infer.train_pfn``
(datasets of ``--seq-len`` points from ``bayesact.priors.GPDatasetPrior``, bar head with borders from
prior draws of y).

Evaluation: for every n in {0, 5, 10, 20, 50}, ``--datasets`` (1000) fresh datasets of n training
points and ``--queries`` query points each, drawn from a stream independent of the training one. For
every query: the PFN's NLL −log q(y | x, D) and its central 95 % interval (``BarDistribution.quantile``
at 0.025 and 0.975), and the **exact GP predictive** N(k*ᵀK⁻¹y, s − k*ᵀK⁻¹k* + σ²) with K = K_f + σ²I,
computed here in float64 by Cholesky (written independently of the PFN and prior code), its NLL and
its interval μ ± 1.96·sd. Reported per n: mean PFN NLL − GP NLL with the standard error over datasets
(the NLL difference is paired: same data), both coverages with their standard errors.

Training curve: training runs in stages ending at ``--checkpoints`` (fractions of ``--steps``), each
continuing the previous one through ``train_pfn(..., resume=True)`` with a larger ``num_steps`` (the
cosine schedule is stretched, so every stage ends annealed to lr 0); after each stage the gap is
measured on ``--checkpoint-datasets`` datasets per n. A power law gap(T) = a·T^(−b) is fitted per n to
the stages and extrapolated to the number of steps (at the same batch) that would reach 0.05 nats.

Each run writes ``<out>/pfn_mimicry_d<d>.json``; ``--report`` merges the JSON files into
``<out>/pfn_mimicry.md`` and the figure ``--figure`` (NLL difference vs n, both dimensions).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bayesact.infer import train_pfn
from bayesact.models import PFN, BarDistribution
from bayesact.priors import GPDatasetPrior

ROOT = Path(__file__).resolve().parents[1]
NS = (0, 5, 10, 20, 50)
TARGET_GAP = 0.05
Z95 = 1.959963984540054


def machine_line(device: torch.device) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kernels import machine  # benchmarks/kernels.py (this script's folder)

    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return f"{machine()}{gpu}"


def load_avg() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


# ------------------------------------------------------------------------------------------
# the exact GP predictive (float64 Cholesky, independent of bayesact's GP code)
# ------------------------------------------------------------------------------------------
def rbf(a: torch.Tensor, b: torch.Tensor, lengthscale: float, outputscale: float) -> torch.Tensor:
    """s·exp(−‖a_i − b_j‖² / 2ℓ²) for a (B, n, d), b (B, m, d): (B, n, m)."""
    diff = a.unsqueeze(-2) - b.unsqueeze(-3)
    return outputscale * torch.exp(-0.5 * diff.square().sum(-1) / lengthscale**2)


def exact_gp_predictive(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, *, lengthscale: float,
    outputscale: float, noise_std: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance (noise included) of p(y* | x*, D) for every query, in float64: (B, m) each."""
    x_train, y_train, x_test = (t.to(torch.float64) for t in (x_train, y_train, x_test))
    batch, m = x_test.shape[0], x_test.shape[1]
    prior_var = torch.full((batch, m), outputscale + noise_std**2, dtype=torch.float64)
    if x_train.shape[1] == 0:
        return torch.zeros(batch, m, dtype=torch.float64), prior_var
    n = x_train.shape[1]
    cov = rbf(x_train, x_train, lengthscale, outputscale)
    cov = cov + noise_std**2 * torch.eye(n, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    cross = rbf(x_train, x_test, lengthscale, outputscale)  # (B, n, m)
    v = torch.linalg.solve_triangular(chol, cross, upper=False)  # L⁻¹ k*
    w = torch.linalg.solve_triangular(chol, y_train.unsqueeze(-1), upper=False)  # L⁻¹ y
    mean = (v * w).sum(-2)
    var = prior_var - v.square().sum(-2)
    return mean, var


def gaussian_nll(y: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return 0.5 * (math.log(2 * math.pi) + var.log() + (y - mean).square() / var)


# ------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------
def evaluate(
    pfn: PFN, prior: GPDatasetPrior, args: argparse.Namespace, num_datasets: int, seed: int,
    device: torch.device,
) -> dict[int, dict[str, float]]:
    """Per n: mean PFN NLL − GP NLL (± s.e. over datasets), both NLLs and both 95 % coverages."""
    out: dict[int, dict[str, float]] = {}
    q = args.queries
    levels = torch.tensor([0.025, 0.975])
    for n in args.ns:
        gen = torch.Generator().manual_seed(seed + 7919 * n)
        x, y = prior.sample_batch(num_datasets, n + q, gen)  # float64
        x_tr, y_tr, x_te, y_te = x[:, :n], y[:, :n], x[:, n:], y[:, n:]
        mean, var = exact_gp_predictive(x_tr, y_tr, x_te, lengthscale=args.lengthscale,
                                        outputscale=args.outputscale, noise_std=args.noise_std)
        gp_nll = gaussian_nll(y_te, mean, var)
        half = Z95 * var.sqrt()
        gp_cover = ((y_te >= mean - half) & (y_te <= mean + half)).double()
        pfn_nll, pfn_cover = [], []
        for i in range(0, num_datasets, args.eval_chunk):
            sl = slice(i, i + args.eval_chunk)
            dist = pfn.predict(*(t[sl].to(device=device, dtype=torch.float32) for t in (x_tr, y_tr, x_te)))
            yt = y_te[sl].to(device=device, dtype=torch.float32)
            pfn_nll.append(-dist.log_prob(yt).double().cpu())
            lo, hi = dist.quantile(levels.to(device)).cpu().double()
            pfn_cover.append(((y_te[sl] >= lo) & (y_te[sl] <= hi)).double())
        p_nll, p_cov = torch.cat(pfn_nll), torch.cat(pfn_cover)
        diff = (p_nll - gp_nll).mean(-1)  # per dataset (paired)
        se = lambda t: float(t.std() / math.sqrt(t.numel()))  # noqa: E731
        out[n] = {
            "gap": float(diff.mean()), "gap_se": se(diff),
            "pfn_nll": float(p_nll.mean()), "gp_nll": float(gp_nll.mean()),
            "pfn_cover": float(p_cov.mean()), "pfn_cover_se": se(p_cov.mean(-1)),
            "gp_cover": float(gp_cover.mean()), "gp_cover_se": se(gp_cover.mean(-1)),
        }
    return out


# ------------------------------------------------------------------------------------------
# training in stages
# ------------------------------------------------------------------------------------------
def make_prior(d: int, args: argparse.Namespace) -> GPDatasetPrior:
    return GPDatasetPrior(d, kernel="rbf", lengthscale=args.lengthscale, outputscale=args.outputscale,
                          noise_std=args.noise_std, dtype=torch.float64)


def make_pfn(d: int, prior: GPDatasetPrior, args: argparse.Namespace) -> PFN:
    _, y = prior.sample_batch(args.border_datasets, args.seq_len, torch.Generator().manual_seed(12345))
    borders = BarDistribution.borders_from_samples(y.reshape(-1).float(), args.buckets)
    return PFN(d, num_buckets=args.buckets, emsize=args.emsize, nlayers=args.nlayers, nhead=args.nhead,
               borders=borders)


def load_model(
    d: int, prior: GPDatasetPrior, model_dir: Path, args: argparse.Namespace
) -> tuple[PFN, int | None]:
    """<model_dir>/pfn_mimicry_d<d>.pfn, else the model state of the training checkpoint
    <model_dir>/pfn_mimicry_d<d>.ckpt in a PFN built from the command-line sizes (and its step count)."""
    model_path = model_dir / f"pfn_mimicry_d{d}.pfn"
    if model_path.exists():
        print(f"d={d}: loaded {model_path}", flush=True)
        return PFN.load(model_path), None
    from bayesact.infer.checkpoint import load_checkpoint
    from bayesact.infer.pfn_training import PFN_FORMAT

    ckpt = model_dir / f"pfn_mimicry_d{d}.ckpt"
    state = load_checkpoint(ckpt, PFN_FORMAT)["state"]
    pfn = make_pfn(d, prior, args)
    pfn.load_state_dict(state["model"])
    print(f"d={d}: loaded the model of {ckpt} (step {state['step']})", flush=True)
    return pfn, int(state["step"])


def stage_ends(args: argparse.Namespace) -> list[int]:
    ends = sorted({max(1, round(f * args.steps)) for f in args.checkpoints} | {args.steps})
    return [e for e in ends if e <= args.steps]


def run_dimension(d: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    prior = make_prior(d, args)
    model_dir = Path(args.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    model_path = model_dir / f"pfn_mimicry_d{d}.pfn"
    curve: list[dict[str, Any]] = []
    train_seconds = 0.0
    if args.load:
        pfn, steps_done = load_model(d, prior, model_dir, args)
    else:
        torch.manual_seed(args.seed)
        pfn = make_pfn(d, prior, args)
        ckpt = model_dir / f"pfn_mimicry_d{d}.ckpt"
        if args.continue_training:  # the earlier stages: from the earlier run's JSON and checkpoint
            earlier = json.loads((Path(args.out) / f"pfn_mimicry_d{d}.json").read_text())
            curve = [p for p in earlier["curve"] if p["steps"] < stage_ends(args)[0]]
            for p in curve:
                p["eval"] = {int(n): v for n, v in p["eval"].items()}
        elif ckpt.exists():
            ckpt.unlink()
        warmup = args.warmup if args.warmup is not None else max(1, stage_ends(args)[0] // 2)
        for end in stage_ends(args):
            result = train_pfn(pfn, prior, end, batch_size=args.batch_size, seq_len=args.seq_len,
                               lr=args.lr, warmup=warmup, device=device, checkpoint=ckpt,
                               checkpoint_every=max(1, end), resume=True, progress=args.progress,
                               seed=args.seed)
            train_seconds = result.seconds
            losses = result.losses
            tail = losses[-max(1, len(losses) // 10):]
            point: dict[str, Any] = {"steps": end, "datasets": end * args.batch_size,
                                     "seconds": round(result.seconds, 1),
                                     "train_loss_last10pct": float(tail.mean())}
            if end != args.steps:
                point["eval"] = evaluate(pfn, prior, args, args.checkpoint_datasets, args.seed + 1, device)
                gaps = ", ".join(f"n={n}: {v['gap']:.3f}" for n, v in point["eval"].items())
                print(f"d={d} step {end} ({result.seconds:.0f} s train): gap {gaps}", flush=True)
            curve.append(point)
        pfn.save(model_path)
        steps_done = args.steps
    pfn.to(device)
    final = evaluate(pfn, prior, args, args.datasets, args.seed + 2, device)
    if curve:
        curve[-1]["eval"] = final
    for n, v in final.items():
        print(f"d={d} n={n}: gap {v['gap']:.3f} ± {v['gap_se']:.3f}, PFN {v['pfn_nll']:.3f}, "
              f"GP {v['gp_nll']:.3f}, cover PFN {v['pfn_cover']:.3f} GP {v['gp_cover']:.3f}", flush=True)
    return {
        "d": d, "prior": {"lengthscale": args.lengthscale, "outputscale": args.outputscale,
                          "noise_std": args.noise_std},
        "model": {"emsize": args.emsize, "nlayers": args.nlayers, "nhead": args.nhead,
                  "buckets": pfn.num_buckets, "params": sum(p.numel() for p in pfn.parameters())},
        "train": {"steps": steps_done, "batch_size": args.batch_size, "seq_len": args.seq_len,
                  "lr": args.lr, "seconds": round(train_seconds, 1), "threads": torch.get_num_threads()},
        "eval": {"datasets": args.datasets, "queries": args.queries, "ns": list(args.ns)},
        "final": {str(n): v for n, v in final.items()},
        "curve": [{**p, "eval": {str(n): v for n, v in p["eval"].items()}} for p in curve],
        "machine": machine_line(device), "load": load_avg(),
    }


# ------------------------------------------------------------------------------------------
# extrapolation and report
# ------------------------------------------------------------------------------------------
def extrapolate(curve: list[dict[str, Any]], n: str) -> tuple[float, float, float] | None:
    """Least-squares fit log gap = log a − b log T over the stages with a positive gap; returns
    (a, b, T at which a·T^−b = 0.05), or None when fewer than two usable stages or b ≤ 0."""
    pts = [(p["steps"], p["eval"][n]["gap"]) for p in curve if p["eval"][n]["gap"] > 0]
    if len(pts) < 2:
        return None
    xs = torch.tensor([math.log(t) for t, _ in pts], dtype=torch.float64)
    ys = torch.tensor([math.log(g) for _, g in pts], dtype=torch.float64)
    slope = float(((xs - xs.mean()) * (ys - ys.mean())).sum() / (xs - xs.mean()).square().sum())
    b = -slope
    log_a = float(ys.mean() + b * xs.mean())
    if b <= 0:
        return None
    return math.exp(log_a), b, math.exp((log_a - math.log(TARGET_GAP)) / b)


def report(out_dir: Path, figure: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("pfn_mimicry_d*.json"))]
    if not runs:
        raise SystemExit(f"no pfn_mimicry_d*.json in {out_dir}: run with --dims first")
    lines = ["# PFN GP mimicry (Müller et al. 2022, Fig. 4a shape; issue 14)", "",
             "Generated by `benchmarks/pfn_mimicry.py` (see its docstring for the method).", ""]
    for r in runs:
        m, t, e, pr = r["model"], r["train"], r["eval"], r["prior"]
        lines += [
            f"## d = {r['d']}", "",
            f"- prior: RBF GP, lengthscale {pr['lengthscale']}, outputscale {pr['outputscale']}, noise std "
            f"{pr['noise_std']} (variance {pr['noise_std']**2:.1e}), x ~ U[0, 1]^{r['d']}",
            f"- model: emsize {m['emsize']}, {m['nlayers']} layers, {m['nhead']} heads, {m['buckets']} "
            f"buckets, {m['params']:,} parameters",
            f"- training: {t['steps']} steps × {t['batch_size']} datasets of {t['seq_len']} points "
            f"({(t['steps'] or 0) * t['batch_size']:,} datasets), lr {t['lr']}, {t['seconds']} s on "
            f"{t['threads']} thread(s)",
            f"- machine: {r['machine']}; load average at the end {r['load']}",
            f"- evaluation: {e['datasets']} fresh datasets per n, {e['queries']} queries each; "
            "± is one standard error over datasets", "",
            "| n | PFN NLL − GP NLL | PFN NLL | exact GP NLL | PFN 95 % coverage | GP 95 % coverage |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for n, v in r["final"].items():
            lines.append(
                f"| {n} | {v['gap']:.3f} ± {v['gap_se']:.3f} | {v['pfn_nll']:.3f} | {v['gp_nll']:.3f} | "
                f"{v['pfn_cover']:.3f} ± {v['pfn_cover_se']:.3f} | {v['gp_cover']:.3f} ± "
                f"{v['gp_cover_se']:.3f} |")
        if len(r["curve"]) > 1:
            ns = list(r["final"])
            lines += ["", "Gap (nats) after each training stage (each stage annealed to lr 0; stages before "
                      "the last on fewer datasets per n, the last one is the table above):", "",
                      "| steps | datasets | train wall s | " + " | ".join(f"n={n}" for n in ns) + " |",
                      "|---:|---:|---:|" + "---:|" * len(ns)]
            for p in r["curve"]:
                lines.append(f"| {p['steps']} | {p['datasets']:,} | {p['seconds']} | "
                             + " | ".join(f"{p['eval'][n]['gap']:.3f}" for n in ns) + " |")
            lines += ["", "Power-law fit gap ≈ a·steps^(−b) over the stages, extrapolated to 0.05 nats "
                      f"(batch {t['batch_size']}):", "",
                      "| n | a | b | steps to 0.05 | datasets to 0.05 |", "|---:|---:|---:|---:|---:|"]
            for n in ns:
                if r["final"][n]["gap"] < TARGET_GAP:
                    lines.append(f"| {n} | | | reached | |")
                    continue
                fit = extrapolate(r["curve"], n)
                if fit is None:
                    lines.append(f"| {n} | | | no decreasing trend | |")
                else:
                    a, b, steps = fit
                    lines.append(f"| {n} | {a:.3g} | {b:.2f} | {steps:.3g} | {steps * t['batch_size']:.3g} |")
        lines.append("")
    plot(runs, figure)
    lines += [f"![NLL gap vs n]({os.path.relpath(figure, out_dir)})", ""]
    text = "\n".join(lines)
    (out_dir / "pfn_mimicry.md").write_text(text)
    return text


def plot(runs: list[dict[str, Any]], figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5.0 * len(runs), 3.8), squeeze=False)
    for ax, r in zip(axes[0], runs, strict=True):
        for p in r["curve"] or [{"steps": r["train"]["steps"], "eval": r["final"]}]:
            ns = [int(n) for n in p["eval"]]
            gap = [p["eval"][str(n)]["gap"] for n in ns]
            se = [p["eval"][str(n)]["gap_se"] for n in ns]
            ax.errorbar(ns, gap, yerr=[2 * s for s in se], marker="o", capsize=3,
                        label=f"{p['steps']} steps ({p['steps'] * r['train']['batch_size']:,} datasets)"
                        if p["steps"] else "loaded model")
        ax.axhline(TARGET_GAP, color="k", ls="--", lw=1, label="0.05 nats")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("training-set size n")
        ax.set_ylabel("PFN NLL − exact GP NLL (nats)")
        ax.set_title(f"d = {r['d']}: emsize {r['model']['emsize']}, {r['model']['nlayers']} layers")
        ax.legend(fontsize=7)
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[1, 5], help="input dimensions to run")
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=60,
                   help="points per training dataset (n up to seq_len - 1)")
    p.add_argument("--emsize", type=int, default=128)
    p.add_argument("--nlayers", type=int, default=4)
    p.add_argument("--nhead", type=int, default=4)
    p.add_argument("--buckets", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=None, help="default: half the first stage")
    p.add_argument("--checkpoints", type=float, nargs="*", default=[0.125, 0.25, 0.5],
                   help="stage ends as fractions of --steps (the gap is measured after each)")
    p.add_argument("--lengthscale", type=float, default=0.6)
    p.add_argument("--outputscale", type=float, default=1.0)
    p.add_argument("--noise-std", type=float, default=0.01, help="paper: noise variance 1e-4")
    p.add_argument("--ns", type=int, nargs="+", default=list(NS))
    p.add_argument("--datasets", type=int, default=1000, help="fresh datasets per n (final evaluation)")
    p.add_argument("--checkpoint-datasets", type=int, default=250, help="datasets per n at each stage")
    p.add_argument("--queries", type=int, default=10, help="query points per dataset")
    p.add_argument("--border-datasets", type=int, default=2000)
    p.add_argument("--eval-chunk", type=int, default=250)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load", action="store_true",
                   help="evaluate <model-dir>/pfn_mimicry_d<d>.pfn (or the model in .ckpt), no training")
    p.add_argument("--model-dir", default=str(Path("/tmp") / "pfn_mimicry"),
                   help="where models and training checkpoints are written / loaded")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder of the JSON and .md")
    p.add_argument("--figure", default=None, help="default: docs/img/pfn_mimicry.png (--quick: <out>/...)")
    p.add_argument("--report", action="store_true",
                   help="only merge <out>/pfn_mimicry_d*.json into the report")
    p.add_argument("--continue-training", action="store_true",
                   help="resume from <model-dir>'s checkpoint (a run with the same settings and --warmup) "
                        "to a larger --steps; the earlier stages come from <out>'s JSON")
    p.add_argument("--progress", action="store_true", help="tqdm bar while training")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny model, few datasets)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.seq_len, args.emsize, args.nlayers = 8, 8, 25, 16, 1
        args.buckets, args.datasets, args.checkpoint_datasets, args.queries = 20, 20, 10, 3
        args.border_datasets, args.ns, args.checkpoints = 50, [0, 5, 20], [0.5]
    if args.figure is None:
        args.figure = str(Path(args.out) / "pfn_mimicry.png") if args.quick else str(
            ROOT / "docs" / "img" / "pfn_mimicry.png")
    if any(n + 1 > args.seq_len for n in args.ns) and not args.load:
        p.error(f"--seq-len {args.seq_len} must exceed every n in --ns {args.ns}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("--device cuda: CUDA is not available, skipped")
            return
        for d in args.dims:
            t0 = time.perf_counter()
            result = run_dimension(d, args, device)
            result["wall_seconds"] = round(time.perf_counter() - t0, 1)
            (out / f"pfn_mimicry_d{d}.json").write_text(json.dumps(result, indent=1))
    print(report(out, Path(args.figure)))


if __name__ == "__main__":
    main()
