"""``GP``: Gaussian-process regression on any GPyTorch kernel, as a Pyro model."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import Distribution

from bayesact.models.processes._base import ProcessModel
from bayesact.models.processes._core import check_x, check_xy, cholesky, kernel_matrix

__all__ = ["GP"]


class GP(ProcessModel):
    """Gaussian-process regression: y ~ N(m, K(x, x) + εI).

    Args:
        kernel: any ``gpytorch.kernels.Kernel`` (bayesact's ``NNGPKernel``/``NTKKernel`` included).
        noise: initial noise variance ε > 0 (learnable).
        mean: initial constant prior mean m (learnable).

    Example:
        >>> from bayesact.kernels import NNGPKernel
        >>> gp = GP(NNGPKernel("relu", depth=2))
        >>> x = torch.randn(8, 3)
        >>> y = torch.sin(x.sum(-1))
        >>> pred = gp.predict(torch.randn(2, 3), x, y)  # torch Normal, batch shape (2,)
    """

    def _prior_scales(self, n: int, like: Tensor) -> Tensor | None:
        return None

    def covariance(self, x: Tensor) -> Tensor:
        """The prior covariance K(x, x) of f at the rows of ``x`` (N, d)."""
        return kernel_matrix(self.kernel, check_x(x))

    def log_marginal(self, x: Tensor, y: Tensor) -> Tensor:
        """log N(y; m, K + εI) in closed form."""
        x, y = check_xy(x, y)
        return self._factor(x, y).gaussian_log_prob()

    def predict(
        self, x_new: Tensor, x: Tensor, y: Tensor, full_cov: bool = False, include_noise: bool = True
    ) -> Distribution:
        """Normal (``full_cov=False``) or MultivariateNormal posterior predictive at ``x_new`` (M, d)."""
        _, mean, cov = self._gaussian_predictive(x_new, x, y, full_cov, include_noise)
        if full_cov:
            return dist.MultivariateNormal(mean, scale_tril=cholesky(cov, "the predictive covariance"))
        return dist.Normal(mean, cov.clamp(min=torch.finfo(cov.dtype).tiny).sqrt())

    def _observation(self, chol: Tensor, loc: Tensor) -> Distribution:
        return dist.MultivariateNormal(loc, scale_tril=chol)
