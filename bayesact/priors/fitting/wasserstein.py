"""Wasserstein-1 distance between two sets of function samples, by a Lipschitz critic (WGAN-GP).

W1(p, q) = sup_{||φ||_L <= 1} E_p[φ(f)] - E_q[φ(f)] (Kantorovich–Rubinstein). The critic φ is an MLP
(M inputs -> 200 -> softplus -> 200 -> softplus -> 1) kept near 1-Lipschitz by the gradient penalty
λ E[(||∇φ(f̂)|| - 1)²] at random interpolates f̂ = ε f_p + (1 - ε) f_q ("Improved Training of
Wasserstein GANs", Gulrajani et al., NeurIPS 2017), as in "All You Need is a Good Functional Prior
for Bayesian Deep Learning" (Tran et al., JMLR 2022). Function samples have shape (n, M, out); one
critic is shared by the output dimensions and their values are summed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LipschitzCritic(nn.Module):
    """φ: R^M -> R, an MLP with softplus hidden layers (Xavier-normal weights, N(0, 1) biases)."""

    def __init__(self, num_points: int, hidden: int = 200):
        super().__init__()
        layers = [nn.Linear(num_points, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 1)]
        for layer in layers:
            nn.init.xavier_normal_(layer.weight)
            nn.init.normal_(layer.bias)
        self.layers = nn.ModuleList(layers)

    def forward(self, f: Tensor) -> Tensor:
        """φ of each function: (..., M) -> (...)."""
        h = f
        for layer in self.layers[:-1]:
            h = F.softplus(layer(h))
        return self.layers[-1](h).squeeze(-1)


def _per_output(f: Tensor) -> Tensor:
    """(n, M, out) -> (out, n, M): the critic sees one output dimension at a time."""
    if f.dim() != 3:
        raise ValueError(f"function samples must have shape (n, M, out), got {tuple(f.shape)}")
    return f.permute(2, 0, 1)


def _interpolates(f_p: Tensor, f_q: Tensor) -> Tensor:
    """ε f_p + (1 - ε) f_q with ε ~ U(0, 1) per function, detached, as (out, n, M) leaves."""
    p, q = _per_output(f_p.detach()), _per_output(f_q.detach())
    n = min(p.shape[1], q.shape[1])
    eps = torch.rand(1, n, 1, dtype=p.dtype, device=p.device)
    return (eps * p[:, :n] + (1 - eps) * q[:, :n]).requires_grad_(True)


def critic_gap(critic: LipschitzCritic, f_p: Tensor, f_q: Tensor) -> Tensor:
    """E_p[φ] - E_q[φ], summed over output dimensions."""
    return (critic(_per_output(f_p)).mean(-1) - critic(_per_output(f_q)).mean(-1)).sum()


def gradient_penalty(critic: LipschitzCritic, f_p: Tensor, f_q: Tensor, one_sided: bool = True) -> Tensor:
    """E[(||∇φ(f̂)||₂ - 1)²] at interpolates f̂ = ε f_p + (1 - ε) f_q, ε ~ U(0, 1) per function.

    ``one_sided`` penalises only gradient norms above 1, E[max(0, ||∇φ|| - 1)²] (the "LP" penalty of
    "On the Regularization of Wasserstein GANs", Petzka et al., ICLR 2018): it constrains the critic
    to the 1-Lipschitz ball without pushing its slope away from 0, which the two-sided penalty does
    and which can trap a critic at the negative of the optimum (observed in 1-D tests).
    """
    mixed = _interpolates(f_p, f_q)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    excess = grad.norm(dim=-1) - 1
    return (torch.clamp(excess, min=0) if one_sided else excess).pow(2).mean()


def slope_estimate(critic: LipschitzCritic, f_p: Tensor, f_q: Tensor) -> Tensor:
    """max(1, root-mean-square of ||∇φ||₂ at interpolates of the two sample sets), detached.

    The gradient penalty holds the critic's slope only softly near 1 where it acts (at
    interpolates); at its optimum the slope exceeds 1 by about W1/(2λ). Dividing the critic by this
    estimate removes that bias, so E_p[φ] - E_q[φ] is reported for a critic of slope about 1.
    """
    points = _interpolates(f_p, f_q)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(critic(points).sum(), points)
    return torch.clamp(grad.pow(2).sum(-1).mean().sqrt(), min=1.0).detach()


def train_critic(
    f_p: Tensor,
    f_q: Tensor,
    *,
    steps: int = 200,
    lr: float = 0.02,
    penalty: float = 10.0,
    hidden: int = 200,
    grad_tol: float | None = None,
    batch_size: int | None = None,
) -> LipschitzCritic:
    """A fresh critic trained with Adagrad to maximise E_p[φ] - E_q[φ] - λ·penalty on fixed samples.

    Each step uses all samples, or ``batch_size`` random ones from each set. Stops early when the
    norm of the critic's parameter gradient falls below ``grad_tol``.
    """
    if steps < 1:
        raise ValueError(f"'steps' must be >= 1, got {steps}")
    f_p, f_q = f_p.detach(), f_q.detach()
    critic = LipschitzCritic(f_p.shape[1], hidden).to(device=f_p.device, dtype=f_p.dtype)
    optimizer = torch.optim.Adagrad(critic.parameters(), lr=lr)
    for _ in range(steps):
        p, q = f_p, f_q
        if batch_size is not None and batch_size < min(len(f_p), len(f_q)):
            p = f_p[torch.randint(len(f_p), (batch_size,), device=f_p.device)]
            q = f_q[torch.randint(len(f_q), (batch_size,), device=f_q.device)]
        optimizer.zero_grad()
        loss = -critic_gap(critic, p, q) + penalty * gradient_penalty(critic, p, q)
        loss.backward()
        if grad_tol is not None:
            squares = [param.grad.pow(2).sum() for param in critic.parameters() if param.grad is not None]
            norm = torch.sqrt(sum(squares, torch.zeros_like(squares[0])))
            if norm.item() < grad_tol:
                break
        optimizer.step()
    critic.requires_grad_(False)
    return critic


def wasserstein_distance(
    f_p: Tensor,
    f_q: Tensor,
    *,
    steps: int = 200,
    lr: float = 0.02,
    penalty: float = 10.0,
    hidden: int = 200,
    batch_size: int | None = None,
) -> Tensor:
    """Critic estimate of W1 between two sets of function samples of shape (n, M, out).

    The critic is trained on the first half of each set and E_p[φ] - E_q[φ] is evaluated on the
    second half (so it does not reward the critic for fitting sampling noise), divided by the
    critic's slope estimate (:func:`slope_estimate`). Differentiable with respect to the samples:
    the critic is trained on detached copies and then frozen.
    """
    if f_p.shape[1:] != f_q.shape[1:]:
        raise ValueError(f"sample shapes differ beyond the first dimension: {f_p.shape} vs {f_q.shape}")
    if min(f_p.shape[0], f_q.shape[0]) < 4:
        raise ValueError("need at least 4 functions per set (half train the critic, half evaluate it)")
    hp, hq = f_p.shape[0] // 2, f_q.shape[0] // 2
    critic = train_critic(
        f_p[:hp], f_q[:hq], steps=steps, lr=lr, penalty=penalty, hidden=hidden, batch_size=batch_size
    )
    return critic_gap(critic, f_p[hp:], f_q[hq:]) / slope_estimate(critic, f_p[hp:], f_q[hq:])
