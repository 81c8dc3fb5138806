"""Shared machinery of the GPyTorch NNGP/NTK kernels: learnable, positive W_std and b_std."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from gpytorch.constraints import Interval, Positive
from gpytorch.kernels import Kernel
from gpytorch.priors import Prior
from torch import Tensor, nn

from bayesact.kernels._docs import args_section, document
from bayesact.kernels.recursion import DEFAULT_BIAS_STD, DEFAULT_FUSED, DEFAULT_WEIGHT_STD, Fused
from bayesact.kernels.resolve import ActivationLike, dual_activation

__all__ = ["InfiniteWidthKernel"]

#: the Args section of NNGPKernel and NTKKernel (quadrature_degree and fused as for nngp)
_ARGS = args_section(
    "activation depth weight_std bias_std weight_std_prior bias_std_prior weight_std_constraint "
    "bias_std_constraint quadrature_degree fused per_layer kwargs",
    activation=(
        "registry name, ``bayesact.activations`` module (its trainable parameters become kernel "
        "hyperparameters), ``DualActivation`` or elementwise callable."
    ),
    depth="number of hidden layers (fixed).",
    weight_std=(
        "initial W_std (learnable, positive; default 1.0 like ``nngp``); with ``per_layer=True`` a "
        "float or a list/tuple of depth + 1 initial values."
    ),
    bias_std="initial b_std (learnable, positive; default 0.1 like ``nngp``), like ``weight_std``.",
    weight_std_prior="optional GPyTorch prior on W_std.",
    bias_std_prior="optional GPyTorch prior on b_std.",
    weight_std_constraint="constraint on W_std (default ``Positive()``).",
    bias_std_constraint="constraint on b_std (default ``Positive()``).",
    per_layer=(
        "learn one W_std and one b_std per Dense layer (shape ``(*batch_shape, 1, depth + 1)``, entry "
        "0 the input layer, entry depth the readout) instead of one shared pair (shape "
        "``(*batch_shape, 1, 1)``)."
    ),
    kwargs="``batch_shape``, ``active_dims`` and the other ``gpytorch.kernels.Kernel`` options.",
)


class InfiniteWidthKernel(Kernel):
    """Base of ``NNGPKernel`` and ``NTKKernel``; subclasses set ``_kernel_fn``.

    Hyperparameters ``weight_std`` and ``bias_std`` have shape ``(*batch_shape, 1, 1)`` (one std
    shared by all Dense layers) or, with ``per_layer=True``, ``(*batch_shape, 1, depth + 1)`` (entry l
    for Dense layer l: 0 the input layer, depth the readout, like an ARD lengthscale), with positive
    constraints; an activation module passed in is registered as a submodule, so its own trainable
    parameters are learned with them.
    """

    has_lengthscale = False
    is_stationary = False
    _kernel_fn: Callable[..., Tensor]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's docstring gets the shared ``Args:`` entries at its ``{args}`` placeholder."""
        super().__init_subclass__(**kwargs)
        if cls.__doc__ is not None and "{args}" in cls.__doc__:
            document(args=_ARGS)(cls)

    def __init__(
        self,
        activation: ActivationLike = "relu",
        depth: int = 3,
        *,
        weight_std: float | Sequence[float] = DEFAULT_WEIGHT_STD,
        bias_std: float | Sequence[float] = DEFAULT_BIAS_STD,
        weight_std_prior: Prior | None = None,
        bias_std_prior: Prior | None = None,
        weight_std_constraint: Interval | None = None,
        bias_std_constraint: Interval | None = None,
        quadrature_degree: int | None = None,
        fused: Fused = DEFAULT_FUSED,
        per_layer: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be an int >= 0 (hidden layers), got {depth!r}")
        dual_activation(activation, quadrature_degree=quadrature_degree)  # fail early
        self.activation = activation
        self.depth = depth
        self.quadrature_degree = quadrature_degree
        self.fused = fused
        self.per_layer = bool(per_layer)
        layers = depth + 1 if self.per_layer else 1
        for name, init, prior, constraint in (
            ("weight_std", weight_std, weight_std_prior, weight_std_constraint),
            ("bias_std", bias_std, bias_std_prior, bias_std_constraint),
        ):
            self.register_parameter(
                f"raw_{name}", nn.Parameter(torch.zeros(*self.batch_shape, 1, layers))
            )
            self.register_constraint(f"raw_{name}", Positive() if constraint is None else constraint)
            if prior is not None:
                if not isinstance(prior, Prior):
                    raise TypeError(f"{name}_prior must be a gpytorch Prior, got {type(prior).__name__}")
                self.register_prior(
                    f"{name}_prior", prior, getattr(self, f"_{name}_param"),
                    getattr(self, f"_{name}_closure"),
                )
            self._set(name, init)

    # ---------------------------------------------------------------- hyperparameters
    def _set(self, name: str, value: float | Sequence[float] | Tensor) -> None:
        raw = getattr(self, f"raw_{name}")
        if isinstance(value, list | tuple):
            if not self.per_layer:
                raise ValueError(f"{name}: a list/tuple of per-layer values needs per_layer=True")
            if len(value) != self.depth + 1:
                raise ValueError(
                    f"{name} has {len(value)} entries; per-layer values need depth + 1 = "
                    f"{self.depth + 1}"
                )
            value = torch.stack([torch.as_tensor(v, dtype=raw.dtype) for v in value]).to(raw.device)
        value = torch.as_tensor(value, dtype=raw.dtype, device=raw.device)
        if not bool((value > 0).all()):
            raise ValueError(f"{name} must be > 0, got {value}")
        constraint = getattr(self, f"raw_{name}_constraint")
        self.initialize(**{f"raw_{name}": constraint.inverse_transform(value.expand_as(raw))})

    def _layer_stds(self, std: Tensor) -> Tensor | tuple[Tensor, ...]:
        """(*batch_shape, 1, L) -> one (*batch_shape) tensor, or a tuple of depth + 1 of them."""
        if self.per_layer:
            return tuple(std[..., 0, layer] for layer in range(self.depth + 1))
        return std[..., 0, 0]

    @property
    def weight_std(self) -> Tensor:
        return self.raw_weight_std_constraint.transform(self.raw_weight_std)

    @weight_std.setter
    def weight_std(self, value: float | Sequence[float] | Tensor) -> None:
        self._set("weight_std", value)

    @property
    def bias_std(self) -> Tensor:
        return self.raw_bias_std_constraint.transform(self.raw_bias_std)

    @bias_std.setter
    def bias_std(self, value: float | Sequence[float] | Tensor) -> None:
        self._set("bias_std", value)

    def _weight_std_param(self, m: InfiniteWidthKernel) -> Tensor:
        return m.weight_std

    def _weight_std_closure(self, m: InfiniteWidthKernel, v: float | Tensor) -> None:
        m._set("weight_std", v)

    def _bias_std_param(self, m: InfiniteWidthKernel) -> Tensor:
        return m.bias_std

    def _bias_std_closure(self, m: InfiniteWidthKernel, v: float | Tensor) -> None:
        m._set("bias_std", v)

    # ---------------------------------------------------------------- kernel
    def forward(
        self,
        x1: Tensor,
        x2: Tensor,
        diag: bool = False,
        last_dim_is_batch: bool = False,
        **params: Any,
    ) -> Tensor:
        if last_dim_is_batch:
            raise ValueError("last_dim_is_batch=True is not supported (deprecated in GPyTorch)")
        return type(self)._kernel_fn(
            x1,
            x2,
            activation=self.activation,
            depth=self.depth,
            weight_std=self._layer_stds(self.weight_std),
            bias_std=self._layer_stds(self.bias_std),
            diag=diag,
            quadrature_degree=self.quadrature_degree,
            fused=self.fused,
        )
