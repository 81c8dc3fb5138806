"""The gate step of EM for a top-K gate, whose likelihood is discontinuous where a top-k set changes.

For π_k(x) = softmax over the k largest logits z(x) = xβᵀ + β_0 (0 elsewhere), the exact EM gate M-step
maximises Q(β) = Σ_ik r_ik log π_k(x_i; β). Every member of the current top-k set S_i has r_ik > 0, so any
β that changes a set S_i (drops a member) gives Q = -inf: exact EM can never move a boundary of the
top-k partition and stays on the piece where it started. The step here instead increases the observed
gate log-likelihood with the experts fixed,

    G(β) = Σ_i log Σ_k π_k(x_i; β) N_ik,   N_ik = N(y_i; m_k(x_i), σ_k²),

which makes EM with it a generalised EM (the expert M-step raises Q, hence ℓ; this step raises ℓ
directly): the log-likelihood never decreases. It has two parts:

1. the smooth part: L-BFGS on G_S(β), G with the current sets S frozen (log-sum-exp over S_i only, smooth
   in β), then a backtracking search on the segment to that optimum for the best true G (the optimum may
   lie across a boundary where G jumps down);
2. the boundary part: a pattern search that crosses boundaries: along G_S's gradient and along ± each
   gate coordinate, G is evaluated at geometric step sizes and the best point is kept when it raises G.

Both parts accept a point only when it raises G, so each call returns G(β_new) >= G(β_old).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["topk_gate_step"]

#: the step sizes of the pattern search (times the direction's unit length)
_STEPS = tuple(2.0**-j for j in range(0, 16))


def _logits(x: Tensor, weight: Tensor, bias: Tensor, pinned: bool) -> Tensor:
    """z = β xᵀ + β_0, experts first: (..., K, N) for β (..., K', d), β_0 (..., K'), with the pinned expert's
    zero row appended when ``pinned`` (reductions over K then run along contiguous rows: 2x faster)."""
    if pinned:
        weight = torch.cat([weight, weight.new_zeros(*weight.shape[:-2], 1, weight.shape[-1])], -2)
        bias = torch.cat([bias, bias.new_zeros(*bias.shape[:-1], 1)], -1)
    return weight @ x.T + bias.unsqueeze(-1)


def _topk_mask(z: Tensor, k: int) -> Tensor:
    """The top-k sets of logits z (..., K, N) as a mask: z_j is in S_i when fewer than k logits exceed it
    (ties at the k-th logit all kept, as :class:`TopKGate` does). K(K - 1) comparisons instead of a sort
    along K, which is 7x slower for K = 3."""
    num_experts = z.shape[-2]
    if k >= num_experts:
        return torch.ones_like(z, dtype=torch.bool)
    rows = z.unbind(-2)
    members = []
    for j in range(num_experts):
        above = torch.zeros_like(rows[j], dtype=torch.uint8)  # how many logits exceed z_j
        for i in range(num_experts):
            if i != j:
                above += rows[i] > rows[j]
        members.append(above < k)
    return torch.stack(members, -2)


class _ScaledDensity(NamedTuple):
    """The experts' densities N_ik as exp(shift_i) · scaled (K, N), scaled <= 1: once per gate step."""

    scaled: Tensor
    shift: Tensor

    @classmethod
    def of(cls, log_n: Tensor, mask: Tensor | None = None) -> _ScaledDensity:
        """From log N (K, N), shifted by each column's maximum over ``mask`` (K, N) (all experts if None);
        entries outside the mask are 0."""
        if mask is not None:
            log_n = torch.where(mask, log_n, -math.inf)
        shift = log_n.amax(-2)  # finite: every column has a member
        return cls(torch.exp(log_n - shift), shift)


def _gate_loglik(z: Tensor, density: _ScaledDensity, k: int, mask: Tensor | None = None) -> Tensor:
    """G = Σ_i log Σ_{j∈S_i} softmax_{S_i}(z_i)_j N_ij for logits z (..., K, N), shape (...); S_i: the top-k
    set of z_i (:func:`_topk_mask`) or ``mask``.

    With N_ij = exp(s_i) Ñ_ij: G = Σ_i [log(Σ_{j∈S_i} e^(z_ij - m_i) Ñ_ij / Σ_{j∈S_i} e^(z_ij - m_i)) + s_i],
    m_i = max_{j∈S_i} z_ij (the denominator is >= 1): one exponential per logit. The result is -inf
    where Ñ underflows to 0 on all of S_i (S_i's densities 1e-320 times the best expert's);
    :func:`_gate_loglik_batch` recomputes those with S_i's own shift.
    """
    if mask is None:  # the largest logit is in S_i: z - m <= 0 everywhere
        mask = _topk_mask(z.detach(), k)
        gate = torch.exp(z - z.detach().amax(-2, keepdim=True)) * mask
    else:  # logits outside the sets may lie far above them: exclude them before exp (no inf, no NaN grad)
        inside = torch.where(mask, z, -math.inf)
        gate = torch.exp(inside - inside.detach().amax(-2, keepdim=True))
    return (torch.log((gate * density.scaled).sum(-2) / gate.sum(-2)) + density.shift).sum(-1)


def _gate_loglik_own_shift(z: Tensor, log_n: Tensor, k: int) -> Tensor:
    """:func:`_gate_loglik` with each row's densities shifted by the best member of its own top-k set
    (never -inf from underflow; a density scaling per call, so not for the batched search)."""
    mask = _topk_mask(z.detach(), k)
    return _gate_loglik(z, _ScaledDensity.of(log_n, mask), k, mask)


#: logits per chunk of a batched evaluation: (steps, K, N) in pieces that stay in the CPU's caches
#: (n = 1e5: 8x faster than one pass over the whole batch)
_CHUNK_ELEMENTS = 2**17


def _gate_loglik_batch(x: Tensor, weight: Tensor, bias: Tensor, pinned: bool, log_n: Tensor,
                       density: _ScaledDensity, k: int) -> Tensor:
    """G (no gradient) at a batch of gate parameters (S, K', d), (S, K'), shape (S,): logits and G in
    cache-sized chunks of the batch, with each top-k set's own density shift wherever the shared one
    underflows (:func:`_gate_loglik`)."""
    per_chunk = max(1, _CHUNK_ELEMENTS // max(density.scaled.numel(), 1))
    values = torch.cat([_gate_loglik(_logits(x, w, b, pinned), density, k)
                        for w, b in zip(weight.split(per_chunk), bias.split(per_chunk), strict=True)])
    bad = ~torch.isfinite(values)
    for i in bad.nonzero()[:, 0].tolist():
        values[i] = _gate_loglik_own_shift(_logits(x, weight[i], bias[i], pinned), log_n, k)
    return values


def topk_gate_step(
    x: Tensor,
    log_n: Tensor,
    weight: Tensor,
    bias: Tensor,
    *,
    k: int,
    pinned: bool,
    lbfgs: Callable[[list[Tensor], Callable[[], Tensor], int, float], int],
    smooth_iter: int = 20,
    tol: float = 1e-12,
) -> tuple[Tensor, Tensor, float]:
    """One gate step of top-K EM (module docstring): (β, β_0, G) with G(β, β_0) >= G at the inputs.

    Args:
        x: inputs (N, d).
        log_n: log N(y_i; m_k(x_i), σ_k²) (N, K) at the current experts (held fixed).
        weight, bias: the gate's free parameters (K or K - 1 rows when ``pinned``).
        k: the gate's k.
        pinned: whether the last expert's (β_K, β_0K) is pinned at 0 (not in ``weight``/``bias``).
        lbfgs: the L-BFGS minimiser (params, objective, max_iter, tol) -> iterations.
        smooth_iter: L-BFGS iterations of the frozen-set part.
        tol: the smallest increase of G that counts.
    """
    log_n = log_n.detach().T.contiguous()  # (K, N)

    density = _ScaledDensity.of(log_n)

    def g_true(w: Tensor, b: Tensor) -> Tensor:
        """G at a batch of (β, β_0) (S, K', d), (S, K') or one (β, β_0) (no gradient)."""
        with torch.no_grad():
            batch = w.shape[:-2]
            values = _gate_loglik_batch(x, w.reshape(-1, *w.shape[-2:]), b.reshape(-1, b.shape[-1]), pinned,
                                        log_n, density, k)
            return values.reshape(batch)

    steps = torch.tensor(_STEPS, dtype=x.dtype, device=x.device)

    w0, b0 = weight.detach().clone(), bias.detach().clone()
    best = float(g_true(w0, b0))
    # 1. the smooth part on the frozen sets, then backtracking on the segment for the true G
    z0 = _logits(x, w0, b0, pinned)
    mask = _topk_mask(z0, k)
    frozen_density = _ScaledDensity.of(log_n, mask)
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)

    def frozen() -> Tensor:
        return -_gate_loglik(_logits(x, w, b, pinned), frozen_density, k, mask) / x.shape[0]

    lbfgs([w, b], frozen, smooth_iter, tol / max(x.shape[0], 1))
    dw, db = w.detach() - w0, b.detach() - b0
    if bool(torch.isfinite(dw).all() and torch.isfinite(db).all()):
        t = steps[:12]
        values = g_true(w0 + t[:, None, None] * dw, b0 + t[:, None] * db)
        better = (values > best + tol).nonzero()
        if len(better):  # the longest step that raises G
            i = int(better[0])
            w0, b0, best = w0 + t[i] * dw, b0 + t[i] * db, float(values[i])
    # 2. the boundary part: pattern search along G_S's gradient and ± each coordinate
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    gw, gb = torch.autograd.grad(_gate_loglik_own_shift(_logits(x, w, b, pinned), log_n, k), (w, b))
    sizes = [w0.numel(), b0.numel()]
    gradient = torch.cat([gw.reshape(-1), gb.reshape(-1)])
    directions = [gradient / gradient.norm()] if float(gradient.norm()) > 0 else []
    eye = torch.eye(sum(sizes), dtype=w0.dtype, device=w0.device)
    directions += [s * eye[i] for i in range(sum(sizes)) for s in (1.0, -1.0)]
    for v in directions:
        vw, vb = v[: sizes[0]].reshape(w0.shape), v[sizes[0] :].reshape(b0.shape)
        values = g_true(w0 + steps[:, None, None] * vw, b0 + steps[:, None] * vb)
        i = int(values.argmax())
        if float(values[i]) > best + tol:  # the step that raises G most
            w0, b0, best = w0 + steps[i] * vw, b0 + steps[i] * vb, float(values[i])
    return w0, b0, best
