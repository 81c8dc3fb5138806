"""A Gaussian-process prior over functions, as a target for functional-prior fitting."""

from __future__ import annotations

from typing import Any

import gpytorch
import torch
from torch import Tensor

from bayesact.kernels.cholesky import cholesky_with_jitter

from .._checks import check_int, check_real


def _check_inputs(x: Any) -> Tensor:
    """x as a floating tensor (N, d): integer or bool inputs in the default float dtype; else an error."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"'x' must be a tensor of shape (N, d), got {getattr(x, 'shape', type(x))}")
    if x.is_complex():
        raise TypeError("'x' must be a real tensor, got a complex one")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if not bool(torch.isfinite(x).all()):
        raise ValueError("'x' contains NaN or inf")
    return x


def _kernel_name(kernel: Any) -> str:
    """``ScaleKernel(RBFKernel)``: the kernel's class with its base kernel(s) in brackets."""
    inner = getattr(kernel, "base_kernel", None)
    parts = [inner] if inner is not None else list(getattr(kernel, "kernels", []) or [])
    name = type(kernel).__name__
    return f"{name}({', '.join(_kernel_name(k) for k in parts)})" if parts else name


def _numbers(value: Any) -> str:
    items = torch.as_tensor(value).detach().flatten().tolist()
    text = ", ".join(f"{v:.3g}" for v in items[:6]) + (", ..." if len(items) > 6 else "")
    return text if len(items) == 1 else f"[{text}]"


class GPPrior:
    """f ~ GP(0, k) for any GPyTorch kernel ``k`` (bayesact's NNGP/NTK kernels included).

    ``sample_functions(x, n)`` draws n functions at x as L z with L the Cholesky factor of
    k(x, x) (jitter escalated until it factorises) and z ~ N(0, I), in float64 by default, returned
    in x's dtype with shape (n, len(x), 1), like ``BNN.sample_functions``.
    """

    def __init__(self, kernel: Any, *, dtype: torch.dtype = torch.float64):
        if not callable(kernel) or not hasattr(kernel, "forward"):
            raise TypeError(f"'kernel' must be a GPyTorch kernel, got {type(kernel).__name__}")
        self.kernel = kernel
        self.dtype = dtype
        #: the Gaussian noise variance fitted by :meth:`from_data` (``None`` otherwise)
        self.noise_variance: float | None = None

    def covariance(self, x: Tensor) -> Tensor:
        """k(x, x) as a dense (N, N) tensor in the prior's dtype."""
        with torch.no_grad():
            out = self.kernel(x.to(self.dtype))
            dense = out.to_dense() if hasattr(out, "to_dense") else out
            return dense.to(self.dtype)

    def __repr__(self) -> str:
        parts = [_kernel_name(self.kernel)]
        modules = self.kernel.modules() if hasattr(self.kernel, "modules") else [self.kernel]
        for module in modules:
            for name in ("lengthscale", "outputscale", "period_length", "variance"):
                value = getattr(module, name, None) if name in dir(type(module)) else None
                if isinstance(value, Tensor):
                    parts.append(f"{name}={_numbers(value)}")
        if self.noise_variance is not None:
            parts.append(f"noise_variance={self.noise_variance:.3g}")
        return f"GPPrior({', '.join(parts)})"

    def sample_functions(self, x: Tensor, n: int) -> Tensor:
        """``n`` draws of f at x: shape (n, N, 1), in x's dtype (the default float dtype for an
        integer x, which is converted before the kernel sees it)."""
        x = _check_inputs(x)
        check_int(n, "n")
        factor = cholesky_with_jitter(self.covariance(x))
        z = torch.randn(x.shape[0], n, dtype=self.dtype, device=x.device)
        return (factor @ z).T.unsqueeze(-1).to(x.dtype)

    @classmethod
    def from_data(
        cls, x: Tensor, y: Tensor, *, kernel: Any | None = None, num_iters: int = 200, lr: float = 0.05
    ) -> GPPrior:
        """A GP prior whose kernel hyperparameters maximise the exact marginal likelihood of (x, y).

        ``kernel`` defaults to ``ScaleKernel(RBFKernel(ard_num_dims=d))`` (an RBF with one
        lengthscale per input, as in Tran et al. 2022); a Gaussian noise variance is fitted
        alongside and discarded (the prior is over noise-free functions). Adam on
        log p(y | x) = -½ yᵀ(K + σ²I)⁻¹y - ½ log|K + σ²I| - (n/2) log 2π, in float64. Fit it on
        training data only.
        """
        x = _check_inputs(x)
        if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
            raise ValueError(f"'y' must be a tensor of shape ({x.shape[0]},), got {getattr(y, 'shape', y)}")
        if y.is_complex() or not bool(torch.isfinite(y).all()):
            raise ValueError("'y' must be real and finite (it contains NaN, inf or complex values)")
        check_int(num_iters, "num_iters")
        check_real(lr, "lr")
        if kernel is None:
            kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=x.shape[1]))
        x64, y64 = x.detach().double(), y.detach().double()
        kernel = kernel.double()
        likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
        model = _exact_gp(x64, y64, likelihood, kernel)
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        likelihood.train()
        for _ in range(num_iters):
            optimizer.zero_grad()
            loss = -mll(model(x64), y64)
            loss.backward()
            optimizer.step()
        kernel.requires_grad_(False)
        prior = cls(kernel)
        prior.noise_variance = float(likelihood.noise.detach())
        return prior


def _exact_gp(x: Tensor, y: Tensor, likelihood: Any, kernel: Any) -> Any:
    """A zero-mean exact GP regression model with the given kernel (GPyTorch)."""
    class ZeroMeanGP(gpytorch.models.ExactGP):
        def __init__(self) -> None:
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = kernel

        def forward(self, inputs: Tensor) -> Any:
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(inputs), self.covar_module(inputs)
            )

    return ZeroMeanGP()
