"""The interface every weight-prior family implements, layer by layer."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn


def inverse_softplus(value: Tensor) -> Tensor:
    """The raw parameter whose softplus is ``value`` (> 0)."""
    return value + torch.log(-torch.expm1(-value))


def check_layer_count(num_layers: int) -> None:
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"'num_layers' must be a positive int, got {num_layers!r}")


class WeightPrior(nn.Module, ABC):
    """A prior over the weights and biases of an MLP with ``num_layers`` dense layers.

    Weights are drawn unscaled; the network multiplies layer l's weights by 1/sqrt(fan_in) (the NTK
    parameterization), so a weight std of 1 keeps activations of order one at any width.

    Two ways to draw:
    - :meth:`pyro_sample_layer` inside a Pyro model: ``pyro.sample`` sites (hyperparameters are
      constants there, detached from autograd);
    - :meth:`rsample_layer` for prior fitting: ``n`` reparameterised draws, differentiable in the
      prior's hyperparameters, one independent draw (hierarchical variances included) per function.
    """

    def __init__(self, num_layers: int):
        super().__init__()
        check_layer_count(num_layers)
        self.num_layers = num_layers

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} out of range for a prior over {self.num_layers} layers")

    @abstractmethod
    def pyro_sample_layer(self, layer: int, name: str, fan_in: int, fan_out: int) -> tuple[Tensor, Tensor]:
        """Sample layer ``layer``'s weights (fan_in, fan_out) and biases (fan_out,) as Pyro sites
        ``{name}.weight`` and ``{name}.bias`` (plus any hyperparameter latents) in the current model."""

    @abstractmethod
    def rsample_layer(self, layer: int, fan_in: int, fan_out: int, n: int) -> tuple[Tensor, Tensor]:
        """``n`` reparameterised draws: weights (n, fan_in, fan_out) and biases (n, fan_out)."""
