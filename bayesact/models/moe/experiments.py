"""Experiment tools for mixtures of experts: a simulator, the Voronoi loss and posterior relabelling.

Parameters of a softmax-gated Gaussian MoE with linear experts travel as a dict with the keys of
:data:`PARAM_KEYS`: ``gate_weight`` β_1 (K, d), ``gate_bias`` β_0 (K,), ``expert_weight`` a (K, d),
``expert_bias`` b (K,), ``noise_std`` σ (K,).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from bayesact.infer import Posterior

from ._gating import per_expert_gate_params
from .gates import LinearGate
from .model import GaussianMoE, LinearExperts

__all__ = ["PARAM_KEYS", "mixing_params", "relabel", "simulate_moe", "voronoi_loss"]

PARAM_KEYS = ("gate_weight", "gate_bias", "expert_weight", "expert_bias", "noise_std")
#: r̄(m) for Voronoi cells of m fitted atoms (Nguyen, Nguyen & Ho, NeurIPS 2023, Lemma 1: the smallest r for
#: which their system of polynomial equations has no non-trivial solution); the values are those of the
#: authors' simulation code (Trung-TinNGUYEN/CRPE-SGaME, discrepancies.py: ``rbar = [0,1,4,6]``)
RBAR = {2: 4.0, 3: 6.0}


def _check_params(params: Any, name: str) -> dict[str, Tensor]:
    if isinstance(params, GaussianMoE):
        return mixing_params(params)
    if not isinstance(params, Mapping) or set(params) != set(PARAM_KEYS):
        raise ValueError(
            f"'{name}' must be a GaussianMoE or a dict with keys {PARAM_KEYS}, got "
            f"{sorted(params) if isinstance(params, Mapping) else type(params).__name__}"
        )
    out = {k: torch.as_tensor(v).detach() for k, v in params.items()}
    k, d = out["gate_weight"].shape if out["gate_weight"].dim() == 2 else (-1, -1)
    shapes = {
        "gate_weight": (k, d),
        "gate_bias": (k,),
        "expert_weight": (k, d),
        "expert_bias": (k,),
        "noise_std": (k,),
    }
    for key, shape in shapes.items():
        if k < 2 or tuple(out[key].shape) != shape:
            raise ValueError(
                f"'{name}[{key!r}]' must have shape {shape} with K >= 2 experts, got {tuple(out[key].shape)}"
            )
        if not bool(torch.isfinite(out[key]).all()):
            raise ValueError(f"'{name}[{key!r}]' contains NaN or inf")
    if not bool((out["noise_std"] > 0).all()):
        raise ValueError(f"'{name}['noise_std']' must be > 0")
    return out


def mixing_params(moe: GaussianMoE) -> dict[str, Tensor]:
    """The point estimate of a GaussianMoE with linear experts and a linear-logit gate as a
    :data:`PARAM_KEYS` dict.

    The gate's β_1, β_0 are its ``full_weight``/``full_bias`` (pinned rows included, as 0), divided by the
    temperature τ where the gate has one and is translation invariant (softmax(z/τ) = softmax with logits
    z/τ).
    """
    if not isinstance(moe.expert, LinearExperts):
        raise ValueError("'moe' must have linear experts to give mixing parameters")
    gate = moe.gate
    if not isinstance(gate, LinearGate):
        raise ValueError(
            f"'moe' must have a linear-logit gate to give mixing parameters, got {type(gate).__name__}"
        )
    beta1, beta0 = gate.full_weight.detach(), gate.full_bias.detach()
    tau = getattr(gate, "temperature", None)
    if isinstance(tau, Tensor) and gate.translation_invariant:
        beta1, beta0 = beta1 / tau.detach(), beta0 / tau.detach()
    return {
        "gate_weight": beta1.clone(),
        "gate_bias": beta0.clone(),
        "expert_weight": moe.expert.weight.detach().clone(),
        "expert_bias": moe.expert.bias.detach().clone(),
        "noise_std": moe.noise.value.detach().clone(),
    }


def simulate_moe(
    n: int, true_params: Mapping[str, Any] | GaussianMoE, seed: int, *, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """(x, y): n draws of x ~ N(0, I_d), z ~ Categorical(softmax(β_1 x + β_0)), y = a_zᵀx + b_z + σ_z ε.

    ``true_params`` is a :data:`PARAM_KEYS` dict, or a GaussianMoE (any gate; its point estimate and active
    interventions are used). Reproducible from ``seed`` (a private generator; the global one is untouched).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"'n' must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"'seed' must be an int, got {seed!r}")
    gen = torch.Generator().manual_seed(seed)
    if isinstance(true_params, GaussianMoE):
        x = torch.randn(n, true_params.in_dim, generator=gen, dtype=dtype)
        with torch.no_grad():
            weights, means, scale = true_params._components(
                x, {k: v.to(dtype) for k, v in true_params.point_values().items()}
            )
    else:
        p = {k: v.to(dtype) for k, v in _check_params(true_params, "true_params").items()}
        x = torch.randn(n, p["gate_weight"].shape[1], generator=gen, dtype=dtype)
        weights = torch.softmax(x @ p["gate_weight"].T + p["gate_bias"], dim=-1)
        means, scale = x @ p["expert_weight"].T + p["expert_bias"], p["noise_std"]
    z = torch.multinomial(weights, 1, generator=gen).squeeze(-1)
    eps = torch.randn(n, generator=gen, dtype=dtype)
    y = means.gather(-1, z[:, None]).squeeze(-1) + scale[z] * eps
    return x, y


def voronoi_loss(
    fitted: Mapping[str, Any] | GaussianMoE,
    true: Mapping[str, Any] | GaussianMoE,
    *,
    rbar: Mapping[int, float] | None = None,
) -> float:
    """The Voronoi loss between a fitted and a true softmax-gated Gaussian MoE.

    From "Demystifying Softmax Gating Function in Gaussian Mixture of Experts" (Nguyen, Nguyen & Ho,
    NeurIPS 2023), in the form of the authors' simulation code (Trung-TinNGUYEN/CRPE-SGaME,
    ``discrepancies.py``). Each fitted expert i goes to the cell A_j of its nearest true expert j; with Δ
    the fitted-minus-true differences and ν = σ² the variance,

        D = Σ_j |Σ_{i∈A_j} exp(β̂_0i) − exp(β*_0j)|
            + Σ_{j: |A_j|=1} Σ_{i∈A_j} exp(β̂_0i) (‖Δβ_1‖ + ‖Δa‖ + |Δb| + |Δν|)
            + Σ_{j: |A_j|>1} Σ_{i∈A_j} exp(β̂_0i) (‖Δβ_1‖^r̄ + |Δb|^r̄ + ‖Δa‖^{r̄/2} + |Δν|^{r̄/2}),

    r̄ = r̄(|A_j|) from ``rbar`` (default :data:`RBAR`: r̄(2) = 4, r̄(3) = 6; a larger cell needs an entry).

    The papers take the infimum over the gate's translations (t_0, t_1) and build the cells from
    (β_1, a, b, ν). Here the translation is fixed in closed form instead, so D is an upper bound of the
    infimum form, and is 0 for any permutation and translation of the truth: β̂_0 is shifted by
    logsumexp(β̂_0) − logsumexp(β*_0) (equal total mass) and β̂_1 by the mean of β̂_1i − β*_1j over the
    cell pairs. The cells use (a, b, ν) only, which no translation changes.
    """
    fit_p = {k: v.double() for k, v in _check_params(fitted, "fitted").items()}
    true_p = {k: v.double() for k, v in _check_params(true, "true").items()}
    if fit_p["gate_weight"].shape[1] != true_p["gate_weight"].shape[1]:
        raise ValueError("'fitted' and 'true' must have the same input dimension")
    table = dict(RBAR if rbar is None else rbar)

    def expert_atoms(p: dict[str, Tensor]) -> Tensor:
        return torch.cat([p["expert_weight"], p["expert_bias"][:, None], p["noise_std"][:, None] ** 2], dim=1)

    atoms_hat, atoms_true = expert_atoms(fit_p), expert_atoms(true_p)
    cell = torch.cdist(atoms_hat, atoms_true).argmin(dim=1)  # cell[i] = j
    b0_hat = fit_p["gate_bias"] - (
        torch.logsumexp(fit_p["gate_bias"], 0) - torch.logsumexp(true_p["gate_bias"], 0)
    )
    b1_hat = fit_p["gate_weight"] - (fit_p["gate_weight"] - true_p["gate_weight"][cell]).mean(0)
    mass_hat = b0_hat.exp()
    loss = torch.zeros((), dtype=torch.float64)
    for j in range(atoms_true.shape[0]):
        members = (cell == j).nonzero().flatten()
        loss = loss + (mass_hat[members].sum() - true_p["gate_bias"][j].exp()).abs()
        size = len(members)
        if size == 0:
            continue
        r1 = r2 = 1.0
        if size > 1:
            if size not in table:
                raise ValueError(f"'rbar' has no exponent for a Voronoi cell of {size} fitted experts")
            r1, r2 = table[size], table[size] / 2
        for i in members.tolist():
            d_beta = (b1_hat[i] - true_p["gate_weight"][j]).norm()
            d_a = (fit_p["expert_weight"][i] - true_p["expert_weight"][j]).norm()
            d_b = (fit_p["expert_bias"][i] - true_p["expert_bias"][j]).abs()
            d_nu = (atoms_hat[i, -1] - atoms_true[j, -1]).abs()
            if size == 1:
                loss = loss + mass_hat[i] * (d_beta + d_a + d_b + d_nu)
            else:
                loss = loss + mass_hat[i] * (d_beta**r1 + d_b**r1 + d_a**r2 + d_nu**r2)
    return float(loss)


def _reference_features(reference: Any, moe: GaussianMoE, names: list[str]) -> Tensor:
    if isinstance(reference, GaussianMoE):
        values = reference.point_values()
    elif isinstance(reference, Mapping):
        values = dict(reference)
    else:
        raise ValueError(
            f"'reference' must be a GaussianMoE or a dict of expert site values, got "
            f"{type(reference).__name__}"
        )
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"'reference' lacks the expert site(s) {missing}")
    feats = []
    for n in names:
        v = torch.as_tensor(values[n]).detach().double()
        v = v.log() if n == "noise_std" else v
        if v.shape[0] != moe.num_experts:
            raise ValueError(f"'reference[{n!r}]' must have leading dimension {moe.num_experts}")
        feats.append(v.reshape(moe.num_experts, -1))
    return torch.cat(feats, dim=1)


def _per_expert(spec: Any, moe: GaussianMoE) -> bool:
    if spec.group == "gate":
        return spec.param in per_expert_gate_params(moe.gate)
    return len(spec.free_shape) > 0 and spec.free_shape[0] == moe.num_experts


def relabel(
    posterior: Posterior | Mapping[str, Tensor], reference: Any, *, model: GaussianMoE | None = None
) -> Any:
    """Undo label switching: permute the experts of every draw to match ``reference`` (Hungarian assignment).

    For each draw, the permutation minimises Σ_j ‖θ_{σ(j)} − θ^ref_j‖² over the expert sites (``expert.*`` and
    log ``noise_std``), solved by ``scipy.optimize.linear_sum_assignment``; every site with a leading expert
    dimension is permuted. Pinned gate sites are re-pinned after the permutation (the translation that
    makes the
    new last expert's row 0 is subtracted from every row), so the draws stay in the model's
    parameterisation and
    R-hat/ESS are computed on identified quantities.

    Args:
        posterior: a :class:`~bayesact.infer.Posterior` of a GaussianMoE, or a dict of its samples
            (site -> (chain, draw, ...)) with ``model``.
        reference: a fitted GaussianMoE or a dict of expert site values (K, ...), e.g. the true parameters.
        model: the GaussianMoE (default: ``posterior.model``).

    Returns:
        A new Posterior (or dict) with the relabelled samples.
    """
    samples = posterior.samples if isinstance(posterior, Posterior) else posterior
    moe = model if model is not None else getattr(posterior, "model", None)
    if not isinstance(moe, GaussianMoE):
        raise ValueError("'model' must be the GaussianMoE the posterior was sampled from")
    if not isinstance(samples, Mapping):
        raise ValueError(
            f"'posterior' must be a Posterior or a dict of samples, got {type(posterior).__name__}"
        )
    k = moe.num_experts
    specs = {s.name: s for s in moe._sites}
    missing = [n for n in specs if n not in samples]
    if missing:
        raise ValueError(f"'posterior' lacks the model's site(s) {missing}")
    per_expert = {n: _per_expert(s, moe) for n, s in specs.items()}
    for name, spec in specs.items():
        if not per_expert[name] and tuple(spec.free_shape) not in ((), (1,)):
            raise ValueError(
                f"site {name!r} of shape {tuple(spec.free_shape)} has no expert dimension to permute"
            )
    expert_names = [n for n, s in specs.items() if s.group in ("expert", "noise_std")]
    ref = _reference_features(reference, moe, expert_names)
    lead = samples["noise_std"].shape[:-1]
    flat = {n: samples[n].reshape(-1, *specs[n].free_shape) for n in specs}
    feats = torch.cat(
        [
            (flat[n].log() if n == "noise_std" else flat[n])
            .detach()
            .double()
            .reshape(-1, k, 1 if flat[n].dim() == 2 else int(np.prod(flat[n].shape[2:])))
            for n in expert_names
        ],
        dim=2,
    )
    cost = ((feats[:, None, :, :] - ref[None, :, None, :]) ** 2).sum(-1).cpu().numpy()  # (S, ref j, draw i)
    perms = np.stack([linear_sum_assignment(c)[1] for c in cost])  # perms[s, j] = draw expert for reference j
    index = torch.as_tensor(perms, dtype=torch.long, device=samples["noise_std"].device)
    out = dict(samples)
    for name, spec in specs.items():
        if not per_expert[name]:
            continue
        value = flat[name]
        full = torch.cat([value, torch.zeros_like(value[:, :1])], dim=1) if spec.pinned else value
        idx = index.reshape(index.shape + (1,) * (full.dim() - 2)).expand_as(full)
        permuted = full.gather(1, idx)
        if spec.pinned:
            permuted = (permuted - permuted[:, -1:])[:, :-1]
        out[name] = permuted.reshape(*lead, *spec.free_shape)
    if isinstance(posterior, Posterior):
        return Posterior(
            out,
            posterior.sample_stats,
            model=posterior.model,
            args=posterior.args,
            kwargs=posterior.kwargs,
            observed=posterior.observed,
            info=posterior.info,
        )
    return out
