"""``ScaleMixtureProcess``: a GP with any prior on its scale σ², integrated by importance sampling."""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor
from torch.distributions import Distribution

from bayesact.models.processes._base import ProcessModel
from bayesact.models.processes._core import LOG_2PI, Factor, check_xy, cholesky

__all__ = ["ScaleMixtureProcess"]


class _AsPyro(dist.TorchDistribution):
    """A torch (or duck-typed) distribution on σ² as a Pyro distribution (support: its own, else positive)."""

    def __init__(self, base: Any) -> None:
        self.base = base
        super().__init__(torch.Size(), torch.Size(), validate_args=False)

    @property
    def support(self) -> Any:
        return getattr(self.base, "support", constraints.positive)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.base, "has_rsample", False))

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        return self.base.sample(torch.Size(sample_shape))

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        return self.base.rsample(torch.Size(sample_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base.log_prob(value)


class ScaleMixtureProcess(ProcessModel):
    """Scale mixture of GPs: σ² ~ ``scale_prior``, y | σ² ~ N(m, σ²·(K + εI)).

    The Gaussian marginal given σ² is collapsed analytically; the 1-D integral over σ² uses
    ``num_samples`` prior draws with self-normalised weights log w_s = −(n/2)·log σ²_s − q/(2σ²_s)
    (K_y⁻¹, log|K_y| and q are shared by all draws). As a Pyro model σ² is the latent site ``"scale"``.
    With ``scale_prior = InverseGamma(a, b)`` it is the :class:`StudentTProcess`.

    Args:
        kernel: any ``gpytorch.kernels.Kernel``.
        scale_prior: a distribution on σ² > 0 with ``sample`` and ``log_prob`` and scalar shape,
            e.g. ``pyro.distributions.InverseGamma`` or :class:`~bayesact.models.BurrXII`.
        noise: initial ε > 0 (learnable).
        mean: initial constant prior mean m (learnable).
        num_samples: number of σ² draws S for the importance sampler (>= 1).
    """

    def __init__(
        self,
        kernel: object,
        scale_prior: Distribution,
        noise: float = 1e-2,
        mean: float = 0.0,
        num_samples: int = 1000,
    ) -> None:
        super().__init__(kernel, noise=noise, mean=mean)
        if not all(callable(getattr(scale_prior, m, None)) for m in ("sample", "log_prob")):
            raise TypeError(
                "'scale_prior' must be a distribution with sample and log_prob, got "
                f"{type(scale_prior).__name__}"
            )
        shape = (*getattr(scale_prior, "batch_shape", ()), *getattr(scale_prior, "event_shape", ()))
        if shape:
            raise ValueError(f"'scale_prior' must be a scalar distribution on σ², got shape {shape}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int):
            raise TypeError(f"'num_samples' must be an int >= 1, got {type(num_samples).__name__}")
        if num_samples < 1:
            raise ValueError(f"'num_samples' must be >= 1, got {num_samples}")
        self.scale_prior = scale_prior
        self.num_samples = num_samples

    def _prior_scales(self, n: int, like: Tensor) -> Tensor | None:
        draws = self.scale_prior.sample((n,)).to(dtype=like.dtype, device=like.device)
        if not bool((draws > 0).all()):
            raise ValueError("'scale_prior' produced non-positive σ² draws")
        return draws

    def _weights(self, factor: Factor, like: Tensor) -> tuple[Tensor, Tensor]:
        """σ² draws (S,) and their unnormalised log importance weights."""
        scales = self._prior_scales(self.num_samples, like)
        assert scales is not None
        log_w = -0.5 * factor.n * torch.log(scales) - factor.quad / (2 * scales)
        return scales, log_w

    def log_marginal_with_stderr(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The IS estimate of log p(y | x) and its Monte Carlo standard error (delta method)."""
        x, y = check_xy(x, y)
        factor = self._factor(x, y)
        _, log_w = self._weights(factor, x)
        s = log_w.shape[0]
        log_mean = torch.logsumexp(log_w, 0) - math.log(s)
        rel = torch.exp(log_w - log_mean)  # w_s / mean(w)
        stderr = rel.detach().std() / math.sqrt(s) if s > 1 else torch.full_like(log_mean, math.inf)
        log_p = log_mean - 0.5 * (factor.logdet + factor.n * LOG_2PI)
        return log_p, stderr.to(log_p.dtype)

    def log_marginal(self, x: Tensor, y: Tensor) -> Tensor:
        """Importance-sampling estimate of log p(y | x) (see :meth:`log_marginal_with_stderr`)."""
        return self.log_marginal_with_stderr(x, y)[0]

    def scale_posterior_mean(self, x: Tensor, y: Tensor) -> Tensor:
        """Self-normalised IS estimate of E[σ² | y]."""
        x, y = check_xy(x, y)
        scales, log_w = self._weights(self._factor(x, y), x)
        return (torch.softmax(log_w, 0) * scales).sum()

    def predict(
        self, x_new: Tensor, x: Tensor, y: Tensor, full_cov: bool = False, include_noise: bool = True
    ) -> Distribution:
        """Mixture over weighted σ² draws of Normal (``full_cov``: MultivariateNormal) predictives."""
        factor, mean, cov = self._gaussian_predictive(x_new, x, y, full_cov, include_noise)
        scales, log_w = self._weights(factor, x)
        m = x_new.shape[0]
        if full_cov:
            tril = cholesky(cov, "the predictive covariance")
            comp = dist.MultivariateNormal(
                mean.expand(len(scales), m), scale_tril=scales.sqrt()[:, None, None] * tril
            )
            return dist.MixtureSameFamily(dist.Categorical(logits=log_w), comp)
        var = cov.clamp(min=torch.finfo(cov.dtype).tiny)
        comp = dist.Normal(mean[:, None].expand(m, len(scales)), (var[:, None] * scales).sqrt())
        return dist.MixtureSameFamily(dist.Categorical(logits=log_w.expand(m, len(scales))), comp)

    def _observation(self, chol: Tensor, loc: Tensor) -> Distribution:
        prior = self.scale_prior
        if not isinstance(prior, dist.TorchDistribution):
            prior = _AsPyro(prior)
        scale = pyro.sample("scale", prior)
        scale = torch.as_tensor(scale).to(loc.dtype)
        return dist.MultivariateNormal(loc, scale_tril=scale.sqrt() * chol)
