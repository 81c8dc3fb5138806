"""The shared Cholesky factor: log p(y) does no work it does not need; the predictive mean uses K_y⁻¹r."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from gpytorch.kernels import RBFKernel

from bayesact.kernels import NNGPKernel
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


def test_noise_added_to_the_diagonal_without_an_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """K_y = K + εI is one pass over K (no n × n identity): value and gradient in ε stay exact."""
    x, y = _data()
    gp = GP(RBFKernel().double(), noise=0.1)
    real_eye = torch.eye
    monkeypatch.setattr(torch, "eye", lambda *a, **k: pytest.fail("torch.eye called") or real_eye(*a, **k))
    lm = gp.log_marginal(x, y)
    monkeypatch.setattr(torch, "eye", real_eye)
    (grad,) = torch.autograd.grad(lm, gp.raw_noise)
    k_y = gp.kernel(x, x).to_dense().detach() + 0.1 * torch.eye(12, dtype=torch.float64)
    expected = torch.distributions.MultivariateNormal(torch.zeros(12, dtype=torch.float64), k_y).log_prob(y)
    torch.testing.assert_close(lm.detach(), expected, rtol=1e-12, atol=0.0)
    alpha = torch.linalg.solve(k_y, y)
    d_noise = 0.5 * (alpha @ alpha - torch.linalg.inv(k_y).trace())  # d log p / d ε
    d_raw = 0.1 * torch.sigmoid(torch.zeros((), dtype=torch.float64)) / math.log(2.0)  # d ε / d raw at 0
    torch.testing.assert_close(grad.double(), d_noise * d_raw, rtol=1e-5, atol=1e-8)


def _reference_log_marginal(kernel: Any, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor,
                            mean: torch.Tensor) -> torch.Tensor:
    """log N(y; mean, K + noise·I) differentiated through torch's own Cholesky (the independent path)."""
    k_y = kernel(x, x).to_dense() + noise * torch.eye(x.shape[0], dtype=x.dtype)
    chol = torch.linalg.cholesky(k_y)
    w = torch.linalg.solve_triangular(chol, (y - mean).unsqueeze(-1), upper=False).squeeze(-1)
    n = x.shape[0]
    return -0.5 * ((w * w).sum() + 2 * torch.log(torch.diagonal(chol)).sum() + n * math.log(2 * math.pi))


def test_closed_form_gradients_equal_the_gradients_through_the_cholesky() -> None:
    """q and log|K_y| carry closed-form gradients (K⁻¹, −ααᵀ, 2α): equal to autograd through the factor."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(30, generator=gen, dtype=torch.float64)
    model = GP(NNGPKernel("relu", depth=2), noise=0.05, mean=0.2).double()
    params = dict(model.named_parameters())
    ours = torch.autograd.grad(model.log_marginal(x, y), list(params.values()))
    ref_value = _reference_log_marginal(model.kernel, x, y, model.noise, model.mean)
    ref = torch.autograd.grad(ref_value, list(params.values()))
    torch.testing.assert_close(model.log_marginal(x, y), ref_value, rtol=1e-12, atol=1e-12)
    for name, a, b in zip(params, ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_log_marginal_runs_under_torch_func_grad() -> None:
    """The closed-form gradient is a functorch-compatible autograd.Function (setup_context)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(15, 2, generator=gen, dtype=torch.float64)
    y = torch.sin(x.sum(-1))
    model = GP(NNGPKernel("relu", depth=2)).double()

    class LogMarginal(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.model.log_marginal(x, y)

    wrapper = LogMarginal()
    state = {name: p.detach() for name, p in wrapper.named_parameters()}
    grads = torch.func.grad(lambda s: torch.func.functional_call(wrapper, s, (x, y)))(state)
    expected = torch.autograd.grad(wrapper(x, y), list(wrapper.parameters()))
    for (name, g), e in zip(grads.items(), expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-14, msg=name)
