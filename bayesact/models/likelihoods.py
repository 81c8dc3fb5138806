"""Observation models p(y | f), shared by the BNN, the process models and mixtures of experts.

A likelihood turns model outputs f (..., N, out) into Pyro statements: :meth:`Likelihood.sample`
draws the likelihood's own latent sites (a noise scale ``noise_std``, a Student-t ``df``) outside
the data plate, then observes (or, with ``y=None``, samples) the site ``name`` inside the plate
``"data"`` over the N rows, scaled to ``total_size`` rows for minibatches. :meth:`Likelihood.validate`
checks and casts the observations first, with errors that name ``y``.

- ``gaussian``: y ~ N(f, σ²) per output, y of shape (N, out); latent ``noise_std`` ~ HalfNormal(1)
  unless fixed;
- ``student_t``: y ~ StudentT(ν, f, σ) per output; latent ``noise_std`` as above and, with ν
  learnable, ``df`` ~ Gamma(2, 0.1);
- ``bernoulli``: y ~ Bernoulli(sigmoid(f)), labels 0/1 of shape (N,);
- ``categorical``: y ~ Categorical(softmax(f)), labels 0..out-1 of shape (N,).

:class:`MixtureLikelihood` marginalises a finite mixture of one of these over its components.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import constraints

from bayesact.infer import is_concrete
from bayesact.priors._checks import check_int, check_real

__all__ = [
    "LIKELIHOODS",
    "Bernoulli",
    "Categorical",
    "Gaussian",
    "Likelihood",
    "MixtureLikelihood",
    "StudentT",
    "make_likelihood",
]

LIKELIHOODS = ("gaussian", "student_t", "bernoulli", "categorical")
#: the prior of a learnable Student-t ``df`` site: Gamma(shape 2, rate 0.1) (Juárez and Steel, 2010)
DF_PRIOR = (2.0, 0.1)


class Likelihood(ABC):
    """p(y | f) for model outputs f of shape (..., N, out): one observation per row."""

    #: the name ``BNN(likelihood=...)`` accepts for it
    name: str = ""

    def check_out_dim(self, out_dim: int) -> None:
        """A ValueError naming ``out_dim`` when the likelihood cannot take ``out_dim`` outputs."""
        check_int(out_dim, "out_dim")

    @abstractmethod
    def validate(self, y: Tensor | None, *, num_rows: int, out_dim: int, dtype: torch.dtype) -> Tensor | None:
        """``y`` checked against the likelihood and cast for it (``None`` passes); errors name ``y``.

        ``num_rows`` is N (the rows of x), ``out_dim`` the outputs of f and ``dtype`` the model's float dtype.
        """

    @abstractmethod
    def distribution(self, f: Tensor) -> dist.TorchDistribution:
        """The distribution of y given f, of batch shape f.shape[:-1]; draws the likelihood's latent
        sites (if any) as ``pyro.sample`` statements in the current model."""

    def log_prob(self, f: Tensor, y: Tensor) -> Tensor:
        """log p(y | f) per row, shape f.shape[:-1] (latent sites are drawn from their priors)."""
        return self.distribution(f).log_prob(y)

    def sample(self, name: str, f: Tensor, y: Tensor | None, *, total_size: int | None = None) -> Tensor:
        """The Pyro statements: latent sites, then site ``name`` observed at ``y`` (validated
        already) inside the plate ``"data"`` over the N = f.shape[-2] rows, of size ``total_size``."""
        return observe(name, self.distribution(f), y, f.shape[-2], total_size, f.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def observe(
    name: str, obs_dist: dist.TorchDistribution, y: Tensor | None, n: int, total_size: int | None,
    device: torch.device,
) -> Tensor:
    """``pyro.sample(name, obs_dist, obs=y)`` inside the data plate: n rows standing for ``total_size``."""
    size = n if total_size is None else total_size
    with pyro.plate("data", size=size, subsample=torch.arange(n, device=device)):
        return pyro.sample(name, obs_dist, obs=y)


def _check_noise_std(noise_std: Any) -> float | None:
    if noise_std is not None and not (isinstance(noise_std, int | float) and noise_std > 0):
        raise ValueError(f"'noise_std' must be a number > 0 or None, got {noise_std!r}")
    return None if noise_std is None else float(noise_std)


def drop_data_slot(value: Tensor, event_dim: int) -> Tensor:
    """A global latent's value without the size-1 batch slot of the data plate (dim -1).

    Under vectorised Predictive or ELBO particles, a latent sampled outside the data plate has batch
    shape (..., particles, 1); the trailing 1 is the data plate's slot, which the network's N
    dimension takes instead.
    """
    return value.squeeze(value.dim() - event_dim - 1) if value.dim() > event_dim else value


def _global_latent(name: str, prior: dist.TorchDistribution) -> Tensor:
    """A scalar latent outside the data plate, shaped to broadcast against f (..., N, out)."""
    return drop_data_slot(pyro.sample(name, prior), 0)[..., None, None]


class _Regression(Likelihood):
    """Real targets y (N, out) with a scale σ: fixed, or the latent ``noise_std`` ~ HalfNormal(1)."""

    def __init__(self, noise_std: float | None = None):
        self.noise_std = _check_noise_std(noise_std)

    def _scale(self, f: Tensor) -> Tensor | float:
        if self.noise_std is not None:
            return self.noise_std
        return _global_latent("noise_std", dist.HalfNormal(torch.ones((), dtype=f.dtype, device=f.device)))

    def validate(self, y: Tensor | None, *, num_rows: int, out_dim: int, dtype: torch.dtype) -> Tensor | None:
        """A target of shape (N, out) (or (N,) when out = 1), finite, cast to ``dtype``."""
        y = _check_rows(y, num_rows)
        if y is None:
            return None
        if y.is_floating_point() and is_concrete(y) and not bool(y.isfinite().all()):
            raise ValueError("'y' contains NaN or inf")
        if y.dim() == 1 and out_dim == 1:
            y = y.unsqueeze(-1)
        if y.shape != (num_rows, out_dim):
            raise ValueError(f"'y' must have shape ({num_rows}, {out_dim}), got {tuple(y.shape)}")
        return y.to(dtype)

    def __repr__(self) -> str:
        noise = "latent" if self.noise_std is None else f"{self.noise_std:g}"
        return f"{type(self).__name__}(noise_std={noise})"


class Gaussian(_Regression):
    """y | f ~ N(f, σ²) independently per output; σ = ``noise_std``, or a latent site of that name."""

    name = "gaussian"

    def distribution(self, f: Tensor) -> dist.TorchDistribution:
        return dist.Normal(f, self._scale(f)).to_event(1)


class StudentT(_Regression):
    """y | f ~ StudentT(ν, f, σ) per output: heavy-tailed regression noise.

    ``df`` ν fixed (default 4), or ``None`` for a latent site ``df`` ~ Gamma(2, 0.1) (mean 20; the
    prior of Juárez and Steel, 2010). σ = ``noise_std``, or a latent site of that name.
    """

    name = "student_t"

    def __init__(self, df: float | None = 4.0, noise_std: float | None = None):
        super().__init__(noise_std)
        self.df = None if df is None else check_real(df, "df")

    def _df(self, f: Tensor) -> Tensor | float:
        if self.df is not None:
            return self.df
        shape, rate = (torch.tensor(v, dtype=f.dtype, device=f.device) for v in DF_PRIOR)
        return _global_latent("df", dist.Gamma(shape, rate))

    def distribution(self, f: Tensor) -> dist.TorchDistribution:
        scale = self._scale(f)  # noise_std first, then df: the site order of the BNN before the move
        return dist.StudentT(self._df(f), f, scale).to_event(1)

    def __repr__(self) -> str:
        df = "latent" if self.df is None else f"{self.df:g}"
        return super().__repr__()[:-1] + f", df={df})"


class _Labels(Likelihood):
    """Class labels y (N,) in 0..num_classes-1, given as integers, bools or integral floats."""

    def _num_classes(self, out_dim: int) -> int:
        return out_dim

    def _cast(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        return y.long()

    def validate(self, y: Tensor | None, *, num_rows: int, out_dim: int, dtype: torch.dtype) -> Tensor | None:
        """Labels of shape (N,) in the support (checked on concrete tensors only, one host sync)."""
        y = _check_rows(y, num_rows)
        if y is None:
            return None
        if y.dim() != 1:
            raise ValueError(f"'y' must have shape ({num_rows},) for a {self.name} likelihood")
        num_classes = self._num_classes(out_dim)
        if is_concrete(y):
            valid = (y >= 0) & (y < num_classes)
            if y.is_floating_point():
                valid &= y == torch.round(y)  # NaN fails every comparison
            if not bool(valid.all()):
                if y.is_floating_point() and not bool(torch.isfinite(y).all()):
                    raise ValueError("'y' contains NaN or inf")
                raise ValueError(
                    f"'y' must hold {self.name} labels ({self._allowed(num_classes)}), "
                    f"got {y[~valid][0].item()!r}"
                )
        return self._cast(y, dtype)

    def _allowed(self, num_classes: int) -> str:
        return f"integers 0 to {num_classes - 1} for out_dim={num_classes}"


class Bernoulli(_Labels):
    """y | f ~ Bernoulli(sigmoid(f)) for one output (logits f[..., 0]); labels 0 or 1."""

    name = "bernoulli"

    def check_out_dim(self, out_dim: int) -> None:
        super().check_out_dim(out_dim)
        if out_dim != 1:
            raise ValueError("'out_dim' must be 1 for a bernoulli likelihood")

    def _num_classes(self, out_dim: int) -> int:
        return 2

    def _cast(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        return y.to(dtype)

    def _allowed(self, num_classes: int) -> str:
        return "0 or 1"

    def distribution(self, f: Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=f[..., 0])


class Categorical(_Labels):
    """y | f ~ Categorical(softmax(f)) over out classes; labels 0..out-1 (cast to int64)."""

    name = "categorical"

    def distribution(self, f: Tensor) -> dist.TorchDistribution:
        return dist.Categorical(logits=f)


def _check_rows(y: Any, num_rows: int) -> Tensor | None:
    if y is None:
        return None
    if not isinstance(y, Tensor) or y.is_complex():
        raise TypeError(f"'y' must be a real tensor or None, got {type(y).__name__}")
    if y.dim() == 0 or y.shape[0] != num_rows:
        raise ValueError(f"'y' has {y.shape[0] if y.dim() else 0} rows but 'x' has {num_rows}")
    return y


def make_likelihood(
    likelihood: str | Likelihood, *, noise_std: float | None = None, student_t_df: float | None = 4.0
) -> Likelihood:
    """A :class:`Likelihood` from a name in :data:`LIKELIHOODS` (``noise_std`` for gaussian and
    student_t, ``student_t_df`` for student_t: a number, or ``None`` for a latent df), or the
    instance itself (which then holds its own settings: ``noise_std`` must be ``None``)."""
    if isinstance(likelihood, Likelihood):
        if noise_std is not None:
            raise ValueError("'noise_std' must be None with a Likelihood instance (set it on the instance)")
        return likelihood
    if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
        raise ValueError(f"'likelihood' must be one of {LIKELIHOODS} or a Likelihood, got {likelihood!r}")
    noise = _check_noise_std(noise_std)
    if student_t_df is not None:
        check_real(student_t_df, "student_t_df")
    return {
        "gaussian": lambda: Gaussian(noise),
        "student_t": lambda: StudentT(student_t_df, noise),
        "bernoulli": Bernoulli,
        "categorical": Categorical,
    }[likelihood]()


# ---------------------------------------------------------------------------------------- mixtures
class MixtureLikelihood:
    """p(y | f, w) = Σ_k w_k p(y | f_k): a finite mixture of one observation model, marginalised.

    ``f`` stacks the K components' outputs on a leading dimension, (K, ..., N, out) (so the
    component's latent sites, e.g. one shared ``noise_std``, broadcast as for a single output), and
    ``weights`` (..., N, K) are mixture probabilities per row (e.g. the gate of a mixture of experts),
    >= 0 and summing to 1. The log-density is a logsumexp over the components, shifted by the largest
    log-density of a component with w_k > 0: a component whose weight is exactly 0 adds exactly 0,
    and the value and the gradients stay finite (with respect to that weight: the true partial
    derivative p_k(y) / p(y); with respect to its outputs: 0).
    """

    def __init__(self, component: Likelihood):
        if not isinstance(component, Likelihood):
            raise TypeError(f"'component' must be a Likelihood, got {type(component).__name__}")
        self.component = component

    def check_out_dim(self, out_dim: int) -> None:
        self.component.check_out_dim(out_dim)

    def validate(self, y: Tensor | None, *, num_rows: int, out_dim: int, dtype: torch.dtype) -> Tensor | None:
        """The component's checks of ``y``."""
        return self.component.validate(y, num_rows=num_rows, out_dim=out_dim, dtype=dtype)

    def distribution(self, f: Tensor, weights: Tensor) -> dist.TorchDistribution:
        """The marginal distribution of y, batch shape (..., N); draws the component's latent sites."""
        if not isinstance(weights, Tensor) or weights.dim() < 1 or weights.shape[-1] != f.shape[0]:
            shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
            raise ValueError(f"'weights' must have shape (..., N, K) with K = {f.shape[0]}, got {shape}")
        if is_concrete(weights):
            total = weights.sum(-1)
            normalised = torch.allclose(total, torch.ones_like(total), atol=1e-5)
            if bool((weights < 0).any()) or not normalised:
                raise ValueError("'weights' must be >= 0 and sum to 1 over the components")
        return _Mixture(self.component.distribution(f), weights)

    def log_prob(self, f: Tensor, y: Tensor, weights: Tensor) -> Tensor:
        """log Σ_k w_k p(y | f_k) per row, shape (..., N)."""
        return self.distribution(f, weights).log_prob(y)

    def sample(
        self, name: str, f: Tensor, y: Tensor | None, *, weights: Tensor, total_size: int | None = None
    ) -> Tensor:
        """As :meth:`Likelihood.sample`, for the mixture with ``weights``."""
        return observe(name, self.distribution(f, weights), y, f.shape[-2], total_size, f.device)

    def __repr__(self) -> str:
        return f"MixtureLikelihood({self.component!r})"


_MAX_EXPONENT = 80.0  # exp(80) ≈ 5.5e34: finite in float32


class _Mixture(dist.TorchDistribution):
    """Σ_k w_k p_k(y) for components stacked on the leading batch dimension of ``component``."""

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}

    def __init__(self, component: dist.TorchDistribution, weights: Tensor):
        self.component = component
        self.weights = weights
        batch = torch.broadcast_shapes(component.batch_shape[1:], weights.shape[:-1])
        super().__init__(batch, component.event_shape, validate_args=False)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint | None:
        return self.component.support

    def expand(self, batch_shape: Any, _instance: Any = None) -> _Mixture:
        shape = torch.Size(batch_shape)
        component = self.component.expand(self.component.batch_shape[:1] + shape)
        return _Mixture(component, self.weights.expand(shape + self.weights.shape[-1:]))

    def log_prob(self, value: Tensor) -> Tensor:
        """m + log Σ_k w_k exp(log p_k - m), m the largest log p_k with w_k > 0 (constant for autograd).

        No log w_k is taken, so w_k = 0 contributes exactly 0 and its gradient is the true partial
        derivative p_k / p(y); a zero-weight component's log p_k - m is capped at 80 (so 0 · exp stays
        0, never 0 · inf) and gets no gradient.
        """
        log_p, w = torch.broadcast_tensors(self.component.log_prob(value), self.weights.movedim(-1, 0))
        with torch.no_grad():
            shift = torch.where(w > 0, log_p, torch.full_like(log_p, -math.inf)).amax(0)
            shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        ratio = torch.exp((log_p - shift).clamp(max=_MAX_EXPONENT))
        return shift + (w * ratio).sum(0).log()

    def sample(self, sample_shape: Any = ()) -> Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape)
            draws = self.component.sample(shape)  # shape + (K, ..., N) + event
            pick = dist.Categorical(probs=self.weights).sample(shape)  # shape + (..., N)
            one_hot = F.one_hot(pick, self.weights.shape[-1]).movedim(-1, len(shape))
            one_hot = one_hot.reshape(one_hot.shape + (1,) * len(self.event_shape)).to(draws.dtype)
            return (draws * one_hot).sum(len(shape))
