"""The fused (torch.compile) recursion equals the eager one, on CPU and CUDA."""

from __future__ import annotations

import pytest
import torch

from bayesact import kernels as K

from ._helpers import inputs


def _compare(name: str, depth: int, device: str = "cpu", grads: bool = False) -> None:
    x1, x2 = (x.to(device) for x in inputs(n=9, m=7))
    w = torch.tensor(1.3, dtype=torch.float64, device=device, requires_grad=grads)
    kw = {"activation": name, "depth": depth, "weight_std": w, "bias_std": 0.2}
    eager = K.nngp_ntk(x1, x2, **kw)
    fused = K.nngp_ntk(x1, x2, fused=True, **kw)
    for a, b in zip(fused, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    if grads:
        g_eager = torch.autograd.grad(sum(t.sum() for t in eager), w)
        g_fused = torch.autograd.grad(sum(t.sum() for t in fused), w)
        torch.testing.assert_close(g_fused, g_eager, rtol=1e-10, atol=1e-12)


def test_fused_matches_eager_smoke() -> None:
    _compare("erf", 1)


def test_fused_blocks_are_identical_to_one_block() -> None:
    """Every block runs the same compiled (dynamic-shape) kernel on its rows of the one Gram matrix."""
    x1, x2 = inputs(n=9, m=7)
    kw = {"activation": "erf", "depth": 1, "weight_std": 1.3, "bias_std": 0.2, "fused": True}
    one = K.nngp_ntk(x1, x2, **kw)
    blocked = K.nngp_ntk(x1, x2, block_bytes=7 * 8 * 18 * 3, **kw)  # three blocks of three rows
    for a, b in zip(blocked, one, strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["relu", "gelu", "tanh", "snake"])
def test_fused_matches_eager(name: str) -> None:
    _compare(name, 3, grads=True)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["relu", "erf", "tanh"])
def test_fused_on_cuda_matches_cpu(name: str) -> None:
    x1, x2 = inputs(n=64, m=48)
    kw = {"activation": name, "depth": 3, "weight_std": 1.3, "bias_std": 0.2}
    cpu = K.nngp_ntk(x1, x2, **kw)
    cuda = K.nngp_ntk(x1.cuda(), x2.cuda(), fused=True, **kw)
    for a, b in zip(cuda, cpu, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-12)
