"""Per-layer Gaussian weight priors with learnable standard deviations (Tran et al.'s GPi-G)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import WeightPrior, constant_like, inverse_softplus, per_layer, positive_values


class GaussianPrior(WeightPrior):
    """W_l ~ N(0, σ_w,l²) elementwise (used as W_l / sqrt(fan_in)), b_l ~ N(0, σ_b,l²).

    One learnable std per layer for the weights and one for the biases, parameterised as
    σ = softplus(ρ). ``GaussianPrior(L)`` with the default stds of 1 is the fixed N(0, 1) baseline
    ("FG") of the paper; ``GaussianPrior()`` takes its layer count from the network it is given to.

    Paper: "All You Need is a Good Functional Prior for Bayesian Deep Learning" (Tran, Rossi, Milios,
    Filippone, JMLR 2022), the GPi-G family.
    """

    raw_weight_std: nn.Parameter
    raw_bias_std: nn.Parameter

    def __init__(
        self, num_layers: int | None = None, weight_std: float | Tensor = 1.0, bias_std: float | Tensor = 1.0
    ):
        super().__init__()
        self._initial = {"weight_std": positive_values(weight_std, "weight_std"),
                         "bias_std": positive_values(bias_std, "bias_std")}  # fmt: skip
        if num_layers is not None:
            self.bind(num_layers)

    def _build(self, num_layers: int) -> None:
        for key, value in self._initial.items():
            raw = inverse_softplus(per_layer(value, num_layers, key))
            setattr(self, f"raw_{key}", nn.Parameter(raw))

    @property
    def weight_std(self) -> Tensor:
        """σ_w per layer (before the 1/sqrt(fan_in) scaling)."""
        self._check_layer(0)
        return F.softplus(self.raw_weight_std)

    @property
    def bias_std(self) -> Tensor:
        """σ_b per layer."""
        self._check_layer(0)
        return F.softplus(self.raw_bias_std)

    def positive_hyperparameters(self) -> dict[str, Tensor]:
        return {"weight_std": self.weight_std, "bias_std": self.bias_std}

    def _pyro_sample(
        self, layer: int, site: str, kind: str, event: tuple[int, ...], dtype: torch.dtype | None,
        device: torch.device | None,
    ) -> Tensor:
        std = constant_like(getattr(self, f"{kind}_std")[layer], dtype, device)
        zero = torch.zeros((), dtype=std.dtype, device=std.device)
        return pyro.sample(site, dist.Normal(zero, std).expand(list(event)).to_event(len(event)))

    def _rsample(self, layer: int, kind: str, event: tuple[int, ...], n: int) -> Tensor:
        std = getattr(self, f"{kind}_std")[layer]
        return std * torch.randn(n, *event, dtype=std.dtype, device=std.device)
