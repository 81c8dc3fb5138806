"""The bar ("Riemann") distribution: a PFN's output distribution over a real target.

Borders b_0 < b_1 < ... < b_K cut the line into K buckets of widths w_k = b_k - b_{k-1}; logits
ℓ give the bucket probabilities p = softmax(ℓ). The *bounded* variant has density p_k / w_k on
bucket k and no mass outside [b_0, b_K]. The *full-support* variant (the default; the paper's
"Riemann distribution", PFNs/TabPFN's ``FullSupportBarDistribution``) replaces the first and the
last bucket by half-normals anchored at the inner borders b_1 and b_{K-1}, with scales
s_1 = w_1 / z and s_K = w_K / z, z = Φ⁻¹(0.75), so that half of each outer bucket's mass stays in
its interval and half lies beyond b_0 or b_K. Density, CDF, inverse CDF, sampling, mean, variance
and entropy all use these same pieces (the tails are never dropped, cf. TabPFN #1200).

Müller et al., "Transformers Can Do Bayesian Inference", ICLR 2022, section 4 and Theorem 1.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints

__all__ = ["HALF_NORMAL_MEDIAN", "BarDistribution"]

#: z = Φ⁻¹(0.75) = HalfNormal(1).icdf(0.5): the tail scale is s = w / z.
HALF_NORMAL_MEDIAN = 0.6744897501960817
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gather(table: Tensor, index: Tensor) -> Tensor:
    """``table[..., index]`` with ``table`` (..., K) broadcast against ``index`` (...)."""
    shape = torch.broadcast_shapes(table.shape[:-1], index.shape)
    rows = table.expand(*shape, table.shape[-1])
    return torch.gather(rows, -1, index.expand(shape).unsqueeze(-1)).squeeze(-1)


def _search(sorted_rows: Tensor, value: Tensor, right: bool) -> Tensor:
    """``searchsorted`` of ``value`` (...) in rows (..., M), the two broadcast against each other."""
    if sorted_rows.dim() == 1:
        return torch.searchsorted(sorted_rows, value.contiguous(), right=right)
    shape = torch.broadcast_shapes(sorted_rows.shape[:-1], value.shape)
    rows = sorted_rows.expand(*shape, sorted_rows.shape[-1]).contiguous()
    return torch.searchsorted(rows, value.expand(shape).unsqueeze(-1).contiguous(), right=right).squeeze(-1)


class BarDistribution(TorchDistribution):
    """A piecewise-uniform distribution on buckets, with half-normal tails (full support) by default.

    Args:
        borders: strictly increasing bucket borders (K + 1,) or batched (..., K + 1).
        logits: unnormalised log bucket probabilities (..., K); the leading dimensions of
            ``borders`` and ``logits`` broadcast to the batch shape.
        bounded: the bounded variant (support [b_0, b_K]) instead of the full-support one.
        validate_args: Pyro/torch argument and support validation.

    Raises:
        ValueError: ``borders`` not strictly increasing or non-finite, fewer than 2 buckets
            (full support) or 1 bucket (bounded), or ``logits`` whose last dimension is not K.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {"logits": constraints.real_vector}
    has_rsample = False

    def __init__(
        self, borders: Tensor, logits: Tensor, *, bounded: bool = False, validate_args: bool | None = None
    ) -> None:
        if not isinstance(borders, Tensor) or not isinstance(logits, Tensor):
            raise TypeError("'borders' and 'logits' must be torch.Tensors")
        if borders.dim() < 1 or logits.dim() < 1:
            raise ValueError(
                f"'borders' (K + 1,) and 'logits' (..., K) need a last dimension, got shapes "
                f"{tuple(borders.shape)} and {tuple(logits.shape)}"
            )
        if not borders.is_floating_point():
            borders = borders.to(logits.dtype if logits.is_floating_point() else torch.get_default_dtype())
        if not logits.is_floating_point():
            logits = logits.to(borders.dtype)
        k = borders.shape[-1] - 1
        if k < (1 if bounded else 2):
            raise ValueError(
                f"'borders' must hold at least {2 if bounded else 3} values ({1 if bounded else 2} bucket(s) "
                f"for the {'bounded' if bounded else 'full-support'} variant), got {k + 1}"
            )
        if logits.shape[-1] != k:
            raise ValueError(f"'logits' must have K = len(borders) - 1 = {k} values in its last dimension, "
                             f"got {logits.shape[-1]}")
        if not bool(torch.isfinite(borders).all()):
            raise ValueError("'borders' contains NaN or inf")
        widths = borders.diff(dim=-1)
        if not bool((widths > 0).all()):
            where = (widths <= 0).nonzero()[0].tolist()
            row, bad = borders[tuple(where[:-1])], where[-1]
            raise ValueError(
                f"'borders' must be strictly increasing, but border {bad + 1} ({float(row[bad + 1])}) "
                f"does not exceed border {bad} ({float(row[bad])})"
            )
        self.borders = borders
        self.logits = logits
        self.bounded = bool(bounded)
        self.widths = widths
        batch_shape = torch.broadcast_shapes(borders.shape[:-1], logits.shape[:-1])
        super().__init__(batch_shape=batch_shape, event_shape=torch.Size(), validate_args=validate_args)

    # ------------------------------------------------------------------ pieces
    @property
    def num_buckets(self) -> int:
        """K, the number of buckets."""
        return int(self.logits.shape[-1])

    @property
    def log_probs(self) -> Tensor:
        """log p_k, the log bucket probabilities (..., K)."""
        return torch.log_softmax(self.logits, dim=-1)

    @property
    def probs(self) -> Tensor:
        """p_k = softmax(ℓ)_k (..., K)."""
        return torch.softmax(self.logits, dim=-1)

    @property
    def tail_scales(self) -> tuple[Tensor, Tensor]:
        """(s_1, s_K) = (w_1, w_K) / Φ⁻¹(0.75), the half-normal scales of the full-support tails."""
        return self.widths[..., 0] / HALF_NORMAL_MEDIAN, self.widths[..., -1] / HALF_NORMAL_MEDIAN

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self) -> constraints.Constraint:
        if self.bounded:
            return constraints.interval(self.borders[..., 0], self.borders[..., -1])
        return constraints.real

    def expand(
        self, batch_shape: torch.Size | list[int] | tuple[int, ...], _instance: object = None
    ) -> BarDistribution:
        batch_shape = torch.Size(batch_shape)
        k = self.num_buckets
        borders = self.borders if self.borders.dim() == 1 else self.borders.expand(*batch_shape, k + 1)
        return BarDistribution(borders, self.logits.expand(*batch_shape, k), bounded=self.bounded,
                               validate_args=False)

    def _bucket(self, value: Tensor) -> Tensor:
        """Index of the bucket holding ``value`` (the outer buckets also hold what lies beyond)."""
        return (_search(self.borders, value, right=True) - 1).clamp(0, self.num_buckets - 1)

    # ------------------------------------------------------------------ density and CDF
    def log_prob(self, value: Tensor) -> Tensor:
        """log density: log p_k - log w_k in bucket k; log p_1 + log HN(b_1 - y; s_1) left of b_1
        and log p_K + log HN(y - b_{K-1}; s_K) right of b_{K-1} (full support), with
        HN(t; s) = √(2/π)/s · exp(-t²/(2s²))."""
        value = torch.as_tensor(value, dtype=self.logits.dtype, device=self.logits.device)
        if self._validate_args:
            self._validate_sample(value)
        k = self._bucket(value)
        logp = _gather(self.log_probs, k)
        out = logp - _gather(self.widths, k).log()
        if self.bounded:
            inside = (value >= self.borders[..., 0]) & (value <= self.borders[..., -1])
            return torch.where(inside, out, torch.full_like(out, -math.inf))
        s1, sk = self.tail_scales
        b1, bk = self.borders[..., 1], self.borders[..., -2]
        half_log = 0.5 * math.log(2.0 / math.pi)
        left = logp + half_log - s1.log() - 0.5 * ((b1 - value) / s1) ** 2
        right = logp + half_log - sk.log() - 0.5 * ((value - bk) / sk) ** 2
        out = torch.where(k == 0, left, out)
        return torch.where(k == self.num_buckets - 1, right, out)

    def cdf(self, value: Tensor) -> Tensor:
        """P(Y ≤ y): Σ_{j<k} p_j + p_k (y - b_{k-1}) / w_k inside bucket k; p_1 erfc((b_1 - y)/(s_1√2))
        on the left tail and 1 - p_K erfc((y - b_{K-1})/(s_K√2)) on the right one (full support)."""
        value = torch.as_tensor(value, dtype=self.logits.dtype, device=self.logits.device)
        if self._validate_args:
            self._validate_sample(value)
        k = self._bucket(value)
        p = self.probs
        below = torch.cumsum(p, dim=-1) - p
        pk = _gather(p, k)
        frac = ((value - _gather(self.borders[..., :-1], k)) / _gather(self.widths, k)).clamp(0.0, 1.0)
        out = _gather(below, k) + pk * frac
        if self.bounded:
            return out.clamp(0.0, 1.0)
        s1, sk = self.tail_scales
        left = pk * torch.erfc((self.borders[..., 1] - value) / (s1 * math.sqrt(2.0)))
        right = 1.0 - pk * torch.erfc((value - self.borders[..., -2]) / (sk * math.sqrt(2.0)))
        out = torch.where(k == 0, left, out)
        return torch.where(k == self.num_buckets - 1, right, out).clamp(0.0, 1.0)

    def icdf(self, value: Tensor) -> Tensor:
        """The inverse of :meth:`cdf`, piece by piece: uniform inside interior buckets,
        b_1 + s_1 Φ⁻¹(u / (2 p_1)) and b_{K-1} - s_K Φ⁻¹((1 - u) / (2 p_K)) in the tails."""
        u = torch.as_tensor(value, dtype=self.logits.dtype, device=self.logits.device)
        if bool(((u < 0) | (u > 1)).any()):
            raise ValueError("'value' of icdf must lie in [0, 1]")
        p = self.probs
        cum = torch.cumsum(p, dim=-1)
        k = _search(cum, u, right=True).clamp(0, self.num_buckets - 1)
        pk = _gather(p, k)
        below = _gather(cum, k) - pk
        frac = torch.where(pk > 0, (u - below) / pk, torch.zeros_like(u)).clamp(0.0, 1.0)
        out = _gather(self.borders[..., :-1], k) + frac * _gather(self.widths, k)
        if self.bounded:
            return out
        s1, sk = self.tail_scales
        tiny = torch.finfo(u.dtype).tiny
        left = self.borders[..., 1] + s1 * torch.special.ndtri((u / (2 * pk).clamp_min(tiny)).clamp(0.0, 0.5))
        right = self.borders[..., -2] - sk * torch.special.ndtri(
            ((1.0 - u) / (2 * pk).clamp_min(tiny)).clamp(0.0, 0.5)
        )
        out = torch.where(k == 0, left, out)
        return torch.where(k == self.num_buckets - 1, right, out)

    def quantile(self, q: float | Tensor) -> Tensor:
        """Quantiles at levels ``q`` (a number, or a tensor (Q,)): shape ``q.shape + batch_shape``."""
        q = torch.as_tensor(q, dtype=self.logits.dtype, device=self.logits.device)
        if q.dim() > 1:
            raise ValueError(f"'q' must be a number or a 1-D tensor of levels, got shape {tuple(q.shape)}")
        shape = q.shape + self.batch_shape
        return self.icdf(q.reshape(q.shape + (1,) * len(self.batch_shape)).expand(shape))

    # ------------------------------------------------------------------ sampling
    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        """Draw a bucket k ~ p, then a uniform point in it, or b_1 - |N(0, s_1²)| / b_{K-1} + |N(0, s_K²)|
        in the full-support tails (no reparameterised gradient: the bucket choice is discrete)."""
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            logits = self.logits.expand(*self.batch_shape, self.num_buckets)
            k = torch.distributions.Categorical(logits=logits).sample(torch.Size(sample_shape))
            u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
            out = _gather(self.borders[..., :-1], k) + u * _gather(self.widths, k)
            if self.bounded:
                return out
            s1, sk = self.tail_scales
            z = torch.randn(shape, dtype=self.logits.dtype, device=self.logits.device).abs()
            out = torch.where(k == 0, self.borders[..., 1] - s1 * z, out)
            return torch.where(k == self.num_buckets - 1, self.borders[..., -2] + sk * z, out)

    # ------------------------------------------------------------------ moments
    def _bucket_moments(self) -> tuple[Tensor, Tensor]:
        """Mean and variance of each bucket's piece (..., K): uniform inside, half-normal tails."""
        lo, hi = self.borders[..., :-1], self.borders[..., 1:]
        mean = 0.5 * (lo + hi)
        var = self.widths**2 / 12.0
        if self.bounded:
            return mean, var
        s1, sk = self.tail_scales
        tail_var = 1.0 - 2.0 / math.pi
        first_mean = (self.borders[..., 1] - s1 * _SQRT_2_OVER_PI).unsqueeze(-1)
        last_mean = (self.borders[..., -2] + sk * _SQRT_2_OVER_PI).unsqueeze(-1)
        mean = torch.cat([first_mean, mean[..., 1:-1], last_mean], dim=-1)
        first_var, last_var = (s1**2 * tail_var).unsqueeze(-1), (sk**2 * tail_var).unsqueeze(-1)
        var = torch.cat([first_var, var[..., 1:-1], last_var], dim=-1)
        return mean, var

    @property
    def mean(self) -> Tensor:
        """Σ p_k m_k with bucket means m_k = (b_{k-1} + b_k)/2, b_1 - s_1√(2/π), b_{K-1} + s_K√(2/π)."""
        mean, _ = self._bucket_moments()
        return (self.probs * mean).sum(-1).expand(self.batch_shape)

    @property
    def variance(self) -> Tensor:
        """Σ p_k v_k + Σ p_k (m_k - mean)², the law of total variance over buckets (v_k = w_k²/12
        inside, s²(1 - 2/π) in the tails); equal to E[y²] - mean² of the reference's closed forms."""
        mean, var = self._bucket_moments()
        p = self.probs
        total = (p * mean).sum(-1, keepdim=True)
        return (p * (var + (mean - total) ** 2)).sum(-1).expand(self.batch_shape)

    def entropy(self) -> Tensor:
        """-∫ f log f = Σ_k -p_k (log p_k - log w_k) over uniform buckets, plus
        p(-log p + ½ log(π s²/2) + ½) for each half-normal tail."""
        logp = self.log_probs
        p = logp.exp()
        plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
        terms = -plogp + p * self.widths.log()
        if not self.bounded:
            s1, sk = self.tail_scales
            first = -plogp[..., 0] + p[..., 0] * (0.5 * torch.log(math.pi * s1**2 / 2) + 0.5)
            last = -plogp[..., -1] + p[..., -1] * (0.5 * torch.log(math.pi * sk**2 / 2) + 0.5)
            terms = torch.cat([first.unsqueeze(-1), terms[..., 1:-1], last.unsqueeze(-1)], dim=-1)
        return terms.sum(-1).expand(self.batch_shape)

    # ------------------------------------------------------------------ borders
    @staticmethod
    def borders_from_samples(y: Tensor, num_buckets: int) -> Tensor:
        """Equal-mass borders from prior draws of y: sort the N draws, put inner border k at the
        midpoint of order statistics ⌊kN/K⌋ and ⌊kN/K⌋ + 1 (1-based) and the outer borders at the
        extremes, so each bucket holds N/K draws (Müller et al. 2022, as in the authors' code).

        Raises:
            ValueError: ``num_buckets`` < 1, fewer than ``num_buckets`` + 1 finite draws, NaN/inf
                in ``y``, or a prior with atoms that make two borders coincide (refused, not
                silently merged: the number of buckets would change).
        """
        if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) or num_buckets < 1:
            raise ValueError(f"'num_buckets' must be an int >= 1, got {num_buckets!r}")
        if not isinstance(y, Tensor):
            raise TypeError(f"'y' must be a torch.Tensor of prior draws, got {type(y).__name__}")
        flat = y.detach().reshape(-1)
        if not flat.is_floating_point():
            flat = flat.to(torch.get_default_dtype())
        if not bool(torch.isfinite(flat).all()):
            raise ValueError("'y' contains NaN or inf")
        n = flat.numel()
        if n < num_buckets + 1:
            raise ValueError(f"'y' needs at least num_buckets + 1 = {num_buckets + 1} draws, got {n}")
        ys = torch.sort(flat).values
        split = (torch.arange(1, num_buckets, device=ys.device) * n) // num_buckets
        inner = 0.5 * (ys[split - 1] + ys[split])
        borders = torch.cat([ys[:1], inner, ys[-1:]])
        same = (borders.diff() <= 0).nonzero()
        if same.numel():
            i = int(same[0, 0])
            raise ValueError(
                f"'y' has atoms: borders {i} and {i + 1} coincide at {float(borders[i])} "
                f"({int(same.numel())} coinciding pair(s) for num_buckets={num_buckets}); borders are "
                "not merged silently (that would change the number of buckets): use fewer buckets, "
                "or jitter a prior with point masses"
            )
        return borders

    def __repr__(self) -> str:
        kind = "bounded" if self.bounded else "full support"
        return f"BarDistribution(K={self.num_buckets}, {kind}, batch_shape={tuple(self.batch_shape)})"
