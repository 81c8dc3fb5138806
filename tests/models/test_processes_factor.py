"""The shared Cholesky factor: log p(y) does no work it does not need; the predictive mean uses K_y⁻¹r."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from gpytorch.kernels import RBFKernel

from bayesact.models import GP, StudentTProcess
from bayesact.models.processes._core import factorise


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 2, generator=gen, dtype=torch.float64)
    return x, torch.sin(x.sum(-1))


@pytest.mark.parametrize("model_cls", [GP, StudentTProcess])
def test_log_marginal_does_not_solve_for_alpha(model_cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """K_y⁻¹r is only needed by the predictive: log p(y) needs one triangular solve."""
    calls: list[str] = []

    def counted(name: str, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
            calls.append(name)
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(torch, "cholesky_solve", counted("cs", torch.cholesky_solve))
    monkeypatch.setattr(torch.linalg, "solve_triangular", counted("tri", torch.linalg.solve_triangular))
    x, y = _data()
    model_cls(RBFKernel()).log_marginal(x, y)
    assert calls == ["tri"]


def test_alpha_is_the_exact_solve() -> None:
    x, y = _data()
    kernel = RBFKernel().double()
    noise, mean = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    factor = factorise(kernel, x, y, noise, mean)
    k_y = kernel(x, x).to_dense() + noise * torch.eye(12, dtype=torch.float64)
    expected = torch.linalg.solve(k_y, y - mean)
    torch.testing.assert_close(factor.alpha, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(factor.quad, (y - mean) @ expected, rtol=1e-12, atol=0.0)
