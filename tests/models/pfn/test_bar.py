"""BarDistribution against numerical integration, the closed forms of Müller et al. (2022) and Monte Carlo."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from scipy import integrate, stats

from bayesact.models import BarDistribution

Z = 0.6744897502  # Φ⁻¹(0.75)


def example(bounded: bool = False, dtype: torch.dtype = torch.float64) -> BarDistribution:
    """Uneven borders and three rows of uneven logits; the outer buckets carry ≥ 25% of the mass."""
    borders = torch.tensor([-3.0, -1.5, -0.7, -0.2, 0.0, 0.4, 1.1, 2.0, 4.0], dtype=dtype)
    logits = torch.tensor([
        [1.0, 0.2, -0.3, 0.5, 0.0, -1.0, 0.3, 1.2],
        [2.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0],
        [-2.0, 0.5, 1.0, 1.5, 1.0, 0.5, 0.0, -3.0],
    ], dtype=dtype)
    return BarDistribution(borders, logits, bounded=bounded)


def row(dist: BarDistribution, i: int) -> BarDistribution:
    return BarDistribution(dist.borders, dist.logits[i], bounded=dist.bounded)


def density(dist: BarDistribution):
    return lambda y: float(dist.log_prob(torch.tensor(y, dtype=torch.float64)).exp())


def pieces(dist: BarDistribution) -> list[tuple[float, float]]:
    """Intervals on which the density is smooth, the tails cut at 20 scales."""
    b = dist.borders.tolist()
    if dist.bounded:
        return list(itertools.pairwise(b))
    s1, sk = (float(s) for s in dist.tail_scales)
    return [(b[1] - 20 * s1, b[1]), *itertools.pairwise(b[1:-1]), (b[-2], b[-2] + 20 * sk)]


def quad(f, dist: BarDistribution) -> float:
    return sum(integrate.quad(f, lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200)[0] for lo, hi in pieces(dist))


# ---------------------------------------------------------------------- density
@pytest.mark.parametrize("bounded", [False, True])
def test_density_integrates_to_one_including_tails(bounded: bool) -> None:
    dist = example(bounded)
    for i in range(3):
        one = row(dist, i)
        assert quad(density(one), one) == pytest.approx(1.0, abs=1e-9)
        if bounded:
            unchecked = BarDistribution(one.borders, one.logits, bounded=True, validate_args=False)
            assert unchecked.log_prob(torch.tensor([-3.01, 4.01], dtype=torch.float64)).eq(-math.inf).all()
    # full support: mass beyond [b_0, b_K] is p_1/2 + p_K/2 exactly
    if not bounded:
        one = row(dist, 0)
        f = density(one)
        outside = integrate.quad(f, -math.inf, -3.0)[0] + integrate.quad(f, 4.0, math.inf)[0]
        p = one.probs
        assert outside == pytest.approx(float(p[0] + p[-1]) / 2, abs=1e-9)


def test_interior_nll_is_minus_log_p_plus_log_width_and_tails_are_half_normal() -> None:
    dist = example()
    b, p = dist.borders, dist.probs
    y = torch.tensor([-1.0, -0.5, -0.1, 0.2, 0.7, 1.5], dtype=torch.float64)  # buckets 2..7 (1-based)
    k = torch.arange(1, 7)
    expected = -p[:, k].log() + (b[k + 1] - b[k]).log()
    torch.testing.assert_close(-dist.log_prob(y.unsqueeze(0).expand(3, -1).T).T, expected)
    s1, sk = (b[1] - b[0]) / Z, (b[-1] - b[-2]) / Z
    torch.testing.assert_close(dist.tail_scales[0], s1)
    torch.testing.assert_close(dist.tail_scales[1], sk)
    for y_tail in (-1.6, -2.5, -9.0):
        want = p[:, 0].log() + torch.distributions.HalfNormal(s1).log_prob(b[1] - y_tail)
        torch.testing.assert_close(dist.log_prob(torch.tensor(y_tail, dtype=torch.float64)), want)
    for y_tail in (2.3, 4.5, 11.0):
        want = p[:, -1].log() + torch.distributions.HalfNormal(sk).log_prob(y_tail - b[-2])
        torch.testing.assert_close(dist.log_prob(torch.tensor(y_tail, dtype=torch.float64)), want)


def test_tail_scale_puts_half_of_each_outer_bucket_inside_its_interval() -> None:
    dist = example()
    b, p = dist.borders, dist.probs
    torch.testing.assert_close(dist.cdf(b[1]) - dist.cdf(b[0]), p[:, 0] / 2)
    torch.testing.assert_close(dist.cdf(b[-1]) - dist.cdf(b[-2]), p[:, -1] / 2)
    equal = BarDistribution(b, torch.zeros(8, dtype=torch.float64))  # equal-mass logits: 1/K outside
    inside = equal.cdf(b[-1]) - equal.cdf(b[0])
    torch.testing.assert_close(1 - inside, torch.tensor(1 / 8, dtype=torch.float64))


@pytest.mark.parametrize("bounded", [False, True])
def test_cdf_at_the_borders_is_the_cumulative_bucket_mass(bounded: bool) -> None:
    dist = example(bounded)
    cum = dist.probs.cumsum(-1)
    at = dist.cdf(dist.borders[1:-1].unsqueeze(-1)).T  # (3, K - 1)
    torch.testing.assert_close(at, cum[:, :-1])


# ---------------------------------------------------------------------- moments and entropy
@pytest.mark.parametrize("bounded", [False, True])
def test_mean_variance_and_entropy_equal_numerical_integration(bounded: bool) -> None:
    dist = example(bounded)
    for i in range(3):
        one = row(dist, i)
        f = density(one)
        mean = quad(lambda y, f=f: y * f(y), one)
        var = quad(lambda y, f=f, mean=mean: (y - mean) ** 2 * f(y), one)
        ent = quad(lambda y, f=f: -f(y) * math.log(f(y)) if f(y) > 0 else 0.0, one)
        assert float(one.mean) == pytest.approx(mean, abs=1e-9)
        assert float(one.variance) == pytest.approx(var, abs=1e-8)
        assert float(one.entropy()) == pytest.approx(ent, abs=1e-8)


def test_variance_equals_the_papers_second_moment_formula() -> None:
    """E[y²] = interior Σ p_k (b_{k-1}² + b_{k-1} b_k + b_k²)/3 + the tail terms of the reference."""
    dist = example()
    b, p = dist.borders, dist.probs
    s1, sk = dist.tail_scales
    r = math.sqrt(2 / math.pi)
    lo, hi = b[1:-2], b[2:-1]
    mean = (p[:, 1:-1] * (lo + hi) / 2).sum(-1) + p[:, 0] * (b[1] - s1 * r) + p[:, -1] * (b[-2] + sk * r)
    second = (
        (p[:, 1:-1] * (lo**2 + lo * hi + hi**2) / 3).sum(-1)
        + p[:, 0] * (b[1] ** 2 - 2 * b[1] * s1 * r + s1**2)
        + p[:, -1] * (b[-2] ** 2 + 2 * b[-2] * sk * r + sk**2)
    )
    torch.testing.assert_close(dist.mean, mean)
    torch.testing.assert_close(dist.variance, second - mean**2)


# ---------------------------------------------------------------------- cdf, icdf, sampling
@pytest.mark.parametrize("bounded", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cdf_of_icdf_is_the_identity(bounded: bool, dtype: torch.dtype) -> None:
    dist = example(bounded, dtype)
    u = torch.cat([
        torch.tensor([1e-12, 1e-6, 1e-3]), torch.linspace(0.01, 0.99, 99), torch.tensor([1 - 1e-6])
    ])
    u = u.to(dtype).unsqueeze(-1).expand(-1, 3)
    y = dist.icdf(u)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(dist.cdf(y), u, rtol=0, atol=tol)
    assert bool((y.diff(dim=0) >= 0).all())  # monotone
    q = dist.quantile(torch.tensor([0.25, 0.5], dtype=dtype))
    assert q.shape == (2, 3)
    torch.testing.assert_close(q[1], dist.icdf(torch.full((3,), 0.5, dtype=dtype)))
    if not bounded:  # the tails are inverted, not cut at the borders
        assert bool((y[0] < dist.borders[0]).all()) and bool((y[-1] > dist.borders[-1]).all())
        grid = torch.linspace(-8.0, 9.0, 301, dtype=dtype).unsqueeze(-1).expand(-1, 3)
        torch.testing.assert_close(dist.icdf(dist.cdf(grid).clamp(1e-300, 1 - 1e-16)), grid, rtol=0,
                                   atol=1e-7 if dtype == torch.float64 else 2e-2)


def numerical_cdf(dist: BarDistribution) -> tuple[np.ndarray, np.ndarray]:
    """CDF of one row by cumulative trapezoid integration of exp(log_prob) on a fine grid."""
    s1, sk = (float(s) for s in dist.tail_scales)
    lo, hi = float(dist.borders[1]) - 12 * s1, float(dist.borders[-2]) + 12 * sk
    grid = np.union1d(np.linspace(lo, hi, 400_001), dist.borders.numpy())
    mid = 0.5 * (grid[1:] + grid[:-1])  # midpoint rule: the borders, where the density jumps, are grid points
    dens = dist.log_prob(torch.from_numpy(mid)).exp().numpy()
    cdf = np.concatenate([[0.0], np.cumsum(dens * np.diff(grid))])
    return grid, cdf


def test_samples_agree_with_the_density_including_the_tails() -> None:
    """KS distance < 0.02 against the numerically integrated CDF with ≥ 25% tail mass (TabPFN #1200)."""
    dist = example()
    torch.manual_seed(3)
    draws = dist.sample((100_000,))
    assert draws.shape == (100_000, 3)
    for i in range(3):
        one = row(dist, i)
        grid, cdf = numerical_cdf(one)
        assert cdf[-1] == pytest.approx(1.0, abs=1e-6)
        x = np.sort(draws[:, i].numpy())
        ks = stats.kstest(x, lambda v, grid=grid, cdf=cdf: np.interp(v, grid, cdf)).statistic
        assert ks < 0.02
        if i == 1:  # p_1 + p_K ≈ 0.84 here, half of it beyond the outer borders
            p = one.probs
            outside = float(((x < float(one.borders[0])) | (x > float(one.borders[-1]))).mean())
            assert float(p[0] + p[-1]) >= 0.25
            assert outside == pytest.approx(float(p[0] + p[-1]) / 2, abs=0.01)
    u = torch.rand(100_000, 3, dtype=torch.float64)  # inverse-CDF sampling gives the same law
    via_icdf = dist.icdf(u)
    assert stats.ks_2samp(via_icdf[:, 1].numpy(), draws[:, 1].numpy()).statistic < 0.02


def test_bounded_samples_stay_inside_and_follow_the_cdf() -> None:
    dist = example(bounded=True)
    draws = dist.sample((50_000,))
    assert bool((draws >= dist.borders[0]).all()) and bool((draws <= dist.borders[-1]).all())
    ks = stats.kstest(draws[:, 0].numpy(), lambda v: row(dist, 0).cdf(torch.from_numpy(v)).numpy()).statistic
    assert ks < 0.02
    with pytest.raises(ValueError):
        BarDistribution(dist.borders, dist.logits, bounded=True, validate_args=True).log_prob(
            torch.tensor(5.0, dtype=torch.float64)
        )


# ---------------------------------------------------------------------- borders
def test_equal_mass_borders_from_a_million_normal_draws_hold_one_percent_each() -> None:
    y = torch.randn(1_000_000, dtype=torch.float64)
    borders = BarDistribution.borders_from_samples(y, 100)
    assert borders.shape == (101,) and bool((borders.diff() > 0).all())
    assert float(borders[0]) == float(y.min()) and float(borders[-1]) == float(y.max())
    mass = np.diff(stats.norm.cdf(borders.numpy()))
    assert np.abs(mass - 0.01).max() < 0.001
    counts = np.histogram(y.numpy(), bins=borders.numpy())[0]
    assert counts.min() >= 9_999 and counts.max() <= 10_001
    # borders from prior draws give equal bucket probabilities for equal logits: the median is ~0
    dist = BarDistribution(borders, torch.zeros(100, dtype=torch.float64))
    assert abs(float(dist.icdf(torch.tensor(0.5, dtype=torch.float64)))) < 0.01


def test_duplicate_borders_are_refused_not_merged() -> None:
    y = torch.cat([torch.zeros(5000), torch.randn(5000)])  # an atom at 0 holds half the mass
    with pytest.raises(ValueError, match="atoms"):
        BarDistribution.borders_from_samples(y, 100)
    with pytest.raises(ValueError, match="num_buckets"):
        BarDistribution.borders_from_samples(torch.randn(10), 0)
    with pytest.raises(ValueError, match="at least"):
        BarDistribution.borders_from_samples(torch.randn(10), 10)
    with pytest.raises(ValueError, match="NaN"):
        BarDistribution.borders_from_samples(torch.tensor([0.0, math.nan, 1.0]), 1)


@pytest.mark.parametrize(
    ("borders", "logits", "match"),
    [
        (torch.tensor([0.0, 1.0, 1.0, 2.0]), torch.zeros(3), "strictly increasing"),
        (torch.tensor([0.0, 2.0, 1.0, 3.0]), torch.zeros(3), "strictly increasing"),
        (torch.tensor([0.0, math.inf, 3.0]), torch.zeros(2), "NaN or inf"),
        (torch.tensor([0.0, 1.0, 2.0]), torch.zeros(3), "logits"),
        (torch.tensor([0.0, 1.0]), torch.zeros(1), "at least 3"),
    ],
)
def test_bad_borders_and_logits_raise_naming_them(borders, logits, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BarDistribution(borders, logits)


def test_non_increasing_batched_borders_are_named_with_their_values() -> None:
    borders = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 0.5, 3.0]])
    with pytest.raises(ValueError, match=r"border 2 \(0.5\) does not exceed border 1 \(1.0\)"):
        BarDistribution(borders, torch.zeros(3))


# ---------------------------------------------------------------------- batching and Pyro
def test_batched_borders_broadcast_against_logits() -> None:
    base = example()
    shift, scale = torch.tensor([[0.5], [-1.0]], dtype=torch.float64), torch.tensor([[2.0], [0.5]],
                                                                                     dtype=torch.float64)
    borders = (shift + scale * base.borders).unsqueeze(1)  # (2, 1, K + 1)
    logits = base.logits.unsqueeze(0).expand(2, 3, 8)
    dist = BarDistribution(borders, logits)
    assert dist.batch_shape == (2, 3)
    y = torch.randn(4, 2, 3, dtype=torch.float64)
    for j in range(2):
        one = BarDistribution(borders[j, 0], base.logits)
        torch.testing.assert_close(dist.log_prob(y)[:, j], one.log_prob(y[:, j]))
        torch.testing.assert_close(dist.cdf(y)[:, j], one.cdf(y[:, j]))
        torch.testing.assert_close(dist.mean[j], one.mean)
        torch.testing.assert_close(dist.variance[j], one.variance)
        torch.testing.assert_close(dist.entropy()[j], one.entropy())
    torch.testing.assert_close(dist.mean, shift + scale * base.mean)  # affine borders move the mean
    assert dist.sample((5,)).shape == (5, 2, 3) and dist.expand((4, 2, 3)).batch_shape == (4, 2, 3)


def test_works_as_a_pyro_observation() -> None:
    dist = example()
    y = torch.tensor([0.1, -2.0, 3.0], dtype=torch.float64)

    def model() -> None:
        with pyro.plate("data", 3):
            pyro.sample("y", dist, obs=y)

    assert isinstance(dist, pdist.TorchDistribution) and not dist.has_rsample
    trace = pyro.poutine.trace(model).get_trace()
    torch.testing.assert_close(trace.log_prob_sum(), dist.log_prob(y).sum())
