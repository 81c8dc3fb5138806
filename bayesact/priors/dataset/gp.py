"""A fast Gaussian-process dataset prior: all datasets' kernel matrices factorised in one batched call."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Uniform

from bayesact.kernels.cholesky import cholesky_with_jitter

from .._checks import check_int
from ._common import (
    Parameter,
    XSampler,
    check_parameter,
    check_sizes,
    check_x_sampler,
    draw_parameter,
    sample_x,
    seeded,
)


def _rbf(r: Tensor) -> Tensor:
    return torch.exp(-0.5 * r.square())


def _matern12(r: Tensor) -> Tensor:
    return torch.exp(-r)


def _matern32(r: Tensor) -> Tensor:
    s = math.sqrt(3.0) * r
    return (1.0 + s) * torch.exp(-s)


def _matern52(r: Tensor) -> Tensor:
    s = math.sqrt(5.0) * r
    return (1.0 + s + s.square() / 3.0) * torch.exp(-s)


#: stationary correlation functions k(r) of the scaled distance r = ‖(x - x') / ℓ‖
KERNELS: dict[str, Callable[[Tensor], Tensor]] = {
    "rbf": _rbf, "matern12": _matern12, "matern32": _matern32, "matern52": _matern52,
}


class GPDatasetPrior:
    """Datasets from a zero-mean GP with stationary kernel, hyperparameters fixed or drawn per dataset.

    y = f(x) + σ ε with f ~ GP(0, s·k(‖(x - x')/ℓ‖)), so y ~ N(0, K + σ² I), K_ij = s·k(r_ij). The
    B matrices K + σ²I are built and factorised in one batched Cholesky (in ``compute_dtype``,
    float64 by default) and y = L z. Kernels: ``"rbf"`` k = exp(-r²/2), ``"matern12"`` exp(-r),
    ``"matern32"`` (1 + √3 r)e^{-√3 r}, ``"matern52"`` (1 + √5 r + 5r²/3)e^{-√5 r}.

    Lengthscale ℓ, outputscale s and noise std σ are each a number or a distribution drawn once
    per dataset (hyperpriors, as in Müller et al. 2022, §5.2, e.g. ``lengthscale=Gamma(3., 6.)``).
    A lengthscale distribution with batch shape (d,) (or ``ard=True`` with a scalar one) gives one
    lengthscale per input dimension.

    Args:
        num_features: input dimension d.
        kernel: one of :data:`KERNELS`.
        lengthscale: ℓ > 0, a number or a distribution.
        outputscale: s > 0, a number or a distribution.
        noise_std: σ >= 0, a number or a distribution.
        x_sampler: inputs (default: x ~ U[0, 1]^d).
        ard: draw a scalar lengthscale distribution independently per input dimension.
        dtype: dtype of the returned x and y (default: torch's default float dtype).
        compute_dtype: dtype of the kernel matrix and its Cholesky factor.
        device: where x is moved and the kernel is computed (default: where ``x_sampler`` puts x).
    """

    def __init__(
        self,
        num_features: int,
        *,
        kernel: str = "rbf",
        lengthscale: Parameter = 0.6,
        outputscale: Parameter = 1.0,
        noise_std: Parameter = 0.1,
        x_sampler: XSampler | None = None,
        ard: bool = False,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        self.num_features = check_int(num_features, "num_features")
        if kernel not in KERNELS:
            raise ValueError(f"'kernel' must be one of {sorted(KERNELS)}, got {kernel!r}")
        self.kernel = kernel
        self.lengthscale = check_parameter(lengthscale, "lengthscale")
        self.outputscale = check_parameter(outputscale, "outputscale")
        self.noise_std = check_parameter(noise_std, "noise_std", allow_zero=True)
        if x_sampler is None:
            d = self.num_features
            x_sampler = Independent(Uniform(torch.zeros(d), torch.ones(d)), 1)
        self.x_sampler = check_x_sampler(x_sampler)
        if not isinstance(ard, bool):
            raise ValueError(f"'ard' must be a bool, got {ard!r}")
        self.ard = ard
        for name, value in (("dtype", dtype), ("compute_dtype", compute_dtype)):
            if value is not None and not (isinstance(value, torch.dtype) and value.is_floating_point):
                raise ValueError(f"'{name}' must be a floating torch.dtype, got {value!r}")
        self.dtype = dtype
        self.compute_dtype = compute_dtype
        self.device = None if device is None else torch.device(device)

    def __repr__(self) -> str:
        return (f"GPDatasetPrior(num_features={self.num_features}, kernel={self.kernel!r}, "
                f"lengthscale={self.lengthscale!r}, outputscale={self.outputscale!r}, "
                f"noise_std={self.noise_std!r})")

    def sample_batch(
        self, batch_size: int, num_points: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``batch_size`` datasets: x (B, N, d) and y (B, N), reproducible from ``generator``."""
        x, y, _ = self.sample_with_hyperparameters(batch_size, num_points, generator)
        return x, y

    def sample_with_hyperparameters(
        self, batch_size: int, num_points: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Like :meth:`sample_batch`, also returning each dataset's hyperparameters:
        ``lengthscale`` (B, d), ``outputscale`` (B,), ``noise_std`` (B,)."""
        batch_size, num_points = check_sizes(batch_size, num_points)
        d = self.num_features
        with seeded(generator):
            x = sample_x(self.x_sampler, batch_size, num_points)
            if x.shape[-1] != d:
                raise ValueError(f"'x_sampler' gives {x.shape[-1]} input dimensions, num_features is {d}")
            out_dtype = self.dtype or (x.dtype if x.is_floating_point() else torch.get_default_dtype())
            device = self.device or x.device
            x = x.to(device=device, dtype=self.compute_dtype)
            hyper = self._hyperparameters(batch_size, device)
            cov = self.kernel_matrix(x, hyper["lengthscale"], hyper["outputscale"])
            noise_var = hyper["noise_std"].square()
            cov = cov + torch.diag_embed(noise_var.unsqueeze(-1).expand(batch_size, num_points))
            factor = cholesky_with_jitter(cov)
            z = torch.randn(batch_size, num_points, 1, dtype=self.compute_dtype, device=device)
            y = (factor @ z).squeeze(-1)
        return x.to(out_dtype), y.to(out_dtype), {k: v.to(out_dtype) for k, v in hyper.items()}

    def kernel_matrix(self, x: Tensor, lengthscale: Tensor, outputscale: Tensor) -> Tensor:
        """K = s·k(‖(x_i - x_j)/ℓ‖) for x (B, N, d), ℓ (B, d), s (B,): (B, N, N)."""
        scaled = x / lengthscale.unsqueeze(-2)
        sq = scaled.square().sum(-1)
        r2 = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * scaled @ scaled.transpose(-1, -2)).clamp(min=0)
        return outputscale.reshape(-1, 1, 1) * KERNELS[self.kernel](r2.sqrt())

    def _hyperparameters(self, batch_size: int, device: torch.device) -> dict[str, Tensor]:
        dt, d = self.compute_dtype, self.num_features
        ls = self._lengthscale(batch_size, dt, device)
        if not bool((ls > 0).all()):
            raise ValueError("'lengthscale' drew a value <= 0; use a distribution on (0, inf)")
        return {
            "lengthscale": ls.expand(batch_size, d).contiguous(),
            "outputscale": draw_parameter(self.outputscale, batch_size, "outputscale", dt, device),
            "noise_std": draw_parameter(self.noise_std, batch_size, "noise_std", dt, device),
        }

    def _lengthscale(self, batch_size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        value: Any = self.lengthscale
        if isinstance(value, Distribution) and self.ard:
            if value.batch_shape or value.event_shape:
                raise ValueError("'ard=True' needs a scalar lengthscale distribution (drawn per dimension)")
            draws = draw_parameter(value.expand(torch.Size([self.num_features])), batch_size,
                                   "lengthscale", dtype, device)
        else:
            draws = draw_parameter(value, batch_size, "lengthscale", dtype, device)
        draws = draws.reshape(batch_size, -1)
        if draws.shape[-1] not in (1, self.num_features):
            raise ValueError(
                f"'lengthscale' draws have {draws.shape[-1]} values per dataset; expected 1 or "
                f"num_features={self.num_features}"
            )
        return draws
