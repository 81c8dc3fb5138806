"""``StudentTProcess``: the inverse-gamma scale mixture of GPs in closed form, as a Pyro model."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import Distribution

from bayesact.models.processes._base import Hyperparameter, ProcessModel
from bayesact.models.processes._core import LOG_2PI, check_xy, cholesky

__all__ = ["StudentTProcess"]


class StudentTProcess(ProcessModel):
    """Student-t process regression: σ² ~ InverseGamma(a, b), y | σ² ~ N(m, σ²·(K + εI)).

    Marginally y ~ MVT_{2a}(m, (b/a)·K_y) with K_y = K + εI: the noise sits inside the scaled kernel.
    The predictive is Student-t with df = 2a + n, location the GP mean and scale²
    ((b + q/2)/(a + n/2))·S, q = (y − m)ᵀK_y⁻¹(y − m), S the GP posterior covariance (plus ε for y*).
    As a → ∞ with b/a fixed it becomes the GP with kernel (b/a)·K.

    Args:
        kernel: any ``gpytorch.kernels.Kernel``.
        concentration: initial a > 0 (learnable).
        rate: initial b > 0 (learnable).
        noise: initial ε > 0 (learnable).
        mean: initial constant prior mean m (learnable).
    """

    concentration = Hyperparameter(positive=True)
    rate = Hyperparameter(positive=True)

    def __init__(
        self,
        kernel: object,
        concentration: float = 2.0,
        rate: float = 2.0,
        noise: float = 1e-2,
        mean: float = 0.0,
    ) -> None:
        super().__init__(kernel, noise=noise, mean=mean)
        type(self).concentration.register(self, concentration)
        type(self).rate.register(self, rate)

    def _prior_scales(self, n: int, like: Tensor) -> Tensor | None:
        a, b = self._value("concentration", like), self._value("rate", like)
        return dist.InverseGamma(a, b).sample((n,))

    def log_marginal(self, x: Tensor, y: Tensor) -> Tensor:
        """log MVT_{2a}(y; m, (b/a)·K_y) in closed form."""
        x, y = check_xy(x, y)
        factor = self._factor(x, y)
        a, b = self._value("concentration", x), self._value("rate", x)
        n = factor.n
        return (
            torch.lgamma(a + n / 2) - torch.lgamma(a) + a * torch.log(b) - 0.5 * n * LOG_2PI
            - 0.5 * factor.logdet - (a + n / 2) * torch.log(b + factor.quad / 2)
        )

    def scale_posterior_mean(self, x: Tensor, y: Tensor) -> Tensor:
        """E[σ² | y] = (b + q/2)/(a + n/2 − 1) (infinite when a + n/2 <= 1)."""
        x, y = check_xy(x, y)
        factor = self._factor(x, y)
        a, b = self._value("concentration", x), self._value("rate", x)
        shape = a + factor.n / 2
        post = (b + factor.quad / 2) / (shape - 1)
        return torch.where(shape > 1, post, torch.full_like(post, float("inf")))

    def predict(
        self, x_new: Tensor, x: Tensor, y: Tensor, full_cov: bool = False, include_noise: bool = True
    ) -> Distribution:
        """StudentT (df = 2a + n) or, with ``full_cov``, MultivariateStudentT predictive at ``x_new``."""
        factor, mean, cov = self._gaussian_predictive(x_new, x, y, full_cov, include_noise)
        a, b = self._value("concentration", x), self._value("rate", x)
        n = factor.n
        factor2 = (b + factor.quad / 2) / (a + n / 2)
        df = 2 * a + n
        if full_cov:
            tril = cholesky(factor2 * cov, "the predictive scale matrix")
            return dist.MultivariateStudentT(df, mean, tril)
        scale = (factor2 * cov).clamp(min=torch.finfo(cov.dtype).tiny).sqrt()
        return dist.StudentT(df.expand_as(mean), mean, scale)

    def _observation(self, chol: Tensor, loc: Tensor) -> Distribution:
        a, b = self._value("concentration", loc), self._value("rate", loc)
        return dist.MultivariateStudentT(2 * a, loc, torch.sqrt(b / a) * chol)
