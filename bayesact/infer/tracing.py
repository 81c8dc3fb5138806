"""Whether a model's tensors hold data it may read: the samplers' tracing signal for models.

The samplers run a model eagerly first, then may capture it (``make_fx``, ``torch.compile``) or
batch it (``torch.func.vmap``). A captured or batched tensor has no values to read on the host, so a
model's data checks (``bool(torch.isfinite(x).all())``, label ranges) must be skipped there; the
eager call that precedes every capture runs them. :func:`is_concrete` is that test, so a model
needs no torch internals of its own to be sampled::

    if is_concrete(x) and not bool(torch.isfinite(x).all()):
        raise ValueError("'x' contains NaN or inf")
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch._C._functorch import get_unwrapped, is_batchedtensor, is_functorch_wrapped_tensor
from torch._subclasses.fake_tensor import is_fake
from torch.fx.experimental.proxy_tensor import get_proxy_mode

__all__ = ["is_concrete"]


def is_concrete(*tensors: Tensor) -> bool:
    """Whether ``tensors`` hold real values that can be read on the host.

    ``False`` while a graph is being captured (``make_fx`` / proxy tracing, ``torch.compile``'s
    dynamo and AOT tracing), when a tensor is batched by ``torch.func.vmap`` (at any level of
    nested functorch transforms), or when it is a fake or meta tensor. A tensor under
    ``torch.func.grad`` alone is concrete. With no tensors, says whether the call itself is traced.

    Raises:
        TypeError: an argument that is not a tensor.
    """
    for position, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"'tensors' must be tensors, got {type(t).__name__} at position {position}")
    if torch.compiler.is_compiling() or get_proxy_mode() is not None:  # dynamo cannot trace the mode query
        return False
    return not any(_without_values(t) for t in tensors)


def _without_values(t: Tensor) -> bool:
    """A batched (at any functorch level), fake or meta tensor."""
    while is_functorch_wrapped_tensor(t):
        if is_batchedtensor(t):
            return True
        t = get_unwrapped(t)
    return is_fake(t) or t.is_meta
