"""The activation registry: one :class:`ActivationSpec` per registered name.

An activation is registered by decorating its pure function with :func:`activation`. The function's
signature is the single source of truth for parameter names and defaults (the arguments after ``x``:
keyword-only ones, plus positional-or-keyword ones for required arguments such as ``topk_softmax``'s
``k``; a parameter without a default is required); its docstring carries the ``Formula:`` and
``Paper:`` lines shown by :func:`info` and in the docs.
The decorator returns the *checked* public function (argument validation, parameters converted to
tensors of ``x``'s dtype and device); the raw function stays available as ``spec.fn`` for modules and
compiled paths, which validate once at construction instead of on every call.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

Smoothness = Literal["discontinuous", "C0", "C1", "C2", "C-inf"]
Kind = Literal["activation", "probability_map"]
#: The signature default of a required parameter (e.g. ``topk_softmax``'s ``k``).
REQUIRED = inspect.Parameter.empty
SMOOTHNESS_ORDER: dict[str, int] = {"discontinuous": -1, "C0": 0, "C1": 1, "C2": 2, "C-inf": 3}
Number = float | int
ParamValue = Number | Sequence[Number] | Tensor


@dataclass(frozen=True)
class Constraint:
    """A constraint on a numeric parameter, e.g. ``positive``.

    ``to_value`` maps an unconstrained raw tensor into the domain and ``to_raw`` inverts it (GPyTorch's
    ``raw_*`` convention): a trainable module stores ``raw_<name>`` as its ``nn.Parameter`` and exposes
    ``<name> = to_value(raw_<name>)``, so optimisers cannot leave the domain. Constraints without a
    transform (``real``) are checked only.
    """

    description: str
    check: Callable[[Tensor], Tensor]
    to_value: Callable[[Tensor], Tensor] | None = None
    to_raw: Callable[[Tensor], Tensor] | None = None

    def __call__(self, value: Tensor) -> bool:
        return bool(self.check(value).all())


def _tiny(t: Tensor) -> float:
    return torch.finfo(t.dtype).tiny


def softplus_to_positive(raw: Tensor) -> Tensor:
    """softplus(raw), floored at the dtype's smallest normal number so that it never underflows to 0."""
    return torch.clamp(torch.logaddexp(raw, torch.zeros_like(raw)), min=_tiny(raw))


def positive_to_softplus_raw(value: Tensor) -> Tensor:
    """The inverse of :func:`softplus_to_positive`: log(expm1(v)) = v + log(-expm1(-v)), stably."""
    v = torch.clamp(value, min=_tiny(value))
    return v + torch.log(-torch.expm1(-v))


def _sigmoid_to_unit(raw: Tensor) -> Tensor:
    return torch.sigmoid(raw)


def _unit_to_logit(value: Tensor) -> Tensor:
    v = torch.clamp(value, min=_tiny(value), max=1 - torch.finfo(value.dtype).eps / 2)
    return torch.log(v) - torch.log1p(-v)


positive = Constraint("> 0", lambda v: v > 0, softplus_to_positive, positive_to_softplus_raw)
# 0 itself is stored as the smallest normal number (raw stays finite, so weight decay cannot give NaN)
nonnegative = Constraint(">= 0", lambda v: v >= 0, softplus_to_positive, positive_to_softplus_raw)
unit_interval = Constraint("in [0, 1]", lambda v: (v >= 0) & (v <= 1), _sigmoid_to_unit, _unit_to_logit)
real = Constraint("finite", lambda v: torch.isfinite(v))


@dataclass(frozen=True)
class ActivationInfo:
    """What :func:`info` reports about an activation."""

    name: str
    summary: str
    formula: str
    paper: str
    params: Mapping[str, Any]
    options: Mapping[str, Any]
    smoothness: Smoothness
    hmc_safe: bool
    elementwise: bool
    kind: Kind = "activation"


SmoothnessRule = Smoothness | Callable[[Mapping[str, Any]], Smoothness]


@dataclass(frozen=True)
class ActivationSpec:
    """Everything the library knows about one activation."""

    name: str
    fn: Callable[..., Tensor]
    formula: str
    paper: str
    summary: str
    numeric: tuple[str, ...]
    options: tuple[str, ...]
    defaults: Mapping[str, Any]
    constraints: Mapping[str, Constraint]
    event_dims: Mapping[str, int]
    smoothness_rule: SmoothnessRule
    elementwise: bool
    default_factories: Mapping[str, Callable[[Mapping[str, Any]], Any]] = field(
        default_factory=dict
    )
    option_check: Callable[[Mapping[str, Any]], None] | None = None
    values_check: Callable[[Mapping[str, Any]], None] | None = None
    native: bool = False
    kind: Kind = "activation"
    param_shape: Callable[[tuple[int, ...]], tuple[int, ...] | None] | None = None

    # ---------------------------------------------------------------- binding and validation
    def bind(
        self,
        params: Mapping[str, Any],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
        allow_missing: bool = False,
    ) -> dict[str, Any]:
        """Validate ``params`` and fill defaults; numeric values become tensors.

        Numeric values become tensors of ``dtype`` (default: a floating tensor keeps its dtype, anything
        else gets torch's default dtype) on ``device``. With ``allow_missing`` (used by :meth:`info`)
        a required parameter that is not given is ``None`` instead of an error.

        Raises:
            TypeError: an unknown parameter name, a missing required one or a non-numeric value.
            ValueError: a value outside the parameter's constraint.
        """
        unknown = sorted(set(params) - set(self.numeric) - set(self.options))
        if unknown:
            valid = ", ".join(self.numeric + self.options) or "none"
            raise TypeError(
                f"{self.name}() got unexpected parameter(s) {', '.join(map(repr, unknown))}; "
                f"valid parameters: {valid}"
            )
        missing = [k for k in self.numeric + self.options if k not in params and self.defaults[k] is REQUIRED]
        if missing and not allow_missing:
            raise TypeError(f"{self.name}() missing required parameter(s) {', '.join(map(repr, missing))}")
        options = {k: params.get(k, self.defaults[k]) for k in self.options}
        if missing:  # info() without the required values: those are None, nothing is cross-checked
            partial: dict[str, Any] = {k: None if k in missing else v for k, v in options.items()}
            for key in self.numeric:
                raw = None if key in missing else params.get(key, self.defaults[key])
                partial[key] = None if raw is None else self.to_tensor(key, raw, dtype, device)
            return partial
        if self.option_check is not None:
            self.option_check(options)
        values: dict[str, Any] = dict(options)
        for key in self.numeric:
            raw = params.get(key, self.defaults[key])
            if raw is None and key in self.default_factories:
                raw = self.default_factories[key](options)
            values[key] = self.to_tensor(key, raw, dtype, device)
        if self.values_check is not None:
            self.values_check(values)
        return values

    def check_shapes(self, x: Tensor, values: Mapping[str, Tensor]) -> None:
        """``ValueError`` unless every numeric parameter broadcasts against ``x`` (shapes only, no sync).

        A parameter's dimensions after its event dimensions are per-channel and align with ``x``'s
        trailing dimensions (the halves of a GLU's last dimension for gated units); each must equal the
        input's size there or be 1.
        """
        target = tuple(x.shape) if self.param_shape is None else self.param_shape(tuple(x.shape))
        if target is None:  # the function itself rejects this input shape
            return
        for key in self.numeric:
            shape = tuple(values[key].shape[self.event_dims.get(key, 0) :])
            for i in range(1, min(len(shape), len(target)) + 1):
                have, want = shape[-i], target[-i]
                if have != want and have != 1 and want != 1:
                    where = "its last dimension" if i == 1 else f"dimension {-i}"
                    raise ValueError(
                        f"{self.name}: parameter {key!r} has length {have} along dimension {-i} "
                        f"(shape {shape}), but the input has {want} channels in {where} (input shape "
                        f"{tuple(x.shape)}); a per-channel parameter needs one value per channel, or 1"
                    )

    def to_tensor(
        self, key: str, raw: Any, dtype: torch.dtype | None, device: torch.device | None
    ) -> Tensor:
        """One numeric parameter as a tensor, checked (finite, its constraint, its event dimensions)."""
        if isinstance(raw, Tensor):
            if raw.is_complex() or raw.dtype == torch.bool:
                raise TypeError(f"{self.name}: parameter {key!r} must be a real tensor")
            if dtype is None:  # keep a floating tensor's own dtype
                dtype = raw.dtype if raw.is_floating_point() else torch.get_default_dtype()
            value = raw.to(dtype=dtype, device=device)
        else:
            try:
                value = torch.as_tensor(
                    raw, dtype=dtype or torch.get_default_dtype(), device=device
                )
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(
                    f"{self.name}: parameter {key!r} must be a number, a sequence of numbers or a "
                    f"tensor, got {type(raw).__name__}"
                ) from err
        event = self.event_dims.get(key, 0)
        if value.dim() < event:
            raise ValueError(
                f"{self.name}: parameter {key!r} needs at least {event} dimension(s), "
                f"got shape {tuple(value.shape)}"
            )
        if not real(value.detach()):
            raise ValueError(f"{self.name}: parameter {key!r} must be finite")
        constraint = self.constraints.get(key)
        if constraint is not None and not constraint(value.detach()):
            raise ValueError(f"{self.name}: parameter {key!r} must be {constraint.description}")
        return value

    # ---------------------------------------------------------------- reporting
    def smoothness(self, values: Mapping[str, Any]) -> Smoothness:
        rule = self.smoothness_rule
        return rule if isinstance(rule, str) else rule(values)

    def info(self, params: Mapping[str, Any] | None = None) -> ActivationInfo:
        values = self.bind(params or {}, dtype=torch.float64, allow_missing=True)
        smooth = self.smoothness(values)
        return ActivationInfo(
            name=self.name,
            summary=self.summary,
            formula=self.formula,
            paper=self.paper,
            params={k: _display(values[k]) for k in self.numeric},
            options={k: values[k] for k in self.options},
            smoothness=smooth,
            hmc_safe=SMOOTHNESS_ORDER[smooth] >= SMOOTHNESS_ORDER["C1"],
            elementwise=self.elementwise,
            kind=self.kind,
        )


def _display(value: Tensor | None) -> float | tuple[Any, ...] | None:
    """A tensor default as a plain Python number or nested tuple (for info and docs); None if required."""
    if value is None:
        return None
    if value.dim() == 0:
        return float(value)

    def to_tuple(v: Tensor) -> Any:
        return tuple(to_tuple(r) for r in v) if v.dim() > 1 else tuple(float(t) for t in v)

    return to_tuple(value)


_REGISTRY: dict[str, ActivationSpec] = {}


def docstring_field(doc: str, label: str, name: str) -> str:
    """The text after ``label:`` in a docstring, continuation lines joined."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(f"{label}:"):
            parts = [stripped[len(label) + 1 :].strip()]
            # continuation lines: indented text up to the next blank line or field
            for nxt in lines[i + 1 :]:
                s = nxt.strip()
                if not s or s.endswith(":") or s.split(":")[0] in {"Formula", "Paper", "Args"}:
                    break
                parts.append(s)
            return " ".join(parts)
    raise ValueError(f"activation {name!r}: its docstring needs a '{label}:' line")


def activation(
    *,
    smoothness: SmoothnessRule,
    constraints: Mapping[str, Constraint] | None = None,
    options: Sequence[str] = (),
    event_dims: Mapping[str, int] | None = None,
    default_factories: Mapping[str, Callable[[Mapping[str, Any]], Any]] | None = None,
    option_check: Callable[[Mapping[str, Any]], None] | None = None,
    values_check: Callable[[Mapping[str, Any]], None] | None = None,
    elementwise: bool = True,
    native: bool = False,
    kind: Kind = "activation",
    param_shape: Callable[[tuple[int, ...]], tuple[int, ...] | None] | None = None,
    name: str | None = None,
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register a pure activation function; returns its checked public version.

    Args:
        smoothness: "C0", "C1", "C2" or "C-inf", or a rule mapping bound parameters to one.
        constraints: per-parameter constraints (see :data:`positive` and friends).
        options: keyword arguments that are settings, not numeric parameters (never trainable).
        event_dims: leading dimensions of coefficient parameters that do not broadcast against ``x``.
        default_factories: for parameters whose signature default is ``None``, a function of the
            options that computes the default (e.g. rational coefficients fitted to leaky ReLU).
        option_check: validates the options (raises ``ValueError``/``TypeError``), before defaults
            are computed from them.
        values_check: validates all bound values together (e.g. coefficient counts against degrees).
        elementwise: ``False`` for activations that mix entries (GLUs, PolyNorm).
        native: the function is one native PyTorch kernel in each direction (e.g. ``F.gelu`` and
            its backward), so the fused path uses it as is.
        kind: ``"activation"`` or ``"probability_map"`` (softmax and friends; see :func:`names`).
        param_shape: maps the input's shape to the shape per-channel parameters align with (``None``
            for an input the function rejects itself); default: the input's shape.
        name: registry name; defaults to the function's name.
    """

    def decorate(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        key = name or fn.__name__
        doc = inspect.getdoc(fn) or ""
        sig = inspect.signature(fn)
        after_x = list(sig.parameters.values())[1:]
        positional = [p.name for p in after_x if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        kw = [p for p in after_x if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                               inspect.Parameter.KEYWORD_ONLY)]
        defaults = {p.name: p.default for p in kw}
        option_names = tuple(options)
        missing = [o for o in option_names if o not in defaults]
        if missing:
            raise ValueError(f"activation {key!r}: options {missing} are not in its signature")
        spec = ActivationSpec(
            name=key,
            fn=fn,
            formula=docstring_field(doc, "Formula", key),
            paper=docstring_field(doc, "Paper", key),
            summary=doc.splitlines()[0] if doc else key,
            numeric=tuple(p.name for p in kw if p.name not in option_names),
            options=option_names,
            defaults=defaults,
            constraints=dict(constraints or {}),
            event_dims=dict(event_dims or {}),
            smoothness_rule=smoothness,
            elementwise=elementwise,
            default_factories=dict(default_factories or {}),
            option_check=option_check,
            values_check=values_check,
            native=native,
            kind=kind,
            param_shape=param_shape,
        )
        if key in _REGISTRY:
            raise ValueError(f"activation {key!r} is registered twice")
        _REGISTRY[key] = spec

        @functools.wraps(fn)
        def checked(x: Tensor, *args: Any, **params: Any) -> Tensor:
            if len(args) > len(positional):
                raise TypeError(f"{key}() takes {len(positional) + 1} positional argument(s) but "
                                f"{len(args) + 1} were given; pass parameters by keyword")
            for arg_name, value in zip(positional, args, strict=False):
                if arg_name in params:
                    raise TypeError(f"{key}() got multiple values for argument {arg_name!r}")
                params[arg_name] = value
            check_input(x, key)
            values = spec.bind(params, dtype=x.dtype, device=x.device)
            spec.check_shapes(x, values)
            return fn(x, **values)

        return checked

    return decorate


def check_input(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` is a real floating-point tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: argument 'x' must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: argument 'x' must be a floating-point tensor, got {x.dtype}")


def spec(name: str) -> ActivationSpec:
    """The registry entry for ``name``; ``ValueError`` listing the closest names if unknown."""
    if not isinstance(name, str):
        raise TypeError(f"activation name must be a str, got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.4)
        hint = f"closest: {', '.join(close)}" if close else "see bayesact.activations.names()"
        raise ValueError(f"unknown activation {name!r}; {hint}") from None


def names(kind: Kind | None = "activation") -> list[str]:
    """Registered names, sorted: the activations (default), the ``"probability_map"``s, or all (None)."""
    if kind not in ("activation", "probability_map", None):
        raise ValueError(f"names: 'kind' must be 'activation', 'probability_map' or None, got {kind!r}")
    return sorted(n for n, s in _REGISTRY.items() if kind is None or s.kind == kind)


def info(name: str, **params: Any) -> ActivationInfo:
    """Formula, paper, parameters with defaults, smoothness class and HMC safety of ``name``.

    Smoothness can depend on parameters (ELU is C1 only for ``alpha=1``; Elephant is C-inf for even
    integer ``d``), so pass parameters to get the class at those values.
    """
    return spec(name).info(params)


def min_smoothness(classes: Sequence[Smoothness]) -> Smoothness:
    """The weakest of several smoothness classes."""
    return min(classes, key=SMOOTHNESS_ORDER.__getitem__)


def smoothness_of_power_series(coeffs: Tensor) -> Smoothness:
    """Smoothness of sum_i c_i * relu(x)^i: C_{i-1} for the lowest non-zero power i >= 1."""
    flat = coeffs.reshape(coeffs.shape[0], -1)
    for power in range(1, flat.shape[0]):
        if bool((flat[power] != 0).any()):
            return ("C0", "C1", "C2")[min(power - 1, 2)]
    return "C-inf"

