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


def positive_values(value: float | Tensor, name: str) -> Tensor:
    """``value`` as a detached tensor of the default dtype: a number or a vector, finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | Tensor):
        raise TypeError(f"'{name}' must be a number or a tensor, got {type(value).__name__}")
    tensor = torch.as_tensor(value, dtype=torch.get_default_dtype()).detach().clone()
    if tensor.dim() > 1:
        raise ValueError(f"'{name}' must be a number or have shape (num_layers,), got {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()) or bool((tensor <= 0).any()):
        raise ValueError(f"'{name}' must be finite and > 0")
    return tensor


def per_layer(values: Tensor, num_layers: int, name: str) -> Tensor:
    """A number or vector from :func:`positive_values` as one value per layer: shape (num_layers,)."""
    if values.dim() == 0:
        return values.expand(num_layers).clone()
    if values.shape != (num_layers,):
        shape = tuple(values.shape)
        raise ValueError(f"'{name}' must be a number or have shape ({num_layers},), got {shape}")
    return values


class WeightPrior(nn.Module, ABC):
    """A prior over the weights and biases of an MLP with ``num_layers`` dense layers.

    Weights are drawn unscaled; the network multiplies layer l's weights by 1/sqrt(fan_in) (the NTK
    parameterization), so a weight std of 1 keeps activations of order one at any width.

    ``num_layers=None`` leaves the layer count to the network: ``BNN(..., prior=GaussianPrior())``
    calls :meth:`bind` with its own count, which creates the per-layer hyperparameters.

    Two ways to draw:
    - :meth:`pyro_sample_layer` inside a Pyro model: ``pyro.sample`` sites (hyperparameters are
      constants there, detached from autograd) in the requested dtype and device;
    - :meth:`rsample_layer` for prior fitting: ``n`` reparameterised draws, differentiable in the
      prior's hyperparameters, one independent draw (hierarchical variances included) per function.
    """

    def __init__(self) -> None:
        super().__init__()
        self.num_layers: int | None = None

    def bind(self, num_layers: int) -> WeightPrior:
        """Fix the layer count (creating the hyperparameters) or check it against the fixed one."""
        check_layer_count(num_layers)
        if self.num_layers is None:
            self._build(num_layers)
            self.num_layers = num_layers
        elif self.num_layers != num_layers:
            raise ValueError(f"the prior covers {self.num_layers} layers, not {num_layers}")
        return self

    @abstractmethod
    def _build(self, num_layers: int) -> None:
        """Create the per-layer hyperparameters (called once, by :meth:`bind`)."""

    def _check_layer(self, layer: int) -> None:
        if self.num_layers is None:
            raise ValueError(
                f"{type(self).__name__} has no layer count yet: pass 'num_layers' or use it in a BNN"
            )
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} out of range for a prior over {self.num_layers} layers")

    @abstractmethod
    def positive_hyperparameters(self) -> dict[str, Tensor]:
        """The prior's positive hyperparameters by name, each of shape (num_layers,), differentiable."""

    def pyro_sample_layer(
        self,
        layer: int,
        name: str,
        fan_in: int,
        fan_out: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Sample layer ``layer``'s weights (fan_in, fan_out) and biases (fan_out,) as Pyro sites
        ``{name}.weight`` and ``{name}.bias`` (plus any hyperparameter latents) in the current model,
        in ``dtype`` on ``device`` (default: those of the prior's parameters)."""
        self._check_layer(layer)
        weight, bias = (self._pyro_sample(layer, f"{name}.{kind}", kind, event, dtype, device)
                        for kind, event in _events(fan_in, fan_out))
        return weight, bias

    def rsample_layer(self, layer: int, fan_in: int, fan_out: int, n: int) -> tuple[Tensor, Tensor]:
        """``n`` reparameterised draws: weights (n, fan_in, fan_out) and biases (n, fan_out)."""
        self._check_layer(layer)
        weight, bias = (self._rsample(layer, kind, event, n) for kind, event in _events(fan_in, fan_out))
        return weight, bias

    @abstractmethod
    def _pyro_sample(
        self, layer: int, site: str, kind: str, event: tuple[int, ...], dtype: torch.dtype | None,
        device: torch.device | None,
    ) -> Tensor:
        """Layer ``layer``'s ``kind`` ("weight" or "bias") of shape ``event`` as the Pyro site ``site``."""

    @abstractmethod
    def _rsample(self, layer: int, kind: str, event: tuple[int, ...], n: int) -> Tensor:
        """``n`` reparameterised draws of layer ``layer``'s ``kind``: shape (n, *event)."""

    def layer_site(self, layer: int) -> str:
        """The site-name prefix of layer ``layer`` in a network's Pyro model: ``layers.{layer}``."""
        return f"layers.{layer}"

    # Gibbs hook (bayesact.infer.protocols.GibbsHook): none by default; conjugate priors override.
    @property
    def gibbs_sites(self) -> tuple[str, ...]:
        """Latent sites of the prior redrawn by :meth:`gibbs_update` rather than by gradient dynamics
        (named as :meth:`pyro_sample_layer` names them under :meth:`layer_site`); none here."""
        return ()

    def gibbs_update(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """New values of :attr:`gibbs_sites` from their full conditionals given the model's other
        ``values`` (site name -> value with any leading chain dimensions); none here."""
        return {}

    def extra_repr(self) -> str:
        if self.num_layers is None:
            return "num_layers=None (set by the network)"
        parts = []
        for key, value in self.positive_hyperparameters().items():
            parts.append(f"{key}=[{', '.join(f'{v:.3g}' for v in value.tolist())}]")
        return ", ".join(parts)


def _events(fan_in: int, fan_out: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The parameter kinds of a dense layer and their shapes, in the order they are drawn."""
    return ("weight", (fan_in, fan_out)), ("bias", (fan_out,))


def constant_like(value: Tensor, dtype: torch.dtype | None, device: torch.device | None) -> Tensor:
    """``value`` detached (a constant of the Pyro model) in ``dtype`` on ``device`` (default: its own)."""
    return value.detach().to(dtype=dtype or value.dtype, device=device or value.device)
