"""The fused path: each activation's forward and backward compiled into single kernels.

An activation ``fn(x, **params)`` runs through an autograd function whose forward is
``torch.compile(fn)`` and whose backward is ``torch.compile`` of its vector-Jacobian product
(``torch.func.vjp``), which recomputes the elementwise intermediates from ``x``. The forward kernel
reads x and writes y; the backward kernel reads x and the incoming gradient and writes the input
gradient (plus the parameter-gradient reductions): the memory-traffic floor, with nothing saved in
between but x itself. Inductor generates C++/OpenMP kernels on CPU and Triton kernels on CUDA.
(Letting AOTAutograd partition a compiled forward instead saves masks or intermediates, which on CPU
made ReLU several times slower than eager.)

Compilation goes through the library's compile policy (:mod:`bayesact.compilation`): each
direction is compiled once per activation and settings, verified against eager on its first
inputs, cached for the process (and Inductor's artifacts on disk, so the next process skips the
compiler), and turned off by ``BAYESACT_COMPILE=0`` or ``bayesact.compilation.set_enabled(False)``.
Where compilation is unavailable (no working compiler, an unsupported Python) or a compiled kernel
disagrees with eager, one warning is emitted and everything runs eagerly with identical results.

``fused="auto"``: inputs under :data:`AUTO_MIN_ELEMENTS` elements run eagerly (a compiled call's
fixed cost exceeds the fusion gain there); larger ones run eagerly until the activation has been
called :data:`~bayesact.compilation.AUTO_MIN_CALLS` times, then each direction compiles in a
background thread and the fused path takes over once verified: no call waits for the compiler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from bayesact import compilation
from bayesact.compilation import Compiled, CompileFallbackWarning

__all__ = [
    "AUTO_MIN_ELEMENTS", "FusedFallbackWarning", "FusedMode", "call_fused", "check_fused", "fused_available",
]

#: the policy: True (compile at the first call), False (eager), "auto" (compile in the background)
FusedMode = bool | Literal["auto"]

#: with ``fused="auto"``, inputs smaller than this run eagerly
AUTO_MIN_ELEMENTS = 1 << 16

#: the warning of a fused activation falling back to eager (the compile policy's warning)
FusedFallbackWarning = CompileFallbackWarning


def check_fused(value: object, caller: str) -> None:
    """TypeError unless ``value`` is True, False or "auto"."""
    if not (isinstance(value, bool) or value == "auto"):
        raise TypeError(f"{caller}: 'fused' must be True, False or 'auto', got {value!r}")


@dataclass
class _Kernels:
    forward: Compiled
    backward: Compiled
    function: type[torch.autograd.Function]


_cache: dict[tuple[Any, ...], _Kernels] = {}


def fused_available() -> bool:
    """False when compilation is off or a fused activation fell back to eager in this process."""
    return compilation.is_enabled() and not any(
        "failed" in (k.forward.state, k.backward.state) for k in _cache.values()
    )


def _kernels(key: str, fn: Callable[..., Tensor], names: tuple[str, ...], options: Mapping[str, Any],
             policy: Literal["always", "auto"]) -> _Kernels:
    """Compiled forward and vjp backward of ``fn`` and the autograd function that runs them."""

    def pure(x: Tensor, *values: Tensor) -> Tensor:
        return fn(x, **dict(zip(names, values, strict=True)), **options)

    def vjp(x: Tensor, grad: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
        pullback = torch.func.vjp(pure, x, *values)[1]  # (output, pullback) without has_aux
        return tuple(pullback(grad))

    label = "".join(c if c.isalnum() else "_" for c in key)
    forward = compilation.compiled(pure, name=f"fused_{label}_forward", policy=policy)
    backward = compilation.compiled(vjp, name=f"fused_{label}_backward", policy=policy)

    class Fused(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Tensor, *values: Tensor) -> Tensor:
            ctx.save_for_backward(x, *values)
            with torch.no_grad():
                return forward.run(x.detach(), *(v.detach() for v in values))

        @staticmethod
        def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
            x, *values = ctx.saved_tensors
            with torch.no_grad():
                grads = backward(x.detach(), grad.detach().contiguous(), *(v.detach() for v in values))
            return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad, strict=True))

    return _Kernels(forward, backward, Fused)


def call_fused(key: str, fn: Callable[..., Tensor], x: Tensor, tensors: Mapping[str, Tensor],
               options: Mapping[str, Any], mode: FusedMode = True) -> Tensor:
    """``fn(x, **tensors, **options)`` through compiled forward and backward kernels.

    ``key`` names the activation; compiled functions are cached per key, tensor names, options
    and ``mode`` (True: compile at the first call; "auto": see the module docstring; False:
    eager). A failure to compile falls back to eager with one warning per process; an error
    that eager raises too (bad input) propagates unchanged.
    """
    if mode is False or (mode == "auto" and x.numel() < AUTO_MIN_ELEMENTS):
        return fn(x, **tensors, **options)
    policy: Literal["always", "auto"] = "auto" if mode == "auto" else "always"
    names = tuple(tensors)
    cache_key = (key, names, repr(sorted(options.items())), policy)
    kernels = _cache.get(cache_key)
    if kernels is None:
        kernels = _cache[cache_key] = _kernels(key, fn, names, dict(options), policy)
    values = tuple(tensors.values())
    with torch.no_grad():
        ready = kernels.forward.prepare(x.detach(), *(v.detach() for v in values))
    if not ready:
        return fn(x, **tensors, **options)
    return kernels.function.apply(x, *values)
