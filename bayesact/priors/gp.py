"""A Gaussian-process prior over functions, as a target for functional-prior fitting."""

from __future__ import annotations

from typing import Any

import gpytorch
import torch
from torch import Tensor

from bayesact.kernels.cholesky import cholesky_with_jitter


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

    def sample_functions(self, x: Tensor, n: int) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f"'x' must be a tensor of shape (N, d), got {getattr(x, 'shape', type(x))}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"'n' must be a positive int, got {n!r}")
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
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f"'x' must be a tensor of shape (N, d), got {getattr(x, 'shape', type(x))}")
        if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
            raise ValueError(f"'y' must be a tensor of shape ({x.shape[0]},), got {getattr(y, 'shape', y)}")
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
