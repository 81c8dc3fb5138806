"""Per-layer Gaussian weight priors with learnable standard deviations (Tran et al.'s GPi-G)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import WeightPrior, inverse_softplus


def _positive_vector(value: float | Tensor, num_layers: int, name: str) -> Tensor:
    tensor = torch.as_tensor(value, dtype=torch.get_default_dtype()).detach().clone()
    if tensor.dim() == 0:
        tensor = tensor.expand(num_layers).clone()
    if tensor.shape != (num_layers,):
        shape = tuple(tensor.shape)
        raise ValueError(f"'{name}' must be a number or have shape ({num_layers},), got {shape}")
    if not bool(torch.isfinite(tensor).all()) or bool((tensor <= 0).any()):
        raise ValueError(f"'{name}' must be finite and > 0")
    return tensor


class GaussianPrior(WeightPrior):
    """W_l ~ N(0, σ_w,l²) elementwise (used as W_l / sqrt(fan_in)), b_l ~ N(0, σ_b,l²).

    One learnable std per layer for the weights and one for the biases, parameterised as
    σ = softplus(ρ). ``GaussianPrior(L)`` with the default stds of 1 is the fixed N(0, 1) baseline
    ("FG") of the paper.

    Paper: "All You Need is a Good Functional Prior for Bayesian Deep Learning" (Tran, Rossi, Milios,
    Filippone, JMLR 2022), the GPi-G family.
    """

    def __init__(self, num_layers: int, weight_std: float | Tensor = 1.0, bias_std: float | Tensor = 1.0):
        super().__init__(num_layers)
        self.raw_weight_std = nn.Parameter(
            inverse_softplus(_positive_vector(weight_std, num_layers, "weight_std"))
        )
        self.raw_bias_std = nn.Parameter(inverse_softplus(_positive_vector(bias_std, num_layers, "bias_std")))

    @property
    def weight_std(self) -> Tensor:
        """σ_w per layer (before the 1/sqrt(fan_in) scaling)."""
        return F.softplus(self.raw_weight_std)

    @property
    def bias_std(self) -> Tensor:
        """σ_b per layer."""
        return F.softplus(self.raw_bias_std)

    def pyro_sample_layer(self, layer: int, name: str, fan_in: int, fan_out: int) -> tuple[Tensor, Tensor]:
        self._check_layer(layer)
        w_std = self.weight_std[layer].detach()
        b_std = self.bias_std[layer].detach()
        weight = pyro.sample(
            f"{name}.weight", dist.Normal(torch.zeros(()), w_std).expand([fan_in, fan_out]).to_event(2)
        )
        bias = pyro.sample(f"{name}.bias", dist.Normal(torch.zeros(()), b_std).expand([fan_out]).to_event(1))
        return weight, bias

    def rsample_layer(self, layer: int, fan_in: int, fan_out: int, n: int) -> tuple[Tensor, Tensor]:
        self._check_layer(layer)
        device = self.raw_weight_std.device
        weight = self.weight_std[layer] * torch.randn(n, fan_in, fan_out, device=device)
        bias = self.bias_std[layer] * torch.randn(n, fan_out, device=device)
        return weight, bias

    def extra_repr(self) -> str:
        w = ", ".join(f"{v:.3g}" for v in self.weight_std.tolist())
        b = ", ".join(f"{v:.3g}" for v in self.bias_std.tolist())
        return f"weight_std=[{w}], bias_std=[{b}]"
