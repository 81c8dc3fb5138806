"""Rate experiment: how fast the MLE of a Gaussian mixture of experts converges, per gate.

    python benchmarks/moe_rates.py                 # the table in benchmarks/results/moe_rates.md + figure
    python benchmarks/moe_rates.py --quick         # a minutes-long run on a small grid
    python benchmarks/moe_rates.py --only top --save topk.json     # the top-K rows (top-K EM) alone
    python benchmarks/moe_rates.py --load smooth.json topk.json --figure f.png   # merge runs, redraw

Model (d = 1): p(y | x) = Σ_k π_k(x) N(y; a_k x + b_k, σ_k²), x ~ N(0, 1), with the gates of
:mod:`bayesact.models.moe.gates`. For each gate configuration and n on a log grid, ``--reps`` data sets
are simulated from θ* and fitted by maximum likelihood: every (replicate, restart) problem is one row
of a batch (``torch.func.vmap``), optimised jointly by L-BFGS (strong Wolfe) on Σ of the per-problem
mean negative log-likelihoods, then each problem alone by L-BFGS to a small gradient; the best of
``--restarts`` starts is kept per replicate: all at θ* + N(0, 0.3²) noise (``--starts local``, the
local MLE the papers' simulations report), or one there and the others random (``--starts mixed``).
``cross_check`` compares the fitted log-likelihood with ``GaussianMoE.fit`` on the same data. The top-K
configurations are fitted instead by top-K EM (the default ``--fitter auto``; ``--fitter lbfgs`` fits them
by L-BFGS too): each (replicate, restart) by ``GaussianMoE.fit(method="em", init=...)`` from the same
start, tolerance 1e-10 in the mean log-likelihood, whose log-likelihood never decreases across the jumps
where L-BFGS stalls. The table names each row's fitter, and so does the figure's legend. Every model's
data sets depend only on its position in ``CONFIGS``, so ``--only`` reproduces the full run's data;
``--save`` writes every replicate's D1 and H as JSON and ``--load`` merges such files (e.g. the smooth
rows and the top-K rows run separately) into one table and figure without fitting. ``CONTROLS`` holds a
misspecified fit (a softmax gate on top-K data) that the CI test uses as a negative control.

Reported per fit:

- ``D1``: a first-order Voronoi loss. Each fitted expert i goes to the cell A_j of the nearest true
  expert j in (a, b, σ²); with gate masses m_i = E_x π̂_i(x) (Monte Carlo on a fixed x sample),
  D1 = Σ_j |Σ_{i∈A_j} m̂_i − m*_j| + Σ_j Σ_{i∈A_j} m̂_i (‖Δβ_i‖ + |Δβ_0i| + |Δa_i| + |Δb_i| + |Δσ_i²| [+ |Δτ|]).
  Translation-invariant gates are first translated (β̂ and β̂_0 minus their m̂-weighted mean
  difference to the matched truth, so that an unused expert of an over-specified fit does not shift
  the others); for the temperature gate two versions are reported: on the identified ratio (β/τ,
  β_0/τ) and on the raw (β, β_0, τ) (which the scale symmetry leaves unidentified). First powers are
  used in every cell (the papers use cell-size-dependent powers r̄ for cells with > 1 atom, so the
  over-specified D1 measures the raw atom distances, slower than the papers' D).
- ``H``: the conditional Hellinger distance sqrt(E_x H²(p̂(·|x), p*(·|x))), E_x by a fixed Monte Carlo
  sample of 512 x, the y-integral by the trapezoid rule on 400 points.

Slopes: least squares of log10(median over replicates) on log10(n); 95% intervals from 2000
bootstrap resamples of the replicates within each n.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, vmap

from bayesact.models.moe.gates import Gate, make_gate

ROOT = Path(__file__).resolve().parents[1]
DTYPE = torch.float64
Results = dict[str, dict[int, dict[str, np.ndarray]]]  # label -> n -> {"d1", "h"} per replicate


@dataclass(frozen=True)
class Config:
    """One gate configuration: the true model (K_true experts) and the fitted one (K_fit experts)."""

    label: str
    gate: str
    options: dict[str, Any]
    k_true: int
    k_fit: int
    raw_temperature_loss: bool = False  # the temperature gate's second row: D1 on (β, β_0, τ)
    expected: str = ""
    true_options: dict[str, Any] | None = None  # the true gate's options when they differ (top-k's k)
    true_gate: str | None = None  # the true gate when it differs from the fitted one (a misspecified fit)


TRUTH_2 = {"weight": [[2.0], [0.0]], "bias": [0.5, 0.0], "a": [1.0, -1.0], "b": [0.0, 1.0],
           "sigma": [0.3, 0.4]}
TRUTH_3 = {"weight": [[2.0], [-1.0], [0.0]], "bias": [0.5, -0.3, 0.0], "a": [1.0, -1.0, 0.0],
           "b": [0.0, 1.0, -1.0], "sigma": [0.3, 0.4, 0.5]}
TAU = 0.8

CONFIGS = [
    Config("softmax", "softmax", {}, 2, 2, expected="D1 ≈ −½, H ≈ −½"),
    Config("temperature (β/τ)", "temperature", {"temperature": TAU}, 2, 2,
           expected="identified ratio: ≈ −½"),
    Config("temperature (raw β, β_0, τ)", "temperature", {"temperature": TAU}, 2, 2,
           raw_temperature_loss=True,
           expected="flattens toward 0 (paper: ≥ 1/log n)"),
    Config("activation tanh", "activation", {"activation": "tanh", "temperature": TAU}, 2, 2,
           expected="between −½ and −¼"),
    Config("activation sigmoid", "activation", {"activation": "sigmoid", "temperature": TAU}, 2, 2,
           expected="between −½ and −¼"),
    Config("activation GELU", "activation", {"activation": "gelu", "temperature": TAU}, 2, 2,
           expected="between −½ and −¼"),
    Config("top-2 of 3, exact", "topk", {"k": 2}, 3, 3, expected="parametric ≈ −½"),
    Config("top-2, 3 true / 4 fitted", "topk", {"k": 2}, 3, 4,
           expected="D1 flatter than −½; H parametric only if k exceeds the split cells' size"),
]


#: negative controls (not rows of the benchmark's table): a fitted gate that cannot represent the truth, so
#: the MLE converges to the KL projection and H stalls at the approximation error instead of falling like
#: n^(-1/2); ``tests/models/moe/test_rates.py`` uses it to check that the orderings it asserts can fail
CONTROLS = [
    Config("softmax fitted to top-2-of-3 data (misspecified)", "softmax", {}, 3, 3,
           expected="H stalls at the approximation error", true_options={"k": 2}, true_gate="topk"),
]


def machine() -> str:
    from kernels import machine as cpu_machine  # benchmarks/kernels.py (this script's folder)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu_machine()}, load {load:.1f} at the end"


# ---------------------------------------------------------------------------------------- the model
class Problem:
    """The batched log-likelihood of one gate configuration: θ (P,) <-> gate parameters and experts."""

    def __init__(self, gate: Gate, num_experts: int) -> None:
        self.gate = gate
        self.k = num_experts
        self.gate_layout = [(name, p.shape) for name, p in gate.named_parameters()]
        per_expert = torch.Size([num_experts])
        self.layout = [*self.gate_layout, ("a", per_expert), ("b", per_expert), ("log_sigma", per_expert)]
        self.size = sum(math.prod(s) for _, s in self.layout)

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        out, i = {}, 0
        for name, shape in self.layout:
            n = math.prod(shape)
            out[name] = theta[i : i + n].reshape(shape)
            i += n
        return out

    def flatten(self, parts: dict[str, Tensor]) -> Tensor:
        return torch.cat([parts[name].reshape(-1).to(DTYPE) for name, _ in self.layout])

    def gate_probs(self, theta: Tensor, x: Tensor) -> Tensor:
        parts = self.unflatten(theta)
        return functional_call(self.gate, {k: parts[k] for k, _ in self.gate_layout}, (x,))

    def log_components(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """log π_k(x) + log N(y; a_k x + b_k, σ_k²), shape (n, K)."""
        parts = self.unflatten(theta)
        log_pi = _LogProb.call(self.gate, {k: parts[k] for k, _ in self.gate_layout}, x)
        sigma = parts["log_sigma"].exp()
        mean = parts["a"] * x + parts["b"]
        log_n = -0.5 * ((y[:, None] - mean) / sigma) ** 2 - parts["log_sigma"] - 0.5 * math.log(2 * math.pi)
        return log_pi + log_n

    def nll(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return -torch.logsumexp(self.log_components(theta, x, y), dim=-1).mean()


class _LogProb(torch.nn.Module):
    """Calls ``gate.log_prob`` under ``functional_call`` (which only calls ``forward``)."""

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        return self.gate.log_prob(x)

    @staticmethod
    def call(gate: Gate, params: dict[str, Tensor], x: Tensor) -> Tensor:
        wrapper = _LogProb(gate)
        return functional_call(wrapper, {f"gate.{k}": v for k, v in params.items()}, (x,))


def truth_theta(problem: Problem, cfg: Config) -> Tensor:
    """θ* for the configuration's true model (the K_true-expert truth; the gate's own map)."""
    t = TRUTH_2 if cfg.k_true == 2 else TRUTH_3
    parts: dict[str, Tensor] = {
        "weight": torch.tensor(t["weight"], dtype=DTYPE), "bias": torch.tensor(t["bias"], dtype=DTYPE),
        "a": torch.tensor(t["a"], dtype=DTYPE), "b": torch.tensor(t["b"], dtype=DTYPE),
        "log_sigma": torch.tensor(t["sigma"], dtype=DTYPE).log(),
    }
    for name, shape in problem.gate_layout:
        if name == "raw_temperature":
            parts[name] = torch.tensor(TAU, dtype=DTYPE).expm1().log().reshape(shape)
    return problem.flatten(parts)


def simulate(problem: Problem, theta: Tensor, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    x = torch.randn(n, 1, generator=gen, dtype=DTYPE)
    with torch.no_grad():
        pi = problem.gate_probs(theta, x)
    z = torch.multinomial(pi, 1, generator=gen).squeeze(-1)
    parts = problem.unflatten(theta)
    y = parts["a"][z] * x[:, 0] + parts["b"][z] + parts["log_sigma"].exp()[z] * torch.randn(
        n, generator=gen, dtype=DTYPE)
    return x, y


# ---------------------------------------------------------------------------------------- fitting
def initial_thetas(problem: Problem, truth_fit: Tensor, y: Tensor, restarts: int,
                   gen: torch.Generator, starts_kind: str = "local") -> Tensor:
    """(restarts, P): θ* + N(0, 0.3²) noise ("local": every start), or one such start and random starts
    scaled to the data ("mixed")."""
    local = 1 if starts_kind == "mixed" else restarts
    starts = [truth_fit + 0.3 * torch.randn(truth_fit.shape, generator=gen, dtype=DTYPE)
              for _ in range(local)]
    for _ in range(restarts - local):
        parts = problem.unflatten(torch.randn(problem.size, generator=gen, dtype=DTYPE))
        parts["b"] = y.mean() + y.std() * parts["b"]
        parts["log_sigma"] = torch.full((problem.k,), float(y.std().log()), dtype=DTYPE)
        if "raw_temperature" in parts:
            parts["raw_temperature"] = torch.zeros_like(parts["raw_temperature"]) + 0.5413  # τ = 1
        starts.append(problem.flatten(parts))
    return torch.stack(starts)


def fit_batch(problem: Problem, theta0: Tensor, xs: Tensor, ys: Tensor, *,
              lbfgs_iter: int) -> tuple[Tensor, Tensor]:
    """Joint L-BFGS (strong Wolfe) on Σ_rows mean NLL: the cheap first phase for all restarts. (θ, NLL)."""
    batched_nll = vmap(problem.nll)
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=lbfgs_iter, history_size=30,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = batched_nll(theta, xs, ys)
        total = torch.where(torch.isfinite(loss), loss, torch.full_like(loss, 1e6)).sum()
        total.backward()
        return total

    opt.step(closure)
    theta = theta.detach()
    return theta, batched_nll(theta, xs, ys).detach()


def fit_em(problem: Problem, cfg: Config, theta0: Tensor, x: Tensor, y: Tensor, *,
           max_iter: int) -> tuple[Tensor, float, float]:
    """Top-K EM (``GaussianMoE.fit(method="em")``, the generalised EM of
    ``bayesact.models.moe._topk_em``) from θ0 on one problem, instead of L-BFGS.

    Returns (θ̂, NLL, final gradient norm; the gradient within the top-k piece, as ``polish`` reports it).
    """
    from bayesact.models.moe import GaussianMoE

    moe = GaussianMoE(1, problem.k, gate=cfg.gate, gate_kwargs=cfg.options, pin_gate=False).double()
    parts = problem.unflatten(theta0)
    init = {"gate.weight": parts["weight"], "gate.bias": parts["bias"], "expert.weight": parts["a"][:, None],
            "expert.bias": parts["b"], "noise_std": parts["log_sigma"].exp()}
    moe.fit(x, y, num_restarts=1, method="em", init=init, max_iter=max_iter, tol=1e-10, seed=0)
    fitted = moe.point_values()
    theta = problem.flatten({"weight": fitted["gate.weight"], "bias": fitted["gate.bias"],
                             "a": fitted["expert.weight"][:, 0], "b": fitted["expert.bias"],
                             "log_sigma": fitted["noise_std"].log()}).requires_grad_(True)
    loss = problem.nll(theta, x, y)
    (grad,) = torch.autograd.grad(loss, theta)
    return theta.detach(), float(loss.detach()), float(grad.norm())


def polish(problem: Problem, theta0: Tensor, x: Tensor, y: Tensor, *,
           max_iter: int) -> tuple[Tensor, float, float]:
    """L-BFGS on one problem to a small gradient (the joint phase's shared line search converges slowly).

    Returns (θ̂, NLL, final gradient norm).
    """
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, history_size=50,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-16)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = problem.nll(theta, x, y)
        loss.backward()
        return loss

    opt.step(closure)
    loss = problem.nll(theta, x, y)
    (grad,) = torch.autograd.grad(loss, theta)
    return theta.detach(), float(loss.detach()), float(grad.norm())


# ---------------------------------------------------------------------------------------- losses
def _gate_atoms(problem: Problem, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(weight (K, d), bias (K,), τ or nan) of one θ."""
    parts = problem.unflatten(theta)
    tau = (torch.nn.functional.softplus(parts["raw_temperature"]).reshape(())
           if "raw_temperature" in parts else torch.tensor(math.nan, dtype=DTYPE))
    return parts["weight"], parts["bias"], tau


def d1_loss(cfg: Config, problem_fit: Problem, theta_fit: Tensor, problem_true: Problem, theta_true: Tensor,
            x_mc: Tensor) -> float:
    """The first-order Voronoi loss D1 (module docstring)."""
    pf, pt = problem_fit.unflatten(theta_fit), problem_true.unflatten(theta_true)
    atoms_f = torch.stack([pf["a"], pf["b"], pf["log_sigma"].exp() ** 2], -1)
    atoms_t = torch.stack([pt["a"], pt["b"], pt["log_sigma"].exp() ** 2], -1)
    cell = torch.cdist(atoms_f, atoms_t).argmin(dim=1)
    mass_f = problem_fit.gate_probs(theta_fit, x_mc).mean(0)
    mass_t = problem_true.gate_probs(theta_true, x_mc).mean(0)
    wf, bf, tf = _gate_atoms(problem_fit, theta_fit)
    wt, bt, tt = _gate_atoms(problem_true, theta_true)
    invariant = problem_fit.gate.translation_invariant
    if invariant and not cfg.raw_temperature_loss and not math.isnan(float(tf)):
        wf, bf, wt, bt = wf / tf, bf / tf, wt / tt, bt / tt  # the identified ratio
    if invariant:  # the common shift, weighted by the fitted masses (an unused expert must not move it)
        weights = (mass_f / mass_f.sum())[:, None]
        wf = wf - (weights * (wf - wt[cell])).sum(0)
        bf = bf - (weights[:, 0] * (bf - bt[cell])).sum(0)
    loss = torch.zeros((), dtype=DTYPE)
    for j in range(atoms_t.shape[0]):
        members = (cell == j).nonzero().flatten()
        loss = loss + (mass_f[members].sum() - mass_t[j]).abs()
        for i in members.tolist():
            dist = ((wf[i] - wt[j]).norm() + (bf[i] - bt[j]).abs() + (atoms_f[i] - atoms_t[j]).abs().sum())
            if (not invariant or cfg.raw_temperature_loss) and not math.isnan(float(tt)):
                dist = dist + (tf - tt).abs()  # τ is a parameter of its own
            loss = loss + mass_f[i] * dist
    return float(loss)


def hellinger(problem_fit: Problem, theta_fit: Tensor, problem_true: Problem, theta_true: Tensor,
              x_mc: Tensor, y_grid: Tensor) -> float:
    """sqrt(E_x H²(p̂(·|x), p*(·|x))): trapezoid rule in y on ``y_grid``, Monte Carlo in x."""
    xs = x_mc.repeat_interleave(len(y_grid), 0)
    ys = y_grid.repeat(len(x_mc))
    log_f = torch.logsumexp(problem_fit.log_components(theta_fit, xs, ys), -1).reshape(len(x_mc), -1)
    log_t = torch.logsumexp(problem_true.log_components(theta_true, xs, ys), -1).reshape(len(x_mc), -1)
    bc = torch.trapezoid(torch.exp(0.5 * (log_f + log_t)), y_grid, dim=-1)
    return float(torch.sqrt(torch.clamp(1 - bc, min=0).mean()))


# ---------------------------------------------------------------------------------------- experiment
FITTERS = ("auto", "lbfgs", "em")


def fitter_for(cfg: Config, fitter: str) -> str:
    """The fitter a configuration runs with: ``"auto"`` is top-K EM for top-K gates (their likelihood jumps
    where the top-k set changes, where L-BFGS stalls) and L-BFGS for the smooth gates."""
    if fitter not in FITTERS:
        raise ValueError(f"'fitter' must be one of {FITTERS}, got {fitter!r}")
    if fitter == "auto":
        return "em" if cfg.gate == "topk" else "lbfgs"
    return fitter


def run_config(group: list[Config], grid: list[int], reps: int, restarts: int, lbfgs_iter: int,
               polish_iter: int, seed: int, grad_norms: list[float], starts_kind: str = "local",
               fitter: str = "auto") -> Results:
    """Fit one model on the grid and score the fits with each configuration of ``group`` (same model).

    ``fitter="lbfgs"``: the joint L-BFGS phase, then L-BFGS per problem (``polish``); ``"em"`` (top-K only):
    top-K EM per problem from the same starts (``fit_em``, up to ``polish_iter`` iterations); ``"auto"``:
    ``"em"`` for a top-K model, ``"lbfgs"`` for the others (:func:`fitter_for`).
    """
    cfg = group[0]
    if fitter == "em" and cfg.gate != "topk":
        raise ValueError(f"'fitter' 'em' is for the top-K configurations only, got {cfg.label!r}")
    fitter = fitter_for(cfg, fitter)
    torch.manual_seed(seed)
    true_options = cfg.options if cfg.true_options is None else cfg.true_options
    gate_true = make_gate(cfg.true_gate or cfg.gate, 1, cfg.k_true, true_options).double()
    gate_fit = make_gate(cfg.gate, 1, cfg.k_fit, cfg.options).double()
    pt, pf = Problem(gate_true, cfg.k_true), Problem(gate_fit, cfg.k_fit)
    theta_true = truth_theta(pt, cfg)
    # the fitted model's start near θ*; over-specified top-K: the truth is on the boundary (an extra expert
    # never in the top k), approximated by a copy of the last expert with gate bias lowered by 4
    if cfg.k_fit == cfg.k_true:
        truth_fit = theta_true
    else:
        parts = pt.unflatten(theta_true)
        extra = {k: torch.cat([v, v[-1:]]) for k, v in parts.items() if k != "raw_temperature"}
        extra["bias"] = extra["bias"].clone()
        extra["bias"][-1] -= 4.0
        truth_fit = pf.flatten({**parts, **extra})
    gen = torch.Generator().manual_seed(seed)
    x_mc = torch.randn(512, 1, generator=gen, dtype=DTYPE)
    y_grid = torch.linspace(-7.0, 8.0, 400, dtype=DTYPE)
    out: Results = {c.label: {} for c in group}
    for n in grid:
        start = time.perf_counter()
        data = [simulate(pt, theta_true, n, gen) for _ in range(reps)]
        xs = torch.stack([d[0] for d in data]).repeat_interleave(restarts, 0)
        ys = torch.stack([d[1] for d in data]).repeat_interleave(restarts, 0)
        theta0 = torch.cat([initial_thetas(pf, truth_fit, d[1], restarts, gen, starts_kind) for d in data])
        if fitter == "em":
            polished = [fit_em(pf, cfg, theta0[i], xs[i], ys[i], max_iter=polish_iter)
                        for i in range(reps * restarts)]
        else:
            theta, nll = fit_batch(pf, theta0, xs, ys, lbfgs_iter=lbfgs_iter)
            del nll  # the best restart after the joint phase is not always the best after polishing
            polished = [polish(pf, theta[i], xs[i], ys[i], max_iter=polish_iter)
                        for i in range(reps * restarts)]
        final = torch.tensor([p[1] if math.isfinite(p[1]) else math.inf for p in polished])
        final = final.reshape(reps, restarts)
        choice = final.argmin(1)
        best = torch.stack([polished[r * restarts + int(choice[r])][0] for r in range(reps)])
        grad_norms.append(max(polished[r * restarts + int(choice[r])][2] for r in range(reps)))
        h = np.array([hellinger(pf, best[r], pt, theta_true, x_mc, y_grid) for r in range(reps)])
        for c in group:
            d1 = np.array([d1_loss(c, pf, best[r], pt, theta_true, x_mc) for r in range(reps)])
            out[c.label][n] = {"d1": d1, "h": h}
            print(f"  {c.label:32s} n={n:6d}  median D1 {np.median(d1):.4g}  median H {np.median(h):.4g}  "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)
    return out


def cross_check(labels: tuple[str, ...] = ("softmax", "activation tanh"), n: int = 1000,
                seed: int = 0) -> list[str]:
    """This script's fitter vs ``GaussianMoE.fit`` (3 restarts) on the same data: mean log-likelihoods."""
    from bayesact.models.moe import GaussianMoE

    lines = ["| gate | n | this script: mean log-lik | GaussianMoE.fit: mean log-lik |",
             "|---|---|---|---|"]
    for cfg in (c for c in CONFIGS if c.label in labels):
        gate = make_gate(cfg.gate, 1, cfg.k_true, cfg.options).double()
        problem = Problem(gate, cfg.k_true)
        theta_true = truth_theta(problem, cfg)
        gen = torch.Generator().manual_seed(seed)
        x, y = simulate(problem, theta_true, n, gen)
        theta0 = initial_thetas(problem, theta_true, y, 3, gen)
        theta, _ = fit_batch(problem, theta0, x.expand(3, -1, -1), y.expand(3, -1), lbfgs_iter=150)
        ours = min(polish(problem, theta[i], x, y, max_iter=300)[1] for i in range(3))
        moe = GaussianMoE(1, cfg.k_true, gate=cfg.gate, gate_kwargs=cfg.options).double()
        theirs = moe.fit(x, y, num_restarts=3, seed=seed).log_likelihood
        lines.append(f"| {cfg.label} | {n} | {-ours:.6f} | {theirs:.6f} |")
    return lines


def slope(grid: list[int], medians: list[float]) -> float:
    return float(np.polyfit(np.log10(grid), np.log10(medians), 1)[0])


def slope_with_interval(grid: list[int], values: dict[int, np.ndarray], boots: int,
                        rng: np.random.Generator) -> tuple[float, float, float]:
    est = slope(grid, [float(np.median(values[n])) for n in grid])
    draws = []
    for _ in range(boots):
        meds = [float(np.median(rng.choice(values[n], size=len(values[n]), replace=True))) for n in grid]
        draws.append(slope(grid, meds))
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return est, float(lo), float(hi)


def _model_key(c: Config) -> tuple[Any, ...]:
    return (c.gate, repr(c.options), repr(c.true_options), c.k_true, c.k_fit, c.true_gate)


#: the seed offset of each model: its index among the models of CONFIGS (so a subset run with ``--only``
#: simulates the same data sets as the full run)
MODEL_INDEX = {key: i for i, key in enumerate(dict.fromkeys(_model_key(c) for c in CONFIGS))}


def run(configs: list[Config], grid: list[int], reps: int, restarts: int, lbfgs_iter: int, polish_iter: int,
        boots: int, seed: int, starts_kind: str = "local", fitter: str = "auto",
        ) -> tuple[Results, dict[str, dict[str, tuple]], dict[str, float]]:
    """(results[label][n] = {"d1", "h"} per replicate, slopes[label][key] = (slope, lo, hi),
    the largest final |∇ mean NLL| per label)."""
    results, slopes = {}, {}
    grad_norms: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    groups: dict[tuple[Any, ...], list[Config]] = {}  # configurations of one model share its fits
    for c in configs:
        groups.setdefault(_model_key(c), []).append(c)
    for key, group in groups.items():
        norms: list[float] = []
        offset = MODEL_INDEX.get(key, len(MODEL_INDEX))
        results.update(run_config(group, grid, reps, restarts, lbfgs_iter, polish_iter, seed + offset, norms,
                                  starts_kind, fitter))
        for cfg in group:
            grad_norms[cfg.label] = max(norms)
    for cfg in configs:
        slopes[cfg.label] = {
            key: slope_with_interval(grid, {n: results[cfg.label][n][key] for n in grid}, boots, rng)
            for key in ("d1", "h")
        }
    return results, slopes, grad_norms


#: how the table and the figure name each fitter
FITTER_NAMES = {"lbfgs": "L-BFGS", "em": "top-K EM"}


def figure(configs: list[Config], grid: list[int], results: Results,
           path: Path, fitters: dict[str, str] | None = None) -> None:
    """Median and IQR of D1 and H against n per configuration (each label followed by its fitter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in ((axes[0], "d1", "Voronoi loss D1 (median, IQR)"),
                           (axes[1], "h", "conditional Hellinger (median, IQR)")):
        for cfg in configs:
            vals = results[cfg.label]
            med = [np.median(vals[n][key]) for n in grid]
            lo = [np.percentile(vals[n][key], 25) for n in grid]
            hi = [np.percentile(vals[n][key], 75) for n in grid]
            label = cfg.label + (f" [{FITTER_NAMES[fitters[cfg.label]]}]" if fitters else "")
            (line,) = ax.loglog(grid, med, "o-", label=label, ms=3)
            ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.12)
        ref = np.array(grid, dtype=float)
        ax.loglog(ref, 0.5 * np.median(results[configs[0].label][grid[0]][key]) * (ref / ref[0]) ** -0.5,
                  "k--", lw=1, label="n^-1/2")
        ax.set_xlabel("n")
        ax.set_title(title)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def settings_line(grid: list[int], args: argparse.Namespace, elapsed: float,
                  configs: list[Config]) -> str:
    """One sentence: the run's grid, replicates, restarts, fitters, time and machine."""
    used = {fitter_for(c, args.fitter) for c in configs}
    fitting = []
    if "lbfgs" in used:
        fitting.append(f"L-BFGS rows: {args.lbfgs_iter} joint L-BFGS iterations, then up to {args.polish} "
                       "per fit")
    if "em" in used:
        fitting.append("top-K EM rows: GaussianMoE.fit(method='em') from the same starts, up to "
                       f"{args.polish} iterations per fit")
    return (f"Grid n = {grid}, {args.reps} replicates, {args.restarts} restarts ({args.starts} starts); "
            f"{'; '.join(fitting)} (max final |∇ mean NLL| per gate in the table: top-K likelihoods jump "
            f"where the top-k set changes); {args.boots} bootstrap resamples; {elapsed:.0f} s on "
            f"{machine()}.")


def markdown(configs: list[Config], grid: list[int], slopes: dict[str, dict[str, tuple]],
             results: Results, grad_norm: dict[str, float], fitters: dict[str, str],
             settings: list[str]) -> str:
    """The slope table (with each row's fitter), the medians and the ``settings`` lines."""
    fmt: Callable[[tuple], str] = lambda s: f"{s[0]:+.2f} [{s[1]:+.2f}, {s[2]:+.2f}]"  # noqa: E731
    lines = [
        "| gate | K true / fitted | fitter | D1 slope [95% CI] | H slope [95% CI] | max final \\|∇\\| "
        "| expected (papers) |",
        "|---|---|---|---|---|---|---|",
    ]
    for cfg in configs:
        s = slopes[cfg.label]
        lines.append(f"| {cfg.label} | {cfg.k_true} / {cfg.k_fit} | {FITTER_NAMES[fitters[cfg.label]]} | "
                     f"{fmt(s['d1'])} | {fmt(s['h'])} | {grad_norm[cfg.label]:.0e} | {cfg.expected} |")
    lines += ["", "Medians over replicates (D1 / H):", "",
              "| gate | " + " | ".join(f"n = {n}" for n in grid) + " |",
              "|---|" + "---|" * len(grid)]
    for cfg in configs:
        cells = [f"{np.median(results[cfg.label][n]['d1']):.3g} / {np.median(results[cfg.label][n]['h']):.3g}"
                 for n in grid]
        lines.append(f"| {cfg.label} | " + " | ".join(cells) + " |")
    lines += ["", *settings]
    return "\n".join(lines)


def save_results(path: Path, configs: list[Config], grid: list[int], results: Results,
                 grad_norm: dict[str, float], fitters: dict[str, str], settings: list[str]) -> None:
    """Every replicate's D1 and H per configuration and n, as JSON (``--load`` redraws from it)."""
    data = {"grid": grid, "settings": settings, "rows": {
        c.label: {"fitter": fitters[c.label], "grad_norm": grad_norm[c.label],
                  "values": {str(n): {k: results[c.label][n][k].tolist() for k in ("d1", "h")} for n in grid}}
        for c in configs}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_results(paths: list[Path]) -> tuple[list[Config], list[int], Results, dict[str, float],
                                              dict[str, str], list[str]]:
    """Merge saved runs (a later file's row replaces an earlier one of the same label); rows in the order
    of ``CONFIGS``. The grids must agree."""
    grid: list[int] | None = None
    results: Results = {}
    grad_norm: dict[str, float] = {}
    fitters: dict[str, str] = {}
    settings: list[str] = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if grid is not None and data["grid"] != grid:
            raise ValueError(f"'--load': {path} has grid {data['grid']}, the earlier files {grid}")
        grid = data["grid"]
        names = ", ".join(data["rows"])
        settings += [f"{line} (rows: {names})" for line in data["settings"]]
        for label, row in data["rows"].items():
            results[label] = {int(n): {k: np.asarray(v[k]) for k in ("d1", "h")}
                              for n, v in row["values"].items()}
            grad_norm[label] = row["grad_norm"]
            fitters[label] = row["fitter"]
    if grid is None:
        raise ValueError("'--load' needs at least one file")
    configs = [c for c in CONFIGS + CONTROLS if c.label in results]
    return configs, grid, results, grad_norm, fitters, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid, few replicates (seconds)")
    parser.add_argument("--grid", type=float, nargs="+", default=[3.0, 3.5, 4.0, 4.5],
                        help="log10 n values")
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--lbfgs-iter", dest="lbfgs_iter", type=int, default=80)
    parser.add_argument("--polish", type=int, default=300,
                        help="L-BFGS iterations per best fit (EM iterations per fit for EM rows)")
    parser.add_argument("--boots", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--starts", choices=("local", "mixed"), default="local",
                        help="restarts all near θ* (local MLE, as in the papers' simulations) or one near θ* "
                        "and the others random (the global MLE over them)")
    parser.add_argument("--fitter", choices=FITTERS, default="auto",
                        help="auto: top-K EM for the top-K rows, L-BFGS for the others; lbfgs: joint L-BFGS "
                        "then L-BFGS per fit for every row; em: top-K EM (top-K configurations only, with "
                        "--only top)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--only", nargs="*", default=None, help="labels (prefixes) of configurations to run")
    parser.add_argument("--out", type=Path, default=None, help="markdown table output (default: print only)")
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None,
                        help="JSON of every replicate's D1 and H (to redraw or merge runs with --load)")
    parser.add_argument("--load", type=Path, nargs="+", default=None,
                        help="no fitting: merge saved runs (e.g. the smooth rows and the top-K EM rows run "
                        "separately) and write the table and figure from them")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    if args.load is not None:
        configs, grid, results, grad_norm, fitters, settings = load_results(args.load)
        slopes = {c.label: {key: slope_with_interval(grid, {n: results[c.label][n][key] for n in grid},
                                                     args.boots, rng) for key in ("d1", "h")}
                  for c in configs}
        settings.append(f"Merged by --load from {', '.join(p.name for p in args.load)}; intervals from "
                        f"{args.boots} bootstrap resamples (seed {args.seed}).")
        text = markdown(configs, grid, slopes, results, grad_norm, fitters, settings)
    else:
        if args.quick:
            args.grid, args.reps, args.restarts, args.lbfgs_iter, args.polish, args.boots = (
                [2.5, 3.0, 3.5], 6, 2, 60, 150, 200)
        grid = sorted({round(10**g) for g in args.grid})
        configs = [c for c in CONFIGS if args.only is None or any(c.label.startswith(o) for o in args.only)]
        torch.set_num_threads(args.threads)  # 1: small tensors on a shared machine (30x faster than 2 here)
        start = time.perf_counter()
        results, slopes, grad_norm = run(configs, grid, args.reps, args.restarts, args.lbfgs_iter,
                                         args.polish, args.boots, args.seed, args.starts, args.fitter)
        fitters = {c.label: fitter_for(c, args.fitter) for c in configs}
        settings = [settings_line(grid, args, time.perf_counter() - start, configs)]
        if args.save is not None:
            save_results(args.save, configs, grid, results, grad_norm, fitters, settings)
        text = markdown(configs, grid, slopes, results, grad_norm, fitters, settings)
        if not args.quick and args.only is None:
            text += ("\n\nCross-check of the fitter (same data, best of 3 restarts each):\n\n"
                     + "\n".join(cross_check()))
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    if args.figure is not None:
        figure(configs, grid, results, args.figure, fitters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
