"""Maximum-likelihood fitting of a :class:`~bayesact.models.moe.GaussianMoE`: direct L-BFGS or EM, with
restarts."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyro.distributions as dist
import torch
from torch import Tensor

from ._gating import random_start
from ._parts import LinearExperts, MoEFit
from ._topk_em import topk_gate_step
from .gates import TopKGate

# ``moe`` below is a GaussianMoE (typed Any: the model module imports this one)
GaussianMoE = Any

__all__ = ["fit_moe"]

#: errors that mark a numerical failure at some parameter values (a distribution's argument check, e.g. a
#: scale σ = exp(u) underflowing to 0; a gate with no mass on any expert; a singular EM solve): a line-search
#: trial that raises one is a worse point, a restart that raises one has failed
NUMERICAL_ERRORS: tuple[type[Exception], ...] = (ValueError, FloatingPointError, torch.linalg.LinAlgError)


def _lbfgs(params: list[Tensor], objective: Callable[[], Tensor], max_iter: int, tol: float) -> int:
    """Minimise ``objective`` over the leaf tensors ``params`` with L-BFGS (strong Wolfe); the iterations
    run.

    A trial point where ``objective`` is not finite or raises one of :data:`NUMERICAL_ERRORS` is returned to
    the line search as loss 10³⁰ with zero gradient, so it backs off (at the starting point L-BFGS then stops
    at once, and the caller sees the error when it evaluates the result).
    """
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=tol,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        try:
            loss = objective()
        except NUMERICAL_ERRORS:
            return params[0].new_full((), 1e30).requires_grad_()
        if not torch.isfinite(loss):  # a step into a degenerate region: tell the line search it is worse
            return torch.full_like(loss, 1e30).requires_grad_()
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state[params[0]]
    return int(state.get("n_iter", 0))


class _Unconstrained:
    """Free site values held as unconstrained leaf tensors (u = T⁻¹(value), T the site prior's bijection)."""

    def __init__(self, moe: GaussianMoE, values: dict[str, Tensor]):
        self.transforms = {name: moe.unconstrained_transform(name) for name in values}
        self.u = {
            name: self.transforms[name].inv(v).detach().clone().requires_grad_(True)
            for name, v in values.items()
        }

    def values(self) -> dict[str, Tensor]:
        return {name: self.transforms[name](u) for name, u in self.u.items()}

    def leaves(self, names: Iterable[str]) -> list[Tensor]:
        return [self.u[n] for n in names]


def _initial_values(moe: GaussianMoE, x: Tensor, y: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
    """A random start: gate sites from the gate's own initialisation where it has one
    (:func:`~bayesact.models.moe._gating.random_start`: DSelect-k selector logits U(-γ/100, γ/100)), else at
    the module's values plus N(0, 1) noise in unconstrained space; linear experts through K random data
    points with the least-squares slope (perturbed); σ_k = the least-squares residual sd."""
    current = moe.point_values()

    def randn(shape: torch.Size) -> Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype=x.dtype, device=x.device)

    x1 = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    coef = torch.linalg.lstsq(x1.double(), y.double().unsqueeze(-1)).solution.squeeze(-1).to(x.dtype)
    resid_sd = (y - x1 @ coef).std().clamp(min=1e-3)
    out: dict[str, Tensor] = {}
    for name in moe.site_names:
        spec = next(s for s in moe._sites if s.name == name)
        start = random_start(moe.gate, spec.param, spec.free_shape, gen) if spec.group == "gate" else None
        if start is not None:
            out[name] = start.to(dtype=x.dtype, device=x.device)
        elif spec.group == "gate":
            t = moe.unconstrained_transform(name)
            u = t.inv(current[name].to(x.dtype))
            u = torch.where(torch.isfinite(u), u, torch.zeros_like(u))
            out[name] = t(u + randn(spec.free_shape))
        elif spec.group == "expert" and not isinstance(moe.expert, LinearExperts):
            out[name] = current[name].to(x.dtype) + 0.5 * randn(spec.free_shape)
        elif name == "noise_std":
            out[name] = resid_sd.expand(moe.num_experts).clone()
    if isinstance(moe.expert, LinearExperts):
        k = moe.num_experts
        slope = coef[:-1] * (1 + 0.5 * randn(torch.Size((k, 1)))) + 0.1 * resid_sd * randn(
            torch.Size((k, x.shape[1]))
        )
        rows = torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)
        out["expert.weight"] = slope
        out["expert.bias"] = y[rows] - (x[rows] * slope).sum(-1)
    return out


#: L-BFGS iterations on the experts alone before the joint penalised fit (``fit(regularize=True)``)
EXPERT_WARMUP_ITER = 10


def _mle(
    moe: GaussianMoE,
    x: Tensor,
    y: Tensor,
    init: dict[str, Tensor],
    max_iter: int,
    tol: float,
    regularize: bool = False,
) -> tuple[dict[str, Tensor], int]:
    """L-BFGS on the mean negative log-likelihood from ``init``; with ``regularize`` the gate's penalty is
    added, after a warm-up on the experts and noise scales alone (see ``GaussianMoE.fit``)."""

    def nll() -> Tensor:
        return -moe.log_likelihood(x, y, state.values()).mean()

    def penalised() -> Tensor:
        values = state.values()
        return -moe.log_likelihood(x, y, values).mean() + moe.gate_regularization(x, values)

    state = _Unconstrained(moe, init)
    iters = 0
    if regularize:
        experts = [name for name in state.u if not name.startswith("gate.")]
        iters = _lbfgs(state.leaves(experts), nll, min(max_iter, EXPERT_WARMUP_ITER), tol)
    iters += _lbfgs(list(state.u.values()), penalised if regularize else nll, max_iter, tol)
    return {k: v.detach() for k, v in state.values().items()}, iters


def _expected_log_gate(r: Tensor, weights: Tensor) -> Tensor:
    """Σ_ik r_ik log π_k(x_i) / N with 0·log 0 = 0 and r·log 0 = -inf for r > 0 (no NaN gradient).

    Reading log 0 as 0 (as this did before) made a gate step that switches off an expert where its
    responsibility is positive look like a gain: EM's log-likelihood then fell (sparsemax, DSelect-k).
    """
    positive = weights > 0
    log_w = torch.where(positive, torch.log(torch.where(positive, weights, torch.ones_like(weights))),
                        torch.full_like(weights, -math.inf))
    return torch.where(r > 0, r * log_w, torch.zeros_like(r)).sum() / r.shape[0]


def _em(
    moe: GaussianMoE,
    x: Tensor,
    y: Tensor,
    init: dict[str, Tensor],
    max_iter: int,
    tol: float,
    history: list[float] | None = None,
) -> tuple[dict[str, Tensor], int]:
    """EM from ``init``; appends the mean log-likelihood after every iteration to ``history``."""
    values = {k: v.detach().clone() for k, v in init.items()}
    gate_sites = [s.name for s in moe._sites if s.group == "gate"]
    expert_sites = [s.name for s in moe._sites if s.group == "expert"] + ["noise_std"]
    linear = isinstance(moe.expert, LinearExperts)
    sparse = bool(getattr(moe.gate, "sparse", False))  # gates with exact zeros (see the gate step below)
    x1 = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    eye = torch.eye(x1.shape[1], dtype=x.dtype, device=x.device)
    previous = -math.inf
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        with torch.no_grad():
            r = moe.responsibilities(x, y, values)
        if linear:
            for k in range(moe.num_experts):
                rk = r[:, k]
                if float(rk.sum()) < 1e-8 * x.shape[0]:
                    continue  # an expert with no responsibility keeps its values
                coef = torch.linalg.solve(x1.T @ (rk[:, None] * x1) + 1e-10 * eye, x1.T @ (rk * y))
                values["expert.weight"][k] = coef[:-1]
                values["expert.bias"][k] = coef[-1]
                resid = y - x1 @ coef
                values["noise_std"][k] = ((rk * resid**2).sum() / rk.sum()).sqrt().clamp(min=1e-6)
        else:
            state = _Unconstrained(moe, {n: values[n] for n in expert_sites})

            def expected_complete(state: _Unconstrained = state, r: Tensor = r) -> Tensor:
                v = {**values, **state.values()}
                _, means, scale = moe._components(x, v)
                return -(r * dist.Normal(means, scale).log_prob(y[:, None])).sum() / x.shape[0]

            _lbfgs(state.leaves(expert_sites), expected_complete, 20, tol)
            values.update({k: v.detach() for k, v in state.values().items()})
        gate = moe.gate
        if isinstance(gate, TopKGate) and not moe._interventions:  # the likelihood jumps: see _topk_em
            with torch.no_grad():
                _, means, scale = moe._components(x, values)
                log_n = dist.Normal(means, scale).log_prob(y[:, None])
            weight, bias, _ = topk_gate_step(
                x, log_n, values["gate.weight"], values["gate.bias"], k=gate.k, pinned=gate.pinned,
                lbfgs=_lbfgs,
            )
            values["gate.weight"], values["gate.bias"] = weight, bias
        elif gate_sites:
            gstate = _Unconstrained(moe, {n: values[n] for n in gate_sites})

            def gate_objective(gstate: _Unconstrained = gstate, r: Tensor = r) -> Tensor:
                if sparse:  # the observed log-likelihood, experts fixed: Q's -inf would freeze the supports
                    return -moe.log_likelihood(x, y, {**values, **gstate.values()}).mean()
                weights, _, _ = moe._components(x, {**values, **gstate.values()})
                return -_expected_log_gate(r, weights)

            with torch.no_grad():
                before = float(gate_objective())
            _lbfgs(gstate.leaves(gate_sites), gate_objective, 20, tol)
            with torch.no_grad():
                try:
                    after = float(gate_objective())
                except NUMERICAL_ERRORS:
                    after = math.inf
            if after <= before:  # a generalised M-step: keep the gate only if Q did not fall
                values.update({k: v.detach() for k, v in gstate.values().items()})
        with torch.no_grad():
            current = float(moe.log_likelihood(x, y, values).mean())
        if history is not None:
            history.append(current)
        if abs(current - previous) < tol:
            break
        previous = current
    return values, it


def fit_moe(
    moe: GaussianMoE,
    x: Tensor,
    y: Tensor,
    *,
    num_restarts: int,
    method: str,
    max_iter: int,
    tol: float,
    seed: int | None,
    start: Mapping[str, Tensor] | None = None,
    regularize: bool = False,
) -> MoEFit:
    """See :meth:`GaussianMoE.fit`."""
    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item()))
    best: dict[str, Tensor] | None = None
    best_ll = best_score = -math.inf
    restarts: list[float] = []
    iterations: list[int] = []
    failures: list[str] = []
    histories: list[list[float]] = []
    for i in range(num_restarts):
        init = _initial_values(moe, x, y, gen)
        if i == 0 and start is not None:
            init = {name: start[name].to(dtype=x.dtype, device=x.device).clone() for name in init}
        histories.append([])
        try:
            if method == "mle":
                values, iters = _mle(moe, x, y, init, max_iter, tol, regularize)
            else:
                values, iters = _em(moe, x, y, init, max_iter, tol, histories[-1])
            with torch.no_grad():
                ll = float(moe.log_likelihood(x, y, values).mean())
                # the restarts are ranked by what was maximised (the penalised objective with regularize)
                score = ll - float(moe.gate_regularization(x, values)) if regularize else ll
        except NUMERICAL_ERRORS as err:  # a failed restart (loss +inf), not a failed fit
            values, iters, ll, score = init, 0, -math.inf, -math.inf
            failures.append(f"restart {i}: {type(err).__name__}: {err}")
        else:
            if not math.isfinite(ll):
                failures.append(f"restart {i}: mean log-likelihood {ll}")
                ll = score = -math.inf
        restarts.append(ll)
        iterations.append(iters)
        if score > best_score:
            best, best_ll, best_score = values, ll, score
    if best is None:
        raise FloatingPointError(
            f"every restart of fit ({method}) failed numerically: " + "; ".join(failures)
        )
    moe.set_point_values(best)
    return MoEFit(
        log_likelihood=best_ll, restarts=restarts, method=method, iterations=iterations, history=histories,
        regularized=regularize,
    )
