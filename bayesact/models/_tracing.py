"""Tensor checks that survive the samplers' tracing (``make_fx``, ``torch.compile``, ``vmap``).

The data checks of the models read tensor values, which a traced or vmapped tensor does not have:
they run on concrete tensors only (the eager call that precedes every capture runs them).
Follow-up: this reads ``torch._C._functorch.is_batchedtensor`` and the proxy/compile modes; the
inference side should provide a public "is this a tracing call" signal instead.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch._C._functorch import is_batchedtensor
from torch.fx.experimental.proxy_tensor import get_proxy_mode


def concrete(t: Tensor) -> bool:
    """Whether ``t`` holds values a data-dependent check can read: not while the model is traced
    (``make_fx``, ``torch.compile``) or ``t`` is vmapped."""
    return get_proxy_mode() is None and not torch.compiler.is_compiling() and not is_batchedtensor(t)


def all_finite(t: Tensor) -> bool:
    """``isfinite(t).all()`` (one host sync), or ``True`` where ``t`` is not concrete."""
    return not concrete(t) or bool(torch.isfinite(t).all())


def drop_data_slot(value: Tensor, event_dim: int) -> Tensor:
    """A global latent's value without the size-1 batch slot of the data plate (dim -1).

    Under vectorised Predictive or ELBO particles, a latent sampled outside the data plate has batch
    shape (..., particles, 1); the trailing 1 is the data plate's slot, which the network's N
    dimension takes instead.
    """
    return value.squeeze(value.dim() - event_dim - 1) if value.dim() > event_dim else value
