"""``NNGPKernel``: the NNGP of an infinitely wide MLP as a GPyTorch kernel."""

from __future__ import annotations

from bayesact.kernels._gp_kernel import InfiniteWidthKernel
from bayesact.kernels.recursion import nngp

__all__ = ["NNGPKernel"]


class NNGPKernel(InfiniteWidthKernel):
    """NNGP kernel K^depth of ``stax.serial(*[Dense(W_std, b_std), act] * depth, Dense(W_std, b_std))``.

    K⁰ = W_std²·⟨x, x'⟩/d + b_std², K^{l+1} = W_std²·E[φ(u)φ(v)] + b_std² ("Deep Neural Networks as
    Gaussian Processes", Lee et al., ICLR 2018); see :func:`bayesact.kernels.nngp`.

    Args:
        activation: registry name, ``bayesact.activations`` module (its trainable parameters become
            kernel hyperparameters), ``DualActivation`` or elementwise callable.
        depth: number of hidden layers (fixed).
        weight_std: initial W_std (learnable, positive; default 1.0 like ``nngp``); with
            ``per_layer=True`` a float or a list/tuple of depth + 1 initial values.
        bias_std: initial b_std (learnable, positive; default 0.1 like ``nngp``), like ``weight_std``.
        weight_std_prior: optional GPyTorch prior on W_std.
        bias_std_prior: optional GPyTorch prior on b_std.
        weight_std_constraint: constraint on W_std (default ``Positive()``).
        bias_std_constraint: constraint on b_std (default ``Positive()``).
        quadrature_degree: Hermite degree for activations without a closed form.
        fused: compile the layer recursion (``torch.compile``).
        per_layer: learn one W_std and one b_std per Dense layer (shape ``(*batch_shape, 1,
            depth + 1)``, entry 0 the input layer, entry depth the readout) instead of one shared
            pair (shape ``(*batch_shape, 1, 1)``).
        **kwargs: ``batch_shape``, ``active_dims`` and the other ``gpytorch.kernels.Kernel`` options.

    Example:
        >>> import gpytorch
        >>> covar = gpytorch.kernels.ScaleKernel(NNGPKernel("erf", depth=2))
    """

    _kernel_fn = staticmethod(nngp)
