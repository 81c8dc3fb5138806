"""Cholesky factorisation of kernel matrices with escalating jitter."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


class JitterWarning(RuntimeWarning):
    """Jitter above the first level was needed to factorise a kernel matrix."""


def cholesky_with_jitter(
    matrix: Tensor,
    *,
    jitter: float | None = None,
    max_tries: int = 8,
    factor: float = 10.0,
) -> Tensor:
    """Lower Cholesky factor of ``matrix + ε I``, escalating ε until the factorisation succeeds.

    ε starts at ``jitter`` (default: 1e-6 in float32, 1e-10 in float64, times the mean diagonal)
    and is multiplied by ``factor`` after each failure; a :class:`JitterWarning` reports an ε
    above the starting level. Batch dimensions in front of (n, n) are supported.

    Raises:
        ValueError: non-square or non-finite input, or no ε up to the last try succeeded.
    """
    if matrix.dim() < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"'matrix' must be square (..., n, n), got shape {tuple(matrix.shape)}")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError("'matrix' contains NaN or inf")
    scale = matrix.diagonal(dim1=-2, dim2=-1).abs().mean().clamp(min=torch.finfo(matrix.dtype).tiny)
    start = jitter if jitter is not None else (1e-10 if matrix.dtype == torch.float64 else 1e-6)
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    eps = start
    for attempt in range(max_tries):
        factor_, info = torch.linalg.cholesky_ex(matrix + (eps * scale) * eye)
        if not bool((info != 0).any()):
            if attempt > 0:
                warnings.warn(
                    f"kernel matrix needed jitter {eps:.1e} x mean diagonal to factorise",
                    JitterWarning,
                    stacklevel=2,
                )
            return factor_
        eps *= factor
    raise ValueError(
        f"Cholesky failed with jitter up to {eps / factor:.1e} x mean diagonal: the matrix is not "
        "positive definite (check the kernel and its hyperparameters)"
    )
