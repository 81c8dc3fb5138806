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
        {args}

    Example:
        >>> import gpytorch
        >>> covar = gpytorch.kernels.ScaleKernel(NNGPKernel("erf", depth=2))
    """

    _kernel_fn = staticmethod(nngp)
