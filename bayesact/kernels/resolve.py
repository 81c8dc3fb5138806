"""From an activation (registry name, module, callable) to its dual: closed form when one exists.

Closed forms, keyed by ``bayesact.activations`` registry names and reading the parameters from the
module (so trainable parameters get gradients): relu, leaky_relu, abrelu, abs, identity, relu2 and
polyrelu (arc-cosine family), erf, gelu and xgelu, sin, siren, snake and fourier (trigonometric
series), gaussian. Every other elementwise activation uses ``HermiteDual``; activations that are not
elementwise (polynorm, the GLUs) have no NNGP of this form and raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from bayesact import activations as A
from bayesact.activations.registry import spec
from bayesact.kernels.arccos import ABReLUDual, RectifiedPolynomialDual
from bayesact.kernels.dual import DualActivation
from bayesact.kernels.erf_gelu import ErfDual, GeluDual
from bayesact.kernels.gaussian import GaussianDual
from bayesact.kernels.hermite import DEFAULT_HERMITE_DEGREE, HermiteDual
from bayesact.kernels.trig import TrigDual

__all__ = ["CLOSED_FORMS", "ActivationLike", "dual_activation"]

ActivationLike = str | nn.Module | DualActivation | Callable[[Tensor], Tensor]
Params = dict[str, Tensor]


def _polyrelu(p: Params) -> DualActivation:
    c = p["coeffs"]
    if c.shape[0] > 9:
        raise ValueError("activation: polyrelu closed form supports at most 9 coefficients")
    return RectifiedPolynomialDual({i: c[i] for i in range(c.shape[0])}, {0: c[0]})


def _snake(p: Params) -> DualActivation:
    a = p["a"]
    half = 0.5 / a
    return TrigDual([2.0 * a], cos=[-half], constant=half, linear=1.0)


def _fourier(p: Params) -> DualActivation:
    c = p["coeffs"]
    freqs = torch.arange(1, c.shape[1] + 1, dtype=c.dtype, device=c.device)
    return TrigDual(freqs, cos=c[0], sin=c[1])


#: registry name -> factory of the closed-form dual from the module's (scalar) parameters
CLOSED_FORMS: dict[str, Callable[[Params], DualActivation]] = {
    "relu": lambda p: ABReLUDual(0.0, 1.0),
    "leaky_relu": lambda p: ABReLUDual(p["negative_slope"], 1.0),
    "abrelu": lambda p: ABReLUDual(p["a"], p["b"]),
    "abs": lambda p: ABReLUDual(-1.0, 1.0),
    "identity": lambda p: ABReLUDual(1.0, 1.0),
    "relu2": lambda p: RectifiedPolynomialDual({2: 1.0}),
    "polyrelu": _polyrelu,
    "erf": lambda p: ErfDual(),
    "gelu": lambda p: GeluDual(),
    "xgelu": lambda p: GeluDual(p["alpha"]),
    "sin": lambda p: TrigDual([1.0], sin=[1.0]),
    "siren": lambda p: TrigDual([p["omega0"]], sin=[1.0]),
    "snake": _snake,
    "fourier": _fourier,
    "gaussian": lambda p: GaussianDual(1.0, -0.5 / (p["s"] * p["s"])),
}


def _shared_params(module: A.Activation) -> Params:
    """The module's numeric parameters without per-channel axes; ValueError if any has them."""
    name = module.name
    event_dims = spec(name).event_dims
    out: Params = {}
    for key, value in module.tensor_params().items():
        event = event_dims.get(key, 0)
        channel_shape = tuple(value.shape[event:])
        if math.prod(channel_shape) != 1:
            raise ValueError(
                f"activation: parameter {key!r} of {name!r} has per-channel shape "
                f"{tuple(value.shape)}; the NNGP/NTK needs one activation shared by all units "
                "(pass scalar parameters)"
            )
        out[key] = value.reshape(value.shape[:event])
    for component in getattr(module, "components", ()):  # a mixture's own modules
        _shared_params(component)
    return out


def dual_activation(
    activation: ActivationLike, *, quadrature_degree: int | None = None
) -> DualActivation:
    """The dual activation of ``activation``: a closed form when one exists, quadrature otherwise.

    Args:
        activation: a registry name (its default parameters, as float64 buffers), a module from
            ``bayesact.activations.get(...)`` (its parameters are used and receive gradients), a
            ``DualActivation`` (returned as is) or any elementwise callable (Hermite quadrature).
        quadrature_degree: Hermite degree for activations without a closed form (default 64).

    Raises:
        ValueError: an activation that is not elementwise, or one with per-channel parameters.
        TypeError: an object that is none of the above.
    """
    if isinstance(activation, DualActivation):
        return activation
    degree = DEFAULT_HERMITE_DEGREE if quadrature_degree is None else quadrature_degree
    if isinstance(activation, str):
        module = A.get(activation, trainable=False).to(torch.float64)
    elif isinstance(activation, A.Activation):
        module = activation
    elif callable(activation):
        return HermiteDual(activation, degree=degree)
    else:
        raise TypeError(
            "activation must be a registry name, a bayesact.activations module, a DualActivation "
            f"or an elementwise callable, got {type(activation).__name__}"
        )
    if not spec(module.name).elementwise:
        raise ValueError(
            f"activation: {module.name!r} is not elementwise (it mixes units), so it has no "
            "NNGP/NTK of the form E[φ(u)φ(v)]"
        )
    params = _shared_params(module)
    factory = CLOSED_FORMS.get(module.name)
    if factory is not None:
        return factory(params)
    return HermiteDual(module, degree=degree)
