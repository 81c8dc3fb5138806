"""The critic's W1 estimate against Gaussian closed forms (Tran et al. 2022, §11 of the reference)."""

from __future__ import annotations

import math

import pytest
import torch

from bayesact.priors.fitting.wasserstein import wasserstein_distance


def _estimate(p: torch.Tensor, q: torch.Tensor, steps: int = 1000, batch_size: int = 512) -> float:
    return wasserstein_distance(p, q, steps=steps, lr=0.05, batch_size=batch_size).item()


@pytest.mark.parametrize(
    ("shift", "s1", "s2", "exact"),
    [(1.0, 1.0, 1.0, 1.0), (0.0, 1.0, 2.0, math.sqrt(2 / math.pi))],
)
def test_closed_forms_quick(shift: float, s1: float, s2: float, exact: float) -> None:
    """N(m, s1²) vs N(0, s2²) with m = 0 or s1 = s2: W1 = |m| or |s1 - s2| sqrt(2/π). 4096 functions
    per side, 300 critic steps of batch 256; within 10% (the issue's tolerance)."""
    torch.manual_seed(0)
    p, q = torch.randn(4096, 1, 1) * s1 + shift, torch.randn(4096, 1, 1) * s2
    assert _estimate(p, q, steps=300, batch_size=256) == pytest.approx(exact, rel=0.10)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("shift", "s1", "s2", "exact"),
    [
        (1.0, 1.0, 1.0, 1.0),  # |m|
        (2.0, 1.0, 1.0, 2.0),
        (0.0, 1.0, 2.0, math.sqrt(2 / math.pi)),  # |s1 - s2| sqrt(2/π) = 0.798
        (0.0, 0.5, 1.5, math.sqrt(2 / math.pi)),
    ],
)
def test_one_dimensional_closed_forms(seed: int, shift: float, s1: float, s2: float, exact: float) -> None:
    """8192 functions per side (half train the critic, half evaluate it): within 10%."""
    torch.manual_seed(seed)
    p = torch.randn(8192, 1, 1) * s1 + shift
    q = torch.randn(8192, 1, 1) * s2
    assert _estimate(p, q) == pytest.approx(exact, rel=0.10)


@pytest.mark.slow
def test_equal_covariance_gaussians_in_five_dimensions() -> None:
    """N(μ, I) vs N(0, I) in 5-D: W1 = ||μ||₂ (the optimal critic is linear along μ)."""
    torch.manual_seed(3)
    mu = torch.tensor([1.0, -0.5, 0.3, 0.0, 0.8])
    p = torch.randn(8192, 5, 1) + mu[None, :, None]
    q = torch.randn(8192, 5, 1)
    assert _estimate(p, q) == pytest.approx(mu.norm().item(), rel=0.10)


def test_estimate_is_differentiable_in_the_first_sample_set() -> None:
    shift = torch.tensor(1.5, requires_grad=True)
    torch.manual_seed(0)
    p = torch.randn(512, 3, 1) + shift
    q = torch.randn(512, 3, 1)
    w = wasserstein_distance(p, q, steps=100, lr=0.05)
    (grad,) = torch.autograd.grad(w, shift)
    assert grad.item() > 0  # moving p further away increases the distance


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="sample shapes differ"):
        wasserstein_distance(torch.randn(8, 3, 1), torch.randn(8, 4, 1))
    with pytest.raises(ValueError, match="shape \\(n, M, out\\)"):
        wasserstein_distance(torch.randn(8, 3), torch.randn(8, 3))
    with pytest.raises(ValueError, match="at least 4 functions"):
        wasserstein_distance(torch.randn(2, 3, 1), torch.randn(2, 3, 1))
