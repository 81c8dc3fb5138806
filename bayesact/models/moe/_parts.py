"""Parts of :class:`~bayesact.models.moe.GaussianMoE`: linear experts, the noise scales, fit results."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["LinearExperts", "MoEFit", "NoiseStd"]


class LinearExperts(nn.Module):
    """K linear experts, means m_k(x) = a_kᵀx + b_k: parameters ``weight`` (K, d) and ``bias`` (K,); output
    (N, K)."""

    def __init__(self, in_dim: int, num_experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_experts, in_dim))
        self.bias = nn.Parameter(torch.zeros(num_experts))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.transpose(-1, -2) + self.bias


class NoiseStd(nn.Module):
    """The per-expert noise scales σ_k (K,), the point estimate used by fit/predict."""

    def __init__(self, num_experts: int):
        super().__init__()
        self.value = nn.Parameter(torch.ones(num_experts))


@dataclass
class MoEFit:
    """The result of :meth:`GaussianMoE.fit`: the best restart's mean log-likelihood per row, every
    restart's, their iteration counts, (EM) every restart's mean log-likelihood after each iteration, and
    whether the fit was penalised by the gate's regulariser (``regularize``, resolved from ``None``)."""

    log_likelihood: float
    restarts: list[float] = field(default_factory=list)
    method: str = "mle"
    iterations: list[int] = field(default_factory=list)
    history: list[list[float]] = field(default_factory=list)
    regularized: bool = False
