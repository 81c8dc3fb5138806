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


def _gate_loglik(z: Tensor, log_n: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
    """Σ_i log Σ_{j∈S_i} softmax_{S_i}(z_i)_j N_ij for logits z (..., K, N) and log N (K, N), shape (...).

    S_i: the top-k set of z_i (ties at the k-th logit all kept, as :class:`TopKGate` does), or ``mask``.
    """
    top = z.detach().sort(dim=-2, descending=True).values
    if mask is None:
        mask = z >= top[..., k - 1 : k, :]
    gate = torch.where(mask, torch.exp(z - top[..., :1, :]), torch.zeros_like(z))  # max over S_i: exp(0) = 1
    masked_n = torch.where(mask, log_n, torch.full_like(z, -math.inf))
    shift = masked_n.amax(-2, keepdim=True)  # finite: S_i is not empty
    num = (gate * torch.exp(masked_n - shift)).sum(-2)
    return (torch.log(num) + shift[..., 0, :] - torch.log(gate.sum(-2))).sum(-1)


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

    def g_true(w: Tensor, b: Tensor) -> Tensor:
        """G at a batch of (β, β_0) (..., K', d), (..., K') (no gradient)."""
        with torch.no_grad():
            return _gate_loglik(_logits(x, w, b, pinned), log_n, k)

    steps = torch.tensor(_STEPS, dtype=x.dtype, device=x.device)

    w0, b0 = weight.detach().clone(), bias.detach().clone()
    best = float(g_true(w0, b0))
    # 1. the smooth part on the frozen sets, then backtracking on the segment for the true G
    z0 = _logits(x, w0, b0, pinned)
    mask = z0 >= z0.sort(dim=-2, descending=True).values[k - 1 : k]
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)

    def frozen() -> Tensor:
        return -_gate_loglik(_logits(x, w, b, pinned), log_n, k, mask) / x.shape[0]

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
    gw, gb = torch.autograd.grad(_gate_loglik(_logits(x, w, b, pinned), log_n, k), (w, b))
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
