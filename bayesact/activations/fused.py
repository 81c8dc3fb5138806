"""The fused path: each activation's forward and backward compiled into single kernels.

An activation ``fn(x, **params)`` runs through an autograd function whose forward is
``torch.compile(fn)`` and whose backward is ``torch.compile`` of its vector-Jacobian product
(``torch.func.vjp``), which recomputes the elementwise intermediates from ``x``. The forward kernel
reads x and writes y; the backward kernel reads x and the incoming gradient and writes the input
gradient (plus the parameter-gradient reductions): the memory-traffic floor, with nothing saved in
between but x itself. Inductor generates C++/OpenMP kernels on CPU and Triton kernels on CUDA.
(Letting AOTAutograd partition a compiled forward instead saves masks or intermediates, which on CPU
made ReLU several times slower than eager.)

Compiled functions are cached per activation and settings for the process. Where compilation is
unavailable (no working compiler, an unsupported Python) the first failure warns once and
everything runs eagerly with identical results.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["FusedFallbackWarning", "call_fused", "fused_available"]


class FusedFallbackWarning(RuntimeWarning):
    """Compilation is unavailable; fused activations run eagerly (identical results, slower)."""


_fallback_reason: str | None = None
_cache: dict[tuple[Any, ...], type[torch.autograd.Function]] = {}


def fused_available() -> bool:
    """False once compilation has failed in this process (the fused path then runs eagerly)."""
    return _fallback_reason is None


def _fall_back(err: BaseException) -> None:
    global _fallback_reason
    if _fallback_reason is None:
        text = str(err).splitlines()[0] if str(err) else ""
        _fallback_reason = f"{type(err).__name__}: {text}"
        warnings.warn(
            f"bayesact: torch.compile is unavailable ({_fallback_reason}); fused activations fall "
            "back to eager PyTorch (same results, no fusion).",
            FusedFallbackWarning,
            stacklevel=4,
        )


def _own_code(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A copy of the closure ``fn`` with its own code object named ``name``.

    Dynamo caches compiled graphs on code objects (at most ``recompile_limit`` per object, then it
    silently runs eagerly), so every activation's closures need their own.
    """
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def _fused_function(
    key: str, fn: Callable[..., Tensor], names: tuple[str, ...], options: Mapping[str, Any]
) -> type[torch.autograd.Function]:
    """An autograd function with compiled forward and compiled vjp backward for ``fn``."""

    def pure(x: Tensor, *values: Tensor) -> Tensor:
        return fn(x, **dict(zip(names, values, strict=True)), **options)

    def vjp(x: Tensor, grad: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
        pullback = torch.func.vjp(pure, x, *values)[1]  # (output, pullback) without has_aux
        return pullback(grad)

    def with_fallback(compiled: Callable[..., Any], eager: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Tensor) -> Any:
            if _fallback_reason is None:
                try:
                    return compiled(*args)
                except Exception as err:  # a compiler failure; eager decides whether input was bad
                    result = eager(*args)  # raises the genuine error for bad input
                    _fall_back(err)
                    return result
            return eager(*args)

        return run

    try:
        label = "".join(c if c.isalnum() else "_" for c in key)
        compiled_pure = torch.compile(_own_code(pure, f"fused_{label}_forward"), dynamic=None)
        compiled_vjp = torch.compile(_own_code(vjp, f"fused_{label}_backward"), dynamic=None)
        forward_kernel = with_fallback(compiled_pure, pure)
        backward_kernel = with_fallback(compiled_vjp, vjp)
    except Exception as err:  # torch.compile itself refused
        _fall_back(err)
        forward_kernel, backward_kernel = pure, vjp

    class Fused(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Tensor, *values: Tensor) -> Tensor:
            ctx.save_for_backward(x, *values)
            with torch.no_grad():
                return forward_kernel(x, *values)

        @staticmethod
        def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
            x, *values = ctx.saved_tensors
            grads = backward_kernel(x, grad.contiguous(), *values)
            return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad, strict=True))

    return Fused


def call_fused(key: str, fn: Callable[..., Tensor], x: Tensor, tensors: Mapping[str, Tensor],
               options: Mapping[str, Any]) -> Tensor:
    """``fn(x, **tensors, **options)`` through compiled forward and backward kernels.

    ``key`` names the activation; compiled functions are cached per key, tensor names and options.
    A failure to compile falls back to eager with one warning per process; an error that eager
    raises too (bad input) propagates unchanged.
    """
    names = tuple(tensors)
    cache_key = (key, names, repr(sorted(options.items())))
    function = _cache.get(cache_key)
    if function is None:
        if not torch._dynamo.is_dynamo_supported():
            _fall_back(RuntimeError("torch.compile is not supported on this Python/platform"))
        function = _fused_function(key, fn, names, dict(options))
        _cache[cache_key] = function
    if _fallback_reason is not None:
        return fn(x, **tensors, **options)
    return function.apply(x, *tensors.values())
