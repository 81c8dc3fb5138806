"""``PFN``: a prior-fitted network, a transformer that maps (training set, query inputs) to the
posterior predictive distribution q_θ(y | x, D) as a :class:`BarDistribution`.

Trained on datasets drawn from a prior by minimising E[-log q_θ(y | x, D)], the network
approximates the prior's posterior predictive distribution (PPD) in one forward pass
(Müller et al., "Transformers Can Do Bayesian Inference", ICLR 2022).
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bayesact.infer.arviz_io import from_numpy
from bayesact.infer.checkpoint import load_checkpoint, save_checkpoint
from bayesact.models.pfn.bar import BarDistribution
from bayesact.models.pfn.transformer import PFNTransformer
from bayesact.priors._checks import check_int, check_real

__all__ = ["PFN", "PFN_FORMAT", "StandardizedBorders", "normal_borders", "standardization",
           "standardized_borders"]

PFN_FORMAT = "bayesact.models.pfn/1"
# the standardised scale is floored so that the narrowest mapped bucket spans this many units of rounding of y
_ULPS_PER_BUCKET = 16
_CONFIG_KEYS = ("num_features", "num_buckets", "emsize", "nlayers", "nhead", "nhid", "max_features",
                "query_self_attention", "standardize_y", "bounded", "y_std_floor", "y_prior_mean",
                "y_prior_std")


def normal_borders(num_buckets: int, dtype: torch.dtype | None = None) -> Tensor:
    """Equal-mass borders of N(0, 1): inner borders Φ⁻¹(k/K), outer ones Φ⁻¹(1/(2K)) and Φ⁻¹(1 - 1/(2K))
    (the default of :class:`PFN`; for K = 2 the full-support bar distribution is exactly N(0, 1))."""
    k = check_int(num_buckets, "num_buckets", minimum=2)
    levels = torch.cat([
        torch.tensor([0.5 / k], dtype=torch.float64),
        torch.arange(1, k, dtype=torch.float64) / k,
        torch.tensor([1 - 0.5 / k], dtype=torch.float64),
    ])
    return torch.special.ndtri(levels).to(dtype or torch.get_default_dtype())


def standardization(
    y: Tensor, *, std_floor: float = 0.0, min_width: Tensor | float | None = None
) -> tuple[Tensor, Tensor]:
    """The per-dataset location m and scale s_eff of ``y`` (..., n), n >= 2, along the last dimension
    (each (..., 1)): the rule of ``PFN(..., standardize_y=True)``, for training, prediction and the
    prior draws its borders come from.

    m is the mean and s the standard deviation of the n values, and
    s_eff = max(s, ``std_floor``, 16 · eps · |m| / ``min_width``), or 1 when that is 0 (all-zero
    y). ``std_floor`` is an absolute floor in the units of y (see :func:`standardized_borders`);
    the last term, left out when ``min_width`` is None, makes a bucket ``min_width`` wide in
    standardised units span at least 16 units of rounding of y ≈ m (eps of y's dtype).
    """
    if not isinstance(y, Tensor) or y.dim() < 1 or y.shape[-1] < 2:
        raise ValueError("'y' must be a tensor whose last dimension holds at least 2 values per dataset")
    floor = check_real(std_floor, "std_floor", allow_zero=True)
    mean = y.mean(-1, keepdim=True)
    std = y.std(-1, keepdim=True).clamp(min=floor)
    if min_width is not None:
        std = torch.maximum(std, _rounding_floor(mean, min_width))
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _rounding_floor(mean: Tensor, min_width: Tensor | float) -> Tensor:
    """16 · eps · |m| / ``min_width``: the scale at which a bucket ``min_width`` wide in standardised
    units spans 16 units of rounding of y ≈ m (eps of m's dtype)."""
    return _ULPS_PER_BUCKET * torch.finfo(mean.dtype).eps * mean.abs() / min_width


class StandardizedBorders(NamedTuple):
    """What :func:`standardized_borders` derives from prior draws of y; the field names are the
    :class:`PFN` arguments they are for: ``PFN(..., standardize_y=True, **sb._asdict())``."""

    borders: Tensor
    y_std_floor: float
    y_prior_mean: float
    y_prior_std: float


def standardized_borders(
    y: Tensor, num_buckets: int, *, floor_quantile: float = 0.01
) -> StandardizedBorders:
    """Borders, ``y_std_floor``, ``y_prior_mean`` and ``y_prior_std`` for ``PFN(...,
    standardize_y=True)`` from prior draws ``y`` (num_datasets, n) on the prior's own scale.

    The floor is the ``floor_quantile`` quantile of the per-dataset standard deviations (the prior
    gives a smaller spread to that fraction of its datasets of n points), each dataset is
    standardised by :func:`standardization` with that floor, and the borders are
    :meth:`BarDistribution.borders_from_samples` of the result, so they are equal-mass under what
    the model sees in training. ``y_prior_mean`` and ``y_prior_std`` are the mean and standard
    deviation of all draws pooled, the location and scale of the prior predictive p(y), which the
    model uses for training sets of fewer than two points (see :class:`PFN`)."""
    if not isinstance(y, Tensor) or y.dim() != 2 or y.shape[1] < 2 or not y.is_floating_point():
        raise ValueError("'y' must be a floating-point tensor (num_datasets, n) with n >= 2, got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    if isinstance(floor_quantile, bool) or not isinstance(floor_quantile, int | float) or not (
        0 <= floor_quantile < 1
    ):
        raise ValueError(f"'floor_quantile' must be a number in [0, 1), got {floor_quantile!r}")
    floor = float(torch.quantile(y.std(1).double(), float(floor_quantile)))
    mean, scale = standardization(y, std_floor=floor)
    borders = BarDistribution.borders_from_samples(((y - mean) / scale).reshape(-1), num_buckets)
    pooled = y.double()
    std = float(pooled.std())
    return StandardizedBorders(borders, floor, float(pooled.mean()), std if std > 0 else 1.0)


class PFN(nn.Module):
    """Prior-fitted network for regression: ``pfn(x_train, y_train, x_test)`` -> :class:`BarDistribution`.

    Tokens are Linear_x(x) + Linear_y(y) for training points and Linear_x(x) for queries, with no
    positional encoding; training tokens attend to each other and each query attends to the
    training tokens (and to itself, ``query_self_attention``) only, so the prediction for a query
    is invariant to permutations of the training set and independent of the other queries. A
    decoder Linear(emsize, nhid) -> GELU -> Linear(nhid, K) gives the bucket logits.

    Args:
        num_features: number of input features the model is built for. Datasets with fewer
            features d are zero-padded and scaled by ``max_features / d`` (as TabPFN / the paper's
            tabular PFN do), datasets with more are refused.
        num_buckets: K, the number of buckets (``None``: taken from ``borders``).
        emsize: token width.
        nlayers: transformer layers.
        nhead: attention heads.
        nhid: feed-forward and decoder hidden width (default 2 · emsize).
        borders: the K + 1 bucket borders, fixed before training, e.g.
            :meth:`BarDistribution.borders_from_samples` of prior draws of y (default:
            :func:`normal_borders`). The model is built in torch's default dtype (the buffer holds
            the borders rounded to it), but the given borders are kept at their own precision:
            converting the model to a wider dtype (``.double()``, ``.to(torch.float64)``) restores
            them exactly instead of widening the rounded copy.
        max_features: input width of the feature encoder (default ``num_features``); must be
            ≥ ``num_features``.
        query_self_attention: each query also attends to its own token (the paper's attention
            mask; ``False``: to the training tokens only, like the maintained PFNs library).
        standardize_y: standardise y_train per dataset (mean m, std s) before encoding and map the
            borders back to m + s_eff · b_k, so that the borders live in standardised units (TabPFN's
            convention; training sets of fewer than two points use the prior's ``y_prior_mean`` and
            ``y_prior_std``, see there). Default off: the paper's GP/BNN PFNs see y on the prior's own
            scale. The scale is floored (:func:`standardization`):
            s_eff = max(s, y_std_floor, 16 · eps · |m| / min_k(b_k - b_{k-1}))
            (eps of the model's dtype). The last term makes every mapped bucket span at least 16 units
            of rounding of y ≈ m (1000 normal borders in float32: s_eff ≥ 7.6e-4 · |m|; in float64:
            1.4e-12 · |m|), so a (nearly) constant training set, whose s is rounding noise or 0, gives a
            resolvable distribution around m instead of coinciding borders. That alone carries no
            scale, so a query far from such a set (in units of s_eff) would sit deep in the tails;
            ``y_std_floor`` supplies the prior's scale there.
            Data with s above the floors are standardised exactly, so the predictive is
            location-scale equivariant there; all-zero y_train with no floor keeps s_eff = 1.
        y_std_floor: absolute floor on the standardisation scale, in the units of y (only with
            ``standardize_y``; default 0: none). :func:`standardized_borders` (used by
            ``python -m bayesact.pfn_train``) sets it to the 1 % quantile of the per-dataset standard
            deviation of the prior draws the borders come from: a spread the prior rarely produces is
            read as that spread, the scale the network learned in training (the floor applies there
            too, since training calls this model). Saved with the model (files without it load with 0).
        y_prior_mean: μ, the location of the prior predictive p(y) (only with ``standardize_y``;
            default 0).
        y_prior_std: σ > 0, its scale (only with ``standardize_y``; default 1). A training set of
            n < 2 points has no standard deviation, so it is standardised with (m, s) = (μ, σ)
            instead of its own, and s_eff = max(σ, 16 · eps · |μ| / min_k(b_k - b_{k-1})).
            :func:`standardized_borders` (used by ``python -m bayesact.pfn_train``) sets them to
            the mean and standard deviation of the pooled prior draws, so at n = 0 the query's
            standardised y has mean 0 and variance 1 under the prior, the scale the borders were
            cut for. For n = 1 the prior's (μ, σ) is also right, not m = y_1: a fixed affine map
            keeps all the information in y_1, whereas centring at y_1 would always encode the
            single y as 0 and hide y_1 - μ, on which the PPD depends (a GP's posterior mean
            shrinks towards the prior mean: μ + k(x, x_1) (y_1 - μ) / (k(x_1, x_1) + σ_ε²)).
            Training calls this model, so it learns n < 2 under the same rule. With the defaults
            the map is the identity: y is seen on its own scale at n < 2 (the behaviour of files
            written before these settings, which load with them).
        bounded: output the bounded bar distribution (support [b_0, b_K]) instead of the
            full-support one.
    """

    borders: Tensor
    _exact_borders: Tensor

    def __init__(
        self,
        num_features: int,
        num_buckets: int | None = 1000,
        emsize: int = 256,
        nlayers: int = 4,
        nhead: int = 4,
        nhid: int | None = None,
        borders: Tensor | None = None,
        max_features: int | None = None,
        *,
        query_self_attention: bool = True,
        standardize_y: bool = False,
        bounded: bool = False,
        y_std_floor: float = 0.0,
        y_prior_mean: float = 0.0,
        y_prior_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_features = check_int(num_features, "num_features")
        self.max_features = (
            self.num_features if max_features is None else check_int(max_features, "max_features")
        )
        if self.max_features < self.num_features:
            raise ValueError(f"'max_features' ({max_features}) must be >= 'num_features' ({num_features})")
        self.emsize = check_int(emsize, "emsize")
        self.nlayers = check_int(nlayers, "nlayers")
        self.nhead = check_int(nhead, "nhead")
        self.nhid = 2 * self.emsize if nhid is None else check_int(nhid, "nhid")
        if self.emsize % self.nhead:
            raise ValueError(f"'emsize' ({emsize}) must be divisible by 'nhead' ({nhead})")
        if borders is None:
            if num_buckets is None:
                raise ValueError("give 'num_buckets' or 'borders'")
            borders = normal_borders(check_int(num_buckets, "num_buckets", minimum=2))
        else:
            if not isinstance(borders, Tensor) or borders.dim() != 1:
                raise ValueError("'borders' must be a 1-D tensor of K + 1 strictly increasing values")
            if num_buckets is not None and borders.numel() != num_buckets + 1:
                raise ValueError(
                    f"'borders' has {borders.numel()} values, so K = {borders.numel() - 1} buckets, but "
                    f"num_buckets={num_buckets}: pass num_buckets={borders.numel() - 1} or None"
                )
            borders = borders.detach().clone()
            if not borders.is_floating_point():
                borders = borders.to(torch.get_default_dtype())
        # the distribution's own checks: strictly increasing, finite, enough buckets
        BarDistribution(borders, torch.zeros(borders.numel() - 1, dtype=borders.dtype), bounded=bounded)
        # the given borders at their own precision; the buffer is always this, rounded once to its dtype
        self._exact_borders = borders
        borders = borders.to(torch.get_default_dtype())
        self.num_buckets = borders.numel() - 1
        self.query_self_attention = bool(query_self_attention)
        self.standardize_y = bool(standardize_y)
        self.y_std_floor = check_real(y_std_floor, "y_std_floor", allow_zero=True)
        if self.y_std_floor and not self.standardize_y:
            raise ValueError("'y_std_floor' applies only with standardize_y=True")
        if isinstance(y_prior_mean, bool) or not isinstance(y_prior_mean, int | float) or not math.isfinite(
            y_prior_mean
        ):
            raise ValueError(f"'y_prior_mean' must be a finite number, got {y_prior_mean!r}")
        self.y_prior_mean = float(y_prior_mean)
        self.y_prior_std = check_real(y_prior_std, "y_prior_std")
        if (self.y_prior_mean, self.y_prior_std) != (0.0, 1.0) and not self.standardize_y:
            raise ValueError("'y_prior_mean' and 'y_prior_std' apply only with standardize_y=True")
        self.bounded = bool(bounded)
        self.register_buffer("borders", borders)
        self.x_encoder = nn.Linear(self.max_features, self.emsize)
        self.y_encoder = nn.Linear(1, self.emsize)
        self.transformer = PFNTransformer(
            self.emsize, self.nlayers, self.nhead, self.nhid, self.query_self_attention
        )
        self.decoder = nn.Sequential(
            nn.Linear(self.emsize, self.nhid), nn.GELU(), nn.Linear(self.nhid, self.num_buckets)
        )

    def _apply(self, fn: Any, recurse: bool = True) -> PFN:
        """``nn.Module._apply`` (behind ``.to``, ``.double``, ``.cuda``, ...), then the borders buffer
        re-rounded from the exact borders, so a float32 -> float64 conversion does not keep float32
        rounding. A buffer changed since (``load_state_dict``, an in-place edit) becomes the exact copy."""
        exact, buf = self._exact_borders, self.borders
        if not buf.is_meta and (
            exact.shape != buf.shape or not torch.equal(exact.to(device=buf.device, dtype=buf.dtype), buf)
        ):
            exact = buf.detach().clone()
        super()._apply(fn, recurse)
        buf = self.borders
        self._exact_borders = exact.to(device=buf.device) if not buf.is_meta else exact
        if buf.is_floating_point() and not buf.is_meta and self._exact_borders is not buf:
            with torch.no_grad():
                buf.copy_(self._exact_borders)
        return self

    def _load_from_state_dict(
        self, state_dict: Any, prefix: str, local_metadata: Any, strict: bool, missing_keys: list[str],
        unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:
        """``nn.Module._load_from_state_dict``; loaded borders also become the exact copy, at the
        precision they were given in (a float64 state dict loaded into a float32 model keeps float64)."""
        given = state_dict.get(prefix + "borders")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if (isinstance(given, Tensor) and given.is_floating_point() and given.shape == self.borders.shape
                and not self.borders.is_meta):
            self._exact_borders = given.detach().to(device=self.borders.device).clone()

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict[str, Any]:
        """The constructor arguments as plain data (the borders travel in the state dict)."""
        return {key: getattr(self, key) for key in _CONFIG_KEYS}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())

    # ------------------------------------------------------------------ inputs
    def _check_inputs(self, x_train: Any, y_train: Any, x_test: Any) -> tuple[Tensor, Tensor, Tensor, bool]:
        """Batched (B, n, D), (B, n), (B, m, D) in the model's dtype, zero-padded and scaled; and
        whether the input was unbatched."""
        for name, value in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test)):
            if not isinstance(value, Tensor):
                raise TypeError(f"'{name}' must be a torch.Tensor, got {type(value).__name__}")
        if x_train.dim() not in (2, 3):
            raise ValueError(f"'x_train' must have shape (n, d) or (B, n, d), got {tuple(x_train.shape)}")
        unbatched = x_train.dim() == 2
        want = "(n, d), (n,), (m, d)" if unbatched else "(B, n, d), (B, n), (B, m, d)"
        if y_train.dim() != x_train.dim() - 1 or x_test.dim() != x_train.dim():
            raise ValueError(
                f"'x_train', 'y_train', 'x_test' must have shapes {want}, got {tuple(x_train.shape)}, "
                f"{tuple(y_train.shape)}, {tuple(x_test.shape)}"
            )
        if unbatched:
            x_train, y_train, x_test = x_train.unsqueeze(0), y_train.unsqueeze(0), x_test.unsqueeze(0)
        if y_train.shape != x_train.shape[:2]:
            raise ValueError(
                f"'y_train' must have shape {tuple(x_train.shape[:2])[unbatched:]} to match 'x_train' "
                f"(batch size and number of training points), got {tuple(y_train.shape)[unbatched:]}"
            )
        if x_test.shape[0] != x_train.shape[0]:
            raise ValueError(
                f"'x_test' has batch size {x_test.shape[0]} but 'x_train' has {x_train.shape[0]}"
            )
        d = x_train.shape[-1]
        if x_test.shape[-1] != d:
            raise ValueError(f"'x_test' has {x_test.shape[-1]} features but 'x_train' has {d}")
        if d < 1 or d > self.max_features:
            raise ValueError(
                f"'x_train' has {d} features; this PFN was built for 1 to {self.max_features} "
                f"(num_features={self.num_features}, max_features={self.max_features})"
            )
        for name, value in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test)):
            if value.is_complex() or value.dtype == torch.bool:
                raise TypeError(f"'{name}' must be a real tensor, got {value.dtype}")
            if value.numel() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"'{name}' contains NaN or inf")
        dtype, device = self.borders.dtype, self.borders.device
        x_train, y_train, x_test = (t.to(dtype=dtype, device=device) for t in (x_train, y_train, x_test))
        if d < self.max_features:
            scale = self.max_features / d
            x_train, x_test = (
                torch.nn.functional.pad(t * scale, (0, self.max_features - d)) for t in (x_train, x_test)
            )
        return x_train, y_train, x_test, unbatched

    def _standardization(self, y_train: Tensor) -> tuple[Tensor, Tensor] | None:
        """Per-dataset (mean m, floored std s_eff), each (B, 1), when ``standardize_y`` applies
        (:func:`standardization`; the floors and the rule for n < 2 are explained in the class
        docstring); None for the identity."""
        if not self.standardize_y:
            return None
        min_width = self.borders.diff().min()
        if y_train.shape[1] >= 2:
            return standardization(y_train, std_floor=self.y_std_floor, min_width=min_width)
        if (self.y_prior_mean, self.y_prior_std) == (0.0, 1.0):
            return None
        mean = y_train.new_full((y_train.shape[0], 1), self.y_prior_mean)
        return mean, _rounding_floor(mean, min_width).clamp(min=self.y_prior_std)

    # ------------------------------------------------------------------ forward
    def forward(self, x_train: Tensor, y_train: Tensor, x_test: Tensor) -> BarDistribution:
        """q_θ(y | x_test, D = (x_train, y_train)): a :class:`BarDistribution` with batch shape
        (B, m) for batched inputs (B, n, d), (B, n), (B, m, d), or (m,) for unbatched ones
        (n, d), (n,), (m, d). n = 0 gives the prior predictive. Use ``.log_prob(y_test)`` as
        the training loss (its negative mean)."""
        return self._predict(x_train, y_train, x_test, query_chunk=None)

    def _predict(
        self, x_train: Tensor, y_train: Tensor, x_test: Tensor, query_chunk: int | None
    ) -> BarDistribution:
        x_train, y_train, x_test, unbatched = self._check_inputs(x_train, y_train, x_test)
        stats = self._standardization(y_train)
        if stats is not None:
            y_train = (y_train - stats[0]) / stats[1]
        train = self.x_encoder(x_train) + self.y_encoder(y_train.unsqueeze(-1))
        cache = self.transformer.encode_train(train)
        m = x_test.shape[1]
        step = m if query_chunk is None or m == 0 else query_chunk
        logits = torch.cat([
            self.decoder(self.transformer.decode_queries(self.x_encoder(x_test[:, i : i + step]), cache))
            for i in range(0, max(m, 1), step)
        ], dim=1) if m else x_test.new_zeros(x_test.shape[0], 0, self.num_buckets)
        borders = self.borders
        if stats is not None:
            borders = stats[0].unsqueeze(-1) + stats[1].unsqueeze(-1) * borders  # (B, 1, K + 1)
        if unbatched:
            logits = logits.squeeze(0)
            borders = borders.squeeze(0) if borders.dim() == 3 else borders
        return BarDistribution(borders, logits, bounded=self.bounded, validate_args=False)

    def predict(
        self, x_train: Tensor, y_train: Tensor, x_test: Tensor, *, query_chunk: int | None = 4096,
        dataset_chunk: int | None = None,
    ) -> BarDistribution:
        """Like calling the model, in eval mode and without gradients (the training mode is restored).

        Args:
            x_train: training inputs, as for :meth:`forward`.
            y_train: training targets.
            x_test: query inputs.
            query_chunk: queries per decoder pass (queries are independent, so chunking changes
                no value; the training keys/values are computed once and shared).
            dataset_chunk: datasets per pass for batched inputs (``None``: all at once).
        """
        if query_chunk is not None:
            query_chunk = check_int(query_chunk, "query_chunk")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                if dataset_chunk is None or x_train.dim() != 3:
                    return self._predict(x_train, y_train, x_test, query_chunk)
                step = check_int(dataset_chunk, "dataset_chunk")
                if y_train.dim() != 2 or x_test.dim() != 3 or x_train.shape[0] != y_train.shape[0] or (
                    x_test.shape[0] != x_train.shape[0]
                ):
                    return self._predict(x_train, y_train, x_test, query_chunk)  # raises, naming the argument
                parts = [
                    self._predict(x_train[s], y_train[s], x_test[s], query_chunk)
                    for s in (slice(i, i + step) for i in range(0, x_train.shape[0], step))
                ]
                borders = parts[0].borders if parts[0].borders.dim() == 1 else torch.cat(
                    [p.borders for p in parts]
                )
                return BarDistribution(borders, torch.cat([p.logits for p in parts]), bounded=self.bounded,
                                       validate_args=False)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ ArviZ
    def to_arviz(
        self,
        x_train: Tensor,
        y_train: Tensor,
        x_test: Tensor,
        y_test: Tensor | None = None,
        *,
        num_draws: int = 1000,
        seed: int | None = None,
    ) -> Any:
        """Posterior-predictive draws as an ArviZ object (InferenceData on ArviZ < 1, DataTree on 1.x).

        Groups: ``posterior_predictive`` with ``y`` of shape (1, num_draws, [B,] m), draws from
        the bar distribution; with ``y_test``, also ``observed_data`` (``y``) and
        ``log_likelihood`` with ``y`` of shape (1, 1, [B,] m) holding the log predictive density
        log q(y_test | x_test, D) (one "draw": a PFN has no posterior draws, its output already
        integrates over the posterior, so the ELPD of the test points is the sum of this array).
        """
        num_draws = check_int(num_draws, "num_draws")
        dist = self.predict(x_train, y_train, x_test)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            draws = dist.sample(torch.Size([num_draws]))
        batched = len(dist.batch_shape) == 2
        event_dims = ["dataset", "query"] if batched else ["query"]
        groups: dict[str, dict[str, np.ndarray]] = {"posterior_predictive": {"y": _numpy(draws.unsqueeze(0))}}
        if y_test is not None:
            if not isinstance(y_test, Tensor) or y_test.shape != dist.batch_shape:
                got = tuple(y_test.shape) if isinstance(y_test, Tensor) else type(y_test).__name__
                raise ValueError(f"'y_test' must be a tensor of shape {tuple(dist.batch_shape)}, got {got}")
            if not bool(torch.isfinite(y_test).all()):
                raise ValueError("'y_test' contains NaN or inf")
            y_test = y_test.to(dtype=dist.logits.dtype, device=dist.logits.device)
            groups["observed_data"] = {"y": _numpy(y_test)}
            groups["log_likelihood"] = {"y": _numpy(dist.log_prob(y_test).reshape(1, 1, *y_test.shape))}
        return from_numpy(groups, dims={"y": event_dims}, attrs={"inference_library": "bayesact.PFN"})

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the configuration (plain data) and weights to a bayesact safe file (atomic,
        checksummed; read back with :meth:`load`, which never unpickles objects)."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        save_checkpoint(path, {"format": PFN_FORMAT, "config": self.config(),
                               "dtype": str(self.borders.dtype), "state_dict": state})

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device | None = None) -> PFN:
        """Read a model written by :meth:`save` (``torch.load(weights_only=True)`` after a SHA-256
        check; a pickled or crafted file is refused with a ValueError naming it)."""
        payload = load_checkpoint(path, PFN_FORMAT)
        config, state = payload.get("config"), payload.get("state_dict")
        if not isinstance(config, dict) or not isinstance(state, dict) or "borders" not in state:
            raise ValueError(f"{os.fspath(path)!r} lacks the PFN config or weights")
        dtype = getattr(torch, str(payload.get("dtype", "torch.float32")).removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"{os.fspath(path)!r} names an unknown dtype {payload.get('dtype')!r}")
        unknown = set(config) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"{os.fspath(path)!r} has unknown PFN settings {sorted(unknown)}")
        model = cls(borders=state["borders"].to(torch.float64), **config).to(dtype)
        model.load_state_dict(state, strict=True)
        if map_location is not None:
            model.to(map_location)
        return model


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
