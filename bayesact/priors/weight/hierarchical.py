"""Hierarchical weight priors: per-layer inverse-gamma variances (Tran et al.'s GPi-H)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import WeightPrior, constant_like, inverse_softplus, per_layer, positive_values

KINDS = ("weight", "bias")


class HierarchicalPrior(WeightPrior):
    """σ_w,l² ~ InvGamma(α_w,l, β_w,l), W_l | σ_w,l ~ N(0, σ_w,l²); the same for the biases.

    Shapes α and rates β are learnable per layer (softplus-parameterised). In the Pyro model the
    variances are latent sites ``{name}.weight_variance`` and ``{name}.bias_variance``; for prior
    fitting every function draw gets its own variances (not one shared draw per batch).
    Conditionally on the weights, a layer's variance is InvGamma(α + n/2, β + Σw²/2)
    (:meth:`gibbs_variance`), the Gibbs step used with SGHMC through the Gibbs hook
    (:attr:`gibbs_sites`, :meth:`gibbs_update`). ``num_layers=None`` takes the layer
    count from the network the prior is given to.

    Paper: "All You Need is a Good Functional Prior for Bayesian Deep Learning" (Tran, Rossi, Milios,
    Filippone, JMLR 2022), the GPi-H family.
    """

    def __init__(
        self, num_layers: int | None = None, shape: float | Tensor = 1.0, rate: float | Tensor = 1.0
    ):
        super().__init__()
        self._initial = {"shape": positive_values(shape, "shape"), "rate": positive_values(rate, "rate")}
        if num_layers is not None:
            self.bind(num_layers)

    def _build(self, num_layers: int) -> None:
        raw = {key: inverse_softplus(per_layer(v, num_layers, key)) for key, v in self._initial.items()}
        for kind in KINDS:  # registration order (weight shape, weight rate, bias ...) keys optimiser states
            for key in ("shape", "rate"):
                setattr(self, f"raw_{kind}_{key}", nn.Parameter(raw[key].clone()))

    def hyperparameters(self, layer: int, kind: str) -> tuple[Tensor, Tensor]:
        """(shape α, rate β) of layer ``layer``'s ``kind`` ("weight" or "bias") variance."""
        self._check_layer(layer)
        if kind not in KINDS:
            raise ValueError(f"'kind' must be 'weight' or 'bias', got {kind!r}")
        raw_shape = getattr(self, f"raw_{kind}_shape")[layer]
        raw_rate = getattr(self, f"raw_{kind}_rate")[layer]
        return F.softplus(raw_shape), F.softplus(raw_rate)

    def positive_hyperparameters(self) -> dict[str, Tensor]:
        self._check_layer(0)
        return {
            f"{kind}_{key}": F.softplus(getattr(self, f"raw_{kind}_{key}"))
            for kind in KINDS
            for key in ("shape", "rate")
        }

    def _pyro_sample(
        self, layer: int, site: str, kind: str, event: tuple[int, ...], dtype: torch.dtype | None,
        device: torch.device | None,
    ) -> Tensor:
        alpha, beta = (constant_like(t, dtype, device) for t in self.hyperparameters(layer, kind))
        variance = pyro.sample(f"{site}_variance", dist.InverseGamma(alpha, beta))
        scale = variance.sqrt().reshape(variance.shape + (1,) * len(event))
        zero = torch.zeros((), dtype=alpha.dtype, device=alpha.device)
        return pyro.sample(site, dist.Normal(zero, scale).expand(variance.shape + event).to_event(len(event)))

    def _rsample(self, layer: int, kind: str, event: tuple[int, ...], n: int) -> Tensor:
        alpha, beta = self.hyperparameters(layer, kind)
        precision = dist.Gamma(alpha, beta).rsample((n,))  # one variance per function draw
        scale = precision.rsqrt().reshape((n,) + (1,) * len(event))
        return scale * torch.randn((n, *event), dtype=scale.dtype, device=scale.device)

    def gibbs_variance(self, layer: int, kind: str, values: Tensor) -> Tensor:
        """A draw of the variance from its conditional InvGamma(α + n/2, β + Σ values²/2).

        ``values`` are the layer's weights (or biases) with any leading batch (chain) dimensions
        followed by the event dimensions of the layer; one variance per batch entry is returned,
        in the dtype and on the device of ``values``.
        """
        hyper = self.hyperparameters(layer, kind)
        alpha, beta = (constant_like(t, values.dtype, values.device) for t in hyper)
        event = 2 if kind == "weight" else 1
        flat = values.detach().flatten(start_dim=values.dim() - event)
        posterior = dist.InverseGamma(alpha + flat.shape[-1] / 2, beta + flat.pow(2).sum(-1) / 2)
        return posterior.sample()

    @property
    def gibbs_sites(self) -> tuple[str, ...]:
        """The per-layer variance sites ``layers.{l}.weight_variance`` and ``layers.{l}.bias_variance``."""
        self._check_layer(0)
        assert self.num_layers is not None
        return tuple(
            f"{self.layer_site(layer)}.{kind}_variance" for layer in range(self.num_layers) for kind in KINDS
        )

    def gibbs_update(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each variance drawn by :meth:`gibbs_variance` from the current weights (or biases) of its
        layer, ``values[f"layers.{l}.weight"]`` (with any leading chain dimensions)."""
        self._check_layer(0)
        assert self.num_layers is not None
        out = {}
        for layer in range(self.num_layers):
            site = self.layer_site(layer)
            for kind in KINDS:
                out[f"{site}.{kind}_variance"] = self.gibbs_variance(layer, kind, values[f"{site}.{kind}"])
        return out
