"""Activation modules: an activation with its parameters as ``nn.Parameter``s (or buffers).

State-dict naming: a trainable parameter with a constrained domain (``smelu``'s ``beta > 0``, ``elu``'s
``alpha >= 0``, mixture weights on the simplex, ...) is stored unconstrained as ``raw_<name>`` (GPyTorch's
convention) and read as ``<name>``; every other parameter, and every buffer of a ``trainable=False``
module, is stored under its own name. ``load_state_dict`` converts between the two forms, so a
trainable module loads a frozen module's (or an older) state dict and vice versa.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from ._composite import mixture_of
from .fused import FusedMode, call_fused, check_fused
from .registry import ActivationInfo, Constraint, check_input, spec

RAW_PREFIX = "raw_"

__all__ = ["Activation", "MixtureActivation", "get"]


class Activation(nn.Module):
    """A registered activation as a module.

    Numeric parameters are attributes (``nn.Parameter`` when ``trainable``, buffers otherwise) and
    broadcast against the input, so a tensor of shape (C,) gives per-channel parameters for inputs
    (..., C); a length that matches no input channel count is a ``ValueError`` naming the parameter.
    They are cast to the input's dtype on the fly, so the output keeps the input's dtype.
    Settings that are not numeric (e.g. a rational's degrees) are in ``options``. With ``fused=True``
    forward and backward run as compiled kernels, with ``fused="auto"`` once compiled in the
    background for large inputs (see :mod:`bayesact.activations.fused`).

    A trainable parameter with a constrained domain is stored as the ``nn.Parameter`` ``raw_<name>``
    and ``<name>`` is computed from it (softplus for ``> 0`` and ``>= 0``, sigmoid for ``[0, 1]``,
    softmax over the first dimension for the simplex), so no optimiser step can leave the domain; the
    initial value is the given one to float rounding. Assigning ``module.<name> = tensor`` validates
    the value and sets the raw parameter to match.
    """

    def __init__(self, name: str, *, trainable: bool = True, fused: FusedMode = False, **params: Any):
        super().__init__()
        if not isinstance(trainable, bool):
            raise TypeError(f"get: 'trainable' must be a bool, got {type(trainable).__name__}")
        check_fused(fused, "get")
        entry = spec(name)
        values = entry.bind(params)
        self.name = name
        self.fused = fused
        self.options: dict[str, Any] = {k: values[k] for k in entry.options}
        self._numeric: tuple[str, ...] = entry.numeric
        constrained: list[str] = []  # names only (constraints hold lambdas; modules must pickle)
        for key in entry.numeric:
            value = values[key].detach().clone()
            constraint = entry.constraints.get(key)
            if trainable and constraint is not None and constraint.to_raw is not None:
                self.register_parameter(RAW_PREFIX + key, nn.Parameter(constraint.to_raw(value)))
                constrained.append(key)
            elif trainable:
                self.register_parameter(key, nn.Parameter(value))
            else:
                self.register_buffer(key, value)
        self._constrained: tuple[str, ...] = tuple(constrained)

    def _constraint(self, name: str) -> Constraint:
        return spec(self.name).constraints[name]

    def __getattr__(self, name: str) -> Any:
        try:  # parameters, buffers, submodules, and a Pyro prior set on the name (PyroSample)
            return super().__getattr__(name)
        except AttributeError:
            constrained = self.__dict__.get("_constrained")
            if constrained is None or name not in constrained:
                raise
        to_value = self._constraint(name).to_value
        assert to_value is not None
        return to_value(cast(Tensor, super().__getattr__(RAW_PREFIX + name)))

    def __setattr__(self, name: str, value: Any) -> None:
        constrained = self.__dict__.get("_constrained")
        if constrained is not None and name in constrained and isinstance(value, Tensor):
            raw = cast(Tensor, super().__getattr__(RAW_PREFIX + name))
            checked = spec(self.name).to_tensor(name, value.detach(), raw.dtype, raw.device)
            if checked.shape != raw.shape:
                raise ValueError(f"{self.name}: parameter {name!r} has shape {tuple(raw.shape)}, "
                                 f"got a value of shape {tuple(checked.shape)}")
            to_raw = self._constraint(name).to_raw
            assert to_raw is not None
            with torch.no_grad():
                raw.copy_(to_raw(checked))
            return
        super().__setattr__(name, value)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Accept ``<name>`` for ``raw_<name>`` and the reverse (frozen, trainable and older state dicts)."""
        for key, constraint in spec(self.name).constraints.items():
            plain, raw = prefix + key, prefix + RAW_PREFIX + key
            if key in self._constrained and plain in state_dict and raw not in state_dict:
                assert constraint.to_raw is not None
                state_dict[raw] = constraint.to_raw(state_dict.pop(plain))
            elif (key not in self._constrained and raw in state_dict and plain not in state_dict
                  and constraint.to_value is not None):
                state_dict[plain] = constraint.to_value(state_dict.pop(raw))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def tensor_params(self) -> dict[str, Tensor]:
        """Current numeric parameters, by name."""
        return {k: getattr(self, k) for k in self._numeric}

    def info(self) -> ActivationInfo:
        """:func:`bayesact.activations.info` at this module's current parameter values."""
        values = {k: v.detach() for k, v in self.tensor_params().items()}
        return spec(self.name).info({**values, **self.options})

    def _cast_params(self, x: Tensor) -> dict[str, Tensor]:
        return {k: getattr(self, k).to(dtype=x.dtype) for k in self._numeric}

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.name)
        entry = spec(self.name)
        params = self._cast_params(x)
        entry.check_shapes(x, params)
        if self.fused and not entry.native:
            return call_fused(self.name, entry.fn, x, params, self.options, self.fused)
        return entry.fn(x, **params, **self.options)

    def extra_repr(self) -> str:
        parts = [repr(self.name)]
        for key, value in self.tensor_params().items():
            shown = f"{value.item():.4g}" if value.numel() == 1 else f"shape={tuple(value.shape)}"
            parts.append(f"{key}={shown}")
        parts += [f"{k}={v!r}" for k, v in self.options.items()]
        if self.fused:
            parts.append(f"fused={self.fused!r}")
        return ", ".join(parts)


def _mixture_eval(
    x: Tensor,
    *,
    names: Sequence[str],
    component_options: Sequence[tuple[tuple[str, Any], ...]],
    weights: Tensor,
    **component_params: Tensor,
) -> Tensor:
    """sum_k weights[k] * φ_k(x); component k's parameters are passed flat as ``"{k}.{name}"``."""
    outputs = []
    for k, (name, options) in enumerate(zip(names, component_options, strict=True)):
        prefix = f"{k}."
        params = {key[len(prefix) :]: v for key, v in component_params.items() if key.startswith(prefix)}
        outputs.append(spec(name).fn(x, **params, **dict(options)))
    return mixture_of(x, weights, outputs)


class MixtureActivation(Activation):
    """``get("mixture", names=..., weights=...)``: its components are trainable modules too."""

    def __init__(self, name: str = "mixture", *, trainable: bool = True, fused: FusedMode = False,
                 **params: Any):
        super().__init__(name, trainable=trainable, fused=fused, **params)
        self.components = nn.ModuleList(
            Activation(n, trainable=trainable) for n in self.options["names"]
        )

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.name)
        tensors = {"weights": self.weights.to(dtype=x.dtype)}
        spec(self.name).check_shapes(x, tensors)
        components = cast("list[Activation]", list(self.components))  # ModuleList items are typed Module
        for k, component in enumerate(components):
            params = component._cast_params(x)
            spec(component.name).check_shapes(x, params)
            tensors.update({f"{k}.{key}": v for key, v in params.items()})
        options: dict[str, Any] = {
            "names": tuple(self.options["names"]),
            "component_options": tuple(tuple(sorted(c.options.items())) for c in components),
        }
        if self.fused:
            return call_fused("mixture", _mixture_eval, x, tensors, options, self.fused)
        return _mixture_eval(x, **tensors, **options)


_MODULE_CLASSES: dict[str, type[Activation]] = {"mixture": MixtureActivation}


def get(name: str, *, trainable: bool = True, fused: FusedMode = False, **params: Any) -> Activation:
    """The activation ``name`` as a module with the given parameters (defaults otherwise).

    Args:
        name: a registered name (see :func:`bayesact.activations.names`).
        trainable: parameters are ``nn.Parameter``s when True, buffers when False.
        fused: True runs forward and backward as compiled kernels (compiled at the first call;
            falls back to eager with a warning where compilation is unavailable); "auto" runs
            eagerly until an input of at least ``AUTO_MIN_ELEMENTS`` elements has been seen a few
            times, then compiles in the background; False is eager.
        **params: the activation's parameters; tensors give per-channel values.

    Raises:
        ValueError: unknown name (the message lists the closest names) or an invalid parameter value.
        TypeError: an unknown parameter name or a value of the wrong type.
    """
    spec(name)  # fail early with the closest names
    return _MODULE_CLASSES.get(name, Activation)(name, trainable=trainable, fused=fused, **params)

