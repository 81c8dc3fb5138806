"""``NTKKernel``: the neural tangent kernel of an infinitely wide MLP as a GPyTorch kernel."""

from __future__ import annotations

from bayesact.kernels._gp_kernel import InfiniteWidthKernel
from bayesact.kernels.recursion import ntk

__all__ = ["NTKKernel"]


class NTKKernel(InfiniteWidthKernel):
    """NTK Θ^depth of ``stax.serial(*[Dense(W_std, b_std), act] * depth, Dense(W_std, b_std))``.

    Θ⁰ = K⁰, Θ^{l+1} = K^{l+1} + W_std²·E[φ'(u)φ'(v)]·Θ^l, NTK parameterization ("Neural Tangent
    Kernel: Convergence and Generalization in Neural Networks", Jacot, Gabriel & Hongler, NeurIPS
    2018); see :func:`bayesact.kernels.ntk`.

    Args:
        {args}
    """

    _kernel_fn = staticmethod(ntk)
